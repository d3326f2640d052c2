#!/usr/bin/env bash
# bf16 prefill A/B under environment settings (issue 17): one device call from the repository root with $OUT
# set. bench_cuda_forward times one prefill per shape and length (a single run: up to 2.7% apart between runs
# of the same code on one H100, twenty-second stop), so the settings run in turn ROUNDS times and the summary
# gives each one's median; Nsight Compute then times every kernel of one 16k-token prefill per setting (its
# serialised kernel times are what separates settings closer than that spread).
#   SETTINGS    settings compared, space-separated, each a comma-joined VAR=value list ("-" for none);
#               default "-"
#   MODELS      default "mamba-1.4b mamba-130m"
#   ROUNDS      default 3
#   NCU_MODEL   the model of the per-kernel profile (default mamba-1.4b; "none" skips it)
#   NCU_SETTINGS  the settings profiled (default SETTINGS)
#   FULL_TESTS=1  first run every CUDA test (cuda_tests.log)
#   NO_BUILD=1  build-gpu is already built
# Writes prefill_ab.txt (every row), prefill_ab_summary.txt (median tok/s and % of the in_proj ceiling per
# model, length and setting, with each round's figure) and ncu_prefill_<i>.csv plus ncu_prefill_tables.txt.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
[ "${NO_BUILD:-0}" = 1 ] || build_cuda "$OUT/build_prefill_ab.log" 16 mambascope_cuda_tests bench_cuda_forward
if [ "${FULL_TESTS:-0}" = 1 ]; then
  timeout 300 build-gpu/tests/mambascope_cuda_tests > "$OUT/cuda_tests.log" 2>&1
  grep -E "^\[  (PASSED|FAILED) |Failure" "$OUT/cuda_tests.log" | head -20
  echo "tests: $(elapsed) s"
fi
settings="${SETTINGS:--}"
: > "$OUT/prefill_ab.txt"
for round in $(seq 1 "${ROUNDS:-3}"); do
  for st in $settings; do
    env $(envof "$st") BENCH_FORWARD_MODES=bf16 BENCH_FORWARD_NO_DECODE=1 timeout 150 \
      build-gpu/bench/bench_cuda_forward ${MODELS:-mamba-1.4b mamba-130m} 2>&1 |
      grep -E " bf16 .*in_proj ceiling|GEMM ceiling" | sed "s#^#round $round | $st | #" >> "$OUT/prefill_ab.txt"
  done
done
echo "prefill rounds: $(elapsed) s"
python3 - "$OUT/prefill_ab.txt" <<'PY' | tee "$OUT/prefill_ab_summary.txt"
import re, sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.match(r"round (\d+) \| (\S+) \| (\S+)\s+(\d+)\s+bf16\s+\S+\s+(\d+)\s+\S+\s+(\d+)% of in_proj", line)
    if m:
        rows[(m.group(3), int(m.group(4)), m.group(2))].append((int(m.group(5)), int(m.group(6))))
print(f"{'model':12s} {'tokens':>7s}  {'setting':40s} {'median tok/s':>12s} {'ceiling':>7s}  rounds")
for (model, T, st), v in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1])):
    med = statistics.median(x for x, _ in v)
    pct = statistics.median(p for _, p in v)
    print(f"{model:12s} {T:7d}  {st:40s} {med:12.0f} {pct:6.0f}%  " + " ".join(str(x) for x, _ in v))
PY
find_ncu
if [ -n "$NCU" ] && [ "${NCU_MODEL:-mamba-1.4b}" != none ]; then
  : > "$OUT/ncu_prefill_tables.txt"
  i=0
  for st in ${NCU_SETTINGS:-$settings}; do
    i=$((i + 1))
    env $(envof "$st") BENCH_FORWARD_PROFILE=16384 timeout 240 "$NCU" --clock-control none --cache-control none \
      --metrics gpu__time_duration.sum --csv --print-units base --print-kernel-base function \
      build-gpu/bench/bench_cuda_forward "${NCU_MODEL:-mamba-1.4b}" > "$OUT/ncu_prefill_$i.csv" 2> /dev/null
    { echo "== $st: ${NCU_MODEL:-mamba-1.4b} bf16 prefill, 16k tokens, kernel time (ncu, serialised)"
      ncu_kernel_table "$OUT/ncu_prefill_$i.csv" 14 2; } | tee -a "$OUT/ncu_prefill_tables.txt"
  done
fi
echo "total: $(elapsed) s"
