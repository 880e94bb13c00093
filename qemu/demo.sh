#!/usr/bin/env bash
# qemu/demo.sh - the vnic demo: installs what is missing, builds vnicd,
# starts it as a card with a PF and two VFs (two vNICs each), and boots a
# QEMU guest with all three attached over vfio-user; inside, vnic.ko gives
# each vNIC a netdev and two vNICs of different VFs exchange ping and iperf3
# traffic through the card's switch (qemu/demo-guest.sh). The guest powers
# off at the end.
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
