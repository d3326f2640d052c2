#!/usr/bin/env bash
# build.sh: configure and build Mambascope into build/ (Release). Extra arguments go to cmake's configure step,
# e.g. scripts/build.sh -DMAMBASCOPE_GUI=OFF. Used by run.sh and test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MAMBASCOPE_BUILD_DIR:-$root/build}"
jobs="${MAMBASCOPE_JOBS:-$(nproc)}"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build" -j "$jobs"
