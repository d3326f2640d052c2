#!/usr/bin/python3
"""make_corpus.py: (re)creates the seed corpora tests/fuzz/corpus/<target>/ and the hand-made hostile inputs in
tests/fuzz/crashes/<target>/ from the test fixtures and resources. Needs python3-h5py and numpy (Debian) and a
built CLI for the HDF5 seeds: make_corpus.py [--cli build/app/cli/mambascope-cli].
Every file stays < 64 KB. Run from anywhere; writes next to this script."""
import argparse, io, json, os, pickle, random, shutil, struct, subprocess, sys, tempfile, zipfile

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.abspath(os.path.join(here, "..", ".."))
data = os.path.join(root, "tests", "data")
res = os.path.join(root, "resources")


def put(kind, target, name, content):
    d = os.path.join(here, kind, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    assert len(content) < 64 * 1024, (target, name, len(content))
    with open(os.path.join(d, name), "wb") as f:
        f.write(content)


def safetensors(tensors):
    import numpy as np
    header, blobs, off = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        b = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", default=os.path.join(root, "build", "app", "cli", "mambascope-cli"))
    args = ap.parse_args()
    import numpy as np
    import h5py

    # config.json
    for m in sorted(os.listdir(os.path.join(data, "models"))):
        put("corpus", "config", m + ".json", open(os.path.join(data, "models", m, "config.json"), "rb").read())
    for m in sorted(os.listdir(os.path.join(res, "models"))):
        put("corpus", "config", m + ".json", open(os.path.join(res, "models", m, "config.json"), "rb").read())
    put("crashes", "config", "nested-30000.json", "[" * 30000 + "]" * 30000)
    put("crashes", "config", "nested-object-10000.json", '{"":' * 10000 + "1" + "}" * 10000)
    put("crashes", "config", "number-1e400.json", '{"model_type":"mamba","hidden_size":1e400}')
    m2 = json.load(open(os.path.join(data, "models", "m2_hf", "config.json")))
    m2.update({"num_heads": 2**40, "head_dim": 2**40})
    put("crashes", "config", "heads-times-headdim-overflow.json", json.dumps(m2))

    # safetensors
    rng = np.random.default_rng(0)
    put("corpus", "safetensors", "f32.safetensors",
        safetensors({"a": ("F32", rng.standard_normal((3, 4)).astype("<f4")),
                     "b": ("F32", rng.standard_normal((5,)).astype("<f4"))}))
    put("corpus", "safetensors", "f16-bf16.safetensors",
        safetensors({"h": ("F16", rng.standard_normal((2, 3)).astype("<f2")),
                     "g": ("BF16", (rng.standard_normal((4,)).astype("<f4").view("<u4") >> 16).astype("<u2"))}))
    put("corpus", "safetensors", "metadata.safetensors",
        safetensors({"x": ("F32", np.zeros((0, 3), "<f4"))})[:8] and
        (lambda h: struct.pack("<Q", len(h)) + h)(b'{"__metadata__":{"format":"pt"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}') + b"\0" * 8)
    h = b"[" * 30000 + b"]" * 30000
    put("crashes", "safetensors", "header-nested-30000.safetensors", struct.pack("<Q", len(h)) + h)
    h = b'{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}'
    put("crashes", "safetensors", "shape-product-overflow.safetensors", struct.pack("<Q", len(h)) + h + b"\0" * 8)

    # torch zip and pickle
    bins = [os.path.join(data, "checkpoints", "fake_torch", "pytorch_model.bin"),
            os.path.join(data, "checkpoints", "fake_torch_deflate", "pytorch_model.bin"),
            os.path.join(data, "models", "m1_orig", "pytorch_model.bin")]
    for i, b in enumerate(bins):
        put("corpus", "torch_zip", os.path.basename(os.path.dirname(b)) + ".bin", open(b, "rb").read())
        with zipfile.ZipFile(b) as z:
            for n in z.namelist():
                if n.endswith("data.pkl"):
                    put("corpus", "pickle", os.path.basename(os.path.dirname(b)) + ".pkl", z.read(n))
    put("corpus", "pickle", "plain-types.pkl", pickle.dumps({"a": [1, 2.5, "x", None, True, (1, 2)], "b": b"by"}, 2))
    put("crashes", "pickle", "global-os-system.pkl", b"cos\nsystem\n(S'echo pwned'\ntR.")
    put("crashes", "pickle", "stack-global-eval.pkl", b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x041+1\x85R.")
    put("crashes", "pickle", "deep-lists.pkl", b"\x80\x02" + b"]" * 20000 + b"a" * 19999 + b".")

    # tokenizer.json (cut down: byte-level vocabulary + a few merges) NUL text
    tok = json.load(open(os.path.join(res, "tokenizer", "gpt-neox-20b.json")))
    vocab = tok["model"]["vocab"]
    byte_chars = set()
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    byte_chars = {chr(c) for c in cs}
    keep = {k: v for k, v in vocab.items() if k in byte_chars}
    merges = []
    for m in tok["model"]["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        if a in keep and b in keep and (a + b) in vocab:
            keep[a + b] = vocab[a + b]
            merges.append(m)
        if len(merges) >= 40:
            break
    small = dict(tok)
    small["model"] = dict(tok["model"], vocab=keep, merges=merges)
    small["added_tokens"] = [t for t in tok["added_tokens"] if t["id"] < 2]
    for t in small["added_tokens"]:
        keep.setdefault(t["content"], t["id"])
    text = open(os.path.join(res, "text", "demo.txt"), "rb").read()[:400]
    sj = json.dumps(small).encode()
    put("corpus", "tokenizer", "small-bpe.json", sj + b"\0" + text)
    put("corpus", "tokenizer", "small-bpe-unicode.json", sj + b"\0" + "naïve café 東京 \u00e9\u0301 𝔘 <|endoftext|> \t\n  x".encode())
    fixtures = json.load(open(os.path.join(data, "tokenizer", "fixtures.json")))
    put("corpus", "tokenizer", "fixture-texts.json", sj + b"\0" + "\n".join(f["text"] for f in fixtures[:20]).encode())
    nested = dict(small, normalizer=json.loads("[" * 60 + "]" * 60))
    put("corpus", "tokenizer", "normalizer-nested-60.json", json.dumps(nested).encode() + b"\0ab")
    deep = json.dumps(small).replace('"normalizer": {"type": "NFC"}', '"normalizer": ' + "[" * 20000 + "]" * 20000)
    put("crashes", "tokenizer", "normalizer-nested-20000.json", deep.encode())
    put("crashes", "tokenizer", "merges-as-string.json", json.dumps(dict(small, model=dict(small["model"], merges="Ġ t"))).encode() + b"\0 the")
    big = dict(small, model=dict(small["model"], vocab=dict(keep, **{"zz": 2**40})))
    put("crashes", "tokenizer", "vocab-id-2pow40.json", json.dumps(big).encode() + b"\0zz")

    # ids
    put("corpus", "ids", "small.ids", " ".join(str(random.Random(1).randrange(50000)) for _ in range(100)) + "\n")
    put("corpus", "ids", "lines.ids", "0 1 2\n\n  3\t4\r\n5\n")
    put("crashes", "ids", "overflow.ids", "1 2 99999999999999999999999 3\n")
    put("crashes", "ids", "negative-and-junk.ids", "-1 0x10 1e3 +5\n")

    # session
    put("corpus", "session", "demo-session.json", open(os.path.join(res, "demo", "session.json"), "rb").read())
    put("corpus", "session", "minimal.json", '{"mambascope_session": 1, "model": "m", "text": "t.txt"}')
    put("crashes", "session", "nested-30000.json", '{"mambascope_session":1,"x":' + "[" * 30000 + "]" * 30000 + "}")
    put("crashes", "session", "deci-layers-2pow40.json",
        '{"mambascope_session":1,"model":"demo","text":"demo","deci":{"layers":[1099511627776]}}')

    # safetensors index (the fuzz target's scratch directory holds model-00001-of-00001.safetensors)
    put("corpus", "safetensors_index", "index.json", json.dumps(
        {"metadata": {"total_size": 12}, "weight_map": {"a": "model-00001-of-00001.safetensors",
                                                        "backbone.norm_f.weight": "model-00001-of-00001.safetensors"}}, indent=2))
    put("crashes", "safetensors_index", "nested-30000.json", '{"weight_map":' + "[" * 30000 + "]" * 30000 + "}")
    put("crashes", "safetensors_index", "path-traversal.json", '{"weight_map":{"a":"../../etc/passwd","b":"/etc/passwd"}}')

    # calibration and trace HDF5: made with the CLI on tests/data/models/m2_hf, repacked small
    with tempfile.TemporaryDirectory() as tmp:
        ids = os.path.join(tmp, "t.ids")
        r = random.Random(1)
        open(ids, "w").write(" ".join(str(r.randrange(53)) for _ in range(600)) + "\n")
        model = os.path.join(data, "models", "m2_hf")
        cal = os.path.join(tmp, "cal.h5")
        run = lambda *a: subprocess.run([args.cli, *a], check=True, stdout=subprocess.DEVNULL)
        run("calibrate", "--model", model, "--ids", ids, "--train-len", "64", "--samples", "2", "--lengths", "128,256", "--out", cal)
        put("corpus", "calibration", "m2_hf-cal.h5", open(cal, "rb").read())
        put("corpus", "calibration", "demo-mamba2.h5", open(os.path.join(res, "calibration", "demo-mamba2.h5"), "rb").read())
        for name, attr in (("channels-attr-array.h5", "channels"), ("arch-attr-array.h5", "arch")):
            p = os.path.join(tmp, name)
            shutil.copy(cal, p)
            with h5py.File(p, "r+") as f:
                v = f.attrs[attr]
                del f.attrs[attr]
                f.attrs[attr] = [v] * 8 if not isinstance(v, (bytes, str)) else [v] * 8
            put("crashes", "calibration", name, open(p, "rb").read())
        for methods, extra, name in (("vanilla", [], "vanilla"), ("vanilla,longmamba", ["--calibration", cal], "longmamba")):
            t = os.path.join(tmp, name + ".h5")
            run("analyze", "--model", model, "--ids", ids, "--max-tokens", "16", "--methods", methods, "--no-attention",
                "--channels", "0:0", "--rf-positions", "8", "--out", t, *extra)
            rp = os.path.join(tmp, name + "-repacked.h5")
            subprocess.run(["h5repack", "-f", "NONE", "-l", "CONTI", t, rp], check=True)
            put("corpus", "trace", name + ".h5", open(rp, "rb").read())
            if name == "vanilla":
                with h5py.File(rp, "r+") as f:
                    for k in list(f.attrs.keys())[:3]:
                        v = f.attrs[k]
                        del f.attrs[k]
                        f.attrs[k] = [v] * 4
                put("crashes", "trace", "root-attrs-as-arrays.h5", open(rp, "rb").read())


if __name__ == "__main__":
    main()
