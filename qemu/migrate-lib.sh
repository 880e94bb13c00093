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
# messages in MIG_ERROR on failure (bounded by 60 s).
mig_vnicctl() {
	local vnicctl=$1 control=$2 out rc=0
	shift 2
	out=$(timeout 60 "$vnicctl" --control "$control" "$@" 2>&1) || rc=$?
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
