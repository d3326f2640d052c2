#!/usr/bin/env bash
# A/B of the Mamba-1 scan kernels, on the GPU machine from the repository root with $OUT set: builds the CUDA
# backend (GUI off), runs the CUDA tests with the default kernels, then times
#   legacy      MAMBASCOPE_M1_SCAN=legacy (tile loads into registers, plain launches)
#   staged      MAMBASCOPE_PDL=0          (cp.async ring of tiles, plain launches)
#   staged+pdl  the default               (cp.async ring, passes 2 and 3 with programmatic dependent launch)
# with bench_cuda_scan's Mamba-1 table, the default's chunk sweep at 2k tokens, and mamba-1.4b bf16 prefill
# (bench_cuda_forward) for legacy vs the default. Prints a short table at the end.
set -uo pipefail
OUT="${OUT:?set OUT}"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
t0=$(date +%s)
if ! { cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DMAMBASCOPE_GUI=OFF -DMAMBASCOPE_CUDA=ON \
         -DCMAKE_CUDA_ARCHITECTURES=90 > "$OUT/cmake.log" 2>&1 &&
       cmake --build build-gpu -j 16 --target mambascope_cuda_tests bench_cuda_scan bench_cuda_forward \
         >> "$OUT/cmake.log" 2>&1; }; then
  echo "build on the GPU machine failed:"; grep -E "error|Error" "$OUT/cmake.log" | head -30; exit 1
fi
echo "build: $(( $(date +%s) - t0 )) s"
echo "== CUDA tests (default kernels)"
timeout 240 build-gpu/tests/mambascope_cuda_tests 2>&1 | tee "$OUT/cuda_tests.log" |
  grep -E "^\[  (PASSED|FAILED) |^\[==|Failure|error|measured" | head -40
echo "tests done: $(( $(date +%s) - t0 )) s"
bench() {  # name, env...
  local name=$1; shift
  env "$@" BENCH_SCAN_M1_ONLY=1 timeout 120 build-gpu/bench/bench_cuda_scan > "$OUT/scan_$name.txt" 2>&1
}
bench legacy MAMBASCOPE_M1_SCAN=legacy
bench staged MAMBASCOPE_PDL=0
bench staged_pdl MAMBASCOPE_PDL=1
echo "scan benches done: $(( $(date +%s) - t0 )) s"
BENCH_SCAN_SWEEP_ONLY=1 timeout 60 build-gpu/bench/bench_cuda_scan > "$OUT/scan_sweep.txt" 2>&1
for v in legacy default; do
  if [ $v = legacy ]; then export MAMBASCOPE_M1_SCAN=legacy; else unset MAMBASCOPE_M1_SCAN; fi
  BENCH_FORWARD_MODES=bf16 BENCH_FORWARD_NO_DECODE=1 timeout 150 build-gpu/bench/bench_cuda_forward mamba-1.4b \
    > "$OUT/forward_$v.txt" 2>&1
done
unset MAMBASCOPE_M1_SCAN
echo "== Mamba-1 scan, ms: legacy / staged / staged+pdl (speedup of the default over legacy; mamba_ssm)"
python3 - "$OUT" <<'PY'
import re, sys
out = sys.argv[1]
def rows(name):
    r = {}
    for line in open(f"{out}/scan_{name}.txt"):
        m = re.match(r"^(\d+)\s+(\d+)\s+(.+?)\s+(\d+x\d+)\s+([\d.]+)\s", line)
        if m:
            r[(m[1], m[2], m[3].strip())] = float(m[5])
    return r
a, b, c = rows("legacy"), rows("staged"), rows("staged_pdl")
anchor = {("1536", "2048"): 0.133, ("1536", "16384"): 1.006, ("1536", "131072"): 7.80,
          ("4096", "16384"): 2.75, ("4096", "131072"): 21.7, ("5120", "16384"): 3.24}
for k in a:
    ms = [a[k], b.get(k, float("nan")), c.get(k, float("nan"))]
    an = anchor.get(k[:2])
    ssm = f"  {an / ms[2]:.2f}x mamba_ssm" if an else ""
    print(f"{k[0]:>5} {k[1]:>7} {k[2]:<24} {ms[0]:8.3f} {ms[1]:8.3f} {ms[2]:8.3f}  {ms[0] / ms[2]:.2f}x{ssm}")
PY
echo "== chunk sweep (default kernels)"; grep -A20 "chunk length sweep" "$OUT/scan_sweep.txt" | head -20
echo "== mamba-1.4b bf16 prefill"
for v in legacy default; do grep -E "bf16" "$OUT/forward_$v.txt" | sed "s/^/$v: /"; done
echo "total: $(( $(date +%s) - t0 )) s"
