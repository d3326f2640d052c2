#!/usr/bin/env python3
"""Why vanilla loses the pass key and LongMamba keeps it, read off a haystack trace (docs/results.md).

For every global channel (the calibration's log decay > ln c, method doc §8.4) the trace's cumulative log decay
(Σ A·Δ_used, §8.2) gives how much of the needle's contribution to the channel's state is left when the question is
read: exp(cum[question] − cum[needle end]). The trace must hold every global channel as a detail channel:

    mambascope-cli analyze --session resources/demo/session.json --channels $(python3 scripts/analysis/why_passkey.py \
        --list-global resources/calibration/demo-mamba2.h5) --out why.h5
    python3 scripts/analysis/why_passkey.py why.h5
"""
import argparse
import math
import sys

import h5py
import numpy as np


def global_channels(cal_path, c):
    with h5py.File(cal_path, "r") as f:
        ld = np.asarray(f["log_decay"])
    return [(int(l), int(ch)) for l, ch in zip(*np.nonzero(ld > math.log(c)))], ld


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace", nargs="?")
    ap.add_argument("--list-global", metavar="CAL.h5", help="print the global channels as L:C,L:C,... and exit")
    ap.add_argument("--c", type=float, default=0.05)
    a = ap.parse_args()
    if a.list_global:
        chans, _ = global_channels(a.list_global, a.c)
        print(",".join(f"{l}:{ch}" for l, ch in chans))
        return 0
    with h5py.File(a.trace, "r") as f:
        attr = lambda k: f.attrs[k].decode() if isinstance(f.attrs[k], bytes) else str(f.attrs[k])
        needle_end = int(attr("provenance.haystack.needle_end"))
        question = int(attr("provenance.haystack.answer_begin")) - 1  # the last prompt token reads the key
        T = question + 1
        print(f"haystack of {T} prompt tokens; needle ends at token {needle_end}; "
              f"distance to the question {question - needle_end} tokens")
        methods = [m for m in ("vanilla", "longmamba") if m in f["methods"]]
        gm = np.asarray(f["methods/vanilla/global_mask"])
        cal_ld = np.asarray(f["calibration/log_decay"]) if "calibration/log_decay" in f else None
        rows = []
        for l, ch in zip(*np.nonzero(gm)):
            name = f"{l}_{ch}"
            left = {}
            for m in methods:
                g = f[f"methods/{m}/channels"]
                if name not in g:
                    continue
                cum = np.asarray(g[name]["cum_log_decay"], dtype=np.float64)
                left[m] = cum[question] - cum[needle_end]
            if len(left) == len(methods):
                rows.append((int(l), int(ch), cal_ld[l, ch] if cal_ld is not None else float("nan"), left))
        if not rows:
            print("no global channel is a detail channel of this trace: pass --channels (see the docstring)")
            return 1
        print(f"{'channel':>8} {'train-window log decay':>22} " + " ".join(f"{m + ' key left (ln)':>22}" for m in methods))
        for l, ch, cl, left in rows:
            print(f"{l:>5}:{ch:<3} {cl:22.2f} " + " ".join(f"{left[m]:22.2f}" for m in methods))
        for m in methods:
            v = np.array([r[3][m] for r in rows])
            print(f"{m}: median ln(key contribution left) over {len(v)} global channels {np.median(v):.1f} "
                  f"(x{math.exp(np.median(v)):.2g}); min {v.min():.1f}, max {v.max():.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
