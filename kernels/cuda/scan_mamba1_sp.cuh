// scan_mamba1_sp.cuh: a state-parallel Mamba-1 scan for bf16 inputs (issue 17, twenty-first stop). Reference:
// kernels/cpu/scan.h; design: docs/cuda.md, "The state-parallel scan".
//
//   Δ'[t,d] = Δ[t,d] > thr[d] ? Δ[t,d] : 0            (Δ = softplus(dt + bias) when fused)
//   h[d,n]  = exp(Δ'·A[d,n])·h[d,n] + Δ'·B[t,n]·x[t,d]                                 (method doc §1.2)
//   y[t,d]  = (Σ_n C[t,n]·h[d,n] + D[d]·x[t,d]) · silu(z[t,d])
//
// Design decision: the chunked scan (scan_mamba1) finds its parallelism at batch 1 by splitting time, which
// makes every token after a split pay a second exp per state; the time-parallel scan (scan_mamba1_tp) pays
// for it in shuffle scans. Here the parallelism comes from the states instead: a channel's 16 states are
// spread over L lanes (16/L states each), every lane runs its states sequentially through the whole sequence
// (one exp per (token, state), no second pass), and the L lanes' partial sums Σ_n C·h are added with a
// transposing shuffle reduction over a tile of K tokens, after which each lane owns K/L tokens' y. L = 4, 8
// or 16 gives E·L threads (E·L/32 warps), so that narrow models still fill the GPU.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "cuda/scan_mamba1.cuh"

namespace mambascope::kernels::cuda {

// Empty when scan_mamba1_sp takes these arguments with `lanes` lanes per channel, else why not: bf16 x/Δ/B/C
// (z optional) and a bf16 y, N = 16, fast_exp, no probes, no Δ' output, no fused dt_proj, no forced chunk
// length, E a multiple of the block's 128/lanes channels, x/Δ/z/y rows and B/C rows 16-byte aligned (pointer
// and stride), lanes 4, 8 or 16.
std::string scan_mamba1_sp_unsupported(const Mamba1ScanArgs& args, int lanes);

// The lanes per channel the measured rule gives for E channels on this device (docs/cuda.md, "The
// state-parallel scan").
int scan_mamba1_sp_default_lanes(int64_t E);

// MAMBASCOPE_M1_SP, read per call: whether the bf16 Mamba-1 prefill chain runs its scan through
// scan_mamba1_sp and with how many lanes per channel. Unset: the measured default; 0: never (the chunked
// scan_mamba1); 1: the default rule's lanes; 4, 8 or 16: those lanes. Anything else is an error naming the
// variable. Returns false for "never", else true with *lanes set (0 for the rule: resolve it with E).
bool scan_mamba1_sp_chosen(int* lanes);

// Runs the scan on `stream` (asynchronous; no workspace) with `lanes` lanes per channel (0: the default
// rule). Throws mambascope::Error naming the reason when the arguments are not supported.
void scan_mamba1_sp(const Mamba1ScanArgs& args, cudaStream_t stream, int lanes = 0);

}  // namespace mambascope::kernels::cuda
