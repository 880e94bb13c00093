#!/usr/bin/env bash
# qemu/demo.sh - the vnic demo: installs what is missing, builds vnicd,
# starts it as a card with a PF and two VFs (two vNICs each), and boots a
# QEMU guest with all three attached over vfio-user; inside, vnic.ko gives
# each vNIC a netdev and two vNICs of different VFs exchange ping and iperf3
# traffic through the card's switch (qemu/demo-guest.sh). The guest powers
# off at the end.
#
# The terminal shows the scenario's part of the guest console: from the
# guest's /init on ("VNIC-INIT: ..."), with the kernel's messages that come
# meanwhile (vnic.ko probing), up to "VNIC-SCENARIO-EXIT <status>". The
# whole console, the kernel's boot log included, stays in the log file the
# demo names (vnicd's log next to it), and so do the launcher's messages.
#
# Usage: qemu/demo.sh [--shell] [--kernel NAME]
#   --shell         boot the same guest interactively instead (insmod
#                   /lib/modules/vnic.ko yourself; Ctrl-a x quits QEMU)
#   --kernel NAME   the guest kernel: 6.1, 6.12 (the default) or latest
#                   (docs/guest-environment.md, "Guest kernels"); default
#                   $VNIC_KERNEL, else 6.12
set -euo pipefail
cd "$(dirname "$0")/.."

SHELL_MODE=0
KERNEL=${VNIC_KERNEL:-default}
while (($#)); do
	case $1 in
	--shell) SHELL_MODE=1 ;;
	--kernel) KERNEL=${2:?--kernel needs a name}; shift ;;
	-h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "demo.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done

qemu/setup.sh --kernel "$KERNEL"
cargo build --quiet -p vnic-device --bin vnicd

if ((SHELL_MODE)); then
	exec qemu/run-guest.sh --kernel "$KERNEL" --vfs 2 --attach pf,vf0,vf1
fi
LOG=$(mktemp -d "${TMPDIR:-/tmp}/vnic-demo.XXXXXX")/console.log
: >"$LOG"
echo "demo: booting the guest; its whole console (the kernel's boot log too) goes to $LOG"
qemu/run-guest.sh --kernel "$KERNEL" --vfs 2 --attach pf,vf0,vf1 --timeout 300 \
	--quiet --log "$LOG" --scenario qemu/demo-guest.sh &
RUN=$!
# The scenario's lines as they come: from /init on, up to its exit line
# (console lines end in CR LF). tail ends with the launcher.
tail -n +1 -F --pid="$RUN" "$LOG" 2>/dev/null |
	sed -u 's/\r$//' |
	awk '/^VNIC-INIT:/ { on = 1 } on { print; fflush() } /^VNIC-SCENARIO-EXIT/ { exit }' &
SHOW=$!
RC=0
wait "$RUN" || RC=$?
wait "$SHOW" 2>/dev/null || true
echo "demo: the guest's whole console: $LOG"
exit "$RC"
