#!/bin/bash
# tests/e2e/datapath.sh - guest scenario: the card's data path inside one
# guest. Two VFs with two vNICs each give four vnic netdevs; one vNIC of each
# VF goes into its own network namespace, so every frame between the two
# namespaces crosses the card's embedded switch (VF0 <-> VF1). Checks: the
# netdevs and ethtool -i/-l; ARP and ping; iperf3 TCP; a 50 MiB transfer with
# a sha256 check; VLAN isolation with a positive control; ethtool -S
# counters; anti-spoofing; a clean unload with no kernel warnings.
#
# Runs INSIDE the guest (as /scenario.sh), e.g.:
#   qemu/run-guest.sh --attach vf0,vf1 --mem 1024 \
#       --add tests/e2e/lib.sh:/etc/vnic-e2e.sh --scenario tests/e2e/datapath.sh \
#       -- --vnics-per-vf 2
#
# The vNICs are found by MAC: the card's default MACs are 02:76:6e:CC:FF:QQ
# (card CC = 0, FF = function number: VF n -> n + 1, QQ = queue pair), and
# the driver sets dev_port to the queue pair. Prints "E2E-OK <check>" or
# "E2E-FAIL <check>: <detail>" per check; exits 1 if any check failed. Every
# command that could hang is bounded (timeout, ping -w, iperf3 -t).
#
# Launcher options for tests/e2e/main.rs:
# run-guest: --attach vf0,vf1 --vfs 4 --mem 1024 --timeout 300 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 2

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
DRIVER=vnic
MAC_A=02:76:6e:00:01:00 # VF0 queue pair 0: namespace a
MAC_C=02:76:6e:00:01:01 # VF0 queue pair 1: stays down; a macvlan on A spoofs its MAC
MAC_B=02:76:6e:00:02:00 # VF1 queue pair 0: namespace b
MAC_D=02:76:6e:00:02:01 # VF1 queue pair 1: stays down
IP_A=10.0.0.1
IP_B=10.0.0.2
FILE_BYTES=$((50 * 1024 * 1024))
IPERF_SECONDS=5

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

na() { ip netns exec a "$@"; }
nb() { ip netns exec b "$@"; }

# listening, carrier, ping_from: /etc/vnic-e2e.sh (tests/e2e/lib.sh).

# counter NS DEV NAME: the ethtool -S counter NAME of DEV, or "" if none.
counter() {
	ip netns exec "$1" ethtool -S "$2" 2>/dev/null |
		awk -v n="$3:" '$1 == n { print $2; exit }'
}

# capture_start NS DEV FILTER: tcpdump (no promiscuous mode) in the
# background, one line per matching frame; waits until it listens.
CAPN=0
capture_start() {
	CAPN=$((CAPN + 1))
	CAP=/tmp/capture.$CAPN
	ip netns exec "$1" timeout 60 tcpdump -p -l -nn -e -i "$2" "$3" \
		>"$CAP.out" 2>"$CAP.err" &
	CAP_PID=$!
	if ! wait_for 15 grep -q 'listening on' "$CAP.err"; then
		echo "  tcpdump did not start: $(cat "$CAP.err")"
	fi
}

# capture_stop: ends the capture; sets CAPTURED to the frames it saw and
# prints them.
capture_stop() {
	sleep 0.5
	kill "$CAP_PID" 2>/dev/null
	wait "$CAP_PID" 2>/dev/null
	CAPTURED=$(grep -c . "$CAP.out")
	grep . "$CAP.out" | head -n 10 | sed 's/^/  [tcpdump] /'
}

MOVED=0
# Ends the scenario: devices back to the root namespace, rmmod, kernel log
# check, summary.
finish() {
	step "teardown"
	if ((MOVED)); then
		# VLAN devices left by a failed check go; A and B come back.
		for ns in a b; do
			for d in $(ip netns exec "$ns" ls /sys/class/net); do
				case $d in
				lo) ;;
				"$A" | "$B")
					ip -n "$ns" link set "$d" down
					ip -n "$ns" link set "$d" netns 1 ||
						fail "move $d from namespace $ns back"
					;;
				*) ip -n "$ns" link del "$d" ;;
				esac
			done
		done
	fi
	ip netns del a 2>/dev/null
	ip netns del b 2>/dev/null
	unload_and_check_kernel
	summary datapath
}


echo "datapath: kernel $(uname -r), $(nproc) CPUs," \
	"$(awk '/MemTotal/ { print $2 / 1024 " MiB" }' /proc/meminfo)"

# ------------------------------------------------------------ 1. netdevs

step "insmod $MODULE"
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
ok "insmod vnic.ko"
has_all() {
	local m
	for m in "$MAC_A" "$MAC_C" "$MAC_B" "$MAC_D"; do
		dev_by_mac "$m" >/dev/null || return 1
	done
}
wait_for 10 has_all
ip -br link
n=$(cat /sys/class/net/*/address | grep -c '^02:76:6e:00:0[12]:0[01]$')
if ((n == 4)); then
	ok "four vnic netdevs ($MAC_A, $MAC_C, $MAC_B, $MAC_D)"
else
	abort "four vnic netdevs" "found $n: $(ip -br link | tr '\n' ';')"
fi
A=$(dev_by_mac $MAC_A)
B=$(dev_by_mac $MAC_B)
C=$(dev_by_mac $MAC_C)
D=$(dev_by_mac $MAC_D)
echo "datapath: A=$A (VF0 qp0), C=$C (VF0 qp1), B=$B (VF1 qp0), D=$D (VF1 qp1)"

for pair in "$A:0" "$C:1" "$B:0" "$D:1"; do
	d=${pair%:*}
	drv=$(ethtool -i "$d" 2>&1 | awk '$1 == "driver:" { print $2 }')
	if [[ $drv == "$DRIVER" ]]; then
		ok "$d ethtool -i: driver $DRIVER"
	else
		fail "$d ethtool -i: driver '$drv', want $DRIVER"
	fi
	port=$(cat "/sys/class/net/$d/dev_port")
	if [[ $port == "${pair#*:}" ]]; then
		ok "$d dev_port $port (queue pair)"
	else
		fail "$d dev_port: $port, want ${pair#*:}"
	fi
	if out=$(ethtool -l "$d" 2>&1); then
		ok "$d ethtool -l"
	else
		fail "$d ethtool -l: $out"
	fi
done
ethtool -i "$A"
ethtool -l "$A"

# ------------------------------------------------------------ 2. ARP, ping

step "namespaces: $A -> a ($IP_A/24), $B -> b ($IP_B/24)"
if ! ip netns add a || ! ip netns add b; then
	abort "ip netns add" "failed"
fi
MOVED=1
if ! ip link set "$A" netns a || ! ip link set "$B" netns b; then
	abort "move vNICs into namespaces" "ip link set netns failed"
fi
na ip link set lo up
nb ip link set lo up
na ip addr add "$IP_A/24" dev "$A"
nb ip addr add "$IP_B/24" dev "$B"
if ! na ip link set "$A" up || ! nb ip link set "$B" up; then
	abort "link up" "ip link set up failed"
fi
if wait_for 10 carrier a "$A" && wait_for 10 carrier b "$B"; then
	ok "carrier up on $A and $B"
else
	fail "carrier up: $(na ip -br link show dev "$A"); $(nb ip -br link show dev "$B")"
fi

out=$(na timeout 10 arping -c 3 -w 5 -I "$A" "$IP_B" 2>&1)
printf '%s\n' "$out" | sed 's/^/  [arping] /'
if printf '%s\n' "$out" | grep -qi "reply from $IP_B \[$MAC_B\]"; then
	ok "ARP: $IP_B is at $MAC_B"
else
	fail "ARP: no reply from $IP_B [$MAC_B]"
fi

ping_from a "$IP_B" 5
if ((RECEIVED == 5)); then
	ok "ping $IP_A -> $IP_B: 5/5"
else
	abort "ping $IP_A -> $IP_B" "$RECEIVED/5 replies"
fi
ping_from b "$IP_A" 3
if ((RECEIVED == 3)); then
	ok "ping $IP_B -> $IP_A: 3/3"
else
	fail "ping $IP_B -> $IP_A: $RECEIVED/3 replies"
fi
neigh=$(nb ip neigh show "$IP_A")
if [[ $neigh == *"lladdr $MAC_A"* ]]; then
	ok "ARP: b learned $IP_A at $MAC_A"
else
	fail "ARP: b's neighbour entry for $IP_A: '$neigh'"
fi

# ------------------------------------------------------------ 3. iperf3

step "iperf3 TCP a -> b, $IPERF_SECONDS s"
nb timeout 90 iperf3 -s -1 -p 5201 >/tmp/iperf3-server.log 2>&1 &
spid=$!
if ! wait_for 15 listening b 5201; then
	fail "iperf3 server listening: $(cat /tmp/iperf3-server.log)"
fi
na timeout $((IPERF_SECONDS + 40)) iperf3 -c "$IP_B" -p 5201 \
	-t "$IPERF_SECONDS" -f m >/tmp/iperf3-client.log 2>&1
crc=$?
wait "$spid"
src=$?
sed 's/^/  [iperf3] /' /tmp/iperf3-client.log
rate=$(awk '/receiver/ { for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") r = $(i - 1) }
	END { print r }' /tmp/iperf3-client.log)
if ((crc == 0 && src == 0)) && awk -v r="$rate" 'BEGIN { exit !(r > 0) }'; then
	ok "iperf3 TCP a -> b: $rate Mbits/sec"
else
	fail "iperf3 TCP a -> b: client status $crc, server status $src, rate '$rate'"
	sed 's/^/  [iperf3 -s] /' /tmp/iperf3-server.log | tail -n 5
fi

# ------------------------------------------------------------ 4. transfer

step "$((FILE_BYTES >> 20)) MiB from a to b with nc"
head -c "$FILE_BYTES" /dev/urandom >/tmp/send.bin
rm -f /tmp/recv.bin /tmp/hold
mkfifo /tmp/hold
# The receiver's stdin is a FIFO opened read-write, so it never sees EOF:
# busybox nc half-closes its socket on stdin EOF, and a sending nc that sees
# the half-close exits at once, with data still unsent.
nb timeout 150 nc -l -p 5001 <>/tmp/hold >/tmp/recv.bin 2>/tmp/nc-recv.err &
rpid=$!
wait_for 15 listening b 5001 || fail "nc receiver listening: $(cat /tmp/nc-recv.err)"
t0=$(now_ms)
na timeout 150 nc "$IP_B" 5001 </tmp/send.bin
snd=$?
wait "$rpid"
rcv=$?
ms=$(($(now_ms) - t0))
ms=$((ms > 0 ? ms : 1))
sent=$(sha256sum </tmp/send.bin | cut -d' ' -f1)
got=$(sha256sum </tmp/recv.bin | cut -d' ' -f1)
size=$(wc -c </tmp/recv.bin)
echo "  sent     $sent $FILE_BYTES bytes"
echo "  received $got $size bytes in $ms ms" \
	"($(awk -v b="$FILE_BYTES" -v ms="$ms" \
		'BEGIN { printf "%.1f", b / 1048576 / (ms / 1000) }') MiB/s)"
if ((snd == 0 && rcv == 0)) && [[ $sent == "$got" ]]; then
	ok "transfer $FILE_BYTES bytes a -> b: sha256 matches"
else
	fail "transfer a -> b: sender status $snd, receiver status $rcv," \
		"$size of $FILE_BYTES bytes, sha256 $got, want $sent"
	cat /tmp/nc-recv.err
fi
rm -f /tmp/send.bin /tmp/recv.bin

# ------------------------------------------------------------ 4b. offloads

# The file and iperf3 went out as TSO frames with partial checksums, and
# the card passed them from VF0 to VF1 unsegmented (docs/datapath.md,
# "Offloads"): the sender counts GSO frames, the receiver GSO skbs, and
# the card segmented nothing.
step "offloads: TSO and checksums passed VF to VF"
for x in "a $A" "b $B"; do
	read -r ns d <<<"$x"
	feats=$(ip netns exec "$ns" ethtool -k "$d")
	for f in scatter-gather tx-checksumming tcp-segmentation-offload rx-checksumming; do
		if printf '%s\n' "$feats" | grep -q "^$f: on"; then
			ok "$d ethtool -k: $f on"
		else
			fail "$d ethtool -k: $f: $(printf '%s\n' "$feats" | grep "^$f:")"
		fi
	done
done
for x in "a $A sw_tx_gso" "b $B sw_rx_gso" "a $A fn_tx_gso"; do
	read -r ns d s <<<"$x"
	v=$(counter "$ns" "$d" "$s")
	if ((${v:-0} > 0)); then
		ok "$d $s: $v"
	else
		fail "$d $s: '${v:-missing}', want > 0"
	fi
done
for s in fn_sw_segments fn_offload_drops; do
	v=$(counter a "$A" "$s")
	if [[ $v == 0 ]]; then
		ok "$A $s: 0 (nothing segmented or refused on the way to VF1)"
	else
		fail "$A $s: '${v:-missing}', want 0"
	fi
done

# Interrupt moderation: adaptive by default (vnic.ko adaptive_rx), a fixed
# interval on request.
co=$(na ethtool -c "$A" 2>&1)
if printf '%s\n' "$co" | grep -q '^Adaptive RX: on'; then
	ok "$A ethtool -c: adaptive moderation by default"
else
	fail "$A ethtool -c: $(printf '%s\n' "$co" | grep -iE 'adaptive|rx-usecs:')"
fi
na ethtool -C "$A" adaptive-rx off rx-usecs 20 >/dev/null 2>&1
co=$(na ethtool -c "$A" 2>&1)
if printf '%s\n' "$co" | grep -q '^Adaptive RX: off' &&
	printf '%s\n' "$co" | grep -q '^rx-usecs: *20$'; then
	ok "$A ethtool -C adaptive-rx off rx-usecs 20"
else
	fail "$A ethtool -C adaptive-rx off: $(printf '%s\n' "$co" | grep -iE 'adaptive|rx-usecs:')"
fi
na ethtool -C "$A" adaptive-rx on >/dev/null 2>&1
# Send completions alone wait tx-usecs (200 by default, interface 1.3);
# the transfer below runs with them held 5 times longer.
if na ethtool -c "$A" 2>&1 | grep -q '^tx-usecs: *200$'; then
	ok "$A ethtool -c: send completions wait 200 us by default"
else
	fail "$A ethtool -c: $(na ethtool -c "$A" 2>&1 | grep 'tx-usecs:')"
fi
na ethtool -C "$A" tx-usecs 1000 >/dev/null 2>&1
if na ethtool -c "$A" 2>&1 | grep -q '^tx-usecs: *1000$'; then
	ok "$A ethtool -C tx-usecs 1000"
else
	fail "$A ethtool -C tx-usecs 1000: $(na ethtool -c "$A" 2>&1 | grep 'tx-usecs:')"
fi

# Without TSO and checksum offload on the sender the frames carry no
# request; the transfer must be just as intact.
step "offloads off on $A: 5 MiB transfer"
na ethtool -K "$A" tso off tx off >/dev/null 2>&1
if na ethtool -k "$A" | grep -q '^tcp-segmentation-offload: off'; then
	ok "$A ethtool -K tso off tx off"
else
	fail "$A ethtool -K tso off tx off: $(na ethtool -k "$A" | grep '^tcp-seg')"
fi
head -c $((5 << 20)) /dev/urandom >/tmp/send.bin
nb timeout 60 nc -l -p 5002 <>/tmp/hold >/tmp/recv.bin 2>/tmp/nc-recv.err &
rpid=$!
wait_for 15 listening b 5002 || fail "nc receiver listening: $(cat /tmp/nc-recv.err)"
na timeout 60 nc "$IP_B" 5002 </tmp/send.bin
wait "$rpid"
if cmp -s /tmp/send.bin /tmp/recv.bin; then
	ok "offloads off: 5 MiB a -> b intact"
else
	fail "offloads off: received $(wc -c </tmp/recv.bin) bytes, not what was sent"
fi
rm -f /tmp/send.bin /tmp/recv.bin
na ethtool -K "$A" tso on tx on >/dev/null 2>&1
na ethtool -C "$A" tx-usecs 200 >/dev/null 2>&1

# ------------------------------------------------------------ 5. VLANs

step "VLAN isolation"
if modprobe 8021q 2>/dev/null || {
	m=/lib/modules/$(uname -r)/kernel/net
	for k in llc/llc 802/stp 802/garp 802/mrp 8021q/8021q; do
		insmod "$m/$k.ko" 2>/dev/null
	done
	grep -q '^8021q ' /proc/modules
}; then
	ok "8021q loaded"
else
	fail "8021q loaded: neither modprobe nor insmod worked"
fi
# A joins VLAN 10 and B VLAN 20, in one subnet: they must not reach each
# other. B must not be in VLAN 10 yet: it would answer ARP for 10.1.0.2 on
# any of its interfaces. tcpdump on B's own netdev proves that no VLAN 10
# frame reaches B at all (not merely that B's kernel ignores it).
na ip link add link "$A" name va10 type vlan id 10
nb ip link add link "$B" name vb20 type vlan id 20
na ip addr add 10.1.0.1/24 dev va10
nb ip addr add 10.1.0.2/24 dev vb20
na ip link set va10 up
nb ip link set vb20 up
capture_start b "$B" "vlan 10"
ping_from a 10.1.0.2 3
r1=$RECEIVED
ping_from b 10.1.0.1 3
r2=$RECEIVED
capture_stop
if ((r1 == 0 && r2 == 0)); then
	ok "VLAN 10 (A) and VLAN 20 (B) cannot ping each other"
else
	fail "VLAN 10 vs 20: $r1 + $r2 replies, want none"
fi
if ((CAPTURED == 0)); then
	ok "no VLAN 10 frame reached B (not in VLAN 10)"
else
	fail "VLAN 10 frames reached B, which is only in VLAN 20: $CAPTURED"
fi
# Positive control: B joins VLAN 10 too (another subnet).
nb ip link add link "$B" name vb10 type vlan id 10
nb ip addr add 10.2.0.2/24 dev vb10
na ip addr add 10.2.0.1/24 dev va10
nb ip link set vb10 up
capture_start b "$B" "vlan 10"
ping_from a 10.2.0.2 3
capture_stop
if ((RECEIVED == 3)); then
	ok "VLAN 10 on both: ping 10.2.0.1 -> 10.2.0.2 3/3"
else
	fail "VLAN 10 on both: ping 10.2.0.1 -> 10.2.0.2 $RECEIVED/3"
fi
if ((CAPTURED > 0)); then
	ok "VLAN 10 frames reach B once it joined VLAN 10: $CAPTURED"
else
	fail "VLAN 10 frames reach B once it joined VLAN 10: none captured"
fi
na ip link del va10
nb ip link del vb20
nb ip link del vb10

# ------------------------------------------------------------ 6. counters

# Checked before the spoofing step: the driver may restart A's queues to
# change its MAC, and a restarted queue's counters start again from zero
# (they live in its context, docs/datapath.md).
step "ethtool -S"
for x in "a $A" "b $B"; do
	read -r ns d <<<"$x"
	echo "--- ethtool -S $d (namespace $ns)"
	ip netns exec "$ns" ethtool -S "$d" | sed "s/^/  [$d] /"
	for s in tx_packets rx_packets; do
		v=$(counter "$ns" "$d" $s)
		if ((${v:-0} > 0)); then
			ok "$d $s: $v"
		else
			fail "$d $s: '${v:-missing}', want > 0"
		fi
	done
done
# The whole file went from A's queue to B's, so the byte counters hold at
# least that much.
for x in "a $A tx_bytes" "b $B rx_bytes"; do
	read -r ns d s <<<"$x"
	v=$(counter "$ns" "$d" "$s")
	if ((${v:-0} >= FILE_BYTES)); then
		ok "$d $s: $v >= $FILE_BYTES"
	else
		fail "$d $s: '${v:-missing}', want >= $FILE_BYTES"
	fi
done

# ------------------------------------------------------------ 7. spoofing

step "anti-spoofing: a macvlan on A sends with C's MAC $MAC_C"
# The driver no longer takes a MAC the card refuses (ip link set ... address
# fails), and the card refuses another vNIC's MAC as an extra address: a
# macvlan with C's MAC on A is the guest sending with a source that is not
# its own.
modprobe macvlan 2>/dev/null
IP_S=10.0.0.9
na ip link add link "$A" name sp0 address "$MAC_C" type macvlan mode bridge
ip netns add s
na ip link set sp0 netns s
ip -n s addr add "$IP_S/24" dev sp0
ip -n s link set sp0 up
ip -n s link set lo up
spoof0=$(counter a "$A" fn_spoof_drops)
drops0=$(counter a "$A" tx_drops)
ip -n s -br link show dev sp0
capture_start b "$B" "ether src $MAC_C"
ping_from s "$IP_B" 3
capture_stop
spoof1=$(counter a "$A" fn_spoof_drops)
drops1=$(counter a "$A" tx_drops)
echo "  fn_spoof_drops ${spoof0:-?} -> ${spoof1:-?}, tx_drops ${drops0:-?} -> ${drops1:-?}"
if ((RECEIVED == 0)); then
	ok "spoofed source MAC: ping fails"
else
	fail "spoofed source MAC: $RECEIVED/3 replies, want none"
fi
if ((CAPTURED == 0)); then
	ok "spoofed source MAC: no frame from $MAC_C reached B"
else
	fail "spoofed source MAC: $CAPTURED frame(s) from $MAC_C reached B"
fi
if ((${spoof1:-0} > ${spoof0:-0} || ${drops1:-0} > ${drops0:-0})); then
	ok "spoofed frames counted: fn_spoof_drops +$((${spoof1:-0} - ${spoof0:-0})), tx_drops +$((${drops1:-0} - ${drops0:-0}))"
else
	fail "spoofed frames counted: fn_spoof_drops ${spoof0:-none} -> ${spoof1:-none}, tx_drops ${drops0:-none} -> ${drops1:-none}"
fi
ip netns del s
ping_from a "$IP_B" 3
if ((RECEIVED == 3)); then
	ok "A's own traffic unaffected: ping 3/3"
else
	fail "A's own traffic unaffected: ping $RECEIVED/3"
fi

# ------------------------------------------------------------ 8. jumbo frames

# Last, because an MTU change restarts the queues (their counters restart).
# Jumbo frames land in several 4 KiB receive buffers.
step "MTU 9000: ping with 8000-byte payloads"
na ip link set "$A" mtu 9000
nb ip link set "$B" mtu 9000
wait_for 10 carrier a "$A" && wait_for 10 carrier b "$B"
RECEIVED=$(na ping -c 3 -i 0.2 -w 10 -s 8000 "$IP_B" 2>&1 |
	sed -n 's/.* \([0-9][0-9]*\) packets received.*/\1/p')
if [[ ${RECEIVED:-0} == 3 ]]; then
	ok "MTU 9000: ping -s 8000 3/3"
else
	fail "MTU 9000: ping -s 8000 ${RECEIVED:-0}/3"
fi
v=$(counter b "$B" sw_rx_multi_buf)
if ((${v:-0} > 0)); then
	ok "$B sw_rx_multi_buf: $v"
else
	fail "$B sw_rx_multi_buf: '${v:-missing}', want > 0"
fi
na ip link set "$A" mtu 1500
nb ip link set "$B" mtu 1500
wait_for 10 carrier a "$A" && wait_for 10 carrier b "$B"

# ------------------------------------------------------------ 9. unload

finish
