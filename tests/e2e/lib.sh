#!/bin/bash
# tests/e2e/lib.sh - helpers shared by the guest scenarios: checks, waits,
# netdevs by MAC, and "host vnicctl ..." over the host channel. A scenario
# gets it into the guest with "--add tests/e2e/lib.sh:/etc/vnic-e2e.sh" in its
# "# run-guest:" header and sources /etc/vnic-e2e.sh.

# Checks: "E2E-OK <check>" or "E2E-FAIL <check>: <detail>"; a scenario exits
# 1 if FAILS is not 0 at the end.
FAILS=0
ok() { echo "E2E-OK $*"; }
fail() { echo "E2E-FAIL $*"; FAILS=$((FAILS + 1)); }
step() { echo "=== $*"; }

# Milliseconds since boot.
now_ms() {
	local up
	read -r up _ </proc/uptime
	echo $((${up%.*} * 1000 + 10#${up#*.} * 10))
}

# wait_for SECONDS CMD...: true as soon as CMD succeeds (polled every
# 0.2 s), false if it has not within SECONDS.
wait_for() {
	local end=$(($(now_ms) + $1 * 1000))
	shift
	until "$@" >/dev/null 2>&1; do
		(($(now_ms) >= end)) && return 1
		sleep 0.2
	done
}

# Name of the netdev (in this namespace) with MAC $1.
dev_by_mac() {
	local d
	for d in /sys/class/net/*; do
		if [[ $(cat "$d/address" 2>/dev/null) == "$1" ]]; then
			echo "${d##*/}"
			return 0
		fi
	done
	return 1
}

# in_ns NS DEV IP: creates namespace NS, moves DEV there with IP/24, up.
in_ns() {
	ip netns add "$1" 2>/dev/null
	ip link set "$2" netns "$1"
	ip -n "$1" addr add "$3/24" dev "$2"
	ip -n "$1" link set "$2" up
	ip -n "$1" link set lo up
}

# carrier NS DEV: DEV is up with carrier in namespace NS.
carrier() { ip -n "$1" -o link show dev "$2" | grep -q 'LOWER_UP'; }

# listening NS PORT: a TCP socket listens on PORT in namespace NS.
listening() { ip netns exec "$1" ss -Hltn | grep -q ":$2 "; }

# The same in the root namespace, for scenarios without namespaces:
# link_up DEV (carrier), tcp_listening PORT, answers IP (one ping).
link_up() { ip -o link show dev "$1" | grep -q 'LOWER_UP'; }
tcp_listening() { ss -Hltn | grep -q ":$1 "; }
answers() { ping -c 1 -W 1 "$1" >/dev/null 2>&1; }

# ping_from NS DST COUNT: pings, prints the summary lines; sets RECEIVED.
ping_from() {
	local out
	out=$(ip netns exec "$1" ping -c "$3" -i 0.2 -W 1 -w $(($3 + 4)) "$2" 2>&1)
	printf '%s\n' "$out" | grep -E 'packets transmitted|round-trip' |
		sed "s/^/  [ns $1 -> $2] /"
	RECEIVED=$(printf '%s\n' "$out" |
		sed -n 's/.* \([0-9][0-9]*\) packets received.*/\1/p')
	RECEIVED=${RECEIVED:-0}
}

# drop_namespaces NS...: moves every netdev of the namespaces back to the
# root namespace, then deletes them.
drop_namespaces() {
	local ns d
	for ns in "$@"; do
		for d in $(ip netns exec "$ns" ls /sys/class/net 2>/dev/null); do
			[[ $d == lo ]] || ip -n "$ns" link set "$d" netns 1
		done
		ip netns del "$ns" 2>/dev/null
	done
}

# unload_and_check_kernel: rmmod vnic (bounded), the module and its
# netdevs gone, no kernel oops, BUG or WARNING.
unload_and_check_kernel() {
	if timeout 60 rmmod vnic; then
		ok "rmmod vnic"
	else
		fail "rmmod vnic: failed or timed out"
	fi
	if grep -q '^vnic ' /proc/modules; then
		fail "vnic gone from /proc/modules: still loaded"
	fi
	local left
	left=$(cat /sys/class/net/*/address | grep -c '^02:76:6e:')
	if ((left == 0)); then
		ok "no vnic netdevs left"
	else
		fail "no vnic netdevs left: $left remain"
	fi
	step "dmesg | grep -i vnic (last 30)"
	dmesg | grep -i vnic | tail -n 30
	if dmesg | grep -Eq 'BUG:|Oops|WARNING: CPU|Call Trace'; then
		fail "no kernel oops, BUG or WARNING"
		dmesg | grep -E -A 20 'BUG:|Oops|WARNING: CPU' | head -n 60
	else
		ok "no kernel oops, BUG or WARNING"
	fi
}

# abort CHECK DETAIL: a failure that makes the remaining checks pointless;
# ends through the scenario's own finish().
abort() {
	fail "$1: $2 (remaining checks skipped)"
	finish
}

# netdev_for VAR MAC: waits (10 s) for the netdev with MAC and puts its
# name in VAR; aborts the scenario if none appears.
netdev_for() {
	local dev
	wait_for 10 dev_by_mac "$2"
	dev=$(dev_by_mac "$2") ||
		abort "vNIC $2" "no netdev: $(ip -br link | tr '\n' ';')"
	printf -v "$1" '%s' "$dev"
}

# no_ipv6 DEV: IPv6 off on DEV and by default (no router solicitations or
# MLD reports, which would be extra frames on the wire).
no_ipv6() {
	local d
	for d in all default "$1"; do
		[[ -e /proc/sys/net/ipv6/conf/$d/disable_ipv6 ]] &&
			echo 1 >"/proc/sys/net/ipv6/conf/$d/disable_ipv6"
	done
	return 0
}

# retry_connect SECONDS LOG CMD...: runs CMD (stderr to LOG) again while it
# fails because nothing listens yet, up to SECONDS; returns CMD's status.
retry_connect() {
	local end=$(($(now_ms) + $1 * 1000)) log=$2 rc
	shift 2
	while :; do
		"$@" 2>"$log"
		rc=$?
		((rc == 0)) && return 0
		grep -Eqi "can't connect|connection refused|unable to connect" "$log" ||
			return "$rc"
		(($(now_ms) >= end)) && return "$rc"
		sleep 1
	done
}

# netns_ping_check NS IP COUNT WHAT: has the host ping IP COUNT times from
# its namespace NS (host netns-ping, below); the check WHAT passes if every
# ping was answered.
netns_ping_check() {
	local rc
	host netns-ping "$1" "$2" "$3"
	rc=$?
	if ((rc == 0)) && [[ $HOST_OUT == *" $3 received"* ]]; then
		ok "$4: $3/$3"
	else
		fail "$4: rc $rc"
	fi
}

# summary NAME: exits 0 if no check failed, 1 otherwise.
summary() {
	if ((FAILS == 0)); then
		echo "$1: all checks passed"
		exit 0
	fi
	echo "$1: $FAILS check(s) failed"
	exit 1
}

# ------------------------------------------------------------ host channel

# The host channel: /dev/ttyS1, joined by qemu/run-guest.sh --host-channel to
# a server on the host (vnic_tests::e2e::run_scenario_with_host). One request
# line "HOST-RUN vnicctl ARG ...", "HOST-RUN netns-ping NS IP COUNT" or
# "HOST-RUN qmp device_add|device_del ..." (words separated by single spaces);
# the answer is one "HOST-OUT <line>" per line of the command's output (stdout
# and stderr), then "HOST-END <rc>".
HOST_TIMEOUT=${HOST_TIMEOUT:-60}
HOST_FD=
HOST_OUT=

# host_open: opens the channel once and makes it raw (no echo, no line
# editing, no CR/LF translation), so lines pass unchanged both ways.
host_open() {
	[[ -n $HOST_FD ]] && return 0
	local tty=${VNIC_HOST_CHANNEL:-}
	[[ -n $tty ]] || tty=$(sed -n 's/^VNIC_HOST_CHANNEL=//p' /etc/vnic-run.env 2>/dev/null)
	if [[ -z $tty || ! -c $tty ]]; then
		echo "host: no host channel (run-guest.sh --host-channel, run_scenario_with_host)"
		return 1
	fi
	exec {HOST_FD}<>"$tty" || return 1
	if ! stty raw -echo <&"$HOST_FD"; then
		echo "host: stty raw -echo on $tty failed"
		return 1
	fi
}

# host vnicctl ARG...: runs vnicctl ARG... on the host against this guest's
# vnicd (the host adds --control) and waits for it. Prints its output lines
# as "host: <line>", keeps them (unprefixed) in HOST_OUT, and returns its
# exit status; 124 when no answer came within HOST_TIMEOUT seconds, 2 for a
# request the channel cannot carry (another command, an empty argument or
# one with blanks), 125 without a channel.
# host netns-ping NS IP COUNT: the host pings IP COUNT times from network
# namespace NS, if the test made NS and allowed it (127 otherwise);
# output and status as above.
# host qmp device_add FUNCTION ROOT-PORT: the host hot-adds FUNCTION of this
# guest's card (pf, vf1, ...) to this guest's QEMU, on root port ROOT-PORT
# (rp1 ... of the launcher's --root-ports); answers once QEMU has added it.
# host qmp device_del FUNCTION: the host removes it and answers once QEMU
# reports DEVICE_DELETED; refused (127) unless the test allowed it
# (VNIC_HOTUNPLUG=1 in /etc/vnic-run.env): QEMU 11.1.3 aborts on it
# (docs/guest-environment.md, "Hotplug"). Served by
# vnic_tests::e2e::run_scenario_with_hotplug; 1 if QEMU refused.
host() {
	local IFS=' ' a line rc='' end left
	HOST_OUT=
	case ${1:-} in
	vnicctl | netns-ping | qmp) ;;
	*)
		echo "host: only 'host vnicctl ARG...', 'host netns-ping NS IP COUNT' and 'host qmp ...' are served, not '$*'"
		return 2
		;;
	esac
	for a in "$@"; do
		if [[ -z $a || $a == *[[:space:]]* ]]; then
			echo "host: arguments must be words without blanks: '$a'"
			return 2
		fi
	done
	host_open || return 125
	# An answer that came after its request timed out is not this one's.
	while IFS= read -r -t 0.1 line <&"$HOST_FD"; do
		echo "host: (late answer dropped) $line"
	done
	echo "host\$ $*"
	printf 'HOST-RUN %s\n' "$*" >&"$HOST_FD"
	# No command substitution until the answer is in: bash reads a tty
	# in chunks into one buffer for every fd, and a forked subshell (such
	# as $(now_ms)) would read the rest of the answer from that buffer
	# instead of its own file. SECONDS needs no fork.
	end=$((SECONDS + HOST_TIMEOUT))
	while :; do
		left=$((end - SECONDS))
		if ((left <= 0)) || ! IFS= read -r -t "$left" line <&"$HOST_FD"; then
			echo "host: no answer to '$*' within $HOST_TIMEOUT s"
			return 124
		fi
		line=${line%$'\r'}
		case $line in
		"HOST-END "*)
			rc=${line#HOST-END }
			break
			;;
		"HOST-OUT "*)
			line=${line#HOST-OUT }
			HOST_OUT+=$line$'\n'
			echo "host: $line"
			;;
		*) echo "host: (unexpected line) $line" ;;
		esac
	done
	[[ $rc =~ ^[0-9]+$ ]] || rc=125
	return "$rc"
}
