#!/usr/bin/env bash
# Runs tests/cuda/test_cuda_kernels.cpp against a CPU emulation of the CUDA kernels (no GPU needed): checks
# indexing, time chunking, barriers, shuffles, probes and carried state. MUFU precision and speed are NOT
# emulated (exp2/log2 are libm's), so this complements, never replaces, the GPU run.
# Usage: tests/cuda/emu/run.sh [build-dir]   (the build dir must have built mambascope_kernels_cpu)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
build="${1:-$root/build}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 "$here/gen.py" "$root/kernels/cuda" "$work"
cuda_inc=/usr/local/cuda/include
g++ -std=c++20 -O2 -fopenmp -pthread -I"$work" -I"$here" -I"$root/kernels" -I"$root/engine/include" -I"$cuda_inc" \
    -include "$here/emu_rt.h" -DMAMBASCOPE_CUDA_EMULATED=1 -o "$work/emu_tests" "$work"/*_emu.cpp "$here/stubs.cpp" \
    "$root/tests/cuda/test_cuda_kernels.cpp" "$build/kernels/libmambascope_kernels_cpu.a" -lgtest -lgtest_main
"$work/emu_tests" --gtest_filter='-CudaGemm.*' "${@:2}"
