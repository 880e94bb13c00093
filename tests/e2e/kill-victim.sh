#!/bin/bash
# tests/e2e/kill-victim.sh - guest scenario, the guest whose QEMU the test
# kills with SIGKILL (tests/e2e/main.rs,
# qemu_killed_mid_traffic_leaves_the_card_and_the_other_guest_running_and_its_vf_reattaches;
# the survivor is kill-survivor.sh). VF1's vNIC 0 (02:76:6e:00:02:00) is
# 10.4.0.2/24.
#
# KILL_ROUND=1 (default): waits until the survivor (10.4.0.1) answers,
# prints KILL-READY and keeps pinging it every 50 ms until QEMU is killed;
# it never ends by itself (the launcher's timeout bounds it).
# KILL_ROUND=2 (the new QEMU on the same VF socket): loads vnic.ko again,
# checks that the survivor answers 5/5, then stays up until the survivor
# goes silent (it unloads vnic.ko only after its own pings to this guest),
# and unloads cleanly.
# Prints "E2E-OK <check>" or "E2E-FAIL <check>: <detail>"; exits 1 if any
# check failed.
#
# Launcher options for tests/e2e/main.rs (vnicd's are the test's):
# run-guest: --attach vf1 --vfs 2 --mem 512 --timeout 300 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh

MODULE=/lib/modules/vnic.ko
MAC=02:76:6e:00:02:00 # VF1 queue pair 0
IP=10.4.0.2
PEER=10.4.0.1
REACH_SECONDS=200
SURVIVOR_DONE_SECONDS=120 # the survivor's checks of this guest, then its teardown
PINGS=5

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh
# shellcheck disable=SC1091 # written by the launcher
. /etc/vnic-run.env
ROUND=${KILL_ROUND:-1}

finish() {
	step "teardown"
	[[ -n ${DEV:-} ]] && ip link set "$DEV" down
	unload_and_check_kernel
	summary "kill-victim (round $ROUND)"
}

# shellcheck disable=SC2317 # run through wait_for
answers() { ping -c 1 -W 1 "$PEER"; }
# shellcheck disable=SC2317 # run through wait_for
survivor_silent() { ! ping -c 1 -W 1 "$PEER"; }
# shellcheck disable=SC2317 # run through wait_for
link_up() { ip -o link show dev "$1" | grep -q LOWER_UP; }

step "insmod $MODULE (round $ROUND)"
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
netdev_for DEV "$MAC"
no_ipv6 "$DEV"
ip addr add "$IP/24" dev "$DEV"
ip link set "$DEV" up || abort "link up" "ip link set $DEV up failed"
if wait_for 10 link_up "$DEV"; then
	ok "carrier up on $DEV"
else
	fail "carrier up on $DEV"
fi

step "waiting for the survivor $PEER (up to $REACH_SECONDS s)"
if wait_for "$REACH_SECONDS" answers; then
	ok "survivor $PEER answers"
else
	abort "survivor $PEER answers" "no answer in $REACH_SECONDS s"
fi

if ((ROUND == 1)); then
	# Traffic flows when the test kills this QEMU: a ping every 50 ms.
	ping -i 0.05 "$PEER" >/dev/null 2>&1 &
	echo "KILL-READY"
	sleep 600
	fail "still running: QEMU was not killed"
	finish
fi

out=$(ping -c "$PINGS" -i 0.2 -W 1 -w $((PINGS + 5)) "$PEER" 2>&1)
printf '%s\n' "$out" | grep -E 'packets transmitted|round-trip' | sed "s/^/  [ping $PEER] /"
if printf '%s\n' "$out" | grep -q " $PINGS packets received"; then
	ok "the new QEMU's vNIC reaches the survivor: $PINGS/$PINGS"
else
	fail "the new QEMU's vNIC reaches the survivor: $(printf '%s\n' "$out" | grep transmitted)"
fi
# The survivor pings this guest after it sees it answer again; powering off
# before it is done would fail its check, not ours.
step "waiting for the survivor to finish (up to $SURVIVOR_DONE_SECONDS s)"
if wait_for "$SURVIVOR_DONE_SECONDS" survivor_silent; then
	ok "the survivor finished"
else
	ip neigh
	ip -s link show dev "$DEV"
	ethtool -S "$DEV" 2>&1 | grep -v ': 0$'
	grep -E "^(Icmp|Ip):" /proc/net/snmp
	fail "the survivor finished: still answering after $SURVIVOR_DONE_SECONDS s"
fi
finish
