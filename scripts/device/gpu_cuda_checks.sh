#!/usr/bin/env bash
# Run on the GPU machine from the repository root with $OUT set: builds the CUDA backend (GUI off), runs the CUDA
# tests (kernels vs the CPU reference, the GPU forward vs the CPU forward) and the benchmarks. Falls back to binaries
# built elsewhere (.gpubin/) when the build cannot be configured there.
set -uo pipefail
OUT="${OUT:?set OUT}"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
bin=""
if cmake -S . -B build-gpu -DMAMBASCOPE_GUI=OFF -DMAMBASCOPE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 > "$OUT/cmake.log" 2>&1 &&
   cmake --build build-gpu -j 16 --target mambascope_cuda_tests bench_cuda_scan bench_cuda_forward >> "$OUT/cmake.log" 2>&1; then
  bin=build-gpu
  tests=build-gpu/tests/mambascope_cuda_tests; scan=build-gpu/bench/bench_cuda_scan; fwd=build-gpu/bench/bench_cuda_forward
else
  echo "build on the GPU machine failed (see cmake.log); using .gpubin"
  tail -20 "$OUT/cmake.log"
  tests=.gpubin/mambascope_cuda_tests; scan=.gpubin/bench_cuda_scan; fwd=.gpubin/bench_cuda_forward
fi
echo "== CUDA tests"
timeout 240 "$tests" 2>&1 | tee "$OUT/cuda_tests.log" | grep -E "OK|FAILED|PASSED|Failure|error|relative|skip" | head -80
echo "== scan benchmark"
timeout 150 "$scan" 2>&1 | tee "$OUT/bench_cuda_scan.txt"
echo "== forward benchmark"
timeout 200 "$fwd" mamba-130m mamba2-130m mamba-1.4b 2>&1 | tee "$OUT/bench_cuda_forward.txt"
