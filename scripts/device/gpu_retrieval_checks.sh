#!/usr/bin/env bash
# Run on the GPU machine from the repository root with $OUT set: builds the CUDA backend (GUI off), runs the CUDA
# forward/decoder tests (the filtered decoder among them) and the retrieval tests, then the demo retrieval run on
# the CPU and on the GPU (they must agree) and the demo haystack session with --device cuda.
set -uo pipefail
OUT="${OUT:?set OUT}"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
t0=$(date +%s)
if ! { cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DMAMBASCOPE_GUI=OFF -DMAMBASCOPE_CUDA=ON \
         -DCMAKE_CUDA_ARCHITECTURES=90 > "$OUT/cmake.log" 2>&1 &&
       cmake --build build-gpu -j 16 --target mambascope_cuda_tests mambascope_tests mambascope-cli \
         >> "$OUT/cmake.log" 2>&1; }; then
  echo "build on the GPU machine failed:"; grep -E "error|Error" "$OUT/cmake.log" | head -30; exit 1
fi
echo "build: $(( $(date +%s) - t0 )) s"
echo "== CUDA forward tests"
timeout 200 build-gpu/tests/mambascope_cuda_tests --gtest_filter='*CudaForward*' 2>&1 | tee "$OUT/cuda_tests.log" |
  grep -E "^\[  (PASSED|FAILED) |^\[==|Failure|FilteredDecoder" | head -30
echo "== retrieval tests"
timeout 200 build-gpu/tests/mambascope_tests --gtest_filter='Haystack*:Retrieval*:*FilteredDecoder*:PasskeyDemo*' \
  2>&1 | tee "$OUT/retrieval_tests.log" | grep -E "^\[  (PASSED|FAILED) |^\[==|Failure" | head -20
echo "== demo retrieval: CPU vs CUDA"
for d in cpu cuda; do
  /usr/bin/time -f "$d: %e s" build-gpu/app/cli/mambascope-cli retrieval --model demo --lengths 256,4096,16384 \
    --depths 0,0.25,0.5 --samples 2 --device $d --csv "$OUT/ret_$d.csv" 2>&1 | grep -v "^retrieval: wrote"
done
python3 - "$OUT/ret_cpu.csv" "$OUT/ret_cuda.csv" <<'PY'
import csv, sys
a = list(csv.DictReader(open(sys.argv[1]))); b = list(csv.DictReader(open(sys.argv[2])))
diff = [(x["method"], x["length"], x["depth"], x["sample"], x["tf_correct"], y["tf_correct"], x["generated"], y["generated"])
        for x, y in zip(a, b) if x["tf_correct"] != y["tf_correct"] or x["generated"] != y["generated"]]
print(f"CPU vs CUDA: {len(a)} rows, {len(diff)} differ"); [print("  ", d) for d in diff[:10]]
PY
echo "== demo session on the GPU"
sed 's/"max_tokens": 32768,/"max_tokens": 32768, "device": "cuda",/' resources/demo/session.json > /tmp/s.json
cp -r resources /tmp/ 2>/dev/null; build-gpu/app/cli/mambascope-cli analyze --session /tmp/s.json --out /tmp/t.h5 2>&1 | tail -8
echo "total: $(( $(date +%s) - t0 )) s"
