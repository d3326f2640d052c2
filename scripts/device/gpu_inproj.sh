#!/usr/bin/env bash
# in_proj's fixed part in the decode step (issue 17, twenty-seventh stop): one device call from the repository
# root with $OUT set. Measures the two opt-in changes of the twenty-fourth stop that had never run on a GPU
# (docs/cuda.md, "The step in the graph, kernel by kernel"): in_proj launched early through the "launch" port
# (MAMBASCOPE_DECODE_PDL_LAUNCH_PER_SM=2), the norm's loads batched (MAMBASCOPE_GEMV_NORM=batched), both, and
# the early launch with every in_proj row prefetched (MAMBASCOPE_GEMV_PREFETCH=all). Order: build, the decode
# A/B (greedy runs, ROUNDS rounds, settings in turn), the whole CUDA test suite, then the kernel timelines of
# the default and of the settings (no CSV). Each stage is skipped when the call's time (LIMIT, default 570 s)
# runs low. INPROJ_SETTINGS and TIMELINE_SETTINGS replace the A/B's and the timelines' settings, INPROJ_SHAPES
# the A/B's shapes; NO_TIMELINE=1 skips the timelines.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
limit=${LIMIT:-570}
left() { echo $(( limit - $(elapsed) )); }
build_cuda "$OUT/build_inproj.log" 16 mambascope_cuda_tests bench_cuda_forward
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv,noheader | tee "$OUT/gpu.txt"
settings="- MAMBASCOPE_DECODE_PDL_LAUNCH_PER_SM=2 MAMBASCOPE_GEMV_NORM=batched"
settings+=" MAMBASCOPE_DECODE_PDL_LAUNCH_PER_SM=2,MAMBASCOPE_GEMV_NORM=batched"
settings+=" MAMBASCOPE_DECODE_PDL_LAUNCH_PER_SM=2,MAMBASCOPE_GEMV_PREFETCH=all"
settings=${INPROJ_SETTINGS:-$settings}
NO_BUILD=1 ROUNDS=${ROUNDS:-2} SHAPES="${INPROJ_SHAPES:-mamba-130m mamba-1.4b}" ROWS="bf16, graph, greedy run on the GPU" \
  SETTINGS="$settings" timeout $(( $(left) - 200 )) bash scripts/device/gpu_decode_ab.sh
[ "$(left)" -gt 150 ] && { timeout 110 build-gpu/tests/mambascope_cuda_tests > "$OUT/cuda_tests.log" 2>&1;
  echo "cuda tests rc=$? at $(elapsed) s: $(tail -3 "$OUT/cuda_tests.log" | tr '\n' ' ')";
  grep -E "^\[  FAILED  \]" "$OUT/cuda_tests.log" | head; }
if [ "${NO_TIMELINE:-0}" != 1 ] && [ "$(left)" -gt 90 ]; then
  BUILD_LOG="$OUT/build_timeline.log" CSV=0 SHAPES="mamba-1.4b" \
    SETTINGS="${TIMELINE_SETTINGS:-- MAMBASCOPE_DECODE_PDL_LAUNCH_PER_SM=2,MAMBASCOPE_GEMV_NORM=batched}" \
    timeout $(( $(left) - 10 )) bash scripts/device/gpu_timeline.sh > "$OUT/timeline_stdout.txt" 2>&1
  tail -2 "$OUT/timeline_stdout.txt"
fi
rm -f "$OUT/build_inproj.log" "$OUT/build_timeline.log" "$OUT/timeline_stdout.txt"  # at most 8 files come back
echo "done: $(elapsed) s"
