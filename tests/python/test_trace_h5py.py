#!/usr/bin/env python3
"""A trace written by `mambascope-cli analyze` opens in h5py with the documented names, shapes, dtypes, dimension
scales and attributes (docs/trace-format.md). Runs the demo model on the first 3000 bytes of the demo text."""
import argparse
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--cli", required=True)
ap.add_argument("--data")
ap.add_argument("--resources", required=True)
a = ap.parse_args()

failures = []
passed = 0


def check(cond, what):
    global passed
    if cond:
        passed += 1
    else:
        failures.append(what)


with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "run.h5")
    env = dict(os.environ, MAMBASCOPE_RESOURCES=a.resources)
    subprocess.check_call([a.cli, "analyze", "--max-tokens", "3000", "--rf-positions", "999,2999",
                           "--attention-window", "64", "--out", out], env=env, stdout=subprocess.DEVNULL)
    with h5py.File(out, "r") as f:
        check(f.attrs["format"] == "mambascope-trace", "format attribute")
        check(int(f.attrs["format_version"]) == 1, "format_version")
        check(f.attrs["NX_class"] == "NXentry", "root NX_class")
        L, C = int(f.attrs["n_layer"]), int(f.attrs["channels"])
        check((L, C) == (6, 512), f"n_layer/channels {(L, C)}")
        ids = f["input/ids"]
        check(ids.shape == (3000,) and ids.dtype == np.int64, "input/ids")
        check(len(f["input/token_strings"]) == 3000, "token strings")
        check(len(f["input"].attrs["text_sha256"]) == 64, "text sha256 attribute")
        for name in ("vanilla", "longmamba", "decimamba"):
            g = f["methods"][name]
            check(g.attrs["NX_class"] == "NXdata" and g.attrs["signal"] == "log_decay", f"{name} NXdata")
            ld = g["log_decay"]
            check(ld.shape == (L, C) and ld.dtype == np.float64, f"{name} log_decay")
            check([d.label for d in ld.dims] == ["layer", "channel"], f"{name} log_decay labels")
            check(list(ld.dims[1].keys()) == ["channel"] or len(ld.dims[1]) == 1, f"{name} channel scale")
            check(np.array_equal(ld.dims[0][0][()], np.arange(L)), f"{name} layer scale values")
            check(ld.chunks is not None and ld.compression == "gzip", f"{name} chunked gzip")
            rf = g["receptive_field"]
            check(rf.shape == (L, 2, C) and [d.label for d in rf.dims] == ["layer", "rf_position", "channel"],
                  f"{name} receptive_field")
            check(list(f["dims/rf_position"][()]) == [999, 2999], "rf positions")
            check(g["nll"].dtype == np.float32 and g["nll"].shape == g["nll_positions"].shape, f"{name} nll")
            check(g["global_mask"].dtype == np.uint8, f"{name} global_mask dtype")
            for key in g["channels"]:
                ch = g["channels"][key]
                check(ch["cum_log_decay"].shape == (3000,), f"{name} {key} cum_log_decay")
                check(ch["delta_raw"].shape == ch["delta_used"].shape == ch["critical"].shape, f"{name} {key} window")
            for key in g["attention"]:
                check(g["attention"][key]["alpha"].shape == (64, 64), f"{name} {key} attention")
        lm, van = f["methods/longmamba"], f["methods/vanilla"]
        check(float(lm.attrs["param.activated"]) == 1.0, "LongMamba activated on 3000 > 1024 tokens")
        check(int(f["methods/longmamba/global_mask"][()].sum()) > 0, "global channels exist")
        # in a global channel LongMamba's used Δ is zero where the token is not critical
        for key in lm["channels"]:
            ch = lm["channels"][key]
            if int(ch.attrs["global"]):
                used, crit = ch["delta_used"][()], ch["critical"][()]
                check(np.all(used[crit == 0] == 0) and np.all(used[crit == 1] > 0), f"filter in {key}")
        check(len(f["methods/decimamba/kept_positions"]) < 3000, "DeciMamba dropped tokens")
    # a foreign file is refused by the CLI's reader path too: analyze must not accept a non-trace as calibration
    bad = subprocess.run([a.cli, "analyze", "--calibration", out, "--max-tokens", "1500", "--out",
                          os.path.join(tmp, "x.h5")], env=env, capture_output=True, text=True)
    check(bad.returncode != 0 and "error" in bad.stderr, "a trace is not a calibration: clear error")
    check(not os.path.exists(os.path.join(tmp, "x.h5")), "no output after an error")

print(f"{passed} passed, {len(failures)} failed")
for f_ in failures:
    print("FAILED:", f_)
sys.exit(1 if failures else 0)
