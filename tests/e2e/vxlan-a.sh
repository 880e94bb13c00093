#!/bin/bash
# tests/e2e/vxlan-a.sh - guest scenario, guest A of the two-host VxLAN pair
# (the other is vxlan-b.sh). Each guest is on a vnicd of its own ("host A",
# card 1, VTEP 10.1.0.1; "host B", card 2, VTEP 10.1.0.2), the two joined
# by a UDP uplink, each with a host agent (vnicctl vxlan-agent); the test
# (tests/e2e/main.rs, vnic_tests::e2e::Testbed) sets all that up.
#
# A has VF0 (VxLAN, VNI 100; vNIC 02:76:6e:01:01:00, 192.168.100.1/24) and
# VF1 (VLAN attribute, untagged; 02:76:6e:01:02:00, 10.4.0.1/24). A is the
# pinging host:
#   - IPv6 off on both interfaces before they come up, so that no router
#     solicitation or MLD report makes a request of its own;
#   - the card's vxlan_requests (host vnicctl stats) is 0 before A sends;
#   - captures the uplink (host vnicctl capture start @LOGDIR@/uplink-a.pcap
#     --function uplink) while it pings B over VxLAN (the test reads it back
#     with tcpdump);
#   - waits (bounded) for B's first answer: vxlan_requests is then exactly
#     1 (the ARP broadcast's miss; the agent installed the flood entry and
#     learned B from the punt of B's answer); "VXLAN-REQUESTS-FIRST n";
#   - ping -c 5, iperf3 TCP over VxLAN ("VXLAN-RATE <Mbits/sec>"), then
#     iperf3 TCP over the VLAN pair on the same wire ("VLAN-RATE ...");
#   - vxlan_requests is still 1 after all that ("VXLAN-REQUESTS-AFTER n"),
#     while vxlan_encapsulated counted every frame sent.
# Prints "E2E-OK <check>" or "E2E-FAIL <check>: <detail>"; exits 1 if any
# check failed. Every wait is bounded.
#
# run-guest: --attach vf0,vf1 --vfs 2 --mem 512 --timeout 420 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 1

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
VX_MAC=02:76:6e:01:01:00 # VF0 (VxLAN, VNI 100) of card 1
VL_MAC=02:76:6e:01:02:00 # VF1 (VLAN attribute) of card 1
PEER_VX_MAC=02:76:6e:02:01:00
VX_IP=192.168.100.1
PEER_VX=192.168.100.2
VL_IP=10.4.0.1
PEER_VL=10.4.0.2
PEER_WAIT_SECONDS=180
IPERF_SECONDS=8
CAPTURE=@LOGDIR@/uplink-a.pcap

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

carrier() { ip -o link show dev "$1" | grep -q 'LOWER_UP'; }

# card_counter NAME: the card counter NAME from the last "host vnicctl
# stats" (HOST_OUT).
card_counter() {
	printf '%s\n' "$HOST_OUT" | grep -o "$1=[0-9]*" | head -n 1 | cut -d= -f2
}

# stats: asks the host for the card's counters; sets REQUESTS.
stats() {
	REQUESTS=
	host vnicctl stats >/dev/null || return 1
	REQUESTS=$(card_counter vxlan_requests)
	[[ -n $REQUESTS ]]
}

# iperf_to NAME IP PORT: an iperf3 TCP run; prints "<NAME>-RATE <rate>".
iperf_to() {
	local rc rate
	step "iperf3 TCP to $2:$3 ($1), $IPERF_SECONDS s"
	retry_connect 30 /tmp/iperf3.err timeout $((IPERF_SECONDS + 40)) \
		iperf3 -c "$2" -p "$3" -t "$IPERF_SECONDS" -f m >/tmp/iperf3.log
	rc=$?
	cat /tmp/iperf3.err >>/tmp/iperf3.log
	sed 's/^/  [iperf3] /' /tmp/iperf3.log
	rate=$(awk '/receiver/ { for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") r = $(i - 1) }
		END { print r }' /tmp/iperf3.log)
	echo "$1-RATE ${rate:-none} Mbits/sec"
	if ((rc == 0)) && awk -v r="$rate" 'BEGIN { exit !(r > 0) }'; then
		ok "iperf3 TCP A -> B over $1: $rate Mbits/sec"
	else
		fail "iperf3 TCP A -> B over $1: status $rc, rate '$rate'"
	fi
}

finish() {
	step "teardown"
	[[ -n ${VX:-} ]] && ip link set "$VX" down
	[[ -n ${VL:-} ]] && ip link set "$VL" down
	unload_and_check_kernel
	summary vxlan-a
}

# ------------------------------------------------------------ vNICs

step "insmod $MODULE"
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
netdev_for VX "$VX_MAC"
netdev_for VL "$VL_MAC"
ok "VxLAN vNIC $VX_MAC is $VX, VLAN vNIC $VL_MAC is $VL"

no_ipv6 "$VX"
no_ipv6 "$VL"
if stats; then
	echo "VXLAN-REQUESTS-BEFORE $REQUESTS"
	if ((REQUESTS == 0)); then
		ok "vxlan_requests before any traffic: 0"
	else
		fail "vxlan_requests before any traffic: $REQUESTS, want 0"
	fi
else
	fail "host vnicctl stats: no vxlan_requests"
fi

if host vnicctl capture start "$CAPTURE" --function uplink; then
	ok "host: uplink capture started"
else
	fail "host: uplink capture start"
fi

step "addresses: $VX_IP/24 on $VX, $VL_IP/24 on $VL"
ip addr add "$VX_IP/24" dev "$VX"
ip addr add "$VL_IP/24" dev "$VL"
ip link set "$VX" up || abort "link up" "ip link set $VX up failed"
ip link set "$VL" up || abort "link up" "ip link set $VL up failed"
for d in "$VX" "$VL"; do
	if wait_for 10 carrier "$d"; then ok "carrier up on $d"; else fail "carrier up on $d"; fi
done

# ------------------------------------------------------------ VxLAN ping

step "waiting for B ($PEER_VX over VxLAN), up to $PEER_WAIT_SECONDS s"
t0=$(now_ms)
if wait_for "$PEER_WAIT_SECONDS" ping -c 1 -W 1 "$PEER_VX"; then
	ok "B answers ping over VxLAN after $((($(now_ms) - t0) / 1000)) s"
else
	abort "B answers ping over VxLAN" "no reply from $PEER_VX in $PEER_WAIT_SECONDS s"
fi
if stats; then
	echo "VXLAN-REQUESTS-FIRST $REQUESTS"
	if ((REQUESTS == 1)); then
		ok "vxlan_requests after the first exchange: exactly 1"
	else
		fail "vxlan_requests after the first exchange: $REQUESTS, want 1"
	fi
else
	fail "host vnicctl stats after the first exchange"
fi
neigh=$(ip neigh show "$PEER_VX")
if [[ $neigh == *"lladdr $PEER_VX_MAC"* ]]; then
	ok "ARP over VxLAN: $PEER_VX is at $PEER_VX_MAC"
else
	fail "ARP over VxLAN: neighbour entry for $PEER_VX: '$neigh'"
fi
out=$(ping -c 5 -i 0.2 -W 1 -w 9 "$PEER_VX" 2>&1)
printf '%s\n' "$out" | grep -E 'packets transmitted|round-trip' | sed "s/^/  [ping $PEER_VX] /"
if printf '%s\n' "$out" | grep -q ' 5 packets received'; then
	ok "ping $VX_IP -> $PEER_VX over VxLAN: 5/5"
	echo "CAPTURE-PINGS 5"
else
	fail "ping $VX_IP -> $PEER_VX over VxLAN: $(printf '%s\n' "$out" | grep transmitted)"
fi
if host vnicctl capture stop; then
	ok "host: uplink capture stopped"
else
	fail "host: uplink capture stop"
fi

# ------------------------------------------------------------ TCP

iperf_to VXLAN "$PEER_VX" 5201

step "waiting for B over the VLAN pair ($PEER_VL)"
if wait_for 60 ping -c 1 -W 1 "$PEER_VL"; then
	ok "B answers ping over VLAN"
	iperf_to VLAN "$PEER_VL" 5202
else
	fail "B answers ping over VLAN: no reply from $PEER_VL in 60 s"
fi

# ------------------------------------------------------------ counters

if stats; then
	echo "VXLAN-REQUESTS-AFTER $REQUESTS"
	for c in vxlan_encapsulated vxlan_decapsulated vxlan_punts vxlan_send_misses \
		uplink_tx_frames uplink_rx_frames uplink_tx_errors; do
		echo "  card $c=$(card_counter $c)"
	done
	enc=$(card_counter vxlan_encapsulated)
	if ((REQUESTS == 1 && ${enc:-0} > 100)); then
		ok "vxlan_requests after ping and TCP: still 1 ($enc frames encapsulated)"
	else
		fail "vxlan_requests after ping and TCP: $REQUESTS, want 1 (encapsulated '$enc')"
	fi
else
	fail "host vnicctl stats at the end"
fi

finish
