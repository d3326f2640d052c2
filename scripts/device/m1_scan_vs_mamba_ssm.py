#!/usr/bin/env python3
"""m1_scan_vs_mamba_ssm.py MAMBA_SSM_JSON BENCH_CUDA_SCAN_TXT: the side-by-side table of the GPU-machine scripts
(gpu_round2.sh, gpu_m1_ab.sh). Per (d_inner, tokens): our Mamba-1 scan's fp32 and bf16 times from
bench_cuda_scan's Mamba-1 table, mamba_ssm's selective_scan_fwd times from its bench.py JSON (measured in the same
call), their ratios, and the filter + probes variant's cost over the plain bf16 scan."""
import json
import re
import sys

try:
    peer = {(r["dtype"], r["dim"], r["L"]): r["ms"] for r in json.load(open(sys.argv[1]))}
except Exception as e:  # the peer may not have been carried: our times alone
    peer = {}
    print("no mamba_ssm results:", e)
ours = {}
for line in open(sys.argv[2]):
    m = re.match(r"^(\d+)\s+(\d+)\s+(.+?)\s+(\d+x\d+)\s+([\d.]+)", line)
    if m:
        ours[(int(m[1]), int(m[2]), m[3].strip())] = float(m[5])


def fmt(x):
    return f"{x:8.3f}" if x else f"{'-':>8}"


def rat(a, b):
    return f"{b / a:5.2f}x" if a and b else f"{'-':>6}"


print(f"{'d_inner':>7} {'tokens':>7} | {'fp32 ms':>8} {'ssm fp32':>8} {'ratio':>6} | "
      f"{'bf16 ms':>8} {'ssm bf16':>8} {'ratio':>6} | {'bf16 f+p':>8} {'over':>6} | {'tp best':>16} {'ms':>8} {'ratio':>6}")
for (E, T) in sorted({(k[0], k[1]) for k in ours}):
    f32 = ours.get((E, T, "plain fast-exp"))
    b16 = ours.get((E, T, "bf16 plain fast"))
    bfp = ours.get((E, T, "bf16 filter+probes fast"))
    p32 = peer.get(("float32", E, T))
    p16 = peer.get(("bfloat16", E, T))
    over = f"{100 * (bfp / b16 - 1):+5.1f}%" if bfp and b16 else "-"
    # the time-parallel scan (scan_mamba1_tp): its fastest shape at this size (tiles copied ahead, the default)
    tps = {k[2]: v for k, v in ours.items() if k[0] == E and k[1] == T and k[2].startswith("bf16 tp ")
           and "nopipe" not in k[2]}
    tpn, tpm = min(tps.items(), key=lambda kv: kv[1]) if tps else ("-", None)
    print(f"{E:7d} {T:7d} | {fmt(f32)} {fmt(p32)} {rat(f32, p32)} | {fmt(b16)} {fmt(p16)} {rat(b16, p16)} | "
          f"{fmt(bfp)} {over:>6} | {tpn.replace('bf16 tp ', ''):>16} {fmt(tpm)} {rat(tpm, p16)}")
