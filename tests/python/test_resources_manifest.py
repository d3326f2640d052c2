#!/usr/bin/env python3
"""Every shipped resource matches the sha256 in resources/MANIFEST.json (catches a corrupted or edited resource)."""
import argparse
import hashlib
import json
import os
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--cli")
ap.add_argument("--data")
ap.add_argument("--resources", required=True)
a = ap.parse_args()
m = json.load(open(os.path.join(a.resources, "MANIFEST.json")))
bad = []
for rel, info in m["files"].items():
    h = hashlib.sha256(open(os.path.join(a.resources, rel), "rb").read()).hexdigest()
    if h != info["sha256"]:
        bad.append(rel)
print(f"{len(m['files']) - len(bad)} passed, {len(bad)} failed")
if bad:
    print("sha256 mismatch:", ", ".join(bad))
sys.exit(1 if bad else 0)
