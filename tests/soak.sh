#!/usr/bin/env bash
# tests/soak.sh - soak test: two guests, four vNICs, mixed traffic for
# minutes while the host changes vNIC counts and rate policies (issue 8).
# Not part of tests/run.sh (it takes as long as you ask, plus ~3 minutes).
#
# Usage: tests/soak.sh [--minutes M]   (default 10)
#
# One vnicd (4 VFs, 2 vNICs each); guest A gets VF0 and VF1, guest B VF2
# and VF3, each running tests/soak/guest.sh (what they send is described
# there). Meanwhile this script, every 15 s, flips VF1's and VF3's vNIC
# counts between 2 and 3 (the guests' drivers add and remove a netdev) and
# VF0's and VF2's TX rate policies between 200 Mbit/s and none, and samples
# vnicd's resident memory.
#
# Checks, each printed as "SOAK-OK ..." or "SOAK-FAIL ...":
#   - both guests' checks passed: no echoed file came back different, every
#     echo round and iperf3 run completed, clean driver unload;
#   - counters add up: for each guest's accounting flow (UDP n0 -> n1, the
#     receiving VF limited to 20 Mbit/s), frames sent = received + the
#     card's drops (the receiving VF's rx_drops, rx_rate_drops and
#     link_drops between the guest's BEGIN and END lines) + the drops the
#     guest's netdevs counted;
#   - vnicd's RSS stays flat: the last sample is within max(1 MiB, 5 %) of
#     the first one taken after both guests started their traffic;
#   - vnicd is still running at the end and exits 0 on SIGTERM.
# Logs: target/soak-logs/ (consoles, vnicd's log, the RSS samples).
# Exit status: 0 if every check passed, 1 otherwise, 2 on a usage error.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=10
while (($#)); do
	case $1 in
	--minutes) MINUTES=${2:?--minutes M}; shift ;;
	-h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "soak.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
if ! [[ $MINUTES =~ ^[0-9]+$ ]] || ((MINUTES == 0)); then
	echo "soak.sh: --minutes wants a positive number" >&2
	exit 2
fi
SECONDS_SOAK=$((MINUTES * 60))
# Boot, peer wait, accounting and teardown on top of the traffic.
GUEST_TIMEOUT=$((SECONDS_SOAK + 600))
CHANGE_EVERY=15
RX_LIMIT=20M
RSS_SLACK_KIB=1024

LOGS=target/soak-logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
FAILS=0
ok() { echo "SOAK-OK $*"; }
fail() { echo "SOAK-FAIL $*"; FAILS=$((FAILS + 1)); }

qemu/setup.sh >"$LOGS/setup.log" 2>&1 || { cat "$LOGS/setup.log"; exit 1; }
cargo build --quiet --bin vnicd --bin vnicctl
make -s -C guest-driver >/dev/null

SOCK=$(mktemp -d /tmp/vnic-soak.XXXXXX)
CTL=(target/debug/vnicctl --control "$SOCK/control.sock")
PIDS=()
VNICD=
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
	local p
	for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; done
	[[ -n $VNICD ]] && kill "$VNICD" 2>/dev/null
	rm -rf "$SOCK"
}
trap cleanup EXIT

target/debug/vnicd --socket-dir "$SOCK" --vfs 4 --vnics-per-vf 2 \
	>"$LOGS/vnicd.out" 2>"$LOGS/vnicd.log" &
VNICD=$!
for _ in $(seq 100); do
	grep -q 'vnicd: ready' "$LOGS/vnicd.out" && break
	sleep 0.1
done
grep -q 'vnicd: ready' "$LOGS/vnicd.out" || { echo "vnicd did not start"; cat "$LOGS/vnicd.log"; exit 1; }

start_guest() { # ROLE ATTACH
	qemu/run-guest.sh --no-vnicd --socket-dir "$SOCK" --attach "$2" --vfs 4 \
		--mem 768 --quiet --timeout "$GUEST_TIMEOUT" --log "$LOGS/guest-$1.log" \
		--add tests/e2e/lib.sh:/etc/vnic-e2e.sh --scenario tests/soak/guest.sh \
		--env "SOAK_ROLE=$1" --env "SOAK_SECONDS=$SECONDS_SOAK" \
		>"$LOGS/guest-$1.run.log" 2>&1 &
	PIDS+=($!)
}
start_guest a vf0,vf1
start_guest b vf2,vf3
GUEST_A=${PIDS[0]} GUEST_B=${PIDS[1]}

# rss_kib: vnicd's own resident memory (RssAnon: heap and stacks). VmRSS
# also counts the guests' RAM that vnicd has mapped and touched by DMA
# (RssShmem), which grows with every page the guests hand the card.
rss_kib() { awk '/^RssAnon:/ { print $2 }' "/proc/$VNICD/status"; }
vm_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$VNICD/status"; }
# fn_stat FUNCTION NAME: one of the function's counters.
fn_stat() { "${CTL[@]}" --json stats "$1" | jq -r --arg n "$2" '.functions[0].counters[$n] // empty'; }
# card_drops RECEIVER: the card's drops of frames for RECEIVER (drops on
# the sending side show in the sending guest's tx_dropped).
card_drops() {
	echo $(($(fn_stat "$1" rx_drops) + $(fn_stat "$1" rx_rate_drops) +
		$(fn_stat "$1" link_drops)))
}
running() { kill -0 "$1" 2>/dev/null; }
seen() { grep -aq "$2" "$LOGS/guest-$1.log" 2>/dev/null; }

declare -A SENDER=([a]=vf0 [b]=vf2) RECEIVER=([a]=vf1 [b]=vf3) BEFORE=() AFTER=()
declare -A BEGUN=() ENDED=()
RSS_FIRST='' RSS_LAST='' tick=0 flip=0
echo "soak: $MINUTES min of traffic; logs in $LOGS"
while running "$GUEST_A" || running "$GUEST_B"; do
	for r in a b; do
		if [[ -z ${BEGUN[$r]:-} ]] && seen "$r" "SOAK-ACCOUNT-BEGIN $r"; then
			"${CTL[@]}" rate "${RECEIVER[$r]}" rx --avg "$RX_LIMIT" --burst 32K >/dev/null
			BEFORE[$r]=$(card_drops "${RECEIVER[$r]}")
			BEGUN[$r]=1
		fi
		if [[ -z ${ENDED[$r]:-} ]] && seen "$r" "SOAK-ACCOUNT-END $r"; then
			AFTER[$r]=$(card_drops "${RECEIVER[$r]}")
			"${CTL[@]}" rate "${RECEIVER[$r]}" rx --clear >/dev/null
			ENDED[$r]=1
		fi
	done
	if ((tick % (CHANGE_EVERY * 2) == 0)) && seen a SOAK-START && seen b SOAK-START &&
		! seen a SOAK-TRAFFIC-END && ! seen b SOAK-TRAFFIC-END; then
		flip=$((1 - flip))
		for f in vf1 vf3; do "${CTL[@]}" vnics "$f" $((2 + flip)) >/dev/null || fail "vnicctl vnics $f"; done
		for f in vf0 vf2; do
			if ((flip)); then
				"${CTL[@]}" rate "$f" tx --avg 200M --burst 256K >/dev/null || fail "vnicctl rate $f"
			else
				"${CTL[@]}" rate "$f" tx --clear >/dev/null || fail "vnicctl rate $f --clear"
			fi
		done
		RSS_LAST=$(rss_kib)
		RSS_FIRST=${RSS_FIRST:-$RSS_LAST}
		echo "$(date +%T) rss_anon_kib=$RSS_LAST vm_rss_kib=$(vm_rss_kib) vnics=$((2 + flip))" >>"$LOGS/rss.log"
	fi
	if ! running "$VNICD"; then
		fail "vnicd died during the soak"
		break
	fi
	tick=$((tick + 1))
	sleep 0.5
done
for r in a b; do "${CTL[@]}" rate "${SENDER[$r]}" tx --clear >/dev/null 2>&1 || true; done

# ------------------------------------------------------------ verdict

for i in 0 1; do
	r=$([[ $i == 0 ]] && echo a || echo b)
	if wait "${PIDS[$i]}"; then
		ok "guest $r: every check passed"
	else
		fail "guest $r: checks failed (status $?; $LOGS/guest-$r.log)"
		grep -a 'E2E-FAIL\|SOAK-CORRUPT\|SOAK-LOST' "$LOGS/guest-$r.log" | head -n 20 || true
	fi
	grep -a 'SOAK-TRAFFIC-END\|SOAK-IPERF' "$LOGS/guest-$r.log" || true
	if grep -aq 'SOAK-IPERF runs=[1-9][0-9]* failed=0' "$LOGS/guest-$r.log"; then
		ok "guest $r: every iperf3 run completed"
	else
		fail "guest $r: iperf3 runs failed or none ran"
	fi
	line=$(grep -a -o "SOAK-ACCOUNT-END $r .*" "$LOGS/guest-$r.log" | tr -d '\r' || true)
	if [[ -z $line || -z ${BEFORE[$r]:-} || -z ${AFTER[$r]:-} ]]; then
		fail "guest $r: no accounting flow seen"
		continue
	fi
	sent=$(sed -n 's/.* sent=\([0-9]*\).*/\1/p' <<<"$line")
	received=$(sed -n 's/.* received=\([0-9]*\).*/\1/p' <<<"$line")
	guest=$(sed -n 's/.* guest_drops=\([0-9]*\).*/\1/p' <<<"$line")
	card=$((AFTER[$r] - BEFORE[$r]))
	what="guest $r: sent $sent = received $received + card drops $card + guest drops $guest"
	if ((sent > 0 && sent == received + card + guest)); then ok "$what"; else fail "$what"; fi
done

if [[ -n $RSS_FIRST ]]; then
	slack=$((RSS_FIRST / 20 > RSS_SLACK_KIB ? RSS_FIRST / 20 : RSS_SLACK_KIB))
	what="vnicd RssAnon $RSS_FIRST KiB -> $RSS_LAST KiB ($(wc -l <"$LOGS/rss.log") samples, slack $slack KiB)"
	if ((RSS_LAST <= RSS_FIRST + slack)); then ok "$what"; else fail "$what"; fi
else
	fail "no RSS sample (the guests never started their traffic)"
fi

if running "$VNICD"; then
	kill "$VNICD"
	if wait "$VNICD"; then ok "vnicd exited 0 on SIGTERM"; else fail "vnicd exit status $? on SIGTERM"; fi
	VNICD=
fi
if ((FAILS == 0)); then
	echo "soak: all checks passed ($MINUTES min)"
	exit 0
fi
echo "soak: $FAILS check(s) failed; logs in $LOGS"
exit 1
