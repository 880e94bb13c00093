#!/bin/bash
# tests/e2e/host-channel.sh - guest scenario: the host channel. The guest
# asks the host to run vnicctl against the card it is attached to and gets
# the output and exit status back (tests/e2e/lib.sh: host). Checks: the
# plumbing (vnicctl --version: output and status 0; a usage error: status 2
# with clap's message; a command other than vnicctl refused in the guest),
# then the card's answers: "list" names vf0, and "vnics vf0 99" (outside
# 1..=X) is refused with status 1.
#
# Runs INSIDE the guest (as /scenario.sh), served by
# vnic_tests::e2e::run_scenario_with_host, or by hand:
#   qemu/run-guest.sh --attach vf0 --host-channel /tmp/hc \
#       --add tests/e2e/lib.sh:/etc/vnic-e2e.sh --scenario tests/e2e/host-channel.sh
#   (with a program on the host answering on /tmp/hc.out -> /tmp/hc.in)
#
# Launcher options for tests/e2e/main.rs:
# run-guest: --attach vf0 --vfs 2 --timeout 120 --add tests/e2e/lib.sh:/etc/vnic-e2e.sh

# shellcheck source=tests/e2e/lib.sh
. /etc/vnic-e2e.sh

step "plumbing: host vnicctl --version"
host vnicctl --version
rc=$?
if ((rc == 0)) && [[ $HOST_OUT == vnicctl\ * ]]; then
	ok "host vnicctl --version: rc 0, '${HOST_OUT%$'\n'}'"
else
	fail "host vnicctl --version: rc $rc, output '$HOST_OUT'"
fi

step "plumbing: a usage error comes back with its status and stderr"
host vnicctl no-such-command
rc=$?
if ((rc == 2)) && [[ $HOST_OUT == *no-such-command* ]]; then
	ok "host vnicctl no-such-command: rc 2 and clap's message"
else
	fail "host vnicctl no-such-command: rc $rc, want 2; output '$HOST_OUT'"
fi

step "plumbing: only vnicctl is served"
host ls /
rc=$?
if ((rc == 2)); then
	ok "host ls: refused in the guest (rc 2)"
else
	fail "host ls: rc $rc, want 2"
fi

step "host vnicctl list"
host vnicctl list
rc=$?
if ((rc == 0)) && [[ $HOST_OUT == *vf0* ]]; then
	ok "host vnicctl list: rc 0, names vf0"
else
	fail "host vnicctl list: rc $rc, want 0 and vf0 in the output"
fi

step "host vnicctl vnics vf0 99 (outside 1..=X)"
host vnicctl vnics vf0 99
rc=$?
if ((rc == 1)) && [[ -n $HOST_OUT ]]; then
	ok "host vnicctl vnics vf0 99: refused, rc 1"
else
	fail "host vnicctl vnics vf0 99: rc $rc, want 1 with the card's message"
fi

if ((FAILS == 0)); then
	echo "host-channel: all checks passed"
	exit 0
fi
echo "host-channel: $FAILS check(s) failed"
exit 1
