#!/bin/bash
# tests/e2e/hotunplug-qemu.sh - guest scenario for the test of what QMP
# device_del of a vnic function does to this QEMU (tests/e2e/main.rs,
# device_del_of_a_vnic_function_aborts_qemu_11_1_3_and_vnicd_carries_on;
# docs/guest-environment.md, "Hotplug"). The test drives QMP itself.
#
# Loads vnic.ko with no function attached and prints UNPLUG-READY; the test
# then hot-adds VF1 on root port rp1. Once vnic.ko has bound it and its vNIC
# 0 (02:76:6e:00:02:00) is up, prints UNPLUG-BOUND, and the test sends
# device_del. QEMU 11.1.3 aborts there, under this script, which therefore
# never ends by itself (the launcher's timeout bounds it). With
# VNIC_HOTUNPLUG=1 (a QEMU with the fix) the function goes away instead:
# the script checks that its netdev and PCI function are gone, unloads
# vnic.ko and checks the whole dmesg (no WARNING, BUG, Oops, call trace).
#
# Launcher options for tests/e2e/main.rs (vnicd's are the test's):
# run-guest: --attach= --vfs 2 --root-ports 1 --mem 512 --timeout 150 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh

# shellcheck disable=SC2317 # functions run through wait_for look unreachable
MODULE=/lib/modules/vnic.ko
MAC=02:76:6e:00:02:00 # VF1 queue pair 0
BDF=0000:01:00.0      # behind root port rp1

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh
# shellcheck disable=SC1091 # written by the launcher
. /etc/vnic-run.env
UNPLUG=${VNIC_HOTUNPLUG:-0}

finish() {
	step "teardown"
	unload_and_check_kernel
	summary hotunplug-qemu
}

gone() { ! dev_by_mac "$MAC" && [[ ! -e /sys/bus/pci/devices/$BDF ]]; }

insmod "$MODULE" || abort "insmod vnic.ko" "insmod failed"
echo "UNPLUG-READY"
wait_for 60 dev_by_mac "$MAC" || abort "VF1 hot-added" "no netdev with $MAC in 60 s"
DEV=$(dev_by_mac "$MAC")
ip link set "$DEV" up
ok "VF1 hot-added, bound to $(basename "$(readlink -f /sys/bus/pci/devices/$BDF/driver)"), $DEV up"
echo "UNPLUG-BOUND $DEV"

if ((UNPLUG != 1)); then
	# QEMU 11.1.3 aborts during the device_del that follows.
	sleep 120
	fail "QEMU still runs 120 s after UNPLUG-BOUND"
	finish
fi
if wait_for 60 gone; then
	ok "device_del: VF1's netdev and PCI function gone"
else
	fail "device_del: VF1 still there after 60 s"
fi
finish
