#!/usr/bin/env bash
# bench_cpu.sh: prints the CPU benchmark table of docs/benchmarks.md (issue 16) from one build, side by side in
# one run: the SGEMM libraries on the forward's shapes, prefill at 2k and 16k tokens with the GEMM ceiling
# measured beside it, `analyze` (NLL + probes) at 65k tokens with page faults / system time / peak RSS, and the
# demo comparison (8k tokens, 3 methods). Every line carries the load average it ran under: numbers taken on
# a loaded machine are not quiet-machine numbers.
#
#   scripts/bench_cpu.sh                 # builds build-bench/ (Release, no GUI/CUDA) and runs everything
#   BUILD=build-cpu SKIP_BUILD=1 scripts/bench_cpu.sh
#   ANALYZE_TOKENS=16384 QUICK=1 scripts/bench_cpu.sh   # shorter runs
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD:-$root/build-bench}"
[[ "$build" = /* ]] || build="$root/$build"
if [ -z "${SKIP_BUILD:-}" ]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMAMBASCOPE_GUI=OFF -DMAMBASCOPE_CUDA=OFF \
    -DMAMBASCOPE_TESTS=OFF ${BLAS:+-DMAMBASCOPE_BLAS=$BLAS} >/dev/null
  cmake --build "$build" -j "$(nproc)" --target mambascope-cli bench_sgemm >/dev/null
fi
cli="$build/app/cli/mambascope-cli"
analyze_tokens="${ANALYZE_TOKENS:-65536}"
prefill_tokens="${PREFILL_TOKENS:-2048 16384}"

echo "# $(date -u +%FT%TZ) $(uname -n) cores=$(nproc) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "# uptime:$(uptime)"
echo "# OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)} OMP_NUM_THREADS=${OMP_NUM_THREADS:-(unset)} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-(unset)}"

echo "## SGEMM GFLOP/s, best of 9 (bench_sgemm): OpenBLAS core type auto-detected, forced to Haswell, then 1 thread"
(unset OPENBLAS_CORETYPE; "$build/bench/bench_sgemm" 9)
OPENBLAS_CORETYPE=Haswell "$build/bench/bench_sgemm" 9 | grep -v -e '^shape' -e '^# [a-z]'
(unset OPENBLAS_CORETYPE; OMP_NUM_THREADS=1 "$build/bench/bench_sgemm" 9 | grep -v -e '^shape' -e '^# [a-z]')

echo "## prefill, mamba-130m random weights, LM head skipped (bench --ceiling)"
for t in $prefill_tokens; do
  "$cli" bench --shape mamba-130m --tokens "$t" --ceiling
done
echo "## prefill with the head on every token (per-token NLL), 2k"
"$cli" bench --shape mamba-130m --tokens 2048 --head

echo "## analyze (NLL + every probe), mamba-130m random weights, $analyze_tokens random tokens (bench --analyze)"
"$cli" bench --analyze --shape mamba-130m --tokens "$analyze_tokens"

echo "## demo comparison: demo-mamba1, resources/text/demo.txt (8192 tokens), vanilla,longmamba,decimamba"
out="$(mktemp -d)"
/usr/bin/time -f "wall_s=%e user_s=%U sys_s=%S minflt=%R peak_rss_kb=%M" \
  "$cli" analyze --model "$root/resources/models/demo-mamba1" --text "$root/resources/text/demo.txt" \
  --calibration "$root/resources/calibration/demo-mamba1.h5" --methods vanilla,longmamba,decimamba \
  --max-tokens 8192 --out "$out/demo.h5" 2>&1 | grep -E "^(vanilla|longmamba|decimamba|wall_s)" || true
rm -rf "$out"
echo "# uptime after:$(uptime)"
