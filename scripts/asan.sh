#!/usr/bin/env bash
# asan.sh: builds the engine, the CLI and the test suite with GCC's AddressSanitizer + UndefinedBehaviorSanitizer
# into build-asan/ (GUI and CUDA off) and runs ctest without the slow CUDA-emulation tests (label emu).
# Any sanitizer report aborts the test that hit it, so the run fails. Extra arguments go to ctest,
# e.g. scripts/asan.sh -R Hostile. MAMBASCOPE_ASAN_BUILD_DIR overrides build-asan/, MAMBASCOPE_JOBS the parallelism.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MAMBASCOPE_ASAN_BUILD_DIR:-$root/build-asan}"
jobs="${MAMBASCOPE_JOBS:-$(nproc)}"
bash "$root/scripts/install-deps.sh"

san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S "$root" -B "$build" \
  -DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_C_FLAGS="$san" -DCMAKE_CXX_FLAGS="$san" \
  -DCMAKE_EXE_LINKER_FLAGS="$san" -DCMAKE_SHARED_LINKER_FLAGS="$san" \
  -DMAMBASCOPE_GUI=OFF -DMAMBASCOPE_CUDA=OFF -DMAMBASCOPE_BENCH=OFF -DMAMBASCOPE_TESTS=ON
cmake --build "$build" -j "$jobs"

# detect_leaks: leaks fail the test; abort_on_error: a report kills the process (ctest sees the failure).
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export QT_QPA_PLATFORM=offscreen
log="$build/asan-ctest.log"
set +e
ctest --test-dir "$build" --output-on-failure -LE emu -j "$jobs" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
echo
echo "asan: summary (full log: $log)"
grep -E '^[0-9]+% tests passed|tests failed out of|^\s+[0-9]+ - .*\((Failed|Subprocess aborted|SEGFAULT|Timeout|Child aborted|Exception)' "$log" || true
if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log"; then
  echo "asan: sanitizer reports:"
  grep -nE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: ' "$log" | head -40
  rc=1
fi
if [ "$rc" -ne 0 ]; then echo "asan: FAILED"; exit 1; fi
echo "asan: all tests passed under ASan+UBSan"
