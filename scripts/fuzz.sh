#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/: cargo fuzz, libFuzzer) and runs each one for a bounded
# time from its committed seed corpus, then prints executions per target. Fails on any
# crash, panic, leak, timeout or out-of-memory, and names the input that caused it.
#   FUZZ_SECONDS   seconds per target (default 30)
#   FUZZ_TARGETS   which targets (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
# A target directory of its own: the instrumented build shares nothing with the normal
# one, and a separate directory lets both be built at once.
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz 0.13.2" ]; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi
# cargo fuzz asks for nightly-only flags (-Z); the stable toolchain here accepts them with
# RUSTC_BOOTSTRAP. No sanitizer: the crate forbids `unsafe`, so AddressSanitizer would
# watch only the dependencies, at several times the cost per input. cargo fuzz keeps debug
# assertions and overflow checks on.
export RUSTC_BOOTSTRAP=1
cargo fuzz build --sanitizer none --target-dir "$target_dir"
git diff --exit-code --quiet fuzz/Cargo.lock 2>/dev/null || {
  echo "fuzz/Cargo.lock changed while building: commit the updated lock file" >&2
  exit 1
}

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
mkdir -p fuzz/artifacts
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=0
# A figure from libFuzzer's final statistics in a log: stat LOG NAME.
stat() { sed -n "s/^stat::$2: *//p" "$1" | tail -n 1; }
printf '%-16s %10s %12s %10s %8s\n' target seconds executions "exec/s" "new"
for target in $targets; do
  mkdir -p "$scratch/$target"
  log="$scratch/$target.log"
  # New inputs go to the scratch corpus; the committed seeds are only read.
  if ! cargo fuzz run --sanitizer none --target-dir "$target_dir" "$target" \
      "$scratch/$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
      -artifact_prefix="$PWD/fuzz/artifacts/$target-" >"$log" 2>&1; then
    failed=1
    echo "==> $target FAILED; the end of its log:" >&2
    tail -n 40 "$log" >&2
  fi
  printf '%-16s %10s %12s %10s %8s\n' "$target" "$seconds" "$(stat "$log" number_of_executed_units)" \
    "$(stat "$log" average_exec_per_sec)" "$(stat "$log" new_units_added)"
done
exit "$failed"
