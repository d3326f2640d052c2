#!/usr/bin/env bash
# Second round for Mamba-1 (the first, with a length curriculum, stayed at chance: docs/results.md). Run on the
# GPU machine like train_passkey_demo.sh (same .traindata/.evaldata copies); two variants concurrently.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:?set OUT}"
M="${TRAIN_MINUTES:-7}"
train() {  # name, then train_passkey.py's arguments
  local name="$1"; shift
  mkdir -p "/tmp/pk/$name"
  python3 scripts/train/train_passkey.py --corpus .traindata --eval-text .evaldata/emma.txt --out "/tmp/pk/$name" "$@" \
    > "/tmp/pk/$name/train.log" 2>&1
  echo "== $name exit $?"; grep -E "accuracy|trained|HF vs|Error|error" "/tmp/pk/$name/train.log" | tail -8
  tar -C /tmp/pk -czf "$OUT/$name.tar.gz" "$name"
}
train m1-n16 --arch mamba1 --template standard --batch 32 --lr 2e-3 --max-steps 6000 --minutes "$M" --eval-n 60 &
train m1-n32-aw30 --arch mamba1 --template standard --batch 32 --lr 1e-3 --d-state 32 --answer-weight 30 \
  --max-steps 6000 --minutes "$M" --eval-n 60 &
wait
ls -la "$OUT"
