#!/usr/bin/env bash
# Where a decode step's time goes (issue 17): Nsight Compute's duration of each kernel of the bf16 step graph
# (mamba-130m and mamba-1.4b; one step's worth of kernel nodes, profiled one at a time, so without PDL's
# overlap), summed per kernel. One device call from the repository root with $OUT set.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
build_cuda "$OUT/build.log" 16 bench_cuda_forward
find_ncu
[ -n "$NCU" ] || { echo "no ncu"; exit 1; }
for shape in mamba-130m mamba-1.4b; do
  n=$([ "$shape" = mamba-130m ] && echo 122 || echo 242)
  # the prefill's kernels and the first steps go by (launch-skip); then n kernels: one step's worth
  BENCH_FORWARD_DECODE_ONLY=1 BENCH_FORWARD_DECODE_ROW="bf16, graph" timeout 240 "$NCU" --csv \
    --metrics gpu__time_duration.sum --kernel-name regex:'gemv|conv_kernel|m1_scan|m1_step|rmsnorm|embed' \
    --launch-skip $((4 * n)) --launch-count "$n" build-gpu/bench/bench_cuda_forward "$shape" \
    > "$OUT/ncu_decode_$shape.csv" 2> "$OUT/ncu_decode_$shape.err"
  echo "== $shape: bf16 decode step, kernels profiled one at a time"
  ncu_kernel_table "$OUT/ncu_decode_$shape.csv" 12 4
done
echo "total: $(elapsed) s"
