#!/usr/bin/env bash
# Decode A/B (issue 17): one device call from the repository root with $OUT set.
#   1. builds the CUDA backend (GUI off, sm_90);
#   2. runs every CUDA test (among them CudaForward.PdlStepGraphEqualsTheFullDependencyGraphBitForBit);
#   3. decode rows of DECODE_SHAPES (default mamba-130m mamba-1.4b mamba2-130m): fp32 and bf16 graphs with PDL
#      edges (MAMBASCOPE_DECODE_PDL's default, auto), bf16 with PDL launch, exit and off, bf16 without the gemv's
#      L2 prefetch, bf16 with Mamba-1's one-token scan through m1_scan (MAMBASCOPE_M1_STEP=0), bf16 without a
#      graph, bf16 with a filter;
#   4. unless SKIP_SCAN=1: bench_cuda_scan's Mamba-1 table (our scan alone; mamba_ssm side by side is
#      gpu_m1_ab.sh's job).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
build_cuda "$OUT/build.log" 16 mambascope_cuda_tests bench_cuda_forward bench_cuda_scan

echo "== CUDA tests"
timeout 300 build-gpu/tests/mambascope_cuda_tests 2>&1 | tee "$OUT/cuda_tests.log" |
  grep -E "^\[  (PASSED|FAILED) |Failure|decode graph, PDL" | head -40
echo "tests done: $(elapsed) s"

echo "== decode"
BENCH_FORWARD_DECODE_ONLY=1 timeout 300 build-gpu/bench/bench_cuda_forward ${DECODE_SHAPES:-mamba-130m mamba-1.4b mamba2-130m} \
  2>&1 | tee "$OUT/bench_decode.txt"
echo "decode done: $(elapsed) s"

if [ "${SKIP_SCAN:-0}" != 1 ]; then
  BENCH_SCAN_M1_ONLY=1 timeout 150 build-gpu/bench/bench_cuda_scan > "$OUT/bench_cuda_scan.txt" 2>&1
  grep -E "bf16|fp32" "$OUT/bench_cuda_scan.txt" | head -24
fi
echo "total: $(elapsed) s"
