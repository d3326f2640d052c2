#!/usr/bin/env bash
# screenshots.sh: regenerates the user guide's pictures (docs/images) with the tool itself, from the demo
# session: one CLI run writes a trace, then the app draws each picture from it headless (offscreen Qt).
#
#   scripts/screenshots.sh [--gui BIN] [--cli BIN] [--out DIR] [--check]
#
# --gui / --cli: the binaries (default build/app/gui/mambascope, build/app/cli/mambascope-cli); --out: where the
# PNGs go (default docs/images); --check: also verify every picture (a PNG of the expected size that is not
# blank) and that the composite's PDF is vector (text objects). ctest runs it with --check into a temp
# folder (test gui_screenshots), so the pictures cannot silently stop being producible.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
gui="$root/build/app/gui/mambascope"
cli="$root/build/app/cli/mambascope-cli"
out="$root/docs/images"
check=0
while [ $# -gt 0 ]; do
  case "$1" in
    --gui) gui="$2"; shift 2 ;;
    --cli) cli="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --check) check=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "screenshots.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for bin in "$gui" "$cli"; do
  [ -x "$bin" ] || { echo "screenshots.sh: $bin is not built (scripts/build.sh)" >&2; exit 2; }
done
export QT_QPA_PLATFORM=offscreen MAMBASCOPE_RESOURCES="$root/resources"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 1. The demo session's run (passkey haystack of 16,384 bytes, demo-mamba2, vanilla / LongMamba / DeciMamba),
# with its selected channel (layer 3, channel 0) traced up front.
sed 's/^{/{ "channels": [[3, 0], [3, 5]],/' "$root/resources/demo/session.json" > "$work/demo.json"
"$cli" analyze --session "$work/demo.json" --out "$work/trace.h5" > "$work/analyze.log"

# A session on that trace with a view state (what the user guide's commands describe).
session() {  # session NAME VIEW VIEW_STATE_JSON
  cat > "$work/$1.json" <<EOF
{ "mambascope_session": 1, "model": "$root/resources/models/demo-mamba2", "trace": "$work/trace.h5",
  "selection": {"layer": 3, "channel": 0, "token": -1}, "view": "$2", "view_state": $3 }
EOF
}

# 2. The pictures.
"$gui" --trace "$work/trace.h5" --retrieval "$root/resources/demo/retrieval.json" \
  --screenshot "$out/comparison.png" --scale 0.75
session tokens tokens '{"tokens": "global_keep"}'
"$gui" --session "$work/tokens.json" --view tokens --screenshot "$out/tokens-global-keep.png" --scale 1
"$gui" --trace "$work/trace.h5" --view global_ratio --screenshot "$out/global-ratio.png" --scale 1
session detail channel_detail '{"channel_map": "log_decay"}'
"$gui" --session "$work/detail.json" --view channel_detail --screenshot "$out/channel-detail.png" --scale 1
session map channel_map '{"channel_map": "log_decay", "difference_map": true}'
"$gui" --session "$work/map.json" --view channel_map --screenshot "$out/channel-map-difference.png" --scale 1

[ "$check" = 1 ] || exit 0

# 3. Checks: each PNG has its signature, a plausible size and more than a blank page's bytes; the vector
# composite has fonts and at most its heatmaps as images.
png_size() {  # prints "WIDTH HEIGHT" from the IHDR chunk
  od -An -tu1 -j16 -N8 "$1" | awk '{ printf "%d %d\n", $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8 }'
}
fail=0
for name in comparison tokens-global-keep global-ratio channel-detail channel-map-difference; do
  f="$out/$name.png"
  if [ "$(head -c 8 "$f" | od -An -tx1 | tr -d ' \n')" != "89504e470d0a1a0a" ]; then
    echo "screenshots.sh: $f is not a PNG" >&2; fail=1; continue
  fi
  read -r w h < <(png_size "$f")
  bytes=$(stat -c %s "$f")
  if [ "$w" -lt 600 ] || [ "$h" -lt 400 ] || [ "$bytes" -lt 20000 ]; then
    echo "screenshots.sh: $f is ${w}x${h}, $bytes bytes: too small or blank" >&2; fail=1
  else
    echo "ok $name.png ${w}x${h} $bytes bytes"
  fi
done
"$gui" --trace "$work/trace.h5" --screenshot "$work/comparison.pdf" > /dev/null
fonts=$(grep -c -a '/Font' "$work/comparison.pdf" || true)
images=$(grep -c -a '/Subtype /Image' "$work/comparison.pdf" || true)
if [ "$fonts" -lt 1 ] || [ "$images" -gt 8 ]; then
  echo "screenshots.sh: comparison.pdf is not vector ($fonts font objects, $images images)" >&2; fail=1
else
  echo "ok comparison.pdf: $fonts font objects, $images images (heatmaps)"
fi
exit $fail
