#!/usr/bin/env bash
# Coverage-guided fuzzing of the sans-IO core and the settings.ini reader
# (README.md beside this file). Runs each target given (default: all) for
# FUZZ_SECONDS seconds, one at a time under nice, with libFuzzer through
# cargo-fuzz on the stable toolchain, then minimises its corpus in place.
# A crash stops the run; the input is left in fuzz/libfuzzer/artifacts/<target>/.
#
#   FUZZ_SECONDS=300 fuzz/run.sh [TARGET...]      (make fuzz runs all)
set -euo pipefail

cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-60}
all=(deframer query answer truncate padding ini admission cache record packed)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
cargo_fuzz_version=0.13.2

# libfuzzer-sys compiles libFuzzer (C++) with the cc crate.
if ! command -v c++ >/dev/null; then
  apt-get update -qq && apt-get install -y -qq g++
fi
if ! cargo fuzz --version 2>/dev/null | grep -qF "$cargo_fuzz_version"; then
  cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

# -s none: no sanitizer. The sanitizers need nightly (-Zsanitizer); the code
# under test has no unsafe, so the instrumentation for coverage (stable
# -Cpasses=sancov-module) and the debug assertions cargo-fuzz turns on are
# what matters.
build=(--fuzz-dir libfuzzer -s none)
mkdir -p libfuzzer/target/logs
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log="libfuzzer/target/logs/$t.log"
  echo "fuzz: $t for ${seconds}s (log: fuzz/$log)"
  if ! nice -n 10 cargo fuzz run "${build[@]}" "$t" "corpus/$t" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $t failed; the input is in fuzz/libfuzzer/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^#[0-9]+[[:space:]]+DONE' "$log" || true
  grep -E '^stat::number_of_executed_units' "$log" || true
  nice -n 10 cargo fuzz cmin "${build[@]}" "$t" "corpus/$t" >>"$log" 2>&1
  echo "fuzz: corpus/$t: $(find "corpus/$t" -type f | wc -l) files, $(du -sh --apparent-size "corpus/$t" | cut -f1)"
done
