#!/bin/bash
# tests/bench/guest-net.sh - guest side of the guest-level benchmark
# (tests/bench/guest.sh, docs/performance.md). Runs INSIDE the guest.
#
# /etc/vnic-run.env gives:
#   BENCH_DEVICE   vnic | igb | e1000e | virtio | veth: which two interfaces
#                  to use (veth: a veth pair, no NIC at all: what the guest's
#                  own stack reaches, the ceiling for any NIC in this guest)
#   BENCH_ROLE     both (default: both interfaces here, in namespaces a and
#                  b) | server | client (VM-to-VM: one vnic interface per
#                  guest; the server is 10.9.0.1 and waits for the client)
#   BENCH_SECONDS  length of each iperf3 run (default 10)
#   BENCH_MAC      (server/client) the vnic MAC of this guest's vNIC
#   BENCH_VNIC_K   (vnic) ethtool -K settings for the vNICs, e.g.
#                  "tso off tx off sg off": the card without offloads
#   BENCH_VNIC_C   (vnic) ethtool -C settings, e.g. "adaptive-rx off
#                  rx-usecs 20": fixed interrupt moderation
#   BENCH_VNIC_PARAMS  (vnic) vnic.ko module parameters, e.g.
#                  "guest_doorbells=0"
#   BENCH_DB_MODE  (vnic) the doorbells the case must get: guest (default:
#                  vnic.ko's page in guest memory), bar (vnicd
#                  --doorbell-page) or none (posted register writes)
#   BENCH_ECHOES   echoes of the ping measurement (default 30)
#   BENCH_ONLY     the measurements to make, comma-separated (default
#                  ping,tcp1,tcp4,udp64)
#   BENCH_TRACE    N: instead of the measurements, N echoes traced with
#                  the kernel's tracer (tests/bench/latency.sh): the
#                  guest prints BENCH-TRACE-READY, waits for
#                  BENCH_TRACE_WAIT seconds (default 3, the host starts
#                  its own trace), pings, prints BENCH-TRACE-DONE and the
#                  trace, each line behind "TRACE "
#
# The same measurements for every device, client (a, 10.9.0.1... or the
# client guest) to server (b or the server guest):
#   ping     30 echoes (BENCH_ECHOES), 0.2 s apart, after one unmeasured:
#            the average RTT (ping_ms) and the median (ping_med)
#   tcp1     iperf3 TCP, 1 stream: receiver bit rate
#   tcp4     iperf3 TCP, 4 streams: receiver bit rate
#   udp64    iperf3 UDP, 64-byte payloads, no rate limit: datagrams the
#            receiver got per second
# Each result is one console line "BENCH <name> <value>"; a measurement
# that fails prints "BENCH <name> failed". Exits 0 if every measurement
# gave a number.
#
# The guest has Debian 12's iperf3 (3.12) and busybox ping.

# shellcheck disable=SC2317 # functions run through wait_for and "setup_$DEVICE"
# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh
# shellcheck disable=SC1091 # written by the launcher
. /etc/vnic-run.env

DEVICE=${BENCH_DEVICE:-vnic}
ROLE=${BENCH_ROLE:-both}
SECONDS_EACH=${BENCH_SECONDS:-10}
SERVER_IP=10.9.0.2
CLIENT_IP=10.9.0.1
DONE_PORT=5999
FAILED=0

report() { echo "BENCH $1 $2"; }
failed() { echo "BENCH $1 failed"; FAILED=1; }

# abort (tests/e2e/lib.sh) ends here.
finish() {
	echo "BENCH aborted"
	exit 1
}

# Netdevs (in the root namespace) bound to kernel driver $1, by name.
by_driver() {
	local d
	for d in /sys/class/net/*; do
		[[ $(readlink "$d/device/driver" 2>/dev/null) == */"$1" ]] &&
			echo "${d##*/}"
	done
	return 0
}

# at_least N DRIVER: N netdevs of DRIVER exist.
at_least() { (($(by_driver "$2" | wc -l) >= $1)); }

# two_by_driver DRIVER: sets A and B to its first two netdevs.
two_by_driver() {
	local devs
	wait_for 20 at_least 2 "$1"
	# No process substitution: the guest has no /dev/fd.
	read -r -a devs <<<"$(by_driver "$1" | tr '\n' ' ')"
	((${#devs[@]} >= 2)) || abort "two $1 netdevs" "found: ${devs[*]}"
	A=${devs[0]}
	B=${devs[1]}
}

setup_vnic() {
	# shellcheck disable=SC2086 # a word list by design
	insmod /lib/modules/vnic.ko ${BENCH_VNIC_PARAMS:-} ||
		abort "insmod vnic.ko ${BENCH_VNIC_PARAMS:-}" "failed"
	# The case measures what it says: doorbells through the page it names
	# (BENCH_DB_MODE guest: vnic.ko's page in guest memory, the default;
	# bar: vnicd --doorbell-page; none: posted register writes).
	local guest bar want=${BENCH_DB_MODE:-guest}
	guest=$(dmesg | grep -c ': doorbell page on (guest memory)$' || true)
	bar=$(dmesg | grep -c ': doorbell page on$' || true)
	echo "doorbell page: guest memory in $guest functions, BAR0 in $bar"
	case $want in
	guest) ((guest > 0 && bar == 0)) || abort "doorbell page in guest memory" "guest $guest, bar $bar" ;;
	bar) ((bar > 0 && guest == 0)) || abort "doorbell page in BAR0" "guest $guest, bar $bar" ;;
	none) ((guest == 0 && bar == 0)) || abort "no doorbell page" "guest $guest, bar $bar" ;;
	*) abort "BENCH_DB_MODE" "unknown: $want" ;;
	esac
	if [[ $ROLE == both ]]; then
		netdev_for A 02:76:6e:00:01:00 # VF0 vNIC 0
		netdev_for B 02:76:6e:00:02:00 # VF1 vNIC 0
	else
		netdev_for A "$BENCH_MAC"
	fi
	local d
	for d in $A ${B:-}; do
		# shellcheck disable=SC2086 # word lists by design
		if [[ -n ${BENCH_VNIC_K:-} ]]; then
			ethtool -K "$d" $BENCH_VNIC_K || abort "ethtool -K $d" "failed"
		fi
		# shellcheck disable=SC2086
		if [[ -n ${BENCH_VNIC_C:-} ]]; then
			ethtool -C "$d" $BENCH_VNIC_C || abort "ethtool -C $d" "failed"
		fi
		echo "$d: $(ethtool -k "$d" | grep -E '^(tcp-segmentation-offload|tx-checksumming):' | tr '\n' ' ')$(ethtool -c "$d" | grep -E '^(Adaptive RX|rx-usecs|tx-usecs):' | tr '\n' ' ')"
	done
}

# igb: the PF makes two VFs (QEMU's igb switches VF to VF inside the
# device); igbvf drives them.
setup_igb() {
	local pf
	modprobe igb || abort "modprobe igb" "failed"
	wait_for 20 at_least 1 igb
	pf=$(by_driver igb | head -n 1)
	[[ -n $pf ]] || abort "igb PF netdev" "none"
	ip link set "$pf" up
	echo 2 >"/sys/class/net/$pf/device/sriov_numvfs" ||
		abort "igb sriov_numvfs" "failed"
	ip link set "$pf" vf 0 mac 02:aa:00:00:00:01
	ip link set "$pf" vf 1 mac 02:aa:00:00:00:02
	modprobe igbvf || abort "modprobe igbvf" "failed"
	two_by_driver igbvf
}

setup_e1000e() {
	modprobe e1000e || abort "modprobe e1000e" "failed"
	two_by_driver e1000e
}

setup_virtio() {
	modprobe virtio_pci || abort "modprobe virtio_pci" "failed"
	modprobe virtio_net || abort "modprobe virtio_net" "failed"
	two_by_driver virtio_net
}

# veth: no device: a veth pair hands each frame to the peer's stack in the
# sender's context (no descriptors, no interrupt, no copy). What the guest
# reaches with it is the most any NIC can reach between two namespaces of
# this guest.
setup_veth() {
	modprobe veth || abort "modprobe veth" "failed"
	ip link add va type veth peer name vb || abort "veth pair" "failed"
	A=va
	B=vb
}

# iperf3_rate NAME ARGS...: the receiver's rate in Mbit/s from "-f m" text.
iperf3_rate() {
	local name=$1 out rate
	shift
	out=$(retry_connect 30 /tmp/iperf3.err "$@" -t "$SECONDS_EACH" -f m)
	printf '%s\n' "$out" | tail -n 4
	rate=$(printf '%s\n' "$out" | grep receiver | tail -n 1 |
		sed -n 's/.* \([0-9.]*\) Mbits\/sec.*/\1/p')
	if [[ -n $rate ]]; then report "$name" "$rate"; else failed "$name"; fi
}

# udp_pps ARGS...: datagrams received per second of a 64-byte UDP run.
udp_pps() {
	local out line total lost secs
	out=$(retry_connect 30 /tmp/iperf3.err "$@" -u -l 64 -b 0 \
		-t "$SECONDS_EACH" -f m)
	printf '%s\n' "$out" | tail -n 4
	# "[  5]   0.00-10.00  sec  ...  0.004 ms  123/45678 (0.27%)  receiver"
	line=$(printf '%s\n' "$out" | grep receiver | tail -n 1)
	secs=$(printf '%s\n' "$line" | sed -n 's/.*-\([0-9.]*\) *sec .*/\1/p')
	lost=$(printf '%s\n' "$line" | sed -n 's/.* \([0-9]*\)\/\([0-9]*\) (.*/\1/p')
	total=$(printf '%s\n' "$line" | sed -n 's/.* \([0-9]*\)\/\([0-9]*\) (.*/\2/p')
	if [[ -n $secs && -n $total && -n $lost ]]; then
		report udp64 "$(awk -v t="$total" -v l="$lost" -v s="$secs" \
			'BEGIN { printf "%.0f", (t - l) / s }')"
	else
		failed udp64
	fi
}

# ping_rtt NS...: average and median RTT in ms of BENCH_ECHOES (30) echoes
# (busybox or iputils), after one unmeasured echo: the first resolves ARP
# on both sides and took 10-20 ms with every device, enough to move a
# 30-echo average by 0.5 ms. The median is what one slow echo (a host
# hiccup of several ms) cannot move.
ping_rtt() {
	local out avg med
	"$@" ping -c 1 -W 2 "$SERVER_IP" >/dev/null 2>&1 || true
	out=$("$@" ping -c "${BENCH_ECHOES:-30}" -i 0.2 -W 2 "$SERVER_IP" 2>&1)
	printf '%s\n' "$out" | tail -n 2
	avg=$(printf '%s\n' "$out" | sed -n 's/.*min\/avg\/max[^=]*= *[0-9.]*\/\([0-9.]*\)\/.*/\1/p')
	med=$(printf '%s\n' "$out" | sed -n 's/.* time=\([0-9.]*\) ms.*/\1/p' | sort -n |
		awk '{ v[NR] = $1 } END { if (NR) printf "%.3f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
	if [[ -n $avg ]]; then report ping_ms "$avg"; else failed ping_ms; fi
	if [[ -n $med ]]; then report ping_med "$med"; else failed ping_med; fi
}

# cpu_share BEFORE AFTER: how busy the guest's CPUs were between two
# "cpu" lines of /proc/stat (not a measurement of the table: it tells
# whether a run was bound by the guest's CPUs, and where their time went).
cpu_share() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		n = split(a, x); split(b, y)
		for (i = 2; i <= n; i++) { d[i] = y[i] - x[i]; t += d[i] }
		if (t <= 0) exit
		printf "guest CPU during the run: busy %.0f%% (user %.0f, system %.0f, irq %.0f, softirq %.0f), idle %.0f%%\n",
			100 * (t - d[5] - d[6]) / t, 100 * d[2] / t, 100 * d[4] / t,
			100 * d[7] / t, 100 * d[8] / t, 100 * (d[5] + d[6]) / t }'
}

# measure CMD...: every measurement from the client side (CMD prefixes
# each command: "ip netns exec a" or nothing).
measure() {
	local before only=",${BENCH_ONLY:-ping,tcp1,tcp4,udp64},"
	if [[ $only == *,ping,* ]]; then
		step "ping"
		ping_rtt "$@"
	fi
	if [[ $only == *,tcp1,* ]]; then
		step "iperf3 TCP, 1 stream, ${SECONDS_EACH} s"
		before=$(head -n 1 /proc/stat)
		iperf3_rate tcp1 "$@" iperf3 -c "$SERVER_IP"
		cpu_share "$before" "$(head -n 1 /proc/stat)"
	fi
	if [[ $only == *,tcp4,* ]]; then
		step "iperf3 TCP, 4 streams, ${SECONDS_EACH} s"
		iperf3_rate tcp4 "$@" iperf3 -c "$SERVER_IP" -P 4
	fi
	if [[ $only == *,udp64,* ]]; then
		step "iperf3 UDP, 64-byte payloads, ${SECONDS_EACH} s"
		before=$(head -n 1 /proc/stat)
		udp_pps "$@" iperf3 -c "$SERVER_IP"
		cpu_share "$before" "$(head -n 1 /proc/stat)"
	fi
}

# trace_echoes CMD...: BENCH_TRACE echoes from the client side with the
# guest kernel's tracer on: the events of a ping's path through the stacks
# and the NIC (send syscall, start of transmit, interrupt, NAPI poll,
# receive, receive syscall), time-stamped by the monotonic clock.
trace_echoes() {
	local t=/sys/kernel/tracing e
	[[ -e $t/trace_clock ]] || mount -t tracefs nodev "$t" ||
		abort "tracefs" "cannot mount"
	echo mono >"$t/trace_clock"
	echo 2048 >"$t/buffer_size_kb"
	for e in net/net_dev_start_xmit net/netif_receive_skb \
		irq/irq_handler_entry napi/napi_poll \
		syscalls/sys_enter_sendto syscalls/sys_exit_recvfrom; do
		echo 1 >"$t/events/$e/enable" || abort "trace event $e" "missing"
	done
	"$@" ping -c 1 -W 2 "$SERVER_IP" >/dev/null 2>&1 || true
	echo "BENCH-TRACE-READY"
	sleep "${BENCH_TRACE_WAIT:-3}"
	echo >"$t/trace"
	echo 1 >"$t/tracing_on"
	# Printed afterwards: console output during the echoes would be traced
	# (and cost the guest CPU) too.
	"$@" ping -c "$BENCH_TRACE" -i 0.2 -W 2 "$SERVER_IP" >/tmp/ping.out 2>&1
	echo 0 >"$t/tracing_on"
	echo "BENCH-TRACE-DONE"
	sed 's/^/PING /' /tmp/ping.out
	grep -v '^#' "$t/trace" | sed 's/^/TRACE /'
	echo "BENCH-TRACE-END"
	report traced "$BENCH_TRACE"
}

# counters NS DEV: where frames went, after the runs (not measured): the
# device's non-zero counters and the namespace's UDP counters (RcvbufErrors:
# datagrams the receiving socket had no room for).
counters() {
	step "counters of $2 (namespace $1)"
	ip netns exec "$1" ethtool -S "$2" 2>/dev/null | grep -v ': 0$' | tr -s ' ' | tr '\n' ';'
	echo
	ip netns exec "$1" grep '^Udp:' /proc/net/snmp
}

step "bench: $DEVICE ($ROLE), ${SECONDS_EACH} s per run"
no_ipv6 all
"setup_$DEVICE"

case $ROLE in
both)
	in_ns a "$A" "$CLIENT_IP"
	in_ns b "$B" "$SERVER_IP"
	wait_for 20 carrier a "$A" || abort "carrier $A" "none"
	wait_for 20 carrier b "$B" || abort "carrier $B" "none"
	ip netns exec b iperf3 -s -D
	wait_for 10 listening b 5201 || abort "iperf3 server" "not listening"
	if [[ -n ${BENCH_TRACE:-} ]]; then
		trace_echoes ip netns exec a
		exit "$FAILED"
	fi
	measure ip netns exec a
	counters a "$A"
	counters b "$B"
	;;
server)
	ip addr add "$SERVER_IP/24" dev "$A"
	ip link set "$A" up
	iperf3 -s -D
	step "serving until the client says done (bounded)"
	timeout $((SECONDS_EACH * 3 + 240)) nc -l -p "$DONE_PORT" </dev/null
	report served 1
	;;
client)
	ip addr add "$CLIENT_IP/24" dev "$A"
	ip link set "$A" up
	wait_for 120 ping -c 1 -W 1 "$SERVER_IP" || abort "server reachable" "no"
	measure
	echo "done" | timeout 10 nc "$SERVER_IP" "$DONE_PORT"
	;;
*) abort "BENCH_ROLE" "unknown: $ROLE" ;;
esac
exit "$FAILED"
