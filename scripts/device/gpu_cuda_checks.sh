#!/usr/bin/env bash
# Run on the GPU machine from the repository root with $OUT set: builds the CUDA backend (GUI off), runs the CUDA
# tests (kernels vs the CPU reference, the GPU forward and decoder vs the CPU), the engine tests that take the GPU
# path when one is present (analyze --device cuda, Decoder), a CPU-vs-GPU `generate`, and the benchmarks.
# Environment: BENCH_SHAPES (default "mamba-130m mamba2-130m mamba-1.4b"), SKIP_SCAN_BENCH=1 to skip bench_cuda_scan.
set -uo pipefail
OUT="${OUT:?set OUT}"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
t0=$(date +%s)
if ! { cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DMAMBASCOPE_GUI=OFF -DMAMBASCOPE_CUDA=ON \
         -DCMAKE_CUDA_ARCHITECTURES=90 > "$OUT/cmake.log" 2>&1 &&
       cmake --build build-gpu -j 16 --target mambascope_cuda_tests mambascope_tests mambascope-cli \
         bench_cuda_scan bench_cuda_forward >> "$OUT/cmake.log" 2>&1; }; then
  echo "build on the GPU machine failed:"; grep -E "error|Error" "$OUT/cmake.log" | head -30; exit 1
fi
echo "build: $(( $(date +%s) - t0 )) s"
echo "== CUDA tests"
timeout 240 build-gpu/tests/mambascope_cuda_tests 2>&1 | tee "$OUT/cuda_tests.log" |
  grep -E "^\[  (PASSED|FAILED) |^\[==|Failure|error|measured|skip" | head -60
echo "== engine tests on the GPU path (Session*, Decoder, analysis)"
timeout 240 build-gpu/tests/mambascope_tests --gtest_filter='Session*:*Decoder*:Analysis*:*CudaForward*' 2>&1 |
  tee "$OUT/engine_gpu_tests.log" | grep -E "^\[  (PASSED|FAILED) |^\[==|Failure" | head -30
echo "== generate: CPU vs GPU (greedy, demo model)"
for d in cpu cuda; do
  build-gpu/app/cli/mambascope-cli generate --model resources/models/demo-mamba1 --prompt "Emma Woodhouse, handsome," \
    --max-new 60 --device $d 2>&1 | head -3 | sed "s/^/$d: /"
done
if [ "${SKIP_SCAN_BENCH:-0}" != 1 ]; then
  echo "== scan benchmark"
  timeout 150 build-gpu/bench/bench_cuda_scan 2>&1 | tee "$OUT/bench_cuda_scan.txt"
fi
echo "== forward benchmark"
timeout 300 build-gpu/bench/bench_cuda_forward ${BENCH_SHAPES:-mamba-130m mamba2-130m mamba-1.4b} 2>&1 |
  tee "$OUT/bench_cuda_forward.txt"
echo "total: $(( $(date +%s) - t0 )) s"
