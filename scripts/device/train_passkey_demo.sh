#!/usr/bin/env bash
# Run on the GPU machine from the repository root, with $OUT set (the device tool's output folder), the training
# text in .traindata/ (a copy of ../shared/data/corpus/train/*.txt) and the eval book in .evaldata/emma.txt (a copy
# of ../shared/data/corpus/eval/emma.txt); neither is committed. Trains the passkey demo candidates concurrently on
# the one GPU (each is launch-bound alone), each with a wall-clock cap, and packs each into $OUT/<name>.tar.gz with
# its log as soon as it finishes.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:?set OUT}"
M="${TRAIN_MINUTES:-6.5}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
train() {  # name, then train_passkey.py's arguments
  local name="$1"; shift
  mkdir -p "/tmp/pk/$name"
  python3 scripts/train/train_passkey.py --corpus .traindata --eval-text .evaldata/emma.txt --out "/tmp/pk/$name" "$@" \
    > "/tmp/pk/$name/train.log" 2>&1
  echo "== $name exit $?"; grep -E "accuracy|trained|HF vs|Error|error" "/tmp/pk/$name/train.log" | tail -8
  tar -C /tmp/pk -czf "$OUT/$name.tar.gz" "$name"
}
train m2-standard --arch mamba2 --template standard --max-steps 4000 --minutes "$M" &
train m2-short --arch mamba2 --template short --max-steps 4000 --minutes "$M" &
train m1-curriculum --arch mamba1 --template standard --batch 32 --curriculum 0.3 --max-steps 6000 --minutes "$M" &
wait
ls -la "$OUT"
