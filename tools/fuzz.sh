#!/usr/bin/env bash
# Short fuzzing run (fuzz/README.md): every cargo-fuzz target in fuzz/ for N seconds each
# (default 30), one after another with one worker, after replaying the crash inputs kept in
# fuzz/regressions/<target>/. Needs a nightly toolchain (libFuzzer's instrumentation); when
# there is none it prints "skipped: ..." and exits 0. cargo-fuzz is installed from crates.io
# when absent. Exits non-zero when any target finds a crash, a hang (-timeout) or an
# allocation over the limit (-rss_limit_mb, -malloc_limit_mb); the input is then in
# fuzz/artifacts/<target>/.
#
# Usage: tools/fuzz.sh [seconds-per-target]
# Environment: STARLING_FUZZ_TARGET_DIR, where the nightly build goes (default fuzz/target;
# CARGO_TARGET_DIR is not used, so that the stable build's directory is not shared);
# STARLING_FUZZ_LIMIT_MB, the memory limit (default 256). Unless ASAN_OPTIONS says otherwise,
# AddressSanitizer's quarantine of freed memory (256 MB by default, counted in the RSS limit)
# is cut to 32 MB, and it records no stack per allocation (2 to 3 times the executions per
# second; replay a crash input with the default to see where its memory came from).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
limit_mb="${STARLING_FUZZ_LIMIT_MB:-256}"
target_dir="${STARLING_FUZZ_TARGET_DIR:-$PWD/fuzz/target}"
unset CARGO_TARGET_DIR
export ASAN_OPTIONS="${ASAN_OPTIONS:-quarantine_size_mb=32:malloc_context_size=0}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: skipped: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (crates.io)"
    cargo install cargo-fuzz --locked --quiet
fi

started=$(date +%s)
cargo +nightly fuzz build --target-dir "$target_dir"
built=$(date +%s)
echo "fuzz.sh: built in $((built - started)) s"

failed=()
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in $(cargo +nightly fuzz list); do
    flags=(-rss_limit_mb="$limit_mb" -malloc_limit_mb="$limit_mb" -timeout=10 -print_final_stats=1)
    [ -f "fuzz/dict/$target.dict" ] && flags+=(-dict="fuzz/dict/$target.dict")
    regressions="fuzz/regressions/$target"
    if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions")" ]; then
        # Files as arguments: libFuzzer runs each once.
        if ! cargo +nightly fuzz run --target-dir "$target_dir" "$target" "$regressions"/* -- \
            "${flags[@]}" >"$work/$target.replay.log" 2>&1; then
            tail -n 30 "$work/$target.replay.log" >&2
            failed+=("$target (regression replay)")
            continue
        fi
    fi
    # New inputs go to a scratch directory; the committed seeds are only read.
    mkdir -p "$work/$target" "fuzz/corpus/$target"
    echo "fuzz.sh: $target for ${seconds} s"
    if ! cargo +nightly fuzz run --target-dir "$target_dir" "$target" "$work/$target" "fuzz/corpus/$target" -- \
        "${flags[@]}" -max_total_time="$seconds" >"$work/$target.log" 2>&1; then
        tail -n 40 "$work/$target.log" >&2
        failed+=("$target")
        continue
    fi
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$work/$target.log" |
        sed "s/^/fuzz.sh: $target /"
done
echo "fuzz.sh: done in $(($(date +%s) - started)) s"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
