#!/bin/bash
# tests/e2e/relay.sh - guest scenario: the live-migration mode on a running
# guest, without a migration (docs/migration.md, "Live migration"). VF0's
# vNIC 0 (namespace a) and VF1's vNIC 0 (namespace b) talk through the
# card. The guest asks the host (vnicctl over the host channel) to put VF0
# in migration mode: from then on every byte the card writes into this
# guest's memory for VF0 (frames received, descriptor write-backs, queue
# contexts, doorbell-page words) travels to QEMU as a vfio-user DMA_WRITE
# and QEMU writes it. Checks, in the mode: ping both ways; iperf3 TCP both
# ways; a 20 MiB file sent b -> a and back a -> b with equal sha256; the
# card's relay counters (DMA_WRITEs > 0, no error, nothing unanswered);
# then the mode ends (vnicctl migrate end) and ping works directly again.
# Prints RELAY-RATE direct/relayed lines (iperf3 Mbit/s) for the log.
#
# Runs INSIDE the guest (as /scenario.sh), served by
# vnic_tests::e2e::run_scenario_with_host.
#
# Launcher options for tests/e2e/main.rs:
# run-guest: --attach vf0,vf1 --vfs 2 --mem 1024 --timeout 300 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 1

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
MAC_A=02:76:6e:00:01:00 # VF0 queue pair 0: namespace a
MAC_B=02:76:6e:00:02:00 # VF1 queue pair 0: namespace b
IP_A=10.0.0.1
IP_B=10.0.0.2
FILE_BYTES=$((20 * 1024 * 1024))
IPERF_SECONDS=4

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

na() { ip netns exec a "$@"; }
nb() { ip netns exec b "$@"; }

# rate FROM-NS TO-IP: iperf3 TCP Mbit/s received, or "" on failure.
rate() {
	ip netns exec "$1" timeout 30 iperf3 -c "$2" -t "$IPERF_SECONDS" -J 2>/dev/null |
		awk -F'[:,]' '/"sum_received"/ { s = 1 } s && /"bits_per_second"/ { printf "%d", $2 / 1e6; exit }'
}

# state_of: the migration state vnicctl printed last (HOST_OUT).
state_of() {
	printf '%s\n' "$HOST_OUT" | awk '$2 == "migration" { sub(/,$/, "", $3); print $3; exit }'
}

# relay_counter NAME: NAME=value from the last vnicctl migrate output.
relay_counter() {
	printf '%s\n' "$HOST_OUT" | grep -o "$1=[0-9]*" | head -n 1 | cut -d= -f2
}

# transfer FROM TO: sends a fresh 20 MiB file from namespace FROM to TO
# (nc) and checks both ends' sha256.
transfer() {
	local from=$1 to=$2 ip sent got
	ip=$IP_A
	[[ $to == b ]] && ip=$IP_B
	head -c "$FILE_BYTES" /dev/urandom >/tmp/send.bin
	sent=$(sha256sum /tmp/send.bin | cut -d' ' -f1)
	rm -f /tmp/got.bin /tmp/hold
	mkfifo /tmp/hold
	# The receiver's stdin never sees EOF (tests/e2e/datapath.sh says why).
	ip netns exec "$to" timeout 90 nc -l -p 5001 <>/tmp/hold >/tmp/got.bin &
	local pid=$!
	wait_for 10 listening "$to" 5001
	ip netns exec "$from" timeout 90 nc "$ip" 5001 </tmp/send.bin
	wait "$pid"
	got=$(sha256sum /tmp/got.bin | cut -d' ' -f1)
	if [[ $sent == "$got" ]]; then
		ok "20 MiB $from -> $to in migration mode: sha256 $sent at both ends"
	else
		fail "20 MiB $from -> $to: sent $sent, received $got ($(stat -c %s /tmp/got.bin) bytes)"
	fi
}

step "insmod $MODULE"
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
has_both() { dev_by_mac "$MAC_A" >/dev/null && dev_by_mac "$MAC_B" >/dev/null; }
wait_for 10 has_both || abort "two vnic netdevs" "$(ip -br link | tr '\n' ';')"
A=$(dev_by_mac $MAC_A)
B=$(dev_by_mac $MAC_B)
ip netns add a
ip netns add b
ip link set "$A" netns a
ip link set "$B" netns b
na ip addr add "$IP_A/24" dev "$A"
nb ip addr add "$IP_B/24" dev "$B"
na ip link set lo up
nb ip link set lo up
na ip link set "$A" up
nb ip link set "$B" up
if ! wait_for 10 carrier a "$A" || ! wait_for 10 carrier b "$B"; then fail "carrier"; fi
if na ping -c 3 -W 2 "$IP_B" >/dev/null; then ok "ping a -> b (direct)"; else fail "ping a -> b (direct)"; fi
na iperf3 -s -D -1 >/dev/null 2>&1
wait_for 10 listening a 5201
direct=$(rate b "$IP_A")
echo "RELAY-RATE direct b->a ${direct:-?} Mbit/s"

step "migration mode on VF0"
host vnicctl migrate begin vf0
if [[ $? == 0 && $(state_of) == relaying ]]; then
	ok "vnicctl migrate begin vf0: relaying"
else
	abort "migrate begin" "$HOST_OUT"
fi
# The card told the driver (IRQ_CAUSE.MIGRATION): it watches closely now.
migrating_logged() { dmesg | grep -q 'live migration under way: configuration checked every 10 ms'; }
if wait_for 5 migrating_logged; then
	ok "vnic.ko: live migration under way, watchdog every 10 ms"
else
	fail "vnic.ko did not hear of the migration: $(dmesg | grep -i migration | tail -n 2)"
fi

for d in "a:$IP_B" "b:$IP_A"; do
	if ip netns exec "${d%%:*}" ping -c 5 -i 0.2 -W 2 "${d#*:}" >/dev/null; then
		ok "ping from ${d%%:*} in migration mode: 5/5"
	else
		fail "ping from ${d%%:*} in migration mode"
	fi
done
na iperf3 -s -D -1 >/dev/null 2>&1
wait_for 10 listening a 5201
relayed_in=$(rate b "$IP_A")
nb iperf3 -s -D -1 >/dev/null 2>&1
wait_for 10 listening b 5201
relayed_out=$(rate a "$IP_B")
echo "RELAY-RATE relayed b->a ${relayed_in:-?} Mbit/s, a->b ${relayed_out:-?} Mbit/s (direct b->a ${direct:-?})"
if [[ -n $relayed_in && $relayed_in -gt 0 && -n $relayed_out && $relayed_out -gt 0 ]]; then
	ok "iperf3 TCP both ways in migration mode"
else
	fail "iperf3 TCP in migration mode: b->a '$relayed_in', a->b '$relayed_out'"
fi
transfer b a
transfer a b

host vnicctl migrate status vf0
writes=$(relay_counter dma_writes)
errors=$(relay_counter errors)
echo "RELAY-COUNTERS $(printf '%s' "$HOST_OUT" | tail -n 1)"
if [[ $(state_of) == relaying && ${writes:-0} -gt 1000 && $errors == 0 ]]; then
	ok "relay counters: $writes DMA_WRITEs, no error"
else
	fail "relay counters: state $(state_of), writes '$writes', errors '$errors'"
fi

step "end of the mode"
host vnicctl migrate end vf0
wait_ended() {
	host vnicctl migrate status vf0 >/dev/null && [[ $(state_of) == off ]]
}
if wait_for 10 wait_ended; then ok "vnicctl migrate end vf0: off"; else fail "migrate end: $HOST_OUT"; fi
over_logged() { dmesg | grep -q 'live migration over: configuration checked every 500 ms'; }
if wait_for 5 over_logged; then ok "vnic.ko: live migration over, watchdog every 500 ms"; else fail "vnic.ko did not hear the mode end"; fi
if na ping -c 3 -W 2 "$IP_B" >/dev/null; then ok "ping a -> b (direct again)"; else fail "ping a -> b after the mode"; fi

step "teardown"
for ns in a b; do
	for d in $(ip netns exec "$ns" ls /sys/class/net); do
		[[ $d == lo ]] || ip -n "$ns" link set "$d" netns 1
	done
	ip netns del "$ns"
done
unload_and_check_kernel
summary relay
