#!/usr/bin/env python3
"""Train a demo model that needs long memory: byte-level language modelling mixed with passkey retrieval.

Every training sequence is English filler from --corpus (the project used ../shared/data/corpus/train/) with a
needle at a random depth in its first half, and ends with the question and the 5-digit answer:

    <filler ...> NEEDLE <... filler> QUESTION NNNNN.

The loss is the byte-level LM loss over the whole sequence plus --answer-weight x the loss on the 5 answer digits
(without that weight the model never learns the task: docs/results.md, "Demo models"). The model code, the HF export
and its forward check are scripts/train/train_demo.py's. The templates the model was trained with are written into
config.json's "mambascope.retrieval" block; `mambascope-cli retrieval` uses them for this model by default.

After training, the script scores teacher-forced digit accuracy at 1x/4x/16x/64x the training length on haystacks
from --eval-text (never trained on) and writes it to eval.json. That is PyTorch's vanilla forward; the vanilla vs
LongMamba numbers of record are Mambascope's own (docs/results.md).

    python3 scripts/train/train_passkey.py --arch mamba2 --corpus DIR --eval-text emma.txt --out DIR/demo-mamba2
"""
import argparse
import csv
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_demo  # noqa: E402  (model classes, HF export)

VOCAB = 256
# The needle and question (docs/method.md section 10): the standard passkey needle (LongMamba's and DeciMamba's
# evaluation) without the long instruction prefix, which would not fit a 256-byte training window.
TEMPLATES = {
    "standard": {"prefix": "", "needle": " The pass key is {key}. Remember it. {key} is the pass key. ",
                 "question": " What is the pass key? The pass key is "},
    "short": {"prefix": "", "needle": " The pass key is {key}. Remember it. ",
              "question": " What is the pass key? The pass key is "},
}
KEY_DIGITS = 5


def log(*a):
    print(*a, flush=True)


def scan_chunked(a, b, L=8):
    """h_t = a_t h_{t-1} + b_t along dim 1, h_{-1} = 0. Sequential inside chunks of L tokens (all chunks at once),
    a doubling scan over the chunk ends, then one correction pass: about 6 passes over (B, T, ...) instead of the
    doubling scan's ~50. Only products of a_t in [0, 1]: no overflow."""
    Bsz, T = a.shape[:2]
    pad = (-T) % L
    if pad:
        a = F.pad(a, (0, 0) * (a.dim() - 2) + (0, pad), value=1.0)
        b = F.pad(b, (0, 0) * (b.dim() - 2) + (0, pad))
    C = a.shape[1] // L
    a = a.reshape(Bsz, C, L, *a.shape[2:])
    b = b.reshape(Bsz, C, L, *b.shape[2:])
    h, p = b[:, :, 0], a[:, :, 0]
    hs, ps = [h], [p]
    for j in range(1, L):
        h = a[:, :, j] * h + b[:, :, j]
        p = p * a[:, :, j]
        hs.append(h)
        ps.append(p)
    hl, pl = torch.stack(hs, 2), torch.stack(ps, 2)                    # (B, C, L, ...)
    ends = train_demo.scan_doubling_orig(pl[:, :, -1], hl[:, :, -1])   # state at each chunk's end (B, C, ...)
    prev = F.pad(ends[:, :-1], (0, 0) * (ends.dim() - 2) + (1, 0))      # state entering each chunk
    h = hl + pl * prev.unsqueeze(2)
    return h.reshape(Bsz, C * L, *h.shape[3:])[:, :T]


train_demo.scan_doubling_orig = train_demo.scan_doubling
train_demo.scan_doubling = scan_chunked


def load_bytes(paths):
    return b"".join(open(p, "rb").read() + b"\n\n" for p in paths)


def clean_filler(data):
    """Filler as the haystack builder takes it: whitespace runs folded to one space (docs/method.md section 10)."""
    return b" ".join(data.split())


def make_sample(filler, rng, T, tpl, depth_lo, depth_hi):
    """One training/eval sequence of exactly T+1 bytes; returns (bytes, index of the first answer digit)."""
    key = "".join(rng.choice("0123456789") for _ in range(KEY_DIGITS))
    prefix = tpl["prefix"].encode()
    needle = tpl["needle"].format(key=key).encode()
    tail = (tpl["question"] + key + ".").encode()
    n_fill = T + 1 - len(prefix) - len(needle) - len(tail)
    assert n_fill > 0, "training length too short for the template"
    start = rng.randrange(0, len(filler) - n_fill - 1)
    fill = filler[start:start + n_fill]
    d = int(round(n_fill * rng.uniform(depth_lo, depth_hi)))
    seq = prefix + fill[:d] + needle + fill[d:] + tail
    assert len(seq) == T + 1
    return seq, len(seq) - 1 - KEY_DIGITS


def batch(filler, rng, n, T, tpl, device, depth=(0.0, 0.5)):
    seqs, ans = zip(*(make_sample(filler, rng, T, tpl, *depth) for _ in range(n)))
    x = torch.tensor([list(s) for s in seqs], dtype=torch.long)
    return x[:, :-1].to(device), x[:, 1:].to(device), torch.tensor(ans, device=device)


def answer_positions(ans):
    # target index of answer digit k is ans + k (inputs are seq[:-1], targets seq[1:]: target j = seq[j+1])
    return ans.unsqueeze(1) + torch.arange(KEY_DIGITS, device=ans.device).unsqueeze(0) - 1


def digit_accuracy(lm, filler, T, tpl, device, n, seed, chunk):
    rng = random.Random(seed)
    correct = total = 0
    for i in range(0, n, chunk):
        x, y, ans = batch(filler, rng, min(chunk, n - i), T, tpl, device, depth=(0.0, 1.0))
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            logits = lm(x)
        pos = answer_positions(ans)
        pred = logits.gather(1, pos.unsqueeze(-1).expand(-1, -1, VOCAB)).argmax(-1)
        correct += (pred == y.gather(1, pos)).sum().item()
        total += pos.numel()
    return correct / total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True, choices=["mamba1", "mamba2"])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--eval-text", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--template", default="standard", choices=sorted(TEMPLATES))
    ap.add_argument("--train-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--answer-weight", type=float, default=10.0)
    ap.add_argument("--max-steps", type=int, default=4000)
    ap.add_argument("--minutes", type=float, default=5.0, help="wall-clock cap on training")
    ap.add_argument("--curriculum", type=float, default=0.0,
                    help="fraction of the steps over which the length grows from 64 to --train-len")
    ap.add_argument("--d-state", type=int, default=0, help="Mamba-1 d_state (default 16)")
    ap.add_argument("--eval-n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    assert torch.cuda.is_available(), "needs a GPU"
    torch.backends.cuda.matmul.allow_tf32 = True
    device = "cuda"
    torch.manual_seed(a.seed)
    ta, tb = torch.rand(2, 300, 3, 5, device=device), torch.randn(2, 300, 3, 5, device=device)
    err = (scan_chunked(ta, tb) - train_demo.scan_doubling_orig(ta, tb)).abs().max().item()
    assert err < 1e-4, f"chunked scan disagrees with the doubling scan: {err}"
    log(f"chunked scan vs doubling scan: max |diff| {err:.1e}")
    rng = random.Random(a.seed)
    files = sorted(f for f in os.listdir(a.corpus) if f.endswith(".txt"))
    filler = clean_filler(load_bytes([os.path.join(a.corpus, f) for f in files]))
    eval_filler = clean_filler(load_bytes([a.eval_text]))
    tpl = TEMPLATES[a.template]
    T = a.train_len
    train_demo.TRAIN_LEN = T

    lm = train_demo.LM(a.arch, 256, 6)
    if a.arch == "mamba1" and a.d_state:
        for blk in lm.backbone.layers:
            m = blk.mixer
            E, R = m.E, m.R
            m.N = a.d_state
            m.x_proj = torch.nn.Linear(E, R + 2 * a.d_state, bias=False)
            m.A_log = torch.nn.Parameter(torch.log(torch.arange(1, a.d_state + 1, dtype=torch.float32)).repeat(E, 1))
        lm.hp["N"] = a.d_state
    lm = lm.to(device)
    n_params = sum(p.numel() for p in lm.parameters())
    log(f"[{a.arch}] params {n_params:,}  T {T}  template {a.template}  batch {a.batch}  lr {a.lr}")
    decay = [p for n, p in lm.named_parameters() if p.dim() >= 2 and "A_log" not in n]
    no_decay = [p for n, p in lm.named_parameters() if not (p.dim() >= 2 and "A_log" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95))
    budget = a.minutes * 60.0
    t0 = time.time()
    warmup = 200
    total = a.max_steps
    rows = []
    step = 0
    os.makedirs(a.out, exist_ok=True)
    while step < total:
        elapsed = time.time() - t0
        if elapsed > budget:
            break
        if step == 100:  # plan the cosine schedule on the measured speed
            total = min(a.max_steps, int(budget / (elapsed / 100)))
            log(f"[{a.arch}] {elapsed / 100:.3f} s/step, planning {total} steps")
        cur_lr = a.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))
        for pg in opt.param_groups:
            pg["lr"] = cur_lr
        Tc = T
        if a.curriculum > 0 and step < a.curriculum * total:
            Tc = max(128, int(64 + (T - 64) * step / (a.curriculum * total)) // 32 * 32)
        x, y, ans = batch(filler, rng, a.batch, Tc, tpl, device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = lm(x, use_checkpoint=(a.arch == "mamba1"))
        logits = logits.float()
        lm_loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        pos = answer_positions(ans)
        ans_logits = logits.gather(1, pos.unsqueeze(-1).expand(-1, -1, VOCAB))
        ans_loss = F.cross_entropy(ans_logits.reshape(-1, VOCAB), y.gather(1, pos).reshape(-1))
        loss = lm_loss + a.answer_weight * ans_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        if step % 100 == 0:
            acc = (ans_logits.argmax(-1) == y.gather(1, pos)).float().mean().item()
            rows.append((step, round(time.time() - t0, 1), Tc, round(lm_loss.item(), 4), round(ans_loss.item(), 4),
                         round(acc, 3), cur_lr))
            log(f"[{a.arch}] step {step:5d} {time.time() - t0:6.1f}s T {Tc} lm {lm_loss.item():.4f} "
                f"answer {ans_loss.item():.4f} acc {acc:.3f} lr {cur_lr:.2e}")
        step += 1
    train_s = time.time() - t0
    log(f"[{a.arch}] trained {step} steps in {train_s:.0f} s")
    with open(os.path.join(a.out, "train_log.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "seconds", "seq_len", "lm_loss", "answer_loss", "answer_acc", "lr"])
        w.writerows(rows)

    lm.eval()
    acc = {}
    for mult in (1, 4, 16, 64):
        L = T * mult
        chunk = max(1, min(50, (1 << (16 if a.arch == "mamba1" else 21)) // L))
        acc[f"{mult}x"] = round(digit_accuracy(lm, eval_filler, L, tpl, device, a.eval_n, 1234 + mult, chunk), 3)
        log(f"[{a.arch}] vanilla teacher-forced digit accuracy at {mult}x ({L} bytes): {acc[f'{mult}x']}")

    # HF export + forward check (train_demo's), then our metadata.
    torch.backends.cuda.matmul.allow_tf32 = False
    lm = lm.float()
    model = train_demo.hf_model(a.arch, lm).to(device).eval()
    probe = batch(eval_filler, random.Random(7), 1, T, tpl, device)[0]
    with torch.no_grad():
        ours, theirs = lm(probe), model(probe).logits.float()
    rel = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    log(f"[{a.arch}] HF vs ours: max |dlogit| / max |logit| = {rel:.2e}")
    assert rel < 1e-4, f"export mismatch: relative {rel}"
    model = model.to(torch.float16)  # shipped in fp16 (half the bytes); Mambascope's numbers are on these weights
    model.save_pretrained(a.out, safe_serialization=True)
    cfg_path = os.path.join(a.out, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["torch_dtype"] = "float16"
    cfg["mambascope"] = {
        "train_len": T, "tokenizer": "byte", "trained_on": files, "steps": step, "train_seconds": round(train_s),
        "params": n_params, "hf_forward_check_rel_err": float(f"{rel:.3e}"),
        "task": "byte-level LM + passkey retrieval (scripts/train/train_passkey.py)",
        "recipe": {"batch": a.batch, "lr": a.lr, "answer_weight": a.answer_weight, "depth": [0.0, 0.5],
                   "curriculum": a.curriculum, "seed": a.seed},
        "retrieval": {"prefix": tpl["prefix"], "needle": tpl["needle"].replace("{key}", "{KEY}"),
                      "question": tpl["question"].replace("{key}", "{KEY}"), "key_digits": KEY_DIGITS,
                      "whitespace": "folded"},
        "pytorch_vanilla_digit_accuracy": acc,
    }
    json.dump(cfg, open(cfg_path, "w"), indent=2)
    for junk in ("generation_config.json",):
        p = os.path.join(a.out, junk)
        if os.path.exists(p):
            os.remove(p)
    json.dump({"arch": a.arch, "steps": step, "accuracy": acc}, open(os.path.join(a.out, "eval.json"), "w"))
    log(f"[{a.arch}] saved {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
