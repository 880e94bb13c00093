#!/bin/bash
# tests/e2e/mgmt-pf.sh - guest scenario: the PF's standard VF operations
# through the card's admin mailbox, and per-VF rate limiting.
#
# The guest has the PF and VF0, VF1 (two vNICs each). QEMU hides the SR-IOV
# capability, so the kernel sees no VFs and `ip link show` lists none, but
# `ip link set <pf> vf N ...` still reaches vnic.ko's ndo_set_vf_* and, via
# the admin mailbox, the card. Checks:
#   - `vf 1 mac` changes what VF1's vNIC 0 reports (the driver takes the MAC
#     over on the card's configuration-change interrupt) and traffic follows;
#     an unknown VF (ENODEV, "No such device") and a MAC another vNIC owns
#     are refused;
#   - ethtool shows the port's 10000Mb/s full duplex, and 20Mb/s on VF1's
#     netdevs under `vf 1 max_tx_rate 20`;
#   - `vf 1 max_tx_rate 20`: iperf3 from VF1 vNIC 0 within +-15 % of
#     20 Mbit/s; VF1's two vNICs at once together within the same budget;
#     `max_tx_rate 0` lifts it; the legacy `rate` form works;
#   - an RX policy on VF0 (set from the host with vnicctl) holds what VF0
#     receives;
#   - `vf 1 state disable|auto` takes VF1's carrier down and up;
#   - spoofchk and trust are accepted; a clean unload.
#
# Runs INSIDE the guest (as /scenario.sh). Prints "E2E-OK <check>" or
# "E2E-FAIL <check>: <detail>" and "RATE <what> <Mbit/s>" lines; exits 1 if
# any check failed. Every command that could hang is bounded.
#
# Launcher options for tests/e2e/main.rs:
# run-guest: --attach pf,vf0,vf1 --vfs 2 --mem 1024 --timeout 420 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 2

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
MAC_PF=02:76:6e:00:00:00
MAC_A=02:76:6e:00:01:00 # VF0 vNIC 0: namespace a, the receiver
MAC_B=02:76:6e:00:02:00 # VF1 vNIC 0: namespace b
MAC_D=02:76:6e:00:02:01 # VF1 vNIC 1: namespace c
NEW_MAC=02:00:00:00:77:01
IP_A=10.0.0.1
IP_B=10.0.0.2
IP_D=10.0.0.3
POLICY=20      # Mbit/s
TOLERANCE=15   # percent
IPERF_SECONDS=6

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

finish() {
	step "teardown"
	pkill iperf3 2>/dev/null
	drop_namespaces a b c
	unload_and_check_kernel
	summary mgmt-pf
}


# within RATE: RATE is within TOLERANCE % of POLICY.
within() {
	awk -v r="$1" -v p="$POLICY" -v t="$TOLERANCE" \
		'BEGIN { exit !(r >= p * (1 - t / 100) && r <= p * (1 + t / 100)) }'
}

step "insmod $MODULE"
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
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
ip link show "$PF"
if ip link show "$PF" | grep -q ' vf '; then
	fail "ip link show lists no VFs (QEMU hides SR-IOV)"
else
	ok "ip link show lists no VFs (QEMU hides SR-IOV); setting them works below"
fi

in_ns a "$A" "$IP_A"
in_ns b "$B" "$IP_B"
in_ns c "$D" "$IP_D"
if ! wait_for 10 carrier a "$A" || ! wait_for 10 carrier b "$B"; then
	abort "carrier" "$(ip -n a -br link; ip -n b -br link)"
fi
ping_from b "$IP_A" 3
((RECEIVED > 0)) || abort "ping b -> a" "no replies"
ok "ping b -> a before any change"

# ------------------------------------------------------------ VF MAC

step "ip link set $PF vf 1 mac $NEW_MAC"
if out=$(ip link set "$PF" vf 1 mac $NEW_MAC 2>&1); then
	ok "ip link set $PF vf 1 mac: accepted"
else
	fail "ip link set $PF vf 1 mac: $out"
fi
b_mac() { [[ $(ip netns exec b cat "/sys/class/net/$B/address") == "$1" ]]; }
if wait_for 10 b_mac $NEW_MAC; then
	ok "VF1 vNIC 0 ($B) reports $NEW_MAC"
else
	fail "VF1 vNIC 0 reports $NEW_MAC: $(ip -n b -br link show "$B")"
fi
ip -n b link show "$B"
ip netns exec a ip neigh flush all
ping_from b "$IP_A" 3
if ((RECEIVED > 0)); then
	ok "ping b -> a with the new MAC"
else
	fail "ping b -> a with the new MAC: no replies"
fi
if host vnicctl show vf1 | grep -q "$NEW_MAC"; then
	ok "the host's vnicctl show vf1 reports $NEW_MAC"
else
	fail "the host's vnicctl show vf1 reports $NEW_MAC"
fi
if out=$(ip link set "$PF" vf 7 mac 02:00:00:00:77:07 2>&1); then
	fail "vf 7 (no such VF) refused with ENODEV: accepted"
elif [[ $out == *"No such device"* ]]; then
	ok "vf 7 (no such VF) refused with ENODEV: $out"
else
	fail "vf 7 (no such VF) refused with ENODEV: $out"
fi
if out=$(ip link set "$PF" vf 1 mac $MAC_A 2>&1); then
	fail "a MAC VF0 owns refused for VF1: accepted"
else
	ok "a MAC VF0 owns refused for VF1: $out"
fi

# ------------------------------------------------------------ TX rate

# iperf_to PORT NS SECONDS LOG: iperf3 TCP from NS to a's server on PORT.
iperf_to() {
	ip netns exec "$2" timeout $(($3 + 40)) iperf3 -c "$IP_A" -p "$1" \
		-t "$3" -O 1 -f m >"$4" 2>&1
}
# received_rate LOG: the receiver's Mbit/s in an iperf3 client log.
received_rate() {
	awk '/receiver/ { for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") r = $(i - 1) }
		END { print r + 0 }' "$1"
}
servers() {
	ip netns exec a timeout 300 iperf3 -s -p 5201 >/tmp/s1.log 2>&1 &
	ip netns exec a timeout 300 iperf3 -s -p 5202 >/tmp/s2.log 2>&1 &
	wait_for 15 listening a 5201 && wait_for 15 listening a 5202
}
servers || abort "iperf3 servers" "$(cat /tmp/s1.log /tmp/s2.log)"

# speed NS DEV: "<Speed> <Duplex>" as ethtool DEV shows them.
speed() {
	ip netns exec "$1" ethtool "$2" 2>&1 |
		awk '$1 == "Speed:" { s = $2 } $1 == "Duplex:" { d = $2 }
			END { print s, d }'
}

step "VF1 without a policy"
if [[ $(speed b "$B") == "10000Mb/s Full" ]]; then
	ok "ethtool $B: the port's 10000Mb/s, full duplex"
else
	fail "ethtool $B: the port's 10000Mb/s, full duplex: $(speed b "$B")"
fi
iperf_to 5201 b 3 /tmp/free.log
FREE=$(received_rate /tmp/free.log)
echo "RATE unlimited $FREE"

step "ip link set $PF vf 1 max_tx_rate $POLICY"
if out=$(ip link set "$PF" vf 1 min_tx_rate 0 max_tx_rate $POLICY 2>&1); then
	ok "max_tx_rate $POLICY accepted"
else
	fail "max_tx_rate $POLICY: $out"
fi
if [[ $(speed b "$B") == "${POLICY}Mb/s Full" && $(speed c "$D") == "${POLICY}Mb/s Full" ]]; then
	ok "ethtool on VF1's netdevs: ${POLICY}Mb/s, full duplex"
else
	fail "ethtool on VF1's netdevs: ${POLICY}Mb/s: $(speed b "$B"), $(speed c "$D")"
fi
iperf_to 5201 b $IPERF_SECONDS /tmp/one.log
sed 's/^/  [iperf3 b] /' /tmp/one.log | grep -E 'sender|receiver'
ONE=$(received_rate /tmp/one.log)
echo "RATE vf1-tx-one-vnic $ONE"
if within "$ONE"; then
	ok "VF1 vNIC 0 under a $POLICY Mbit/s policy: $ONE Mbit/s"
else
	fail "VF1 vNIC 0 under a $POLICY Mbit/s policy: $ONE Mbit/s (want +-$TOLERANCE %)"
fi

step "both vNICs of VF1 at once"
iperf_to 5201 b $IPERF_SECONDS /tmp/two-b.log &
P1=$!
iperf_to 5202 c $IPERF_SECONDS /tmp/two-d.log &
P2=$!
wait $P1 $P2
R1=$(received_rate /tmp/two-b.log)
R2=$(received_rate /tmp/two-d.log)
SUM=$(awk -v a="$R1" -v b="$R2" 'BEGIN { print a + b }')
echo "RATE vf1-tx-two-vnics $SUM ($R1 + $R2)"
if within "$SUM"; then
	ok "VF1's two vNICs together: $R1 + $R2 = $SUM Mbit/s"
else
	fail "VF1's two vNICs together: $R1 + $R2 = $SUM Mbit/s (want +-$TOLERANCE % of $POLICY)"
fi
if awk -v a="$R1" -v b="$R2" 'BEGIN { exit !(a > 1 && b > 1) }'; then
	ok "each vNIC got a share ($R1, $R2)"
else
	fail "each vNIC got a share ($R1, $R2)"
fi

step "legacy rate form and lifting the policy"
if out=$(ip link set "$PF" vf 1 rate 10 2>&1); then
	ok "ip link set vf 1 rate 10 (via ndo_get_vf_config)"
else
	fail "ip link set vf 1 rate 10: $out"
fi
ip link set "$PF" vf 1 min_tx_rate 0 max_tx_rate 0
iperf_to 5201 b 3 /tmp/lifted.log
LIFTED=$(received_rate /tmp/lifted.log)
echo "RATE lifted $LIFTED"
if awk -v r="$LIFTED" -v p="$POLICY" 'BEGIN { exit !(r > 2 * p) }'; then
	ok "max_tx_rate 0 lifts the policy: $LIFTED Mbit/s"
else
	fail "max_tx_rate 0 lifts the policy: $LIFTED Mbit/s"
fi
if out=$(ip link set "$PF" vf 1 min_tx_rate 5 max_tx_rate 20 2>&1); then
	fail "a minimum TX rate is refused: accepted"
else
	ok "a minimum TX rate is refused: $out"
fi

# ------------------------------------------------------------ RX policy

step "host: vnicctl rate vf0 rx --avg ${POLICY}M --burst 64K"
host vnicctl rate vf0 rx --avg "${POLICY}M" --burst 64K ||
	fail "vnicctl rate vf0 rx"
iperf_to 5201 b $IPERF_SECONDS /tmp/rx.log
RX=$(received_rate /tmp/rx.log)
echo "RATE vf0-rx-policed $RX"
if awk -v r="$RX" -v p="$POLICY" -v t="$TOLERANCE" \
	'BEGIN { exit !(r > p / 4 && r <= p * (1 + t / 100)) }'; then
	ok "VF0 receives at most its $POLICY Mbit/s RX policy: $RX Mbit/s"
else
	fail "VF0 RX policy $POLICY Mbit/s: $RX Mbit/s"
fi
host vnicctl stats vf0 | grep -E 'rx_rate_drops|tx_shaped'
host vnicctl rate vf0 rx --clear || fail "vnicctl rate vf0 rx --clear"

# ------------------------------------------------------------ link state

step "ip link set $PF vf 1 state disable"
no_carrier() { ! carrier b "$B"; }
ip link set "$PF" vf 1 state disable || fail "state disable"
if wait_for 10 no_carrier; then
	ok "VF1 vNIC 0 lost its carrier"
else
	fail "VF1 vNIC 0 lost its carrier: $(ip -n b -br link show "$B")"
fi
ip link set "$PF" vf 1 state auto || fail "state auto"
if wait_for 10 carrier b "$B"; then
	ok "VF1 vNIC 0 has its carrier back"
else
	fail "VF1 vNIC 0 has its carrier back"
fi
ping_from b "$IP_A" 3
if ((RECEIVED > 0)); then ok "ping after link auto"; else fail "ping after link auto"; fi

step "spoofchk and trust"
for op in "spoofchk off" "spoofchk on" "trust on" "trust off"; do
	# shellcheck disable=SC2086 # op is two words on purpose
	if out=$(ip link set "$PF" vf 1 $op 2>&1); then
		ok "ip link set vf 1 $op"
	else
		fail "ip link set vf 1 $op: $out"
	fi
done
host vnicctl show vf1

finish
