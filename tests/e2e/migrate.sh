#!/bin/bash
# tests/e2e/migrate.sh - guest scenario: the guest is saved and restored by
# the launcher (qemu/run-guest.sh --migrate) onto a vnicd started afresh,
# with traffic running, and its vnic functions carry on (docs/migration.md).
#
# The guest has VF0 (N = 2) and VF1: VF0's vNIC 0 in namespace a
# (10.0.0.1), VF0's vNIC 1 in namespace c (10.0.0.3), VF1's vNIC 0 in
# namespace b (10.0.0.2). A continuous ping a -> b (every 0.1 s) and an
# iperf3 TCP stream c -> b run across the migration. The scenario records
# each netdev's ifindex and the card's per-queue counters (host vnicctl
# stats, over the host channel), prints VNIC-MIGRATE, on which the launcher
# stops the guest, quiesces the card, saves, and restores onto a new vnicd
# and QEMU; then it waits (90 s at most) for the driver's "recovered in"
# line of both functions, lets the ping run 3 s more and checks:
#   - PING-LOST <n> of <m> (sequence numbers missing), and the same ping
#     process went on after the gap;
#   - iperf3 exited 0 with its connection intact, throughput after the gap;
#   - the netdevs kept their ifindexes;
#   - the card's per-queue counters after the migration (the new vnicd's,
#     read from the contexts in guest memory) are at least the old ones,
#     and grew;
#   - the driver's "recovered in N ms";
#   - the driver announced a's address after the recovery: c (VF0's other
#     vNIC, resumed with a; b's VF may resume after a announced) saw a
#     gratuitous ARP "who-has 10.0.0.1 tell 10.0.0.1" (tcpdump in c).
#
# Environment (--env, from the thin scenario files that source this one):
#   MIGRATE_EXPECT=recover (default): vnic.ko with its default recovery
#     (2: the driver rewrites its VCT entries);
#   MIGRATE_EXPECT=stopped: vnic.ko recovery=1, and the launcher drops the
#     VCT entries (--migrate-drop-vct): after the restore the driver logs
#     "waiting for management to write the VCT entry", pings fail for 5 s,
#     the netdev counters stand still and no queue error appears; then
#     `host vnicctl vct set FN <vnic_bat>` for both functions, and traffic
#     and counters go on;
#   MIGRATE_MAP=vf0=vf2[,A=B...]: the launcher's --migrate-map, so the card
#     functions are looked up under their new names after the migration.
#
# Runs INSIDE the guest (as /scenario.sh), served by
# vnic_tests::e2e::run_scenario_with_host (the host channel runs vnicctl).
# Prints "E2E-OK <check>" or "E2E-FAIL <check>: <detail>", "PING-LOST <n>
# of <m>", "MIGRATE-RECOVERED <fn> <ms> ms"; exits 1 if any check failed.
# Every wait is bounded.
#
# Launcher options for tests/e2e/main.rs (savevm/loadvm, same VFs):
# run-guest: --attach vf0,vf1 --vfs 2 --mem 1024 --timeout 400 --migrate savevm --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 2

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
MAC_A=02:76:6e:00:01:00 # VF0 vNIC 0: namespace a
MAC_C=02:76:6e:00:01:01 # VF0 vNIC 1: namespace c
MAC_B=02:76:6e:00:02:00 # VF1 vNIC 0: namespace b
IP_A=10.0.0.1
IP_B=10.0.0.2
IP_C=10.0.0.3
RECOVERY_WAIT=90

# shellcheck source=/dev/null
[ -f /etc/vnic-run.env ] && . /etc/vnic-run.env
# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

EXPECT=${MIGRATE_EXPECT:-recover}
case $EXPECT in
recover) INSMOD_ARGS=() IPERF_SECONDS=20 ;;
stopped) INSMOD_ARGS=(recovery=1) IPERF_SECONDS=30 ;;
*)
	echo "migrate: unknown MIGRATE_EXPECT '$EXPECT'"
	exit 2
	;;
esac

# mapped FN: FN's name on the card after the migration (MIGRATE_MAP swaps
# pairs, as vnicctl remap does).
mapped() {
	local fn=$1 pair
	for pair in ${MIGRATE_MAP//,/ }; do
		if [[ $fn == "${pair%%=*}" ]]; then
			fn=${pair#*=}
		elif [[ $fn == "${pair#*=}" ]]; then
			fn=${pair%%=*}
		fi
	done
	echo "$fn"
}

PING_PID=
IPERF_PID=
IPERF_SERVER_PID=
finish() {
	step "teardown"
	[[ -n $PING_PID ]] && kill "$PING_PID" 2>/dev/null
	[[ -n $IPERF_PID ]] && kill "$IPERF_PID" 2>/dev/null
	[[ -n $IPERF_SERVER_PID ]] && kill "$IPERF_SERVER_PID" 2>/dev/null
	drop_namespaces a b c
	unload_and_check_kernel
	summary "migrate ($EXPECT)"
}

# ifindex NS DEV: DEV's interface index.
ifindex() { ip -n "$1" -o link show dev "$2" | cut -d: -f1; }

# devstat NS DEV NAME: the netdev statistic NAME (rx_packets, ...) of DEV.
devstat() { ip netns exec "$1" cat "/sys/class/net/$2/statistics/$3"; }

# netdev_counters: rx/tx packets of the three netdevs, one line.
netdev_counters() {
	echo "a:$(devstat a "$A" tx_packets)/$(devstat a "$A" rx_packets)" \
		"c:$(devstat c "$C" tx_packets)/$(devstat c "$C" rx_packets)" \
		"b:$(devstat b "$B" tx_packets)/$(devstat b "$B" rx_packets)"
}

# queue_counters FN: the card's per-queue counters of function FN (host
# vnicctl stats FN --json) as lines "q<vnic>.<counter>=<value>" in QC.
queue_counters() {
	QC=
	host vnicctl stats "$1" --json >/dev/null || return 1
	QC=$(printf '%s' "$HOST_OUT" | awk '
		/"vnics": \[/ { inv = 1; next }
		!inv { next }
		{ gsub(/[",]/, "") }
		$1 == "vnic:" {
			for (k in c) { printf "q%s.%s=%s\n", $2, k, c[k]; delete c[k] }
			next
		}
		$1 ~ /^[a-z_]+:$/ && $2 ~ /^[0-9]+$/ { k = $1; sub(/:$/, "", k); c[k] = $2 }
	' | sort)
	[[ -n $QC ]]
}

# compare_counters WHAT OLD NEW: every counter in NEW is at least the one
# in OLD, and the packets of each queue that had traffic grew.
compare_counters() {
	local what=$1 old=$2 new=$3 line key val now q grew=0 bad=""
	declare -A N=()
	while IFS='=' read -r key val; do
		[[ -n $key ]] && N[$key]=$val
	done <<<"$new"
	while IFS='=' read -r key val; do
		[[ -n $key ]] || continue
		now=${N[$key]:-missing}
		if [[ $now == missing ]] || ((now < val)); then
			bad+=" $key $val->$now"
		fi
	done <<<"$old"
	for q in $(printf '%s\n' "$old" | sed -n 's/^\(q[0-9]*\)\..*/\1/p' | sort -u); do
		line=$(($(get "$old" "$q.tx_packets") + $(get "$old" "$q.rx_packets")))
		now=$((${N[$q.tx_packets]:-0} + ${N[$q.rx_packets]:-0}))
		((line == 0)) && continue
		echo "  [$what $q] tx+rx packets $line before, $now after"
		if ((now > line)); then
			grew=$((grew + 1))
		else
			bad+=" $q packets did not grow ($line->$now)"
		fi
	done
	if [[ -z $bad ]] && ((grew > 0)); then
		ok "$what: per-queue counters kept and grew ($grew queue(s) with traffic)"
	else
		fail "$what: per-queue counters:${bad:- no queue had traffic}"
	fi
}

# get TEXT KEY: the value of KEY=... in TEXT, 0 if none.
get() {
	local v
	v=$(printf '%s\n' "$1" | sed -n "s/^$2=//p")
	echo "${v:-0}"
}

# recovered BDF: the driver logged "recovered in" for BDF since the restore.
recovered() { dmesg | grep "$1" | grep -q 'recovered in'; }
waiting_for_vct() {
	dmesg | grep "$1" | grep -q 'waiting for management to write the VCT entry'
}
both() { "$1" "$BDF0" && "$1" "$BDF1"; }

# replies: the number of ping replies so far.
replies() { grep -c 'bytes from' /tmp/ping.log; }

# ------------------------------------------------------------ set up

step "insmod $MODULE ${INSMOD_ARGS[*]}"
insmod "$MODULE" "${INSMOD_ARGS[@]}" || abort "insmod vnic.ko" "insmod failed"
has_all() { dev_by_mac "$MAC_A" >/dev/null && dev_by_mac "$MAC_C" >/dev/null &&
	dev_by_mac "$MAC_B" >/dev/null; }
wait_for 10 has_all || abort "netdevs" "$(ip -br link | tr '\n' ';')"
A=$(dev_by_mac $MAC_A)
C=$(dev_by_mac $MAC_C)
B=$(dev_by_mac $MAC_B)
BDF0=$(basename "$(readlink -f "/sys/class/net/$A/device")")
BDF1=$(basename "$(readlink -f "/sys/class/net/$B/device")")
ok "netdevs: a $A, c $C (VF0 $BDF0), b $B (VF1 $BDF1)"
in_ns a "$A" "$IP_A"
in_ns c "$C" "$IP_C"
in_ns b "$B" "$IP_B"
for ns_dev in "a $A" "c $C" "b $B"; do
	# shellcheck disable=SC2086 # two words on purpose
	wait_for 10 carrier $ns_dev || abort "carrier" "$ns_dev: $(ip -n "${ns_dev%% *}" -br link)"
done
ping_from a "$IP_B" 3
((RECEIVED > 0)) || abort "ping a -> b before the migration" "no replies"
ping_from c "$IP_B" 3
((RECEIVED > 0)) || abort "ping c -> b before the migration" "no replies"
IFX_BEFORE="a:$(ifindex a "$A") c:$(ifindex c "$C") b:$(ifindex b "$B")"
echo "ifindexes before: $IFX_BEFORE"

step "traffic: ping a -> b every 0.1 s, iperf3 TCP c -> b for $IPERF_SECONDS s"
ip netns exec b timeout $((IPERF_SECONDS + 150)) iperf3 -s -1 -p 5201 \
	>/tmp/iperf3-server.log 2>&1 &
IPERF_SERVER_PID=$!
wait_for 15 listening b 5201 || fail "iperf3 server listening: $(cat /tmp/iperf3-server.log)"
ip netns exec c timeout $((IPERF_SECONDS + 120)) iperf3 -c "$IP_B" -p 5201 \
	-t "$IPERF_SECONDS" -i 1 -f m >/tmp/iperf3-client.log 2>&1 &
IPERF_PID=$!
ip netns exec a timeout 300 ping -i 0.1 -W 1 "$IP_B" >/tmp/ping.log 2>&1 &
PING_PID=$!
sleep 3

SEQ_BEFORE=$(sed -n 's/.*seq=\([0-9]*\).*/\1/p' /tmp/ping.log | tail -n1)
FN0=vf0
FN1=vf1
queue_counters "$FN0" || fail "host vnicctl stats $FN0 before the migration"
QC0_BEFORE=$QC
queue_counters "$FN1" || fail "host vnicctl stats $FN1 before the migration"
QC1_BEFORE=$QC
NETDEV_BEFORE=$(netdev_counters)
echo "before: ping seq $SEQ_BEFORE, netdev tx/rx $NETDEV_BEFORE"
printf '%s\n' "$QC0_BEFORE" | grep packets | sed "s/^/  [$FN0] /"
printf '%s\n' "$QC1_BEFORE" | grep packets | sed "s/^/  [$FN1] /"

# ------------------------------------------------------------ migrate

# Every ARP c sees from now on: the gratuitous ones after the recovery.
# It must listen before the guest is saved: a tcpdump still starting when
# the guest resumes missed a's announcement once (CI, QEMU's default CPU
# model), the recovery being quicker than its start.
ip netns exec c timeout 400 tcpdump -i "$C" -nn -l arp >/tmp/arp-c.log 2>/tmp/arp-c.err &
ARP_PID=$!
wait_for 15 grep -q 'listening on' /tmp/arp-c.err ||
	fail "tcpdump in c listening: $(cat /tmp/arp-c.err)"

step "migration (the launcher saves and restores the guest)"
T_ASK=$(now_ms)
echo "VNIC-MIGRATE"
FN0=$(mapped vf0)
FN1=$(mapped vf1)

if [[ $EXPECT == stopped ]]; then
	if wait_for "$RECOVERY_WAIT" both waiting_for_vct; then
		ok "the driver waits for management's VCT entries ($(($(now_ms) - T_ASK)) ms)"
	else
		dmesg | tail -n 20
		abort "driver waits for the VCT entries" "no 'waiting for management' line for both"
	fi
	R0=$(replies)
	NETDEV_STOPPED=$(netdev_counters)
	sleep 5
	R1=$(replies)
	NETDEV_STOPPED_AFTER=$(netdev_counters)
	if ((R1 == R0)); then
		ok "no ping replies for 5 s while the queues are stopped"
	else
		fail "no ping replies while stopped: $((R1 - R0)) came"
	fi
	if [[ $NETDEV_STOPPED == "$NETDEV_STOPPED_AFTER" ]]; then
		ok "netdev counters stand still: $NETDEV_STOPPED"
	else
		fail "netdev counters stand still: $NETDEV_STOPPED -> $NETDEV_STOPPED_AFTER"
	fi
	if dmesg | grep -E "$BDF0|$BDF1" | grep -Eq 'QP_STATUS|transmit timeout|failed'; then
		fail "no queue error while stopped: $(dmesg | grep -E 'QP_STATUS|transmit timeout' | tail -n 3)"
	else
		ok "no queue error while stopped (dmesg)"
	fi
	for fn in "$FN0" "$FN1"; do
		host vnicctl stats "$fn" >/dev/null
		qerr=$(printf '%s' "$HOST_OUT" | sed -n 's/.*queue_errors=\([0-9]*\).*/\1/p' | head -n1)
		if [[ $qerr == 0 ]]; then
			ok "$fn: the card counts no queue error"
		else
			fail "$fn: the card's queue_errors is '$qerr'"
		fi
	done
	step "management writes the VCT entries"
	for pair in "$FN0 $BDF0" "$FN1 $BDF1"; do
		fn=${pair% *}
		bat=$(cat "/sys/bus/pci/devices/${pair#* }/vnic_bat" 2>/dev/null)
		if [[ -n $bat ]] && host vnicctl vct set "$fn" "$bat"; then
			ok "host vnicctl vct set $fn $bat"
		else
			fail "host vnicctl vct set $fn '$bat'"
		fi
	done
fi

if wait_for "$RECOVERY_WAIT" both recovered; then
	ok "both functions recovered ($(($(now_ms) - T_ASK)) ms after VNIC-MIGRATE, guest time)"
else
	fail "both functions recovered within $RECOVERY_WAIT s"
fi
dmesg | grep -E "$BDF0|$BDF1" | grep -E 'lost its PCI|restor|recover|VF index|VCT|waiting' |
	sed 's/^/  [dmesg] /'
for pair in "vf0 $BDF0" "vf1 $BDF1"; do
	ms=$(dmesg | grep "${pair#* }" | sed -n 's/.*recovered in \([0-9]*\) ms.*/\1/p' | tail -n1)
	echo "MIGRATE-RECOVERED ${pair% *} ${ms:-?} ms"
done
R_AFTER=$(replies)
sleep 3

# ------------------------------------------------------------ checks

step "checks"
kill "$ARP_PID" 2>/dev/null
wait "$ARP_PID" 2>/dev/null
announced=$(grep -c "Request who-has $IP_A tell $IP_A" /tmp/arp-c.log)
if ((announced > 0)); then
	ok "a's address announced after the recovery ($announced gratuitous ARP seen in c)"
else
	fail "a's address announced after the recovery: no gratuitous ARP for $IP_A in c"
	tail -n 5 /tmp/arp-c.log
fi
if kill -0 "$PING_PID" 2>/dev/null; then
	ok "the ping process still runs"
else
	fail "the ping process still runs: it ended"
fi
kill -INT "$PING_PID" 2>/dev/null
wait "$PING_PID"
PING_PID=
grep -E 'packets transmitted|round-trip' /tmp/ping.log | sed 's/^/  [ping] /'
sent=$(sed -n 's/^\([0-9][0-9]*\) packets transmitted.*/\1/p' /tmp/ping.log)
seqs=$(sed -n 's/.*seq=\([0-9]*\).*/\1/p' /tmp/ping.log | sort -n -u)
got=$(printf '%s\n' "$seqs" | grep -c .)
last=$(printf '%s\n' "$seqs" | tail -n1)
sent=${sent:-$((last + 1))}
# The longest run of missing sequence numbers, those after the last reply
# included.
gap=$(printf '%s\n' "$seqs" | awk -v n="$sent" '
	{ if ($1 - p - (NR > 1) > g) g = $1 - p - (NR > 1); p = $1 }
	END { if (n - 1 - p > g) g = n - 1 - p; print g + 0 }')
echo "PING-LOST $((sent - got)) of $sent"
echo "PING-GAP $gap (longest run of missing sequence numbers, 0.1 s each)"
if ((${last:-0} > ${SEQ_BEFORE:-0} + 20 && $(replies) > R_AFTER)); then
	ok "the same ping went on after the gap (seq $SEQ_BEFORE before, $last last)"
else
	fail "the same ping went on after the gap: seq $SEQ_BEFORE before, ${last:-none} last"
fi

# iperf3: bounded by its own timeout.
wait "$IPERF_PID"
crc=$?
IPERF_PID=
wait "$IPERF_SERVER_PID"
src=$?
IPERF_SERVER_PID=
sed 's/^/  [iperf3] /' /tmp/iperf3-client.log | grep -E 'sec|error|unable' | tail -n 30
rate=$(awk '/receiver/ { for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") r = $(i - 1) }
	END { print r }' /tmp/iperf3-client.log)
# Intervals in the second half that moved data: the stream resumed.
late=$(awk -v h=$((IPERF_SECONDS / 2)) '/sec/ && !/sender|receiver/ {
		split($3, t, "-"); if (t[1] + 0 >= h) for (i = 1; i <= NF; i++)
			if ($i == "Mbits/sec" && $(i - 1) > 0) n++ } END { print n + 0 }' \
	/tmp/iperf3-client.log)
if ((crc == 0 && src == 0)) && [[ -n $rate ]] && ((late > 0)); then
	ok "iperf3 c -> b across the migration: exit 0, $rate Mbits/sec, $late late intervals with data"
else
	fail "iperf3 c -> b across the migration: client $crc, server $src, rate '$rate', late intervals $late"
	tail -n 5 /tmp/iperf3-server.log | sed 's/^/  [iperf3 -s] /'
fi

IFX_AFTER="a:$(ifindex a "$A") c:$(ifindex c "$C") b:$(ifindex b "$B")"
if [[ $IFX_AFTER == "$IFX_BEFORE" ]]; then
	ok "same ifindexes ($IFX_AFTER)"
else
	fail "same ifindexes: $IFX_BEFORE -> $IFX_AFTER"
fi
NETDEV_AFTER=$(netdev_counters)
echo "netdev tx/rx before $NETDEV_BEFORE, after $NETDEV_AFTER"
if [[ $EXPECT == stopped ]]; then
	if [[ $NETDEV_AFTER != "$NETDEV_STOPPED_AFTER" ]]; then
		ok "netdev counters go on after vct set ($NETDEV_STOPPED_AFTER -> $NETDEV_AFTER)"
	else
		fail "netdev counters go on after vct set: still $NETDEV_AFTER"
	fi
fi

if queue_counters "$FN0"; then
	printf '%s\n' "$QC" | grep packets | sed "s/^/  [$FN0 after] /"
	compare_counters "VF0 (card $FN0)" "$QC0_BEFORE" "$QC"
else
	fail "host vnicctl stats $FN0 after the migration"
fi
if queue_counters "$FN1"; then
	compare_counters "VF1 (card $FN1)" "$QC1_BEFORE" "$QC"
else
	fail "host vnicctl stats $FN1 after the migration"
fi
host vnicctl show "$FN0" >/dev/null
printf '%s' "$HOST_OUT" | head -n 20 | sed "s/^/  [$FN0] /"

finish
