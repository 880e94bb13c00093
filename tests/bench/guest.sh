#!/usr/bin/env bash
# tests/bench/guest.sh - guest-level benchmark: the card beside QEMU's own
# NICs, measured in the same run (docs/performance.md). Not part of the
# default test run; bounded (each guest run has a timeout).
#
# Usage: tests/bench/guest.sh [--seconds S] [--only LIST] [--smp N]
#                             [--out DIR]
#
#   --seconds S   length of each iperf3 run (default 10)
#   --only LIST   comma-separated cases (default vnic-vf,vnic-vm,igb,e1000e,virtio,veth):
#                   vnic-vf  vnic VF0 <-> VF1, one guest, two namespaces
#                            (doorbells through vnic.ko's page in guest
#                            memory, its default)
#                   vnic-vf-posted  the same with doorbells as posted
#                            register writes (vnic.ko guest_doorbells=0,
#                            the card before step G6)
#                   vnic-vf-fixed   the same with fixed interrupt
#                            moderation (ethtool -C adaptive-rx off
#                            rx-usecs 20, the card before adaptive)
#                   vnic-vf-plain   the same without offloads either
#                            (ethtool -K tso off tx off sg off)
#                   vnic-vf-txirq   vnic-vf with an interrupt for every
#                            send completion (ethtool -C tx-usecs 0, the
#                            card before step G5)
#                   vnic-vf-page    vnic-vf with vnicd --doorbell-page
#                            and vnic.ko guest_doorbells=0: doorbells
#                            stored into the mmapped page in BAR0 (QEMU's
#                            BAR writes then non-posted)
#                   vnic-vm  vnic VM <-> VM: two guests on one vnicd
#                   igb      QEMU igb, VF <-> VF (the PF makes two VFs)
#                   e1000e   two QEMU e1000e on one QEMU hub
#                   virtio   two virtio-net-pci (QEMU userspace backend) on
#                            one QEMU hub
#                   veth     no NIC: a veth pair between the two namespaces,
#                            the guest's own ceiling (what any NIC between
#                            two namespaces of this guest can reach at most)
#   --smp N       guest CPUs (default 2)
#   --out DIR     where console logs and the table go (default a new
#                 /tmp/vnic-bench.XXXXXX)
#
# Every case boots the same guest image (qemu/setup.sh; the default guest
# kernel, or $VNIC_KERNEL: docs/guest-environment.md) with -m 1024 under
# TCG and runs tests/bench/guest-net.sh in it: ping RTT (30 echoes), iperf3
# TCP with 1 and 4 streams and iperf3 UDP with 64-byte payloads (datagrams
# received per second). vnicd is the release build. Prints one table and
# the ratios vnic / igb (for ping, lower is better). Exit status: 0 if every
# case gave every number, 1 otherwise; 2 usage error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

SECS=10
ONLY=vnic-vf,vnic-vm,igb,e1000e,virtio,veth
SMP=2
OUT=
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }
while (($#)); do
	case $1 in
	--seconds) SECS=$2; shift ;;
	--only) ONLY=$2; shift ;;
	--smp) SMP=$2; shift ;;
	--out) OUT=$2; shift ;;
	-h | --help) usage 0 ;;
	*) echo "guest.sh: unknown option $1" >&2; usage 2 ;;
	esac
	shift
done
[[ -n $OUT ]] || OUT=$(mktemp -d /tmp/vnic-bench.XXXXXX)
mkdir -p "$OUT"
say() { printf '[bench] %s\n' "$*"; }

say "setup (qemu/setup.sh) and release build"
qemu/setup.sh >"$OUT/setup.log" 2>&1 || { say "setup failed: $OUT/setup.log"; exit 1; }
cargo build --release -p vnic-device --bins --quiet
VNICD=$ROOT/target/release/vnicd

# Each guest run: bounded by its own timeout (run-guest.sh kills QEMU).
TIMEOUT=$((SECS * 3 + 300))
COMMON=(--mem 1024 --smp "$SMP" --quiet --timeout "$TIMEOUT"
	--scenario tests/bench/guest-net.sh
	--add tests/e2e/lib.sh:/etc/vnic-e2e.sh
	--env "BENCH_SECONDS=$SECS")

# Processes started here (vnicd and guests of vnic-vm), stopped on exit.
declare -a PIDS=()
# shellcheck disable=SC2317 # run by the trap
cleanup() {
	local p
	for p in "${PIDS[@]+"${PIDS[@]}"}"; do
		kill "$p" 2>/dev/null || true
	done
}
trap cleanup EXIT

run_case() {
	local name=$1 log=$OUT/$1.log
	shift
	say "$name: booting (log $log)"
	local rc=0
	qemu/run-guest.sh "${COMMON[@]}" --log "$log" "$@" >/dev/null 2>&1 || rc=$?
	((rc == 0)) || say "$name: guest exit status $rc (see $log)"
}

# hub_pair MODEL: sets HUB to the run-guest.sh options for a guest with no
# vnic function and two QEMU NICs of MODEL on QEMU hub 0.
hub_pair() {
	HUB=(--attach "" --no-vnicd
		--qemu-arg -netdev --qemu-arg "hubport,id=h1,hubid=0"
		--qemu-arg -netdev --qemu-arg "hubport,id=h2,hubid=0"
		--qemu-arg -device --qemu-arg "$1,netdev=h1,mac=52:54:00:00:00:01"
		--qemu-arg -device --qemu-arg "$1,netdev=h2,mac=52:54:00:00:00:02")
}

vnic_vm() {
	local dir=$OUT/vm-card pid rc=0
	mkdir -p "$dir"
	"$VNICD" --socket-dir "$dir" --vfs 2 --vnics-per-vf 1 \
		>"$OUT/vnic-vm.vnicd.out" 2>"$OUT/vnic-vm.vnicd.log" &
	pid=$!
	PIDS+=("$pid")
	for _ in $(seq 50); do
		[[ -S $dir/vf1.sock ]] && break
		sleep 0.1
	done
	say "vnic-vm: booting two guests (logs $OUT/vnic-vm-*.log)"
	qemu/run-guest.sh "${COMMON[@]}" --log "$OUT/vnic-vm-server.log" \
		--no-vnicd --socket-dir "$dir" --attach vf0 --env BENCH_DEVICE=vnic \
		--env BENCH_ROLE=server --env BENCH_MAC=02:76:6e:00:01:00 \
		>/dev/null 2>&1 &
	local server=$!
	PIDS+=("$server")
	qemu/run-guest.sh "${COMMON[@]}" --log "$OUT/vnic-vm.log" \
		--no-vnicd --socket-dir "$dir" --attach vf1 --env BENCH_DEVICE=vnic \
		--env BENCH_ROLE=client --env BENCH_MAC=02:76:6e:00:02:00 \
		>/dev/null 2>&1 || rc=$?
	((rc == 0)) || say "vnic-vm: client guest exit status $rc"
	wait "$server" || say "vnic-vm: server guest exit status $?"
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

IFS=, read -r -a CASES <<<"$ONLY"
for c in "${CASES[@]}"; do
	case $c in
	vnic-vf)
		run_case vnic-vf --vnicd "$VNICD" --vfs 2 --attach vf0,vf1 \
			--env BENCH_DEVICE=vnic -- --vnics-per-vf 1
		;;
	vnic-vf-posted)
		run_case vnic-vf-posted --vnicd "$VNICD" --vfs 2 --attach vf0,vf1 \
			--env BENCH_DEVICE=vnic --env BENCH_DB_MODE=none \
			--env BENCH_VNIC_PARAMS=guest_doorbells=0 -- --vnics-per-vf 1
		;;
	vnic-vf-fixed)
		run_case vnic-vf-fixed --vnicd "$VNICD" --vfs 2 --attach vf0,vf1 \
			--env BENCH_DEVICE=vnic \
			--env "BENCH_VNIC_C=adaptive-rx off rx-usecs 20" -- --vnics-per-vf 1
		;;
	vnic-vf-plain)
		run_case vnic-vf-plain --vnicd "$VNICD" --vfs 2 --attach vf0,vf1 \
			--env BENCH_DEVICE=vnic \
			--env "BENCH_VNIC_C=adaptive-rx off rx-usecs 20" \
			--env "BENCH_VNIC_K=tso off tx off sg off" -- --vnics-per-vf 1
		;;
	vnic-vf-txirq)
		run_case vnic-vf-txirq --vnicd "$VNICD" --vfs 2 --attach vf0,vf1 \
			--env BENCH_DEVICE=vnic --env "BENCH_VNIC_C=tx-usecs 0" \
			-- --vnics-per-vf 1
		;;
	vnic-vf-page)
		run_case vnic-vf-page --vnicd "$VNICD" --vfs 2 --attach vf0,vf1 \
			--env BENCH_DEVICE=vnic --env BENCH_DB_MODE=bar \
			--env BENCH_VNIC_PARAMS=guest_doorbells=0 \
			-- --vnics-per-vf 1 --doorbell-page
		;;
	vnic-vm) vnic_vm ;;
	igb)
		run_case igb --attach "" --no-vnicd --env BENCH_DEVICE=igb \
			--qemu-arg -netdev --qemu-arg hubport,id=h1,hubid=0 \
			--qemu-arg -device --qemu-arg igb,netdev=h1
		;;
	e1000e)
		hub_pair e1000e
		run_case e1000e --env BENCH_DEVICE=e1000e "${HUB[@]}"
		;;
	virtio)
		hub_pair virtio-net-pci
		run_case virtio --env BENCH_DEVICE=virtio "${HUB[@]}"
		;;
	veth)
		run_case veth --attach "" --no-vnicd --env BENCH_DEVICE=veth
		;;
	*) say "unknown case $c"; exit 2 ;;
	esac
done

# ------------------------------------------------------------ the table

# value CASE METRIC: the number the guest printed, or "-".
value() {
	local v
	v=$(sed -n "s/^BENCH $2 \([0-9.][0-9.]*\)\r\{0,1\}$/\1/p" "$OUT/$1.log" 2>/dev/null |
		tail -n 1)
	echo "${v:--}"
}

ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'
}

label() {
	case $1 in
	vnic-vf) echo "vnic VF<->VF" ;;
	vnic-vf-posted) echo "  posted writes" ;;
	vnic-vf-fixed) echo "  fixed ITR" ;;
	vnic-vf-plain) echo "  no offloads" ;;
	vnic-vf-txirq) echo "  tx-usecs 0" ;;
	vnic-vf-page) echo "  BAR0 page" ;;
	vnic-vm) echo "vnic VM<->VM" ;;
	igb) echo "igb VF<->VF" ;;
	e1000e) echo "e1000e" ;;
	virtio) echo "virtio-net" ;;
	veth) echo "veth (no NIC)" ;;
	esac
}

table() {
	echo "guest-level benchmark: TCG, -smp $SMP -m 1024, iperf3 runs of $SECS s"
	echo "host: $(nproc) CPUs, $(sed -n 's/^model name\t: //p' /proc/cpuinfo | head -n 1)"
	printf '%-14s %12s %12s %14s %9s\n' case "TCP-1 Mb/s" "TCP-4 Mb/s" \
		"UDP64 pkt/s" "ping ms"
	for c in "${CASES[@]}"; do
		row=()
		for m in tcp1 tcp4 udp64 ping_ms; do
			row+=("$(value "$c" "$m")")
		done
		printf '%-14s %12s %12s %14s %9s\n' "$(label "$c")" "${row[@]}"
	done
	if [[ " ${CASES[*]} " == *" igb "* ]]; then
		for c in vnic-vf vnic-vf-posted vnic-vf-fixed vnic-vf-plain vnic-vf-txirq vnic-vf-page vnic-vm; do
			[[ " ${CASES[*]} " == *" $c "* ]] && ratio_row "$c" igb "$(label "$c")"
		done
	fi
	# The share of the guest's own ceiling each case reaches (ping: how
	# many times the ceiling's RTT).
	if [[ " ${CASES[*]} " == *" veth "* ]]; then
		for c in "${CASES[@]}"; do
			[[ $c == veth ]] || ratio_row "$c" veth "$(label "$c" | sed 's/^ *//')"
		done
	fi
	return 0
}

# ratio_row CASE PEER LABEL: one row of CASE's numbers divided by PEER's.
ratio_row() {
	local m cells=()
	for m in tcp1 tcp4 udp64 ping_ms; do
		cells+=("$(ratio "$(value "$1" "$m")" "$(value "$2" "$m")")")
	done
	printf '%-14s %12s %12s %14s %9s\n' "$3/$2" "${cells[@]}"
}
table >"$OUT/table.txt"
cat "$OUT/table.txt"
say "logs and table: $OUT"
MISSING=0
for c in "${CASES[@]}"; do
	for m in tcp1 tcp4 udp64 ping_ms; do
		[[ $(value "$c" "$m") == - ]] && MISSING=1
	done
done
exit "$MISSING"
