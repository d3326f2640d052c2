// scan_mamba1_tp.cuh: a time-parallel Mamba-1 scan for bf16 inputs (issue 17, twelfth stop; measured slower
// than scan_mamba1 at batch 1, so the forward takes it only when MAMBASCOPE_M1_TP asks). Reference:
// kernels/cpu/scan.h; design: docs/cuda.md, "The time-parallel scan".
//
//   Δ'[t,d] = Δ[t,d] > thr[d] ? Δ[t,d] : 0            (Δ = softplus(dt + bias) when fused)
//   h[d,n]  = a_t·h[d,n] + b_t,  a_t = exp(Δ'·A[d,n]),  b_t = Δ'·x[t,d]·B[t,n]     (method doc §1.2)
//   y[t,d]  = (Σ_n C[t,n]·h[d,n] + D[d]·x[t,d]) · silu(z[t,d])
//
// Design decision: scan_mamba1 splits time into chunks across blocks, so every token after a split pays a
// second exp per state (pass 1 and pass 3). Here time is parallel inside a warp instead, as in mamba_ssm's
// kernel: a warp owns one channel, each lane a run of K consecutive tokens of a 32·K-token tile; per state
// the lane composes its tokens' (a_t, b_t) into one pair, the warp combines the 32 pairs with an inclusive
// shuffle scan ((a, b) then (a', b') is (a·a', a'·b + b')), and each lane replays its tokens from its start
// state, keeping the a_t it computed: one exp per (token, state). A block is CH channels (CH warps), so that
// its rows of the token-major (T, E) inputs are CH·2 contiguous bytes; the tile's x, Δ, z, B and C are staged
// in shared memory as bf16, B and C shared by the block's channels. Only fast exp (MUFU ex2.approx).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "cuda/scan_mamba1.cuh"

namespace mambascope::kernels::cuda {

// Channels per block (warps) × tokens per lane; built: 4×8, 4×16, 8×8, 8×16.
struct Mamba1TpShape {
    int channels = 4;
    int items = 16;
};

// Empty when scan_mamba1_tp takes these arguments, else why not: bf16 x/Δ/B/C (z optional) and a bf16 y,
// N = 16, fast_exp, no probes, no Δ' output, no fused dt_proj, E % channels == 0, the x/Δ/z/y rows' CH·2-byte
// pieces aligned (pointer and stride), B and C rows 16-byte aligned, and a built shape.
std::string scan_mamba1_tp_unsupported(const Mamba1ScanArgs& args, Mamba1TpShape shape = {});

// MAMBASCOPE_M1_TP, read per call: whether the bf16 Mamba-1 prefill chain runs its scan through
// scan_mamba1_tp and with which shape. Unset: the measured default (docs/cuda.md, "The time-parallel scan");
// 0: never (the chunked scan_mamba1); 1: the default shape; "CxK" (e.g. 4x16): that shape. Anything else is
// an error naming the variable. Returns false for "never", else true with *shape set.
bool scan_mamba1_tp_chosen(Mamba1TpShape* shape);

// Runs the scan on `stream` (asynchronous; no workspace). Throws mambascope::Error naming the reason when the
// arguments are not supported (scan_mamba1_tp_unsupported).
void scan_mamba1_tp(const Mamba1ScanArgs& args, cudaStream_t stream, Mamba1TpShape shape = {});

}  // namespace mambascope::kernels::cuda
