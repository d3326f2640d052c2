#!/usr/bin/env bash
# thirty-first stop, call 2: the decode step's conv with its weights and state loaded before the PDL wait (this
# tree) against 0af0f37's conv1d_silu.cu (base: .ab/base, git show 0af0f37:kernels/cuda/conv1d_silu.cu)
# Apply first: git apply docs/results/gpu-pdl-loads-2026-12-07/conv-preload-not-run/conv1d_silu.patch, and
# mkdir -p .ab/base && git show 0af0f37:kernels/cuda/conv1d_silu.cu > .ab/base/conv1d_silu.cu
set -uo pipefail
trap 'tar czf "$OUTSAVE/results.tgz" -C /tmp/o . 2>/dev/null' EXIT
O=/tmp/o; mkdir -p $O
OUTSAVE=$OUT; OUT=$O; . scripts/device/lib.sh
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $O/gpu.txt
rm -rf /tmp/ab_base && mkdir -p /tmp/ab_base && tar --exclude='./build*' -cf - . | tar -xf - -C /tmp/ab_base &&
  cp .ab/base/*.cu /tmp/ab_base/kernels/cuda/
(cd /tmp/ab_base && OUT=/tmp build_cuda /tmp/ab_base.log 6 bench_cuda_forward > /tmp/ab_base.txt 2>&1) &
build_cuda $O/build.log 16 mambascope_cuda_tests bench_cuda_forward
wait; echo "base tree: $(cat /tmp/ab_base.txt)"
timeout 150 build-gpu/tests/mambascope_cuda_tests > $O/cuda_tests.log 2>&1
grep -E "^\[  (PASSED|FAILED) |Failure" $O/cuda_tests.log | head -20; echo "tests: $(elapsed) s"
NO_BUILD=1 ROUNDS=2 SETTINGS="- base" ROWS="bf16, graph, greedy run on the GPU" \
  OUT=$O bash scripts/device/gpu_decode_ab.sh > $O/decode.txt 2>&1
cat $O/decode_ab_summary.txt; echo "decode: $(elapsed) s"
true
