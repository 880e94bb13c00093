#!/usr/bin/env bash
# qemu/run-guest.sh - boot a test guest with vnic functions attached.
#
# Usage: qemu/run-guest.sh [OPTIONS] [-- VNICD-ARGS...]
#
# Starts vnicd (unless --no-vnicd), then QEMU (TCG, q35, shared memfd RAM)
# with one vfio-user-pci device per attached function, the guest kernel and
# the initramfs from qemu/setup.sh. With --scenario, the script runs inside
# the guest as /scenario.sh; this launcher waits for the guest to power off,
# reads "VNIC-SCENARIO-EXIT <rc>" from the console log and exits with <rc>.
# Without --scenario the guest console is interactive (Ctrl-a x quits QEMU,
# Ctrl-a c switches to the monitor).
#
# Options:
#   --vfs N             VFs vnicd serves (passed as --vfs; default 4)
#   --attach LIST       functions to attach, comma-separated, from pf, vf0,
#                       vf1, ... (default pf,vf0,vf1; "" attaches none)
#   --scenario FILE     shell script to run in the guest (bash as /bin/sh)
#   --add SRC:DST       also put host file SRC at DST in the guest (repeatable)
#   --env NAME=VALUE    add a variable to the guest's /etc/vnic-run.env
#                       (repeatable)
#   --timeout SECONDS   bound on the whole run (default 300 with --scenario,
#                       none for an interactive guest); on expiry QEMU is
#                       killed and the run fails with status 124
#   --log FILE          guest console log (default: a new directory
#                       /tmp/vnic-guest.XXXXXX/console.log, kept); vnicd's
#                       stdout/stderr go next to it as <log>.vnicd.out/.log
#   --vnicd PATH        vnicd binary (default target/debug/vnicd)
#   --socket-dir DIR    vnicd socket directory (default: a fresh temp dir)
#   --no-vnicd          use an already-running vnicd whose sockets are in
#                       --socket-dir (needed to share one card between
#                       guests), or none at all with --attach=""
#   --mem MIB           guest RAM (default 1024)
#   --smp N             guest CPUs (default 2)
#   --append ARGS       extra kernel command line
#   --qemu-arg ARG      extra QEMU argument (repeatable)
#   --quiet             do not copy the console to stdout (scenario mode)
#   --host-channel PATH a second serial port, the guest's /dev/ttyS1, joined
#                       to the FIFOs PATH.in (host -> guest) and PATH.out
#                       (guest -> host), made here if missing (and then
#                       removed at the end); a program on the host serves it
#                       (tests/src/lib.rs: e2e::run_scenario_with_host)
#   -h, --help          this text
#   -- VNICD-ARGS...    passed to vnicd after --socket-dir/--vfs
#
# The guest gets the current guest-driver/vnic.ko as /lib/modules/vnic.ko.
# Inside the guest, /etc/vnic-run.env holds VNIC_ATTACH, VNIC_VFS and the
# --env variables (shell syntax; scenarios source it). With --host-channel
# it also holds VNIC_HOST_CHANNEL=/dev/ttyS1 (tests/e2e/lib.sh's "host"
# talks over it; docs/guest-environment.md describes the line protocol).
#
# Exit status: the scenario's status; 124 on timeout; 125 when the guest
# printed no VNIC-SCENARIO-EXIT line (crash, panic, QEMU error); 2 usage
# error; 3 setup missing; 4 vnicd did not become ready. Only processes this
# script started are stopped (by PID), on exit and on INT/TERM.
#
# Examples:
#   qemu/run-guest.sh --scenario tests/e2e/foundation.sh --log /tmp/f.log
#   qemu/run-guest.sh --attach pf,vf0                  # interactive
#   target/debug/vnicd --socket-dir /tmp/card --vfs 4 &
#   qemu/run-guest.sh --no-vnicd --socket-dir /tmp/card --attach vf0 ...

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CACHE=$HERE/.cache

VFS=4
ATTACH=pf,vf0,vf1
SCENARIO=
TIMEOUT=
LOG=
VNICD=$ROOT/target/debug/vnicd
SOCKDIR=
NO_VNICD=0
MEM=1024
SMP=2
APPEND=
QUIET=0
HOST_CHANNEL=
ADDS=()
ENVS=()
QEMU_EXTRA=()
VNICD_ARGS=()

usage() { sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; }
die() { printf 'run-guest: %s\n' "$*" >&2; exit "${2:-2}"; }
say() { printf 'run-guest: %s\n' "$*" >&2; }

need_arg() { (($# >= 2)) || die "$1 needs an argument"; }
while (($#)); do
	if [[ $1 == --*=* ]]; then
		# --opt=value is the same as --opt value
		set -- "${1%%=*}" "${1#*=}" "${@:2}"
	fi
	case $1 in
	--vfs) need_arg "$@"; VFS=$2; shift ;;
	--attach) need_arg "$@"; ATTACH=$2; shift ;;
	--scenario) need_arg "$@"; SCENARIO=$2; shift ;;
	--add) need_arg "$@"; ADDS+=("$2"); shift ;;
	--env) need_arg "$@"; ENVS+=("$2"); shift ;;
	--timeout) need_arg "$@"; TIMEOUT=$2; shift ;;
	--log) need_arg "$@"; LOG=$2; shift ;;
	--vnicd) need_arg "$@"; VNICD=$2; shift ;;
	--socket-dir) need_arg "$@"; SOCKDIR=$2; shift ;;
	--no-vnicd) NO_VNICD=1 ;;
	--mem) need_arg "$@"; MEM=$2; shift ;;
	--smp) need_arg "$@"; SMP=$2; shift ;;
	--append) need_arg "$@"; APPEND=$2; shift ;;
	--qemu-arg) need_arg "$@"; QEMU_EXTRA+=("$2"); shift ;;
	--quiet) QUIET=1 ;;
	--host-channel) need_arg "$@"; HOST_CHANNEL=$2; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; VNICD_ARGS=("$@"); break ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
	shift
done

# ---------------------------------------------------------------- checks

isnum() { [[ $1 =~ ^[0-9]+$ ]]; }
isnum "$VFS" || die "--vfs: not a number: $VFS"
if ! isnum "$MEM" || ((MEM < 128)); then die "--mem: at least 128 (MiB)"; fi
if ! isnum "$SMP" || ((SMP < 1)); then die "--smp: not a CPU count: $SMP"; fi
if [[ -z $TIMEOUT ]]; then
	[[ -n $SCENARIO ]] && TIMEOUT=300 || TIMEOUT=0
fi
isnum "$TIMEOUT" || die "--timeout: not a number of seconds: $TIMEOUT"

FUNCS=()
IFS=, read -r -a FUNCS <<<"$ATTACH"
for fn in "${FUNCS[@]+"${FUNCS[@]}"}"; do
	if [[ $fn == pf ]]; then
		continue
	elif [[ $fn =~ ^vf([0-9]+)$ ]]; then
		((NO_VNICD || BASH_REMATCH[1] < VFS)) ||
			die "--attach $fn needs --vfs $((BASH_REMATCH[1] + 1)) or more"
	else
		die "--attach: unknown function '$fn' (pf, vf0, vf1, ...)"
	fi
done

if [[ -n $SCENARIO ]]; then
	[[ -f $SCENARIO ]] || die "--scenario: no such file: $SCENARIO"
fi
for e in "${ENVS[@]+"${ENVS[@]}"}"; do
	[[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env $e: want NAME=VALUE"
done
for a in "${ADDS[@]+"${ADDS[@]}"}"; do
	[[ $a == *:/* && -f ${a%%:*} ]] ||
		die "--add $a: want HOSTFILE:/guest/path with an existing HOSTFILE"
done
if [[ -n $HOST_CHANNEL ]]; then
	[[ -d $(dirname "$HOST_CHANNEL") ]] ||
		die "--host-channel $HOST_CHANNEL: no directory $(dirname "$HOST_CHANNEL")"
	HOST_CHANNEL=$(cd "$(dirname "$HOST_CHANNEL")" && pwd)/$(basename "$HOST_CHANNEL")
	for f in "$HOST_CHANNEL".{in,out}; do
		[[ ! -e $f || -p $f ]] || die "--host-channel: $f exists and is not a FIFO"
	done
fi

QEMU=$CACHE/bin/qemu-system-x86_64
KERNEL=$CACHE/vmlinuz
BASE_INITRD=$CACHE/initramfs.cpio.gz
for f in "$QEMU" "$KERNEL" "$BASE_INITRD"; do
	[[ -e $f ]] || die "$f missing: run qemu/setup.sh first" 3
done
command -v cpio >/dev/null || die "cpio missing: run qemu/setup.sh first" 3

if ((NO_VNICD)); then
	[[ -n $SOCKDIR || ${#FUNCS[@]} -eq 0 ]] ||
		die "--no-vnicd needs --socket-dir"
else
	[[ -x $VNICD ]] || die "vnicd not found at $VNICD (cargo build?)" 3
fi

# ---------------------------------------------------------------- files

if [[ -z $LOG ]]; then
	LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/vnic-guest.XXXXXX")
	LOG=$LOGDIR/console.log
fi
mkdir -p "$(dirname "$LOG")"
LOG=$(cd "$(dirname "$LOG")" && pwd)/$(basename "$LOG")
LOGBASE=${LOG%.log}
VNICD_OUT=$LOGBASE.vnicd.out
VNICD_LOG=$LOGBASE.vnicd.log
QEMU_LOG=$LOGBASE.qemu.log
: >"$LOG"
: >"$QEMU_LOG"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vnic-run.XXXXXX")
if [[ -z $SOCKDIR ]]; then
	SOCKDIR=$WORK/sock
	mkdir -p "$SOCKDIR"
fi
SOCKDIR=$(cd "$SOCKDIR" && pwd)
[[ $SOCKDIR != *[\"\\]* ]] || die "--socket-dir must not contain quotes"

# ---------------------------------------------------------------- cleanup

VNICD_PID=
QEMU_PID=
TAIL_PID=
FIFOS_MADE=()

# stop_pid PID NAME: SIGTERM, up to 5 s grace, then SIGKILL; only our PIDs.
stop_pid() {
	local pid=$1 name=$2 i
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		say "$name (pid $pid) ignored SIGTERM; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317 # run from the EXIT trap
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_pid "$QEMU_PID" qemu
	stop_pid "$TAIL_PID" tail
	if [[ -n $VNICD_PID ]]; then
		if ! kill -0 "$VNICD_PID" 2>/dev/null; then
			say "vnicd (pid $VNICD_PID) had already exited; see $VNICD_LOG"
		fi
		stop_pid "$VNICD_PID" vnicd
		local left
		left=$(find "$SOCKDIR" -maxdepth 1 -type s 2>/dev/null | wc -l)
		((left == 0)) || say "vnicd left $left socket(s) in $SOCKDIR"
	fi
	rm -rf --one-file-system "$WORK"
	rm -f "${FIFOS_MADE[@]+"${FIFOS_MADE[@]}"}"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

T0=$(date +%s)
remaining() {
	if ((TIMEOUT == 0)); then
		echo 999999
	else
		echo $((T0 + TIMEOUT - $(date +%s)))
	fi
}

# ---------------------------------------------------------------- vnicd

if ((!NO_VNICD)); then
	say "starting $VNICD --socket-dir $SOCKDIR --vfs $VFS ${VNICD_ARGS[*]+"${VNICD_ARGS[*]}"}"
	"$VNICD" --socket-dir "$SOCKDIR" --vfs "$VFS" \
		"${VNICD_ARGS[@]+"${VNICD_ARGS[@]}"}" \
		</dev/null >"$VNICD_OUT" 2>"$VNICD_LOG" &
	VNICD_PID=$!
	wait_s=30
	(($(remaining) < wait_s)) && wait_s=$(remaining)
	deadline=$(($(date +%s) + wait_s))
	until grep -q '^vnicd: ready' "$VNICD_OUT"; do
		if ! kill -0 "$VNICD_PID" 2>/dev/null; then
			wait "$VNICD_PID" && vrc=0 || vrc=$?
			VNICD_PID=
			say "vnicd exited with status $vrc before it was ready"
			tail -n 20 "$VNICD_OUT" "$VNICD_LOG" >&2
			exit 4
		fi
		if (($(date +%s) >= deadline)); then
			say "vnicd not ready after ${wait_s} s"
			tail -n 20 "$VNICD_OUT" "$VNICD_LOG" >&2
			exit 4
		fi
		sleep 0.1
	done
	grep '^vnicd: ' "$VNICD_OUT" | sed 's/^/run-guest: /' >&2
fi

for fn in "${FUNCS[@]+"${FUNCS[@]}"}"; do
	[[ -S $SOCKDIR/$fn.sock ]] ||
		die "no socket $SOCKDIR/$fn.sock for --attach $fn" 4
done

# ---------------------------------------------------------------- initrd

# A second cpio appended to the base one: the kernel unpacks both.
EXTRA=$WORK/extra
mkdir -p "$EXTRA/etc"
{
	printf 'VNIC_ATTACH=%q\nVNIC_VFS=%q\n' "$ATTACH" "$VFS"
	[[ -z $HOST_CHANNEL ]] || echo "VNIC_HOST_CHANNEL=/dev/ttyS1"
	for e in "${ENVS[@]+"${ENVS[@]}"}"; do
		printf '%s=%q\n' "${e%%=*}" "${e#*=}"
	done
} >"$EXTRA/etc/vnic-run.env"
# The current guest-driver/vnic.ko replaces the one in the base image, so a
# rebuilt driver needs no initramfs rebuild.
KO=$ROOT/guest-driver/vnic.ko
if [[ -f $KO ]]; then
	for src in "$ROOT"/guest-driver/*.[ch] "$ROOT"/guest-driver/Kbuild; do
		[[ $src -nt $KO ]] &&
			say "warning: $src is newer than vnic.ko (make -C guest-driver)"
	done
	mkdir -p "$EXTRA/usr/lib/modules"
	cp "$KO" "$EXTRA/usr/lib/modules/vnic.ko"
fi
if [[ -n $SCENARIO ]]; then
	cp "$SCENARIO" "$EXTRA/scenario.sh"
	chmod 755 "$EXTRA/scenario.sh"
fi
for a in "${ADDS[@]+"${ADDS[@]}"}"; do
	dst=$EXTRA/${a#*:}
	mkdir -p "$(dirname "$dst")"
	cp "${a%%:*}" "$dst"
done
(cd "$EXTRA" && find . -mindepth 1 | LC_ALL=C sort |
	cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$WORK/extra.cpio.gz"
cat "$BASE_INITRD" "$WORK/extra.cpio.gz" >"$WORK/initrd"

# ---------------------------------------------------------------- QEMU

# KVM is deliberately not used: guests hang under it on these machines.
# shellcheck disable=SC2054 # commas belong to QEMU's option syntax
ARGS=(-accel tcg -machine q35 -cpu max -m "$MEM" -smp "$SMP"
	-object "memory-backend-memfd,id=mem,size=${MEM}M,share=on"
	-numa node,memdev=mem
	-nographic -nodefaults -no-reboot
	-kernel "$KERNEL" -initrd "$WORK/initrd"
	-append "console=ttyS0 panic=-1 $APPEND")
if [[ -n $HOST_CHANNEL ]]; then
	# QEMU's pipe chardev reads PATH.in and writes PATH.out, opening both
	# read-write, so it never waits for the host's end. They must exist
	# first, or QEMU would open PATH itself. Serial index 1 is COM2
	# (0x2f8, IRQ 3): ttyS1 to the guest's 8250 driver, which has 4 ports
	# (CONFIG_SERIAL_8250_RUNTIME_UARTS).
	for f in "$HOST_CHANNEL".{in,out}; do
		if [[ ! -p $f ]]; then
			mkfifo "$f"
			FIFOS_MADE+=("$f")
		fi
	done
	# shellcheck disable=SC2054
	ARGS+=(-chardev "pipe,id=host,path=${HOST_CHANNEL//,/,,}"
		-device isa-serial,index=1,chardev=host)
	say "host channel: guest /dev/ttyS1 <-> $HOST_CHANNEL.in/.out"
fi
for fn in "${FUNCS[@]+"${FUNCS[@]}"}"; do
	ARGS+=(-device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"$SOCKDIR/$fn.sock\"}}")
done

if [[ -z $SCENARIO ]]; then
	# Interactive: console on this terminal (muxed with the monitor) and
	# copied to the log.
	# shellcheck disable=SC2054
	ARGS+=(-chardev "stdio,id=con,mux=on,signal=off,logfile=$LOG"
		-serial chardev:con -mon chardev=con,mode=readline)
	say "interactive guest, console log $LOG; Ctrl-a x quits"
	# "<&0": a background job would otherwise get /dev/null as stdin.
	"$QEMU" "${ARGS[@]}" "${QEMU_EXTRA[@]+"${QEMU_EXTRA[@]}"}" \
		<&0 2>"$QEMU_LOG" &
	QEMU_PID=$!
else
	ARGS+=(-chardev "file,id=con,path=$LOG" -serial chardev:con)
	say "console log $LOG (timeout ${TIMEOUT} s)"
	"$QEMU" "${ARGS[@]}" "${QEMU_EXTRA[@]+"${QEMU_EXTRA[@]}"}" \
		</dev/null >"$QEMU_LOG" 2>&1 &
	QEMU_PID=$!
	if ((!QUIET)); then
		# Copy the console to stdout, minus terminal control sequences
		# (SeaBIOS and the kernel clear the screen).
		tail -n +1 -F --pid="$QEMU_PID" "$LOG" 2>/dev/null \
			> >(sed -u -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' \
				-e 's/\x1b[a-zA-Z]//g' -e 's/\r$//') &
		TAIL_PID=$!
	fi
fi

TIMED_OUT=0
while kill -0 "$QEMU_PID" 2>/dev/null; do
	if ((TIMEOUT > 0 && $(remaining) <= 0)); then
		TIMED_OUT=1
		break
	fi
	sleep 0.2
done
if ((TIMED_OUT)); then
	say "timeout: the run took longer than ${TIMEOUT} s; stopping QEMU"
	stop_pid "$QEMU_PID" qemu
fi
wait "$QEMU_PID" && QRC=0 || QRC=$?
QEMU_PID=
if [[ -n $TAIL_PID ]]; then
	wait "$TAIL_PID" 2>/dev/null || true
	TAIL_PID=
fi
[[ -z $SCENARIO && -t 0 ]] && stty sane 2>/dev/null
say "QEMU exited with status $QRC after $(($(date +%s) - T0)) s"
if [[ -s $QEMU_LOG ]]; then
	say "QEMU messages ($QEMU_LOG):"
	sed 's/^/  /' "$QEMU_LOG" >&2
fi

[[ -n $SCENARIO ]] || exit "$QRC"

if ((TIMED_OUT)); then
	say "FAIL (timeout); console log: $LOG"
	exit 124
fi
MARK=$(grep -a -o 'VNIC-SCENARIO-EXIT [0-9]*' "$LOG" | tail -n1) || true
if [[ -z $MARK ]]; then
	say "FAIL: no VNIC-SCENARIO-EXIT line in the console log $LOG"
	exit 125
fi
RC=${MARK##* }
if ((RC == 0)); then
	say "PASS; console log: $LOG"
else
	say "FAIL (scenario exit status $RC); console log: $LOG"
	[[ -n $VNICD_PID && -s $VNICD_LOG ]] &&
		{ say "vnicd log ($VNICD_LOG):"; tail -n 30 "$VNICD_LOG" >&2; }
fi
exit "$RC"
