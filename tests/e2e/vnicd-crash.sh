#!/bin/bash
# tests/e2e/vnicd-crash.sh - guest scenario: tests/e2e/migrate.sh across a
# crash of vnicd. When the guest prints VNIC-MIGRATE, the launcher exports
# the card's configuration, kills vnicd with SIGKILL (no quiesce: the queue
# contexts in guest memory are as the card last wrote them back, at the
# end of its last turn) and waits while the guest runs against a dead
# card (QEMU 11 keeps the VM running; the device reads all-ones and vnic.ko
# marks the functions gone). Then the guest is moved to a new QEMU through
# a migration file (vfio-user-pci is not in the stream, so saving needs no
# server), attached to a new vnicd started from the exported configuration;
# vnic.ko restores the functions and traffic goes on
# (docs/robustness.md, "vnicd killed and restarted").
#
# Launcher options for tests/e2e/main.rs:
# run-guest: --attach vf0,vf1 --vfs 2 --mem 1024 --timeout 400 --migrate file --crash-vnicd --add tests/e2e/migrate.sh:/etc/vnic-migrate.sh --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 2

# shellcheck source=tests/e2e/migrate.sh
. /etc/vnic-migrate.sh
