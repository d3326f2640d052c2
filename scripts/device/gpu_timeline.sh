#!/usr/bin/env bash
# Kernel timelines of the decode step graph (bench_cuda_timeline: CUPTI activity records; docs/benchmarks.md,
# twenty-fourth stop). One device call from the repository root with $OUT set.
#   SHAPES    default "mamba-130m mamba-1.4b"
#   SETTINGS  space-separated, each a comma-joined VAR=value list ("-" for none); default "-"
#   NO_BUILD=1  bench_cuda_timeline is already built in build-gpu
#   BUILD_LOG   the build's log (default $OUT/build_timeline.log)
#   CSV=0       no timeline_<n>.csv
# CUPTI is the toolkit's where CMake finds it; otherwise the first libcupti.so and cupti.h found under
# /usr/local, /opt and Python's site-packages (the GPU machine's PyTorch ships nvidia-cuda-cupti).
# Writes timeline_<n>.txt per setting and timeline_<n>.csv (every traced kernel).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [ "${NO_BUILD:-0}" != 1 ]; then
  blog="${BUILD_LOG:-$OUT/build_timeline.log}"
  build_cuda "$blog" 16 bench_cuda_timeline
  if grep -q "CUDA_cupti_LIBRARY:FILEPATH=.*NOTFOUND" build-gpu/CMakeCache.txt; then
    roots="/usr/local /opt $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)"
    lib=$(find $roots -name 'libcupti.so*' 2>/dev/null | head -1)
    inc=$(dirname "$(find $roots -name cupti_activity.h 2>/dev/null | head -1)")
    echo "CUPTI not in the toolkit; found: ${lib:-none} ${inc:-none}"
    cmake -S . -B build-gpu -DCUDA_cupti_LIBRARY="$lib" -DCUDAToolkit_CUPTI_INCLUDE_DIR="$inc" >> "$blog" 2>&1
    cmake --build build-gpu -j 16 --target bench_cuda_timeline >> "$blog" 2>&1 || {
      echo "build failed"; grep -E "error|Error" "$blog" | head; exit 1; }
    export LD_LIBRARY_PATH="$(dirname "$lib"):$LD_LIBRARY_PATH"
  fi
fi
n=0
for st in ${SETTINGS:--}; do
  n=$((n + 1))
  echo "== setting $n: $st" | tee "$OUT/timeline_$n.txt"
  csv=""; [ "${CSV:-1}" = 1 ] && csv="TIMELINE_CSV=$OUT/timeline_$n.csv"
  env $(envof "$st") $csv timeout 200 \
    build-gpu/bench/bench_cuda_timeline ${SHAPES:-mamba-130m mamba-1.4b} 2>&1 | tee -a "$OUT/timeline_$n.txt"
done
echo "timeline: $(elapsed) s"
