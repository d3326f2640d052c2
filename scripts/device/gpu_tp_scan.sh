#!/usr/bin/env bash
# The time-parallel Mamba-1 scan (scan_mamba1_tp, issue 17) against the chunked scan and mamba_ssm, one device
# call from the repository root with $OUT set and mamba_ssm's peer bench copied to build-peer/ (cp -r
# ../shared/peer-gpu build-peer; named in `carry`):
#   1. builds the CUDA tests and bench_cuda_scan while mamba_ssm's selective_scan_fwd extension compiles;
#   2. every CUDA test;
#   3. side by side: mamba_ssm's fp32/bf16 selective_scan_fwd, then bench_cuda_scan's Mamba-1 table (which
#      times every built time-parallel shape after the chunked bf16 scan);
#   4. summary.txt: ours / mamba_ssm per shape, with the fastest time-parallel shape;
#   5. bench_cuda_forward bf16 prefill of mamba-130m and mamba-1.4b under each of FORWARD_SETTINGS (default
#      "MAMBASCOPE_M1_TP=0 MAMBASCOPE_M1_TP=4x8 MAMBASCOPE_M1_TP=4x16": the chunked scan, then two shapes);
#   6. (unless SKIP_PROFILE=1) Nsight Compute on m1_scan_tp at d_inner 1536 × 16k (BENCH_SCAN_TP_PROFILE):
#      registers, occupancy, pipes and stall reasons.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
if [ -d build-peer ]; then
  (cd build-peer && OUT=/tmp MAX_JOBS=6 python3 bench.py > /tmp/peer_first.txt 2>&1) &
  peer_pid=$!
fi
build_cuda "$OUT/build.log" 10 mambascope_cuda_tests bench_cuda_scan bench_cuda_forward
[ -n "${peer_pid:-}" ] && wait "$peer_pid"
echo "mamba_ssm first run: $(head -1 /tmp/peer_first.txt 2>/dev/null) ($(elapsed) s)"
timeout 200 build-gpu/tests/mambascope_cuda_tests > "$OUT/cuda_tests.log" 2>&1
grep -E "^\[  (PASSED|FAILED) |Failure|time-parallel" "$OUT/cuda_tests.log" | head -20
echo "tests done: $(elapsed) s"
[ -d build-peer ] && (cd build-peer && OUT="$OUT" python3 bench.py > "$OUT/peer_mamba_ssm.txt" 2>&1)
BENCH_SCAN_M1_ONLY=1 timeout 300 build-gpu/bench/bench_cuda_scan > "$OUT/bench_cuda_scan.txt" 2>&1
echo "scan bench done: $(elapsed) s"
python3 "$(dirname "${BASH_SOURCE[0]}")/m1_scan_vs_mamba_ssm.py" "$OUT/mamba_ssm_fwd.json" \
  "$OUT/bench_cuda_scan.txt" | tee "$OUT/summary.txt"
for st in ${FORWARD_SETTINGS:-MAMBASCOPE_M1_TP=0 MAMBASCOPE_M1_TP=4x8 MAMBASCOPE_M1_TP=4x16}; do
  echo "-- $st"
  env $st BENCH_FORWARD_MODES=bf16 BENCH_FORWARD_NO_DECODE=1 timeout 150 \
    build-gpu/bench/bench_cuda_forward mamba-130m mamba-1.4b 2>&1
done | tee "$OUT/bench_cuda_forward.txt" | grep -E "^--|16384|131072|ceiling"
echo "forward benches done: $(elapsed) s"
find_ncu
if [ -n "$NCU" ] && [ "${SKIP_PROFILE:-0}" != 1 ]; then
  BENCH_SCAN_TP_PROFILE=1536,16384 timeout 120 "$NCU" --clock-control none --kernel-name regex:'m1_scan_tp' \
    --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats \
    --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    --metrics sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,gpu__time_duration.sum \
    build-gpu/bench/bench_cuda_scan > "$OUT/profile_tp.txt" 2>&1
  grep -E "m1_scan_tp|Registers|Achieved Occupancy|Issued Warp|Eligible Warps|pipe_|stalled|bank_conflicts|duration|Shared Memory Config|Block Limit" \
    "$OUT/profile_tp.txt" | sed 's/  */ /g' | head -80
fi
echo "total: $(elapsed) s"
