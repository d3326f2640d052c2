#!/usr/bin/env python3
"""check_pdl_loads.py --nvcc NVCC --src DIR [--include DIR ...] [--keep DIR]: checks, in the PTX that nvcc makes
of the CUDA kernels, that no kernel reads an activation with a non-coherent load after its programmatic wait.

Why (docs/cuda.md, "Reads after a programmatic wait"): a kernel launched with a programmatic (PDL) edge starts
while the kernel in front of it still runs, and may read what that kernel writes only after
`griddepcontrol.wait`. A `const T* __restrict__` parameter lets the compiler read it with `ld.global.nc`,
an invariant load that may be scheduled before the wait; the thirtieth stop's pass 2 read pass 1's end
states that way on an H100. Such reads go through `after_wait` (device_math.cuh), which makes them ordinary
`ld.global` loads.

How: every kernel (`.entry`) that contains `griddepcontrol.wait` is looked up in KERNELS below, which names
the parameters an earlier kernel writes (activations, states): "all" for kernels whose parameters are read
only coherently after the wait. Each `ld.global.nc` after the wait is traced back, through the registers its
address is computed from, to the kernel parameters it comes from; one that comes from a listed parameter is
an error. A kernel with a wait but no entry is an error too, so a new PDL kernel has to be classified here.
Exit status 0 when every kernel passes, 1 otherwise (with the offending loads), 2 on a usage or nvcc error.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

# The kernel files that take programmatic edges (pdl.cuh registers their kernels).
FILES = ["scan_mamba1.cu", "scan_mamba2.cu", "conv1d_silu.cu", "rmsnorm.cu", "gemv.cu", "argmax.cu"]

# kernel name (unmangled, without the template arguments) → indices of the parameters written by earlier
# kernels, or "all". Weights (read-only for the whole run) may be read non-coherently.
KERNELS = {
    # (E, chunks, A, h_in, local_end, dsum, h_start): local_end and dsum come from pass 1
    "m1_combine": {4, 5},
    # (Params, h_start, h_final, probes): the Params struct holds the activations, h_start comes from pass 2
    "m1_scan": "all",
    # (Params, h_state, …): decode steps; the Params struct holds the activations and the weights, weights are
    # read before the wait
    "m1_step": "all",
    "m2_scan": "all",
    "m2t_scan": "all",
    "m2_combine": "all",
    # (T, Cn, in, ldi, w, bias, state, out, ldo, out16, ldo16, write_state)
    "conv_kernel": {2, 6},
    # (D, x, ldx, w, eps, out, ldo) and (T, D, x, ldx, w, eps, out, ldo, vec_out)
    "rmsnorm_kernel": {1},
    "rmsnorm_warp_kernel": {2},
    # (group, y, ldy, z, ldz, w, eps, out, ldo)
    "gated_rmsnorm_kernel": {1, 3},
    # (N, K, W, ldw, a, y, …): a, and y read back with beta
    "gemv_kernel": {4, 5},
    "gemv_split_kernel": {4, 5},
    # (N, K, W, ldw, x, w_norm, eps, y, …)
    "gemv_rmsnorm_kernel": {4, 7},
    # (n, x, out)
    "argmax_kernel": {1},
}

ENTRY = re.compile(r"^\s*(?:\.visible\s+)?\.entry\s+(\S+?)\(")
PARAM = re.compile(r"\[(\S+?)_param_(\d+)(?:\+\d+)?\]")
REG = re.compile(r"%[a-z]+\d+")


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def base_name(demangled):
    """`void ns::(anonymous namespace)::gemv_kernel<float, …>(long, …)` → `gemv_kernel`."""
    s = demangled.replace("(anonymous namespace)", "anon")
    head = re.split(r"[<(]", s, maxsplit=1)[0]
    return head.split("::")[-1].strip().split()[-1]


def kernels_of(ptx):
    """[(mangled name, [instruction lines])] for every .entry of a PTX file."""
    out, cur, body = [], None, []
    for line in ptx.splitlines():
        m = ENTRY.match(line)
        if m:
            if cur:
                out.append((cur, body))
            cur, body = m.group(1), []
        elif cur:
            body.append(line)
    if cur:
        out.append((cur, body))
    return out


def param_taint(body):
    """register → set of parameter indices its value is computed from (fixed point over the body, loops
    included). An instruction's first register operand is its destination, the others its sources; loads
    from memory other than the parameter space carry no taint (their value is data, not an address)."""
    taint = {}
    insts = []
    for line in body:
        s = line.split("//")[0].strip().rstrip(";")
        if s.startswith("@"):  # predicated: drop the guard
            s = s.split(None, 1)[1] if " " in s else ""
        if not s or s.startswith((".", "{", "}")) or s.endswith(":"):
            continue  # directives, declarations, braces, labels
        op = s.split(None, 1)[0]
        regs = REG.findall(s)
        if not regs:
            continue
        pm = PARAM.search(s)
        if op.startswith("ld.param"):
            insts.append((regs[0], [], {int(pm.group(2))} if pm else set()))
        elif op.startswith(("ld.", "st.", "atom.", "red.", "cp.", "bar", "mma", "wgmma", "setp", "shfl")):
            continue  # values from memory, or no register destination that addresses are made from
        else:
            insts.append((regs[0], regs[1:], set()))
    changed = True
    while changed:
        changed = False
        for dst, srcs, own in insts:
            t = set(own)
            for r in srcs:
                t |= taint.get(r, set())
            if not t <= taint.get(dst, set()):
                taint[dst] = taint.get(dst, set()) | t
                changed = True
    return taint


def check_kernel(name, body, rule):
    """The non-coherent loads after the wait that read a listed parameter: [(line, params)]."""
    taint = param_taint(body)
    waited, bad = False, []
    for line in body:
        if "griddepcontrol.wait" in line:
            waited = True
        elif waited and re.search(r"\bld\.global\.nc\b", line):
            addr = re.search(r"\[([^\]]+)\]", line)
            regs = REG.findall(addr.group(1)) if addr else []
            params = set()
            for r in regs:
                params |= taint.get(r, set())
            if rule == "all" or params & rule:
                bad.append((line.strip(), sorted(params)))
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nvcc", required=True)
    ap.add_argument("--src", required=True, help="kernels/cuda")
    ap.add_argument("--include", action="append", default=[])
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--keep", help="write the PTX files here (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.keep or tmp
        os.makedirs(out_dir, exist_ok=True)
        failures, checked = 0, 0
        procs = []
        for f in FILES:
            ptx = os.path.join(out_dir, f.replace(".cu", ".ptx"))
            cmd = [args.nvcc, "-DMAMBASCOPE_HAVE_CUDA=1", "-O3", "-DNDEBUG", f"-arch={args.arch}", "--use_fast_math",
                   "-std=c++17", "-ptx", os.path.join(args.src, f), "-o", ptx]
            for inc in args.include:
                cmd += ["-I", inc]
            procs.append((f, ptx, subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)))
        for f, ptx, p in procs:
            _, err = p.communicate()
            if p.returncode != 0:
                print(f"check_pdl_loads: nvcc failed on {f}:\n{err}", file=sys.stderr)
                return 2
            ks = kernels_of(open(ptx).read())
            waiting = [(n, b) for n, b in ks if any("griddepcontrol.wait" in line for line in b)]
            for (mangled, body), dem in zip(waiting, demangle([n for n, _ in waiting])):
                name = base_name(dem)
                checked += 1
                if name not in KERNELS:
                    print(f"{f}: {dem[:160]}: waits on a programmatic edge but has no entry in KERNELS "
                          f"(scripts/check_pdl_loads.py): name the parameters earlier kernels write")
                    failures += 1
                    continue
                bad = check_kernel(name, body, KERNELS[name])
                if bad:
                    failures += 1
                    print(f"{f}: {dem[:160]}: {len(bad)} non-coherent load(s) of activations after the wait:")
                    for line, params in bad[:4]:
                        print(f"    {line}    (from parameters {params})")
        print(f"check_pdl_loads: {checked} kernels with a programmatic wait, {failures} failing")
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
