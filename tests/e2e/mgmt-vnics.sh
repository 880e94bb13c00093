#!/bin/bash
# tests/e2e/mgmt-vnics.sh - guest scenario: the host changes a VF's number
# of vNICs (N) while the guest uses it, and captures the switch.
#
# The guest has VF0 and VF1 (N = 2 each). VF0's vNIC 0 (namespace a) is
# pinged from VF1's vNIC 0 (namespace b) all along, ten times a second, while
# the host (through the launcher's host channel, `host vnicctl ...`):
#   - captures the switch into a pcap file during a short ping (the test
#     reads it back with tcpdump on the host);
#   - sets VF0's N to 3: the card raises its configuration-change interrupt
#     and the driver adds a netdev for vNIC 2, which then passes traffic
#     (namespace c);
#   - sets N to 1: the netdevs of vNICs 1 and 2 disappear;
#   - asks for N = 9 (more than X = 8): refused, nothing changes;
# and the continuous ping on vNIC 0 loses nothing.
#
# Runs INSIDE the guest (as /scenario.sh). Prints "E2E-OK <check>" or
# "E2E-FAIL <check>: <detail>" and "PING-LOST <n> of <m>"; exits 1 if any
# check failed. Every wait is bounded.
#
# Launcher options for tests/e2e/main.rs:
# run-guest: --attach vf0,vf1 --vfs 2 --mem 1024 --timeout 300 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 2

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
MAC_A=02:76:6e:00:01:00 # VF0 vNIC 0
MAC_A1=02:76:6e:00:01:01
MAC_A2=02:76:6e:00:01:02 # appears when N becomes 3
MAC_B=02:76:6e:00:02:00 # VF1 vNIC 0
IP_A=10.0.0.1
IP_B=10.0.0.2
IP_E=10.0.0.5
CAPTURE=@LOGDIR@/switch.pcap

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

PING_PID=
finish() {
	step "teardown"
	[[ -n $PING_PID ]] && kill "$PING_PID" 2>/dev/null
	drop_namespaces a b c
	unload_and_check_kernel
	summary mgmt-vnics
}


# vf0_netdevs: the number of VF0 netdevs, in any namespace.
vf0_netdevs() {
	local n=0 ns
	for ns in "" a c; do
		if [[ -z $ns ]]; then
			n=$((n + $(cat /sys/class/net/*/address | grep -c '^02:76:6e:00:01:')))
		else
			n=$((n + $(ip netns exec "$ns" sh -c \
				'cat /sys/class/net/*/address' 2>/dev/null | grep -c '^02:76:6e:00:01:')))
		fi
	done
	echo "$n"
}
vf0_has() { (($(vf0_netdevs) == $1)); }

step "insmod $MODULE"
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
has_all() { dev_by_mac "$MAC_A" >/dev/null && dev_by_mac "$MAC_A1" >/dev/null &&
	dev_by_mac "$MAC_B" >/dev/null; }
wait_for 10 has_all || abort "netdevs" "$(ip -br link | tr '\n' ';')"
A=$(dev_by_mac $MAC_A)
B=$(dev_by_mac $MAC_B)
ok "netdevs: A $A (VF0 vNIC 0), B $B (VF1 vNIC 0), VF0 has $(vf0_netdevs)"
in_ns a "$A" "$IP_A"
in_ns b "$B" "$IP_B"
if ! wait_for 10 carrier a "$A" || ! wait_for 10 carrier b "$B"; then
	abort "carrier" "$(ip -n a -br link; ip -n b -br link)"
fi

# ------------------------------------------------------------ capture

step "capture of the switch during a ping"
if host vnicctl capture start "$CAPTURE"; then
	ok "host: capture started"
else
	fail "host: capture start"
fi
ping_from b "$IP_A" 5
((RECEIVED > 0)) || fail "ping b -> a during the capture: no replies"
if host vnicctl capture stop; then
	ok "host: capture stopped"
else
	fail "host: capture stop"
fi
echo "CAPTURE-PINGS $RECEIVED"

# ------------------------------------------------------------ N 2 -> 3 -> 1

step "continuous ping b -> a on VF0 vNIC 0"
ip netns exec b timeout 120 ping -i 0.1 -W 1 "$IP_A" >/tmp/ping.log 2>&1 &
PING_PID=$!
sleep 1

step "host: vnicctl vnics vf0 3"
host vnicctl vnics vf0 3 || fail "vnicctl vnics vf0 3"
if wait_for 20 dev_by_mac $MAC_A2; then
	ok "VF0 vNIC 2 appeared ($(dev_by_mac $MAC_A2))"
else
	fail "VF0 vNIC 2 appeared: $(ip -br link | tr '\n' ';')"
fi
if vf0_has 3; then
	ok "VF0 has 3 netdevs"
else
	fail "VF0 has 3 netdevs: $(vf0_netdevs)"
fi
E=$(dev_by_mac $MAC_A2)
port=$(cat "/sys/class/net/$E/dev_port" 2>/dev/null)
if [[ $port == 2 ]]; then ok "$E dev_port 2"; else fail "$E dev_port: '$port'"; fi
in_ns c "$E" "$IP_E"
if wait_for 10 carrier c "$E"; then
	ping_from c "$IP_B" 3
	if ((RECEIVED > 0)); then
		ok "the new vNIC 2 passes traffic (c -> b)"
	else
		fail "the new vNIC 2 passes traffic: no replies"
	fi
else
	fail "the new vNIC 2 has carrier: $(ip -n c -br link)"
fi

step "host: vnicctl vnics vf0 1"
host vnicctl vnics vf0 1 || fail "vnicctl vnics vf0 1"
if wait_for 20 vf0_has 1; then
	ok "VF0's vNICs 1 and 2 disappeared"
else
	fail "VF0's vNICs 1 and 2 disappeared: $(vf0_netdevs) left"
fi
ip -n c -br link

step "host: vnicctl vnics vf0 9 (X is 8)"
if host vnicctl vnics vf0 9; then
	fail "N = 9 refused: accepted"
else
	ok "N = 9 refused"
fi
sleep 1
if vf0_has 1; then ok "still 1 VF0 netdev"; else fail "still 1 VF0 netdev: $(vf0_netdevs)"; fi

step "host: vnicctl vnics vf0 2"
host vnicctl vnics vf0 2 || fail "vnicctl vnics vf0 2"
if wait_for 20 vf0_has 2; then
	ok "VF0 back to 2 netdevs"
else
	fail "VF0 back to 2 netdevs: $(vf0_netdevs)"
fi

sleep 1
kill -INT "$PING_PID"
wait "$PING_PID"
PING_PID=
grep -E 'packets transmitted|round-trip' /tmp/ping.log | sed 's/^/  [ping] /'
# Stopped by SIGINT, ping does not wait for the echo it sent last: that one
# may still be on its way. A loss is a missing reply before the last one.
sent=$(sed -n 's/^\([0-9][0-9]*\) packets transmitted.*/\1/p' /tmp/ping.log)
got=$(grep -c 'seq=' /tmp/ping.log)
last=$(sed -n 's/.*seq=\([0-9][0-9]*\).*/\1/p' /tmp/ping.log | tail -n 1)
sent=${sent:-0}
last=${last:--1}
echo "PING-LOST $((last + 1 - got)) of $((last + 1)) (sent $sent)"
if ((last + 1 >= 20 && got == last + 1 && sent - got <= 1)); then
	ok "the ping on VF0 vNIC 0 lost nothing across N 2 -> 3 -> 1 -> 2 ($got/$sent)"
else
	fail "the ping on VF0 vNIC 0 lost nothing: $got replies up to seq $last, $sent sent"
fi
host vnicctl show vf0

finish
