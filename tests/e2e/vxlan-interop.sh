#!/bin/bash
# tests/e2e/vxlan-interop.sh - guest scenario: the card's VxLAN against
# Linux's own vxlan device. vnicd runs with --uplink tap:<TAP>; the test
# (tests/e2e/main.rs) has moved the TAP into a network namespace of its own
# (named in VNIC_NETNS) with the underlay address 10.1.0.2/24, a static
# neighbour for the card's VTEP (10.1.0.1) and a Linux vxlan device (VNI
# 100, port 4789, remote 10.1.0.1) with 192.168.100.2/24; a host agent
# resolves the first frames (--fdb 00:00:00:00:00:00=10.1.0.2 --neigh
# 10.1.0.2=<TAP MAC>).
#
# The guest has VF0 (VxLAN, VNI 100; vNIC 02:76:6e:00:01:00) as
# 192.168.100.1/24, IPv6 off. It pings the namespace (ARP through the
# agent, then the card alone), then asks the host to ping it back from the
# namespace (host netns-ping "$VNIC_NETNS" 192.168.100.1 5), and prints the
# card's VxLAN counters.
# Prints "E2E-OK <check>" or "E2E-FAIL <check>: <detail>"; exits 1 if any
# check failed. Every wait is bounded.
#
# run-guest: --attach vf0 --vfs 1 --mem 512 --timeout 300 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 1

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
MAC=02:76:6e:00:01:00 # VF0 (VxLAN, VNI 100) of card 0
IP=192.168.100.1
PEER=192.168.100.2
PEER_WAIT_SECONDS=60

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh
# shellcheck disable=SC1091 # written by the launcher
. /etc/vnic-run.env

carrier() { ip -o link show dev "$1" | grep -q 'LOWER_UP'; }
card_counter() {
	printf '%s\n' "$HOST_OUT" | grep -o "$1=[0-9]*" | head -n 1 | cut -d= -f2
}

finish() {
	step "teardown"
	[[ -n ${DEV:-} ]] && ip link set "$DEV" down
	unload_and_check_kernel
	summary vxlan-interop
}

[[ -n ${VNIC_NETNS:-} ]] || abort "VNIC_NETNS" "the test gave no namespace (--env)"

step "insmod $MODULE"
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
netdev_for DEV "$MAC"
ok "VxLAN vNIC $MAC is $DEV"
for d in all default "$DEV"; do
	[[ -e /proc/sys/net/ipv6/conf/$d/disable_ipv6 ]] &&
		echo 1 >"/proc/sys/net/ipv6/conf/$d/disable_ipv6"
done

step "address $IP/24 on $DEV"
ip addr add "$IP/24" dev "$DEV"
ip link set "$DEV" up || abort "link up" "ip link set $DEV up failed"
if wait_for 10 carrier "$DEV"; then ok "carrier up on $DEV"; else fail "carrier up on $DEV"; fi

step "guest -> Linux vxlan ($PEER), up to $PEER_WAIT_SECONDS s"
t0=$(now_ms)
if wait_for "$PEER_WAIT_SECONDS" ping -c 1 -W 1 "$PEER"; then
	ok "Linux's vxlan device answers ping after $((($(now_ms) - t0) / 1000)) s"
else
	abort "Linux's vxlan device answers ping" "no reply from $PEER in $PEER_WAIT_SECONDS s"
fi
out=$(ping -c 5 -i 0.2 -W 1 -w 9 "$PEER" 2>&1)
printf '%s\n' "$out" | grep -E 'packets transmitted|round-trip' | sed "s/^/  [ping $PEER] /"
if printf '%s\n' "$out" | grep -q ' 5 packets received'; then
	ok "ping $IP -> $PEER (guest to namespace): 5/5"
else
	fail "ping $IP -> $PEER (guest to namespace): $(printf '%s\n' "$out" | grep transmitted)"
fi

step "namespace $VNIC_NETNS -> guest ($IP), run by the host"
netns_ping_check "$VNIC_NETNS" "$IP" 5 "ping $PEER -> $IP (namespace to guest)"

if host vnicctl stats >/dev/null; then
	for c in vxlan_requests vxlan_punts vxlan_encapsulated vxlan_decapsulated \
		vxlan_send_misses uplink_tx_frames uplink_rx_frames uplink_rx_dropped; do
		echo "  card $c=$(card_counter $c)"
	done
	dec=$(card_counter vxlan_decapsulated)
	if ((${dec:-0} >= 8)); then
		ok "the card decapsulated Linux's frames itself ($dec)"
	else
		fail "vxlan_decapsulated '$dec', want at least 8"
	fi
else
	fail "host vnicctl stats"
fi

finish
