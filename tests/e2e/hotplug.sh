#!/bin/bash
# tests/e2e/hotplug.sh - guest scenario: a VF hot-added to a running guest,
# taken away and given back, with traffic in between and a removal in the
# middle of an iperf3 run (docs/guest-environment.md, "Hotplug").
#
# VF0 is attached at boot: its vNIC 0 (02:76:6e:00:01:00) is 10.5.0.1 in
# namespace a. The guest asks the host (host qmp, tests/e2e/lib.sh) to
# device_add VF1 on the empty root port rp1; vnic.ko, loaded before, binds
# it, and its vNIC 0 (02:76:6e:00:02:00) becomes 10.5.0.2 in namespace b.
# Checks, after each arrival: the function at 01:00.0 bound to vnic, ping
# a -> b 5/5, iperf3 TCP b -> a. Then two ways of taking it away, each
# twice (once idle, once 2 s into a 10 s iperf3 b -> a, which must end
# within its bound), each followed by its way back and traffic:
#
# 1. in the guest: /sys/bus/pci/devices/0000:01:00.0/remove, back with
#    /sys/bus/pci/rescan. QEMU keeps the device, and the card its client
#    (host vnicctl show vf1: attached). Works on every QEMU.
# 2. QMP device_del vf1 (the host answers at DEVICE_DELETED), back with
#    device_add: the card's function loses its client (attached: false).
#    Only with VNIC_HOTUNPLUG=1 (the test's environment): QEMU 11.1.3 aborts
#    on device_del of any vfio-user-pci function with MSI-X; otherwise the
#    steps print E2E-SKIP.
#
# After every removal: no netdev with VF1's MAC, no PCI function at 01:00.0.
# At the end rmmod, and no WARNING, BUG, Oops or call trace in the whole
# dmesg. Prints HOTPLUG-ADD-MS / HOTPLUG-GONE-MS (request to netdev
# present / gone) for each step.
#
# Runs INSIDE the guest (as /scenario.sh), served by
# vnic_tests::e2e::run_scenario_with_hotplug (the host channel with QMP
# access), e.g. by hand:
#   qemu/run-guest.sh --attach vf0 --vfs 2 --root-ports 1 --qmp /tmp/q.sock \
#       --host-channel /tmp/hc --add tests/e2e/lib.sh:/etc/vnic-e2e.sh \
#       --scenario tests/e2e/hotplug.sh
#   (with a program on the host answering on /tmp/hc.out -> /tmp/hc.in)
#
# Launcher options for tests/e2e/main.rs:
# run-guest: --attach vf0 --vfs 2 --root-ports 1 --mem 1024 --timeout 300 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
MAC_A=02:76:6e:00:01:00 # VF0 queue pair 0, attached at boot: namespace a
MAC_B=02:76:6e:00:02:00 # VF1 queue pair 0, hot-added: namespace b
IP_A=10.5.0.1
IP_B=10.5.0.2
BDF=0000:01:00.0 # the only function behind root port rp1
IPERF_SECONDS=3

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh
# shellcheck disable=SC1091 # written by the launcher
. /etc/vnic-run.env
UNPLUG=${VNIC_HOTUNPLUG:-0}

finish() {
	step "teardown"
	drop_namespaces a b
	unload_and_check_kernel
	summary hotplug
}

# b_present: VF1's vNIC is in namespace b.
b_present() { ip -n b -o link 2>/dev/null | grep -qi "$MAC_B"; }
# b_gone: no netdev with VF1's MAC in namespace b or here, no function at BDF.
b_gone() {
	! b_present && ! dev_by_mac "$MAC_B" && [[ ! -e /sys/bus/pci/devices/$BDF ]]
}

# arrived HOW T0: VF1 came (back) after the request at T0 (ms): its
# netdev, the function bound to vnic, namespace b with 10.5.0.2, carrier.
arrived() {
	local how=$1 t0=$2 dev drv
	if ! wait_for 30 dev_by_mac "$MAC_B"; then
		abort "$how: VF1's netdev appears" "none in 30 s; $(lspci -nn | grep -c 1ffe) vnic functions"
	fi
	echo "HOTPLUG-ADD-MS $how $(($(now_ms) - t0))"
	dev=$(dev_by_mac "$MAC_B")
	drv=$(basename "$(readlink -f "/sys/bus/pci/devices/$BDF/driver" 2>/dev/null)")
	if [[ $drv == vnic ]] && lspci -n -s "${BDF#0000:}" | grep -q '1ffe:1001'; then
		ok "$how: VF1 (1ffe:1001) at $BDF, bound to vnic, netdev $dev"
	else
		fail "$how: VF1 at $BDF bound to vnic: driver '$drv', lspci '$(lspci -n -s "${BDF#0000:}")'"
	fi
	no_ipv6 "$dev"
	in_ns b "$dev" "$IP_B"
	if wait_for 10 carrier b "$dev"; then
		ok "$how: carrier on VF1's vNIC"
	else
		fail "$how: carrier on VF1's vNIC"
	fi
}

# traffic HOW: ping a -> b 5/5, then iperf3 TCP b -> a.
traffic() {
	local how=$1 rc rate
	ping_from a "$IP_B" 5
	if ((RECEIVED == 5)); then
		ok "$how: ping a -> b 5/5"
	else
		fail "$how: ping a -> b: $RECEIVED/5"
	fi
	ip netns exec a timeout 60 iperf3 -s -1 -p 5201 >/tmp/iperf3-server.log 2>&1 &
	local server=$!
	wait_for 15 listening a 5201 || fail "$how: iperf3 server listening"
	ip netns exec b timeout 40 iperf3 -c "$IP_A" -p 5201 -t "$IPERF_SECONDS" -f m \
		>/tmp/iperf3.log 2>&1
	rc=$?
	wait "$server" 2>/dev/null
	grep -E 'sender|receiver' /tmp/iperf3.log | sed "s/^/  [iperf3 $how] /"
	rate=$(awk '/receiver/ { for (i = 1; i < NF; i++) if ($(i + 1) == "Mbits/sec") r = $i }
		END { print r }' /tmp/iperf3.log)
	if ((rc == 0)) && [[ -n $rate ]]; then
		ok "$how: iperf3 TCP b -> a, $IPERF_SECONDS s: $rate Mbits/sec"
	else
		fail "$how: iperf3 TCP b -> a: status $rc, rate '$rate'"
		tail -n 5 /tmp/iperf3.log
	fi
}

# attached WANT: the host's vnicctl says VF1 has a client (true) or not.
attached() {
	host vnicctl --json show vf1 >/dev/null
	if [[ $HOST_OUT =~ \"attached\":\ ?$1 ]]; then
		ok "card: vf1 attached $1"
	else
		fail "card: vf1 attached $1: $(printf '%s' "$HOST_OUT" | tr -d '\n' | head -c 200)"
	fi
}

# busy_start: a 10 s iperf3 b -> a in the background (IPERF_CLIENT), bounded
# by timeout, its server too (IPERF_SERVER); returns once data flows.
busy_start() {
	ip netns exec a timeout 40 iperf3 -s -1 -p 5202 >/tmp/busy-server.log 2>&1 &
	IPERF_SERVER=$!
	wait_for 15 listening a 5202 || fail "busy: iperf3 server listening"
	# --snd-timeout: give up 3 s after the data stops being acknowledged
	# (the netdev is gone), rather than waiting for TCP's retries.
	ip netns exec b timeout 25 iperf3 -c "$IP_A" -p 5202 -t 10 -i 1 -f m --snd-timeout 3000 \
		>/tmp/busy.log 2>&1 &
	IPERF_CLIENT=$!
	sleep 2
	grep -E 'Mbits/sec' /tmp/busy.log | tail -n 1 | sed 's/^/  [iperf3 busy] /'
}

# busy_end HOW: the background iperf3 ended (the client within its 25 s
# bound, whatever its status; the server is stopped).
busy_end() {
	local t0 rc
	t0=$(now_ms)
	wait "$IPERF_CLIENT"
	rc=$?
	if ((rc == 124)); then
		fail "$1: iperf3 client ends after the removal: killed by its timeout"
	else
		ok "$1: iperf3 client ended $(($(now_ms) - t0)) ms after the removal (status $rc)"
	fi
	tail -n 3 /tmp/busy.log | sed 's/^/  [iperf3 busy] /'
	kill "$IPERF_SERVER" 2>/dev/null
	wait "$IPERF_SERVER" 2>/dev/null
}

# gone HOW T0: VF1 went after the request at T0 (ms).
gone() {
	local t0=$2
	if wait_for 30 b_gone; then
		echo "HOTPLUG-GONE-MS $1 $(($(now_ms) - t0))"
		ok "$1: VF1's netdev and PCI function gone"
	else
		abort "$1: VF1 gone" "still there 30 s later: $(lspci -n | grep 1ffe | tr '\n' ';')"
	fi
}

echo "hotplug: kernel $(uname -r), VNIC_HOTUNPLUG=$UNPLUG"
step "insmod $MODULE; VF0 (attached at boot) in namespace a"
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
netdev_for A "$MAC_A"
no_ipv6 "$A"
in_ns a "$A" "$IP_A"
if lspci -n -s "${BDF#0000:}" | grep -q .; then
	abort "root port rp1 empty at boot" "$(lspci -n -s "${BDF#0000:}")"
fi

step "hot-add VF1 on rp1 (QMP device_add)"
t0=$(now_ms)
host qmp device_add vf1 rp1 || abort "device_add vf1 rp1" "host status $?"
arrived device_add "$t0"
traffic device_add
attached true

for busy in 0 1; do
	how=remove
	((busy)) && how="remove during iperf3"
	step "VF1 removed in the guest ($how), then a rescan"
	((busy)) && busy_start
	t0=$(now_ms)
	echo 1 >"/sys/bus/pci/devices/$BDF/remove"
	gone "$how" "$t0"
	((busy)) && busy_end "$how"
	attached true
	t0=$(now_ms)
	echo 1 >/sys/bus/pci/rescan
	arrived "rescan after $how" "$t0"
	traffic "rescan after $how"
done

for busy in 0 1; do
	how=device_del
	((busy)) && how="device_del during iperf3"
	step "VF1 hot-unplugged ($how), then device_add again"
	if ((UNPLUG != 1)); then
		echo "E2E-SKIP $how: QEMU 11.1.3 aborts on device_del of a vfio-user-pci" \
			"function with MSI-X (docs/guest-environment.md, Hotplug);" \
			"VNIC_HOTUNPLUG=1 runs it with a QEMU that has the fix"
		continue
	fi
	((busy)) && busy_start
	t0=$(now_ms)
	host qmp device_del vf1 || abort "$how" "host status $?"
	gone "$how" "$t0"
	((busy)) && busy_end "$how"
	attached false
	t0=$(now_ms)
	host qmp device_add vf1 rp1 || abort "device_add vf1 rp1 after $how" "host status $?"
	arrived "device_add after $how" "$t0"
	traffic "device_add after $how"
	attached true
done

finish
