#!/usr/bin/env python3
"""h5_fixed_strings.py FILE [FILE...]: rewrites every variable-length string attribute and dataset of an HDF5
file as a fixed-length UTF-8 string, in place and atomically (a temp copy next to FILE, renamed over it).

Mambascope writes and reads only fixed-length strings (docs/reliability.md, "libhdf5"): libhdf5 1.10 reads a
variable-length string through the file's global heap and can crash on a corrupt heap index, so the engine refuses
variable-length strings with an error that names this script. Use it on traces and calibrations written by
Mambascope before that change, or on files made with h5py's default str attributes. Needs h5py and numpy
(Debian: python3-h5py). Prints what it changed; exit status 1 on any error, with FILE untouched.
"""
import os
import shutil
import sys

import h5py
import numpy as np


def fixed_type(values):
    """A fixed-length UTF-8 string dtype wide enough for `values` (at least 1 byte)."""
    width = max([len(v) for v in values] + [1])
    return h5py.string_dtype("utf-8", width)


def encode(value):
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def convert_attrs(obj, changed):
    for name in list(obj.attrs.keys()):
        info = h5py.check_string_dtype(obj.attrs.get_id(name).dtype)
        if info is None or info.length is not None:
            continue  # not a string, or already fixed-length
        value = obj.attrs[name]
        if isinstance(value, np.ndarray):
            data = [encode(v) for v in value.ravel()]
            arr = np.array(data, dtype=fixed_type(data)).reshape(value.shape)
        else:
            data = [encode(value)]
            arr = np.array(data[0], dtype=fixed_type(data))
        del obj.attrs[name]
        obj.attrs.create(name, arr)
        changed.append(f"{obj.name} attribute {name}")


def convert_dataset(f, path, changed):
    ds = f[path]
    info = h5py.check_string_dtype(ds.dtype)
    if info is None or info.length is not None:
        return
    data = [encode(v) for v in ds[...].ravel()]
    attrs = {k: ds.attrs[k] for k in ds.attrs.keys()}
    kwargs = {}
    if ds.chunks is not None and ds.size > 0:
        kwargs = {"chunks": ds.chunks, "compression": ds.compression, "compression_opts": ds.compression_opts}
    shape = ds.shape
    del f[path]
    new = f.create_dataset(path, data=np.array(data, dtype=fixed_type(data)).reshape(shape), **kwargs)
    for k, v in attrs.items():
        new.attrs[k] = v
    convert_attrs(new, changed)
    changed.append(f"{path} dataset")


def convert(path):
    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.copy2(path, tmp)
    changed = []
    try:
        with h5py.File(tmp, "r+") as f:
            datasets, groups = [], [f]

            def collect(name, obj):
                if isinstance(obj, h5py.Dataset):
                    datasets.append(name)
                else:
                    groups.append(obj)

            f.visititems(collect)
            for g in groups:
                convert_attrs(g, changed)
            for n in datasets:
                convert_attrs(f[n], changed)
                convert_dataset(f, n, changed)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return changed


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    status = 0
    for path in argv[1:]:
        try:
            changed = convert(path)
        except Exception as e:  # noqa: BLE001 - report and go on with the next file
            print(f"h5_fixed_strings: {path}: {e}", file=sys.stderr)
            status = 1
            continue
        print(f"h5_fixed_strings: {path}: {len(changed)} string(s) made fixed-length")
        for c in changed:
            print(f"  {c}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
