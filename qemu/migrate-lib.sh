# qemu/migrate-lib.sh - the migration steps of docs/migration.md, shared by
# qemu/run-guest.sh (--migrate) and qemu/migrate.sh. Sourced, not run.
#
# The caller defines say MESSAGE (a progress line on stderr). Functions
# return non-zero on failure with the reason in MIG_ERROR; none of them
# exits, kills a process or waits without a bound. Needs socat (the HMP
# monitor on a UNIX socket) and, for --migrate-drop-vct, jq.
#
# Step timings: MIG_T_STOP is the time (EPOCHREALTIME) at which mig_save
# stopped the guest, MIG_T_RUN the time at which mig_resume saw it running.

# shellcheck shell=bash
# shellcheck disable=SC2034 # MIG_* are for the caller

MIG_ERROR=
MIG_T_STOP=
MIG_T_RUN=
MIG_STATUS=
MIG_OUT=

# mig_secs T0 [T1]: seconds from T0 to T1 (EPOCHREALTIME values; T1
# defaults to now), two decimals.
mig_secs() {
	awk -v a="$1" -v b="${2:-$EPOCHREALTIME}" 'BEGIN { printf "%.2f", b - a }'
}

# mig_hmp SOCK COMMAND [SECONDS]: runs one HMP command on QEMU's monitor
# socket SOCK; its output, without the banner, the prompts and the echo
# (readline redraws the line with escape sequences), goes to MIG_OUT. QEMU
# answers once the command has completed and then closes the connection,
# since socat has sent EOF; SECONDS (default 60) bounds the whole exchange.
mig_hmp() {
	local sock=$1 cmd=$2 bound=${3:-60} out
	MIG_OUT=
	if ! out=$(printf '%s\n' "$cmd" |
		timeout "$bound" socat -t "$bound" - "UNIX-CONNECT:$sock" 2>&1); then
		MIG_ERROR="HMP '$cmd' on $sock: ${out:-no answer within $bound s}"
		return 1
	fi
	MIG_OUT=$(printf '%s\n' "$out" |
		sed -e 's/\x1b\[[0-9;]*[A-Za-z]//g' -e 's/\r//g' -e 1d |
		grep -v '^(qemu)') || true
}

# mig_hmp_quiet SOCK COMMAND [SECONDS]: mig_hmp for a command that prints
# nothing when it succeeds (stop, cont, savevm, migrate); any output is
# taken as its error message.
mig_hmp_quiet() {
	mig_hmp "$@" || return 1
	if [[ -n $MIG_OUT ]]; then
		MIG_ERROR="HMP '$2': $(printf '%s' "$MIG_OUT" | tr '\n' ' ')"
		return 1
	fi
}

# mig_status SOCK: QEMU's run state as `info status` has it, in
# MIG_STATUS: "running", "paused", "paused (inmigrate)", ...
mig_status() {
	MIG_STATUS=
	mig_hmp "$1" 'info status' 10 || return 1
	MIG_STATUS=$(printf '%s\n' "$MIG_OUT" | sed -n 's/^VM status: //p')
	if [[ -z $MIG_STATUS ]]; then
		MIG_ERROR="unexpected answer to 'info status': $MIG_OUT"
		return 1
	fi
}

# mig_wait_migrate SOCK SECONDS: polls `info migrate` until the outgoing
# migration has completed.
mig_wait_migrate() {
	local sock=$1 end=$((SECONDS + $2)) st=
	while :; do
		mig_hmp "$sock" 'info migrate' 10 || return 1
		st=$(printf '%s\n' "$MIG_OUT" |
			sed -n -E 's/^(Migration s|S)tatus:[[:space:]]*//p')
		case $st in
		completed) return 0 ;;
		failed | cancelled | cancelling)
			MIG_ERROR="migration $st"
			return 1
			;;
		esac
		if ((SECONDS >= end)); then
			MIG_ERROR="migration not completed after $2 s (status '$st')"
			return 1
		fi
		sleep 0.1
	done
}

# mig_step NAME CMD...: runs CMD, then prints "migration: NAME S s".
mig_step() {
	local name=$1 t0=$EPOCHREALTIME
	shift
	"$@" || { MIG_ERROR="$name: $MIG_ERROR"; return 1; }
	say "migration: $name $(mig_secs "$t0") s"
}

# mig_vnicctl VNICCTL CONTROL ARGS...: vnicctl against CONTROL, its
# output in MIG_VNICCTL_OUT, its messages in MIG_ERROR on failure (bounded
# by 60 s).
MIG_VNICCTL_OUT=
mig_vnicctl() {
	local vnicctl=$1 control=$2 out rc=0
	shift 2
	MIG_VNICCTL_OUT=
	out=$(timeout 60 "$vnicctl" --control "$control" "$@" 2>&1) || rc=$?
	MIG_VNICCTL_OUT=$out
	if ((rc != 0)); then
		MIG_ERROR="vnicctl $* (status $rc): $(printf '%s' "$out" | tr '\n' ' ')"
		return 1
	fi
}

# mig_export VNICCTL CONTROL FILE: vnicctl export into FILE.
mig_export() {
	local rc=0 err
	err=$(timeout 60 "$1" --control "$2" export 2>&1 >"$3") || rc=$?
	if ((rc != 0)); then
		MIG_ERROR="vnicctl export (status $rc): $err"
		return 1
	fi
}

# mig_save MONITOR CONTROL VNICCTL FORM TARGET CONFIG_OUT [SECONDS]: the
# source steps: HMP stop; vnicctl quiesce; vnicctl export > CONFIG_OUT
# (both skipped if CONTROL is "-": vnicd died, CONFIG_OUT exists);
# HMP savevm TARGET (FORM savevm) or migrate file:TARGET and wait for it
# (FORM file); HMP quit. SECONDS (default 300) bounds savevm and the
# migration. Each step prints its time. The caller waits for QEMU to exit
# and stops vnicd.
mig_save() {
	local mon=$1 control=$2 vnicctl=$3 form=$4 target=$5 config=$6
	local bound=${7:-300} t0 vct
	MIG_T_STOP=$EPOCHREALTIME
	mig_step "stop (HMP)" mig_hmp_quiet "$mon" stop 30 || return 1
	# CONTROL "-": no card to ask (it died); CONFIG was exported before.
	if [[ $control != - ]]; then
		mig_step "quiesce (vnicctl quiesce)" \
			mig_vnicctl "$vnicctl" "$control" quiesce || return 1
		mig_step "export (vnicctl export > $config)" \
			mig_export "$vnicctl" "$control" "$config" || return 1
	fi
	vct=$(grep -c '"vct"' "$config") || true
	say "migration: the exported configuration has $vct VCT entries"
	case $form in
	savevm)
		mig_step "savevm $target" \
			mig_hmp_quiet "$mon" "savevm $target" "$bound" || return 1
		;;
	file)
		t0=$EPOCHREALTIME
		# HMP migrate returns when the migration has ended, or at once
		# in QEMUs that detach it; either way, ask until it completed.
		if ! mig_hmp_quiet "$mon" "migrate file:$target" "$bound" ||
			! mig_wait_migrate "$mon" "$bound"; then
			MIG_ERROR="migrate file:$target: $MIG_ERROR"
			return 1
		fi
		say "migration: migrate file:$target $(mig_secs "$t0") s" \
			"($(du -h "$target" | cut -f1))"
		;;
	*)
		MIG_ERROR="unknown form '$form' (savevm or file)"
		return 1
		;;
	esac
	mig_step "quit (HMP)" mig_hmp "$mon" quit 30
}

# mig_rollback MONITOR CONTROL VNICCTL: after a failed mig_save, lets the
# card and the guest go on where they are (vnicctl resume, HMP cont).
mig_rollback() {
	local ok=0
	mig_vnicctl "$3" "$2" resume || { say "rollback: $MIG_ERROR"; ok=1; }
	mig_hmp_quiet "$1" cont 30 || { say "rollback: $MIG_ERROR"; ok=1; }
	return "$ok"
}

# mig_dest_config VNICCTL IN OUT DROP_VCT [A=B...]: the destination's
# configuration in OUT: IN with functions A and B swapped (vnicctl remap),
# and without any "vct" key if DROP_VCT is 1 (then the guest's driver or
# `vnicctl vct set` must give the card the VCT entries).
mig_dest_config() {
	local vnicctl=$1 in=$2 out=$3 drop=$4 tmp err rc=0
	shift 4
	tmp=$out.tmp
	if (($#)); then
		err=$(timeout 60 "$vnicctl" remap "$in" "$@" 2>&1 >"$tmp") || rc=$?
		if ((rc != 0)); then
			MIG_ERROR="vnicctl remap $in $* (status $rc): $err"
			return 1
		fi
	else
		cp "$in" "$tmp"
	fi
	if ((drop)); then
		if ! err=$(jq 'del(.. | .vct?)' "$tmp" 2>&1 >"$out"); then
			MIG_ERROR="jq (dropping the VCT entries): $err"
			return 1
		fi
		rm -f "$tmp"
	else
		mv "$tmp" "$out"
	fi
}

# mig_map_function FN [A=B...]: FN after swapping the functions of each
# pair, as vnicctl remap swaps their entries.
mig_map_function() {
	local fn=$1 pair
	shift
	for pair in "$@"; do
		if [[ $fn == "${pair%%=*}" ]]; then
			fn=${pair#*=}
		elif [[ $fn == "${pair#*=}" ]]; then
			fn=${pair%%=*}
		fi
	done
	printf '%s\n' "$fn"
}

# mig_resume MONITOR SECONDS [PID]: waits until the QEMU on MONITOR
# answers and has loaded its state (-loadvm or -incoming), and sends HMP
# cont if it is then paused. Fails early if process PID (the caller's QEMU)
# has exited. Sets MIG_T_RUN and MIG_STATUS ("running" in the end).
mig_resume() {
	local mon=$1 end=$((SECONDS + $2)) pid=${3:-} st=
	MIG_T_RUN=
	while :; do
		if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
			MIG_ERROR="QEMU (pid $pid) exited while loading its state"
			return 1
		fi
		if [[ -S $mon ]] && mig_status "$mon"; then
			st=$MIG_STATUS
			case $st in
			running) break ;;
			"paused (inmigrate)" | "paused (restore-vm)") ;;
			paused | "paused (postmigrate)" | "paused (prelaunch)")
				mig_hmp_quiet "$mon" cont 30 || return 1
				say "migration: QEMU came up '$st': sent cont"
				;;
			*)
				MIG_ERROR="QEMU is '$st' after loading its state"
				return 1
				;;
			esac
		fi
		if ((SECONDS >= end)); then
			MIG_ERROR="QEMU not running after $2 s (status '${st:-no answer}')"
			return 1
		fi
		sleep 0.1
	done
	MIG_T_RUN=$EPOCHREALTIME
	MIG_STATUS=running
}

# ------------------------------------------------------------ live migration
#
# A live migration to another QEMU (-incoming tcp:HOST:PORT) attached to
# another card. The card writes guest memory behind QEMU's back, so while
# QEMU copies memory the functions run in the card's migration mode: every
# write the card makes to guest memory goes through QEMU (vfio-user
# DMA_WRITE), which marks the page dirty. QEMU stops the vCPUs before the
# last pass (capability pause-before-switchover); then the card quiesces the
# function and ends the mode (vnicctl migrate switchover), the destination
# card gets the function's settings and VCT entry, and QEMU sends the rest.
#
# Optional settings, read by mig_live (set them before the call):
#   MIG_LIVE_MODE=1        vnicctl migrate begin/switchover; 0: no mode,
#                          only vnicctl quiesce at pre-switchover (the
#                          negative experiment: pages the card wrote after
#                          QEMU sent them arrive stale)
#   MIG_LIVE_DEST_CONTROL  the destination card's control socket: at
#                          pre-switchover each function's entry of the
#                          source's export (settings, MACs, VCT entry) is
#                          applied there (vnicctl apply), under the name
#                          MIG_LIVE_MAP gives it; empty: nothing is applied
#   MIG_LIVE_MAP=()        pairs SOURCE=DEST (vf0=vf2): the source's function
#                          SOURCE is the destination's DEST (default: the same
#                          name)
#   MIG_LIVE_CONFIG        where the source's export goes (default: none kept)
#   MIG_LIVE_PARAMS=()     HMP migrate_set_parameter NAME VALUE pairs, as
#                          "NAME VALUE" strings (e.g. "downtime-limit 500")
#   MIG_LIVE_EVERY=1       seconds between two progress lines while active
# MIG_LIVE_STOPPED says whether the card may have quiesced a function (then
# a rollback resumes it).
# Results: MIG_LIVE_STALE (1: a destination resumed from stale queue
# contexts), MIG_LIVE_TOTAL_MS and MIG_LIVE_DOWNTIME_MS (QEMU's "total" and
# "down"), MIG_LIVE_ACTIVE_S (seconds from migrate to pre-switchover).
MIG_LIVE_MODE=${MIG_LIVE_MODE:-1}
MIG_LIVE_DEST_CONTROL=${MIG_LIVE_DEST_CONTROL:-}
MIG_LIVE_CONFIG=${MIG_LIVE_CONFIG:-}
MIG_LIVE_EVERY=${MIG_LIVE_EVERY:-1}
# Compare the guest's RAM on both sides (mig_live_compare): the
# destination's monitor (its QEMU started with -S), the MiB to compare and
# where the dumps go.
MIG_LIVE_COMPARE_MON=${MIG_LIVE_COMPARE_MON:-}
MIG_LIVE_COMPARE_MIB=${MIG_LIVE_COMPARE_MIB:-0}
MIG_LIVE_COMPARE_DIR=${MIG_LIVE_COMPARE_DIR:-${TMPDIR:-/tmp}}
MIG_LIVE_PAGES_DIFFER=
MIG_LIVE_TOTAL_MS=
MIG_LIVE_DOWNTIME_MS=
MIG_LIVE_ACTIVE_S=
[[ -n ${MIG_LIVE_MAP+set} ]] || MIG_LIVE_MAP=()
[[ -n ${MIG_LIVE_PARAMS+set} ]] || MIG_LIVE_PARAMS=()

# mig_migrate_info SOCK: `info migrate` in MIG_OUT, its status in
# MIG_STATUS ("active", "pre-switchover", "completed", ...).
mig_migrate_info() {
	MIG_STATUS=
	mig_hmp "$1" 'info migrate' 10 || return 1
	MIG_STATUS=$(printf '%s\n' "$MIG_OUT" |
		sed -n -E 's/^(Migration s|S)tatus:[[:space:]]*//p')
}

# mig_migrate_field KEY: the value of KEY=VALUE in MIG_OUT's "Time (ms)"
# and "Transfers" lines (total, down, transferred, remain, dirty_syncs).
mig_migrate_field() {
	printf '%s\n' "$MIG_OUT" | tr ',\t' '\n ' |
		sed -n -E "s/^(.*[[:space:]])?$1=([^ ]+( [KMGT]?i?B)?).*$/\2/p" |
		head -n 1
}

# mig_fn_counters VNICCTL CONTROL FN: "tx_packets=N rx_packets=N" of
# function FN on the card (its function counters, not its vNICs').
mig_fn_counters() {
	timeout 10 "$1" --control "$2" stats "$3" 2>/dev/null |
		sed -n "/^$3: /,/^  vnic /{/^  vnic /!p}" | tr ' ' '\n' |
		grep -E '^(tx|rx)_packets=' | sort -r | tr '\n' ' ' | sed 's/ $//'
}

# mig_queue_packets VNICCTL CONTROL FN: "rx_packets=N tx_packets=N", FN's
# queue counters summed over its vNICs: the card keeps them in the queue
# contexts in guest memory, so a destination card continues them.
mig_queue_packets() {
	timeout 10 "$1" --control "$2" --json stats "$3" 2>/dev/null |
		jq -r '[.functions[0].vnics[].counters] |
			"rx_packets=\(map(.rx_packets) | add) tx_packets=\(map(.tx_packets) | add)"' 2>/dev/null
}

# mig_live_continuity VNICCTL FN BEFORE: waits (20 s at most) until FN's
# queues run on the destination card (MIG_LIVE_DEST_CONTROL, FN renamed
# by MIG_LIVE_MAP) and compares their counters with BEFORE, the source's at
# the switchover (mig_queue_packets). Counters that went back mean the
# destination resumed from queue contexts older than the source's last:
# pages the card wrote that QEMU did not send again (MIG_LIVE_STALE=1).
mig_live_continuity() {
	local vnicctl=$1 fn=$2 before=$3 dest after="" end=$((SECONDS + 20)) k a b
	dest=$(mig_dest_name "$fn")
	while ((SECONDS < end)); do
		after=$(mig_queue_packets "$vnicctl" "$MIG_LIVE_DEST_CONTROL" "$dest")
		[[ -z $after || $after == "rx_packets=0 tx_packets=0" ]] || break
		after=""
		sleep 0.1
	done
	if [[ -z $after ]]; then
		say "migration: $fn: its queues did not run on the destination card within 20 s"
		MIG_LIVE_STALE=1
		return
	fi
	for k in rx_packets tx_packets; do
		a=$(printf '%s\n' "$before" | tr ' ' '\n' | sed -n "s/^$k=//p")
		b=$(printf '%s\n' "$after" | tr ' ' '\n' | sed -n "s/^$k=//p")
		if ((${b:-0} < ${a:-0})); then
			MIG_LIVE_STALE=1
		fi
	done
	if ((MIG_LIVE_STALE)); then
		say "migration: $fn queue counters WENT BACK: source at switchover $before, destination ($dest) when it resumed $after: it resumed from stale queue contexts"
	else
		say "migration: $fn queue counters continue: source at switchover $before, destination ($dest) when it resumed $after"
	fi
}

# mig_dest_name FN: FN's name on the destination card (MIG_LIVE_MAP).
mig_dest_name() {
	local pair
	for pair in "${MIG_LIVE_MAP[@]+"${MIG_LIVE_MAP[@]}"}"; do
		[[ $1 == "${pair%%=*}" ]] && { printf '%s\n' "${pair#*=}"; return; }
	done
	printf '%s\n' "$1"
}

# mig_live_dest VNICCTL CONTROL FUNCTIONS...: exports the source card's
# configuration and applies the functions' entries (renamed by
# MIG_LIVE_MAP) to the destination card MIG_LIVE_DEST_CONTROL. An entry
# with a VCT entry stays pending there until the destination guest's
# driver restores the function (Bus Master Enable).
mig_live_dest() {
	local vnicctl=$1 control=$2 config fn sel=() names="" err rc=0
	shift 2
	config=${MIG_LIVE_CONFIG:-$(mktemp "${TMPDIR:-/tmp}/vnic-live.XXXXXX")}
	mig_export "$vnicctl" "$control" "$config" || return 1
	[[ -n $MIG_LIVE_DEST_CONTROL ]] || return 0
	for fn in "$@"; do
		sel+=(--arg "$fn" "$(mig_dest_name "$fn")")
		names+=${names:+,}\"$fn\"
	done
	if ! err=$(jq "${sel[@]}" "{functions: [.functions[] |
		select(.name as \$n | [$names] | index(\$n)) |
		.name = \$ARGS.named[.name]]}" "$config" 2>&1 >"$config.dest"); then
		MIG_ERROR="jq (the destination's entries): $err"
		return 1
	fi
	say "migration: to the destination card: $(jq -c '[.functions[] |
		{name, macs: [.vnics[].mac], vct}]' "$config.dest")"
	err=$(timeout 60 "$vnicctl" --control "$MIG_LIVE_DEST_CONTROL" \
		apply "$config.dest" 2>&1) || rc=$?
	rm -f "$config.dest"
	[[ -n $MIG_LIVE_CONFIG ]] || rm -f "$config"
	if ((rc != 0)); then
		MIG_ERROR="vnicctl apply on $MIG_LIVE_DEST_CONTROL (status $rc): $err"
		return 1
	fi
}

# mig_live_rollback MONITOR CONTROL VNICCTL FUNCTIONS...: after a live
# migration failed before migrate_continue: migrate_cancel, the card's
# mode ended (or, without it, the quiesce), and the guest runs on.
mig_live_rollback() {
	local mon=$1 control=$2 vnicctl=$3 fn ok=0
	shift 3
	mig_hmp "$mon" migrate_cancel 30 || { say "rollback: $MIG_ERROR"; ok=1; }
	for fn in "$@"; do
		if ((MIG_LIVE_MODE)); then
			mig_vnicctl "$vnicctl" "$control" migrate end "$fn" ||
				say "rollback: $MIG_ERROR"
		fi
		((MIG_LIVE_STOPPED == 0)) ||
			mig_vnicctl "$vnicctl" "$control" resume "$fn" ||
			{ say "rollback: $MIG_ERROR"; ok=1; }
	done
	# QEMU resumes the vCPUs itself when a migration is cancelled, except
	# from pre-switchover on some versions: make sure.
	if mig_status "$mon" && [[ $MIG_STATUS != running ]]; then
		mig_hmp_quiet "$mon" cont 30 || { say "rollback: $MIG_ERROR"; ok=1; }
	fi
	return "$ok"
}

# mig_live_compare SOURCE-MONITOR: after a completed migration, with the
# destination paused (-S) on MIG_LIVE_COMPARE_MON: both QEMUs write the
# guest's first MIG_LIVE_COMPARE_MIB MiB of RAM to files (HMP pmemsave) in
# MIG_LIVE_COMPARE_DIR, which are compared page by page. Sets
# MIG_LIVE_PAGES_DIFFER (and prints the first differing addresses); mig_live
# then sends cont to the destination. Any
# page the card wrote behind QEMU's back after QEMU had sent it differs:
# the source holds the card's write, the destination the old contents.
mig_live_compare() {
	local src=$1 bytes=$((MIG_LIVE_COMPARE_MIB << 20)) a b out
	a=$MIG_LIVE_COMPARE_DIR/ram-source.bin
	b=$MIG_LIVE_COMPARE_DIR/ram-destination.bin
	rm -f "$a" "$b"
	mig_hmp_quiet "$src" "pmemsave 0 $bytes \"$a\"" 120 || return 1
	mig_hmp_quiet "$MIG_LIVE_COMPARE_MON" "pmemsave 0 $bytes \"$b\"" 120 || return 1
	if ! out=$(python3 - "$a" "$b" <<'PY'
import sys
page = 4096
diff = []
with open(sys.argv[1], "rb") as a, open(sys.argv[2], "rb") as b:
    at = 0
    while True:
        x, y = a.read(1 << 20), b.read(1 << 20)
        if not x and not y:
            break
        if x != y:
            for o in range(0, max(len(x), len(y)), page):
                if x[o:o + page] != y[o:o + page]:
                    diff.append(at + o)
        at += 1 << 20
print(len(diff), at // page, " ".join(hex(d) for d in diff[:8]))
PY
	); then
		MIG_ERROR="comparing the guest's RAM: $out"
		return 1
	fi
	rm -f "$a" "$b"
	read -r MIG_LIVE_PAGES_DIFFER MIG_LIVE_PAGES_TOTAL MIG_LIVE_PAGES_FIRST <<<"$out"
	say "migration: guest RAM compared: $MIG_LIVE_PAGES_DIFFER of $MIG_LIVE_PAGES_TOTAL pages differ between source and destination${MIG_LIVE_PAGES_FIRST:+ (first: $MIG_LIVE_PAGES_FIRST)}"
}

# mig_live MONITOR CONTROL VNICCTL URI SECONDS FUNCTIONS...: the source
# steps of a live migration of the guest on MONITOR, whose functions
# FUNCTIONS are on the card CONTROL, to the QEMU listening at URI
# (tcp:HOST:PORT). SECONDS bounds the migration. Steps, each timed:
#   1. vnicctl migrate begin FN, for each FN (unless MIG_LIVE_MODE=0);
#   2. HMP migrate_set_capability pause-before-switchover on, the
#      MIG_LIVE_PARAMS, migrate -d URI;
#   3. info migrate polled until pre-switchover; every MIG_LIVE_EVERY
#      seconds while active, a progress line with QEMU's transfer and each
#      function's packet counters on the source card (the guest runs on);
#   4. vnicctl migrate switchover FN (MIG_LIVE_MODE=0: vnicctl quiesce
#      FN), and vnicctl migrate status FN;
#   5. the source's export, and the functions' entries applied to the
#      destination card (mig_live_dest);
#   6. HMP migrate_continue pre-switchover; info migrate polled until
#      completed; QEMU's total time and downtime printed;
#   7. HMP quit; then, with a destination card, each function's queue
#      counters there compared with the source's at the switchover
#      (mig_live_continuity: MIG_LIVE_STALE=1 if they went back).
# On a failure before step 6 it rolls back (mig_live_rollback): the guest
# runs on at the source. The caller waits for QEMU to exit.
mig_live() {
	local mon=$1 control=$2 vnicctl=$3 uri=$4 bound=$5
	shift 5
	local fn p t0 t_last=0 end st begun=() c line
	local -A first=()
	MIG_LIVE_TOTAL_MS=''
	MIG_LIVE_DOWNTIME_MS=''
	MIG_LIVE_ACTIVE_S=''
	MIG_LIVE_STOPPED=0
	MIG_LIVE_STALE=0
	local -A queues=()
	end=$((SECONDS + bound))
	if ((MIG_LIVE_MODE)); then
		for fn in "$@"; do
			if ! mig_step "migrate begin $fn (vnicctl migrate begin)" \
				mig_vnicctl "$vnicctl" "$control" migrate begin "$fn"; then
				local e=$MIG_ERROR
				mig_live_rollback "$mon" "$control" "$vnicctl" \
					"${begun[@]+"${begun[@]}"}" || true
				MIG_ERROR=$e
				return 1
			fi
			begun+=("$fn")
		done
	else
		say "migration: no migration mode (--no-mode): the card writes guest memory behind QEMU's back"
	fi
	for fn in "$@"; do
		first[$fn]=$(mig_fn_counters "$vnicctl" "$control" "$fn")
	done
	local setup=("migrate_set_capability pause-before-switchover on")
	for p in "${MIG_LIVE_PARAMS[@]+"${MIG_LIVE_PARAMS[@]}"}"; do
		setup+=("migrate_set_parameter $p")
	done
	for c in "${setup[@]}" "migrate -d $uri"; do
		if ! mig_hmp_quiet "$mon" "$c" 30; then
			local e=$MIG_ERROR
			mig_live_rollback "$mon" "$control" "$vnicctl" "$@" || true
			MIG_ERROR=$e
			return 1
		fi
	done
	t0=$EPOCHREALTIME
	say "migration: migrate -d $uri: started"
	while :; do
		if ! mig_migrate_info "$mon"; then
			st=$MIG_ERROR
			mig_live_rollback "$mon" "$control" "$vnicctl" "$@" || true
			MIG_ERROR="info migrate: $st"
			return 1
		fi
		st=$MIG_STATUS
		case $st in
		pre-switchover) break ;;
		setup | active | device) ;;
		*)
			mig_live_rollback "$mon" "$control" "$vnicctl" "$@" || true
			MIG_ERROR="migration $st before pre-switchover: $(printf '%s' "$MIG_OUT" | tr '\n' ' ')"
			return 1
			;;
		esac
		if ((SECONDS >= end)); then
			mig_live_rollback "$mon" "$control" "$vnicctl" "$@" || true
			MIG_ERROR="no pre-switchover after $bound s (status '$st'; QEMU did not converge)"
			return 1
		fi
		if [[ $st == active ]] &&
			awk -v a="$t_last" -v b="$EPOCHREALTIME" -v e="$MIG_LIVE_EVERY" \
				'BEGIN { exit !(b - a >= e) }'; then
			t_last=$EPOCHREALTIME
			line="migration: active $(mig_secs "$t0") s: transferred $(mig_migrate_field transferred), remain $(mig_migrate_field remain), dirty_syncs $(mig_migrate_field dirty_syncs)"
			for fn in "$@"; do
				line+="; $fn $(mig_fn_counters "$vnicctl" "$control" "$fn")"
			done
			say "$line"
		fi
		sleep 0.05
	done
	MIG_LIVE_ACTIVE_S=$(mig_secs "$t0")
	say "migration: pre-switchover after $MIG_LIVE_ACTIVE_S s (vCPUs stopped)"
	MIG_LIVE_STOPPED=1
	for fn in "$@"; do
		say "migration: $fn on the source card: ${first[$fn]} at migrate, $(mig_fn_counters "$vnicctl" "$control" "$fn") at pre-switchover"
		if ((MIG_LIVE_MODE)); then
			st=$(timeout 10 "$vnicctl" --control "$control" migrate status "$fn" 2>&1 |
				tr '\n' ' ') || true
			say "migration: migrate status $fn (pre-copy): $st"
			if ! mig_step "switchover $fn (vnicctl migrate switchover)" \
				mig_vnicctl "$vnicctl" "$control" migrate switchover "$fn" \
				--timeout 30; then
				local e=$MIG_ERROR
				mig_live_rollback "$mon" "$control" "$vnicctl" "$@" || true
				MIG_ERROR=$e
				return 1
			fi
			say "migration: switchover $fn: $(printf '%s' "$MIG_VNICCTL_OUT" | tr '\n' ' ')"
		else
			if ! mig_step "quiesce $fn (vnicctl quiesce)" \
				mig_vnicctl "$vnicctl" "$control" quiesce "$fn"; then
				local e=$MIG_ERROR
				mig_live_rollback "$mon" "$control" "$vnicctl" "$@" || true
				MIG_ERROR=$e
				return 1
			fi
		fi
	done
	for fn in "$@"; do
		queues[$fn]=$(mig_queue_packets "$vnicctl" "$control" "$fn")
	done
	if ! mig_step "export and destination card (vnicctl export, apply)" \
		mig_live_dest "$vnicctl" "$control" "$@"; then
		local e=$MIG_ERROR
		mig_live_rollback "$mon" "$control" "$vnicctl" "$@" || true
		MIG_ERROR=$e
		return 1
	fi
	mig_step "migrate_continue pre-switchover (HMP)" \
		mig_hmp_quiet "$mon" "migrate_continue pre-switchover" 30 || return 1
	while :; do
		mig_migrate_info "$mon" || return 1
		case $MIG_STATUS in
		completed) break ;;
		failed | cancelled | cancelling)
			MIG_ERROR="migration $MIG_STATUS after switchover: $(printf '%s' "$MIG_OUT" | tr '\n' ' ')"
			return 1
			;;
		esac
		if ((SECONDS >= end)); then
			MIG_ERROR="migration not completed after $bound s (status '$MIG_STATUS')"
			return 1
		fi
		sleep 0.05
	done
	MIG_LIVE_TOTAL_MS=$(mig_migrate_field total)
	MIG_LIVE_DOWNTIME_MS=$(mig_migrate_field down)
	say "migration: completed: total time $MIG_LIVE_TOTAL_MS ms, downtime $MIG_LIVE_DOWNTIME_MS ms (QEMU), transferred $(mig_migrate_field transferred), $(mig_migrate_field dirty_syncs) dirty syncs"
	if [[ -n ${MIG_LIVE_COMPARE_MON:-} ]]; then
		mig_step "guest RAM compared (pmemsave on both)" mig_live_compare "$mon" ||
			return 1
		mig_step "cont on the destination (HMP)" \
			mig_hmp_quiet "$MIG_LIVE_COMPARE_MON" cont 30 || return 1
	fi
	mig_step "quit (HMP)" mig_hmp "$mon" quit 30 || return 1
	if [[ -n $MIG_LIVE_DEST_CONTROL ]]; then
		for fn in "$@"; do
			mig_live_continuity "$vnicctl" "$fn" "${queues[$fn]}"
		done
	fi
}
