#!/usr/bin/env bash
# fuzz.sh [SECONDS_PER_TARGET]: builds the libFuzzer targets of tests/fuzz with clang + ASan + UBSan into
# build-fuzz/ (engine instrumented for coverage too) and runs each for SECONDS_PER_TARGET seconds (default 30).
# New crashing inputs are copied into tests/fuzz/crashes/<target>/ (commit them: ctest fuzz_replay.<target> replays
# them). Prints per target: executions, exec/s, coverage (start -> end), new corpus units, crashes. Exits non-zero
# on any crash, leak, timeout or out-of-memory.
# Environment: MAMBASCOPE_FUZZ_BUILD_DIR (default build-fuzz), MAMBASCOPE_FUZZ_TARGETS (space-separated subset),
# MAMBASCOPE_JOBS (build parallelism), MAMBASCOPE_FUZZ_ARGS (extra libFuzzer flags).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${1:-30}"
build="${MAMBASCOPE_FUZZ_BUILD_DIR:-$root/build-fuzz}"
jobs="${MAMBASCOPE_JOBS:-$(nproc)}"
all_targets="config safetensors pickle torch_zip tokenizer ids session calibration trace safetensors_index"
targets="${MAMBASCOPE_FUZZ_TARGETS:-$all_targets}"

# The fuzzing toolchain is optional (not in install-deps.sh's default list): install it only when missing.
fuzzer_lib=$(ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a 2>/dev/null | head -1 || true)
if ! command -v clang++ >/dev/null || [ -z "$fuzzer_lib" ]; then
  bash "$root/scripts/install-deps.sh" --fuzz
fi
bash "$root/scripts/install-deps.sh" >/dev/null  # the engine's own dependencies (a no-op when present)

san="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S "$root" -B "$build" \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_C_FLAGS="$san" -DCMAKE_CXX_FLAGS="$san" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DMAMBASCOPE_FUZZ=ON -DMAMBASCOPE_TESTS=OFF -DMAMBASCOPE_BENCH=OFF -DMAMBASCOPE_GUI=OFF -DMAMBASCOPE_CUDA=OFF \
  >/dev/null
cmake --build "$build" --target fuzz_targets -j "$jobs"

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:allocator_may_return_null=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
work="$build/fuzz-run"
failed=0
summary=()
for t in $targets; do
  exe="$build/tests/fuzz/fuzz_$t"
  [ -x "$exe" ] || { echo "fuzz: no target $t ($exe)"; exit 2; }
  corpus="$work/corpus/$t"      # the working corpus (grows; not committed)
  artifacts="$work/artifacts/$t"
  crashes="$root/tests/fuzz/crashes/$t"
  mkdir -p "$corpus" "$artifacts" "$crashes"
  rm -f "$artifacts"/*
  log="$work/$t.log"
  echo "fuzz: $t for ${secs}s (log: $log)"
  set +e
  # shellcheck disable=SC2086
  "$exe" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" ${MAMBASCOPE_FUZZ_ARGS:-} \
    "$corpus" "$root/tests/fuzz/corpus/$t" "$crashes" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -oP 'stat::number_of_executed_units:\s*\K[0-9]+' "$log" | tail -1 || true)
  rate=$(grep -oP 'stat::average_exec_per_sec:\s*\K[0-9]+' "$log" | tail -1 || true)
  units=$(grep -oP 'stat::new_units_added:\s*\K[0-9]+' "$log" | tail -1 || true)
  cov0=$(grep -oP 'INITED cov: \K[0-9]+' "$log" | head -1 || true)
  cov1=$(grep -oP '#[0-9]+\s+\w+\s+cov: \K[0-9]+' "$log" | tail -1 || true)
  n_crash=0
  for a in "$artifacts"/*; do
    [ -f "$a" ] || continue
    n_crash=$((n_crash + 1))
    cp "$a" "$crashes/"
    echo "fuzz: $t: new finding $(basename "$a") -> tests/fuzz/crashes/$t/ (stack in $log)"
  done
  if [ "$rc" -ne 0 ] && [ "$n_crash" -eq 0 ]; then n_crash=1; echo "fuzz: $t exited $rc without an artifact (see $log)"; fi
  [ "$n_crash" -eq 0 ] || failed=1
  if [ "$n_crash" -ne 0 ]; then grep -m1 -E 'ERROR: |runtime error:|==ERROR|deadly signal|out-of-memory|timeout' "$log" || true; fi
  summary+=("$(printf '%-18s %12s %9s %6ss %7s -> %-7s %9s %7s' "$t" "${execs:-?}" "${rate:-?}" "$secs" \
    "${cov0:-?}" "${cov1:-?}" "${units:-?}" "$n_crash")")
done
echo
printf '%-18s %12s %9s %7s %18s %9s %7s\n' target executions exec/s time "cov (start->end)" new_units crashes
for line in "${summary[@]}"; do echo "$line"; done
if [ "$failed" -ne 0 ]; then echo "fuzz: FAILED: crashes were found (inputs in tests/fuzz/crashes/)"; exit 1; fi
echo "fuzz: no crash"
