#!/usr/bin/env bash
# tests/fuzz.sh - runs vnicd's fuzz targets (fuzz/, docs/fuzzing.md).
#
# Installs cargo-fuzz if it is missing, builds the targets and runs each
# for a fixed time from a fresh copy of its seed corpus (fuzz/seeds/), then
# prints the executions each one made. Exits non-zero if any target
# crashes, hangs or fails an invariant; the input that did it is in
# fuzz/artifacts/<target>/ and the log in target/fuzz-logs/.
#
# Toolchain: nightly when rustup has it (cargo fuzz wants nightly for its
# sanitizer flags); otherwise the default toolchain with RUSTC_BOOTSTRAP=1.
# If a build with AddressSanitizer fails, the targets are built without a
# sanitizer (Rust code stays memory-safe; libFuzzer still finds panics).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(protocol rings frames control)
seconds=120
targets=()
# A single input running longer than this is a hang.
INPUT_TIMEOUT=10

usage() {
    cat <<EOF
usage: tests/fuzz.sh [--seconds N] [--target T]...
  --seconds N   run each target for N seconds (default $seconds)
  --target T    run only target T (repeatable): ${ALL_TARGETS[*]}
EOF
}

while (($#)); do
    case $1 in
    --seconds)
        seconds=${2:?--seconds needs a value}
        shift 2
        ;;
    --target)
        targets+=("${2:?--target needs a value}")
        shift 2
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
done
((${#targets[@]})) || targets=("${ALL_TARGETS[@]}")
[[ $seconds =~ ^[0-9]+$ ]] || {
    echo "fuzz.sh: --seconds takes a whole number" >&2
    exit 2
}
for t in "${targets[@]}"; do
    [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || {
        echo "fuzz.sh: no target $t (targets: ${ALL_TARGETS[*]})" >&2
        exit 2
    }
done

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# cargo fuzz, on nightly if rustup has a working one.
if command -v rustup >/dev/null && cargo +nightly --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
    echo "fuzz.sh: nightly: $(rustup run nightly rustc --version)"
else
    fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
    echo "fuzz.sh: no nightly; $(rustc --version) with RUSTC_BOOTSTRAP=1"
fi

# Release build with debug assertions: overflow in arithmetic on guest
# values panics, as it must never happen.
sanitizer=address
build() {
    "${fuzz[@]}" build -O --debug-assertions --sanitizer "$sanitizer" "$@"
}
build_all() {
    local t
    for t in "${targets[@]}"; do
        build "$t" || return 1
    done
}
echo "fuzz.sh: building ${targets[*]}"
if ! build_all; then
    echo "fuzz.sh: the build with AddressSanitizer failed; building without a sanitizer" >&2
    sanitizer=none
    build_all
fi

logs=target/fuzz-logs
work=fuzz/target/fuzz-corpus
mkdir -p "$logs"
failed=()
summary=()
for t in "${targets[@]}"; do
    rm -rf "${work:?}/$t"
    mkdir -p "$work"
    cp -r "fuzz/seeds/$t" "$work/$t"
    echo "fuzz.sh: $t for ${seconds}s"
    log=$logs/$t.log
    if "${fuzz[@]}" run -O --debug-assertions --sanitizer "$sanitizer" "$t" "$work/$t" -- \
        -max_total_time="$seconds" -timeout="$INPUT_TIMEOUT" -print_final_stats=1 \
        >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed+=("$t")
        tail -n 40 "$log" >&2
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    summary+=("$(printf '%-9s %-6s %10s executions %7s exec/s  (%ss, sanitizer %s)' \
        "$t" "$status" "${runs:-?}" "${rate:-?}" "$seconds" "$sanitizer")")
done

echo
echo "fuzz.sh: results"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "fuzz.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/, logs in $logs/)" >&2
    exit 1
fi
