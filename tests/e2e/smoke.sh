#!/bin/bash
# tests/e2e/smoke.sh - guest scenario: the smoke set every supported guest
# kernel passes (docs/guest-environment.md, "Guest kernels"). The e2e tests
# run it once per kernel (run-guest.sh --kernel NAME).
#
#   - the guest runs the kernel the launcher was asked for
#     (VNIC_KERNEL_VERSION in /etc/vnic-run.env);
#   - vnic.ko loads and binds the PF and both VFs (IDs 1ffe:1000/1001);
#   - each VF has N = 2 netdevs (vnicd --vnics-per-vf 2), the PF its own;
#   - VF0's vNIC 0 (namespace a, 10.0.0.1) and VF1's vNIC 0 (namespace b,
#     10.0.0.2): ping both ways, iperf3 TCP a -> b for 5 s
#     (SMOKE-IPERF <Mbit/s>);
#   - one migration recovery: the scenario prints VNIC-MIGRATE and the
#     launcher saves the guest (savevm), restores it onto a new vnicd and
#     QEMU (loadvm); the driver logs "recovered in" for all three functions
#     within 90 s, and ping a -> b works again (SMOKE-RECOVERED <fn> <ms>);
#   - rmmod vnic, no vnic netdev left, and a dmesg without WARNING, BUG,
#     Oops or call trace over the whole run.
#
# Runs INSIDE the guest (as /scenario.sh). Prints "E2E-OK <check>" or
# "E2E-FAIL <check>: <detail>"; exits 1 if any check failed. Every wait is
# bounded.
#
# run-guest: --attach pf,vf0,vf1 --vfs 2 --mem 1024 --timeout 300 --migrate savevm --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 2

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
DRVDIR=/sys/bus/pci/drivers/vnic
MAC_A=02:76:6e:00:01:00 # VF0 vNIC 0: namespace a
MAC_B=02:76:6e:00:02:00 # VF1 vNIC 0: namespace b
IP_A=10.0.0.1
IP_B=10.0.0.2
N_PER_VF=2
RECOVERY_WAIT=90

# shellcheck source=/dev/null
[ -f /etc/vnic-run.env ] && . /etc/vnic-run.env
# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

IPERF_SERVER_PID=
finish() {
	step "teardown"
	[[ -n $IPERF_SERVER_PID ]] && kill "$IPERF_SERVER_PID" 2>/dev/null
	drop_namespaces a b
	unload_and_check_kernel
	summary "smoke on $(uname -r)"
}

# ping_check NS DST WHAT: 5 pings from NS to DST; the check WHAT passes
# if at least 4 were answered.
ping_check() {
	ping_from "$1" "$2" 5
	if ((RECEIVED >= 4)); then
		ok "$3: $RECEIVED/5"
	else
		fail "$3: $RECEIVED/5"
	fi
}

# netdevs_of BDF: the netdevs of PCI function BDF, one per line.
netdevs_of() { ls "/sys/bus/pci/devices/$1/net" 2>/dev/null; }

# recovered BDF: the driver logged "recovered in" for BDF.
recovered() { dmesg | grep "$1" | grep -q 'recovered in'; }
all_recovered() {
	local bdf
	for bdf in "$PF" "$VF0" "$VF1"; do
		recovered "$bdf" || return 1
	done
}

# ------------------------------------------------------------ kernel

step "kernel"
echo "SMOKE-KERNEL $(uname -r)"
if [[ $(uname -r) == "${VNIC_KERNEL_VERSION:-}" ]]; then
	ok "guest kernel $(uname -r) ($VNIC_KERNEL)"
else
	fail "guest kernel: $(uname -r), want ${VNIC_KERNEL_VERSION:-?} (${VNIC_KERNEL:-?})"
fi

# ------------------------------------------------------------ probe

step "insmod $MODULE"
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
PF=
VF0=
VF1=
bound() { (($(find "$DRVDIR" -maxdepth 1 -name '0000:*' | wc -l) == 3)); }
wait_for 15 bound || fail "three functions bound: $(ls "$DRVDIR")"
for dev in "$DRVDIR"/0000:*; do
	bdf=${dev##*/}
	id=$(cat "$dev/vendor"):$(cat "$dev/device")
	case $id in
	0x1ffe:0x1000) PF=$bdf ;;
	0x1ffe:0x1001) [[ -z $VF0 ]] && VF0=$bdf || VF1=$bdf ;;
	*) fail "vnic bound $bdf with ID $id" ;;
	esac
done
if [[ -n $PF && -n $VF0 && -n $VF1 ]]; then
	ok "vnic.ko bound the PF ($PF) and two VFs ($VF0, $VF1)"
else
	abort "probe" "PF '$PF', VFs '$VF0' '$VF1'"
fi

# The vNICs of VF0 and VF1 come from the card's MACs; which VF is which
# follows from the netdevs.
netdev_for A "$MAC_A"
netdev_for B "$MAC_B"
[[ $(basename "$(readlink -f "/sys/class/net/$A/device")") == "$VF0" ]] ||
	{ t=$VF0; VF0=$VF1; VF1=$t; }
has_all() {
	(($(netdevs_of "$VF0" | wc -l) == N_PER_VF &&
		$(netdevs_of "$VF1" | wc -l) == N_PER_VF &&
		$(netdevs_of "$PF" | wc -l) >= 1))
}
if wait_for 10 has_all; then
	ok "netdevs: VF0 $(netdevs_of "$VF0" | xargs), VF1 $(netdevs_of "$VF1" | xargs), PF $(netdevs_of "$PF" | xargs)"
else
	fail "netdevs: VF0 '$(netdevs_of "$VF0" | xargs)', VF1 '$(netdevs_of "$VF1" | xargs)' ($N_PER_VF each), PF '$(netdevs_of "$PF" | xargs)'"
fi
driver=$(ethtool -i "$A" | sed -n 's/^driver: //p')
if [[ $driver == vnic ]]; then
	ok "ethtool -i $A: driver vnic"
else
	fail "ethtool -i $A: driver '$driver'"
fi

# ------------------------------------------------------------ traffic

step "ping and iperf3 between VF0's and VF1's vNICs"
in_ns a "$A" "$IP_A"
in_ns b "$B" "$IP_B"
wait_for 10 carrier a "$A" || fail "carrier on $A"
wait_for 10 carrier b "$B" || fail "carrier on $B"
ping_check a "$IP_B" "ping a -> b"
ping_check b "$IP_A" "ping b -> a"

ip netns exec b timeout 60 iperf3 -s -1 -p 5201 >/tmp/iperf3-server.log 2>&1 &
IPERF_SERVER_PID=$!
wait_for 15 listening b 5201 || fail "iperf3 server listening: $(cat /tmp/iperf3-server.log)"
ip netns exec a timeout 40 iperf3 -c "$IP_B" -p 5201 -t 5 -f m >/tmp/iperf3.log 2>&1
irc=$?
wait "$IPERF_SERVER_PID"
IPERF_SERVER_PID=
grep -E 'sender|receiver' /tmp/iperf3.log | sed 's/^/  [iperf3] /'
rate=$(awk '/receiver/ { for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") r = $(i - 1) }
	END { print r }' /tmp/iperf3.log)
echo "SMOKE-IPERF ${rate:-0} Mbit/s"
if ((irc == 0)) && [[ -n $rate ]]; then
	ok "iperf3 TCP a -> b, 5 s: $rate Mbits/sec"
else
	fail "iperf3 TCP a -> b: status $irc, rate '$rate'"
	tail -n 5 /tmp/iperf3.log
fi

# ------------------------------------------------------------ migration

step "migration: savevm, then loadvm onto a new vnicd and QEMU"
T_ASK=$(now_ms)
echo "VNIC-MIGRATE"
if wait_for "$RECOVERY_WAIT" all_recovered; then
	ok "PF, VF0 and VF1 recovered ($(($(now_ms) - T_ASK)) ms after VNIC-MIGRATE, guest time)"
else
	fail "PF, VF0 and VF1 recovered within $RECOVERY_WAIT s"
fi
dmesg | grep -E "$PF|$VF0|$VF1" | grep -E 'lost its PCI|restor|recover' |
	sed 's/^/  [dmesg] /'
for pair in "pf $PF" "vf0 $VF0" "vf1 $VF1"; do
	ms=$(dmesg | grep "${pair#* }" | sed -n 's/.*recovered in \([0-9]*\) ms.*/\1/p' | tail -n1)
	echo "SMOKE-RECOVERED ${pair% *} ${ms:-?} ms"
done
ping_check a "$IP_B" "ping a -> b after the migration"

finish
