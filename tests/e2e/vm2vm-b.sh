#!/bin/bash
# tests/e2e/vm2vm-b.sh - guest scenario, guest B of the VM-to-VM pair (the
# other is vm2vm-a.sh, which says how to run both by hand). B has VF1; its
# vNIC 0 (02:76:6e:00:02:00) is 10.3.0.2/24. B waits (bounded) until guest
# A (10.3.0.1, VF0, another QEMU process) answers ping, then:
#   - ping -c 5, printing the round-trip summary;
#   - an iperf3 TCP run to A's one-shot server;
#   - a 10 MiB random file sent to A's nc receiver (port 5001); B prints
#     "VM2VM-SENT sha256=<hash> bytes=<n>", which the test compares with A's
#     "VM2VM-RECEIVED" line;
#   - the file sent back by A (port 5002), checked against the original.
# Prints "E2E-OK <check>" or "E2E-FAIL <check>: <detail>"; exits 1 if any
# check failed. Every wait is bounded.
#
# Launcher options for tests/e2e/main.rs (vnicd's options after "--"):
# run-guest: --attach vf1 --vfs 4 --mem 512 --timeout 300 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 2

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
DRIVER=vnic
MAC=02:76:6e:00:02:00 # VF1 queue pair 0
PEER_MAC=02:76:6e:00:01:00 # VF0 queue pair 0, in guest A
IP=10.3.0.2
PEER=10.3.0.1
FILE_BYTES=$((10 * 1024 * 1024))
PEER_WAIT_SECONDS=120
IPERF_SECONDS=5

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

carrier() { ip -o link show dev "$1" | grep -q 'LOWER_UP'; }
counter() { ethtool -S "$1" 2>/dev/null | awk -v n="$2:" '$1 == n { print $2; exit }'; }

finish() {
	step "teardown"
	[[ -n ${DEV:-} ]] && ip link set "$DEV" down
	unload_and_check_kernel
	summary vm2vm-b
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

step "address $IP/24 on $DEV"
ip addr add "$IP/24" dev "$DEV"
ip link set "$DEV" up || abort "link up" "ip link set $DEV up failed"
if wait_for 10 carrier "$DEV"; then ok "carrier up on $DEV"; else fail "carrier up on $DEV"; fi

# ------------------------------------------------------------ ping

step "waiting for A ($PEER), up to $PEER_WAIT_SECONDS s"
t0=$(now_ms)
if wait_for "$PEER_WAIT_SECONDS" ping -c 1 -W 1 "$PEER"; then
	ok "A answers ping after $((($(now_ms) - t0) / 1000)) s"
else
	abort "A answers ping" "no reply from $PEER in $PEER_WAIT_SECONDS s"
fi
neigh=$(ip neigh show "$PEER")
if [[ $neigh == *"lladdr $PEER_MAC"* ]]; then
	ok "ARP: $PEER is at $PEER_MAC"
else
	fail "ARP: neighbour entry for $PEER: '$neigh'"
fi
out=$(ping -c 5 -i 0.2 -W 1 -w 9 "$PEER" 2>&1)
printf '%s\n' "$out" | grep -E 'packets transmitted|round-trip' | sed "s/^/  [ping $PEER] /"
if printf '%s\n' "$out" | grep -q ' 5 packets received'; then
	ok "ping $IP -> $PEER: 5/5"
else
	fail "ping $IP -> $PEER: $(printf '%s\n' "$out" | grep transmitted)"
fi

# ------------------------------------------------------------ iperf3

step "iperf3 TCP B -> A, $IPERF_SECONDS s"
retry_connect 20 /tmp/iperf3.err timeout $((IPERF_SECONDS + 40)) \
	iperf3 -c "$PEER" -p 5201 -t "$IPERF_SECONDS" -f m >/tmp/iperf3.log
crc=$?
cat /tmp/iperf3.err >>/tmp/iperf3.log
sed 's/^/  [iperf3] /' /tmp/iperf3.log
rate=$(awk '/receiver/ { for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") r = $(i - 1) }
	END { print r }' /tmp/iperf3.log)
if ((crc == 0)) && awk -v r="$rate" 'BEGIN { exit !(r > 0) }'; then
	ok "iperf3 TCP B -> A: $rate Mbits/sec"
else
	fail "iperf3 TCP B -> A: status $crc, rate '$rate'"
fi

# ------------------------------------------------------------ transfer

step "$((FILE_BYTES >> 20)) MiB to A with nc, and back"
head -c "$FILE_BYTES" /dev/urandom >/tmp/send.bin
sent=$(sha256sum </tmp/send.bin | cut -d' ' -f1)
echo "VM2VM-SENT sha256=$sent bytes=$FILE_BYTES"
t0=$(now_ms)
retry_connect 20 /tmp/nc-send.err timeout 90 nc "$PEER" 5001 </tmp/send.bin
src=$?
ms=$(($(now_ms) - t0))
if ((src == 0)); then
	ok "sent $FILE_BYTES bytes to A in $ms ms"
else
	fail "send to A: nc status $src (143: ended by its timeout) $(cat /tmp/nc-send.err)"
fi

rm -f /tmp/back.bin /tmp/hold
mkfifo /tmp/hold
# stdin is a FIFO opened read-write: it never reaches EOF, so this nc does
# not half-close (A's nc would then exit with data unsent); A closes when
# it has sent everything.
retry_connect 30 /tmp/nc-back.err timeout 90 nc "$PEER" 5002 \
	<>/tmp/hold >/tmp/back.bin
brc=$?
back=$(sha256sum </tmp/back.bin | cut -d' ' -f1)
size=$(wc -c </tmp/back.bin)
echo "  returned $back $size bytes"
if ((brc == 0)) && [[ $back == "$sent" ]]; then
	ok "file came back from A unchanged (sha256 $back)"
else
	fail "file back from A: nc status $brc, $size of $FILE_BYTES bytes, sha256 $back, want $sent $(cat /tmp/nc-back.err)"
fi

# ------------------------------------------------------------ counters

step "ethtool -S $DEV"
ethtool -S "$DEV" | sed "s/^/  [$DEV] /"
for s in tx_packets rx_packets; do
	v=$(counter "$DEV" $s)
	if ((${v:-0} > 0)); then ok "$DEV $s: $v"; else fail "$DEV $s: '${v:-missing}', want > 0"; fi
done

finish
