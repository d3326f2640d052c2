#!/usr/bin/env bash
# Where pass 1 and pass 3 of the bf16 Mamba-1 scan spend their issue slots (issue 17), one device call from the
# repository root with $OUT set:
#   1. builds the CUDA tests and bench_cuda_scan (GUI off, sm_90) and runs every CUDA test (cuda_tests.log);
#   2. sass_hot.txt: the SASS of the two bf16 fast-exp kernels a chunked 16k scan runs (pass 1
#      m1_chunk_states<1, bf16, 0, 0, 4> and pass 3 m1_scan<0, 1, bf16, 0, 4, 1>, Δ' once), with an opcode
#      count of each kernel's loop body (the instructions between the loop's label and its backward branch);
#   3. source.csv: Nsight Compute's per-instruction executed counts and stall samples of both kernels (the
#      first layer of one bf16 16k-token prefill of PROFILE_MODEL, default mamba-1.4b);
#      (skipped once NCU_BEFORE_S seconds, default 420; run last, have passed);
#   4. bench_cuda_scan.txt: the Mamba-1 scan table (BENCH_SCAN_M1_ONLY=1, no time-parallel rows) under each
#      of SETTINGS (default "-"), ROUNDS times (default 1); bench_cuda_forward.txt: the bf16 prefill of
#      FORWARD_MODELS (default mamba-130m mamba-1.4b) under each of FORWARD_SETTINGS (default none).
# A setting is "-", a space-free VAR=value list joined by commas, or the label of an AB_TREES tree. Smaller
# calls: BUILD_TARGETS (this tree's targets), AB_TARGETS (the trees'), TEST_FILTER (a gtest filter).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
# AB_TREES="label:dir …": each dir holds kernel files (e.g. scan_mamba1.cu) that replace this tree's in a copy
# built into /tmp/ab_<label>/build-gpu beside it, for the A/B of step 4 (a setting named by its label runs
# that tree's benches)
pids=""
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
want = {"pass1": "m1_chunk_statesILb1E13__nv_bfloat16Lb0ELi0ELi4E",
        "pass3": "m1_scanILb0ELb1E13__nv_bfloat16Lb0ELi4ELb1E"}
funcs, fn = {}, None
for line in open(sys.argv[1]):
    m = re.search(r"Function : (\S+)", line)
    if m:
        fn = next((k for k, w in want.items() if w in m.group(1)), None)
        if fn: funcs[fn] = [m.group(1)]
        continue
    if fn: funcs[fn].append(line.rstrip())
for k, lines in funcs.items():
    ins = [l for l in lines if re.match(r"\s+/\*[0-9a-f]{4,}\*/", l)]
    # the hot loop: the longest backward branch's range
    addr = lambda l: int(re.match(r"\s+/\*([0-9a-f]+)\*/", l).group(1), 16)
    best = None
    for i, l in enumerate(ins):
        m = re.search(r"BRA\s+(?:`\(\.L_x_\d+\)|0x([0-9a-f]+))", l)
        tgt = None
        m2 = re.search(r"\(\.(L_x_\d+)\)", l)
        if m2:
            lab = m2.group(1)
            for j, l2 in enumerate(lines):
                if l2.strip().startswith("." + lab + ":"):
                    nxt = next((x for x in lines[j + 1:] if re.match(r"\s+/\*[0-9a-f]{4,}\*/", x)), None)
                    tgt = addr(nxt) if nxt else None
                    break
        if tgt is not None and tgt < addr(l):
            n = sum(1 for x in ins if tgt <= addr(x) <= addr(l))
            if best is None or n > best[0]: best = (n, tgt, addr(l))
    print(f"== {k}: {lines[0]}")
    if best:
        c = collections.Counter()
        for x in ins:
            if best[1] <= addr(x) <= best[2]:
                op = re.match(r"\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", x)
                if op: c[op.group(1)] += 1
        print(f"loop body 0x{best[1]:x}..0x{best[2]:x}: {best[0]} instructions")
        for op, n in c.most_common(): print(f"  {n:5d} {op}")
    print("\n".join(lines))
PY
OBJ=kernels/CMakeFiles/mambascope_kernels_cuda.dir/cuda/scan_mamba1.cu.o
"$CUOBJDUMP" -sass build-gpu/$OBJ > /tmp/scan.sass 2>&1 && python3 /tmp/sass_hot.py /tmp/scan.sass > "$OUT/sass_hot.txt"
[ -f /tmp/ab_old/build-gpu/$OBJ ] && "$CUOBJDUMP" -sass /tmp/ab_old/build-gpu/$OBJ > /tmp/scan_old.sass 2>&1 &&
  python3 /tmp/sass_hot.py /tmp/scan_old.sass | grep -B1 -A40 "^loop body" > "$OUT/sass_hot_old.txt"
for f in "$OUT/sass_hot.txt" "$OUT/sass_hot_old.txt"; do
  [ -f "$f" ] && echo "== $(basename "$f")" && grep -E -A40 "^loop body" "$f" | grep -E "loop body|^  +[0-9]+ [A-Z]" | head -50
done

envof() { [ "$1" = "-" ] && return; echo "$1" | tr ',' ' '; }
binof() { [ -x "/tmp/ab_$1/build-gpu/bench/$2" ] && echo "/tmp/ab_$1/build-gpu/bench/$2" || echo "build-gpu/bench/$2"; }
for r in $(seq "${ROUNDS:-1}"); do
  for st in ${SETTINGS:--}; do
    echo "-- $st (round $r)"
    [ -d "/tmp/ab_$st" ] && e="" || e=$(envof "$st")
    env $e BENCH_SCAN_M1_ONLY=1 BENCH_SCAN_NO_TP=1 timeout 150 "$(binof "$st" bench_cuda_scan)" 2>&1
  done
done | tee "$OUT/bench_cuda_scan.txt" | grep -E "^--|bf16|E  *T" | head -80
for st in ${FORWARD_SETTINGS:-}; do
  echo "-- $st"
  [ -d "/tmp/ab_$st" ] && e="" || e=$(envof "$st")
  env $e BENCH_FORWARD_MODES=bf16 BENCH_FORWARD_NO_DECODE=1 timeout 150 "$(binof "$st" bench_cuda_forward)" \
    ${FORWARD_MODELS:-mamba-130m mamba-1.4b} 2>&1
done | tee "$OUT/bench_cuda_forward.txt" | grep -E "^--|16384|131072|ceiling"
find_ncu
if [ -n "$NCU" ] && [ "$(elapsed)" -lt "${NCU_BEFORE_S:-420}" ]; then
  BENCH_FORWARD_PROFILE=16384 timeout 120 "$NCU" --clock-control none -k regex:'m1_(scan|chunk_states)' \
    --launch-count 2 --section SourceCounters --section WarpStateStats --import-source no -o /tmp/src -f \
    build-gpu/bench/bench_cuda_forward "${PROFILE_MODEL:-mamba-1.4b}" > "$OUT/ncu.log" 2>&1
  "$NCU" --import /tmp/src.ncu-rep --page source --csv --print-source sass > "$OUT/source.csv" 2>> "$OUT/ncu.log"
  echo "ncu: $(wc -l < "$OUT/source.csv") source rows"; tail -3 "$OUT/ncu.log"
fi
echo "total: $(elapsed) s"
