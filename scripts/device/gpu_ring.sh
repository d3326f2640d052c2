#!/usr/bin/env bash
# The ring decode kernel on a GPU (issue 17): one device call from the repository root with $OUT set.
# Builds the CUDA tests and the decode benches, runs the decode kernels' tests (plain and ring persistent
# kernels against the step kernels, bit for bit; greedy runs), bench_cuda_decode's phase tables, then the
# decode A/B of the step graph (per token and its greedy run) against the persistent and ring kernels (RING_ROWS
# picks other rows; ROUNDS as gpu_decode_ab.sh's), then the whole CUDA test suite if time is left. Each stage
# is skipped when the call's time (LIMIT, default 560 s) runs low.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
limit=${LIMIT:-560}
left() { echo $(( limit - $(elapsed) )); }
build_cuda "$OUT/build_ring.log" 16 mambascope_cuda_tests bench_cuda_decode bench_cuda_forward
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 100 build-gpu/tests/mambascope_cuda_tests --gtest_filter='CudaDecodeMamba1.*:*Persistent*:*GreedyRun*' \
  > "$OUT/ring_tests.log" 2>&1
rc=$?
grep -E "^\[  FAILED  \]|Failure|was accepted|Which is" "$OUT/ring_tests.log" | head -20
echo "ring tests rc=$rc at $(elapsed) s: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/ring_tests.log" | tr '\n' ' ')"
t=$(( $(left) - 10 )); [ "$t" -gt 150 ] && t=150
[ "$t" -gt 50 ] && { timeout "$t" build-gpu/bench/bench_cuda_decode mamba-130m mamba-1.4b \
  > "$OUT/bench_decode.txt" 2>&1; echo "bench_cuda_decode rc=$? at $(elapsed) s"; }
rows="bf16, graph, greedy run on the GPU;bf16, graph, greedy on the GPU;bf16, ring kernel, greedy on the GPU"
rows+=";bf16, persistent kernel, greedy on the GPU"
rows=${RING_ROWS:-$rows}  # RING_ROWS: other decode rows, ";"-separated
if [ "$(left)" -gt 120 ]; then
  NO_BUILD=1 ROUNDS=${ROUNDS:-2} SHAPES="mamba-130m mamba-1.4b" \
    ROWS="$rows" SETTINGS="-" \
    timeout $(( $(left) - 20 )) bash scripts/device/gpu_decode_ab.sh
fi
[ "$(left)" -gt 110 ] && { timeout 100 build-gpu/tests/mambascope_cuda_tests > "$OUT/cuda_tests.log" 2>&1;
  echo "cuda tests rc=$? at $(elapsed) s: $(tail -3 "$OUT/cuda_tests.log" | tr '\n' ' ')"; }
echo "done: $(elapsed) s"
