#!/usr/bin/env bash
# run.sh: the README's main command. Installs the Debian packages, builds, and runs the vanilla-vs-LongMamba
# comparison on the embedded demo (a passkey haystack 64x past the demo model's training length):
#  - with a display: opens the Mambascope window on the demo session;
#  - headless (no $DISPLAY / $WAYLAND_DISPLAY): writes out/trace.h5 (HDF5 trace), out/comparison.png (the comparison
#    figure with the shipped retrieval run) and out/summary.txt (the comparison table and each method's answer).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/install-deps.sh"
bash "$root/scripts/build.sh"
build="${MAMBASCOPE_BUILD_DIR:-$root/build}"
out="${MAMBASCOPE_OUT:-$root/out}"
session="$root/resources/demo/session.json"
if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then
  if [ -x "$build/app/gui/mambascope" ]; then
    exec "$build/app/gui/mambascope" --session "$session"
  fi
fi
mkdir -p "$out"
echo "run.sh: headless: writing the demo comparison into $out"
"$build/app/cli/mambascope-cli" analyze --session "$session" --out "$out/trace.h5" | tee "$out/summary.txt"
if [ -x "$build/app/gui/mambascope" ]; then
  QT_QPA_PLATFORM=offscreen "$build/app/gui/mambascope" --trace "$out/trace.h5" \
    --retrieval "$root/resources/demo/retrieval.json" --screenshot "$out/comparison.png"
  echo "run.sh: wrote $out/comparison.png"
fi
echo "run.sh: wrote $out/trace.h5 and $out/summary.txt"
