#!/usr/bin/env bash
# qemu/migrate.sh - save a running guest with vnic functions, and restore it,
# by hand (docs/migration.md). qemu/run-guest.sh --migrate does the same for
# scenarios, with the same functions (qemu/migrate-lib.sh).
#
# Usage:
#   qemu/migrate.sh save --monitor SOCK --control SOCK
#                        (--savevm NAME | --file PATH) --config-out FILE
#                        [--vnicctl PATH] [--timeout SECONDS] [--no-rollback]
#   qemu/migrate.sh config --in FILE --out FILE [--map A=B]... [--drop-vct]
#                        [--vnicctl PATH]
#   qemu/migrate.sh restore --monitor SOCK [--timeout SECONDS]
#   qemu/migrate.sh live --monitor SOCK --control SOCK --to tcp:HOST:PORT
#                        --function FN [--function FN]... [--no-mode]
#                        [--dest-control SOCK] [--map A=B]...
#                        [--config-out FILE] [--param 'NAME VALUE']...
#                        [--vnicctl PATH] [--timeout SECONDS]
#
# save      the source steps against a running guest: HMP stop (the guest
#           rings no more doorbells); vnicctl quiesce (the card stops writing
#           guest memory and writes every queue context back to it);
#           vnicctl export > FILE (the card's settings and VCT entries);
#           HMP savevm NAME (into the guest's --state-disk) or migrate
#           file:PATH (waits until completed); HMP quit. Each step prints
#           its time. vnicd is left running: stop it (run-guest.sh stops
#           its own when QEMU exits). If a step before quit fails, the card
#           and the guest go on (vnicctl resume, HMP cont) unless
#           --no-rollback.
# config    the destination's configuration: FILE from save with functions
#           A and B swapped (vnicctl remap; restore A's state onto VF B: give
#           QEMU B's socket where it had A's, in the same -device position)
#           and, with --drop-vct, without VCT entries (then the guest driver,
#           or management with vnicctl vct set, must give them).
# restore   waits until the QEMU serving monitor SOCK has loaded its state
#           (-loadvm or -incoming) and sends HMP cont if it is paused
#           (run-guest.sh --loadvm/--incoming does this itself).
# live      a live migration of the running guest to a QEMU waiting with
#           -incoming tcp:HOST:PORT (run-guest.sh --incoming tcp:HOST:PORT)
#           on another card: vnicctl migrate begin FN (the card sends its
#           writes to guest memory through QEMU, which tracks them);
#           HMP migrate_set_capability pause-before-switchover on; migrate
#           -d; info migrate polled until pre-switchover, printing QEMU's
#           progress and FN's packet counters on the source card every
#           second (the guest runs on); vnicctl migrate switchover FN
#           (quiesce, contexts written through QEMU, mode ended, FN's MACs
#           released on the source card); vnicctl export, and with
#           --dest-control each FN's entry (settings, MACs, VCT entry)
#           applied to the destination card, where it waits until the
#           guest's driver restores the function; migrate_continue; info
#           migrate polled until completed; QEMU's total time and downtime
#           printed; HMP quit. A failure before migrate_continue cancels
#           the migration (migrate_cancel, vnicctl migrate end, resume):
#           the guest runs on at the source.
#
# Options:
#   --monitor SOCK      QEMU's HMP monitor socket (run-guest.sh --monitor)
#   --control SOCK      vnicd's control socket (<socket-dir>/control.sock)
#   --savevm NAME       save into snapshot NAME (QEMU needs a qcow2 drive:
#                       run-guest.sh --state-disk)
#   --file PATH         migrate into file PATH (restore: run-guest.sh
#                       --incoming PATH)
#   --config-out FILE   where the exported configuration goes
#   --in, --out FILE    config's input (from save) and output
#   --map A=B           swap functions A and B (repeatable), e.g. vf0=vf2
#   --drop-vct          remove every "vct" entry (needs jq)
#   --vnicctl PATH      vnicctl (default: target/debug/vnicctl, else PATH)
#   --timeout SECONDS   bound on savevm/migrate, or on the restore (300)
#   --no-rollback       leave the guest stopped and the card quiesced when
#                       save fails
#   --to URI            live: the destination QEMU's -incoming (tcp:HOST:PORT)
#   --function FN       live: a function of the guest on the source card
#                       (repeatable, or FN,FN)
#   --no-mode           live: no migration mode, only vnicctl quiesce FN at
#                       pre-switchover: the negative experiment (the card's
#                       writes during the copy are not tracked, so the
#                       destination gets stale pages)
#   --dest-control SOCK live: the destination vnicd's control socket (the
#                       functions' entries are applied there; without it,
#                       configure the destination card yourself)
#   --map A=B           live: source function A is the destination's B
#   --param 'NAME VAL'  live: HMP migrate_set_parameter NAME VAL before the
#                       migration (repeatable), e.g. 'downtime-limit 500',
#                       'max-bandwidth 1G'
#   -h, --help          this text
#
# Example, live from card A's VF0 to card B's VF0 (needs jq):
#   qemu/run-guest.sh --attach vf0 --socket-dir /tmp/a --monitor /tmp/ma \
#       -- --card-id 1 --uplink udp:127.0.0.1:7001,127.0.0.1:7002   # term. 1
#   qemu/run-guest.sh --attach vf0 --socket-dir /tmp/b --monitor /tmp/mb \
#       --incoming tcp:127.0.0.1:4444 \
#       -- --card-id 2 --uplink udp:127.0.0.1:7002,127.0.0.1:7001   # term. 2
#   qemu/migrate.sh live --monitor /tmp/ma --control /tmp/a/control.sock \
#       --to tcp:127.0.0.1:4444 --function vf0 \
#       --dest-control /tmp/b/control.sock                          # term. 3
#
# Example, savevm and back onto the same card settings:
#   qemu/run-guest.sh --attach vf0,vf1 --socket-dir /tmp/card \
#       --monitor /tmp/mon --state-disk /tmp/state.qcow2          # terminal 1
#   qemu/migrate.sh save --monitor /tmp/mon \
#       --control /tmp/card/control.sock --savevm snap \
#       --config-out /tmp/card.json                               # terminal 2
#   qemu/run-guest.sh --attach vf0,vf1 --monitor /tmp/mon \
#       --state-disk /tmp/state.qcow2 --loadvm snap -- --config /tmp/card.json
#
# Exit status: 0 done; 1 a step failed (the message says which; after a
# save rolled back, or a live migration cancelled, the guest runs on); 2 usage error; 3 a tool is missing.
# Every wait is bounded; this script starts only socat, vnicctl and jq and
# stops no process.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

usage() { sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; }
die() { printf 'migrate.sh: %s\n' "$1" >&2; exit "${2:-2}"; }
say() { printf 'migrate.sh: %s\n' "$*" >&2; }

# shellcheck source=qemu/migrate-lib.sh
. "$HERE/migrate-lib.sh"

# wait_monitor_gone: QEMU removes its monitor socket as it exits; waits
# up to 30 s for that after quit.
wait_monitor_gone() {
	local i
	for ((i = 0; i < 300; i++)); do
		[[ -S $MONITOR ]] || break
		sleep 0.1
	done
	[[ ! -S $MONITOR ]] || say "warning: $MONITOR still there 30 s after quit"
}

(($#)) || { usage >&2; exit 2; }
ACTION=$1
shift
case $ACTION in
save | config | restore | live) ;;
-h | --help) usage; exit 0 ;;
*) die "unknown action '$ACTION' (save, config, restore or live; see --help)" ;;
esac

MONITOR=
CONTROL=
SAVEVM=
FILE=
CONFIG_OUT=
IN=
OUT=
MAPS=()
DROP_VCT=0
VNICCTL=
TIMEOUT=300
ROLLBACK=1
TO=
LIVE_FUNCS=()
NO_MODE=0
DEST_CONTROL=
PARAMS=()

need_arg() { (($# >= 2)) || die "$1 needs an argument"; }
while (($#)); do
	if [[ $1 == --*=* ]]; then
		set -- "${1%%=*}" "${1#*=}" "${@:2}"
	fi
	case $1 in
	--monitor) need_arg "$@"; MONITOR=$2; shift ;;
	--control) need_arg "$@"; CONTROL=$2; shift ;;
	--savevm) need_arg "$@"; SAVEVM=$2; shift ;;
	--file) need_arg "$@"; FILE=$2; shift ;;
	--config-out) need_arg "$@"; CONFIG_OUT=$2; shift ;;
	--in) need_arg "$@"; IN=$2; shift ;;
	--out) need_arg "$@"; OUT=$2; shift ;;
	--map) need_arg "$@"; MAPS+=("$2"); shift ;;
	--drop-vct) DROP_VCT=1 ;;
	--vnicctl) need_arg "$@"; VNICCTL=$2; shift ;;
	--timeout) need_arg "$@"; TIMEOUT=$2; shift ;;
	--no-rollback) ROLLBACK=0 ;;
	--to) need_arg "$@"; TO=$2; shift ;;
	--function) need_arg "$@"; IFS=, read -r -a f <<<"$2"; LIVE_FUNCS+=("${f[@]}"); shift ;;
	--no-mode) NO_MODE=1 ;;
	--dest-control) need_arg "$@"; DEST_CONTROL=$2; shift ;;
	--param) need_arg "$@"; PARAMS+=("$2"); shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
	shift
done

[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout: a number of seconds, not '$TIMEOUT'"

# find_vnicctl: VNICCTL, else the workspace's debug build, else PATH's.
find_vnicctl() {
	if [[ -z $VNICCTL ]]; then
		VNICCTL=$ROOT/target/debug/vnicctl
		[[ -x $VNICCTL ]] || VNICCTL=$(command -v vnicctl) ||
			die "vnicctl not found (cargo build, or --vnicctl)" 3
	fi
	[[ -x $VNICCTL ]] || die "--vnicctl $VNICCTL: not executable" 3
}

# need_monitor: --monitor names a socket, and socat is there.
need_monitor() {
	[[ -n $MONITOR ]] || die "$ACTION needs --monitor"
	[[ -S $MONITOR ]] || die "--monitor $MONITOR: not a socket (is QEMU running?)" 1
	command -v socat >/dev/null || die "socat missing: run qemu/setup.sh" 3
}

case $ACTION in
save)
	need_monitor
	[[ -n $CONTROL ]] || die "save needs --control"
	[[ -S $CONTROL ]] || die "--control $CONTROL: not a socket (is vnicd running?)" 1
	[[ -n $CONFIG_OUT ]] || die "save needs --config-out"
	[[ -n $SAVEVM || -n $FILE ]] || die "save needs --savevm NAME or --file PATH"
	[[ -z $SAVEVM || -z $FILE ]] || die "--savevm and --file exclude each other"
	if [[ -n $SAVEVM ]]; then
		[[ $SAVEVM =~ ^[A-Za-z0-9_.-]+$ ]] ||
			die "--savevm: a name of letters, digits, _ . -"
		FORM=savevm TARGET=$SAVEVM
	else
		[[ -d $(dirname "$FILE") ]] || die "--file $FILE: no directory $(dirname "$FILE")"
		FILE=$(cd "$(dirname "$FILE")" && pwd)/$(basename "$FILE")
		[[ $FILE != *[[:space:]]* ]] || die "--file: a path without blanks"
		FORM=file TARGET=$FILE
	fi
	find_vnicctl
	T0=$EPOCHREALTIME
	if ! mig_save "$MONITOR" "$CONTROL" "$VNICCTL" "$FORM" "$TARGET" \
		"$CONFIG_OUT" "$TIMEOUT"; then
		say "FAILED: $MIG_ERROR"
		# Once quit has gone out there is nothing to resume.
		if ((ROLLBACK)) && [[ -S $MONITOR && $MIG_ERROR != quit* ]]; then
			if mig_rollback "$MONITOR" "$CONTROL" "$VNICCTL"; then
				say "rolled back: the card resumed and the guest runs on"
			fi
		fi
		exit 1
	fi
	wait_monitor_gone
	say "saved in $(mig_secs "$T0") s: ${FORM} ${TARGET}, configuration $CONFIG_OUT"
	say "now stop vnicd; restore with qemu/run-guest.sh" \
		"$([[ $FORM == savevm ]] && echo "--state-disk IMAGE --loadvm $TARGET" ||
			echo "--incoming $TARGET") -- --config $CONFIG_OUT"
	;;
config)
	[[ -n $IN && -n $OUT ]] || die "config needs --in and --out"
	[[ -f $IN ]] || die "--in $IN: no such file"
	for pair in "${MAPS[@]+"${MAPS[@]}"}"; do
		[[ $pair =~ ^(pf|vf[0-9]+)=(pf|vf[0-9]+)$ ]] ||
			die "--map $pair: want FUNCTION=FUNCTION, e.g. vf0=vf2"
	done
	if ((DROP_VCT)); then
		command -v jq >/dev/null || die "jq missing: run qemu/setup.sh" 3
	fi
	find_vnicctl
	mig_dest_config "$VNICCTL" "$IN" "$OUT" "$DROP_VCT" \
		"${MAPS[@]+"${MAPS[@]}"}" || die "$MIG_ERROR" 1
	say "wrote $OUT"
	;;
restore)
	need_monitor
	mig_resume "$MONITOR" "$TIMEOUT" || die "$MIG_ERROR" 1
	say "the guest runs"
	;;
live)
	need_monitor
	[[ -n $CONTROL ]] || die "live needs --control"
	[[ -S $CONTROL ]] || die "--control $CONTROL: not a socket (is vnicd running?)" 1
	[[ $TO =~ ^tcp:[^:]+:[0-9]+$ ]] || die "live needs --to tcp:HOST:PORT"
	((${#LIVE_FUNCS[@]})) || die "live needs --function FN"
	for fn in "${LIVE_FUNCS[@]}"; do
		[[ $fn =~ ^(pf|vf[0-9]+)$ ]] || die "--function $fn: pf, vf0, vf1, ..."
	done
	for pair in "${MAPS[@]+"${MAPS[@]}"}"; do
		[[ $pair =~ ^(pf|vf[0-9]+)=(pf|vf[0-9]+)$ ]] ||
			die "--map $pair: want FUNCTION=FUNCTION, e.g. vf0=vf2"
	done
	for p in "${PARAMS[@]+"${PARAMS[@]}"}"; do
		[[ $p =~ ^[a-z-]+\ [0-9A-Za-z.]+$ ]] || die "--param '$p': want 'NAME VALUE'"
	done
	if [[ -n $DEST_CONTROL ]]; then
		[[ -S $DEST_CONTROL ]] || die "--dest-control $DEST_CONTROL: not a socket" 1
		command -v jq >/dev/null || die "jq missing: run qemu/setup.sh" 3
	fi
	find_vnicctl
	MIG_LIVE_MODE=$((!NO_MODE))
	MIG_LIVE_DEST_CONTROL=$DEST_CONTROL
	MIG_LIVE_MAP=("${MAPS[@]+"${MAPS[@]}"}")
	MIG_LIVE_CONFIG=$CONFIG_OUT
	MIG_LIVE_PARAMS=("${PARAMS[@]+"${PARAMS[@]}"}")
	T0=$EPOCHREALTIME
	if ! mig_live "$MONITOR" "$CONTROL" "$VNICCTL" "$TO" "$TIMEOUT" \
		"${LIVE_FUNCS[@]}"; then
		say "FAILED: $MIG_ERROR"
		exit 1
	fi
	wait_monitor_gone
	say "migrated in $(mig_secs "$T0") s to $TO: total time $MIG_LIVE_TOTAL_MS ms, downtime $MIG_LIVE_DOWNTIME_MS ms (QEMU)"
	;;
esac
