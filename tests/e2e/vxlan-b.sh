#!/bin/bash
# tests/e2e/vxlan-b.sh - guest scenario, guest B of the two-host VxLAN pair
# (the other, vxlan-a.sh, says how the two hosts are set up). B has VF0
# (VxLAN, VNI 100; vNIC 02:76:6e:02:01:00, 192.168.100.2/24) and VF1 (VLAN
# attribute; 02:76:6e:02:02:00, 10.4.0.2/24) on card 2, and serves: IPv6 off, iperf3 one-shot servers on 5201 (for
# A's VxLAN run) and 5202 (VLAN run) started before the addresses are set,
# then waits (bounded) until both have served A. Then its own card's
# counters: B never missed (vxlan_requests 0: its answers go to A's vNIC,
# which B's agent installed when it handled the punt of A's first frame).
# Prints "E2E-OK <check>" or "E2E-FAIL <check>: <detail>"; exits 1 if any
# check failed.
#
# run-guest: --attach vf0,vf1 --vfs 2 --mem 512 --timeout 420 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 1

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
VX_MAC=02:76:6e:02:01:00 # VF0 (VxLAN, VNI 100) of card 2
VL_MAC=02:76:6e:02:02:00 # VF1 (VLAN attribute) of card 2
VX_IP=192.168.100.2
VL_IP=10.4.0.2
SERVE_SECONDS=360

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

listening() { ss -Hltn | grep -q ":$1 "; }
carrier() { ip -o link show dev "$1" | grep -q 'LOWER_UP'; }
card_counter() {
	printf '%s\n' "$HOST_OUT" | grep -o "$1=[0-9]*" | head -n 1 | cut -d= -f2
}
finish() {
	step "teardown"
	[[ -n ${VX:-} ]] && ip link set "$VX" down
	[[ -n ${VL:-} ]] && ip link set "$VL" down
	unload_and_check_kernel
	summary vxlan-b
}

# ------------------------------------------------------------ vNICs

step "insmod $MODULE"
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
netdev_for VX "$VX_MAC"
netdev_for VL "$VL_MAC"
ok "VxLAN vNIC $VX_MAC is $VX, VLAN vNIC $VL_MAC is $VL"
no_ipv6 "$VX"
no_ipv6 "$VL"

# ------------------------------------------------------------ servers

step "servers: iperf3 :5201 (VxLAN), :5202 (VLAN), up to $SERVE_SECONDS s"
timeout "$SERVE_SECONDS" iperf3 -s -1 -p 5201 >/tmp/iperf3-vx.log 2>&1 &
vpid=$!
timeout "$SERVE_SECONDS" iperf3 -s -1 -p 5202 >/tmp/iperf3-vl.log 2>&1 &
lpid=$!
wait_for 15 listening 5201 || fail "iperf3 server :5201 listening: $(cat /tmp/iperf3-vx.log)"
wait_for 15 listening 5202 || fail "iperf3 server :5202 listening: $(cat /tmp/iperf3-vl.log)"

step "addresses: $VX_IP/24 on $VX, $VL_IP/24 on $VL"
ip addr add "$VX_IP/24" dev "$VX"
ip addr add "$VL_IP/24" dev "$VL"
ip link set "$VX" up || abort "link up" "ip link set $VX up failed"
ip link set "$VL" up || abort "link up" "ip link set $VL up failed"
for d in "$VX" "$VL"; do
	if wait_for 10 carrier "$d"; then ok "carrier up on $d"; else fail "carrier up on $d"; fi
done
echo "vxlan-b: serving; waiting for A"

for run in "VxLAN $vpid /tmp/iperf3-vx.log" "VLAN $lpid /tmp/iperf3-vl.log"; do
	read -r name pid log <<<"$run"
	wait "$pid"
	rc=$?
	sed "s/^/  [iperf3 -s $name] /" "$log" | grep -E 'receiver|sender|error'
	if ((rc == 0)) && grep -q receiver "$log"; then
		ok "iperf3 server ($name): one run from A"
	else
		fail "iperf3 server ($name): status $rc (it waits at most $SERVE_SECONDS s for A)"
		tail -n 5 "$log"
	fi
done

# ------------------------------------------------------------ counters

if host vnicctl stats >/dev/null; then
	req=$(card_counter vxlan_requests)
	for c in vxlan_requests vxlan_punts vxlan_encapsulated vxlan_decapsulated \
		uplink_tx_frames uplink_rx_frames; do
		echo "  card $c=$(card_counter $c)"
	done
	if [[ $req == 0 ]]; then
		ok "B's card made no request (vxlan_requests 0)"
	else
		fail "B's card: vxlan_requests '$req', want 0"
	fi
else
	fail "host vnicctl stats"
fi

finish
