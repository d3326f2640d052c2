#!/usr/bin/env bash
# mpi_gpu_check.sh: issue 18 on the one-GPU machine (docs/scaling.md, "Two ranks on one GPU"). Builds
# mambascope-cli with CUDA and MPI (the image's Open MPI), then runs calibrate, ppl-sweep and retrieval with
# --device cuda as one process and under `mpirun -np 2` (both ranks on GPU 0: node-local rank modulo one GPU) and
# compares the outputs the way tests/mpi/dist_test.sh does (HDF5 byte for byte, CSV / JSON without seconds).
# Times each. From the repository root with $OUT set; CLI11 (header-only) is taken from build-deps/ when the image
# lacks it (cp -r /usr/share/cmake/CLI11 build-deps/share/cmake/; cp -r /usr/include/CLI build-deps/include/; carry
# build-deps).
set -uo pipefail
source scripts/device/lib.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
extra=()
[ -d build-deps/share/cmake/CLI11 ] && extra=(-DCLI11_DIR="$PWD/build-deps/share/cmake/CLI11")
if ! { cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DMAMBASCOPE_GUI=OFF -DMAMBASCOPE_CUDA=ON \
         -DMAMBASCOPE_MPI=ON -DCMAKE_CUDA_ARCHITECTURES=90 "${extra[@]}" > "$OUT/build.log" 2>&1 &&
       cmake --build build-gpu -j 16 --target mambascope-cli >> "$OUT/build.log" 2>&1; }; then
  echo "build failed:"; grep -E "error|Error" "$OUT/build.log" | head -30; exit 1
fi
echo "build: $(elapsed) s"
cli=$PWD/build-gpu/app/cli/mambascope-cli
res=$PWD/resources
m1=$res/models/demo-mamba1 text=$res/text/demo.txt cal1=$res/calibration/demo-mamba1.h5
w=$(mktemp -d); cd "$w" || exit 1
t() { local s e; s=$(date +%s.%N); "$@"; local rc=$?; e=$(date +%s.%N); awk -v a="$s" -v b="$e" 'BEGIN { printf "%.2f", b - a }' > .t; return $rc; }
row() { printf '%-10s %-9s %8s s   %s\n' "$1" "$2" "$(cat .t)" "$3"; }
cal=(calibrate --model "$m1" --text "$text" --train-len 2048 --samples 8 --device cuda --progress none)
swp=(ppl-sweep --model "$m1" --text "$text" --lengths 1024,4096,8192 --windows 4 --predict 100
  --methods vanilla,longmamba --calibration "$cal1" --device cuda --progress none)
ret=(retrieval --model demo --lengths 1000,4000 --depths 0,0.5,1 --samples 2 --device cuda --progress none)
for np in 1 2; do
  t mpirun --oversubscribe -np $np "$cli" "${cal[@]}" --out cal$np.h5 > cal$np.txt 2> cal$np.err; row calibrate "-np $np" "rc=$? $(grep -h rank cal$np.err | tr -s " \n" " ")"
  t mpirun --oversubscribe -np $np "$cli" "${swp[@]}" --out swp$np.csv > swp$np.txt 2> swp$np.err; row ppl-sweep "-np $np" "rc=$? $(grep -h rank swp$np.err | tr -s " \n" " ")"
  t mpirun --oversubscribe -np $np "$cli" "${ret[@]}" --out ret$np.json > ret$np.txt 2> ret$np.err; row retrieval "-np $np" "rc=$? $(grep -h rank ret$np.err | tr -s " \n" " ")"
done
grep -h -i "cuda\|note" cal2.err swp2.err ret2.err | sort | uniq -c | head -5
python3 - <<'PY'
import h5py, numpy as np
a, b = h5py.File("cal1.h5", "r"), h5py.File("cal2.h5", "r")
n = []
a.visititems(lambda k, o: n.append(k) if isinstance(o, h5py.Dataset) else None)
bad = [k for k in n if a[k][()].tobytes() != b[k][()].tobytes()]
print("calibrate -np 2 vs -np 1:", "identical" if not bad else "DIFFER " + ",".join(bad), f"({len(n)} datasets)")
PY
cmp <(cut -d, -f1-6 swp1.csv) <(cut -d, -f1-6 swp2.csv) && echo "ppl-sweep -np 2 vs -np 1: identical" || echo "ppl-sweep: DIFFER"
cmp <(grep -v '"seconds"' ret1.json) <(grep -v '"seconds"' ret2.json) && echo "retrieval -np 2 vs -np 1: identical" || echo "retrieval: DIFFER"
cp -- *.err *.txt swp1.csv "$OUT/" 2>/dev/null
echo "done: $(elapsed) s"
