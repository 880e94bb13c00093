#!/bin/bash
# tests/e2e/live-a.sh - guest scenario, the guest that is live-migrated in
# tests/e2e/main.rs (live_migration_between_two_cards_keeps_tcp_ping_and_data;
# the peer is live-b.sh). Two hosts, each a vnicd of its own joined by a UDP
# uplink: card 1 (host A) serves this guest's VF0 (N = 2: a0 02:76:6e:01:01:00
# 10.7.0.1, a1 02:76:6e:01:01:01 10.7.1.1); card 2 (host B) serves the peer's
# VF1 (10.7.0.2, 10.7.1.2). The launcher (qemu/run-guest.sh --migrate live
# --migrate-to <card 2's sockets>) migrates this guest, when it prints
# VNIC-MIGRATE, to a QEMU on card 2's VF0, while:
#   - this guest serves iperf3 on a0 (5201) for the peer's run, and runs its
#     own iperf3 client a1 -> b1 (5202): TCP both ways; every interval line
#     is stamped with this guest's clock, so the rates before, during and
#     after the migration are told apart: "LIVE-IPERF <dir> before=<Mbit/s>
#     during=<..> after=<..>";
#   - it receives the peer's 200 MB stream on a1 (5001): "LIVE-RECEIVED
#     sha256=<hash> bytes=<n>" (the test compares it with LIVE-SENT);
#   - the peer pings a0 every 0.1 s.
# VNIC-MIGRATE goes out LIVE_BEFORE seconds (10) after the traffic started;
# then it waits (LIVE_RECOVERY_WAIT, 240 s) for the driver's "recovered in N
# ms" on the destination: "LIVE-RECOVERED <ms> ms after <s> s" (seconds of
# this guest's time since VNIC-MIGRATE; its clock stands still while QEMU
# has it stopped).
# Prints "E2E-OK <check>" or "E2E-FAIL <check>: <detail>"; exits 1 if any
# check failed. Every wait is bounded.
#
# Launcher options for tests/e2e/main.rs (vnicd's and --migrate's are the
# test's):
# run-guest: --attach vf0 --vfs 2 --mem 512 --timeout 480 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
MAC0=02:76:6e:01:01:00
MAC1=02:76:6e:01:01:01
IP0=10.7.0.1
IP1=10.7.1.1
PEER0=10.7.0.2
PEER1=10.7.1.2
# shellcheck source=/dev/null
[ -f /etc/vnic-run.env ] && . /etc/vnic-run.env
TRAFFIC_SECONDS=${LIVE_SECONDS:-80}
BEFORE_SECONDS=${LIVE_BEFORE:-10}
RECOVERY_WAIT=${LIVE_RECOVERY_WAIT:-240}
STREAM_BYTES=$((200 * 1024 * 1024))
WAIT_SECONDS=240

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

finish() {
	step "teardown"
	[[ -n ${A0:-} ]] && ip link set "$A0" down
	[[ -n ${A1:-} ]] && ip link set "$A1" down
	unload_and_check_kernel
	summary live-a
}

# stamped FILE: each line of stdin, prefixed with this guest's milliseconds
# since boot, into FILE (as it comes: iperf3 --forceflush).
stamped() {
	local line up
	while IFS= read -r line; do
		read -r up _ </proc/uptime
		printf '%d %s\n' $((${up%.*} * 1000 + 10#${up#*.} * 10)) "$line"
	done >"$1"
}

# rates FILE: mean Mbit/s of FILE's interval lines (stamped) before
# T_MIGRATE, between it and T_RECOVERED, and from a second after that.
rates() {
	awk -v m="$T_MIGRATE" -v r="${T_RECOVERED:-999999999}" '
		/sender|receiver|SUM/ { next }
		match($0, /[0-9.]+ [KMG]bits\/sec/) {
			split(substr($0, RSTART, RLENGTH), v, " ")
			x = v[1]
			if (v[2] ~ /^K/) x /= 1000
			if (v[2] ~ /^G/) x *= 1000
			t = $1
			if (t < m) { b += x; nb++ }
			else if (t < r) { d += x; nd++ }
			else if (t >= r + 1000) { a += x; na++ }
		}
		function mean(s, n) { return n ? sprintf("%.0f", s / n) : "-" }
		END { printf "before=%s during=%s after=%s", mean(b, nb), mean(d, nd), mean(a, na) }
	' "$1"
}

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
(timeout $((WAIT_SECONDS + TRAFFIC_SECONDS)) iperf3 -s -1 -B "$IP0" -p 5201 \
	--forceflush 2>&1 | stamped /tmp/iperf3-server.log) &
spid=$!
sha256sum </tmp/rsha >/tmp/received.sha &
shapid=$!
# stdin a FIFO opened read-write: busybox nc would half-close on its EOF.
(timeout $((WAIT_SECONDS + TRAFFIC_SECONDS + 120)) nc -l -p 5001 <>/tmp/hold 2>/tmp/nc.err |
	tee /tmp/rsha | wc -c >/tmp/received.bytes) &
npid=$!
wait_for 30 tcp_listening 5201 || fail "iperf3 server listening"
# Not a check: on a loaded host the receiver may come up late, and the
# peer retries its connection; the stream's bytes and hash are checked.
wait_for 60 tcp_listening 5001 ||
	echo "stream receiver not listening yet after 60 s: $(ss -Hltn | tr '\n' ';') $(cat /tmp/nc.err)"

step "waiting for the peer ($PEER0, $PEER1)"
if wait_for "$WAIT_SECONDS" answers "$PEER1" && wait_for 30 answers "$PEER0"; then
	ok "the peer answers on both vNICs"
else
	abort "the peer answers" "no answer in $WAIT_SECONDS s"
fi

step "iperf3 $IP1 -> $PEER1:5202 for $TRAFFIC_SECONDS s"
(retry_connect 20 /tmp/iperf3-client.err timeout $((TRAFFIC_SECONDS + 120)) \
	iperf3 -c "$PEER1" -B "$IP1" -p 5202 -t "$TRAFFIC_SECONDS" --forceflush |
	stamped /tmp/iperf3-client.log
exit "${PIPESTATUS[0]}") &
cpid=$!
echo "LIVE-TRAFFIC"
sleep "$BEFORE_SECONDS"

step "migration"
T_MIGRATE=$(now_ms)
echo "VNIC-MIGRATE"
T_RECOVERED=
end=$(($(now_ms) + RECOVERY_WAIT * 1000))
while (($(now_ms) < end)); do
	line=$(dmesg | grep -m1 'recovered in [0-9]* ms')
	if [[ -n $line ]]; then
		# "[  123.456789] vnic 0000:00:02.0: recovered in 12 ms (...)"
		stamp=$(sed -n 's/^\[ *\([0-9]*\)\.\([0-9]\{3\}\).*/\1\2/p' <<<"$line")
		T_RECOVERED=$((10#$stamp))
		ms=$(sed -n 's/.*recovered in \([0-9]*\) ms.*/\1/p' <<<"$line")
		break
	fi
	sleep 0.2
done
dmesg | grep -E 'vnic.*(lost its PCI|recovered in|now served|cannot restore|did not resume)'
if [[ -n $T_RECOVERED ]]; then
	after=$(awk -v a="$T_MIGRATE" -v b="$T_RECOVERED" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
	echo "LIVE-RECOVERED $ms ms after $after s"
	ok "the driver recovered the function on the destination in $ms ms"
else
	fail "the driver's 'recovered in' within $RECOVERY_WAIT s"
fi

step "iperf3 results"
wait "$cpid"
crc=$?
grep -E 'sender|receiver' /tmp/iperf3-client.log | sed 's/^[0-9]* /  [iperf3 -c] /'
if ((crc == 0)) && grep -q receiver /tmp/iperf3-client.log; then
	ok "iperf3 a -> b: one TCP session for $TRAFFIC_SECONDS s"
else
	fail "iperf3 a -> b: status $crc"
	tail -n 5 /tmp/iperf3-client.log /tmp/iperf3-client.err
fi
wait "$spid"
grep -E 'sender|receiver' /tmp/iperf3-server.log | sed 's/^[0-9]* /  [iperf3 -s] /'
if grep -q receiver /tmp/iperf3-server.log; then
	ok "iperf3 b -> a: one TCP session"
else
	fail "iperf3 b -> a (server): no summary"
	tail -n 5 /tmp/iperf3-server.log
fi
echo "LIVE-IPERF a->b $(rates /tmp/iperf3-client.log) Mbit/s"
echo "LIVE-IPERF b->a $(rates /tmp/iperf3-server.log) Mbit/s"

step "the stream from the peer"
wait "$npid"
wait "$shapid"
bytes=$(cat /tmp/received.bytes)
hash=$(cut -d' ' -f1 </tmp/received.sha)
echo "LIVE-RECEIVED sha256=$hash bytes=$bytes"
if ((bytes == STREAM_BYTES)); then
	ok "stream: $bytes bytes from the peer"
else
	fail "stream: $bytes of $STREAM_BYTES bytes $(cat /tmp/nc.err)"
fi

# Frames whose payload arrived stale (written by the card into pages QEMU
# had already sent) fail their checksum here, unless the card vouched for
# it: the negative experiment's mildest symptom.
csum=$(awk '$1 == "Tcp:" { if (!h) { for (i = 2; i <= NF; i++) if ($i == "InCsumErrors") c = i; h = 1 } else v = $c }
	END { print v + 0 }' /proc/net/snmp)
echo "LIVE-CSUM-ERRORS tcp=$csum"

step "after"
for ip in "$PEER0" "$PEER1"; do
	out=$(ping -c 5 -i 0.2 -W 1 -w 9 "$ip" 2>&1)
	if printf '%s\n' "$out" | grep -q ' 5 packets received'; then
		ok "ping $ip 5/5 after"
	else
		fail "ping $ip after: $(printf '%s\n' "$out" | grep transmitted)"
	fi
done
# The peer keeps its vNICs up until we are done with them: it says goodbye
# on 5003.
if timeout 120 nc -l -p 5003 </dev/null >/dev/null 2>/tmp/bye.err; then
	ok "the peer said goodbye"
else
	fail "the peer said goodbye: $(cat /tmp/bye.err)"
fi
finish
