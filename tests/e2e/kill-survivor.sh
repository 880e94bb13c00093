#!/bin/bash
# tests/e2e/kill-survivor.sh - guest scenario, the guest that survives
# while the test kills the other guest's QEMU (kill-victim.sh) with SIGKILL
# and then starts a new QEMU on the same VF (tests/e2e/main.rs,
# qemu_killed_mid_traffic_leaves_the_card_and_the_other_guest_running_and_its_vf_reattaches).
#
# VF0's two vNICs, each in its own network namespace: a0 (02:76:6e:00:01:00,
# 10.4.0.1, the victim's peer) and a1 (02:76:6e:00:01:01, 10.4.0.3). Checks,
# every wait bounded:
#   1. the victim (10.4.0.2) answers (its first QEMU; the test kills it only
#      after this check passed, so the new QEMU cannot stand in for it);
#   2. it stops answering (its QEMU was killed), and meanwhile the card
#      still switches for this guest: a0 -> a1 loses no ping;
#   3. it answers again (the new QEMU on the same VF), 5/5;
#   4. a0 -> a1 still 10/10; clean unload.
# Prints "E2E-OK <check>" or "E2E-FAIL <check>: <detail>"; exits 1 if any
# check failed.
#
# Launcher options for tests/e2e/main.rs (vnicd's are the test's):
# run-guest: --attach vf0 --vfs 2 --mem 512 --timeout 420 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh

MODULE=/lib/modules/vnic.ko
MAC0=02:76:6e:00:01:00
MAC1=02:76:6e:00:01:01
IP0=10.4.0.1
IP1=10.4.0.3
VICTIM=10.4.0.2
FIRST_SECONDS=200 # the victim's first boot
GONE_SECONDS=200  # until the test kills it
BACK_SECONDS=240  # the new QEMU's boot
LOCAL_PINGS=10

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

finish() {
	step "teardown"
	drop_namespaces a0 a1
	unload_and_check_kernel
	summary kill-survivor
}

# shellcheck disable=SC2317 # run through wait_for
# Each ping's status and its lines other than the banner and the statistics
# go to /tmp/victim-pings.log (counted by kind if the victim never answers).
victim_answers() {
	local rc=0
	ip netns exec a0 ping -c 1 -W 1 "$VICTIM" >/tmp/victim-ping.out 2>&1 || rc=$?
	{
		echo "status $rc"
		grep -vE '^(PING |--- |$)|packets transmitted|round-trip' /tmp/victim-ping.out
	} >>/tmp/victim-pings.log
	return "$rc"
}
# shellcheck disable=SC2317 # run through wait_for
victim_silent() { ! victim_answers; }

# local_check WHAT: a0 -> a1 through the card, LOCAL_PINGS of them.
local_check() {
	ping_from a0 "$IP1" "$LOCAL_PINGS"
	if ((RECEIVED == LOCAL_PINGS)); then
		ok "$1: a0 -> a1 $RECEIVED/$LOCAL_PINGS"
	else
		fail "$1: a0 -> a1 $RECEIVED/$LOCAL_PINGS"
	fi
}

step "insmod $MODULE"
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
netdev_for A0 "$MAC0"
netdev_for A1 "$MAC1"
no_ipv6 "$A0"
no_ipv6 "$A1"
in_ns a0 "$A0" "$IP0"
in_ns a1 "$A1" "$IP1"
wait_for 10 carrier a0 "$A0" || fail "carrier up on $A0"
wait_for 10 carrier a1 "$A1" || fail "carrier up on $A1"
local_check "before"

step "waiting for the victim $VICTIM (up to $FIRST_SECONDS s)"
if wait_for "$FIRST_SECONDS" victim_answers; then
	ok "the victim answers"
else
	abort "the victim answers" "no answer in $FIRST_SECONDS s"
fi

step "waiting for the victim's QEMU to be killed (up to $GONE_SECONDS s)"
if wait_for "$GONE_SECONDS" victim_silent; then
	ok "the victim went silent"
else
	abort "the victim went silent" "still answering after $GONE_SECONDS s"
fi
local_check "while the victim is gone"

step "waiting for the new QEMU on the victim's VF (up to $BACK_SECONDS s)"
rm -f /tmp/victim-pings.log
if wait_for "$BACK_SECONDS" victim_answers; then
	ok "the victim answers again"
else
	echo "the last ping:"
	cat /tmp/victim-ping.out
	echo "every ping of the wait, by kind of line:"
	sort /tmp/victim-pings.log | uniq -c
	ip netns exec a0 ip neigh
	ip netns exec a0 ip -s link show dev "$A0"
	ip netns exec a0 ethtool -S "$A0" 2>&1 | grep -v ': 0$'
	ip netns exec a0 ping -c 3 -W 1 "$VICTIM"
	ip netns exec a0 cat /proc/net/snmp | grep -E "^(Icmp|Ip):"
	abort "the victim answers again" "no answer in $BACK_SECONDS s"
fi
ping_from a0 "$VICTIM" 5
if ((RECEIVED == 5)); then ok "a0 -> victim 5/5"; else fail "a0 -> victim $RECEIVED/5"; fi
local_check "after"
finish
