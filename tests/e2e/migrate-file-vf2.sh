#!/bin/bash
# tests/e2e/migrate-file-vf2.sh - guest scenario: tests/e2e/migrate.sh with
# the guest migrated to a file (migrate file: / -incoming) and VF0's state
# restored onto VF2 of the new vnicd (vnicctl remap vf0=vf2; QEMU gets
# vf2.sock where it had vf0.sock, at the same PCI address). The card's
# counters are read from vf2 after the migration.
#
# Launcher options for tests/e2e/main.rs:
# run-guest: --attach vf0,vf1 --vfs 3 --mem 1024 --timeout 400 --migrate file --migrate-map vf0=vf2 --env MIGRATE_MAP=vf0=vf2 --add tests/e2e/migrate.sh:/etc/vnic-migrate.sh --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 2

# shellcheck source=tests/e2e/migrate.sh
. /etc/vnic-migrate.sh
