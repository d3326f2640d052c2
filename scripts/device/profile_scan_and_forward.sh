#!/usr/bin/env bash
# Nsight Compute on the GPU machine (repository root, $OUT set): where the Mamba-1 scan's time goes at 2k and
# 128k tokens (pipe utilisation, issue slots, stall reasons of its three kernels), and a per-kernel time
# breakdown of one mamba-1.4b bf16 prefill of 16k tokens. Results: docs/benchmarks.md ("Profiles").
set -uo pipefail
OUT="${OUT:?set OUT}"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
t0=$(date +%s)
if ! { cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DMAMBASCOPE_GUI=OFF -DMAMBASCOPE_CUDA=ON \
         -DCMAKE_CUDA_ARCHITECTURES=90 > "$OUT/cmake.log" 2>&1 &&
       cmake --build build-gpu -j 16 --target bench_cuda_scan bench_cuda_forward >> "$OUT/cmake.log" 2>&1; }; then
  echo "build failed:"; grep -E "error|Error" "$OUT/cmake.log" | head -30; exit 1
fi
echo "build: $(( $(date +%s) - t0 )) s"
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU ($($NCU --version 2>&1 | tail -1))"
STALLS=""
for r in math_pipe_throttle wait long_scoreboard short_scoreboard barrier not_selected selected dispatch_stall \
         mio_throttle lg_throttle no_instruction; do
  STALLS="$STALLS,smsp__average_warps_issue_stalled_${r}_per_issue_active.ratio"
done
METRICS="sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active,sm__issue_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum$STALLS"
for shape in 1536,2048 4096,131072; do
  f="$OUT/ncu_scan_${shape/,/_}.txt"
  # The second scan call's three kernels (pass 1, combine, pass 3).
  BENCH_SCAN_PROFILE=$shape timeout 150 "$NCU" --clock-control none --cache-control none -k regex:m1_ \
    --launch-skip 3 --launch-count 3 --section SpeedOfLight --section Occupancy --section WarpStateStats \
    --metrics "$METRICS" build-gpu/bench/bench_cuda_scan > "$f" 2>&1
  if grep -q "==ERROR==" "$f"; then  # an unknown metric name: the sections alone
    mv "$f" "$f.err"
    BENCH_SCAN_PROFILE=$shape timeout 150 "$NCU" --clock-control none --cache-control none -k regex:m1_ \
      --launch-skip 3 --launch-count 3 --section SpeedOfLight --section Occupancy --section WarpStateStats \
      build-gpu/bench/bench_cuda_scan > "$f" 2>&1
  fi
  echo "== scan E,T = $shape"
  grep -E "^  m1_|Duration|Compute \(SM\) Throughput|DRAM Throughput|Achieved Occupancy|Warp Cycles Per Issued|pipe_xu|pipe_fma|pipe_alu|issue_active|warps_active|inst_executed.sum|stalled_" "$f" |
    sed -E 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//; s/ +/ /g' | head -80
done
echo "profiles: $(( $(date +%s) - t0 )) s"
BENCH_FORWARD_PROFILE=16384 timeout 240 "$NCU" --clock-control none --cache-control none \
  --metrics gpu__time_duration.sum --csv --print-units base --print-kernel-base function build-gpu/bench/bench_cuda_forward mamba-1.4b \
  > "$OUT/ncu_forward_1.4b_16k.csv" 2> "$OUT/ncu_forward_1.4b_16k.err"
echo "== mamba-1.4b bf16 prefill, 16k tokens: kernel time by kernel (ncu gpu__time_duration, serialised)"
python3 - "$OUT/ncu_forward_1.4b_16k.csv" <<'PY'
import csv, re, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows:
    print("no ncu rows"); sys.exit()
head = rows[0]
k, v = head.index("Kernel Name"), head.index("Metric Value")
tot = collections.Counter(); cnt = collections.Counter()
for r in rows[1:]:
    name = re.sub(r"[<(].*$", "", r[k])
    if re.search(r"gemm|nvjet|sm90_|cutlass|xmma", r[k], re.I): name = "cuBLAS GEMM: " + name[:40]
    tot[name] += float(r[v].replace(",", "")); cnt[name] += 1
s = sum(tot.values())
print(f"total kernel time {s / 1e6:.1f} ms over {sum(cnt.values())} kernels")
for name, t in tot.most_common(25):
    print(f"{t / 1e6:9.2f} ms {100 * t / s:5.1f}%  x{cnt[name]:<4} {name}")
PY
echo "total: $(( $(date +%s) - t0 )) s"
