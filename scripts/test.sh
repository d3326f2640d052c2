#!/usr/bin/env bash
# test.sh: the README's test command. Installs the Debian packages, builds everything, runs the whole suite (ctest).
# CUDA tests skip themselves where no GPU is present; they run on a GPU machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/install-deps.sh"
bash "$root/scripts/build.sh" "$@"
build="${MAMBASCOPE_BUILD_DIR:-$root/build}"
export QT_QPA_PLATFORM=offscreen
ctest --test-dir "$build" --output-on-failure -j "$(nproc)"
