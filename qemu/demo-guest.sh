#!/bin/sh
# qemu/demo-guest.sh - what the demo shows inside the guest (run by
# qemu/demo.sh as the guest's scenario): the card's functions on the PCI
# bus, vnic.ko giving every queue pair (vNIC) a netdev, and traffic between
# vNICs of two VFs, in two network namespaces, through the card's switch.
set -e

# The netdev whose MAC is $1 (the card's default: 02:76:6e:00:FF:QQ).
by_mac() {
	for d in /sys/class/net/*; do
		[ "$(cat "$d/address")" = "$1" ] && basename "$d" && return 0
	done
	return 1
}

echo "=== The card as the guest sees it (lspci -nn -d 1ffe:)"
lspci -nn -d 1ffe:
echo
echo "=== Loading vnic.ko: one netdev per vNIC"
insmod /lib/modules/vnic.ko
sleep 1
for d in /sys/class/net/*; do
	n=$(basename "$d")
	[ "$(basename "$(readlink "$d/device/driver" 2>/dev/null)")" = vnic ] || continue
	echo "$n  $(cat "$d/address")  $(basename "$(readlink "$d/device")")  queue pair $(cat "$d/dev_port")"
done
echo
A=$(by_mac 02:76:6e:00:01:00)	# VF0, queue pair 0
B=$(by_mac 02:76:6e:00:02:01)	# VF1, queue pair 1
echo "=== $A (VF0 vNIC 0) in namespace a as 10.0.0.1, $B (VF1 vNIC 1) in b as 10.0.0.2"
ip netns add a
ip netns add b
ip link set "$A" netns a
ip link set "$B" netns b
ip -n a addr add 10.0.0.1/24 dev "$A"
ip -n b addr add 10.0.0.2/24 dev "$B"
ip -n a link set "$A" up
ip -n b link set "$B" up
echo
echo "=== ping 10.0.0.2 from a"
ip netns exec a ping -c 5 -W 2 10.0.0.2
echo
echo "=== iperf3 TCP, a -> b, 5 s"
ip netns exec b iperf3 -s -1 -D
sleep 2
ip netns exec a timeout 30 iperf3 -c 10.0.0.2 -t 5 -f m 2>&1 | tail -4
echo
echo "=== The card's counters for $A (ethtool -S)"
ip netns exec a ethtool -S "$A" | grep -E 'tx_packets|rx_packets|tx_bytes|rx_bytes|drops'
echo
echo "=== Interrupts raised by the card (/proc/interrupts)"
grep vnic /proc/interrupts | awk '{ print $1, $2 + $3, $NF }'
echo
echo "=== Cleaning up and unloading vnic.ko"
ip netns del a
ip netns del b
sleep 1
rmmod vnic
echo "demo done"
