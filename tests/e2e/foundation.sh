#!/bin/sh
# tests/e2e/foundation.sh - guest scenario: the card's functions enumerate as
# PCIe Ethernet functions, vnic.ko binds to each, receives its test interrupt
# and unloads cleanly (twice).
#
# Runs INSIDE the guest (as /scenario.sh), e.g.:
#   qemu/run-guest.sh --attach pf,vf0,vf1 --scenario tests/e2e/foundation.sh
#
# Expected functions come from /etc/vnic-run.env (VNIC_ATTACH, written by
# run-guest.sh). VNIC_MSIX_COUNT (default 9: 8 queue pairs + misc) is the
# MSI-X table size to expect. Prints "E2E-OK <check>" or "E2E-FAIL <check>:
# <detail>" per check; exits 1 if any check failed.
#
# Launcher options for tests/e2e/run.sh:
# run-guest: --attach pf,vf0,vf1 --vfs 4 --timeout 300

VENDOR=1ffe
PF_DEV=1000
VF_DEV=1001
MODULE=/lib/modules/vnic.ko
DRVDIR=/sys/bus/pci/drivers/vnic

# shellcheck disable=SC1091 # written into the guest by run-guest.sh
[ -f /etc/vnic-run.env ] && . /etc/vnic-run.env
VNIC_ATTACH=${VNIC_ATTACH-pf,vf0,vf1}
VNIC_MSIX_COUNT=${VNIC_MSIX_COUNT:-9}

FAILS=0
ok() { echo "E2E-OK $*"; }
fail() { echo "E2E-FAIL $*"; FAILS=$((FAILS + 1)); }

# expect NAME ERE TEXT: OK if a line of TEXT matches ERE
expect() {
	if printf '%s\n' "$3" | grep -Eq -- "$2"; then
		ok "$1"
	else
		fail "$1: nothing matches /$2/"
	fi
}

# expect_not NAME ERE TEXT: OK if no line of TEXT matches ERE
expect_not() {
	if printf '%s\n' "$3" | grep -Eq -- "$2"; then
		fail "$1: unexpected match for /$2/"
	else
		ok "$1"
	fi
}

# expect_count NAME GOT WANT
expect_count() {
	if [ "$2" -eq "$3" ]; then
		ok "$1: $2"
	else
		fail "$1: $2, want $3"
	fi
}

want_pf=0
want_vf=0
for fn in $(echo "$VNIC_ATTACH" | tr ',' ' '); do
	case $fn in
	pf) want_pf=$((want_pf + 1)) ;;
	vf*) want_vf=$((want_vf + 1)) ;;
	esac
done
want_all=$((want_pf + want_vf))
echo "foundation: expecting $want_pf PF and $want_vf VF function(s)" \
	"($VNIC_ATTACH), MSI-X Count=$VNIC_MSIX_COUNT"

slots() { lspci -D -n -d "$VENDOR:$1" | awk '{ print $1 }'; }

bound_count() {
	n=0
	for d in "$DRVDIR"/0000:*; do
		[ -e "$d" ] && n=$((n + 1))
	done
	echo "$n"
}

# Sum of the per-CPU counts on the /proc/interrupts line named NAME;
# -1 when there is no such line.
irq_count() {
	awk -v name="$1" '
		NR == 1 { ncpu = NF; next }
		$NF == name { s = 0; for (i = 2; i <= ncpu + 1; i++) s += $i;
			print s; found = 1 }
		END { if (!found) print -1 }' /proc/interrupts
}

# ------------------------------------------------------------ enumeration

echo "=== lspci -nn"
lspci -nn
echo "=== lspci -nn -vvv -d $VENDOR: (no driver)"
lspci -nn -vvv -d "$VENDOR:"

expect_count "PF functions $VENDOR:$PF_DEV" "$(slots $PF_DEV | wc -l)" \
	"$want_pf"
expect_count "VF functions $VENDOR:$VF_DEV" "$(slots $VF_DEV | wc -l)" \
	"$want_vf"

SLOTS="$(slots $PF_DEV) $(slots $VF_DEV)"

# Config space, as the guest sees it without a driver
for s in $SLOTS; do
	info=$(lspci -nn -vvv -s "$s")
	head=$(printf '%s\n' "$info" | head -n1)
	expect "$s class Ethernet controller [0200]" \
		'Ethernet controller \[0200\]' "$head"
	expect "$s revision 01" '\(rev 01\)' "$head"
	expect "$s subsystem 1ffe:0001" 'Subsystem: .*\[1ffe:0001\]' "$info"
	expect "$s BAR0 64-bit non-prefetchable 64K" \
		'Region 0: Memory at [0-9a-f]+ \(64-bit, non-prefetchable\) \[size=64K\]' \
		"$info"
	expect "$s BAR2 64-bit 16K (MSI-X)" \
		'Region 2: Memory at [0-9a-f]+ \(64-bit, (non-)?prefetchable\) \[size=16K\]' \
		"$info"
	expect "$s PCIe v2 endpoint" \
		'Express \(v2\) (Endpoint|Root Complex Integrated Endpoint)' \
		"$info"
	expect "$s DevCap FLReset+" \
		'FLReset\+' "$(printf '%s\n' "$info" | grep -A1 'DevCap:')"
	expect "$s power management capability" 'Power Management version' \
		"$info"
	expect "$s MSI-X Count=$VNIC_MSIX_COUNT" \
		"MSI-X: Enable[-+] Count=$VNIC_MSIX_COUNT " "$info"
	expect "$s MSI-X table in BAR2, PBA at 0x2000" \
		'PBA: BAR=2 offset=00002000' "$info"
	expect_not "$s no MSI capability" 'MSI: Enable' "$info"
done

# ------------------------------------------------------------ driver

echo "=== insmod $MODULE"
if insmod "$MODULE"; then
	ok "insmod vnic.ko"
else
	fail "insmod vnic.ko"
fi
echo "=== dmesg | grep vnic"
dmesg | grep -i vnic
expect_count "functions bound to vnic" "$(bound_count)" "$want_all"

echo "=== lspci -nn -vvv -d $VENDOR: (driver loaded)"
lspci -nn -vvv -d "$VENDOR:"
echo "=== /proc/interrupts (vnic)"
head -n1 /proc/interrupts
grep vnic /proc/interrupts

log=$(dmesg)
for s in $SLOTS; do
	info=$(lspci -vvv -s "$s")
	mine=$(printf '%s\n' "$log" | grep -F "$s")
	expect "$s MSI-X: Enable+ Count=$VNIC_MSIX_COUNT" \
		"MSI-X: Enable\\+ Count=$VNIC_MSIX_COUNT " "$info"
	expect "$s kernel driver in use: vnic" 'Kernel driver in use: vnic' \
		"$info"
	expect "$s identity logged" \
		'vnic [PV]F[0-9]* v1\.8, [0-9]+ queue pairs max, [0-9]+ enabled, MAC [0-9a-f:]{17}' \
		"$mine"
	expect "$s completions up to the card's head (HEAD_WB)" \
		'completions by head' "$mine"
	expect "$s test interrupt logged" 'test interrupt received' "$mine"
	n=$(irq_count "vnic-misc@$s")
	if [ "$n" -ge 1 ]; then
		ok "$s /proc/interrupts vnic-misc@$s: $n"
	else
		fail "$s /proc/interrupts vnic-misc@$s: $n (want >= 1; -1: no line)"
	fi
	n=$(cat "/sys/bus/pci/devices/$s/vnic_misc_irqs" 2>/dev/null || echo -1)
	if [ "$n" -ge 1 ]; then
		ok "$s sysfs vnic_misc_irqs: $n"
	else
		fail "$s sysfs vnic_misc_irqs: $n (want >= 1)"
	fi
done

# ------------------------------------------------------------ unload

echo "=== rmmod vnic"
if rmmod vnic; then
	ok "rmmod vnic"
else
	fail "rmmod vnic"
fi
expect_not "module gone from /proc/modules" '^vnic ' "$(cat /proc/modules)"
expect_not "no vnic-misc IRQs left" 'vnic-misc' "$(cat /proc/interrupts)"

# A second load/unload cycle: remove must leave every function probe-able.
echo "=== insmod/rmmod again"
if insmod "$MODULE"; then
	expect_count "reload: functions bound to vnic" "$(bound_count)" \
		"$want_all"
	if rmmod vnic; then ok "reload: rmmod vnic"; else fail "reload: rmmod vnic"; fi
else
	fail "reload: insmod vnic.ko"
fi

expect_not "no kernel oops, BUG or WARNING" \
	'BUG:|Oops|WARNING: CPU|Call Trace' "$(dmesg)"

if [ "$FAILS" -eq 0 ]; then
	echo "foundation: all checks passed"
	exit 0
fi
echo "foundation: $FAILS check(s) failed"
exit 1
