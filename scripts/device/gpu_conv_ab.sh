#!/usr/bin/env bash
# The bf16 Mamba-2 chain's conv variants side by side (issue 17), one device call from the repository root with
# $OUT set:
#   1. builds the CUDA backend (GUI off, sm_90) and runs the conv, SSD and forward CUDA tests;
#   2. for each MAMBASCOPE_CONV_BF16 variant (channels × tokens per thread; "1" = one channel per thread, the
#      float32 conv's layout): Nsight Compute time of the conv kernels of one mamba2-1.3b bf16 prefill of 16k
#      tokens (48 launches), and of the whole prefill's kernels;
#   3. bench_cuda_forward bf16 prefill of mamba2-130m and mamba2-1.3b with the default variant.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
build_cuda "$OUT/build.log" 16 mambascope_cuda_tests bench_cuda_forward
echo "== CUDA tests"
timeout 300 build-gpu/tests/mambascope_cuda_tests 2>&1 | tee "$OUT/cuda_tests.log" |
  grep -E "^\[  (PASSED|FAILED) |^\[==|Failure|error|\[ssd\]|SSD" | head -40
echo "tests done: $(elapsed) s"
find_ncu
if [ -n "$NCU" ]; then
  echo "== conv variants, mamba2-1.3b bf16 prefill of 16k tokens (ncu, serialised)"
  for v in ${CONV_VARIANTS:-1 2x32 4x16}; do
    MAMBASCOPE_CONV_BF16=$v BENCH_FORWARD_PROFILE=16384 timeout 150 "$NCU" --clock-control none \
      --cache-control none --metrics gpu__time_duration.sum --csv --print-units base --print-kernel-base function \
      build-gpu/bench/bench_cuda_forward mamba2-1.3b > "/tmp/ncu_conv_$v.csv" 2>/dev/null
    echo "-- MAMBASCOPE_CONV_BF16=$v"
    ncu_kernel_table "/tmp/ncu_conv_$v.csv" 14 3 | tee "$OUT/profile_conv_$v.txt" | grep -E "total|conv"
  done
fi
echo "== bench_cuda_forward: Mamba-2 bf16 prefill (default conv variant)"
BENCH_FORWARD_MODES=bf16 BENCH_FORWARD_NO_DECODE=1 timeout 200 build-gpu/bench/bench_cuda_forward \
  mamba2-130m mamba2-1.3b 2>&1 | tee "$OUT/bench_cuda_forward_m2.txt"
echo "total: $(elapsed) s"
