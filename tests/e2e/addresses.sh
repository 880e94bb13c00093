#!/bin/bash
# tests/e2e/addresses.sh - guest scenario: extra addresses, multicast groups
# and promiscuous mode per vNIC (address filtering), and MAC changes the
# card refuses.
#
# The guest has the PF and VF0, VF1 (two vNICs each); vnicd runs with its
# defaults (an untrusted VF may have 16 extra unicast addresses). Checks:
#   - a macvlan on an untrusted VF's vNIC: the vNIC stays out of promiscuous
#     mode (vnic.ko filters unicast), the card forwards the macvlan's MAC to
#     it and lets its frames pass the spoof check: ping 3/3;
#   - 17 extra addresses on that VF: 16 taken, the rest refused, counted in
#     fn_addr_refused, explained once in dmesg and shown by vnicctl show;
#     the first macvlan keeps working;
#   - multicast: a vNIC receives a group's frames only once it joined it;
#   - an untrusted VF's MAC change fails with EPERM and keeps the old MAC
#     and the traffic; trusted, a MAC another vNIC has fails with
#     EADDRNOTAVAIL, a free one is taken and traffic follows;
#   - a bridge with a veth behind it on VF1's vNIC 1: untrusted, the card
#     refuses promiscuous mode (fn_promisc_refused) and drops the veth's
#     frames as spoofed: 0/3; with trust on and spoof check off (through the
#     PF's ip link set ... vf 1), the vNIC receives the VLAN's unknown
#     unicast and the veth answers: 3/3, as on SR-IOV NICs;
#   - a clean unload.
#
# Runs INSIDE the guest (as /scenario.sh). Prints "E2E-OK <check>" or
# "E2E-FAIL <check>: <detail>"; exits 1 if any check failed. Every command
# that could hang is bounded.
#
# Launcher options for tests/e2e/main.rs:
# run-guest: --attach pf,vf0,vf1 --vfs 2 --mem 1024 --timeout 420 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 2

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
MAC_PF=02:76:6e:00:00:00
MAC_A=02:76:6e:00:01:00 # VF0 vNIC 0: namespace a, the peer
MAC_B=02:76:6e:00:02:00 # VF1 vNIC 0: macvlans
MAC_D=02:76:6e:00:02:01 # VF1 vNIC 1: multicast, then the bridge
MAC_MV=02:00:00:00:aa:01
MAC_VETH=02:00:00:00:bb:01
NEW_MAC=02:11:22:33:44:55
IP_A=10.0.0.1
IP_MV=10.0.0.11
IP_D=10.0.0.4
IP_VETH=10.0.0.5
GROUP_IP=239.1.2.3
GROUP_MAC=01:00:5e:01:02:03
LIMIT=16

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

finish() {
	step "teardown"
	ip link del br0 2>/dev/null
	for i in $(seq 2 $((LIMIT + 1))); do
		ip link del "mv$i" 2>/dev/null
	done
	drop_namespaces a m1 d e
	ip link del mv1 2>/dev/null
	unload_and_check_kernel
	summary addresses
}

# counter DEV NAME [NS]: ethtool -S counter NAME of DEV (0 if none).
counter() {
	local v
	v=$(ip netns exec "${3:-root}" ethtool -S "$1" 2>/dev/null |
		awk -v n="$2:" '$1 == n { print $2 }')
	echo "${v:-0}"
}

# rx_packets NS DEV: the vNIC's receive queue counter.
rx_packets() { counter "$2" rx_packets "$1"; }

# vnicctl_shows WHAT: the host's vnicctl show vf1 prints WHAT.
vnicctl_shows() {
	host vnicctl show vf1 >/dev/null
	[[ $HOST_OUT == *"$1"* ]]
}

step "insmod $MODULE"
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
for m in macvlan veth bridge; do
	modprobe "$m" || abort "modprobe $m" "failed"
done
# The root namespace under its own name, for counter()
ip netns attach root 1 2>/dev/null
has_all() {
	local m
	for m in $MAC_PF $MAC_A $MAC_B $MAC_D; do
		dev_by_mac "$m" >/dev/null || return 1
	done
}
wait_for 10 has_all || abort "netdevs" "$(ip -br link | tr '\n' ';')"
PF=$(dev_by_mac $MAC_PF)
A=$(dev_by_mac $MAC_A)
B=$(dev_by_mac $MAC_B)
D=$(dev_by_mac $MAC_D)
ok "netdevs: PF $PF, A $A (VF0 vNIC 0), B $B and D $D (VF1 vNICs 0, 1)"
# No IPv6: its router solicitations and MLD reports would be extra frames
no_ipv6 all
in_ns a "$A" "$IP_A"
ip link set "$B" up
wait_for 10 carrier a "$A" || abort "carrier" "$(ip -n a -br link)"

# ------------------------------------------------------------ macvlan

step "a macvlan on VF1 vNIC 0 ($B), VF1 untrusted"
ip link add link "$B" mv1 address $MAC_MV type macvlan mode bridge
ip netns add m1
ip link set mv1 netns m1
ip -n m1 addr add "$IP_MV/24" dev mv1
ip -n m1 link set mv1 up
ip -d link show "$B" | head -n 3
if ip -d link show "$B" | grep -q 'promiscuity 0'; then
	ok "$B not promiscuous: vnic.ko filters its unicast addresses"
else
	fail "$B not promiscuous: $(ip -d link show "$B" | grep -o 'promiscuity [0-9]*')"
fi
wait_for 10 carrier m1 mv1
ping_from a "$IP_MV" 3
if ((RECEIVED == 3)); then
	ok "ping a -> macvlan on the untrusted VF: 3/3"
else
	fail "ping a -> macvlan on the untrusted VF: $RECEIVED/3"
fi
if wait_for 10 vnicctl_shows "unicast $MAC_MV"; then
	ok "vnicctl show vf1 lists $MAC_MV for vNIC 0"
else
	fail "vnicctl show vf1 lists $MAC_MV"
fi

step "$LIMIT more macvlans: over the untrusted VF's limit of $LIMIT"
before=$(counter "$B" fn_addr_refused)
for i in $(seq 2 $((LIMIT + 1))); do
	ip link add link "$B" "mv$i" address "02:00:00:00:aa:$(printf %02x "$i")" \
		type macvlan mode bridge
	ip link set "mv$i" up
done
refused() { (($(counter "$B" fn_addr_refused) > before)); }
if wait_for 10 refused; then
	ok "fn_addr_refused $before -> $(counter "$B" fn_addr_refused)"
else
	fail "fn_addr_refused grows: still $before"
fi
if dmesg | grep -q "$B: card refused unicast addresses over the VF's limit ($LIMIT in effect)"; then
	ok "dmesg explains the refusal"
	dmesg | grep "card refused unicast" | tail -n 1
else
	fail "dmesg explains the refusal: $(dmesg | grep -i 'card refused' | tail -n 2)"
fi
if wait_for 10 vnicctl_shows "addresses:   $LIMIT extra of $LIMIT (untrusted)"; then
	ok "vnicctl show vf1: $LIMIT extra addresses of $LIMIT"
else
	fail "vnicctl show vf1: $LIMIT extra addresses of $LIMIT"
fi
ping_from a "$IP_MV" 3
if ((RECEIVED == 3)); then
	ok "the first macvlan still answers: 3/3"
else
	fail "the first macvlan still answers: $RECEIVED/3"
fi
for i in $(seq 2 $((LIMIT + 1))); do
	ip link del "mv$i"
done

# ------------------------------------------------------------ multicast

step "multicast: VF1 vNIC 1 ($D) receives group $GROUP_IP only once joined"
in_ns d "$D" "$IP_D"
wait_for 10 carrier d "$D"
ip -n a route add 224.0.0.0/4 dev "$A"
# send_group: 5 pings to the group from a (nobody answers them)
send_group() {
	ip netns exec a ping -c 5 -i 0.2 -W 1 -w 4 -I "$A" "$GROUP_IP" >/dev/null 2>&1
}
r0=$(rx_packets d "$D")
send_group
r1=$(rx_packets d "$D")
if ((r1 - r0 <= 1)); then
	ok "not joined: $D received $((r1 - r0)) frames of 5"
else
	fail "not joined: $D received $((r1 - r0)) frames of 5"
fi
ip -n d maddr add $GROUP_MAC dev "$D"
wait_for 10 vnicctl_shows "multicast $GROUP_MAC"
send_group
r2=$(rx_packets d "$D")
if ((r2 - r1 >= 5)); then
	ok "joined: $D received $((r2 - r1)) frames of 5"
else
	fail "joined: $D received $((r2 - r1)) frames of 5"
fi
drop_namespaces d

# ------------------------------------------------------------ MAC change

step "a MAC change on an untrusted VF (VF0, $A)"
if out=$(ip -n a link set "$A" address $NEW_MAC 2>&1); then
	fail "untrusted MAC change refused: accepted"
else
	ok "untrusted MAC change refused: $out"
	[[ $out == *"Operation not permitted"* ]] ||
		fail "untrusted MAC change: EPERM expected, got: $out"
fi
a_mac=$(ip netns exec a cat "/sys/class/net/$A/address")
if [[ $a_mac == "$MAC_A" ]]; then
	ok "$A keeps $MAC_A"
else
	fail "$A keeps $MAC_A: $a_mac"
fi
dmesg | grep "card refused the MAC" | tail -n 1
ping_from a "$IP_MV" 3
if ((RECEIVED == 3)); then
	ok "traffic goes on after the refusal: 3/3"
else
	fail "traffic goes on after the refusal: $RECEIVED/3"
fi
ip link set "$PF" vf 0 trust on
if out=$(ip -n a link set "$A" address $MAC_B 2>&1); then
	fail "trusted: another vNIC's MAC refused: accepted"
else
	ok "trusted: another vNIC's MAC refused: $out"
	[[ $out == *"Cannot assign requested address"* ]] ||
		fail "another vNIC's MAC: EADDRNOTAVAIL expected, got: $out"
fi
if out=$(ip -n a link set "$A" address $NEW_MAC 2>&1); then
	ok "trusted: MAC change to $NEW_MAC accepted"
else
	fail "trusted: MAC change to $NEW_MAC: $out"
fi
ip netns exec a ip neigh flush all
ip netns exec m1 ip neigh flush all
ping_from a "$IP_MV" 3
if ((RECEIVED == 3)); then
	ok "ping with the new MAC: 3/3"
else
	fail "ping with the new MAC: $RECEIVED/3"
fi

# ------------------------------------------------------------ bridge

step "a bridge on VF1 vNIC 1 ($D) with a veth behind it, VF1 untrusted"
pr0=$(counter "$D" fn_promisc_refused)
ip link add br0 type bridge
ip link set "$D" master br0
ip link add v0 type veth peer name v1
ip link set v0 master br0
ip netns add e
ip link set v1 netns e
ip -n e link set v1 address $MAC_VETH
ip -n e addr add "$IP_VETH/24" dev v1
ip -n e link set v1 up
ip -n e link set lo up
ip link set v0 up
ip link set "$D" up
ip link set br0 up
promisc_refused() { (($(counter "$D" fn_promisc_refused) > pr0)); }
if wait_for 10 promisc_refused; then
	ok "fn_promisc_refused: $pr0 -> $(counter "$D" fn_promisc_refused)"
else
	fail "fn_promisc_refused grows: $pr0"
fi
if dmesg | grep -q "$D: card refused promiscuous mode: VF not trusted"; then
	ok "dmesg explains the refusal"
else
	fail "dmesg explains the refusal: $(dmesg | grep -i 'card refused' | tail -n 2)"
fi
s0=$(counter "$D" fn_spoof_drops)
ping_from a "$IP_VETH" 3
s1=$(counter "$D" fn_spoof_drops)
if ((RECEIVED == 0 && s1 > s0)); then
	ok "untrusted: the veth gets no answer (0/3), its frames dropped as spoofed ($s0 -> $s1)"
else
	fail "untrusted: 0/3 and spoof drops expected: $RECEIVED/3, fn_spoof_drops $s0 -> $s1"
fi

step "ip link set $PF vf 1 trust on spoofchk off"
ip link set "$PF" vf 1 trust on
ip link set "$PF" vf 1 spoofchk off
if wait_for 10 vnicctl_shows "vNIC 1 filter: promisc on"; then
	ok "vnicctl show vf1: vNIC 1 promiscuous"
else
	fail "vnicctl show vf1: vNIC 1 promiscuous"
fi
ip netns exec a ip neigh flush all
ping_from a "$IP_VETH" 3
if ((RECEIVED == 3)); then
	ok "trusted, spoof check off: the veth behind the bridge answers: 3/3"
else
	fail "trusted, spoof check off: the veth behind the bridge answers: $RECEIVED/3"
fi
host vnicctl show vf1

finish
