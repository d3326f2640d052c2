#!/usr/bin/env bash
# fuzz.sh [SECONDS_PER_TARGET]: builds the libFuzzer targets of tests/fuzz with clang + ASan + UBSan into
# build-san/ (shared with scripts/asan.sh: scripts/lib/sanitizer-build.sh) and runs each for SECONDS_PER_TARGET
# seconds (default 30), or until MAMBASCOPE_FUZZ_RUNS executions if that comes first.
# New crashing inputs are copied into tests/fuzz/crashes/<target>/ (commit them: ctest fuzz_replay.<target> replays
# them). Prints per target: executions, exec/s, coverage (start -> end), new corpus units, crashes, and libhdf5
# crashes contained by the HDF5 probe (h5::probe_read_in_child; each replayed without the probe to check that it
# is inside libhdf5). Exits non-zero on any crash, leak, timeout or out-of-memory in Mambascope's code.
# Environment: MAMBASCOPE_SAN_BUILD_DIR (default build-san), MAMBASCOPE_FUZZ_TARGETS (space-separated subset),
# MAMBASCOPE_FUZZ_RUNS (stop a target after this many executions), MAMBASCOPE_JOBS (build parallelism),
# MAMBASCOPE_FUZZ_ARGS (extra libFuzzer flags).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${1:-30}"
all_targets="config safetensors pickle torch_zip tokenizer ids session calibration trace safetensors_index"
targets="${MAMBASCOPE_FUZZ_TARGETS:-$all_targets}"

# shellcheck source=lib/sanitizer-build.sh
source "$root/scripts/lib/sanitizer-build.sh"
# shellcheck source=lib/fuzz-triage.sh
source "$root/scripts/lib/fuzz-triage.sh"
build="$san_build"
sanitizer_configure
cmake --build "$build" --target fuzz_targets -j "$san_jobs"
sanitizer_env
# Fuzzing only: libhdf5 mallocs garbage sizes read from corrupt files (it handles the NULL; our own code's
# allocations go through operator new, which ASan still reports), and leaks on those error paths
# (tests/fuzz/sanitizers/lsan-libhdf5.supp). docs/reliability.md, "libhdf5".
export ASAN_OPTIONS="$ASAN_OPTIONS:allocator_may_return_null=1"
export LSAN_OPTIONS="suppressions=$root/tests/fuzz/sanitizers/lsan-libhdf5.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
# Scratch files (each input is written to a file the parser opens) go to memory when /dev/shm exists.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
work="$build/fuzz-run"
failed=0
summary=()
# Whether a probed read of input $2 by fuzzer $1 keeps it as a contained crash again (3 tries).
fuzz_probe_reproduces() {
  local again
  for _ in 1 2 3; do
    again=$(mktemp -d)
    MAMBASCOPE_FUZZ_PROBE_DIR="$again" "$1" -rss_limit_mb=2048 -timeout=10 "$2" >/dev/null 2>&1 || true
    if [ -n "$(ls -A "$again")" ]; then rm -rf "$again"; return 0; fi
    rm -rf "$again"
  done
  return 1
}
for t in $targets; do
  exe="$build/tests/fuzz/fuzz_$t"
  [ -x "$exe" ] || { echo "fuzz: no target $t ($exe)"; exit 2; }
  corpus="$work/corpus/$t"      # the working corpus (grows; not committed)
  artifacts="$work/artifacts/$t"
  crashes="$root/tests/fuzz/crashes/$t"
  mkdir -p "$corpus" "$artifacts" "$crashes"
  rm -f "$artifacts"/*
  probe="$work/probe-crashes/$t"   # inputs that crashed libhdf5 in the probe child (fuzz_common.h)
  rm -rf "$probe"
  export MAMBASCOPE_FUZZ_PROBE_DIR="$probe"
  log="$work/$t.log"
  echo "fuzz: $t for ${secs}s (log: $log)"
  set +e
  # shellcheck disable=SC2086
  "$exe" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    ${MAMBASCOPE_FUZZ_RUNS:+-runs=$MAMBASCOPE_FUZZ_RUNS} \
    -artifact_prefix="$artifacts/" ${MAMBASCOPE_FUZZ_ARGS:-} \
    "$corpus" "$root/tests/fuzz/corpus/$t" "$crashes" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -oP 'stat::number_of_executed_units:\s*\K[0-9]+' "$log" | tail -1 || true)
  rate=$(grep -oP 'stat::average_exec_per_sec:\s*\K[0-9]+' "$log" | tail -1 || true)
  units=$(grep -oP 'stat::new_units_added:\s*\K[0-9]+' "$log" | tail -1 || true)
  took=$(grep -aoP 'Done [0-9]+ runs in \K[0-9]+' "$log" | tail -1 || true)  # libFuzzer's (none when interrupted)
  cov0=$(grep -oP 'INITED cov: \K[0-9]+' "$log" | head -1 || true)
  cov1=$(grep -oP '#[0-9]+\s+\w+\s+cov: \K[0-9]+' "$log" | tail -1 || true)
  n_crash=0
  for a in "$artifacts"/*; do
    [ -f "$a" ] || continue
    # A crash of the probe's child (a fork of this fuzzer) also leaves an artifact: not a finding when the same
    # bytes were kept as a contained libhdf5 crash (triaged below).
    contained=0
    for c in "$probe"/*; do [ -f "$c" ] && cmp -s "$a" "$c" && contained=1 && break; done
    [ "$contained" -eq 0 ] || { rm -f "$a"; continue; }
    n_crash=$((n_crash + 1))
    cp "$a" "$crashes/"
    echo "fuzz: $t: new finding $(basename "$a") -> tests/fuzz/crashes/$t/ (stack in $log)"
  done
  # Triage of the contained crashes: replay each without the probe, under the run's limits; the report's deciding
  # frame must be inside libhdf5 (scripts/lib/fuzz-triage.sh says which frames are skipped, and why; its recorded
  # cases are checked by ctest fuzz_triage). Anything else is Mambascope's bug: the report goes to the log.
  # A contained crash that does not come back (the in-process replay ends cleanly and three more probed reads
  # keep nothing) depended on the fuzzing process's state at the time, not on the bytes: it is logged and not
  # counted, since no replay can say whose it was (docs/reliability.md, "libhdf5").
  n_contained=0
  for a in "$probe"/*; do
    [ -f "$a" ] || continue
    replay_rc=0
    report=$(MAMBASCOPE_H5_PROBE=0 "$exe" -rss_limit_mb=2048 -timeout=10 "$a" 2>&1) || replay_rc=$?
    # no stack from the sanitizer (a smashed stack): gdb's backtrace decides (scripts/lib/fuzz-triage.sh)
    if [ "$replay_rc" -ne 0 ] && printf '%s\n' "$report" | fuzz_report_has_no_stack; then
      report="$report"$'\n'"=== gdb backtrace (the sanitizer printed no stack):"$'\n'"$(fuzz_gdb_frames "$exe" "$a")"
    fi
    if printf '%s\n' "$report" | fuzz_is_libhdf5_report; then
      n_contained=$((n_contained + 1))
    elif [ "$replay_rc" -eq 0 ] && ! fuzz_probe_reproduces "$exe" "$a"; then
      echo "fuzz: $t: $(basename "$a"): the probe's child crashed once; the in-process read and 3 probed reads" \
        "do not: not reproducible, not counted"
      { echo "=== $(basename "$a"): not reproducible (in-process replay and 3 probed replays clean):"
        printf '%s\n' "$report"; } >>"$log"
    else
      n_crash=$((n_crash + 1))
      cp "$a" "$crashes/"
      frame=$(printf '%s\n' "$report" | fuzz_deciding_frame | sed -E 's/^\s+//')
      echo "fuzz: $t: $(basename "$a") crashed outside libhdf5 -> tests/fuzz/crashes/$t/: ${frame:-no stack}"
      { echo "=== triage replay of $(basename "$a") (crashed outside libhdf5):"; printf '%s\n' "$report"; } >>"$log"
      printf '%s\n' "$report" | grep -m1 -A12 -E 'ERROR|runtime error' | sed 's/^/    /' || true
    fi
  done
  # What crashed processes (findings, the triage's replays, the probe's children) could not remove at exit: their
  # libomp entries (lib/sanitizer-build.sh) and the harness's scratch directories (fuzz_common.h, scratch_dir).
  sanitizer_clean_omp_registrations
  for d in "${TMPDIR:-/tmp}"/mambascope-fuzz-*; do
    [ -d "$d" ] || continue
    pid=${d##*-}
    case "$pid" in '' | *[!0-9]*) continue ;; esac
    kill -0 "$pid" 2>/dev/null || rm -rf "$d"
  done
  if [ "$rc" -ne 0 ] && [ "$n_crash" -eq 0 ]; then n_crash=1; echo "fuzz: $t exited $rc without an artifact (see $log)"; fi
  [ "$n_crash" -eq 0 ] || failed=1
  if [ "$n_crash" -ne 0 ]; then grep -m1 -E 'ERROR: |runtime error:|==ERROR|deadly signal|out-of-memory|timeout' "$log" || true; fi
  summary+=("$(printf '%-18s %12s %9s %6ss %7s -> %-7s %9s %7s %9s' "$t" "${execs:-?}" "${rate:-?}" "${took:-$secs}" \
    "${cov0:-?}" "${cov1:-?}" "${units:-?}" "$n_crash" "$n_contained")")
done
echo
printf '%-18s %12s %9s %7s %18s %9s %7s %9s\n' target executions exec/s time "cov (start->end)" new_units crashes \
  libhdf5
for line in "${summary[@]}"; do echo "$line"; done
if [ "$failed" -ne 0 ]; then echo "fuzz: FAILED: crashes were found (inputs in tests/fuzz/crashes/)"; exit 1; fi
echo "fuzz: no crash"
