#!/usr/bin/env bash
# Decode A/B under environment settings (issue 17): one device call from the repository root with $OUT set.
#   SETTINGS  settings compared, space-separated, each a comma-joined VAR=value list ("-" for none);
#             default "- MAMBASCOPE_M1_STEP_STAGE=0 MAMBASCOPE_GEMV_GRID=0"
#   SHAPES    default "mamba-130m mamba-1.4b"
#   ROWS      bench_cuda_forward decode rows, ";"-separated; default "bf16, graph, greedy on the GPU;bf16, graph"
#   ROUNDS    the settings run in turn ROUNDS times (default 2), so that a drift of the GPU's clocks shows up
#             as a spread between rounds rather than as a difference between settings
#   NO_BUILD=1  bench_cuda_forward is already built in build-gpu (e.g. by gpu_m1_ab.sh in the same call)
#   A setting whose first item is the label of a tree built by gpu_m1_sass.sh's AB_TREES in the same call
#   (/tmp/ab_<label>/build-gpu) runs that tree's bench_cuda_forward, with the rest of its list
#   ("base", "base,MAMBASCOPE_GEMV_NORM=loop").
# Writes decode_ab.txt (every line) and decode_ab_summary.txt (ms/token per shape, row and setting, each round).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[ "${NO_BUILD:-0}" = 1 ] || build_cuda "$OUT/build_decode_ab.log" 16 bench_cuda_forward
settings="${SETTINGS:-- MAMBASCOPE_M1_STEP_STAGE=0 MAMBASCOPE_GEMV_GRID=0}"
rows="${ROWS:-bf16, graph, greedy on the GPU;bf16, graph}"
: > "$OUT/decode_ab.txt"
for round in $(seq 1 "${ROUNDS:-2}"); do
  for st in $settings; do
    IFS=';' read -ra rowlist <<< "$rows"
    for row in "${rowlist[@]}"; do
      env $(envof "$st") BENCH_FORWARD_DECODE_ONLY=1 BENCH_FORWARD_DECODE_ROW="$row" timeout 120 \
        "$(binof "$st" bench_cuda_forward)" ${SHAPES:-mamba-130m mamba-1.4b} 2>&1 |
        grep "decode (" | sed "s#^#round $round | $st | #" >> "$OUT/decode_ab.txt"
    done
  done
done
python3 - "$OUT/decode_ab.txt" <<'PY' | tee "$OUT/decode_ab_summary.txt"
import re, sys, collections
t = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.match(r"round (\d+) \| (\S+) \| (\S+)\s+decode \((.*?)\): ([0-9.]+) ms/token", line)
    if m:
        t[(m.group(3), m.group(4), m.group(2))].append(float(m.group(5)))
print(f"{'shape':12s} {'row':32s} {'setting':40s} ms/token per round")
for (shape, row, st), v in sorted(t.items()):
    print(f"{shape:12s} {row:32s} {st:40s} " + " ".join(f"{x:.3f}" for x in v))
PY
echo "decode A/B: $(elapsed) s"
