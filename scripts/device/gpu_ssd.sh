#!/usr/bin/env bash
# Mamba-2 chunked SSD scan on tensor cores (issue 17), one device call from the repository root with $OUT set
# (SKIP_AB=1: no MAMBASCOPE_M2_SSD=0 rows; SKIP_CHAIN_AB=1: no MAMBASCOPE_M2_BF16_CHAIN=0 rows;
# EXTRA_AB="VAR=value ...": one more set of prefill rows with that environment; SKIP_DECODE=1: no decode rows;
# SKIP_PROFILE=1: no Nsight Compute;
# DETAIL=1: also the stall reasons and instruction mix of the chain and output kernels; SKIP_SCAN=1: no scan
# table; TABLE_ONLY=1: of Nsight Compute, only the per-kernel time table; PROFILE_SHAPES: the shapes of that table,
# default mamba2-1.3b; FORWARD_SHAPES: the prefill rows' shapes, default "mamba2-130m mamba2-1.3b"):
#   1. builds the CUDA backend (GUI off, sm_90);
#   2. runs every CUDA test (the SSD scan against its CPU twin and the fp32 recurrence; the bf16 Mamba-2
#      forward through it);
#   3. bench_cuda_scan: ceilings and the Mamba-2 table (recurrent fp32 scan vs SSD bf16, plain and
#      filter+probes, mamba2-130m / 1.3b shapes at 2k/16k/128k);
#   4. bench_cuda_forward, bf16 prefill of mamba2-130m and mamba2-1.3b with the SSD scan and the bf16 chain,
#      with float32 activations around the scan (MAMBASCOPE_M2_BF16_CHAIN=0) and without the SSD scan
#      (MAMBASCOPE_M2_SSD=0), against the in_proj GEMM ceiling;
#   5. decode rows (bf16 graph with the RMSNorm fused into the next gemv) of mamba-130m, mamba-1.4b, mamba2-130m;
#   6. Nsight Compute: kernel time by kernel of one mamba2-1.3b bf16 prefill of 16k tokens, and the SSD
#      kernels' tensor-pipe, DRAM and occupancy figures.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
build_cuda "$OUT/build.log" 16 mambascope_cuda_tests bench_cuda_scan bench_cuda_forward

echo "== CUDA tests"
timeout 300 build-gpu/tests/mambascope_cuda_tests 2>&1 | tee "$OUT/cuda_tests.log" |
  grep -E "^\[  (PASSED|FAILED) |^\[==|Failure|error|\[ssd\]|SSD|bf16 graph" | head -60
echo "tests done: $(elapsed) s"

if [ "${SKIP_SCAN:-0}" != 1 ]; then
  echo "== bench_cuda_scan (ceilings, Mamba-2 table)"
  BENCH_SCAN_M2_ONLY=1 timeout 240 build-gpu/bench/bench_cuda_scan 2>&1 | tee "$OUT/bench_cuda_scan_m2.txt"
  echo "scan bench done: $(elapsed) s"
fi

shapes="${FORWARD_SHAPES:-mamba2-130m mamba2-1.3b}"
echo "== bench_cuda_forward: Mamba-2 bf16 prefill, SSD scan (default) then MAMBASCOPE_M2_SSD=0"
{
  BENCH_FORWARD_MODES=bf16 BENCH_FORWARD_NO_DECODE=1 timeout 300 build-gpu/bench/bench_cuda_forward \
    $shapes 2>&1
  if [ "${SKIP_CHAIN_AB:-0}" != 1 ]; then
    echo "-- A/B: MAMBASCOPE_M2_BF16_CHAIN=0 (the SSD scan with float32 activations around it)"
    MAMBASCOPE_M2_BF16_CHAIN=0 BENCH_FORWARD_MODES=bf16 BENCH_FORWARD_NO_DECODE=1 timeout 300 \
      build-gpu/bench/bench_cuda_forward $shapes 2>&1
  fi
  if [ -n "${EXTRA_AB:-}" ]; then  # e.g. EXTRA_AB="MAMBASCOPE_SSD_CHAIN=single"
    echo "-- A/B: $EXTRA_AB"
    env $EXTRA_AB BENCH_FORWARD_MODES=bf16 BENCH_FORWARD_NO_DECODE=1 timeout 300 \
      build-gpu/bench/bench_cuda_forward $shapes 2>&1
  fi
  if [ "${SKIP_AB:-0}" != 1 ]; then
    echo "-- A/B: MAMBASCOPE_M2_SSD=0 (the recurrent fp32 scan inside the bf16 forward)"
    MAMBASCOPE_M2_SSD=0 BENCH_FORWARD_MODES=bf16 BENCH_FORWARD_NO_DECODE=1 timeout 300 \
      build-gpu/bench/bench_cuda_forward $shapes 2>&1
  fi
} | tee "$OUT/bench_cuda_forward_m2.txt"
echo "forward benches done: $(elapsed) s"

if [ "${SKIP_DECODE:-0}" != 1 ]; then
  echo "== decode (graph per step; RMSNorm fused into the following gemv): mamba-130m, mamba-1.4b, mamba2-130m"
  BENCH_FORWARD_DECODE_ONLY=1 timeout 150 build-gpu/bench/bench_cuda_forward mamba-130m mamba-1.4b mamba2-130m \
    2>&1 | tee "$OUT/bench_decode.txt"
  echo "decode bench done: $(elapsed) s"
fi

find_ncu
if [ -n "$NCU" ] && [ "${SKIP_PROFILE:-0}" != 1 ]; then
  for shape in ${PROFILE_SHAPES:-mamba2-1.3b}; do  # kernel time tables (PROFILE_SHAPES="mamba2-130m mamba2-1.3b")
    BENCH_FORWARD_PROFILE=16384 timeout 150 "$NCU" --clock-control none --cache-control none \
      --metrics gpu__time_duration.sum --csv --print-units base --print-kernel-base function \
      build-gpu/bench/bench_cuda_forward "$shape" > /tmp/ncu_m2.csv 2> /tmp/ncu_m2.err
    echo "== $shape bf16 prefill, 16k tokens: kernel time by kernel (ncu, serialised)"
    ncu_kernel_table /tmp/ncu_m2.csv 14 3 | tee "$OUT/profile_${shape}_bf16_16k.txt"
  done
  [ "${TABLE_ONLY:-0}" = 1 ] && { echo "total: $(elapsed) s"; exit 0; }
  echo "== SSD kernels (mamba2-1.3b, 16k tokens, first layer): tensor pipe, DRAM, occupancy, issue" |
    tee -a "$OUT/profile_m2_1.3b_bf16_16k.txt"
  BENCH_FORWARD_PROFILE=16384 timeout 120 "$NCU" --clock-control none --kernel-name regex:ssd_ --launch-count 4 \
    --metrics gpu__time_duration.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,sm__inst_issued.avg.pct_of_peak_sustained_active,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum \
    build-gpu/bench/bench_cuda_forward mamba2-1.3b 2>&1 | grep -E "ssd_|gpu__|sm__|dram__|l1tex__" |
    tee -a "$OUT/profile_m2_1.3b_bf16_16k.txt"
  if [ "${DETAIL:-0}" = 1 ]; then  # stall reasons and instruction mix of the chain and output kernels
    CUOBJDUMP=$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)
    if [ -x "$CUOBJDUMP" ]; then  # SASS opcode counts per SSD kernel (static, per kernel body)
      /usr/local/cuda/bin/nvcc -std=c++20 -arch=sm_90 -O3 -cubin -Ikernels -Iengine/include \
        -o /tmp/ssd.cubin kernels/cuda/scan_mamba2_ssd.cu && "$CUOBJDUMP" -sass /tmp/ssd.cubin > "$OUT/ssd_sass.txt"
      python3 - "$OUT/ssd_sass.txt" <<'PY' | tee "$OUT/ssd_sass_histogram.txt"
import re, sys, collections
fn, hist = None, collections.defaultdict(collections.Counter)
for line in open(sys.argv[1]):
    m = re.search(r"Function : (\S+)", line)
    if m:
        k = re.search(r"\d(ssd_[a-z_]+)", m.group(1))
        fn = (k.group(1) if k else m.group(1)) + ("<64,128>" if "ILi64ELi128" in m.group(1) else "")
        continue
    m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)(\.[A-Z0-9_.]+)?", line)
    if fn and m: hist[fn][m.group(1)] += 1
for f, h in hist.items():
    print(f, sum(h.values()), "instructions:", ", ".join(f"{k} {v}" for k, v in h.most_common(14)))
PY
    fi
    BENCH_FORWARD_PROFILE=16384 timeout 120 "$NCU" --clock-control none \
      --kernel-name regex:'ssd_(state_chain|chunk_out)' --launch-count 2 \
      --section WarpStateStats --section SchedulerStats --section InstructionStats --section Occupancy \
      build-gpu/bench/bench_cuda_forward mamba2-1.3b 2>&1 | sed "s|$PWD/||g" > "$OUT/profile_ssd_detail.txt"
    # (ncu names the profiled binary by its absolute path: kept relative to the repository)
    grep -E "ssd_|Stall|Warp Cycles|Issued|Eligible|Occupancy|Registers|Block Limit|Executed Ipc" \
      "$OUT/profile_ssd_detail.txt" | head -60
  fi
fi
echo "total: $(elapsed) s"
