#!/bin/bash
# tests/e2e/restart-a.sh - guest scenario, guest A of the card-restart test
# (tests/e2e/main.rs, vnicd_worker_killed_three_times_and_upgraded_under_two_guests;
# guest B is restart-b.sh). A has VF0, B has VF1, two vNICs each, on one
# vnicd whose card worker the test kills with SIGKILL three times and then
# upgrades, while:
#   - A serves iperf3 on a0 (10.6.0.1:5201) for B's run, and runs its own
#     iperf3 client to B's b1 (10.6.1.2:5202): TCP both ways;
#   - A receives B's 200 MB stream on a1 (10.6.1.1:5001) and prints
#     "RESTART-RECEIVED sha256=<hash> bytes=<n>" (the test compares it with
#     B's RESTART-SENT);
#   - B pings a0 every 0.1 s (its console has the losses).
# Every TCP session must survive: both iperf3 runs end with status 0 and
# their whole duration, the stream arrives whole.
# Prints "RESTART-READY" once it serves and B answers; "E2E-OK <check>" or
# "E2E-FAIL <check>: <detail>"; exits 1 if any check failed.
#
# Launcher options for tests/e2e/main.rs (vnicd's are the test's):
# run-guest: --attach vf0 --vfs 2 --mem 512 --timeout 420 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh

MODULE=/lib/modules/vnic.ko
MAC0=02:76:6e:00:01:00
MAC1=02:76:6e:00:01:01
IP0=10.6.0.1
IP1=10.6.1.1
PEER0=10.6.0.2
PEER1=10.6.1.2
TRAFFIC_SECONDS=${RESTART_SECONDS:-45}
STREAM_BYTES=$((200 * 1024 * 1024))
WAIT_SECONDS=240

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

step "insmod $MODULE"
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
netdev_for A0 "$MAC0"
netdev_for A1 "$MAC1"
for dev in "$A0" "$A1"; do no_ipv6 "$dev"; done
ip addr add "$IP0/24" dev "$A0"
ip addr add "$IP1/24" dev "$A1"
ip link set "$A0" up
ip link set "$A1" up
wait_for 10 link_up "$A0" || fail "carrier up on $A0"
wait_for 10 link_up "$A1" || fail "carrier up on $A1"

step "servers: iperf3 $IP0:5201, stream $IP1:5001"
rm -f /tmp/hold /tmp/rsha
mkfifo /tmp/hold /tmp/rsha
timeout "$WAIT_SECONDS" iperf3 -s -1 -B "$IP0" -p 5201 >/tmp/iperf3-server.log 2>&1 &
spid=$!
sha256sum </tmp/rsha >/tmp/received.sha &
shapid=$!
# stdin a FIFO opened read-write: busybox nc would half-close on its EOF.
(timeout "$WAIT_SECONDS" nc -l -p 5001 <>/tmp/hold 2>/tmp/nc.err | tee /tmp/rsha | wc -c >/tmp/received.bytes) &
npid=$!
wait_for 15 tcp_listening 5201 || fail "iperf3 server listening"
# Not a check: on a loaded host the receiver may come up late, and the
# peer retries its connection; the stream's bytes and hash are checked.
wait_for 60 tcp_listening 5001 ||
	echo "stream receiver not listening yet after 60 s: $(ss -Hltn | tr '\n' ';') $(cat /tmp/nc.err)"

step "waiting for B ($PEER0, $PEER1)"
if wait_for "$WAIT_SECONDS" answers "$PEER1" && wait_for 30 answers "$PEER0"; then
	ok "B answers on both vNICs"
else
	abort "B answers" "no answer in $WAIT_SECONDS s"
fi
echo "RESTART-READY"

step "iperf3 $IP1 -> $PEER1:5202 for $TRAFFIC_SECONDS s"
retry_connect 20 /tmp/iperf3-client.err timeout $((TRAFFIC_SECONDS + 60)) \
	iperf3 -c "$PEER1" -B "$IP1" -p 5202 -t "$TRAFFIC_SECONDS" >/tmp/iperf3-client.log 2>&1
crc=$?
grep -E 'sender|receiver' /tmp/iperf3-client.log | sed 's/^/  [iperf3 -c] /'
if ((crc == 0)) && grep -q receiver /tmp/iperf3-client.log; then
	ok "iperf3 A -> B: one TCP session for $TRAFFIC_SECONDS s"
else
	fail "iperf3 A -> B: status $crc"
	tail -n 5 /tmp/iperf3-client.log /tmp/iperf3-client.err
fi

wait "$spid"
src=$?
grep -E 'sender|receiver' /tmp/iperf3-server.log | sed 's/^/  [iperf3 -s] /'
if ((src == 0)) && grep -q receiver /tmp/iperf3-server.log; then
	ok "iperf3 B -> A: one TCP session"
else
	fail "iperf3 B -> A (server): status $src"
	tail -n 5 /tmp/iperf3-server.log
fi

step "the stream from B"
wait "$npid"
wait "$shapid"
bytes=$(cat /tmp/received.bytes)
hash=$(cut -d' ' -f1 </tmp/received.sha)
echo "RESTART-RECEIVED sha256=$hash bytes=$bytes"
if ((bytes == STREAM_BYTES)); then
	ok "stream: $bytes bytes from B"
else
	fail "stream: $bytes of $STREAM_BYTES bytes $(cat /tmp/nc.err)"
fi

step "after"
ping_check() {
	local out
	out=$(ping -c 5 -i 0.2 -W 1 -w 9 "$1" 2>&1)
	if printf '%s\n' "$out" | grep -q ' 5 packets received'; then
		ok "ping $1 5/5 after"
	else
		fail "ping $1 after: $(printf '%s\n' "$out" | grep transmitted)"
	fi
}
ping_check "$PEER0"
ping_check "$PEER1"
# B keeps its vNICs up until A is done with them: it says goodbye on 5003.
if timeout 120 nc -l -p 5003 </dev/null >/dev/null 2>/tmp/bye.err; then
	ok "B said goodbye"
else
	fail "B said goodbye: $(cat /tmp/bye.err)"
fi
ip link set "$A0" down
ip link set "$A1" down
unload_and_check_kernel
summary restart-a
