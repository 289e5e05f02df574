#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in BUILD and runs each for
# SECONDS on a fresh copy of the seed corpus. Any crash, sanitizer report,
# Error(Internal), leak, RSS over 2 GB or single allocation over 512 MB fails
# the run; the input is left as BUILD/fuzz-artifacts/<target>-crash-*.
# Usage: native/fuzz/run.sh [SECONDS=60] [BUILD=build-fuzz]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
build=${2:-build-fuzz}
CC=clang CXX=clang++ cmake -S . -B "$build" -DFOVEA_FUZZ=ON -DFOVEA_CUDA=OFF -DFOVEA_NATIVE_TOOLS=OFF \
  -DFOVEA_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)"
rm -rf "$build/fuzz-corpus" "$build/fuzz-artifacts"
mkdir -p "$build/fuzz-artifacts"
python3 native/fuzz/make_corpus.py "$build/fuzz-corpus"
pids=()
for t in safetensors json config; do
  "./$build/fovea_fuzz_$t" -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$t-" "$build/fuzz-corpus/$t" \
    >"$build/fuzz-$t.log" 2>&1 &
  pids+=($!)
done
fail=0
i=0
for t in safetensors json config; do
  rc=0
  wait "${pids[$i]}" || rc=$?
  i=$((i + 1))
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$build/fuzz-$t.log" | tail -1 || true)
  execs=$(grep -E '^stat::number_of_executed_units' "$build/fuzz-$t.log" | tail -1 || true)
  speed=$(grep -E '^stat::average_exec_per_sec' "$build/fuzz-$t.log" | tail -1 || true)
  echo "fuzz_$t: rc=$rc ${done_line:-no DONE line} | ${execs} | ${speed}"
  if [ "$rc" -ne 0 ]; then
    fail=1
    tail -n 60 "$build/fuzz-$t.log"
  fi
done
exit "$fail"
