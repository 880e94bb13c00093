#!/usr/bin/env bash
# tests/run.sh - the whole test suite, from a fresh Debian 12 machine.
#
# Installs what is missing (qemu/setup.sh --kernel all: QEMU with
# vfio-user, every supported guest kernel (6.1, 6.12, latest) with its
# headers and compiler, busybox and guest tools, vnic.ko and an initramfs per
# kernel), then checks formatting and lints, and runs every test: unit
# tests, vfio-user protocol tests (rust-vmm client and hostile clients), the
# end-to-end guest tests under QEMU (all of them on the default guest kernel,
# the smoke set on every kernel) and a short run of every fuzz target
# (tests/fuzz.sh). Exits non-zero on any failure.
# Guest console logs of failed end-to-end tests stay in target/e2e-logs/.
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$(date +%s)
step() { printf '\n=== %s (%ss)\n' "$*" "$(($(date +%s) - t0))"; }

step "setup: qemu/setup.sh --kernel all"
qemu/setup.sh --kernel all

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# fuzz/ is a workspace of its own (docs/fuzzing.md).
cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --quiet -- -D warnings
make -s -C guest-driver checkpatch
shellcheck -x qemu/*.sh tests/*.sh tests/e2e/*.sh tests/bench/*.sh tests/soak/*.sh

step "build"
cargo build --workspace --all-targets --quiet

step "tests"
cargo test --workspace --no-fail-fast

step "fuzz: seeds and saved crash inputs, then a short run of every target"
cargo run --quiet --manifest-path fuzz/Cargo.toml --example gen-seeds -- --check
tests/fuzz.sh --seconds 10

step "done"
