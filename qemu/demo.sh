#!/usr/bin/env bash
# qemu/demo.sh - the vnic demo: installs what is missing, builds vnicd,
# starts it as a card with a PF and two VFs, and boots a QEMU guest with all
# three attached over vfio-user; inside, vnic.ko binds them and receives the
# card's interrupts (qemu/demo-guest.sh). The guest powers off at the end.
#
# Usage: qemu/demo.sh [--shell]
#   --shell   boot the same guest interactively instead (insmod
#             /lib/modules/vnic.ko yourself; Ctrl-a x quits QEMU)
set -euo pipefail
cd "$(dirname "$0")/.."

qemu/setup.sh
cargo build --quiet -p vnic-device --bin vnicd

if [[ ${1:-} == --shell ]]; then
	exec qemu/run-guest.sh --vfs 2 --attach pf,vf0,vf1
fi
exec qemu/run-guest.sh --vfs 2 --attach pf,vf0,vf1 --timeout 300 \
	--scenario qemu/demo-guest.sh
