#!/usr/bin/env bash
# tests/bench/guest.sh - guest-level benchmark: the card beside QEMU's own
# NICs, measured in the same run (docs/performance.md). Not part of the
# default test run; bounded (each guest run has a timeout).
#
# Usage: tests/bench/guest.sh [--seconds S] [--only LIST] [--cpu MODEL]...
#                             [--measure LIST] [--smp N] [--trace N]
#                             [--vnicd PATH] [--vnicd-arg ARG]...
#                             [--env NAME=VALUE]... [--out DIR]
#
#   --seconds S   length of each iperf3 run (default 10)
#   --cpu MODEL   a guest CPU model to run every case under (repeatable:
#                 one model after the other; default: default, then max):
#                 "default" is QEMU's own (no -cpu option: qemu64 under
#                 TCG, what the e2e tests and a user who names none get),
#                 anything else is given to QEMU as -cpu MODEL (e.g. max,
#                 or max,erms=off,fsrm=off)
#   --only LIST   comma-separated cases (default vnic-vf,vnic-vm,igb,e1000e,virtio,veth):
#                   vnic-vf  vnic VF0 <-> VF1, one guest, two namespaces
#                            (doorbells through vnic.ko's page in guest
#                            memory, its default)
#                   vnic-vf-posted  the same with doorbells as posted
#                            register writes (vnic.ko guest_doorbells=0,
#                            the card before step G6)
#                   vnic-vf-fixed   the same with fixed interrupt
#                            moderation (ethtool -C adaptive-rx off
#                            rx-usecs 20, vnic.ko's default before issue 24)
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
#   --measure LIST  the measurements, comma-separated from ping, tcp1,
#                 tcp4, udp64 (default all four); the others show as "-"
#   --smp N       guest CPUs (default 2)
#   --vnicd PATH  the vnicd to run (default: this tree's release build,
#                 built first), e.g. another build to compare with
#   --vnicd-arg ARG  one more vnicd argument in vnic cases (repeatable),
#                 e.g. --vnicd-arg --doorbell-poll-us=50
#   --env NAME=VALUE  a variable for tests/bench/guest-net.sh in every
#                 guest (repeatable), e.g. BENCH_VNIC_C="tx-usecs 1000"
#                 (vnic cases: ethtool -C) or BENCH_ECHOES=100
#   --trace N     the latency breakdown instead of the measurements: N
#                 echoes per case with the guest kernel's tracer on
#                 (send, transmit, interrupt, NAPI, receive on each side)
#                 and, for vnic cases, the host's tracer on the syscalls
#                 and scheduling of vnicd and QEMU (the doorbell message,
#                 vnicd's wake-up, its interrupt eventfd write, QEMU's read
#                 of it, how long each waited for a host CPU); needs
#                 root and tracefs on the host for the second part.
#                 tests/bench/latency.py prints the steps (vnic-vm is not
#                 traced)
#   --out DIR     where console logs and the table go (default a new
#                 /tmp/vnic-bench.XXXXXX)
#
# Every case boots the same guest image (qemu/setup.sh; the default guest
# kernel, or $VNIC_KERNEL: docs/guest-environment.md) with -m 1024 under
# TCG and runs tests/bench/guest-net.sh in it: ping RTT (30 echoes), iperf3
# TCP with 1 and 4 streams and iperf3 UDP with 64-byte payloads (datagrams
# received per second). vnicd is the release build. Prints, per CPU model,
# one table, the ratios vnic / igb (for ping, lower is better), each
# case / veth, and how much of a host CPU each case's host threads (vCPUs,
# QEMU's main loop and other threads, vnicd) ran and waited for one
# during the UDP run; then, with two models or more, each case under every other
# model against the first. Exit status: 0 if every case gave every number,
# 1 otherwise; 2 usage error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

SECS=10
ONLY=vnic-vf,vnic-vm,igb,e1000e,virtio,veth
MODELS=()
SMP=2
TRACE=
MEASURE=ping,tcp1,tcp4,udp64
VNICD=
VNICD_ARGS=()
ENVS=()
OUT=
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }
while (($#)); do
	case $1 in
	--seconds) SECS=$2; shift ;;
	--only) ONLY=$2; shift ;;
	--cpu) MODELS+=("$2"); shift ;;
	--smp) SMP=$2; shift ;;
	--trace) TRACE=$2; shift ;;
	--measure) MEASURE=$2; shift ;;
	--vnicd) VNICD=$2; shift ;;
	--vnicd-arg) VNICD_ARGS+=("$2"); shift ;;
	--env) ENVS+=(--env "$2"); shift ;;
	--out) OUT=$2; shift ;;
	-h | --help) usage 0 ;;
	*) echo "guest.sh: unknown option $1" >&2; usage 2 ;;
	esac
	shift
done
IFS=, read -r -a CASES <<<"$ONLY"
((${#MODELS[@]})) || MODELS=(default max)
for m in ${MEASURE//,/ }; do
	case $m in
	ping | tcp1 | tcp4 | udp64) ;;
	*) echo "guest.sh: unknown measurement $m" >&2; exit 2 ;;
	esac
done
for c in "${CASES[@]}"; do
	case $c in
	vnic-vf | vnic-vf-posted | vnic-vf-fixed | vnic-vf-plain | vnic-vf-txirq | \
		vnic-vf-page | vnic-vm | igb | e1000e | virtio | veth) ;;
	*) echo "guest.sh: unknown case $c" >&2; exit 2 ;;
	esac
done

[[ -n $OUT ]] || OUT=$(mktemp -d /tmp/vnic-bench.XXXXXX)
mkdir -p "$OUT"
say() { printf '[bench] %s\n' "$*"; }

say "setup (qemu/setup.sh) and release build"
qemu/setup.sh >"$OUT/setup.log" 2>&1 || { say "setup failed: $OUT/setup.log"; exit 1; }
if [[ -z $VNICD ]]; then
	cargo build --release -p vnic-device --bins --quiet
	VNICD=$ROOT/target/release/vnicd
fi
[[ -x $VNICD ]] || { say "no vnicd at $VNICD"; exit 2; }

# Each guest run: bounded by its own timeout (run-guest.sh kills QEMU).
TIMEOUT=$((SECS * 3 + 300))
COMMON=(--mem 1024 --smp "$SMP" --quiet --timeout "$TIMEOUT"
	--scenario tests/bench/guest-net.sh
	--add tests/e2e/lib.sh:/etc/vnic-e2e.sh
	--env "BENCH_SECONDS=$SECS" --env "BENCH_ONLY=$MEASURE"
	"${ENVS[@]+"${ENVS[@]}"}")
[[ -z $TRACE ]] || COMMON+=(--env "BENCH_TRACE=$TRACE")

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

# The CPU model being run, its run-guest.sh options and its directory of
# logs (set per model below).
CPU=
CPU_OPT=()
RUN=

run_case() {
	local name=$1 log=$RUN/$1.log
	shift
	say "$name ($CPU): booting (log $log)"
	local rc=0 sock=()
	rm -rf "$log" "$RUN/$name.sock" "$RUN/$name.qemu.pid"
	if [[ " $* " == *" --vnicd "* ]]; then
		mkdir -p "$RUN/$name.sock"
		sock=(--socket-dir "$RUN/$name.sock")
	fi
	qemu/run-guest.sh "${COMMON[@]}" "${CPU_OPT[@]+"${CPU_OPT[@]}"}" \
		--log "$log" "${sock[@]+"${sock[@]}"}" \
		--qemu-arg -pidfile --qemu-arg "$RUN/$name.qemu.pid" \
		"$@" >/dev/null 2>&1 &
	local guest=$!
	PIDS+=("$guest")
	if [[ -n $TRACE ]]; then
		host_trace "$log" "$RUN/$name" "$guest"
	else
		host_cpu "$log" "$RUN/$name" "$guest"
	fi
	wait "$guest" || rc=$?
	((rc == 0)) || say "$name: guest exit status $rc (see $log)"
}

# case_pids BASE: sets QEMU_PID (from BASE.qemu.pid) and VNICD_PIDS (the
# vnicd processes, keeper and worker, serving BASE.sock) of a running case.
case_pids() {
	local p
	QEMU_PID=$(cat "$1.qemu.pid" 2>/dev/null) || QEMU_PID=
	VNICD_PIDS=()
	[[ -d $1.sock ]] || return 0
	for p in /proc/[0-9]*; do
		[[ $(cat "$p/comm" 2>/dev/null) == vnicd* ]] &&
			tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF " $1.sock " &&
			VNICD_PIDS+=("${p#/proc/}")
	done
	return 0
}

# schedstat: for every thread of QEMU_PID and VNICD_PIDS, "GROUP RUN WAIT"
# (nanoseconds on a CPU and waiting for one, /proc/.../schedstat), GROUP
# being vcpu, qemu-main, qemu-other or vnicd.
schedstat() {
	local p t group run wait rest
	for p in ${QEMU_PID:+"$QEMU_PID"} "${VNICD_PIDS[@]+"${VNICD_PIDS[@]}"}"; do
		for t in /proc/"$p"/task/*; do
			if [[ $p != "$QEMU_PID" ]]; then
				group=vnicd
			elif [[ ${t##*/} == "$p" ]]; then
				group=qemu-main
			elif [[ $(cat "$t/comm" 2>/dev/null) == CPU* ]]; then
				group=vcpu
			else
				group=qemu-other
			fi
			read -r run wait rest <"$t/schedstat" 2>/dev/null &&
				echo "$group $run $wait"
		done
	done
}

# host_cpu LOG BASE PID: during the guest's 64-byte UDP run (the middle of
# it), how much of a host CPU each group of the case's host threads ran
# and waited for one, into BASE.hostcpu ("GROUP RAN% WAITED%"): the host
# has as many cores as the guest has vCPUs, so a device's own thread
# takes CPU time the vCPUs then wait for (docs/performance.md, "Where
# 64-byte datagrams are lost").
host_cpu() {
	local log=$1 base=$2 guest=$3 secs
	await "$log" "=== iperf3 UDP" "$guest" || return 0
	secs=$((SECS > 3 ? SECS - 2 : 1))
	sleep 1
	case_pids "$base"
	[[ -n $QEMU_PID ]] || return 0
	local before after
	before=$(schedstat)
	sleep "$secs"
	after=$(schedstat)
	awk -v secs="$secs" -v before="$before" -v after="$after" 'BEGIN {
		n = split(before, b, "\n")
		for (i = 1; i <= n; i++) { split(b[i], f, " "); r[f[1]] -= f[2]; w[f[1]] -= f[3] }
		n = split(after, a, "\n")
		for (i = 1; i <= n; i++) { split(a[i], f, " "); r[f[1]] += f[2]; w[f[1]] += f[3] }
		for (g in r) printf "%s %.0f %.0f\n", g, r[g] / secs / 1e7, w[g] / secs / 1e7
	}' >"$base.hostcpu"
}

# seen LOG WORD: the guest printed WORD at the start of a console line.
seen() { grep -q "^$2" "$1" 2>/dev/null; }

# await LOG WORD PID: waits until the guest printed WORD; false if its
# launcher (PID) ended first.
await() {
	until seen "$1" "$2"; do
		kill -0 "$3" 2>/dev/null || return 1
		sleep 0.2
	done
}

# host_trace LOG BASE PID: while the guest of LOG traces its echoes, the host's
# tracer records the syscalls of that case's vnicd and QEMU threads (the
# path of a doorbell and of an interrupt between them) into BASE.host.
# Only with a vnicd (BASE.sock holds its sockets) and a writable tracefs.
host_trace() {
	local log=$1 base=$2 guest=$3 t=/sys/kernel/tracing
	await "$log" BENCH-TRACE-READY "$guest" || return 0
	[[ -d $base.sock ]] || return 0
	[[ -e $t/trace_clock ]] || mount -t tracefs nodev "$t" 2>/dev/null ||
		{ say "no host trace: cannot mount tracefs"; return 0; }
	local p task tids=()
	case_pids "$base"
	for p in ${QEMU_PID:+"$QEMU_PID"} "${VNICD_PIDS[@]+"${VNICD_PIDS[@]}"}"; do
		for task in /proc/"$p"/task/*; do
			tids+=("${task##*/}")
		done
	done
	if [[ -z $QEMU_PID || ${#VNICD_PIDS[@]} == 0 ]]; then
		say "no host trace: QEMU ${QEMU_PID:-?}, vnicd ${VNICD_PIDS[*]:-?}"
		return 0
	fi
	{
		echo 0 >"$t/tracing_on"
		echo mono >"$t/trace_clock"
		echo 8192 >"$t/buffer_size_kb"
		echo >"$t/set_event"
		for p in sendmsg recvmsg write read ppoll epoll_wait epoll_pwait; do
			echo "syscalls:sys_enter_$p" >>"$t/set_event"
			echo "syscalls:sys_exit_$p" >>"$t/set_event"
		done
		echo sched:sched_wakeup >>"$t/set_event"
		echo sched:sched_switch >>"$t/set_event"
		echo "${tids[*]}" >"$t/set_event_pid"
		echo >"$t/trace"
		echo 1 >"$t/tracing_on"
	} 2>/dev/null || { say "no host trace: tracefs not writable"; return 0; }
	say "host trace: QEMU $QEMU_PID, vnicd ${VNICD_PIDS[*]} (${#tids[@]} threads)"
	await "$log" BENCH-TRACE-DONE "$guest" || true
	echo 0 >"$t/tracing_on"
	grep -v '^#' "$t/trace" >"$base.host" || true
	echo >"$t/set_event"
	echo >"$t/set_event_pid"
	echo >"$t/trace"
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
	local dir=$RUN/vm-card pid rc=0
	mkdir -p "$dir"
	"$VNICD" --socket-dir "$dir" --vfs 2 --vnics-per-vf 1 \
		"${VNICD_ARGS[@]+"${VNICD_ARGS[@]}"}" \
		>"$RUN/vnic-vm.vnicd.out" 2>"$RUN/vnic-vm.vnicd.log" &
	pid=$!
	PIDS+=("$pid")
	for _ in $(seq 50); do
		[[ -S $dir/vf1.sock ]] && break
		sleep 0.1
	done
	say "vnic-vm ($CPU): booting two guests (logs $RUN/vnic-vm-*.log)"
	qemu/run-guest.sh "${COMMON[@]}" "${CPU_OPT[@]+"${CPU_OPT[@]}"}" \
		--log "$RUN/vnic-vm-server.log" \
		--no-vnicd --socket-dir "$dir" --attach vf0 --env BENCH_DEVICE=vnic \
		--env BENCH_ROLE=server --env BENCH_MAC=02:76:6e:00:01:00 \
		>/dev/null 2>&1 &
	local server=$!
	PIDS+=("$server")
	qemu/run-guest.sh "${COMMON[@]}" "${CPU_OPT[@]+"${CPU_OPT[@]}"}" \
		--log "$RUN/vnic-vm.log" \
		--no-vnicd --socket-dir "$dir" --attach vf1 --env BENCH_DEVICE=vnic \
		--env BENCH_ROLE=client --env BENCH_MAC=02:76:6e:00:02:00 \
		>/dev/null 2>&1 || rc=$?
	((rc == 0)) || say "vnic-vm: client guest exit status $rc"
	wait "$server" || say "vnic-vm: server guest exit status $?"
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# run_cases: every case under the CPU model in $CPU.
run_cases() {
	# vnicd's arguments in vnic cases, after run-guest.sh's --.
	local CARD=(-- --vnics-per-vf 1 "${VNICD_ARGS[@]+"${VNICD_ARGS[@]}"}")
	for c in "${CASES[@]}"; do
		case $c in
		vnic-vf)
			run_case vnic-vf --vnicd "$VNICD" --vfs 2 --attach vf0,vf1 \
				--env BENCH_DEVICE=vnic "${CARD[@]}"
			;;
		vnic-vf-posted)
			run_case vnic-vf-posted --vnicd "$VNICD" --vfs 2 --attach vf0,vf1 \
				--env BENCH_DEVICE=vnic --env BENCH_DB_MODE=none \
				--env BENCH_VNIC_PARAMS=guest_doorbells=0 "${CARD[@]}"
			;;
		vnic-vf-fixed)
			run_case vnic-vf-fixed --vnicd "$VNICD" --vfs 2 --attach vf0,vf1 \
				--env BENCH_DEVICE=vnic \
				--env "BENCH_VNIC_C=adaptive-rx off rx-usecs 20" "${CARD[@]}"
			;;
		vnic-vf-plain)
			run_case vnic-vf-plain --vnicd "$VNICD" --vfs 2 --attach vf0,vf1 \
				--env BENCH_DEVICE=vnic \
				--env "BENCH_VNIC_C=adaptive-rx off rx-usecs 20" \
				--env "BENCH_VNIC_K=tso off tx off sg off" "${CARD[@]}"
			;;
		vnic-vf-txirq)
			run_case vnic-vf-txirq --vnicd "$VNICD" --vfs 2 --attach vf0,vf1 \
				--env BENCH_DEVICE=vnic --env "BENCH_VNIC_C=tx-usecs 0" \
				"${CARD[@]}"
			;;
		vnic-vf-page)
			run_case vnic-vf-page --vnicd "$VNICD" --vfs 2 --attach vf0,vf1 \
				--env BENCH_DEVICE=vnic --env BENCH_DB_MODE=bar \
				--env BENCH_VNIC_PARAMS=guest_doorbells=0 \
				"${CARD[@]}" --doorbell-page
			;;
		vnic-vm)
			if [[ -n $TRACE ]]; then say "vnic-vm: not traced"; else vnic_vm; fi
			;;
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
		esac
	done
}

# ------------------------------------------------------------ the table

# value CASE METRIC [DIR]: the number the guest printed in the run of DIR
# (default $RUN, the CPU model being tabled), or "-".
value() {
	local v
	v=$(sed -n "s/^BENCH $2 \([0-9.][0-9.]*\)\r\{0,1\}$/\1/p" "${3:-$RUN}/$1.log" 2>/dev/null |
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
	echo "guest-level benchmark: TCG, -cpu $CPU, -smp $SMP -m 1024, iperf3 runs of $SECS s"
	echo "host: $(nproc) CPUs, $(sed -n 's/^model name\t: //p' /proc/cpuinfo | head -n 1)"
	printf '%-14s %12s %12s %14s %9s %9s\n' case "TCP-1 Mb/s" "TCP-4 Mb/s" \
		"UDP64 pkt/s" "ping ms" "ping med"
	for c in "${CASES[@]}"; do
		row=()
		for m in tcp1 tcp4 udp64 ping_ms ping_med; do
			row+=("$(value "$c" "$m")")
		done
		printf '%-14s %12s %12s %14s %9s %9s\n' "$(label "$c")" "${row[@]}"
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
	# Where the host's CPUs went during the 64-byte UDP run.
	local c g cells any=0
	for c in "${CASES[@]}"; do
		[[ -s $RUN/$c.hostcpu ]] && any=1
	done
	if ((any)); then
		echo "host threads during UDP64, % of one host CPU: ran/waited for a CPU"
		printf '%-14s %12s %12s %14s %9s\n' case vCPUs "QEMU main" "QEMU other" vnicd
		for c in "${CASES[@]}"; do
			[[ -s $RUN/$c.hostcpu ]] || continue
			cells=()
			for g in vcpu qemu-main qemu-other vnicd; do
				cells+=("$(awk -v g="$g" '$1 == g { print $2 "/" $3 }' "$RUN/$c.hostcpu")")
				[[ -n ${cells[-1]} ]] || cells[-1]=-
			done
			printf '%-14s %12s %12s %14s %9s\n' "$(label "$c" | sed 's/^ *//')" "${cells[@]}"
		done
	fi
	return 0
}

# ratio_row CASE PEER LABEL: one row of CASE's numbers divided by PEER's.
ratio_row() {
	local m cells=()
	for m in tcp1 tcp4 udp64 ping_ms ping_med; do
		cells+=("$(ratio "$(value "$1" "$m")" "$(value "$2" "$m")")")
	done
	printf '%-14s %12s %12s %14s %9s %9s\n' "$3/$2" "${cells[@]}"
}
# model_dir MODEL: where the runs of CPU model MODEL keep their logs.
model_dir() { echo "$OUT/cpu-${1//[^A-Za-z0-9_.+-]/_}"; }

# across: with two CPU models or more, each case under every later model
# against the first (how much the model costs each case).
across() {
	local first=${MODELS[0]} model c m cells
	echo "each case under another CPU model / under $first"
	printf '%-22s %12s %12s %14s %9s %9s\n' case "TCP-1" "TCP-4" "UDP64" "ping" "ping med"
	for model in "${MODELS[@]:1}"; do
		for c in "${CASES[@]}"; do
			cells=()
			for m in tcp1 tcp4 udp64 ping_ms ping_med; do
				cells+=("$(ratio "$(value "$c" "$m" "$(model_dir "$model")")" \
					"$(value "$c" "$m" "$(model_dir "$first")")")")
			done
			printf '%-22s %12s %12s %14s %9s %9s\n' \
				"$(label "$c" | sed 's/^ *//') $model" "${cells[@]}"
		done
	done
}

# latency: with --trace, each traced case's breakdown instead of the table.
latency() {
	local c
	for CPU in "${MODELS[@]}"; do
		RUN=$(model_dir "$CPU")
		for c in "${CASES[@]}"; do
			[[ -f $RUN/$c.log ]] || continue
			echo "== $(label "$c" | sed 's/^ *//'), -cpu $CPU"
			if [[ -s $RUN/$c.host ]]; then
				python3 tests/bench/latency.py "$RUN/$c.log" "$RUN/$c.host"
			else
				python3 tests/bench/latency.py "$RUN/$c.log"
			fi || MISSING=1
		done
	done
}

MISSING=0
for CPU in "${MODELS[@]}"; do
	CPU_OPT=()
	[[ $CPU == default ]] || CPU_OPT=(--cpu "$CPU")
	RUN=$(model_dir "$CPU")
	mkdir -p "$RUN"
	run_cases
	[[ -z $TRACE ]] || continue
	table >"$RUN/table.txt"
	for c in "${CASES[@]}"; do
		for m in ${MEASURE//,/ }; do
			[[ $m == ping ]] && m="ping_ms ping_med"
			for v in $m; do
				[[ $(value "$c" "$v") == - ]] && MISSING=1
			done
		done
	done
done
if [[ -n $TRACE ]]; then
	latency | tee "$OUT/latency.txt"
	say "logs and breakdown: $OUT"
	exit "$MISSING"
fi
for CPU in "${MODELS[@]}"; do
	RUN=$(model_dir "$CPU")
	cat "$RUN/table.txt"
	echo
done | tee "$OUT/table.txt"
((${#MODELS[@]} < 2)) || across | tee -a "$OUT/table.txt"
say "logs and tables: $OUT"
exit "$MISSING"
