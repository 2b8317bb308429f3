#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 20), one
# after the other; exits non-zero as soon as one finds a crash (a panic,
# an abort, a sanitizer report, more than 2 GiB of memory, or one input
# running for more than 60 s). See fuzz/README.md.
#
#   bash fuzz/run.sh 20
set -euo pipefail

secs=${1:-20}
case "$secs" in
'' | *[!0-9]*)
    echo "usage: fuzz/run.sh SECONDS (seconds per target, a whole number)" >&2
    exit 2
    ;;
esac
fuzz=$(cd "$(dirname "$0")" && pwd)
cd "$fuzz/.."

if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
# cargo-fuzz passes nightly-only flags (-Z sanitizer=address, ...) to rustc;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
# Debug assertions and overflow checks on; 16 codegen units build faster.
flags=(-a --codegen-units 16)
targets=(onnx_load y4m decode image profile config)

start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz: built ${#targets[@]} targets in $(($(date +%s) - start)) s"

# Largest input per target: big enough for its seeds.
max_len() {
    case "$1" in
    onnx_load) echo 65536 ;;
    profile) echo 16384 ;;
    *) echo 4096 ;;
    esac
}

passed=0
for t in "${targets[@]}"; do
    corpus="$fuzz/corpus/$t"
    log="$fuzz/artifacts/$t.log"
    mkdir -p "$corpus" "$fuzz/artifacts"
    if cargo fuzz run "${flags[@]}" "$t" "$corpus" "$fuzz/seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=60 \
        -max_len="$(max_len "$t")" -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
        echo "fuzz: $t ${secs} s, ${runs:-?} executions, no crash"
        passed=$((passed + 1))
    else
        echo "fuzz: $t FOUND A CRASH (log: $log); the last lines:" >&2
        tail -n 40 "$log" >&2
        echo "fuzz: ${passed} passed, 1 failed"
        exit 1
    fi
done
echo "fuzz: all targets in $(($(date +%s) - start)) s"
echo "fuzz: ${passed} passed, 0 failed"
