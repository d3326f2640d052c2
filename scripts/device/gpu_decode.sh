#!/usr/bin/env bash
# Decode A/B (issue 17): one device call from the repository root with $OUT set.
#   1. builds the CUDA backend (GUI off, sm_90);
#   2. runs the persistent decode kernel's tests first (60 s limit: a grid barrier that never opens shows up
#      as a timeout, not as a lost call), then every CUDA test (among them
#      CudaForward.PdlStepGraphEqualsTheFullDependencyGraphBitForBit);
#   3. decode rows of DECODE_SHAPES (default mamba-130m mamba-1.4b mamba2-130m): fp32 and bf16 graphs with PDL
#      edges (MAMBASCOPE_DECODE_PDL's default, auto); fp32, bf16 and the persistent kernel with the greedy argmax
#      on the GPU (Decoder::step_greedy); bf16 as the persistent decode kernel (MAMBASCOPE_DECODE_PERSISTENT=1) at
#      1 and 2 blocks per SM; bf16 with PDL launch, exit and off, without the gemv's L2 prefetch, with Mamba-1's
#      one-token scan through m1_scan (MAMBASCOPE_M1_STEP=0); bf16 greedy with x_proj folded into in_proj
#      (MAMBASCOPE_DECODE_XPROJ_FUSED=1, opt-in); bf16 without a graph; bf16 with a filter, as the
#      graph and as the persistent kernel; then bench_cuda_decode (the persistent kernel's phases);
#   4. unless SKIP_SCAN=1: bench_cuda_scan's Mamba-1 table (our scan alone; mamba_ssm side by side is
#      gpu_m1_ab.sh's job).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
build_cuda "$OUT/build.log" 16 mambascope_cuda_tests bench_cuda_forward bench_cuda_scan bench_cuda_decode

echo "== persistent decode kernel tests"
timeout 60 build-gpu/tests/mambascope_cuda_tests \
  --gtest_filter='CudaDecodeMamba1.*:CudaForwardDevice.PersistentDecodeKernel*:CudaArgmax.*:*Greedy*' 2>&1 |
  tee "$OUT/persistent_tests.log" | grep -E "^\[  (PASSED|FAILED) |Failure|persistent decode kernel" | head -20
if [ "${PIPESTATUS[0]}" = 124 ]; then echo "persistent decode kernel tests TIMED OUT (a grid barrier?)"; exit 1; fi
echo "== CUDA tests"
timeout 300 build-gpu/tests/mambascope_cuda_tests 2>&1 | tee "$OUT/cuda_tests.log" |
  grep -E "^\[  (PASSED|FAILED) |Failure|decode graph, PDL|persistent decode" | head -40
echo "tests done: $(elapsed) s"

echo "== decode"
BENCH_FORWARD_DECODE_ONLY=1 timeout 300 build-gpu/bench/bench_cuda_forward ${DECODE_SHAPES:-mamba-130m mamba-1.4b mamba2-130m} \
  2>&1 | tee "$OUT/bench_decode.txt"
echo "decode done: $(elapsed) s"
timeout 200 build-gpu/bench/bench_cuda_decode ${DECODE_SHAPES:-mamba-130m mamba-1.4b} > "$OUT/bench_cuda_decode.txt" 2>&1
grep -E "ms/step|decoder" "$OUT/bench_cuda_decode.txt"

if [ "${SKIP_SCAN:-0}" != 1 ]; then
  BENCH_SCAN_M1_ONLY=1 timeout 150 build-gpu/bench/bench_cuda_scan > "$OUT/bench_cuda_scan.txt" 2>&1
  grep -E "bf16|fp32" "$OUT/bench_cuda_scan.txt" | head -24
fi
echo "total: $(elapsed) s"
