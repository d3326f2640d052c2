#!/usr/bin/env bash
# Nsight Compute on the GPU machine (repository root, $OUT set): where the Mamba-1 scan's time goes at 2k and
# 128k tokens (pipe utilisation, issue slots, stall reasons of its three kernels), and a per-kernel time
# breakdown of one mamba-1.4b bf16 prefill of 16k tokens. Results: docs/benchmarks.md ("Profiles").
# FORWARD_ONLY=1: the forward breakdown alone (no scan profiles); NO_BUILD=1: build-gpu is already built.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ "${NO_BUILD:-0}" = 1 ] || build_cuda "$OUT/cmake.log" 16 bench_cuda_scan bench_cuda_forward
find_ncu
echo "ncu: $NCU ($($NCU --version 2>&1 | tail -1))"
STALLS=""
for r in math_pipe_throttle wait long_scoreboard short_scoreboard barrier not_selected selected dispatch_stall \
         mio_throttle lg_throttle no_instruction; do
  STALLS="$STALLS,smsp__average_warps_issue_stalled_${r}_per_issue_active.ratio"
done
METRICS="sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active,sm__issue_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum$STALLS"
[ "${FORWARD_ONLY:-0}" = 1 ] && shapes="" || shapes="1536,2048 4096,131072"
for shape in $shapes; do
  f="$OUT/ncu_scan_${shape/,/_}.txt"
  # The second scan call's three kernels (pass 1, combine, pass 3).
  BENCH_SCAN_PROFILE=$shape timeout 150 "$NCU" --clock-control none --cache-control none -k regex:m1_ \
    --launch-skip 3 --launch-count 3 --section SpeedOfLight --section Occupancy --section WarpStateStats \
    --metrics "$METRICS" build-gpu/bench/bench_cuda_scan > "$f" 2>&1
  if grep -q "==ERROR==" "$f"; then  # an unknown metric name: the sections alone
    mv "$f" "$f.err"
    BENCH_SCAN_PROFILE=$shape timeout 150 "$NCU" --clock-control none --cache-control none -k regex:m1_ \
      --launch-skip 3 --launch-count 3 --section SpeedOfLight --section Occupancy --section WarpStateStats \
      build-gpu/bench/bench_cuda_scan > "$f" 2>&1
  fi
  echo "== scan E,T = $shape"
  grep -E "^  m1_|Duration|Compute \(SM\) Throughput|DRAM Throughput|Achieved Occupancy|Warp Cycles Per Issued|pipe_xu|pipe_fma|pipe_alu|issue_active|warps_active|inst_executed.sum|stalled_" "$f" |
    sed -E 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//; s/ +/ /g' | head -80
done
echo "profiles: $(elapsed) s"
BENCH_FORWARD_PROFILE=16384 timeout 240 "$NCU" --clock-control none --cache-control none \
  --metrics gpu__time_duration.sum --csv --print-units base --print-kernel-base function build-gpu/bench/bench_cuda_forward mamba-1.4b \
  > "$OUT/ncu_forward_1.4b_16k.csv" 2> "$OUT/ncu_forward_1.4b_16k.err"
echo "== mamba-1.4b bf16 prefill, 16k tokens: kernel time by kernel (ncu gpu__time_duration, serialised)"
ncu_kernel_table "$OUT/ncu_forward_1.4b_16k.csv" 25 2
echo "total: $(elapsed) s"
