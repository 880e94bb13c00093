#!/bin/bash
# tests/e2e/vxlan-pf.sh - guest scenario: the VxLAN agent runs in the guest
# that has the PF, over the PF's exception queue pair (docs/vxlan.md, "The
# exception queue on the PF"), against Linux's own vxlan device.
#
# vnicd runs with --uplink tap:<TAP>; the test (tests/e2e/main.rs) has moved
# the TAP into a network namespace of its own (VNIC_NETNS) with the underlay
# address 10.1.0.2/24 and MAC VNIC_NS_MAC, a static neighbour for the card's
# VTEP (10.1.0.1) and a Linux vxlan device (VNI 100, remote 10.1.0.1) with
# 192.168.100.2/24. No agent runs on the host: the launcher put vnicctl in
# the guest (--add-bin).
#
# The guest has the PF and VF0 (VxLAN, VNI 100; vNIC 02:76:6e:00:01:00).
# vnic.ko gives the PF a second netdev for its exception queue pair
# (02:76:6e:00:00:01, IFF_NOARP); the scenario brings it up and starts
# `vnicctl vxlan-agent --pf-netdev <it> --fdb 00:00:00:00:00:00=10.1.0.2
# --neigh 10.1.0.2=<VNIC_NS_MAC>` in the background. VF0's vNIC, in
# namespace vx as 192.168.100.1/24, pings the namespace (the first frame, a
# broadcast ARP, is a MISS the agent answers; the ARP reply a PUNT), then
# asks the host to ping it from the namespace (host netns-ping). The card's
# counters (host vnicctl stats): exception_to_pf >= 1, exception_from_pf >=
# 2, vxlan_requests 1 or 2 (the first frame only). Then the agent is
# stopped (SIGTERM) and prints its summary (AGENT-SUMMARY).
# Prints "E2E-OK <check>" or "E2E-FAIL <check>: <detail>"; exits 1 if any
# check failed. Every wait is bounded.
#
# run-guest: --attach pf,vf0 --vfs 1 --mem 1024 --timeout 300 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 1

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
MAC_EXC=02:76:6e:00:00:01 # PF queue pair 1, the exception queue pair
MAC=02:76:6e:00:01:00     # VF0 (VxLAN, VNI 100) of card 0
IP=192.168.100.1
PEER=192.168.100.2
NS_VTEP=10.1.0.2
PEER_WAIT_SECONDS=60
AGENT_LOG=/tmp/agent.log
AGENT_OUT=/tmp/agent.out
AGENT_PID=

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh
# shellcheck disable=SC1091 # written by the launcher
. /etc/vnic-run.env

card_counter() {
	printf '%s\n' "$HOST_OUT" | grep -o "$1=[0-9]*" | head -n 1 | cut -d= -f2
}
agent_ready() { grep -q 'vxlan-agent: ready' "$AGENT_LOG"; }
agent_gone() { ! kill -0 "$AGENT_PID" 2>/dev/null; }
agent_counter() {
	local v
	v=$(grep -o " $1=[0-9]*" "$AGENT_OUT" | head -n 1 | cut -d= -f2)
	echo "${v:--1}"
}

# stop_agent: SIGTERM to the agent this scenario started (by its PID), up
# to 10 s, then SIGKILL; prints its summary and decisions.
stop_agent() {
	[[ -n $AGENT_PID ]] || return 0
	kill -TERM "$AGENT_PID" 2>/dev/null
	if ! wait_for 10 agent_gone; then
		fail "the agent exits on SIGTERM"
		kill -KILL "$AGENT_PID" 2>/dev/null
	fi
	wait "$AGENT_PID"
	AGENT_RC=$?
	AGENT_PID=
	echo "AGENT-SUMMARY $(grep 'summary:' "$AGENT_OUT")"
	sed 's/^/  [agent] /' "$AGENT_LOG"
}

finish() {
	step "teardown"
	stop_agent
	[[ -n ${EXC:-} ]] && ip link set "$EXC" down
	drop_namespaces vx
	unload_and_check_kernel
	summary vxlan-pf
}

[[ -n ${VNIC_NETNS:-} ]] || abort "VNIC_NETNS" "the test gave no namespace (--env)"
[[ -n ${VNIC_NS_MAC:-} ]] || abort "VNIC_NS_MAC" "the test gave no TAP MAC (--env)"
if ver=$(vnicctl --version 2>&1); then
	ok "vnicctl runs in the guest: $ver"
else
	abort "vnicctl in the guest" "$ver (--add-bin)"
fi

step "insmod $MODULE"
for d in all default; do
	[[ -e /proc/sys/net/ipv6/conf/$d/disable_ipv6 ]] &&
		echo 1 >"/proc/sys/net/ipv6/conf/$d/disable_ipv6"
done
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
netdev_for EXC "$MAC_EXC"
netdev_for DEV "$MAC"
ok "exception netdev $MAC_EXC is $EXC, VxLAN vNIC $MAC is $DEV"
if dmesg | grep -q "exception queue pair 1: $EXC\$"; then
	ok "vnic.ko logged 'exception queue pair 1: $EXC'"
else
	fail "vnic.ko logged 'exception queue pair 1: $EXC': $(dmesg | grep -i exception)"
fi
ip -d link show dev "$EXC" | sed 's/^/  /'
if ip -o link show dev "$EXC" | grep -q 'NOARP'; then
	ok "$EXC has IFF_NOARP"
else
	fail "$EXC has IFF_NOARP"
fi

step "agent on $EXC"
no_ipv6 "$EXC"
ip link set "$EXC" up || abort "link up" "ip link set $EXC up failed"
vnicctl vxlan-agent --pf-netdev "$EXC" --fdb "00:00:00:00:00:00=$NS_VTEP" \
	--neigh "$NS_VTEP=$VNIC_NS_MAC" >"$AGENT_OUT" 2>"$AGENT_LOG" </dev/null &
AGENT_PID=$!
if wait_for 10 agent_ready; then
	ok "vnicctl vxlan-agent --pf-netdev $EXC: $(grep 'ready' "$AGENT_LOG")"
else
	abort "agent ready" "$(cat "$AGENT_LOG")"
fi

step "VF0's vNIC $DEV in namespace vx as $IP/24"
# A new namespace starts with IPv6 on (it does not inherit the root
# namespace's setting): off before the vNIC comes up there, or its MLD
# reports would be misses too.
ip netns add vx
for d in all default; do
	ip netns exec vx sysctl -qw "net.ipv6.conf.$d.disable_ipv6=1"
done
in_ns vx "$DEV" "$IP"
if wait_for 10 carrier vx "$DEV"; then ok "carrier up on $DEV"; else fail "carrier up on $DEV"; fi

step "guest -> Linux vxlan ($PEER), up to $PEER_WAIT_SECONDS s"
t0=$(now_ms)
if wait_for "$PEER_WAIT_SECONDS" ip netns exec vx ping -c 1 -W 1 "$PEER"; then
	ok "Linux's vxlan device answers ping after $((($(now_ms) - t0) / 1000)) s"
else
	abort "Linux's vxlan device answers ping" "no reply from $PEER in $PEER_WAIT_SECONDS s"
fi
ping_from vx "$PEER" 5
if ((RECEIVED == 5)); then
	ok "ping $IP -> $PEER (guest to namespace): 5/5"
else
	fail "ping $IP -> $PEER (guest to namespace): $RECEIVED/5"
fi

step "namespace $VNIC_NETNS -> guest ($IP), run by the host"
netns_ping_check "$VNIC_NETNS" "$IP" 5 "ping $PEER -> $IP (namespace to guest)"

step "the card's counters"
if host vnicctl stats >/dev/null; then
	for c in exception_to_pf exception_from_pf exception_lost exception_refused \
		exception_ignored vxlan_requests vxlan_punts vxlan_encapsulated \
		vxlan_decapsulated vxlan_send_misses uplink_tx_frames uplink_rx_frames; do
		echo "  card $c=$(card_counter $c)"
	done
	to_pf=$(card_counter exception_to_pf)
	from_pf=$(card_counter exception_from_pf)
	requests=$(card_counter vxlan_requests)
	if ((${to_pf:-0} >= 1)); then
		ok "the card wrote requests to the exception queue (exception_to_pf $to_pf)"
	else
		fail "exception_to_pf '$to_pf', want at least 1"
	fi
	if ((${from_pf:-0} >= 2)); then
		ok "the card took the agent's messages (exception_from_pf $from_pf)"
	else
		fail "exception_from_pf '$from_pf', want at least 2"
	fi
	if ((${requests:-0} >= 1 && ${requests:-0} <= 2)); then
		ok "vxlan_requests $requests: the first frame only"
	else
		fail "vxlan_requests '$requests', want 1 or 2"
	fi
else
	fail "host vnicctl stats"
fi
ethtool -S "$EXC" | grep -E '^ +(tx|rx)_(packets|drops):' | sed "s/^ */  [$EXC] /"

step "stop the agent"
stop_agent
if ((AGENT_RC == 0)); then ok "the agent exited 0 on SIGTERM"; else fail "agent exit status $AGENT_RC"; fi
if (($(agent_counter requests) >= 1 && $(agent_counter punts) >= 1 &&
	$(agent_counter drops) == 0)); then
	ok "the agent answered a miss and a punt, dropped nothing"
else
	fail "agent summary: $(cat "$AGENT_OUT")"
fi

finish
