#!/bin/bash
# tests/e2e/migrate-stopped.sh - guest scenario: tests/e2e/migrate.sh with
# vnic.ko recovery=1 and a new vnicd without VCT entries (savevm/loadvm,
# --migrate-drop-vct): after the restore the functions stay stopped, with no
# traffic and no queue error, until management writes each VCT entry (host
# vnicctl vct set FN <the function's vnic_bat>); then the queues resume.
#
# Launcher options for tests/e2e/main.rs:
# run-guest: --attach vf0,vf1 --vfs 2 --mem 1024 --timeout 400 --migrate savevm --migrate-drop-vct --env MIGRATE_EXPECT=stopped --add tests/e2e/migrate.sh:/etc/vnic-migrate.sh --add tests/e2e/lib.sh:/etc/vnic-e2e.sh -- --vnics-per-vf 2

# shellcheck source=tests/e2e/migrate.sh
. /etc/vnic-migrate.sh
