#!/usr/bin/env bash
# asan.sh: builds the engine, the CLI and the test suite with clang's AddressSanitizer + UndefinedBehaviorSanitizer
# into build-san/ (shared with scripts/fuzz.sh; GUI and CUDA off, see scripts/lib/sanitizer-build.sh) and runs
# ctest without the slow CUDA-emulation tests (label emu) and the two 16k-token demo runs (PasskeyDemo.*: about
# 50 s each in Release, over 10 min each under ASan on 2 cores; the haystack, calibration, filtered forward and
# decoding code they run is exercised under ASan by RetrievalRun.*, LongMamba*, Decoder* and the CLI tests on the
# small test models). MAMBASCOPE_ASAN_EXCLUDE (a ctest -E regex) overrides that; set it to "^$" to run them too.
# Any sanitizer report aborts the test that hit it, so the run fails. Extra arguments go to ctest, e.g. scripts/asan.sh -R Hostile. MAMBASCOPE_SAN_BUILD_DIR overrides
# build-san/, MAMBASCOPE_JOBS the parallelism.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/sanitizer-build.sh
source "$root/scripts/lib/sanitizer-build.sh"
sanitizer_configure
cmake --build "$san_build" -j "$san_jobs"
sanitizer_env
export QT_QPA_PLATFORM=offscreen
log="$san_build/asan-ctest.log"
start=$(date +%s)
set +e
ctest --test-dir "$san_build" --output-on-failure -LE emu -E "${MAMBASCOPE_ASAN_EXCLUDE:-^PasskeyDemo\.}" \
  -j "$san_jobs" --timeout 1500 "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
echo
echo "asan: summary ($(( $(date +%s) - start )) s; full log: $log)"
grep -E '^[0-9]+% tests passed|tests failed out of|^\s+[0-9]+ - .*\((Failed|Subprocess aborted|SEGFAULT|Timeout|Child aborted|Exception)' "$log" || true
if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log"; then
  echo "asan: sanitizer reports:"
  grep -nE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: ' "$log" | head -40
  rc=1
fi
if [ "$rc" -ne 0 ]; then echo "asan: FAILED"; exit 1; fi
echo "asan: all tests passed under ASan+UBSan"
