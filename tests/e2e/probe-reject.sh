#!/bin/sh
# tests/e2e/probe-reject.sh - guest scenario: vnic.ko distrusts the device.
# Forced onto a foreign PCI function (QEMU's "edu" device, whose BAR0 starts
# with the ID 0x010000ed), the probe must fail with a clear message, unwind
# completely, and leave the module removable. Needs no vnicd.
#
# Launcher options for tests/e2e/run.sh:
# run-guest: --attach= --no-vnicd --qemu-arg -device --qemu-arg edu --timeout 120

EDU=1234:11e8
DRVDIR=/sys/bus/pci/drivers/vnic

FAILS=0
ok() { echo "E2E-OK $*"; }
fail() { echo "E2E-FAIL $*"; FAILS=$((FAILS + 1)); }

slot=$(lspci -D -n -d "$EDU" | awk '{ print $1; exit }')
if [ -z "$slot" ]; then
	fail "edu device present"
	exit 1
fi
ok "edu device present at $slot"
lspci -nn -vv -s "$slot"

if insmod /lib/modules/vnic.ko; then ok "insmod vnic.ko"; else fail "insmod"; fi

# new_id makes the driver probe every matching unbound function.
echo "1234 11e8" >"$DRVDIR/new_id"
sleep 1
dmesg | grep -F "$slot"

if dmesg | grep -F "$slot" | grep -q "unexpected ID register 0x010000ed"; then
	ok "probe refused the foreign ID with a clear message"
else
	fail "no 'unexpected ID register 0x010000ed' message for $slot"
fi
if [ -e "$DRVDIR/$slot" ]; then
	fail "vnic bound to the foreign device"
else
	ok "vnic not bound to the foreign device"
fi
if lspci -vv -s "$slot" | grep -q 'Control: .*BusMaster-'; then
	ok "bus mastering left off"
else
	fail "bus mastering left on: $(lspci -vv -s "$slot" | grep 'Control:')"
fi
if grep -q ': vnic$' /proc/iomem; then
	fail "memory region still claimed by vnic: $(grep ': vnic$' /proc/iomem)"
else
	ok "no memory region left claimed by vnic"
fi

echo "1234 11e8" >"$DRVDIR/remove_id" 2>/dev/null
if rmmod vnic; then ok "rmmod vnic"; else fail "rmmod vnic"; fi

if dmesg | grep -Eq 'BUG:|Oops|WARNING: CPU|Call Trace'; then
	fail "kernel oops, BUG or WARNING"
else
	ok "no kernel oops, BUG or WARNING"
fi

if [ "$FAILS" -eq 0 ]; then
	echo "probe-reject: all checks passed"
	exit 0
fi
echo "probe-reject: $FAILS check(s) failed"
exit 1
