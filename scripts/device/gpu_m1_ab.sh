#!/usr/bin/env bash
# Superseded for new A/Bs by gpu_m1_sass.sh (since the twenty-ninth stop it times mamba_ssm in the same call too,
# and takes AB trees and per-setting rounds); kept so that the commands recorded with earlier results reproduce.
# Mamba-1 scan A/B (issue 17), one device call from the repository root with $OUT set and mamba_ssm's peer
# bench copied to build-peer/ (cp -r ../shared/peer-gpu build-peer; named in `carry`). SETTINGS: the settings
# compared, each a space-free VAR=value list joined by commas ("-" for none); default "MAMBASCOPE_M1_RING=0 -"
# (the per-thread loads; the default, the cp.async ring). Each setting runs in its own processes.
#   1. builds the CUDA backend (GUI off, sm_90) while mamba_ssm's selective_scan_fwd extension compiles;
#   2. runs every CUDA test, then the Mamba-1 scan and forward tests again under each setting;
#   3. side by side: mamba_ssm's fp32/bf16 selective_scan_fwd, then bench_cuda_scan's Mamba-1 table per setting;
#   4. bench_cuda_forward bf16 prefill of mamba-130m and mamba-1.4b per setting;
#   5. summary.txt: our times / mamba_ssm's per shape and setting;
#   6. Nsight Compute: occupancy, registers and warp stall reasons of m1_chunk_states and m1_scan (one bf16
#      prefill of 16k tokens of PROFILE_MODEL, default mamba-130m, first layer), per setting in PROFILE_SETTINGS
#      (default "-"), with the special-function (xu) and FMA pipes' share of their peak and the stall reasons
#      per issued instruction;
#   7. sass_summary.txt: SASS instructions and MUFU ops per Mamba-1 scan kernel (cuobjdump).
# SETTING_TESTS=0 skips the per-setting test runs of step 2; FORWARD_SETTINGS (default SETTINGS) limits step 4;
# TEST_FILTER (a gtest filter, default all) limits the first test run of step 2.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if [ -d build-peer ]; then
  (cd build-peer && OUT=/tmp MAX_JOBS=6 python3 bench.py > /tmp/peer_first.txt 2>&1) &
  peer_pid=$!
fi
build_cuda "$OUT/build.log" 10 mambascope_cuda_tests bench_cuda_scan bench_cuda_forward
[ -n "${peer_pid:-}" ] && wait "$peer_pid"
echo "mamba_ssm first run: $(head -1 /tmp/peer_first.txt) ($(elapsed) s)"

echo "== CUDA tests"
timeout 200 build-gpu/tests/mambascope_cuda_tests --gtest_filter="${TEST_FILTER:-*}" 2>&1 | tee "$OUT/cuda_tests.log" |
  grep -E "^\[  (PASSED|FAILED) |Failure" | head -30
settings="${SETTINGS:-MAMBASCOPE_M1_RING=0 -}"
[ "${SETTING_TESTS:-1}" = 0 ] || for st in $settings; do
  env $(envof "$st") timeout 100 build-gpu/tests/mambascope_cuda_tests --gtest_filter='CudaScanMamba1*:CudaForward*' \
    2>&1 | grep -E "^\[  (PASSED|FAILED) |Failure" | sed "s/^/$st: /" | tee -a "$OUT/cuda_tests.log" | head -10
done
echo "tests done: $(elapsed) s"

[ -d build-peer ] && (cd build-peer && OUT="$OUT" python3 bench.py > "$OUT/peer_mamba_ssm.txt" 2>&1)
i=0
for st in $settings; do
  i=$((i + 1))
  env $(envof "$st") BENCH_SCAN_M1_ONLY=1 timeout 150 build-gpu/bench/bench_cuda_scan > "/tmp/scan_$i.txt" 2>&1
done
{ i=0; for st in $settings; do i=$((i + 1)); echo "-- $st"; cat "/tmp/scan_$i.txt"; done; } > "$OUT/bench_cuda_scan.txt"
echo "scan benches done: $(elapsed) s"

{
  for st in ${FORWARD_SETTINGS:-$settings}; do
    echo "-- $st"
    env $(envof "$st") BENCH_FORWARD_MODES=bf16 BENCH_FORWARD_NO_DECODE=1 timeout 150 \
      build-gpu/bench/bench_cuda_forward mamba-130m mamba-1.4b 2>&1
  done
} | tee "$OUT/bench_cuda_forward.txt" | grep -E "^--|16384|131072|ceiling"
echo "forward benches done: $(elapsed) s"

echo "== summary: ours / mamba_ssm, side by side in this call"
i=0
for st in $settings; do
  i=$((i + 1))
  echo "-- $st"
  python3 "$(dirname "${BASH_SOURCE[0]}")/m1_scan_vs_mamba_ssm.py" "$OUT/mamba_ssm_fwd.json" "/tmp/scan_$i.txt"
done | tee "$OUT/summary.txt"

CUOBJDUMP=$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null | head -1)
if [ -n "$CUOBJDUMP" ]; then
  "$CUOBJDUMP" -sass build-gpu/kernels/CMakeFiles/mambascope_kernels_cuda.dir/cuda/scan_mamba1.cu.o > /tmp/scan.sass 2>&1
  python3 - /tmp/scan.sass <<'PY' | tee "$OUT/sass_summary.txt"
import re, sys, collections
fn, counts = None, collections.OrderedDict()
for line in open(sys.argv[1]):
    m = re.search(r"Function : (\S+)", line)
    if m:
        fn = m.group(1); counts[fn] = collections.Counter(); continue
    m = re.match(r"\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
    if fn and m:
        op = m.group(1).split(".")[0]
        counts[fn]["all"] += 1; counts[fn][op] += 1
print("kernel (demangled template arguments)                          SASS  MUFU  FFMA  FMUL  FADD  IMAD")
for fn, c in counts.items():
    if "m1_" not in fn: continue
    name = re.sub(r"_ZN.*?(m1_\w+?)I", r"\1<", fn)[:62]
    print(f"{name:62s} {c['all']:5d} {c['MUFU']:5d} {c['FFMA']:5d} {c['FMUL']:5d} {c['FADD']:5d} {c['IMAD']:5d}")
PY
fi

if [ -s /tmp/scan.sass ]; then
  # softplus's lg2 (docs/benchmarks.md, tenth stop: a warp vote tried): the 8 lines before each kernel's first
  # MUFU.LG2, whether it sits behind a branch or is issued on every token. Appended to sass_summary.txt rather
  # than a file of its own: the device returns a limited number of files per call (the tenth stop lost three).
  python3 - /tmp/scan.sass <<'PY' >> "$OUT/sass_summary.txt"
import re, sys
fn, lines, shown = None, [], False
for line in open(sys.argv[1]):
    m = re.search(r"Function : (\S+)", line)
    if m:
        fn, lines, shown = m.group(1), [], False; continue
    if fn is None or shown: continue
    lines.append(line.rstrip())
    if "MUFU.LG2" in line and "m1_" in fn:
        shown = True
        print("== first MUFU.LG2 of", fn); print("\n".join(lines[-8:]))
PY
fi

find_ncu
if [ -n "$NCU" ] && [ "${SKIP_PROFILE:-0}" != 1 ]; then
  : > "$OUT/profile_m1_detail.txt"
  for st in ${PROFILE_SETTINGS:--}; do
    echo "== m1_chunk_states / m1_scan ($st): occupancy, pipes, stall reasons (${PROFILE_MODEL:-mamba-130m} bf16, 16k, first layer)"
    echo "-- $st" >> "$OUT/profile_m1_detail.txt"
    env $(envof "$st") BENCH_FORWARD_PROFILE=16384 timeout 150 "$NCU" --clock-control none \
      --kernel-name regex:'m1_(scan|chunk_states)' --launch-count 2 --section LaunchStats --section Occupancy \
      --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
      --metrics sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_not_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_dispatch_stall_per_issue_active.ratio,gpu__time_duration.sum \
      build-gpu/bench/bench_cuda_forward "${PROFILE_MODEL:-mamba-130m}" 2>&1 | sed "s|$PWD/||g" >> "$OUT/profile_m1_detail.txt"
  done
  grep -E "^-- |m1_|Registers|Achieved Occupancy|Warp Cycles|Issued Warp|Eligible Warps|pipe_|stalled|duration" \
    "$OUT/profile_m1_detail.txt" | sed 's/  */ /g' | head -120
fi
echo "total: $(elapsed) s"
