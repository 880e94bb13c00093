#!/bin/bash
# tests/e2e/restart-b.sh - guest scenario, guest B of the card-restart test
# (see restart-a.sh). B has VF1: b0 (10.6.0.2) and b1 (10.6.1.2). Once A
# answers, B starts, for RESTART_SECONDS (45 by default):
#   - iperf3 client b0 -> A's a0 (10.6.0.1:5201), and the server on b1:5202
#     for A's run;
#   - a 200 MB stream of random bytes b1 -> A's a1 (10.6.1.1:5001), hashed
#     as it goes out: "RESTART-SENT sha256=<hash> bytes=<n>";
#   - ping b0 -> a0 every 0.1 s: "RESTART-PING-START" when it starts (the
#     test notes the time), then "RESTART-PING sent=<n> received=<n>" and
#     "RESTART-PING-LOST <seq> <seq> ..." (the sequence numbers without an
#     answer; the test puts each next to the kill or upgrade it followed).
# Prints "RESTART-TRAFFIC" once all of it runs; "E2E-OK <check>" or
# "E2E-FAIL <check>: <detail>"; exits 1 if any check failed.
#
# Launcher options for tests/e2e/main.rs (vnicd's are the test's):
# run-guest: --attach vf1 --vfs 2 --mem 512 --timeout 420 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh

MODULE=/lib/modules/vnic.ko
MAC0=02:76:6e:00:02:00
MAC1=02:76:6e:00:02:01
IP0=10.6.0.2
IP1=10.6.1.2
PEER0=10.6.0.1
PEER1=10.6.1.1
TRAFFIC_SECONDS=${RESTART_SECONDS:-45}
STREAM_BYTES=$((200 * 1024 * 1024))
WAIT_SECONDS=240

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

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
timeout "$WAIT_SECONDS" iperf3 -s -1 -B "$IP1" -p 5202 >/tmp/iperf3-server.log 2>&1 &
spid=$!
wait_for 15 tcp_listening 5202 || fail "iperf3 server listening"

step "waiting for A ($PEER0, $PEER1)"
if wait_for "$WAIT_SECONDS" answers "$PEER0" && wait_for 30 answers "$PEER1"; then
	ok "A answers on both vNICs"
else
	abort "A answers" "no answer in $WAIT_SECONDS s"
fi

step "traffic for $TRAFFIC_SECONDS s"
pings=$((TRAFFIC_SECONDS * 10))
ping -i 0.1 -W 1 -c "$pings" "$PEER0" >/tmp/ping.log 2>&1 &
ppid=$!
echo "RESTART-PING-START"
retry_connect 20 /tmp/iperf3-client.err timeout $((TRAFFIC_SECONDS + 60)) \
	iperf3 -c "$PEER0" -B "$IP0" -p 5201 -t "$TRAFFIC_SECONDS" >/tmp/iperf3-client.log 2>&1 &
cpid=$!
rm -f /tmp/ssha
mkfifo /tmp/ssha
sha256sum </tmp/ssha >/tmp/sent.sha &
shapid=$!
(head -c "$STREAM_BYTES" /dev/urandom | tee /tmp/ssha |
	retry_connect 20 /tmp/nc.err timeout $((TRAFFIC_SECONDS + 120)) nc "$PEER1" 5001) &
npid=$!
echo "RESTART-TRAFFIC"

wait "$npid"
nrc=$?
wait "$shapid"
hash=$(cut -d' ' -f1 </tmp/sent.sha)
echo "RESTART-SENT sha256=$hash bytes=$STREAM_BYTES"
if ((nrc == 0)); then ok "stream sent"; else fail "stream: nc status $nrc $(cat /tmp/nc.err)"; fi

wait "$cpid"
crc=$?
grep -E 'sender|receiver' /tmp/iperf3-client.log | sed 's/^/  [iperf3 -c] /'
if ((crc == 0)) && grep -q receiver /tmp/iperf3-client.log; then
	ok "iperf3 B -> A: one TCP session for $TRAFFIC_SECONDS s"
else
	fail "iperf3 B -> A: status $crc"
	tail -n 5 /tmp/iperf3-client.log /tmp/iperf3-client.err
fi
wait "$spid"
src=$?
if ((src == 0)) && grep -q receiver /tmp/iperf3-server.log; then
	ok "iperf3 A -> B: one TCP session"
else
	fail "iperf3 A -> B (server): status $src"
	tail -n 5 /tmp/iperf3-server.log
fi

wait "$ppid"
received=$(sed -n 's/.* \([0-9][0-9]*\) packets received.*/\1/p' /tmp/ping.log)
echo "RESTART-PING sent=$pings received=${received:-0}"
# busybox ping numbers from 0; the answered ones print "seq=N".
lost=$(awk -v n="$pings" '
	match($0, /seq=[0-9]+/) { seen[substr($0, RSTART + 4, RLENGTH - 4)] = 1 }
	END { for (i = 0; i < n; i++) if (!(i in seen)) printf "%d ", i }' /tmp/ping.log)
echo "RESTART-PING-LOST $lost"
ok "ping every 0.1 s: ${received:-0} of $pings answered"

# A checks its vNICs against ours once more, then listens on 5003.
step "goodbye to A"
if retry_connect 120 /tmp/bye.err timeout 10 nc "$PEER0" 5003 </dev/null >/dev/null; then
	ok "goodbye to A"
else
	fail "goodbye to A: $(cat /tmp/bye.err)"
fi

ip link set "$B0" down
ip link set "$B1" down
unload_and_check_kernel
summary restart-b
