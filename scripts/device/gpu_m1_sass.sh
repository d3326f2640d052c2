#!/usr/bin/env bash
# Where pass 1 and pass 3 of the bf16 Mamba-1 scan spend their issue slots (issue 17), one device call from the
# repository root with $OUT set:
#   1. builds the CUDA tests and bench_cuda_scan (GUI off, sm_90) and runs every CUDA test (cuda_tests.log);
#   2. sass_hot.txt: the SASS of the two bf16 fast-exp kernels a chunked 16k scan runs by default (pass 1
#      m1_chunk_states<1, bf16, 0, 0, 4, lean> and pass 3 m1_scan<0, 1, bf16, 0, 4, Δ' once, lean>), with an
#      opcode count of each kernel's loops (the instructions between a backward branch and its target); each
#      AB tree's loop counts at the end;
#   3. source.csv: Nsight Compute's per-instruction executed counts and stall samples of both kernels (the
#      first layer of one bf16 16k-token prefill of PROFILE_MODEL, default mamba-1.4b);
#      (skipped once NCU_BEFORE_S seconds, default 420; run last, have passed);
#   4. bench_cuda_scan.txt: the Mamba-1 scan table (BENCH_SCAN_M1_ONLY=1, no time-parallel rows) under each
#      of SETTINGS (default "-"), ROUNDS times (default 1); bench_cuda_forward.txt: the bf16 prefill of
#      FORWARD_MODELS (default mamba-130m mamba-1.4b) under each of FORWARD_SETTINGS (default none).
#   5. with mamba_ssm's peer bench copied to build-peer/ (cp -r ../shared/peer-gpu build-peer; named in
#      `carry`): its fp32/bf16 selective_scan_fwd in the same call, and summary.txt, our times / mamba_ssm's per
#      shape and setting (m1_scan_vs_mamba_ssm.py).
#   6. with NCU_SHAPE="E,T": ncu_shape.csv, each kernel of one plain bf16 scan of that shape under Nsight Compute.
# A setting is "-", a space-free VAR=value list joined by commas, or the label of an AB_TREES tree, optionally
# followed by such a list (acc2,MAMBASCOPE_M1_LEAN=1). Smaller calls: BUILD_TARGETS (this tree's targets),
# AB_TARGETS (the trees'), TEST_FILTER (a gtest filter).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
# AB_TREES="label:dir …": each dir holds kernel files (e.g. scan_mamba1.cu) that replace this tree's in a copy
# built into /tmp/ab_<label>/build-gpu beside it, for the A/B of step 4 (a setting named by its label runs
# that tree's benches)
pids=""
if [ -d build-peer ]; then
  (cd build-peer && OUT=/tmp MAX_JOBS=4 python3 bench.py > /tmp/peer_first.txt 2>&1) &
  pids="$!"
fi
for tree in ${AB_TREES:-}; do
  label=${tree%%:*} dir=${tree#*:}
  rm -rf "/tmp/ab_$label" && mkdir -p "/tmp/ab_$label" && tar --exclude='./build*' -cf - . | tar -xf - -C "/tmp/ab_$label" &&
    cp "$dir"/*.cu "/tmp/ab_$label/kernels/cuda/"
  (cd "/tmp/ab_$label" && OUT=/tmp build_cuda "/tmp/ab_$label.log" 6 ${AB_TARGETS:-bench_cuda_scan bench_cuda_forward} > "/tmp/ab_$label.txt" 2>&1) &
  pids="$pids $!"
done
build_cuda "$OUT/build.log" 16 ${BUILD_TARGETS:-mambascope_cuda_tests bench_cuda_scan bench_cuda_forward}
for pid in $pids; do wait "$pid"; done
for tree in ${AB_TREES:-}; do echo "tree ${tree%%:*}: $(cat "/tmp/ab_${tree%%:*}.txt")"; done
timeout 150 build-gpu/tests/mambascope_cuda_tests --gtest_filter="${TEST_FILTER:-*}" > "$OUT/cuda_tests.log" 2>&1
grep -E "^\[  (PASSED|FAILED) |Failure" "$OUT/cuda_tests.log" | head -20
echo "tests: $(elapsed) s"

CUOBJDUMP=$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null | head -1)
cat > /tmp/sass_hot.py <<'PY'
import re, sys, collections
# the default (lean) bf16 fast-exp kernels of a chunked scan: pass 1 m1_chunk_states<1, bf16, 0, 0, 4, lean>,
# pass 3 m1_scan<0, 1, bf16, 0, 4, Δ' once, lean>
want = {"pass1": "m1_chunk_statesILb1E13__nv_bfloat16Lb0ELi0ELi4ELb1EE",
        "pass3": "m1_scanILb0ELb1E13__nv_bfloat16Lb0ELi4ELb1ELb1EE"}
funcs, fn = {}, None
for line in open(sys.argv[1]):
    m = re.search(r"Function : (\S+)", line)
    if m:
        fn = next((k for k, w in want.items() if w in m.group(1)), None)
        if fn: funcs[fn] = [m.group(1)]
        continue
    if fn: funcs[fn].append(line.rstrip())
pat = re.compile(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?);")
for k, lines in funcs.items():
    ins = [(int(m.group(1), 16), m.group(2).strip()) for m in map(pat.match, lines) if m]
    # loops: the backward branches ("BRA 0x…" to a lower address), the four longest with their opcode counts
    loops = [(int(m.group(1), 16), a) for a, t in ins for m in [re.search(r"BRA\s+0x([0-9a-f]+)", t)]
             if m and int(m.group(1), 16) < a]
    print(f"== {k}: {lines[0]} ({len(ins)} instructions)")
    for lo, hi in sorted(loops, key=lambda x: x[0] - x[1])[:4]:
        body = [t for a, t in ins if lo <= a <= hi]
        c = collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for t in body)
        print(f"loop body 0x{lo:x}..0x{hi:x}: {len(body)} instructions: " +
              ", ".join(f"{op} {n}" for op, n in c.most_common(24)))
    print("\n".join(lines))
PY
OBJ=kernels/CMakeFiles/mambascope_kernels_cuda.dir/cuda/scan_mamba1.cu.o
"$CUOBJDUMP" -sass build-gpu/$OBJ > /tmp/scan.sass 2>&1 && python3 /tmp/sass_hot.py /tmp/scan.sass > "$OUT/sass_hot.txt"
# each AB tree's loop bodies (its kernels of the same names) go to the end of sass_hot.txt
for tree in ${AB_TREES:-}; do
  l=${tree%%:*}
  [ -f "/tmp/ab_$l/build-gpu/$OBJ" ] && "$CUOBJDUMP" -sass "/tmp/ab_$l/build-gpu/$OBJ" > "/tmp/scan_$l.sass" 2>&1 &&
    { echo "=== tree $l"; python3 /tmp/sass_hot.py "/tmp/scan_$l.sass" | grep -E "^== |^loop body"; } >> "$OUT/sass_hot.txt"
done
grep -E "^=== tree|^== |^loop body" "$OUT/sass_hot.txt" | cut -c1-400

[ -d build-peer ] && echo "mamba_ssm: $(tail -1 /tmp/peer_first.txt)" &&
  (cd build-peer && OUT=/tmp timeout 120 python3 bench.py > /tmp/peer_mamba_ssm.txt 2>&1)
for r in $(seq "${ROUNDS:-1}"); do
  i=0
  for st in ${SETTINGS:--}; do
    i=$((i + 1))
    env $(envof "$st") BENCH_SCAN_M1_ONLY=1 BENCH_SCAN_NO_TP=1 timeout 150 "$(binof "$st" bench_cuda_scan)" \
      > "/tmp/scan_${i}_$r.txt" 2>&1
  done
done
{ i=0; for st in ${SETTINGS:--}; do i=$((i + 1)); for r in $(seq "${ROUNDS:-1}"); do
  echo "-- $st (round $r)"; cat "/tmp/scan_${i}_$r.txt"; done; done; } > "$OUT/bench_cuda_scan.txt"
grep -E "^--|bf16|E  *T" "$OUT/bench_cuda_scan.txt" | head -80
echo "scan benches: $(elapsed) s"
{ i=0; for st in ${SETTINGS:--}; do i=$((i + 1)); for r in $(seq "${ROUNDS:-1}"); do
  echo "-- $st (round $r)"
  python3 "$(dirname "${BASH_SOURCE[0]}")/m1_scan_vs_mamba_ssm.py" /tmp/mamba_ssm_fwd.json "/tmp/scan_${i}_$r.txt"
done; done; echo "== mamba_ssm (same call)"; cat /tmp/mamba_ssm_fwd.json 2>/dev/null; } | tee "$OUT/summary.txt"
for st in ${FORWARD_SETTINGS:-}; do
  echo "-- $st"
  env $(envof "$st") BENCH_FORWARD_MODES=bf16 BENCH_FORWARD_NO_DECODE=1 timeout 150 "$(binof "$st" bench_cuda_forward)" \
    ${FORWARD_MODELS:-mamba-130m mamba-1.4b} 2>&1
done | tee "$OUT/bench_cuda_forward.txt" | grep -E "^--|16384|131072|ceiling"
find_ncu
if [ -n "$NCU" ] && [ "$(elapsed)" -lt "${NCU_BEFORE_S:-420}" ]; then
  BENCH_FORWARD_PROFILE=16384 timeout 120 "$NCU" --clock-control none -k regex:'m1_(scan|chunk_states)' \
    --launch-count 2 --section SourceCounters --section WarpStateStats --import-source no -o /tmp/src -f \
    build-gpu/bench/bench_cuda_forward "${PROFILE_MODEL:-mamba-1.4b}" > /tmp/ncu.log 2>&1
  "$NCU" --import /tmp/src.ncu-rep --page source --csv --print-source sass > "$OUT/source.csv" 2>> /tmp/ncu.log
  echo "ncu: $(wc -l < "$OUT/source.csv") source rows"; tail -3 /tmp/ncu.log
fi
# NCU_SHAPE="E,T" (e.g. 1536,2048): each kernel of one plain bf16 scan of that shape (BENCH_SCAN_PROFILE_PLAIN16)
# under Nsight Compute, its duration, grid, occupancy and issued instructions (ncu_shape.csv): how the three
# passes split the time of a short input (ncu runs them one at a time: no overlap between the passes)
if [ -n "$NCU" ] && [ -n "${NCU_SHAPE:-}" ]; then
  BENCH_SCAN_PROFILE="$NCU_SHAPE" BENCH_SCAN_PROFILE_PLAIN16=1 timeout 90 "$NCU" --clock-control none \
    -k regex:'m1_' --metrics gpu__time_duration.sum,launch__grid_size,launch__registers_per_thread,\
sm__warps_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,smsp__inst_executed_pipe_xu.sum,\
sm__cycles_elapsed.avg,smsp__cycles_active.avg,sm__throughput.avg.pct_of_peak_sustained_elapsed \
    --csv --page raw build-gpu/bench/bench_cuda_scan > "$OUT/ncu_shape.csv" 2> /tmp/ncu_shape.log
  python3 - "$OUT/ncu_shape.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
want = {"gpu__time_duration", "launch__grid_size", "launch__registers_per_thread", "sm__warps_active",
        "smsp__inst_executed", "smsp__inst_executed_pipe_xu", "sm__cycles_elapsed", "smsp__cycles_active",
        "sm__throughput"}
if len(rows) > 2:
    h = rows[0]
    for r in rows[2:]:
        d = dict(zip(h, r))
        print(d.get("Kernel Name", "?")[:60], {k: d.get(k) for k in h if k.split(".")[0] in want})
PY
fi
echo "total: $(elapsed) s"
