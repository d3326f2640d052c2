#!/usr/bin/env bash
# thirty-first stop, one device call: coherent reads after the PDL wait (this tree) against HEAD's kernels (base)
# base: .ab/base held the kernel files of d35fe91 (git show d35fe91:kernels/cuda/F for F = gemv.cu,
# conv1d_silu.cu, rmsnorm.cu, scan_mamba1.cu); this tree was d35fe91 plus after_wait (the first commit
# of the thirty-first stop)
set -uo pipefail
O=/tmp/o; mkdir -p $O
BUILD_TARGETS="mambascope_cuda_tests bench_cuda_scan bench_cuda_forward" SETTINGS="- base" ROUNDS=2 \
  AB_TREES="base:.ab/base" AB_TARGETS="bench_cuda_scan bench_cuda_forward" FORWARD_SETTINGS="- base" \
  FORWARD_MODELS="mamba-1.4b" NCU_BEFORE_S=0 OUT=$O bash scripts/device/gpu_m1_sass.sh > $O/m1.txt 2>&1
grep -E "tests|PASSED|FAILED|tree|total" $O/m1.txt | head -20
CUOBJDUMP=$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null | head -1)
OBJ=kernels/CMakeFiles/mambascope_kernels_cuda.dir/cuda
for t in . /tmp/ab_base; do
  for k in scan_mamba1:m1_combine conv1d_silu:conv_kernelILi4E13__nv_bfloat16 gemv:gemv_split_kernelI13__nv_bfloat16S4_S4_Li4; do
    "$CUOBJDUMP" -sass "$t/build-gpu/$OBJ/${k%%:*}.cu.o" 2>/dev/null | awk -v k="${k#*:}" '/Function :/{on=index($0,k)>0} on' \
      > /tmp/sass_k.txt
    echo "== $t ${k#*:}: $(grep -c LDG /tmp/sass_k.txt) LDG ($(grep -c 'LDG.*CONSTANT' /tmp/sass_k.txt) .CONSTANT)"
    case $k in *combine) grep -E "^\s+/\*[0-9a-f]{4}\*/" /tmp/sass_k.txt | head -90 ;;
      *) grep -nE "LDG|ACQBULK|griddep|DEPBAR|CCTL|Function" /tmp/sass_k.txt | head -24 ;; esac
  done
done > $O/sass_pdl_loads.txt 2>&1
head -c 3000 $O/sass_pdl_loads.txt
NO_BUILD=1 ROUNDS=2 SETTINGS="- base" ROWS="bf16, graph, greedy run on the GPU" OUT=$O \
  bash scripts/device/gpu_decode_ab.sh > $O/decode.txt 2>&1
cat $O/decode_ab_summary.txt
grep -E "^--|bf16|E  *T" $O/bench_cuda_scan.txt | head -60
grep -E "^--|16384|ceiling" $O/bench_cuda_forward.txt
tar czf "$OUT/results.tgz" -C $O .
