#!/bin/bash
# tests/e2e/live-b.sh - guest scenario, the peer of the live-migration test
# (see live-a.sh). It stays on host B, on card 2's VF1: b0 02:76:6e:02:02:00
# 10.7.0.2, b1 02:76:6e:02:02:01 10.7.1.2; the migrating guest starts on
# card 1 (behind the uplink) and ends on card 2's VF0, beside it. Once the
# migrating guest answers, for LIVE_SECONDS (80):
#   - iperf3 client b0 -> a0 (5201), and the server on b1:5202 for the
#     other direction;
#   - a 200 MB stream of random bytes b1 -> a1 (5001), 1 MiB at a time with
#     a pause of 0.1 s between (so that it spans the migration), hashed as
#     it goes out: "LIVE-SENT sha256=<hash> bytes=<n>";
#   - ping b0 -> a0 every 0.1 s: "LIVE-PING sent=<n> received=<n>
#     lost=<n> gap=<s>" (gap: the longest time without an answer, from the
#     sequence numbers) and "LIVE-PING-LOST <seq> ...";
#   - tcpdump of ARP on b0: "LIVE-GARP <n>", the gratuitous ARPs of a0's
#     address (the driver announces its addresses after its recovery).
# Prints "E2E-OK <check>" or "E2E-FAIL <check>: <detail>"; exits 1 if any
# check failed. Every wait is bounded.
#
# Launcher options for tests/e2e/main.rs (vnicd's are the test's):
# run-guest: --attach vf1 --vfs 2 --mem 512 --timeout 480 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh

MODULE=/lib/modules/vnic.ko
MAC0=02:76:6e:02:02:00
MAC1=02:76:6e:02:02:01
IP0=10.7.0.2
IP1=10.7.1.2
PEER0=10.7.0.1
PEER1=10.7.1.1
# shellcheck source=/dev/null
[ -f /etc/vnic-run.env ] && . /etc/vnic-run.env
TRAFFIC_SECONDS=${LIVE_SECONDS:-80}
STREAM_MIB=200
WAIT_SECONDS=240

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

finish() {
	step "teardown"
	[[ -n ${B0:-} ]] && ip link set "$B0" down
	[[ -n ${B1:-} ]] && ip link set "$B1" down
	unload_and_check_kernel
	summary live-b
}

step "insmod $MODULE"
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
netdev_for B0 "$MAC0"
netdev_for B1 "$MAC1"
for dev in "$B0" "$B1"; do no_ipv6 "$dev"; done
ip addr add "$IP0/24" dev "$B0"
ip addr add "$IP1/24" dev "$B1"
ip link set "$B0" up
ip link set "$B1" up
wait_for 10 link_up "$B0" || fail "carrier up on $B0"
wait_for 10 link_up "$B1" || fail "carrier up on $B1"
timeout $((WAIT_SECONDS + TRAFFIC_SECONDS)) iperf3 -s -1 -B "$IP1" -p 5202 \
	>/tmp/iperf3-server.log 2>&1 &
spid=$!
wait_for 15 tcp_listening 5202 || fail "iperf3 server listening"

step "waiting for the migrating guest ($PEER0, $PEER1)"
if wait_for "$WAIT_SECONDS" answers "$PEER0" && wait_for 30 answers "$PEER1"; then
	ok "the migrating guest answers on both vNICs"
else
	abort "the migrating guest answers" "no answer in $WAIT_SECONDS s"
fi

step "traffic for $TRAFFIC_SECONDS s"
timeout $((TRAFFIC_SECONDS + 200)) tcpdump -l -n -i "$B0" arp >/tmp/arp.log 2>/tmp/arp.err &
dpid=$!
wait_for 15 grep -q 'listening on' /tmp/arp.err ||
	fail "tcpdump on $B0 listening: $(cat /tmp/arp.err)"
pings=$((TRAFFIC_SECONDS * 10))
ping -i 0.1 -W 1 -c "$pings" "$PEER0" >/tmp/ping.log 2>&1 &
ppid=$!
echo "LIVE-PING-START"
retry_connect 20 /tmp/iperf3-client.err timeout $((TRAFFIC_SECONDS + 120)) \
	iperf3 -c "$PEER0" -B "$IP0" -p 5201 -t "$TRAFFIC_SECONDS" >/tmp/iperf3-client.log 2>&1 &
cpid=$!
rm -f /tmp/ssha
mkfifo /tmp/ssha
sha256sum </tmp/ssha >/tmp/sent.sha &
shapid=$!
(for ((i = 0; i < STREAM_MIB; i++)); do
	head -c 1048576 /dev/urandom
	sleep 0.1
done | tee /tmp/ssha |
	retry_connect 20 /tmp/nc.err timeout $((TRAFFIC_SECONDS + 200)) nc "$PEER1" 5001) &
npid=$!

wait "$npid"
nrc=$?
wait "$shapid"
hash=$(cut -d' ' -f1 </tmp/sent.sha)
echo "LIVE-SENT sha256=$hash bytes=$((STREAM_MIB * 1048576))"
if ((nrc == 0)); then ok "stream sent"; else fail "stream: nc status $nrc $(cat /tmp/nc.err)"; fi

wait "$cpid"
crc=$?
grep -E 'sender|receiver' /tmp/iperf3-client.log | sed 's/^/  [iperf3 -c] /'
if ((crc == 0)) && grep -q receiver /tmp/iperf3-client.log; then
	ok "iperf3 b -> a: one TCP session for $TRAFFIC_SECONDS s"
else
	fail "iperf3 b -> a: status $crc"
	tail -n 5 /tmp/iperf3-client.log /tmp/iperf3-client.err
fi
wait "$spid"
src=$?
if ((src == 0)) && grep -q receiver /tmp/iperf3-server.log; then
	ok "iperf3 a -> b: one TCP session"
else
	fail "iperf3 a -> b (server): status $src"
	tail -n 5 /tmp/iperf3-server.log
fi

wait "$ppid"
received=$(sed -n 's/.* \([0-9][0-9]*\) packets received.*/\1/p' /tmp/ping.log)
# busybox ping numbers from 0; the answered ones print "seq=N". The longest
# gap: the longest run of unanswered numbers, plus one interval.
# (No process substitution: the guest has no /dev/fd.)
stats=$(awk -v n="$pings" '
	match($0, /seq=[0-9]+/) { seen[substr($0, RSTART + 4, RLENGTH - 4)] = 1 }
	END {
		for (i = 0; i < n; i++) {
			if (i in seen) { run = 0; continue }
			lost++
			if (++run > longest) longest = run
		}
		printf "%d %.1f\n", lost, (longest + 1) / 10
	}' /tmp/ping.log)
lost=${stats% *}
gap=${stats#* }
list=$(awk -v n="$pings" '
	match($0, /seq=[0-9]+/) { seen[substr($0, RSTART + 4, RLENGTH - 4)] = 1 }
	END { for (i = 0; i < n; i++) if (!(i in seen)) printf "%d ", i }' /tmp/ping.log)
echo "LIVE-PING sent=$pings received=${received:-0} lost=$lost gap=$gap"
echo "LIVE-PING-LOST $list"
ok "ping every 0.1 s: ${received:-0} of $pings answered"

kill "$dpid" 2>/dev/null
wait "$dpid" 2>/dev/null
garp=$(grep -c "who-has $PEER0 tell $PEER0" /tmp/arp.log)
echo "LIVE-GARP $garp"
grep "tell $PEER0" /tmp/arp.log | head -n 6 | sed 's/^/  [arp] /'
if ((garp > 0)); then
	ok "the migrated guest announced $PEER0 ($garp gratuitous ARPs)"
else
	fail "gratuitous ARP for $PEER0: none seen"
fi

# The migrating guest checks its vNICs against ours once more, then
# listens on 5003.
step "goodbye"
if retry_connect 120 /tmp/bye.err timeout 10 nc "$PEER0" 5003 </dev/null >/dev/null; then
	ok "goodbye to the migrated guest"
else
	fail "goodbye to the migrated guest: $(cat /tmp/bye.err)"
fi
finish
