#!/usr/bin/env bash
# Run on the GPU machine from the repository root, with $OUT set (the device tool's output folder) and the
# training text in .traindata/ (a copy of ../shared/data/corpus/train/*.txt; not committed):
#   1. reference fixtures from HF transformers  -> $OUT/fixtures.tar.gz (tests/data/models/...)
#   2. tokenizer reference encodings            -> $OUT/tokenizer_fixtures.json
#   3. demo models, TRAIN_MINUTES each          -> $OUT/demo-mamba1.tar.gz, $OUT/demo-mamba2.tar.gz
# Each stage's failure is printed and the next stage still runs.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:?set OUT}"
minutes="${TRAIN_MINUTES:-3.5}"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"

echo "== stage 1: model fixtures"
rm -rf /tmp/fx && mkdir -p /tmp/fx/models
if python3 scripts/fixtures/make_model_fixtures.py --out /tmp/fx/models; then
  tar -C /tmp/fx -czf "$OUT/fixtures.tar.gz" models && echo "stage 1 ok"
else
  echo "STAGE 1 FAILED"
fi

echo "== stage 2: tokenizer fixtures"
python3 scripts/fixtures/make_tokenizer_fixtures.py --tokenizer resources/tokenizer/gpt-neox-20b.json \
  --out "$OUT/tokenizer_fixtures.json" || echo "STAGE 2 FAILED"

echo "== stage 3: demo models ($minutes min each)"
for arch in mamba1 mamba2; do
  rm -rf "/tmp/demo/demo-$arch"
  if python3 scripts/train/train_demo.py --corpus .traindata --out /tmp/demo --minutes "$minutes" --arch "$arch"; then
    [ -f "/tmp/demo/demo-$arch/model.safetensors" ] && tar -C /tmp/demo -czf "$OUT/demo-$arch.tar.gz" "demo-$arch" \
      && echo "stage 3 $arch ok"
  else
    echo "STAGE 3 $arch FAILED"
  fi
done
ls -la "$OUT"
