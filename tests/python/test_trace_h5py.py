#!/usr/bin/env python3
"""`mambascope-cli analyze` writes a trace that h5py reads as documented in docs/trace-format.md:
names, shapes, dtypes, dimension scales (format version 2: at the root or in the group), units/long_name and
attributes."""
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

T = 2100  # > train_len 1024 and nearest tabulated length 2000: LongMamba's filter is active
model = os.path.join(a.resources, "models", "demo-mamba1")
cal = os.path.join(a.resources, "calibration", "demo-mamba1.h5")
failures = []


def A(obj, name):
    """An attribute as Python sees it after decoding: Mambascope writes fixed-length strings, which h5py returns
    as bytes (docs/reliability.md, "HDF5 strings are fixed-length only")."""
    v = obj.attrs[name]
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray) and v.dtype.kind == "S":
        return [x.decode("utf-8") for x in v]
    return v


def check(cond, what):
    if not cond:
        failures.append(what)


with tempfile.TemporaryDirectory() as tmp:
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 256, size=T)
    ids_path = os.path.join(tmp, "ids.txt")
    with open(ids_path, "w") as f:
        f.write(" ".join(str(i) for i in ids))
    out = os.path.join(tmp, "run.h5")
    cmd = [a.cli, "analyze", "--model", model, "--ids", ids_path, "--calibration", cal,
           "--methods", "vanilla,longmamba,decimamba", "--channels", "3:10,3:20",
           "--window", "100:600", "--rf-positions", "500,2099", "--attention-window", "64", "--out", out]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        sys.exit(1)
    check("longmamba" in r.stdout and "perplexity" in r.stdout, "comparison table printed")
    check(not [n for n in os.listdir(tmp) if ".tmp-" in n], "no temp file left")

    with h5py.File(out, "r") as f:
        check(A(f, "format") == "mambascope-trace", "format attr")
        check(int(A(f, "format_version")) == 2, "format_version attr")
        check(A(f, "NX_class") == "NXroot" and A(f, "default") == "methods", "root NeXus")
        check(A(f["methods"], "NX_class") == "NXentry", "methods NX_class")
        check(A(f["methods"], "default") == "vanilla", "methods default")
        for k in ("software_version", "creation_time", "provenance.model_path", "provenance.arch",
                  "provenance.config_json", "provenance.weights_sha256"):
            check(k in f.attrs, "root attr " + k)
        check(len(A(f, "provenance.weights_sha256")) == 64, "weights sha256 is hex")
        L, C = 6, 512
        check(f["input/ids"].shape == (T,) and f["input/ids"].dtype == np.int32, "input/ids")
        check(np.array_equal(f["input/ids"][:], ids), "ids round trip")
        check("dims" not in f, "no /dims group (format version 1)")
        check(f["layer"].shape == (L,) and f["channel"].shape == (C,), "root dimension scales")
        check(list(f["rf_position"][:]) == [500, 2099], "rf positions")
        check(list(f["window_position"][[0, -1]]) == [100, 599], "window positions")
        check(f["input/ids"].dims[0][0].name == "/position", "ids scale")
        check("token_strings" not in f["input"], "no token strings for --ids input")
        for m in ("vanilla", "longmamba", "decimamba"):
            g = f["methods/" + m]
            check(A(g, "NX_class") == "NXdata" and A(g, "signal") == "log_decay", m + " NXdata")
            check(list(A(g, "axes")) == ["layer", "channel"], m + " axes")
            check(np.array_equal(g["layer"][:], np.arange(L)) and np.array_equal(g["channel"][:], np.arange(C)),
                  m + " NXdata axes in the group")
            for name, dt in (("delta_sum", np.float64), ("log_decay", np.float64), ("global_mask", np.uint8),
                             ("critical_count", np.int64)):
                d = g[name]
                check(d.shape == (L, C) and d.dtype == dt, f"{m}/{name} shape/dtype {d.shape} {d.dtype}")
                check([d.dims[i].label for i in range(2)] == ["layer", "channel"], f"{m}/{name} dim labels")
                check(len(d.dims[0].keys()) == 1 and d.dims[0][0].name == g.name + "/layer", f"{m}/{name} scale")
                check("units" in d.attrs and "long_name" in d.attrs, f"{m}/{name} units and long_name")
                check(d.compression == "gzip" and d.shuffle, f"{m}/{name} gzip+shuffle")
            rf = g["receptive_field"]
            check(rf.shape == (L, 2, C) and rf.dtype == np.int64, m + " receptive_field")
            check([rf.dims[i].label for i in range(3)] == ["layer", "rf_position", "channel"], m + " rf labels")
            check(g["nll"].dtype == np.float32 and g["nll"].shape == g["nll_positions"].shape, m + " nll")
            check(g["nll"].dims[0][0].name == g.name + "/nll_positions", m + " nll scale")
            check(A(g["nll"], "units") == "nat", m + " nll units")
            check(np.all(np.isfinite(g["nll"][:])), m + " nll finite")
            for key in ("3_10", "3_20"):
                c = g["channels/" + key]
                check(c["delta_raw"].shape == (500,) and c["delta_raw"].dtype == np.float32, m + " delta_raw")
                check(c["critical"].dtype == np.uint8, m + " critical dtype")
                check(c["cum_log_decay"].shape == (T,), m + " cum_log_decay")
                check(c["delta_raw"].dims[0].label == "window_position", m + " window dim")
                check(int(A(c, "layer")) == 3, m + " channel attrs")
                a_ = g["attention/" + key + "/alpha"]
                check(a_.ndim == 2 and a_.shape[0] == a_.shape[1] and a_.shape[0] <= 64, m + " alpha")
                check([a_.dims[i].label for i in range(2)] == ["output_index", "source_index"], m + " alpha dims")
                check(A(a_.parent, "NX_class") == "NXdata", m + " attention NXdata")
        check("kept_positions" in f["methods/decimamba"], "decimamba kept_positions")
        lm = f["methods/longmamba"]
        check(float(A(lm, "key_length")) == 2000.0, "longmamba key_length param")
        mask = lm["global_mask"][:].astype(bool)
        check(mask.any(), "some global channels")
        van = f["methods/vanilla"]
        check(int(van["critical_count"][:].sum()) == 0, "vanilla critical counts are 0")
        # LongMamba filters: in layer 0 (same raw Δ in both runs) Σ used Δ of global channels is below
        # vanilla's, strictly for some
        m0 = mask[0]
        lm0, van0 = lm["delta_sum"][0][m0], van["delta_sum"][0][m0]
        check(m0.any() and (lm0 <= van0 * (1 + 1e-6)).all() and (lm0 < van0).any(), "filter lowers Δ sums")
        check("calibration/thresholds" in f and f["calibration/thresholds"].ndim == 3, "calibration copy")
        check([d.label for d in f["calibration/thresholds"].dims] == ["layer", "lengths", "channel"],
              "calibration dims")

print(f"{'FAIL' if failures else 'ok'}: {len(failures)} failed checks")
for x in failures:
    print("  -", x)
sys.exit(1 if failures else 0)
