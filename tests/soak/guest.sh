#!/bin/bash
# tests/soak/guest.sh - guest scenario of the soak test (tests/soak.sh runs
# two guests, A and B, on one vnicd; this script is both, by SOAK_ROLE).
#
# Each guest has two VFs; vNIC 0 of each goes into a network namespace of
# its own (n0, n1), all four in 10.7.0.0/24:
#   A: n0 = VF0 10.7.0.1   n1 = VF1 10.7.0.2
#   B: n0 = VF2 10.7.0.3   n1 = VF3 10.7.0.4
# Servers: n0 iperf3 :5201 and an echo server :6000 (nc -ll -e cat); n1 an
# echo server :6001 and iperf3 :5202 (the accounting flow).
#
# For SOAK_SECONDS, while the host changes VF1's and VF3's vNIC counts and
# VF0's and VF2's TX rate policies (tests/soak.sh):
#   - iperf3 from n0 to the other guest's n0, 15 s runs, alternating TCP
#     (4 streams) and UDP (10 Mbit/s of 300-byte datagrams);
#   - echo rounds: a fresh 1 MiB random file sent through three echo
#     servers and compared with what comes back (sha256 and size): the
#     other guest's n0 (VF to VF across QEMU processes), this guest's n1
#     (VF to VF inside the guest) and, from n1, the other guest's n1.
#     Any difference is "SOAK-CORRUPT".
# Then one accounting flow, alone on its two VFs: 5 s of UDP from n0 to n1
# at 40 Mbit/s while the host limits n1's VF to 20 Mbit/s (RX policy).
# The guest prints the frames its netdevs sent, received and dropped on the
# way ("SOAK-ACCOUNT-END"; iperf3 is only the generator: its own count
# misses datagrams that land after its last report, and its TCP control
# connection shares the way); the host adds the card's receive-side drops
# between SOAK-ACCOUNT-BEGIN and -END and checks that
#   sent = received + card drops + guest drops.
#
# Prints "E2E-OK <check>" / "E2E-FAIL <check>: <detail>"; exits 1 if any
# check failed. Every wait is bounded.

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
ENV_FILE=/etc/vnic-run.env
FILE_BYTES=$((1024 * 1024))
IPERF_SECONDS=15
PEER_WAIT_SECONDS=180
ACCOUNT_SECONDS=5
ACCOUNT_RATE=40M
ACCOUNT_LEN=1000

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

# SOAK_ROLE and SOAK_SECONDS come from tests/soak.sh (run-guest.sh --env).
# shellcheck disable=SC1090
. "$ENV_FILE"
ROLE=${SOAK_ROLE:-}
SOAK_SECONDS=${SOAK_SECONDS:-60}
case $ROLE in
a) MAC0=02:76:6e:00:01:00 MAC1=02:76:6e:00:02:00 IP0=10.7.0.1 IP1=10.7.0.2
	PEER0=10.7.0.3 PEER1=10.7.0.4 ;;
b) MAC0=02:76:6e:00:03:00 MAC1=02:76:6e:00:04:00 IP0=10.7.0.3 IP1=10.7.0.4
	PEER0=10.7.0.1 PEER1=10.7.0.2 ;;
*)
	echo "E2E-FAIL soak: SOAK_ROLE '$ROLE' is not a or b"
	exit 1
	;;
esac

finish() {
	step "teardown"
	pkill iperf3
	pkill -f 'nc -ll'
	drop_namespaces n0 n1
	unload_and_check_kernel
	summary "soak-$ROLE"
}

# stat NS DEV NAME: a netdev statistic (sysfs) of DEV in namespace NS.
stat() { ip netns exec "$1" cat "/sys/class/net/$2/statistics/$3"; }

# account_counters: "sent dropped received" of the accounting flow's way,
# in frames, as this guest's netdevs count them: every frame n0's stack
# handed DEV0 (tx_packets + tx_dropped), the ones the guest dropped
# (DEV0's tx_dropped, whoever refused them, and DEV1's rx_dropped), and the
# frames DEV1 passed up (rx_packets). Frames, not datagrams: iperf3's TCP
# control connection shares the way and the card's drop counters.
account_counters() {
	local tx txd rx rxd
	tx=$(stat n0 "$DEV0" tx_packets) txd=$(stat n0 "$DEV0" tx_dropped)
	rx=$(stat n1 "$DEV1" rx_packets) rxd=$(stat n1 "$DEV1" rx_dropped)
	echo $((tx + txd)) $((txd + rxd)) "$rx"
}

# echo_round NS DST PORT: one file through the echo server at DST:PORT;
# counts the round in ECHOED or in CORRUPT/LOST.
echo_round() {
	local back sent got size
	back=/tmp/back-$1-$3.bin
	# ip first: busybox's timeout would run its own "ip" applet.
	retry_connect 20 /tmp/echo.err ip netns exec "$1" timeout 60 \
		nc "$2" "$3" </tmp/send.bin >"$back"
	local rc=$?
	sent=$(sha256sum </tmp/send.bin | cut -d' ' -f1)
	got=$(sha256sum <"$back" | cut -d' ' -f1)
	size=$(wc -c <"$back")
	if ((rc != 0)); then
		LOST=$((LOST + 1))
		echo "SOAK-LOST $1 -> $2:$3: nc status $rc, $size of $FILE_BYTES bytes back $(cat /tmp/echo.err)"
	elif [[ $got != "$sent" || $size != "$FILE_BYTES" ]]; then
		CORRUPT=$((CORRUPT + 1))
		echo "SOAK-CORRUPT $1 -> $2:$3: $size bytes sha256 $got, sent $sent"
	else
		ECHOED=$((ECHOED + 1))
	fi
}

# iperf_loop END: iperf3 runs from n0 to the other guest's n0 until END
# (ms since boot); prints each run's summary and a total.
iperf_loop() {
	local end=$1 runs=0 bad=0 rc args
	while (($(now_ms) + IPERF_SECONDS * 1000 < end)); do
		if ((runs % 2 == 0)); then
			args=(-P 4)
		else
			args=(-u -b 10M -l 300)
		fi
		retry_connect 30 /tmp/iperf3-c.err ip netns exec n0 \
			timeout $((IPERF_SECONDS + 30)) iperf3 -c "$PEER0" -p 5201 \
			-t "$IPERF_SECONDS" -f m "${args[@]}" >/tmp/iperf3-c.log
		rc=$?
		runs=$((runs + 1))
		grep -E 'SUM.*(sender|receiver)|^\[ *[0-9]+\].*receiver' /tmp/iperf3-c.log |
			tail -n 2 | sed "s/^/  [iperf3 ${args[*]}] /"
		if ((rc != 0)); then
			bad=$((bad + 1))
			echo "  [iperf3] status $rc: $(tail -n 2 /tmp/iperf3-c.err)"
		fi
	done
	echo "SOAK-IPERF runs=$runs failed=$bad"
}

# ------------------------------------------------------------ vNICs

step "soak-$ROLE: insmod $MODULE"
insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
netdev_for DEV0 "$MAC0"
netdev_for DEV1 "$MAC1"
no_ipv6 "$DEV0"
no_ipv6 "$DEV1"
in_ns n0 "$DEV0" "$IP0"
in_ns n1 "$DEV1" "$IP1"
ok "vNICs $MAC0 ($DEV0, n0 $IP0) and $MAC1 ($DEV1, n1 $IP1)"

ip netns exec n0 iperf3 -s -p 5201 >/tmp/iperf3-s0.log 2>&1 &
ip netns exec n1 iperf3 -s -p 5202 >/tmp/iperf3-s1.log 2>&1 &
ip netns exec n0 nc -ll -p 6000 -e /bin/cat &
ip netns exec n1 nc -ll -p 6001 -e /bin/cat &
wait_for 15 listening n0 5201 || fail "iperf3 server in n0"
wait_for 15 listening n1 5202 || fail "iperf3 server in n1"
wait_for 15 listening n0 6000 || fail "echo server in n0"
wait_for 15 listening n1 6001 || fail "echo server in n1"

step "waiting for the other guest ($PEER0, $PEER1), up to $PEER_WAIT_SECONDS s"
if wait_for "$PEER_WAIT_SECONDS" ip netns exec n0 ping -c 1 -W 1 "$PEER0" &&
	wait_for 30 ip netns exec n1 ping -c 1 -W 1 "$PEER1"; then
	ok "the other guest answers"
else
	abort "the other guest answers" "no reply from $PEER0/$PEER1"
fi

# ------------------------------------------------------------ mixed traffic

echo "SOAK-START $ROLE seconds=$SOAK_SECONDS"
end=$(($(now_ms) + SOAK_SECONDS * 1000))
iperf_loop "$end" &
iperf_pid=$!
ECHOED=0 CORRUPT=0 LOST=0 rounds=0 next_report=0
while (($(now_ms) < end)); do
	head -c "$FILE_BYTES" /dev/urandom >/tmp/send.bin
	echo_round n0 "$PEER0" 6000
	echo_round n0 "$IP1" 6001
	echo_round n1 "$PEER1" 6001
	rounds=$((rounds + 1))
	if (($(now_ms) >= next_report)); then
		echo "SOAK-PROGRESS $ROLE rounds=$rounds echoed=$ECHOED corrupt=$CORRUPT lost=$LOST"
		next_report=$(($(now_ms) + 60000))
	fi
done
wait "$iperf_pid"
echo "SOAK-TRAFFIC-END $ROLE rounds=$rounds echoed=$ECHOED corrupt=$CORRUPT lost=$LOST"
if ((CORRUPT == 0 && ECHOED > 0)); then
	ok "$ECHOED files echoed intact, none corrupted"
else
	fail "echo rounds: $CORRUPT corrupted, $ECHOED intact"
fi
if ((LOST == 0)); then
	ok "every echo round completed"
else
	fail "echo rounds: $LOST did not complete"
fi

# ------------------------------------------------------------ accounting

# Give the other guest's last runs time to end, so that n0 and n1 carry
# only the accounting flow; no ARP during it either.
sleep 20
ip -n n0 neigh replace "$IP1" lladdr "$MAC1" dev "$DEV0" nud permanent
ip -n n1 neigh replace "$IP0" lladdr "$MAC0" dev "$DEV1" nud permanent
step "accounting flow: UDP n0 -> n1, $ACCOUNT_RATE for $ACCOUNT_SECONDS s"
echo "SOAK-ACCOUNT-BEGIN $ROLE"
sleep 4
# A here-string, not <(...): the initramfs has no /dev/fd.
read -r s0 d0 r0 <<<"$(account_counters)"
ip netns exec n0 timeout $((ACCOUNT_SECONDS + 30)) iperf3 -c "$IP1" -p 5202 -u \
	-b "$ACCOUNT_RATE" -l "$ACCOUNT_LEN" -t "$ACCOUNT_SECONDS" >/tmp/account.log 2>&1
arc=$?
# Whatever is still on its way lands within this.
sleep 2
read -r s1 d1 r1 <<<"$(account_counters)"
sed 's/^/  [account] /' /tmp/account.log | grep -E 'sender|receiver|error'
sent=$((s1 - s0)) received=$((r1 - r0))
echo "SOAK-ACCOUNT-END $ROLE status=$arc sent=$sent received=$received guest_drops=$((d1 - d0))"
sleep 4
if ((arc == 0 && ${sent:-0} > 0)); then
	ok "accounting flow ran: sent ${sent} received ${received}"
else
	fail "accounting flow: iperf3 status $arc $(tail -n 3 /tmp/account.log)"
fi

finish
