#!/bin/sh
# qemu/demo-guest.sh - what the demo shows inside the guest (run by
# qemu/demo.sh as the guest's scenario): the card's functions on the PCI
# bus, vnic.ko binding them, and the card's MSI-X interrupts arriving.
set -e

echo "=== The card as the guest sees it (lspci -nn -d 1ffe:)"
lspci -nn -d 1ffe:
echo
echo "=== Loading vnic.ko"
insmod /lib/modules/vnic.ko
dmesg | grep ' vnic ' | sed 's/^\[[ 0-9.]*\] //'
echo
echo "=== Functions bound to vnic"
ls /sys/bus/pci/drivers/vnic | grep '^0000:'
echo
echo "=== MSI-X of the first function"
lspci -vv -s "$(lspci -n -d 1ffe: | awk 'NR == 1 { print $1 }')" | grep -A2 'MSI-X'
echo
echo "=== Interrupts raised by the card (/proc/interrupts)"
grep vnic /proc/interrupts
echo
echo "=== Unloading vnic.ko"
rmmod vnic
echo "demo done"
