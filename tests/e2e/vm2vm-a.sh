#!/bin/bash
# tests/e2e/vm2vm-a.sh - guest scenario, guest A of the VM-to-VM pair (the
# other is vm2vm-b.sh). Two QEMU processes share one vnicd: A has VF0, B has
# VF1, so every frame between them is read by the card from one guest's
# memory and written into the other's.
#
# A configures vNIC 0 of VF0 (02:76:6e:00:01:00) as 10.3.0.1/24 and serves;
# B does the active part. A's servers start before its address is set, so
# they listen by the time B can reach A:
#   - iperf3 server for one run (port 5201);
#   - nc receiver (port 5001) for B's 10 MiB file; A prints
#     "VM2VM-RECEIVED sha256=<hash> bytes=<n>" (the test compares it with
#     B's "VM2VM-SENT" line), pings B, then sends the file back on port 5002
#     so that B checks it byte for byte.
# Every wait is bounded (SERVE_SECONDS for B's traffic, ECHO_SECONDS for the
# echo), so A ends even if B never shows up.
#
# Runs INSIDE the guest; both guests need the same vnicd, e.g.:
#   target/debug/vnicd --socket-dir /tmp/card --vfs 4 &
#   qemu/run-guest.sh --no-vnicd --socket-dir /tmp/card --attach vf0 \
#       --add tests/e2e/lib.sh:/etc/vnic-e2e.sh --scenario tests/e2e/vm2vm-a.sh &
#   qemu/run-guest.sh --no-vnicd --socket-dir /tmp/card --attach vf1 \
#       --add tests/e2e/lib.sh:/etc/vnic-e2e.sh --scenario tests/e2e/vm2vm-b.sh
# Prints "E2E-OK <check>" or "E2E-FAIL <check>: <detail>"; exits 1 if any
# check failed.
#
# Launcher options for tests/e2e/main.rs (vnicd's options after "--"):
# run-guest: --attach vf0 --vfs 4 --mem 512 --timeout 300 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 2

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
DRIVER=vnic
MAC=02:76:6e:00:01:00 # VF0 queue pair 0
PEER_MAC=02:76:6e:00:02:00 # VF1 queue pair 0, in guest B
IP=10.3.0.1
PEER=10.3.0.2
FILE_BYTES=$((10 * 1024 * 1024))
SERVE_SECONDS=200
ECHO_SECONDS=60

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

listening() { ss -Hltn | grep -q ":$1 "; }
carrier() { ip -o link show dev "$1" | grep -q 'LOWER_UP'; }
counter() { ethtool -S "$1" 2>/dev/null | awk -v n="$2:" '$1 == n { print $2; exit }'; }

finish() {
	step "teardown"
	[[ -n ${DEV:-} ]] && ip link set "$DEV" down
	unload_and_check_kernel
	summary vm2vm-a
}


# ------------------------------------------------------------ vNIC

step "insmod $MODULE"
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
netdev_for DEV "$MAC"
ok "vNIC $MAC is $DEV"
drv=$(ethtool -i "$DEV" | awk '$1 == "driver:" { print $2 }')
if [[ $drv == "$DRIVER" ]]; then
	ok "$DEV ethtool -i: driver $DRIVER"
else
	fail "$DEV ethtool -i: driver '$drv', want $DRIVER"
fi

# ------------------------------------------------------------ servers

step "servers: iperf3 :5201, nc :5001 (up to $SERVE_SECONDS s)"
rm -f /tmp/recv.bin /tmp/hold
mkfifo /tmp/hold
timeout "$SERVE_SECONDS" iperf3 -s -1 -p 5201 >/tmp/iperf3-server.log 2>&1 &
ipid=$!
# stdin is a FIFO opened read-write, so it never reaches EOF: busybox nc
# half-closes on stdin EOF, and B's nc would then exit with data unsent.
timeout "$SERVE_SECONDS" nc -l -p 5001 <>/tmp/hold >/tmp/recv.bin 2>/tmp/nc.err &
npid=$!
wait_for 15 listening 5201 || fail "iperf3 server listening: $(cat /tmp/iperf3-server.log)"
wait_for 15 listening 5001 || fail "nc listening: $(cat /tmp/nc.err)"

step "address $IP/24 on $DEV"
ip addr add "$IP/24" dev "$DEV"
ip link set "$DEV" up || abort "link up" "ip link set $DEV up failed"
if wait_for 10 carrier "$DEV"; then ok "carrier up on $DEV"; else fail "carrier up on $DEV"; fi
echo "vm2vm-a: serving; waiting for B ($PEER)"

# ------------------------------------------------------------ B's traffic

wait "$npid"
nrc=$?
size=$(wc -c </tmp/recv.bin)
hash=$(sha256sum </tmp/recv.bin | cut -d' ' -f1)
echo "VM2VM-RECEIVED sha256=$hash bytes=$size"
if ((nrc == 0 && size == FILE_BYTES)); then
	ok "received $size bytes from B"
else
	fail "received from B: nc status $nrc (143: ended by its timeout), $size of $FILE_BYTES bytes"
	cat /tmp/nc.err
fi

wait "$ipid"
irc=$?
sed 's/^/  [iperf3 -s] /' /tmp/iperf3-server.log | grep -E 'receiver|sender|error'
if ((irc == 0)) && grep -q receiver /tmp/iperf3-server.log; then
	ok "iperf3 server: one run from B"
else
	fail "iperf3 server: status $irc (it waits at most $SERVE_SECONDS s for B)"
	tail -n 5 /tmp/iperf3-server.log
fi

neigh=$(ip neigh show "$PEER")
if [[ $neigh == *"lladdr $PEER_MAC"* ]]; then
	ok "ARP: $PEER is at $PEER_MAC"
else
	fail "ARP: neighbour entry for $PEER: '$neigh'"
fi
out=$(ping -c 3 -i 0.2 -W 1 -w 7 "$PEER" 2>&1)
printf '%s\n' "$out" | grep -E 'packets transmitted|round-trip' | sed "s/^/  [ping $PEER] /"
if printf '%s\n' "$out" | grep -q ' 3 packets received'; then
	ok "ping $IP -> $PEER: 3/3"
else
	fail "ping $IP -> $PEER: $(printf '%s\n' "$out" | grep transmitted)"
fi

# ------------------------------------------------------------ echo

if ((size > 0)); then
	step "sending the file back on :5002 (up to $ECHO_SECONDS s)"
	timeout "$ECHO_SECONDS" nc -l -p 5002 </tmp/recv.bin 2>/tmp/nc-echo.err
	erc=$?
	if ((erc == 0)); then
		ok "file sent back to B"
	else
		fail "file sent back to B: nc status $erc (143: ended by its timeout) $(cat /tmp/nc-echo.err)"
	fi
fi

# ------------------------------------------------------------ counters

step "ethtool -S $DEV"
ethtool -S "$DEV" | sed "s/^/  [$DEV] /"
for s in tx_packets rx_packets; do
	v=$(counter "$DEV" $s)
	if ((${v:-0} > 0)); then ok "$DEV $s: $v"; else fail "$DEV $s: '${v:-missing}', want > 0"; fi
done

finish
