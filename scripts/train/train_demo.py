#!/usr/bin/env python3
"""Train the embedded demo models: small byte-level Mamba-1 and Mamba-2 language models.

Runs on a GPU machine with PyTorch and HF transformers (no mamba_ssm needed). The training forward is our own plain
PyTorch implementation (parallel scans), with parameter names identical to HF's MambaForCausalLM /
Mamba2ForCausalLM; after training the weights are loaded into the HF model and the two forwards are compared
(assert), which proves the export. Output per model: <out>/demo-mamba{1,2}/{config.json, model.safetensors,
train_log.csv, loss.png}.

    python3 scripts/train/train_demo.py --corpus DIR --out DIR [--minutes 5] [--arch mamba1|mamba2|both]

Training text: every *.txt in --corpus (the project uses ../shared/data/corpus/train/, never eval/); the last 2%
of the concatenated bytes is held out for the validation loss.
"""
import argparse
import csv
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

TRAIN_LEN = 1024       # tokens (bytes) per training sequence: the model's training length
VOCAB = 256            # byte-level


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Models (HF parameter names)

def rmsnorm(x, w, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return rmsnorm(x, self.weight)


def scan_doubling(a, b):
    """h_t = a_t * h_{t-1} + b_t along dim 1 with h_{-1} = 0 (Hillis-Steele, log2 T steps, no overflow)."""
    T = a.shape[1]
    s = 1
    while s < T:
        b = b + a * F.pad(b[:, :-s], (0, 0) * (b.dim() - 2) + (s, 0))
        a = a * F.pad(a[:, :-s], (0, 0) * (a.dim() - 2) + (s, 0), value=1.0)
        s *= 2
    return b


def dt_bias_init(n, dt_min=0.001, dt_max=0.1, floor=1e-4):
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


class Mamba1Mixer(nn.Module):
    def __init__(self, D, E, N, R, K):
        super().__init__()
        self.E, self.N, self.R, self.K = E, N, R, K
        self.in_proj = nn.Linear(D, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, K, groups=E, padding=K - 1, bias=True)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -R ** -0.5, R ** -0.5)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt_bias_init(E))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, D, bias=False)

    def forward(self, u):
        Bsz, T, _ = u.shape
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :T].transpose(1, 2)).float()
        dt, Bm, Cm = torch.split(self.x_proj(x).float(), [self.R, self.N, self.N], dim=-1)
        dt = F.softplus(self.dt_proj(dt).float())                      # (B, T, E)
        A = -torch.exp(self.A_log.float())                             # (E, N)
        dA = torch.exp(dt.unsqueeze(-1) * A)                           # (B, T, E, N)
        dBx = (dt * x).unsqueeze(-1) * Bm.unsqueeze(2)                 # (B, T, E, N)
        h = scan_doubling(dA, dBx)
        y = (h * Cm.unsqueeze(2)).sum(-1) + x * self.D
        y = y * F.silu(z.float())
        return self.out_proj(y.to(u.dtype))


def segsum(x):
    """x (..., L) -> (..., L, L) with out[i, j] = sum_{k=j+1..i} x_k for j <= i, -inf above the diagonal."""
    L = x.size(-1)
    x = x.unsqueeze(-1).expand(*x.shape, L)
    mask = torch.tril(torch.ones(L, L, dtype=torch.bool, device=x.device), diagonal=-1)
    x = x.masked_fill(~mask, 0)
    xs = torch.cumsum(x, dim=-2)
    mask = torch.tril(torch.ones(L, L, dtype=torch.bool, device=x.device), diagonal=0)
    return xs.masked_fill(~mask, -torch.inf)


def ssd(X, A, Bm, Cm, block):
    """Chunked SSD (mamba_ssm ssd_minimal_discrete). X (b,l,h,p) = x·Δ, A (b,l,h) = A·Δ, B/C (b,l,h,n)."""
    b, l0, h, p = X.shape
    n = Bm.shape[-1]
    pad = (-l0) % block  # zero padding at the end (A = 0, X = 0) does not change earlier outputs
    if pad:
        X = F.pad(X, (0, 0, 0, 0, 0, pad))
        A = F.pad(A, (0, 0, 0, pad))
        Bm = F.pad(Bm, (0, 0, 0, 0, 0, pad))
        Cm = F.pad(Cm, (0, 0, 0, 0, 0, pad))
    l = l0 + pad
    c = l // block
    X = X.reshape(b, c, block, h, p)
    Bm = Bm.reshape(b, c, block, h, n)
    Cm = Cm.reshape(b, c, block, h, n)
    A = A.reshape(b, c, block, h).permute(0, 3, 1, 2)            # b h c l
    A_cumsum = torch.cumsum(A, dim=-1)
    L = torch.exp(segsum(A))                                      # b h c l l
    Y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cm, Bm, L, X)
    decay_states = torch.exp(A_cumsum[..., -1:] - A_cumsum)       # b h c l
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bm, decay_states, X)
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)
    decay_chunk = torch.exp(segsum(F.pad(A_cumsum[..., -1], (1, 0))))   # b h (c+1) (c+1)
    new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states = new_states[:, :-1]
    Y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", Cm, states, torch.exp(A_cumsum))
    return (Y_diag + Y_off).reshape(b, l, h, p)[:, :l0]


class Mamba2Mixer(nn.Module):
    def __init__(self, D, E, N, H, P, G, K):
        super().__init__()
        self.E, self.N, self.H, self.P, self.G, self.K = E, N, H, P, G, K
        self.in_proj = nn.Linear(D, 2 * E + 2 * G * N + H, bias=False)
        self.conv1d = nn.Conv1d(E + 2 * G * N, E + 2 * G * N, K, groups=E + 2 * G * N, padding=K - 1, bias=True)
        self.dt_bias = nn.Parameter(dt_bias_init(H))
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(H))
        self.norm = RMSNorm(E)
        self.out_proj = nn.Linear(E, D, bias=False)

    def forward(self, u):
        Bsz, T, _ = u.shape
        E, N, H, P, G = self.E, self.N, self.H, self.P, self.G
        z, xBC, dt = torch.split(self.in_proj(u), [E, E + 2 * G * N, H], dim=-1)
        xBC = F.silu(self.conv1d(xBC.transpose(1, 2))[..., :T].transpose(1, 2)).float()
        x, Bm, Cm = torch.split(xBC, [E, G * N, G * N], dim=-1)
        dt = F.softplus(dt.float() + self.dt_bias)                  # (B, T, H)
        A = -torch.exp(self.A_log.float())                          # (H)
        x = x.reshape(Bsz, T, H, P)
        rep = H // G
        Bm = Bm.reshape(Bsz, T, G, N).repeat_interleave(rep, dim=2)
        Cm = Cm.reshape(Bsz, T, G, N).repeat_interleave(rep, dim=2)
        y = ssd(x * dt.unsqueeze(-1), A * dt, Bm, Cm, block=64)
        y = y + x * self.D.view(1, 1, H, 1)
        y = y.reshape(Bsz, T, E) * F.silu(z.float())
        # grouped RMSNorm (norm_before_gate=False), G = 1 here
        y = y.reshape(Bsz, T, G, E // G)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5)
        y = y.reshape(Bsz, T, E) * self.norm.weight
        return self.out_proj(y.to(u.dtype))


class Block(nn.Module):
    def __init__(self, D, mixer):
        super().__init__()
        self.norm = RMSNorm(D)
        self.mixer = mixer


class Backbone(nn.Module):
    def __init__(self, D, layers):
        super().__init__()
        self.embeddings = nn.Embedding(VOCAB, D)
        nn.init.normal_(self.embeddings.weight, std=0.02)
        self.layers = nn.ModuleList(layers)
        self.norm_f = RMSNorm(D)


class LM(nn.Module):
    def __init__(self, arch, D, L):
        super().__init__()
        E = 2 * D
        if arch == "mamba1":
            self.hp = dict(D=D, L=L, E=E, N=16, R=math.ceil(D / 16), K=4)
            layers = [Block(D, Mamba1Mixer(D, E, 16, self.hp["R"], 4)) for _ in range(L)]
        else:
            self.hp = dict(D=D, L=L, E=E, N=64, H=E // 32, P=32, G=1, K=4)
            layers = [Block(D, Mamba2Mixer(D, E, 64, E // 32, 32, 1, 4)) for _ in range(L)]
        self.arch = arch
        self.backbone = Backbone(D, layers)
        for blk in layers:  # GPT-2 style prenorm-residual rescaling of out_proj
            nn.init.normal_(blk.mixer.out_proj.weight, std=0.02 / math.sqrt(2 * L))

    def forward(self, ids, use_checkpoint=False):
        h = self.backbone.embeddings(ids)
        for blk in self.backbone.layers:
            f = lambda x, blk=blk: blk.mixer(blk.norm(x))
            h = h + (checkpoint(f, h, use_reentrant=False) if use_checkpoint else f(h))
        h = self.backbone.norm_f(h)
        return h @ self.backbone.embeddings.weight.t()             # tied head


# ----------------------------------------------------------------------------------------------------------------

def load_corpus(folder):
    files = sorted(f for f in os.listdir(folder) if f.endswith(".txt"))
    assert files, f"no .txt files in {folder}"
    data = b"".join(open(os.path.join(folder, f), "rb").read() + b"\n\n" for f in files)
    return files, torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def hf_model(arch, lm):
    import transformers
    hp = lm.hp
    if arch == "mamba1":
        cfg = transformers.MambaConfig(vocab_size=VOCAB, hidden_size=hp["D"], state_size=hp["N"],
                                       num_hidden_layers=hp["L"], expand=2, conv_kernel=hp["K"],
                                       time_step_rank=hp["R"], use_bias=False, use_conv_bias=True,
                                       tie_word_embeddings=True, layer_norm_epsilon=1e-5,
                                       pad_token_id=0, bos_token_id=0, eos_token_id=0)
        model = transformers.MambaForCausalLM(cfg)
    else:
        cfg = transformers.Mamba2Config(vocab_size=VOCAB, hidden_size=hp["D"], num_heads=hp["H"], head_dim=hp["P"],
                                        n_groups=hp["G"], state_size=hp["N"], num_hidden_layers=hp["L"], expand=2,
                                        conv_kernel=hp["K"], chunk_size=256, use_bias=False, use_conv_bias=True,
                                        tie_word_embeddings=True, layer_norm_epsilon=1e-5,
                                        pad_token_id=0, bos_token_id=0, eos_token_id=0)
        model = transformers.Mamba2ForCausalLM(cfg)
    sd = {k: v.detach().float().cpu() for k, v in lm.state_dict().items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if m != "lm_head.weight"]
    assert not missing and not unexpected, (missing, unexpected)
    model.tie_weights()
    return model


def train(arch, data, files, out_dir, minutes, device, D=256, L=6, batch=16, lr=2e-3, seed=0):
    torch.manual_seed(seed)
    n_val = len(data) // 50
    train_data, val_data = data[:-n_val], data[-n_val:]
    lm = LM(arch, D, L).to(device)
    n_params = sum(p.numel() for p in lm.parameters())
    log(f"[{arch}] params {n_params:,}  train bytes {len(train_data):,}  val bytes {len(val_data):,}")
    decay = [p for n, p in lm.named_parameters() if p.dim() >= 2 and "A_log" not in n]
    no_decay = [p for n, p in lm.named_parameters() if not (p.dim() >= 2 and "A_log" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(seed)

    def batch_of(src, n):
        idx = torch.randint(0, len(src) - TRAIN_LEN - 1, (n,), generator=g)
        x = torch.stack([src[i:i + TRAIN_LEN + 1] for i in idx.tolist()])
        return x[:, :-1].to(device), x[:, 1:].to(device)

    val_x, val_y = batch_of(val_data, 32)
    budget = minutes * 60.0
    t0 = time.time()
    warmup = 200
    est_steps = None
    step = 0
    rows = []
    os.makedirs(out_dir, exist_ok=True)
    while True:
        elapsed = time.time() - t0
        if elapsed > budget:
            break
        if step == 50:
            est_steps = int(budget / (elapsed / 50))
            log(f"[{arch}] ~{elapsed / 50:.3f} s/step, planning {est_steps} steps")
        total = est_steps or 10 ** 9
        cur_lr = lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))
        for pg in opt.param_groups:
            pg["lr"] = cur_lr
        x, y = batch_of(train_data, batch)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            logits = lm(x, use_checkpoint=(arch == "mamba1"))
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda")):
                vl = F.cross_entropy(lm(val_x).float().reshape(-1, VOCAB), val_y.reshape(-1)).item()
            rows.append((step, time.time() - t0, loss.item(), vl, cur_lr))
            log(f"[{arch}] step {step:5d}  {time.time() - t0:6.1f}s  train {loss.item():.4f}  val {vl:.4f}  "
                f"({vl / math.log(2):.3f} bits/byte)  lr {cur_lr:.2e}")
        step += 1
    with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        final_val = F.cross_entropy(lm(val_x).float().reshape(-1, VOCAB), val_y.reshape(-1)).item()
    rows.append((step, time.time() - t0, loss.item(), final_val, 0.0))
    log(f"[{arch}] done: {step} steps, val loss {final_val:.4f} nats/byte")

    with open(os.path.join(out_dir, "train_log.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "seconds", "train_loss", "val_loss", "lr"])
        w.writerows(rows)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        ax.plot([r[0] for r in rows], [r[2] for r in rows], label="train")
        ax.plot([r[0] for r in rows], [r[3] for r in rows], label="held-out")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/byte)")
        ax.set_title(f"demo-{arch}: byte-level, {n_params / 1e6:.1f}M params, train length {TRAIN_LEN}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "loss.png"))
    except Exception as e:  # the plot is a convenience
        log("plot failed:", e)

    # Export through HF, save, then check the HF forward equals ours (fp32, TF32 off, on the GPU).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    lm = lm.float().eval()
    model = hf_model(arch, lm).to(device).eval()
    with torch.no_grad():
        probe = val_data[:512].unsqueeze(0).to(device)
        ours = lm(probe)
        theirs = model(probe).logits.float()
        rel = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    log(f"[{arch}] HF vs ours: max |Δlogit| / max |logit| = {rel:.2e}")
    model = model.to(torch.float16)
    extra = {"train_len": TRAIN_LEN, "tokenizer": "byte", "trained_on": files, "steps": step,
             "final_val_loss_nats_per_byte": round(final_val, 5), "params": n_params,
             "hf_forward_check_rel_err": float(f"{rel:.3e}")}
    model.save_pretrained(out_dir, safe_serialization=True)
    cfg_path = os.path.join(out_dir, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["mambascope"] = extra
    cfg["torch_dtype"] = "float16"
    json.dump(cfg, open(cfg_path, "w"), indent=2)
    for junk in ("generation_config.json",):
        p = os.path.join(out_dir, junk)
        if os.path.exists(p):
            os.remove(p)
    size = os.path.getsize(os.path.join(out_dir, "model.safetensors"))
    log(f"[{arch}] saved {out_dir} ({size / 1e6:.1f} MB)")
    assert rel < 1e-4, f"export mismatch: relative {rel}"
    return final_val


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--arch", default="both", choices=["mamba1", "mamba2", "both"])
    a = ap.parse_args()
    assert torch.cuda.is_available(), "needs a GPU"
    torch.backends.cuda.matmul.allow_tf32 = True
    files, data = load_corpus(a.corpus)
    archs = ["mamba1", "mamba2"] if a.arch == "both" else [a.arch]
    for arch in archs:
        try:
            train(arch, data, files, os.path.join(a.out, f"demo-{arch}"), a.minutes, "cuda")
        except Exception as e:
            import traceback
            traceback.print_exc()
            log(f"[{arch}] FAILED: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
