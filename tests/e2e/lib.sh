#!/bin/bash
# tests/e2e/lib.sh - helpers shared by the data-path guest scenarios. A
# scenario gets it into the guest with "--add tests/e2e/lib.sh:/etc/vnic-e2e.sh"
# in its "# run-guest:" header and sources /etc/vnic-e2e.sh.

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
