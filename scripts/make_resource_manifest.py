#!/usr/bin/env python3
"""Writes resources/MANIFEST.json: sha256 and size of every shipped resource file, and, per demo model, the mean
NLL of its first `tokens` bytes of resources/text/demo.txt as computed by `mambascope-cli nll` (the recorded value
the tests check, so a broken loader or a corrupted resource fails them).

    python3 scripts/make_resource_manifest.py --cli build/app/cli/mambascope-cli
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
TOKENS = 2048


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    a = ap.parse_args()
    res = os.path.join(ROOT, "resources")
    files = {}
    for dirpath, _, names in os.walk(res):
        for n in sorted(names):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, res)
            if rel == "MANIFEST.json":
                continue
            files[rel] = {"sha256": sha256(p), "bytes": os.path.getsize(p)}
    text = open(os.path.join(res, "text", "demo.txt"), "rb").read()[:TOKENS]
    nll = {}
    with tempfile.TemporaryDirectory() as tmp:
        ids = os.path.join(tmp, "ids.txt")
        open(ids, "w").write(" ".join(str(b) for b in text))
        for model in sorted(os.listdir(os.path.join(res, "models"))):
            out = subprocess.check_output([a.cli, "nll", "--model", os.path.join(res, "models", model), "--ids", ids],
                                          text=True)
            value = float([l for l in out.splitlines() if l.startswith("mean_nll:")][0].split()[1])
            nll[model] = {"text": "text/demo.txt", "tokens": TOKENS, "mean_nll": value}
    manifest = {"format": "mambascope-resources", "version": 1, "files": dict(sorted(files.items())), "demo_nll": nll}
    with open(os.path.join(res, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(json.dumps(nll, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
