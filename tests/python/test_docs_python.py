#!/usr/bin/env python3
"""Traces open in the researcher's tools as docs/python.md and docs/trace-format.md say.

On two fresh `mambascope-cli analyze` traces (a demo model from --text with a calibration and all three
methods; a test model from tests/data/models from --ids without a calibration):
- every ```python block of docs/python.md and docs/trace-format.md runs, with the trace as run.h5;
- every group opens in xarray (h5netcdf engine, and netcdf4 when python3-netcdf4 is installed) with named
  dimensions only (no phony_dim_*), and every variable has units and long_name;
- every NXdata group is valid for silx (when python3-silx is installed) and the default chain leads to one;
- the --text trace keeps each token's text and byte offset (they rebuild the text).
Run by ctest as python.test_docs_python with Debian's /usr/bin/python3 (tests/CMakeLists.txt)."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

try:
    import xarray as xr
    import h5netcdf  # noqa: F401  (xarray's engine)
except ImportError as e:
    sys.exit(f"FAIL: {e}: install python3-xarray python3-h5netcdf (scripts/install-deps.sh)")

ap = argparse.ArgumentParser()
ap.add_argument("--cli", required=True)
ap.add_argument("--data", required=True)
ap.add_argument("--resources", required=True)
a = ap.parse_args()
repo = os.path.dirname(os.path.abspath(a.resources))
docs = [os.path.join(repo, "docs", n) for n in ("python.md", "trace-format.md")]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def python_blocks(path):
    text = open(path, encoding="utf-8").read()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def analyze(out, *args):
    r = subprocess.run([a.cli, "analyze", "--progress", "none", "--out", out, *args], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        sys.exit(f"FAIL: mambascope-cli analyze {' '.join(args)} exited {r.returncode}")


def text(v):
    """An attribute as str (h5py gives fixed-length strings as bytes)."""
    return v.decode() if isinstance(v, (bytes, np.bytes_)) else str(v)


def groups(f):
    out = ["/"]
    f.visit(lambda name: out.append("/" + name) if isinstance(f[name], h5py.Group) else None)
    return out


def check_tools(trace, label):
    """Every group in xarray (both engines), units/long_name everywhere, silx NXdata."""
    engines = ["h5netcdf"]
    try:
        import netCDF4  # noqa: F401
        engines.append("netcdf4")
    except ImportError:
        print("note: python3-netcdf4 not installed, netcdf4 engine not checked")
    with h5py.File(trace, "r") as f:
        names = groups(f)
        nxdata = [g for g in names if text(f[g].attrs.get("NX_class", "")) == "NXdata"]
        datasets = []
        f.visit(lambda n: datasets.append(n) if isinstance(f[n], h5py.Dataset) else None)
        for n in datasets:
            check("units" in f[n].attrs and "long_name" in f[n].attrs, f"{label}: {n} has units and long_name")
    check(len(nxdata) >= 2, f"{label}: NXdata groups")
    for g in names:
        for eng in engines:
            try:
                ds = xr.open_dataset(trace, group=g, engine=eng)
                ds.load()
            except Exception as e:  # noqa: BLE001  (any failure to open is what this test guards)
                failures.append(f"{label}: xarray engine={eng} group={g}: {type(e).__name__}: {e}")
                continue
            phony = [d for d in ds.dims if str(d).startswith("phony_dim")]
            check(not phony, f"{label}: {eng} {g} has unnamed dimensions {phony}")
            for v in ds.variables:
                check("units" in ds[v].attrs and "long_name" in ds[v].attrs, f"{label}: {eng} {g}/{v} attrs")
            ds.close()
    with h5py.File(trace, "r") as f:
        ld = xr.open_dataset(trace, group="methods/vanilla", engine="h5netcdf")["log_decay"]
        check(ld.dims == ("layer", "channel"), f"{label}: log_decay dims {ld.dims}")
        check(np.array_equal(ld.values, f["methods/vanilla/log_decay"][:]), f"{label}: log_decay values")
        check(np.array_equal(ld["channel"].values, np.arange(ld.shape[1])), f"{label}: channel coordinate")
    try:
        from silx.io.nxdata import get_default, is_valid_nxdata
    except ImportError:
        print("note: python3-silx not installed, NXdata not validated")
        return
    with h5py.File(trace, "r") as f:
        for g in nxdata:
            check(is_valid_nxdata(f[g]), f"{label}: silx rejects NXdata {g}")
        d = get_default(f)
        check(d is not None and d.group.name.startswith("/methods/"), f"{label}: default NXdata")


blocks = [(os.path.basename(p), b) for p in docs for b in python_blocks(p)]
check(len([b for b in blocks if b[0] == "python.md"]) >= 3, "docs/python.md has its python blocks")
check(len([b for b in blocks if b[0] == "trace-format.md"]) >= 1, "docs/trace-format.md has its python block")

with tempfile.TemporaryDirectory() as tmp:
    T = 1500
    text_path = os.path.join(a.data, "text", "emma_200k.txt")
    demo = os.path.join(tmp, "demo.h5")
    analyze(demo, "--model", os.path.join(a.resources, "models", "demo-mamba1"), "--text", text_path,
            "--max-tokens", str(T), "--calibration", os.path.join(a.resources, "calibration", "demo-mamba1.h5"),
            "--methods", "vanilla,longmamba,decimamba", "--attention-window", "64")
    ids_path = os.path.join(tmp, "ids.txt")
    with open(ids_path, "w") as f:
        f.write(" ".join(str(i) for i in np.random.default_rng(5).integers(0, 53, size=300)))
    small = os.path.join(tmp, "m2.h5")
    analyze(small, "--model", os.path.join(a.data, "models", "m2_hf"), "--ids", ids_path,
            "--methods", "vanilla,decimamba")

    # --text input: the trace shows text (token strings and byte offsets rebuild the text's first T tokens).
    with h5py.File(demo, "r") as f:
        check("token_strings" in f["input"] and "byte_offsets" in f["input"], "--text trace has token text")
        if "token_strings" in f["input"]:
            raw = open(text_path, "rb").read()
            tokens = [t if isinstance(t, bytes) else t.encode() for t in f["input/token_strings"][:]]
            offsets = f["input/byte_offsets"][:]
            check(len(tokens) == T and len(offsets) == T, "one token string and offset per token")
            check(b"".join(tokens) == raw[: offsets[-1] + len(tokens[-1])], "token strings rebuild the text")
            check(offsets[0] == 0 and all(raw[o: o + len(t)] == t for o, t in zip(offsets, tokens)),
                  "byte offsets point at each token's text")
            check(text(f["input"].attrs["text_path"]) == os.path.abspath(text_path), "text_path")
    with h5py.File(small, "r") as f:
        check("token_strings" not in f["input"], "--ids trace has no token text")

    for label, trace in (("demo-mamba1 --text", demo), ("m2_hf --ids", small)):
        check_tools(trace, label)
        work = os.path.join(tmp, "work-" + label.split()[0])
        os.makedirs(work)
        shutil.copy(trace, os.path.join(work, "run.h5"))
        for i, (doc, code) in enumerate(blocks):
            r = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True,
                               env=dict(os.environ, MPLBACKEND="Agg"), timeout=300)
            if r.returncode != 0:
                failures.append(f"{label}: docs/{doc} python block {i + 1} failed:\n{r.stdout}\n{r.stderr}")
        check(os.path.exists(os.path.join(work, "log_decay.png")), f"{label}: docs/python.md drew log_decay.png")

print(f"{'FAIL' if failures else 'ok'}: {len(failures)} failed checks, {len(blocks)} doc blocks")
for x in failures:
    print("  -", x)
sys.exit(1 if failures else 0)
