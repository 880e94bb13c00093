#!/bin/bash
# tests/e2e/doorbell.sh - guest scenario: vnic.ko with a doorbell page
# (docs/registers.md "Doorbell pages"). VF0 and VF1, one vNIC each, in two
# namespaces. DB_MODE (in /etc/vnic-run.env, or set by a wrapper that
# sources this file) picks the page:
#   bar    (default) the card's page in BAR0 (vnicd --doorbell-page), with
#          vnic.ko's guest page turned off (guest_doorbells=0)
#   guest  a page of the driver's own memory named in its BAT (interface
#          1.4, vnic.ko's default; tests/e2e/doorbell-guest.sh)
# Checks: the driver turned that page on for both functions; ping (each
# echo after an idle gap: the register kick path); iperf3 TCP and a UDP
# burst of small datagrams (doorbells stored into the page while the card
# polls it); ping again after the card went idle; a clean unload with no
# kernel warnings.
#
# Runs INSIDE the guest (as /scenario.sh). Every command that could hang
# is bounded (timeout, ping -w, iperf3 -t).
#
# Launcher options for tests/e2e/main.rs:
# run-guest: --attach vf0,vf1 --vfs 2 --mem 1024 --timeout 240 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 1 --doorbell-page

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
MAC_A=02:76:6e:00:01:00 # VF0 queue pair 0: namespace a
MAC_B=02:76:6e:00:02:00 # VF1 queue pair 0: namespace b
IP_A=10.0.0.1
IP_B=10.0.0.2
SECONDS_EACH=3

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

na() { ip netns exec a "$@"; }
nb() { ip netns exec b "$@"; }

finish() {
	step "teardown"
	drop_namespaces a b
	unload_and_check_kernel
	summary doorbell
}

# shellcheck disable=SC1091 # written by the launcher
[[ -f /etc/vnic-run.env ]] && . /etc/vnic-run.env
DB_MODE=${DB_MODE:-bar}
case $DB_MODE in
bar) PARAMS=(guest_doorbells=0) WANT='doorbell page on' ;;
guest) PARAMS=() WANT='doorbell page on (guest memory)' ;;
*) abort "DB_MODE" "unknown: $DB_MODE" ;;
esac

step "insmod vnic.ko ${PARAMS[*]} (doorbell page: $DB_MODE)"
insmod "$MODULE" "${PARAMS[@]}" || abort "insmod vnic.ko" "failed"
netdev_for A "$MAC_A"
netdev_for B "$MAC_B"
pages=$(dmesg | grep -c ": $WANT\$" || true)
if ((pages == 2)); then
	ok "$WANT in both functions"
else
	abort "$WANT in both functions" "$pages: $(dmesg | grep -i doorbell | tr '\n' ';')"
fi

no_ipv6 "$A"
no_ipv6 "$B"
in_ns a "$A" "$IP_A"
in_ns b "$B" "$IP_B"
if ! wait_for 10 carrier a "$A" || ! wait_for 10 carrier b "$B"; then
	abort "carrier" "no carrier on $A or $B"
fi

step "ping b -> a (idle between echoes: register kicks)"
ping_from b "$IP_A" 5
if ((RECEIVED == 5)); then ok "ping b -> a: 5/5"; else fail "ping b -> a: $RECEIVED/5"; fi

step "iperf3 TCP a -> b, $SECONDS_EACH s"
nb timeout 60 iperf3 -s -1 -p 5201 >/tmp/iperf3-s.log 2>&1 &
spid=$!
wait_for 15 listening b 5201 || fail "iperf3 server listening"
na timeout $((SECONDS_EACH + 40)) iperf3 -c "$IP_B" -p 5201 -t "$SECONDS_EACH" \
	-f m >/tmp/iperf3-c.log 2>&1
crc=$?
wait "$spid"
src=$?
rate=$(awk '/receiver/ { for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") r = $(i - 1) }
	END { print r }' /tmp/iperf3-c.log)
if ((crc == 0 && src == 0)) && awk -v r="$rate" 'BEGIN { exit !(r > 0) }'; then
	ok "iperf3 TCP a -> b: $rate Mbits/sec"
else
	fail "iperf3 TCP a -> b: client $crc, server $src, rate '$rate'"
	tail -n 5 /tmp/iperf3-c.log
fi

step "iperf3 UDP 64-byte datagrams a -> b, $SECONDS_EACH s"
nb timeout 60 iperf3 -s -1 -p 5202 >/tmp/iperf3-us.log 2>&1 &
spid=$!
wait_for 15 listening b 5202 || fail "iperf3 UDP server listening"
na timeout $((SECONDS_EACH + 40)) iperf3 -c "$IP_B" -p 5202 -u -b 0 -l 64 \
	-t "$SECONDS_EACH" >/tmp/iperf3-u.log 2>&1
crc=$?
wait "$spid"
got=$(awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, p, "/"); r = p[2] - p[1] } }
	END { print r + 0 }' /tmp/iperf3-u.log)
if ((crc == 0 && got > 0)); then
	ok "iperf3 UDP a -> b: $got datagrams received"
else
	fail "iperf3 UDP a -> b: client $crc, received '$got'"
	tail -n 5 /tmp/iperf3-u.log
fi

step "ping a -> b after the card went idle"
sleep 1
ping_from a "$IP_B" 3
if ((RECEIVED == 3)); then ok "ping a -> b after idle: 3/3"; else fail "ping a -> b after idle: $RECEIVED/3"; fi

finish
