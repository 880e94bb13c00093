#!/bin/bash
# tests/e2e/doorbell-guest.sh - guest scenario: tests/e2e/doorbell.sh with
# vnic.ko's doorbell page in guest memory (interface 1.4, DB_MODE=guest):
# vnicd offers no BAR page, so QEMU keeps posting register writes, and the
# card polls the page the driver's BAT names.
#
# Runs INSIDE the guest (as /scenario.sh).
#
# Launcher options for tests/e2e/main.rs:
# run-guest: --attach vf0,vf1 --vfs 2 --mem 1024 --timeout 240 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh --add tests/e2e/doorbell.sh:/etc/vnic-doorbell.sh -- --vnics-per-vf 1

DB_MODE=guest
# shellcheck source=tests/e2e/doorbell.sh
. /etc/vnic-doorbell.sh
