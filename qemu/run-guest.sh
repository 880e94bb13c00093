#!/usr/bin/env bash
# qemu/run-guest.sh - boot a test guest with vnic functions attached.
#
# Usage: qemu/run-guest.sh [OPTIONS] [-- VNICD-ARGS...]
#
# Starts vnicd (unless --no-vnicd), then QEMU (TCG, q35, shared memfd RAM)
# with one vfio-user-pci device per attached function, and the guest kernel
# chosen with --kernel, its initramfs and its vnic.ko from qemu/setup.sh.
# With --scenario, the script runs inside the guest as /scenario.sh; this
# launcher waits for the guest to power off, reads "VNIC-SCENARIO-EXIT <rc>"
# from the console log and exits with <rc>.
# Without --scenario the guest console is interactive (Ctrl-a x quits QEMU,
# Ctrl-a c switches to the monitor).
#
# Options:
#   --kernel NAME       the guest kernel: 6.1 (Debian 12), 6.12 (Debian 13)
#                       or latest (trixie-backports, 7.x); default
#                       $VNIC_KERNEL, else 6.12 (qemu/kernels.sh). Set it up
#                       first: qemu/setup.sh --kernel NAME
#   --check             only check that QEMU and the kernel's files are set
#                       up (exit 0, or 3 naming what is missing)
#   --vfs N             VFs vnicd serves (passed as --vfs; default 4)
#   --attach LIST       functions to attach, comma-separated, from pf, vf0,
#                       vf1, ... (default pf,vf0,vf1; "" attaches none)
#   --scenario FILE     shell script to run in the guest (bash as /bin/sh)
#   --add SRC:DST       also put host file SRC at DST in the guest (repeatable)
#   --add-bin SRC:DST   a program of the host (e.g. target/debug/vnicctl) at
#                       DST, without its debug sections, and the shared
#                       libraries it needs that the base image lacks (from
#                       the guest's userland, qemu/.cache/userland, e.g.
#                       libgcc_s.so.1) (repeatable)
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
#   --unshared-memory   plain guest RAM (no shared memory backend), as a
#                       QEMU started without share=on: the card cannot
#                       reach it (tests)
#   --smp N             guest CPUs (default 2)
#   --cpu MODEL         the guest's CPU model (-cpu MODEL, e.g. max, or
#                       qemu64 with features: qemu64,+ssse3); default
#                       $VNIC_CPU, else none: QEMU's own default for TCG
#                       (qemu64), what a user who gives no -cpu gets
#                       (docs/performance.md, "CPU model")
#   --append ARGS       extra kernel command line
#   --qemu-arg ARG      extra QEMU argument (repeatable)
#   --qemu PATH         the QEMU to run (default $VNIC_QEMU, else
#                       qemu/.cache/bin/qemu-system-x86_64, the one setup.sh
#                       installs), e.g. a build with the vfio-user unplug fix
#                       (docs/guest-environment.md, "Hotplug")
#   --root-ports N      N empty PCIe root ports (pcie-root-port, ids rp1 ..
#                       rpN) for functions hot-added with QMP device_add
#                       (bus rpK); they follow the --attach functions, whose
#                       PCI addresses stay as without them. --migrate does not
#                       carry hot-added functions over. QEMU 11.1.3 aborts on
#                       device_del of any vfio-user-pci function with MSI-X
#                       (docs/guest-environment.md, "Hotplug")
#   --qmp PATH          QMP (QEMU's JSON monitor) on a UNIX socket at PATH,
#                       e.g. for device_add; the socket is removed at the end
#   --quiet             do not copy the console to stdout (scenario mode)
#   --host-channel PATH a second serial port, the guest's /dev/ttyS1, joined
#                       to the FIFOs PATH.in (host -> guest) and PATH.out
#                       (guest -> host), made here if missing (and then
#                       removed at the end); a program on the host serves it
#                       (tests/src/lib.rs: e2e::run_scenario_with_host)
#   --monitor PATH      QEMU's human monitor (HMP) on a UNIX socket at PATH
#                       (default: one in the run's temporary directory);
#                       e.g. printf 'info status\n' | socat - UNIX-CONNECT:PATH
#   --state-disk FILE   a qcow2 image attached as -drive if=none, where savevm
#                       keeps its snapshots (made with qemu-img, 256M, if
#                       missing; default with --migrate savevm: one in the
#                       run's temporary directory)
#   --loadvm NAME       start from snapshot NAME of --state-disk
#   --incoming FILE     start from a migration file (migrate file:FILE); with
#                       either, the launcher sends cont if QEMU comes up paused
#   --incoming tcp:HOST:PORT
#                       the destination of a live migration: QEMU listens
#                       there (-incoming) until the source sends the guest
#                       (qemu/migrate.sh live), with the same machine, memory
#                       and -device layout as the source (give it the same
#                       --mem, --smp, --attach order, --host-channel); the
#                       launcher waits (an hour at most, or --timeout) and
#                       sends cont if it comes up paused
#   --migrate FORM      (scenario mode) when the guest prints VNIC-MIGRATE on
#                       its console: HMP stop, vnicctl quiesce, vnicctl export
#                       (to <log>.migrate.json), HMP savevm (FORM savevm) or
#                       migrate to a file (FORM file), quit QEMU, stop vnicd;
#                       then a new vnicd from the exported configuration and
#                       a new QEMU with the same devices from the snapshot or
#                       file, cont; the console log goes on in the same file
#                       and the timeout counts the whole run. Prints
#                       "run-guest: migration: ..." with each step's time
#   --migrate-map A=B   with --migrate: restore function A's state onto B and
#                       B's onto A (vnicctl remap; the --attach list is mapped
#                       the same way, so guest PCI addresses stay); repeatable.
#                       With --migrate live: the source card's A is the
#                       destination card's B (its entry applied under that
#                       name, B's socket attached at A's place)
#   --migrate-drop-vct  with --migrate: the new vnicd gets no VCT entries
#                       (the guest driver or vnicctl vct set must give them)
#   --migrate live      (scenario mode, with --migrate-to) a live migration to
#                       another card when the guest prints VNIC-MIGRATE: a
#                       destination QEMU started with the same arguments on
#                       the other card's sockets (the same -device order,
#                       --migrate-map naming the functions there) and
#                       -incoming tcp:127.0.0.1:PORT (a free port), its
#                       console appended to the same log; then the steps of
#                       qemu/migrate.sh live against the running guest
#                       (migration mode, pause-before-switchover, progress
#                       and the source card's counters while active,
#                       vnicctl migrate switchover, the functions' entries
#                       applied to the other card, completion, QEMU's total
#                       time and downtime, quit); the run goes on with the
#                       destination QEMU. Works with --no-vnicd (neither
#                       card is restarted). A -pidfile FILE among --qemu-arg
#                       becomes FILE.dest for the destination QEMU, which
#                       has no --qmp. Host-channel requests made during the
#                       migration may be lost (both QEMUs open the FIFOs)
#   --migrate-to DIR    with --migrate live: the destination vnicd's socket
#                       directory (its control socket DIR/control.sock)
#   --migrate-no-mode   with --migrate live: no migration mode, only vnicctl
#                       quiesce at pre-switchover (the negative experiment,
#                       docs/migration.md)
#   --migrate-compare   with --migrate live: the destination QEMU starts with
#                       -S; once the migration completed, the guest's RAM
#                       on both sides (HMP pmemsave, --mem MiB from 0) is
#                       compared page by page before the destination runs
#                       (the proof that no page the card wrote is stale,
#                       docs/migration.md); adds the dump time to the
#                       guest-visible outage
#   --migrate-param 'NAME VALUE'
#                       with --migrate live: HMP migrate_set_parameter NAME
#                       VALUE first (repeatable), e.g. 'downtime-limit 500'
#   --crash-vnicd       with --migrate: vnicd dies instead of being stopped:
#                       at VNIC-MIGRATE the launcher exports the
#                       configuration, kills vnicd (SIGKILL, no quiesce),
#                       lets the guest run CRASH_SECONDS (5) against the
#                       dead card, then saves it without the quiesce and
#                       export steps and restores it as --migrate does
#                       (docs/robustness.md, "vnicd killed and restarted")
#   -h, --help          this text
#   -- VNICD-ARGS...    passed to vnicd after --socket-dir/--vfs
#
# Host tools: socat for the monitor, qemu-img for --state-disk, jq for
# --migrate-drop-vct (qemu/setup.sh installs them); vnicctl is taken from
# next to vnicd. qemu/migrate.sh does the source steps by hand for an
# interactive guest. docs/migration.md describes the whole procedure.
#
# The guest gets the vnic.ko that qemu/setup.sh built for its kernel
# (qemu/.cache/kernels/NAME/vnic.ko) as /lib/modules/vnic.ko; the launcher
# warns when guest-driver/ has changed since (qemu/setup.sh --kernel NAME
# rebuilds it).
# Inside the guest, /etc/vnic-run.env holds VNIC_ATTACH, VNIC_VFS,
# VNIC_KERNEL and VNIC_KERNEL_VERSION (the kernel's name and the ABI it
# stands for) and the --env variables (shell syntax; scenarios source it).
# With --host-channel it also holds VNIC_HOST_CHANNEL=/dev/ttyS1
# (tests/e2e/lib.sh's "host" talks over it; docs/guest-environment.md
# describes the line protocol).
#
# Exit status: the scenario's status; 124 on timeout; 125 when the guest
# printed no VNIC-SCENARIO-EXIT line (crash, panic, QEMU error); 2 usage
# error; 3 setup missing; 4 vnicd did not become ready; 5 a migration or
# restore step failed. Only processes this script started are stopped (by
# PID), on exit and on INT/TERM.
#
# Examples:
#   qemu/run-guest.sh --scenario tests/e2e/foundation.sh --log /tmp/f.log
#   qemu/run-guest.sh --attach pf,vf0                  # interactive
#   target/debug/vnicd --socket-dir /tmp/card --vfs 4 &
#   qemu/run-guest.sh --no-vnicd --socket-dir /tmp/card --attach vf0 ...
#   qemu/run-guest.sh --scenario tests/e2e/migrate.sh --migrate savevm ...

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CACHE=$HERE/.cache
# shellcheck source=qemu/kernels.sh
. "$HERE/kernels.sh"

KERNEL_NAME=${VNIC_KERNEL:-default}
CHECK_ONLY=0
VFS=4
ATTACH=pf,vf0,vf1
SCENARIO=
TIMEOUT=
LOG=
VNICD=$ROOT/target/debug/vnicd
SOCKDIR=
NO_VNICD=0
MEM=1024
SHARE=on
SMP=2
CPU=${VNIC_CPU:-}
APPEND=
QUIET=0
HOST_CHANNEL=
ADDS=()
ADD_BINS=()
ENVS=()
QEMU_EXTRA=()
VNICD_ARGS=()
MONITOR=
QMP=
QEMU_BIN=${VNIC_QEMU:-}
ROOT_PORTS=0
STATE_DISK=
LOADVM=
INCOMING=
MIGRATE=
MIGRATE_MAP=()
MIGRATE_DROP_VCT=0
MIGRATE_TO=
MIGRATE_NO_MODE=0
MIGRATE_COMPARE=0
MIGRATE_PARAMS=()
CRASH_VNICD=0
# How long the guest runs against a dead card with --crash-vnicd.
CRASH_SECONDS=5

usage() { sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; }
die() { printf 'run-guest: %s\n' "$1" >&2; exit "${2:-2}"; }
say() { printf 'run-guest: %s\n' "$*" >&2; }

need_arg() { (($# >= 2)) || die "$1 needs an argument"; }
while (($#)); do
	if [[ $1 == --*=* ]]; then
		# --opt=value is the same as --opt value
		set -- "${1%%=*}" "${1#*=}" "${@:2}"
	fi
	case $1 in
	--kernel) need_arg "$@"; KERNEL_NAME=$2; shift ;;
	--check) CHECK_ONLY=1 ;;
	--vfs) need_arg "$@"; VFS=$2; shift ;;
	--attach) need_arg "$@"; ATTACH=$2; shift ;;
	--scenario) need_arg "$@"; SCENARIO=$2; shift ;;
	--add) need_arg "$@"; ADDS+=("$2"); shift ;;
	--add-bin) need_arg "$@"; ADD_BINS+=("$2"); shift ;;
	--env) need_arg "$@"; ENVS+=("$2"); shift ;;
	--timeout) need_arg "$@"; TIMEOUT=$2; shift ;;
	--log) need_arg "$@"; LOG=$2; shift ;;
	--vnicd) need_arg "$@"; VNICD=$2; shift ;;
	--socket-dir) need_arg "$@"; SOCKDIR=$2; shift ;;
	--no-vnicd) NO_VNICD=1 ;;
	--mem) need_arg "$@"; MEM=$2; shift ;;
	--unshared-memory) SHARE=off ;;
	--smp) need_arg "$@"; SMP=$2; shift ;;
	--cpu) need_arg "$@"; CPU=$2; shift ;;
	--append) need_arg "$@"; APPEND=$2; shift ;;
	--qemu-arg) need_arg "$@"; QEMU_EXTRA+=("$2"); shift ;;
	--quiet) QUIET=1 ;;
	--host-channel) need_arg "$@"; HOST_CHANNEL=$2; shift ;;
	--monitor) need_arg "$@"; MONITOR=$2; shift ;;
	--qmp) need_arg "$@"; QMP=$2; shift ;;
	--qemu) need_arg "$@"; QEMU_BIN=$2; shift ;;
	--root-ports) need_arg "$@"; ROOT_PORTS=$2; shift ;;
	--state-disk) need_arg "$@"; STATE_DISK=$2; shift ;;
	--loadvm) need_arg "$@"; LOADVM=$2; shift ;;
	--incoming) need_arg "$@"; INCOMING=$2; shift ;;
	--migrate) need_arg "$@"; MIGRATE=$2; shift ;;
	--migrate-map) need_arg "$@"; MIGRATE_MAP+=("$2"); shift ;;
	--migrate-drop-vct) MIGRATE_DROP_VCT=1 ;;
	--migrate-to) need_arg "$@"; MIGRATE_TO=$2; shift ;;
	--migrate-no-mode) MIGRATE_NO_MODE=1 ;;
	--migrate-compare) MIGRATE_COMPARE=1 ;;
	--migrate-param) need_arg "$@"; MIGRATE_PARAMS+=("$2"); shift ;;
	--crash-vnicd) CRASH_VNICD=1 ;;
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
# Root ports take a bus number each, and q35's root bus has 32 slots.
if ! isnum "$ROOT_PORTS" || ((ROOT_PORTS > 16)); then
	die "--root-ports: a count from 0 to 16, not '$ROOT_PORTS'"
fi
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
for a in "${ADD_BINS[@]+"${ADD_BINS[@]}"}"; do
	[[ $a == *:/* && -x ${a%%:*} ]] ||
		die "--add-bin $a: want HOSTPROGRAM:/guest/path with an existing HOSTPROGRAM"
done
if [[ -n $HOST_CHANNEL ]]; then
	[[ -d $(dirname "$HOST_CHANNEL") ]] ||
		die "--host-channel $HOST_CHANNEL: no directory $(dirname "$HOST_CHANNEL")"
	HOST_CHANNEL=$(cd "$(dirname "$HOST_CHANNEL")" && pwd)/$(basename "$HOST_CHANNEL")
	for f in "$HOST_CHANNEL".{in,out}; do
		[[ ! -e $f || -p $f ]] || die "--host-channel: $f exists and is not a FIFO"
	done
fi

KNAME=$(kernel_name "$KERNEL_NAME") ||
	die "--kernel: unknown kernel '$KERNEL_NAME' (${VNIC_KERNELS[*]} or default)"
KDIR=$(kernel_dir "$CACHE" "$KNAME")
QEMU=${QEMU_BIN:-$CACHE/bin/qemu-system-x86_64}
if [[ -n $QEMU_BIN ]]; then
	[[ -x $QEMU_BIN ]] || die "--qemu (or VNIC_QEMU): $QEMU_BIN is not an executable" 3
fi
KERNEL=$KDIR/vmlinuz
BASE_INITRD=$KDIR/initramfs.cpio.gz
KO=$KDIR/vnic.ko
for f in "$QEMU" "$KERNEL" "$BASE_INITRD" "$KO"; do
	[[ -e $f ]] || die "$f missing: run qemu/setup.sh --kernel $KNAME first" 3
done
command -v cpio >/dev/null || die "cpio missing: run qemu/setup.sh first" 3
KVER=$(cat "$KDIR/kernel-version")
# The driver built for this kernel is older than its sources: a warning,
# since a test run may be meant for the driver as it was built.
for src in "$ROOT"/guest-driver/*.[ch] "$ROOT"/guest-driver/Kbuild; do
	[[ $src == */vnic.mod.c || ! $src -nt $KO ]] ||
		say "warning: $src is newer than $KO (qemu/setup.sh --kernel $KNAME rebuilds it)"
done
if ((CHECK_ONLY)); then
	say "guest kernel $KNAME ($KVER): set up in $KDIR"
	exit 0
fi

if ((NO_VNICD)); then
	[[ -n $SOCKDIR || ${#FUNCS[@]} -eq 0 ]] ||
		die "--no-vnicd needs --socket-dir"
else
	[[ -x $VNICD ]] || die "vnicd not found at $VNICD (cargo build?)" 3
fi

# abspath FILE: FILE with an absolute directory (which must exist).
abspath() { printf '%s/%s\n' "$(cd "$(dirname "$1")" && pwd)" "$(basename "$1")"; }

case $MIGRATE in
"" | savevm | file | live) ;;
*) die "--migrate: savevm, file or live, not '$MIGRATE'" ;;
esac
if [[ -n $MIGRATE ]]; then
	[[ -n $SCENARIO ]] ||
		die "--migrate needs --scenario (qemu/migrate.sh does it by hand)"
	[[ $MIGRATE == live ]] || ((!NO_VNICD)) ||
		die "--migrate restarts vnicd: not with --no-vnicd"
elif ((${#MIGRATE_MAP[@]} || MIGRATE_DROP_VCT || CRASH_VNICD)); then
	die "--migrate-map, --migrate-drop-vct and --crash-vnicd need --migrate"
fi
if [[ $MIGRATE == live ]]; then
	[[ -n $MIGRATE_TO && -S $MIGRATE_TO/control.sock ]] ||
		die "--migrate live needs --migrate-to DIR, a running vnicd's socket directory"
	MIGRATE_TO=$(cd "$MIGRATE_TO" && pwd)
	[[ $MIGRATE_TO != *[\"\\]* ]] || die "--migrate-to must not contain quotes"
	((!MIGRATE_DROP_VCT && !CRASH_VNICD)) ||
		die "--migrate-drop-vct and --crash-vnicd are not for --migrate live"
	for p in "${MIGRATE_PARAMS[@]+"${MIGRATE_PARAMS[@]}"}"; do
		[[ $p =~ ^[a-z-]+\ [0-9A-Za-z.]+$ ]] ||
			die "--migrate-param '$p': want 'NAME VALUE'"
	done
	command -v jq >/dev/null || die "jq missing: run qemu/setup.sh first" 3
	((!MIGRATE_COMPARE || MEM <= 2048)) ||
		die "--migrate-compare: at most --mem 2048 (RAM below the PCI hole)"
elif [[ -n $MIGRATE_TO ]] || ((MIGRATE_NO_MODE || MIGRATE_COMPARE || ${#MIGRATE_PARAMS[@]})); then
	die "--migrate-to, --migrate-no-mode, --migrate-compare and --migrate-param need --migrate live"
fi
for pair in "${MIGRATE_MAP[@]+"${MIGRATE_MAP[@]}"}"; do
	[[ $pair =~ ^(pf|vf[0-9]+)=(pf|vf[0-9]+)$ ]] ||
		die "--migrate-map $pair: want FUNCTION=FUNCTION, e.g. vf0=vf2"
	[[ $MIGRATE != live ]] || continue
	for fn in "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"; do
		[[ $fn == pf ]] || ((${fn#vf} < VFS)) ||
			die "--migrate-map $pair: $fn needs --vfs $((${fn#vf} + 1)) or more"
	done
done
[[ -z $LOADVM || -z $INCOMING ]] || die "--loadvm and --incoming exclude each other"
if [[ -n $LOADVM ]]; then
	[[ -n $STATE_DISK && -f $STATE_DISK ]] ||
		die "--loadvm needs the --state-disk that holds the snapshot"
	[[ $LOADVM != *[[:space:],]* ]] || die "--loadvm: a name without blanks or commas"
fi
if [[ $INCOMING == tcp:* ]]; then
	[[ $INCOMING =~ ^tcp:[^:,]+:[0-9]+$ ]] ||
		die "--incoming $INCOMING: want tcp:HOST:PORT (or a file)"
elif [[ -n $INCOMING ]]; then
	[[ -f $INCOMING ]] || die "--incoming $INCOMING: no such file"
	INCOMING=$(abspath "$INCOMING")
fi
if [[ -n $STATE_DISK ]]; then
	[[ -d $(dirname "$STATE_DISK") ]] ||
		die "--state-disk $STATE_DISK: no directory $(dirname "$STATE_DISK")"
	STATE_DISK=$(abspath "$STATE_DISK")
fi
if [[ -n $MONITOR ]]; then
	[[ -d $(dirname "$MONITOR") ]] ||
		die "--monitor $MONITOR: no directory $(dirname "$MONITOR")"
	MONITOR=$(abspath "$MONITOR")
	[[ ! -e $MONITOR || -S $MONITOR ]] ||
		die "--monitor: $MONITOR exists and is not a socket"
fi
if [[ -n $QMP ]]; then
	[[ -d $(dirname "$QMP") ]] ||
		die "--qmp $QMP: no directory $(dirname "$QMP")"
	QMP=$(abspath "$QMP")
	[[ ! -e $QMP || -S $QMP ]] || die "--qmp: $QMP exists and is not a socket"
	((${#QMP} < 108)) || die "--qmp: $QMP is too long for a UNIX socket"
fi
VNICCTL=$(dirname "$VNICD")/vnicctl
if [[ -n $MIGRATE$LOADVM$INCOMING ]]; then
	command -v socat >/dev/null || die "socat missing: run qemu/setup.sh first" 3
fi
if [[ -n $MIGRATE ]]; then
	[[ -x $VNICCTL ]] || die "--migrate: vnicctl not found at $VNICCTL" 3
fi
if ((MIGRATE_DROP_VCT)); then
	command -v jq >/dev/null || die "jq missing: run qemu/setup.sh first" 3
fi
# shellcheck source=qemu/migrate-lib.sh
. "$HERE/migrate-lib.sh"

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
# The destination QEMU while a live migration runs (then it is QEMU_PID).
DEST_QEMU_PID=
TAIL_PIDS=()
FIFOS_MADE=()

# exited PID TENTHS: waits up to TENTHS tenths of a second for PID to
# exit; true if it did.
exited() {
	local i
	for ((i = 0; i < $2; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	! kill -0 "$1" 2>/dev/null
}

# stop_pid PID NAME: SIGTERM, up to 5 s grace, then SIGKILL; only our PIDs.
stop_pid() {
	local pid=$1 name=$2
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	if ! exited "$pid" 50; then
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
	stop_pid "$DEST_QEMU_PID" "qemu (destination)"
	for pid in "${TAIL_PIDS[@]+"${TAIL_PIDS[@]}"}"; do
		stop_pid "$pid" tail
	done
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
	# QEMU removes its QMP socket when it exits, but not when it aborts.
	[[ -z $QMP || ! -S $QMP ]] || rm -f "$QMP"
	rm -f "${FIFOS_MADE[@]+"${FIFOS_MADE[@]}"}"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ -n $MONITOR ]] || MONITOR=$WORK/monitor.sock
((${#MONITOR} < 108)) || die "--monitor: $MONITOR is too long for a UNIX socket"
if [[ $MIGRATE == savevm && -z $STATE_DISK ]]; then
	STATE_DISK=$WORK/state.qcow2
fi
if [[ -n $STATE_DISK && ! -e $STATE_DISK ]]; then
	command -v qemu-img >/dev/null ||
		die "qemu-img missing: run qemu/setup.sh first" 3
	qemu-img create -q -f qcow2 "$STATE_DISK" 256M ||
		die "qemu-img create $STATE_DISK failed" 3
fi

T0=$(date +%s)
remaining() {
	if ((TIMEOUT == 0)); then
		echo 999999
	else
		echo $((T0 + TIMEOUT - $(date +%s)))
	fi
}

# ---------------------------------------------------------------- vnicd

# bounded SECONDS: SECONDS, or what is left of the run if that is less (at
# least 1).
bounded() {
	local left
	left=$(remaining)
	((left < $1)) || { echo "$1"; return; }
	((left > 0)) && echo "$left" || echo 1
}

# start_vnicd [ARGS...]: starts vnicd on SOCKDIR with --vfs, the
# VNICD-ARGS and ARGS, its output appended to VNICD_OUT/VNICD_LOG, and waits
# (bounded) for a new ready line. Returns 1, with the logs' tails shown, if
# it exits or is not ready in time.
start_vnicd() {
	local before wait_s deadline vrc
	local cmd=("$VNICD" --socket-dir "$SOCKDIR" --vfs "$VFS"
		"${VNICD_ARGS[@]+"${VNICD_ARGS[@]}"}" "$@")
	before=$(grep -c '^vnicd: ready' "$VNICD_OUT") || true
	say "starting ${cmd[*]}"
	"${cmd[@]}" </dev/null >>"$VNICD_OUT" 2>>"$VNICD_LOG" &
	VNICD_PID=$!
	wait_s=$(bounded 30)
	deadline=$(($(date +%s) + wait_s))
	until (($(grep -c '^vnicd: ready' "$VNICD_OUT") > before)); do
		if ! kill -0 "$VNICD_PID" 2>/dev/null; then
			wait "$VNICD_PID" && vrc=0 || vrc=$?
			VNICD_PID=
			say "vnicd exited with status $vrc before it was ready"
			tail -n 20 "$VNICD_OUT" "$VNICD_LOG" >&2
			return 1
		fi
		if (($(date +%s) >= deadline)); then
			say "vnicd not ready after ${wait_s} s"
			tail -n 20 "$VNICD_OUT" "$VNICD_LOG" >&2
			return 1
		fi
		sleep 0.1
	done
}

if ((!NO_VNICD)); then
	: >"$VNICD_OUT"
	: >"$VNICD_LOG"
	start_vnicd || exit 4
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
	printf 'VNIC_KERNEL=%q\nVNIC_KERNEL_VERSION=%q\n' "$KNAME" "$KVER"
	[[ -z $HOST_CHANNEL ]] || echo "VNIC_HOST_CHANNEL=/dev/ttyS1"
	for e in "${ENVS[@]+"${ENVS[@]}"}"; do
		printf '%s=%q\n' "${e%%=*}" "${e#*=}"
	done
} >"$EXTRA/etc/vnic-run.env"
# The kernel's vnic.ko is not in the base image, so a rebuilt driver needs
# no initramfs rebuild.
mkdir -p "$EXTRA/usr/lib/modules"
cp "$KO" "$EXTRA/usr/lib/modules/vnic.ko"
if [[ -n $SCENARIO ]]; then
	cp "$SCENARIO" "$EXTRA/scenario.sh"
	chmod 755 "$EXTRA/scenario.sh"
fi
for a in "${ADDS[@]+"${ADDS[@]}"}"; do
	dst=$EXTRA/${a#*:}
	mkdir -p "$(dirname "$dst")"
	cp "${a%%:*}" "$dst"
done
# add_bin SRC DST: the program, and the libraries it needs that the base
# image lacks, resolved as qemu/build-initramfs.sh does (the userland's own
# loader), so the guest gets its own versions of them.
BASE_FILES=
add_bin() {
	local src=$1 dst=$EXTRA/$2 ul=$CACHE/userland lib name
	local loader=$ul/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
	local libdirs=$ul/lib/x86_64-linux-gnu:$ul/usr/lib/x86_64-linux-gnu
	[[ -x $loader ]] || die "--add-bin: $loader missing: run qemu/setup.sh" 3
	[[ -n $BASE_FILES ]] || BASE_FILES=$(gzip -dc "$BASE_INITRD" | cpio -t --quiet)
	mkdir -p "$(dirname "$dst")" "$EXTRA/usr/lib/x86_64-linux-gnu"
	if command -v strip >/dev/null; then
		strip --strip-debug -o "$dst" "$src" || die "--add-bin: strip $src failed"
	else
		cp "$src" "$dst"
	fi
	while read -r lib; do
		[[ $lib == MISSING* ]] && die "--add-bin $src: library ${lib#MISSING }"
		name=${lib##*/}
		grep -qxF "usr/lib/x86_64-linux-gnu/$name" <<<"$BASE_FILES" && continue
		cp -L "$lib" "$EXTRA/usr/lib/x86_64-linux-gnu/$name"
		say "--add-bin $src: adds $name"
	done < <("$loader" --library-path "$libdirs" --list "$src" |
		awk '/not found/ { print "MISSING " $1; next }
			$2 == "=>" && $3 ~ /^\// { print $3 }')
}
for a in "${ADD_BINS[@]+"${ADD_BINS[@]}"}"; do
	add_bin "${a%%:*}" "${a#*:}"
done
(cd "$EXTRA" && find . -mindepth 1 | LC_ALL=C sort |
	cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$WORK/extra.cpio.gz"
cat "$BASE_INITRD" "$WORK/extra.cpio.gz" >"$WORK/initrd"

# ---------------------------------------------------------------- QEMU

# KVM is deliberately not used: guests hang under it on these machines.
# shellcheck disable=SC2054 # commas belong to QEMU's option syntax
ARGS=(-accel tcg -machine q35 -m "$MEM" -smp "$SMP")
[[ -z $CPU ]] || ARGS+=(-cpu "$CPU")
if [[ $SHARE == on ]]; then
	# shellcheck disable=SC2054 # commas belong to QEMU's option syntax
	ARGS+=(-object "memory-backend-memfd,id=mem,size=${MEM}M,share=on"
		-numa node,memdev=mem)
fi
ARGS+=(-nographic -nodefaults -no-reboot
	-kernel "$KERNEL" -initrd "$WORK/initrd"
	-append "console=ttyS0 panic=-1 $APPEND")
if [[ -n $HOST_CHANNEL ]]; then
	# QEMU's pipe chardev reads PATH.in and writes PATH.out, opening both
	# read-write, so it never waits for the host's end. They must exist
	# first, or QEMU would open PATH itself. Serial index 1 is COM2
	# (0x2f8, IRQ 3): ttyS1 to the guest's 8250 driver, which has 4 ports
	# (CONFIG_SERIAL_8250_RUNTIME_UARTS). A QEMU started after a migration
	# opens the same FIFOs.
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
if [[ -n $STATE_DISK ]]; then
	# No guest-visible disk: savevm only needs a snapshot-capable image.
	# shellcheck disable=SC2054
	ARGS+=(-drive "if=none,id=state,format=qcow2,file=${STATE_DISK//,/,,}")
fi
say "monitor: $MONITOR (HMP)"
[[ -z $QMP ]] || say "QMP: $QMP"

# The destination QEMU of --migrate live: start_qemu reads these (set for
# one call): its socket directory, monitor, and that it is the destination
# (no QMP, -pidfile FILE.dest).
START_DIR=
START_MONITOR=
START_DEST=0
# The destination of a live migration stays paused once it has the guest
# (--migrate-compare: the launcher compares memory, then sends cont).
START_PAUSED=0

# start_qemu RESTORE FUNCTION...: starts QEMU (QEMU_PID) with the
# vfio-user-pci devices of FUNCTION... in that order (which fixes their PCI
# addresses) and RESTORE's options (-loadvm NAME, -incoming file:PATH, or
# none), its messages appended to QEMU_LOG. In scenario mode the console is
# appended to LOG (emptied at the start), and copied from there to stdout
# unless --quiet.
start_qemu() {
	local restore=$1 fn i args=() dir=${START_DIR:-$SOCKDIR}
	local mon=${START_MONITOR:-$MONITOR} extra=() prev=
	shift
	# shellcheck disable=SC2054
	args+=(-chardev "socket,id=hmp,path=${mon//,/,,},server=on,wait=off"
		-object monitor-hmp,id=hmp-monitor,chardev=hmp)
	if [[ -n $QMP ]] && ((!START_DEST)); then
		# shellcheck disable=SC2054
		args+=(-chardev "socket,id=qmp,path=${QMP//,/,,},server=on,wait=off"
			-object monitor-qmp,id=qmp-monitor,chardev=qmp)
	fi
	for fn in "${QEMU_EXTRA[@]+"${QEMU_EXTRA[@]}"}"; do
		# Both QEMUs of a live migration run at once: the pidfile is locked.
		[[ $prev == -pidfile ]] && ((START_DEST)) && fn=$fn.dest
		extra+=("$fn")
		prev=$fn
	done
	for fn in "$@"; do
		args+=(-device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"type\":\"unix\",\"path\":\"$dir/$fn.sock\"}}")
	done
	# After the functions, so that their PCI addresses do not move.
	for ((i = 1; i <= ROOT_PORTS; i++)); do
		args+=(-device "pcie-root-port,id=rp$i,chassis=$i")
	done
	case $restore in
	"") ;;
	file:*) args+=(-incoming "$restore") ;;
	tcp:*)
		args+=(-incoming "$restore")
		((!START_PAUSED)) || args+=(-S)
		;;
	*) args+=(-loadvm "$restore") ;;
	esac
	if [[ -z $SCENARIO ]]; then
		# Interactive: console on this terminal (muxed with the monitor)
		# and copied to the log.
		# shellcheck disable=SC2054
		args+=(-chardev "stdio,id=con,mux=on,signal=off,logfile=${LOG//,/,,}"
			-serial chardev:con -object monitor-hmp,id=console-monitor,chardev=con)
		say "interactive guest, console log $LOG; Ctrl-a x quits"
		# "<&0": a background job would otherwise get /dev/null as stdin.
		"$QEMU" "${ARGS[@]}" "${args[@]}" "${extra[@]+"${extra[@]}"}" \
			<&0 2>>"$QEMU_LOG" &
		QEMU_PID=$!
		return
	fi
	local offset
	offset=$(stat -c %s "$LOG")
	args+=(-chardev "file,id=con,path=${LOG//,/,,},append=on" -serial chardev:con)
	"$QEMU" "${ARGS[@]}" "${args[@]}" "${extra[@]+"${extra[@]}"}" \
		</dev/null >>"$QEMU_LOG" 2>&1 &
	QEMU_PID=$!
	# The destination's console is copied once the source has gone.
	((START_DEST)) || start_tail "$QEMU_PID" "$offset"
}

# start_tail PID OFFSET: unless --quiet, copies the console log from byte
# OFFSET to stdout while process PID (a QEMU) runs, minus terminal control
# sequences (SeaBIOS and the kernel clear the screen).
start_tail() {
	((!QUIET)) || return 0
	tail -c +$(($2 + 1)) -F --pid="$1" "$LOG" 2>/dev/null \
		> >(sed -u -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' \
			-e 's/\x1b[a-zA-Z]//g' -e 's/\r$//') &
	TAIL_PIDS+=($!)
}

# crash_vnicd CONFIG: --crash-vnicd's outage: the configuration exported
# to CONFIG while vnicd runs (what an operator keeps), then vnicd killed
# with SIGKILL, and the guest left running against the dead card for
# CRASH_SECONDS. Returns 1 with MIG_ERROR on failure.
crash_vnicd() {
	local rc=0
	mig_step "export (vnicctl export > $1)" \
		mig_export "$VNICCTL" "$SOCKDIR/control.sock" "$1" || return 1
	kill -KILL "$VNICD_PID"
	wait "$VNICD_PID" 2>/dev/null || rc=$?
	say "migration: vnicd killed (SIGKILL, status $rc); the guest runs on without it for $CRASH_SECONDS s"
	VNICD_PID=
	sleep "$CRASH_SECONDS"
}

# migrate: the source steps against the running guest (qemu/migrate-lib.sh
# mig_save), QEMU's exit, vnicd stopped; then a new vnicd from the exported
# configuration and a new QEMU restoring the guest. Returns 1 with
# MIG_ERROR on failure.
migrate() {
	local t_seen=$EPOCHREALTIME t0 target restore config dest fn i qrc
	local funcs=()
	config=$LOGBASE.migrate.json
	say "migration: the guest asked for it $(($(date +%s) - T0)) s into the run"
	case $MIGRATE in
	savevm) target=vnic-migrate restore=vnic-migrate ;;
	file) target=$WORK/migrate.bin restore=file:$WORK/migrate.bin ;;
	esac
	local control=$SOCKDIR/control.sock
	if ((CRASH_VNICD)); then
		crash_vnicd "$config" || return 1
		control=-
	fi
	mig_save "$MONITOR" "$control" "$VNICCTL" "$MIGRATE" \
		"$target" "$config" "$(bounded 300)" || return 1
	t0=$EPOCHREALTIME
	wait_quit QEMU
	QEMU_PID=
	say "migration: QEMU exited (status $qrc) $(mig_secs "$t0") s"
	if [[ -n $VNICD_PID ]]; then
		t0=$EPOCHREALTIME
		stop_pid "$VNICD_PID" vnicd
		VNICD_PID=
		say "migration: vnicd stopped $(mig_secs "$t0") s"
	fi

	dest=$config
	if ((${#MIGRATE_MAP[@]} || MIGRATE_DROP_VCT)); then
		dest=$LOGBASE.migrate-dest.json
		local what=()
		((${#MIGRATE_MAP[@]} == 0)) || what+=("remap ${MIGRATE_MAP[*]}")
		((MIGRATE_DROP_VCT == 0)) || what+=("without VCT entries")
		mig_step "destination configuration ${what[*]} ($dest)" \
			mig_dest_config "$VNICCTL" "$config" "$dest" "$MIGRATE_DROP_VCT" \
			"${MIGRATE_MAP[@]+"${MIGRATE_MAP[@]}"}" || return 1
	fi
	t0=$EPOCHREALTIME
	if ! start_vnicd --config "$dest"; then
		MIG_ERROR="the new vnicd did not start (see $VNICD_LOG)"
		return 1
	fi
	say "migration: new vnicd ready $(mig_secs "$t0") s"
	for fn in "${FUNCS[@]+"${FUNCS[@]}"}"; do
		fn=$(mig_map_function "$fn" "${MIGRATE_MAP[@]+"${MIGRATE_MAP[@]}"}")
		if [[ ! -S $SOCKDIR/$fn.sock ]]; then
			MIG_ERROR="no socket $SOCKDIR/$fn.sock for $fn"
			return 1
		fi
		funcs+=("$fn")
	done
	((${#MIGRATE_MAP[@]} == 0)) ||
		say "migration: attaching ${funcs[*]} where ${FUNCS[*]} were"
	t0=$EPOCHREALTIME
	start_qemu "$restore" "${funcs[@]+"${funcs[@]}"}"
	mig_resume "$MONITOR" "$(bounded 300)" "$QEMU_PID" || return 1
	say "migration: new QEMU started and restored (${restore%%:*}) and running $(mig_secs "$t0") s"
	say "migration: host-side outage $(mig_secs "$MIG_T_STOP" "$MIG_T_RUN") s (stop -> running; $(mig_secs "$t_seen" "$MIG_T_RUN") s after VNIC-MIGRATE was seen)"
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
	local port i
	for ((i = 0; i < 100; i++)); do
		port=$((40000 + RANDOM % 20000))
		if [[ -z $(ss -Hltn "sport = :$port" 2>/dev/null) ]]; then
			echo "$port"
			return 0
		fi
	done
	return 1
}

# wait_quit WHAT: after HMP quit, waits up to 30 s for QEMU_PID to exit
# (stopping it past that, "WHAT still runs 30 s after quit"); sets qrc to
# its exit status, or "stopped".
wait_quit() {
	if ! exited "$QEMU_PID" 300; then
		say "migration: $1 still runs 30 s after quit; stopping it"
		stop_pid "$QEMU_PID" qemu
		qrc=stopped
	else
		wait "$QEMU_PID" && qrc=0 || qrc=$?
	fi
}

# migrate_live: --migrate live: a destination QEMU on the --migrate-to
# card's sockets, listening on a free port, then qemu/migrate-lib.sh
# mig_live against the running guest (the card's migration mode unless
# --migrate-no-mode); once the source QEMU has quit, the destination is the
# launcher's QEMU. Returns 1 with MIG_ERROR on failure; 2 if the migration
# was cancelled and the guest runs on at the source (the destination QEMU
# stopped).
migrate_live() {
	local t_seen=$EPOCHREALTIME t0 port fn qrc offset i funcs=() src=()
	local dest_mon=$WORK/monitor-dest.sock src_pid=$QEMU_PID
	say "migration: the guest asked for it $(($(date +%s) - T0)) s into the run"
	port=$(free_port) || { MIG_ERROR="no free TCP port"; return 1; }
	for fn in "${FUNCS[@]+"${FUNCS[@]}"}"; do
		[[ $fn == pf ]] || src+=("$fn")
		MIG_LIVE_MAP=("${MIGRATE_MAP[@]+"${MIGRATE_MAP[@]}"}")
		fn=$(mig_dest_name "$fn")
		if [[ ! -S $MIGRATE_TO/$fn.sock ]]; then
			MIG_ERROR="no socket $MIGRATE_TO/$fn.sock for $fn"
			return 1
		fi
		funcs+=("$fn")
	done
	[[ ${#src[@]} -eq ${#FUNCS[@]} ]] ||
		say "migration: warning: the PF is attached; only VFs are handed over"
	offset=$(stat -c %s "$LOG")
	t0=$EPOCHREALTIME
	START_DIR=$MIGRATE_TO START_MONITOR=$dest_mon START_DEST=1
	START_PAUSED=$MIGRATE_COMPARE
	start_qemu "tcp:127.0.0.1:$port" "${funcs[@]+"${funcs[@]}"}"
	START_DIR='' START_MONITOR='' START_DEST=0 START_PAUSED=0
	DEST_QEMU_PID=$QEMU_PID
	QEMU_PID=$src_pid
	say "migration: destination QEMU (pid $DEST_QEMU_PID) on ${funcs[*]} of $MIGRATE_TO, -incoming tcp:127.0.0.1:$port, monitor $dest_mon"
	while :; do
		if ! kill -0 "$DEST_QEMU_PID" 2>/dev/null; then
			MIG_ERROR="the destination QEMU exited at start (see $QEMU_LOG)"
			DEST_QEMU_PID=
			return 1
		fi
		if [[ -S $dest_mon ]] && mig_status "$dest_mon" 2>/dev/null &&
			[[ $MIG_STATUS == "paused (inmigrate)" ]]; then
			break
		fi
		if awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { exit !(b - a > 60) }'; then
			MIG_ERROR="the destination QEMU is not waiting after 60 s (status '$MIG_STATUS')"
			stop_pid "$DEST_QEMU_PID" "qemu (destination)"
			DEST_QEMU_PID=
			return 1
		fi
		sleep 0.1
	done
	say "migration: destination waiting (paused (inmigrate)) $(mig_secs "$t0") s"
	MIG_LIVE_MODE=$((!MIGRATE_NO_MODE))
	MIG_LIVE_DEST_CONTROL=$MIGRATE_TO/control.sock
	MIG_LIVE_CONFIG=$LOGBASE.migrate.json
	MIG_LIVE_PARAMS=("${MIGRATE_PARAMS[@]+"${MIGRATE_PARAMS[@]}"}")
	MIG_LIVE_COMPARE_MON=
	if ((MIGRATE_COMPARE)); then
		MIG_LIVE_COMPARE_MON=$dest_mon
		MIG_LIVE_COMPARE_MIB=$MEM
		MIG_LIVE_COMPARE_DIR=$WORK
	fi
	if ! mig_live "$MONITOR" "$SOCKDIR/control.sock" "$VNICCTL" \
		"tcp:127.0.0.1:$port" "$(bounded 300)" "${src[@]}"; then
		if mig_status "$MONITOR" 2>/dev/null && [[ $MIG_STATUS == running ]]; then
			stop_pid "$DEST_QEMU_PID" "qemu (destination)"
			DEST_QEMU_PID=
			return 2
		fi
		return 1
	fi
	t0=$EPOCHREALTIME
	wait_quit "the source QEMU"
	say "migration: source QEMU exited (status $qrc) $(mig_secs "$t0") s"
	QEMU_PID=$DEST_QEMU_PID
	DEST_QEMU_PID=
	MONITOR=$dest_mon
	start_tail "$QEMU_PID" "$offset"
	mig_resume "$MONITOR" "$(bounded 60)" "$QEMU_PID" || return 1
	say "migration: live migration done, the destination runs: total time $MIG_LIVE_TOTAL_MS ms, downtime $MIG_LIVE_DOWNTIME_MS ms (QEMU), pre-copy $MIG_LIVE_ACTIVE_S s, $(mig_secs "$t_seen" "$EPOCHREALTIME") s after VNIC-MIGRATE was seen"
}

RESTORE=
[[ -z $LOADVM ]] || RESTORE=$LOADVM
if [[ $INCOMING == tcp:* ]]; then
	RESTORE=$INCOMING
elif [[ -n $INCOMING ]]; then
	RESTORE=file:$INCOMING
fi
say "guest kernel $KNAME ($KVER)"
[[ -z $SCENARIO ]] || say "console log $LOG (timeout ${TIMEOUT} s)"
start_qemu "$RESTORE" "${FUNCS[@]+"${FUNCS[@]}"}"
FAILED_STEP=
if [[ -n $RESTORE ]]; then
	# A live migration's destination waits for its source to start.
	wait_s=300
	[[ $RESTORE != tcp:* ]] || wait_s=3600
	if mig_resume "$MONITOR" "$(bounded "$wait_s")" "$QEMU_PID"; then
		say "restored from ${RESTORE#file:}: running"
	else
		FAILED_STEP="restore: $MIG_ERROR"
	fi
fi

TIMED_OUT=0
MIGRATED=0
while [[ -z $FAILED_STEP ]] && kill -0 "$QEMU_PID" 2>/dev/null; do
	if ((TIMEOUT > 0 && $(remaining) <= 0)); then
		TIMED_OUT=1
		break
	fi
	if [[ -n $MIGRATE ]] && ((!MIGRATED)) && grep -aq 'VNIC-MIGRATE' "$LOG"; then
		MIGRATED=1
		if [[ $MIGRATE == live ]]; then
			migrate_live && rc=0 || rc=$?
			case $rc in
			0) ;;
			2) say "migration: cancelled, the guest runs on at the source: $MIG_ERROR" ;;
			*) FAILED_STEP="migration: $MIG_ERROR" ;;
			esac
		else
			migrate || FAILED_STEP="migration: $MIG_ERROR"
		fi
		continue
	fi
	sleep 0.2
done
if ((TIMED_OUT)); then
	say "timeout: the run took longer than ${TIMEOUT} s; stopping QEMU"
fi
if [[ -n $FAILED_STEP ]]; then
	say "$FAILED_STEP; stopping QEMU"
fi
QRC=
if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
	stop_pid "$QEMU_PID" qemu
	QRC=stopped
elif [[ -n $QEMU_PID ]]; then
	wait "$QEMU_PID" && QRC=0 || QRC=$?
fi
QEMU_PID=
for pid in "${TAIL_PIDS[@]+"${TAIL_PIDS[@]}"}"; do
	wait "$pid" 2>/dev/null || true
done
TAIL_PIDS=()
[[ -z $SCENARIO && -t 0 ]] && stty sane 2>/dev/null
say "QEMU exited with status ${QRC:-?} after $(($(date +%s) - T0)) s"
if [[ -s $QEMU_LOG ]]; then
	say "QEMU messages ($QEMU_LOG):"
	sed 's/^/  /' "$QEMU_LOG" >&2
fi
if [[ -n $MIGRATE ]] && ((!MIGRATED)); then
	say "warning: --migrate $MIGRATE, but the guest never printed VNIC-MIGRATE"
fi

if [[ -n $FAILED_STEP ]]; then
	say "FAIL ($FAILED_STEP); console log: $LOG"
	exit 5
fi
if ((TIMED_OUT)); then
	say "FAIL (timeout); console log: $LOG"
	exit 124
fi
[[ -n $SCENARIO ]] || exit "$QRC"

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
