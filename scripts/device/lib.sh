# lib.sh: what the GPU-machine scripts share (gpu_round2.sh, profile_scan_and_forward.sh). Source it from the
# repository root after `set -uo pipefail`: it needs $OUT, puts CUDA's libraries on the library path, starts
# the clock t0 and defines:
#   elapsed                       seconds since t0
#   build_cuda LOG JOBS TARGET... configure build-gpu (Release, CUDA on, GUI off, sm_90) and build the targets,
#                                 logging to LOG; on failure print the errors and exit 1
#   find_ncu                      set NCU to Nsight Compute's ncu ("" when it is not installed)
#   envof SETTING                 a setting's environment: "-" none, else its comma-joined VAR=value list, less
#                                 its first item when that is the label of an AB tree (/tmp/ab_<label>)
#   binof SETTING BENCH           the bench binary that runs SETTING: the AB tree's when it starts with a tree's
#                                 label (gpu_m1_sass.sh's AB_TREES), else build-gpu's
#   ncu_kernel_table CSV TOP DEC  from an `ncu --metrics gpu__time_duration.sum --csv` log: total kernel time
#                                 and the TOP kernels by time (cuBLAS GEMMs named as such), DEC decimals in ms
OUT="${OUT:?set OUT}"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
t0=$(date +%s)

elapsed() { echo $(( $(date +%s) - t0 )); }

build_cuda() {
  local log=$1 jobs=$2
  shift 2
  if ! { cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DMAMBASCOPE_GUI=OFF -DMAMBASCOPE_CUDA=ON \
           -DCMAKE_CUDA_ARCHITECTURES=90 > "$log" 2>&1 &&
         cmake --build build-gpu -j "$jobs" --target "$@" >> "$log" 2>&1; }; then
    echo "build failed:"; grep -E "error|Error" "$log" | head -30; exit 1
  fi
  echo "build: $(elapsed) s"
}

envof() {
  local first=${1%%,*} rest=""
  [ "$1" = "-" ] && return
  [[ $1 == *,* ]] && rest=${1#*,}
  [ -d "/tmp/ab_$first" ] && echo "$rest" | tr ',' ' ' || echo "$1" | tr ',' ' '
}

binof() {
  [ -x "/tmp/ab_${1%%,*}/build-gpu/bench/$2" ] && echo "/tmp/ab_${1%%,*}/build-gpu/bench/$2" || echo "build-gpu/bench/$2"
}

find_ncu() {
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
}

ncu_kernel_table() {
  python3 - "$@" <<'PY'
import csv, re, sys, collections
top, dec = int(sys.argv[2]), int(sys.argv[3])
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
print(f"total kernel time {s / 1e6:.{dec - 1}f} ms over {sum(cnt.values())} kernels")
for name, t in tot.most_common(top):
    print(f"{t / 1e6:9.{dec}f} ms {100 * t / s:5.1f}%  x{cnt[name]:<4} {name}")
PY
}
