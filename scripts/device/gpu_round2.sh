#!/usr/bin/env bash
# GPU round 2 (issue 17), one device call, from the repository root with $OUT set and mamba_ssm's peer bench
# copied to build-peer/ (cp -r ../shared/peer-gpu build-peer; ignored by .gitignore, named in `carry`):
#   1. builds the CUDA backend (GUI off, sm_90) while mamba_ssm's selective_scan_fwd extension compiles;
#   2. runs every CUDA test (kernels vs the CPU, bf16 scan bounds, graph decoders vs the CPU);
#   3. side by side: mamba_ssm's fp32/bf16 selective_scan_fwd, then bench_cuda_scan (Mamba-1 table: fp32,
#      bf16 inputs), in the same call;
#   4. bench_cuda_forward (bf16 prefill with the bf16 chain and without it: MAMBASCOPE_M1_BF16_SCAN=0; decode
#      with and without CUDA graphs, filtered) for mamba-130m and mamba-1.4b;
#   5. summary.txt: our times / mamba_ssm's, per shape and dtype;
#   6. a per-kernel time breakdown (Nsight Compute) of one mamba-130m bf16 prefill of 16k tokens.
# Raw logs under $OUT (at most 8 files come back).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# mamba_ssm's extension compiles beside our build (its timings from this first run are discarded: they
# overlap the build; the second run below reuses the compiled extension and is the side-by-side one).
if [ -d build-peer ]; then
  (cd build-peer && OUT=/tmp MAX_JOBS=6 python3 bench.py > /tmp/peer_first.txt 2>&1) &
  peer_pid=$!
fi
build_cuda "$OUT/build.log" 12 mambascope_cuda_tests bench_cuda_scan bench_cuda_forward
[ -n "${peer_pid:-}" ] && wait "$peer_pid"
echo "mamba_ssm first run: $(head -1 /tmp/peer_first.txt) ($(elapsed) s)"

echo "== CUDA tests"
timeout 300 build-gpu/tests/mambascope_cuda_tests 2>&1 | tee "$OUT/cuda_tests.log" |
  grep -E "^\[  (PASSED|FAILED) |^\[==|Failure|error|measured|vs float|vs CPU|bf16" | head -60
echo "tests done: $(elapsed) s"

echo "== mamba_ssm selective_scan_fwd (side by side)"
if [ -d build-peer ]; then
  (cd build-peer && OUT="$OUT" python3 bench.py 2>&1) | tee "$OUT/peer_mamba_ssm.txt"
fi
echo "== bench_cuda_scan (Mamba-1 table)"
BENCH_SCAN_M1_ONLY=1 timeout 200 build-gpu/bench/bench_cuda_scan 2>&1 | tee "$OUT/bench_cuda_scan.txt"
echo "scan benches done: $(elapsed) s"

echo "== bench_cuda_forward: bf16 prefill (bf16 chain), decode"
{
  BENCH_FORWARD_MODES=bf16 timeout 200 build-gpu/bench/bench_cuda_forward mamba-130m mamba-1.4b 2>&1
  echo "-- A/B: MAMBASCOPE_M1_BF16_SCAN=0 (float32 activations around the scan, as before)"
  MAMBASCOPE_M1_BF16_SCAN=0 BENCH_FORWARD_MODES=bf16 BENCH_FORWARD_NO_DECODE=1 timeout 120 \
    build-gpu/bench/bench_cuda_forward mamba-130m mamba-1.4b 2>&1
} | tee "$OUT/bench_cuda_forward.txt"
echo "forward benches done: $(elapsed) s"

echo "== summary: ours / mamba_ssm, side by side in this call"
python3 "$(dirname "${BASH_SOURCE[0]}")/m1_scan_vs_mamba_ssm.py" "$OUT/mamba_ssm_fwd.json" "$OUT/bench_cuda_scan.txt" | tee "$OUT/summary.txt"
find_ncu
if [ -n "$NCU" ] && [ "${SKIP_PROFILE:-0}" != 1 ]; then
  BENCH_FORWARD_PROFILE=16384 timeout 120 "$NCU" --clock-control none --cache-control none \
    --metrics gpu__time_duration.sum --csv --print-units base --print-kernel-base function \
    build-gpu/bench/bench_cuda_forward mamba-130m > /tmp/ncu_130m.csv 2> /tmp/ncu_130m.err
  echo "== mamba-130m bf16 prefill, 16k tokens: kernel time by kernel (ncu, serialised)"
  ncu_kernel_table /tmp/ncu_130m.csv 20 3 | tee "$OUT/profile_130m_bf16_16k.txt"
fi

# SASS size of the Mamba-1 pass-3 kernels (instructions per variant; fp32 vs bf16 inputs).
if command -v cuobjdump > /dev/null; then
  echo "== SASS instructions per m1_scan / m1_chunk_states variant" | tee -a "$OUT/profile_130m_bf16_16k.txt"
  cuobjdump -sass build-gpu/kernels/libmambascope_kernels_cuda.a 2>/dev/null |
    awk '/Function :/{name=$3} /^ +\/\*[0-9a-f]+\*\//{n[name]++} END{for (k in n) print n[k], k}' |
    grep -E "m1_scan|m1_chunk" | sort -k2 | tee -a "$OUT/profile_130m_bf16_16k.txt"
fi
echo "total: $(elapsed) s"
