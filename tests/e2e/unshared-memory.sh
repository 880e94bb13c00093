#!/bin/bash
# tests/e2e/unshared-memory.sh - guest scenario: QEMU started without shared
# guest memory (no memory-backend-memfd,share=on), so it offers its RAM to
# vnicd without file descriptors and the card cannot reach it. Checks that
# vnic.ko says so at probe, in one line per function naming QEMU's option,
# binds nothing and registers no netdev, and unloads cleanly. The test
# checks the host side: one refusal per function in QEMU's log and in
# vnicd's, and vnicctl show naming the problem.
#
# Runs INSIDE the guest (as /scenario.sh). Prints "E2E-OK <check>" or
# "E2E-FAIL <check>: <detail>"; exits 1 if any check failed.
#
# Launcher options for tests/e2e/main.rs:
# run-guest: --attach pf,vf0 --vfs 1 --unshared-memory --timeout 180 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

finish() {
	unload_and_check_kernel
	summary unshared-memory
}

step "insmod vnic.ko"
insmod /lib/modules/vnic.ko || abort "insmod vnic.ko" "failed"
sleep 1
step "dmesg | grep vnic"
dmesg | grep -i vnic
lines=$(dmesg | grep -c "the card cannot reach guest memory: QEMU's RAM is not shared; run QEMU with -object memory-backend-memfd,id=mem,size=<RAM>,share=on")
if ((lines == 2)); then
	ok "one line per function names QEMU's share=on option"
else
	fail "one line per function names QEMU's share=on option: $lines lines"
fi
bound=$(find /sys/bus/pci/drivers/vnic -maxdepth 1 -name '0000:*' | wc -l)
if ((bound == 0)); then
	ok "vnic bound no function"
else
	fail "vnic bound no function: $bound bound"
fi
if grep -q '^02:76:6e:' /sys/class/net/*/address; then
	fail "no vnic netdev: $(ip -br link | tr '\n' ';')"
else
	ok "no vnic netdev"
fi
if host vnicctl show vf0 && [[ $HOST_OUT == *"guest memory is not shared"* ]]; then
	ok "vnicctl show vf0 says the guest memory is not shared"
else
	fail "vnicctl show vf0 says the guest memory is not shared"
fi
finish
