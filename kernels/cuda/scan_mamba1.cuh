// scan_mamba1.cuh: fused Mamba-1 selective scan on the GPU with LongMamba's Δ filter, optional softplus, z
// gating, D skip, carried state and per-channel probes (method doc §1.2, §2.4, §8.2, §8.5). Reference:
// kernels/cpu/scan.h.
//
// Design decision: batch 1 has only E·N independent recurrences, too few to fill a GPU, so time is split into
// S chunks: pass 1 scans every chunk from a zero state (chunk end state + Σ Δ'), a tiny pass 2 chains the
// chunk states (h_start[c+1] = exp(A·ΣΔ'_c)·h_start[c] + local_end[c]), and pass 3 rescans every chunk from
// its true start state and writes y. The probes are taken in pass 1 when there is one (docs/cuda.md, "Probes
// in pass 1"), else in the single pass. One thread owns one channel of one chunk with its N = 16 states in
// registers; B/C rows of a tile of tokens are staged in shared memory and shared by the 128 channels of a
// block. exp(Δ·A) = 2^(Δ·A·log2 e): a Taylor polynomial where the decay is near 1 (accuracy), the MUFU
// ex2.approx elsewhere (everywhere with fast_exp). S = 1 (one pass) when E alone fills the GPU or T is short.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/scan_probes.cuh"

namespace mambascope::kernels::cuda {

// All pointers are device pointers; row strides count elements. Batch 1, time-major.
// bf16 inputs (the layout of mamba_ssm's bf16 selective_scan_fwd, and what the bf16 projections write): set
// x16, delta16, B16, C16 (and z16 when gating) instead of x, delta, B, C, z — all or none. The state, Δ',
// the probes and all arithmetic stay float32; only the loads differ (bf16 → float32 is exact).
struct Mamba1ScanArgs {
    int64_t T = 0;   // tokens
    int64_t E = 0;   // channels (d_inner)
    int64_t N = 16;  // states per channel (only 16 is built)

    const float* x = nullptr;  // x (T, E), stride ldx
    int64_t ldx = 0;
    const float* delta = nullptr;  // Δ (T, E), stride ldd: Δ itself, or raw dt when delta_softplus is set
    int64_t ldd = 0;
    const float* delta_bias = nullptr;  // (E) or null: added to `delta` before softplus
    bool delta_softplus = false;        // Δ = softplus(delta + delta_bias) (PyTorch's: x for x > 20)
    const float* A = nullptr;           // A (E, N), negative
    const float* B = nullptr;           // B (T, N), stride ldb
    int64_t ldb = 0;
    const float* C = nullptr;  // C (T, N), stride ldc
    int64_t ldc = 0;
    const float* Dskip = nullptr;  // D (E) or null (0)
    const float* z = nullptr;      // z (T, E), stride ldz, or null: y *= silu(z) when set
    int64_t ldz = 0;
    const __nv_bfloat16* x16 = nullptr;      // bf16 x (T, E), stride ldx
    const __nv_bfloat16* delta16 = nullptr;  // bf16 Δ or raw dt (T, E), stride ldd
    const __nv_bfloat16* B16 = nullptr;      // bf16 B (T, N), stride ldb
    const __nv_bfloat16* C16 = nullptr;      // bf16 C (T, N), stride ldc
    const __nv_bfloat16* z16 = nullptr;      // bf16 z (T, E), stride ldz, or null (no gate)
    // dt_proj fused (decode steps): when set, `delta` / `delta16` is dt_proj's low-rank input (T, dt_rank),
    // stride ldd (x_proj's output), and the raw dt[t,d] = Σ_r delta[t,r]·dt_proj_w[d,r] is computed in the
    // kernel (saves the dt_proj GEMM launch per layer and step). One pass; T ≤ 64, no probes, chunk_len 0.
    const float* dt_proj_w = nullptr;  // (E, dt_rank), float32
    int64_t dt_rank = 0;
    const float* thr = nullptr;  // (E) or null: Δ' = Δ > thr ? Δ : 0 (use -inf for unfiltered channels)
    float* h = nullptr;          // h (E, N) state in/out; null = zero initial state, final state discarded
    float* y = nullptr;          // y (T, E), stride ldy (or null when y16 is set)
    int64_t ldy = 0;
    __nv_bfloat16* y16 = nullptr;  // bf16 y (T, E), stride ldy, instead of y: the next bf16 GEMM's input
                                   // without a conversion pass
    float* delta_out = nullptr;    // (T, E), stride ldo, or null: the Δ' used (after softplus and filter)
    int64_t ldo = 0;
    ScanProbes probes;  // per channel (E), accumulated
    int64_t chunk_len =
        0;  // tokens per time chunk; 0 = automatic (tests force small chunks to cover pass 1/2)
    // exp on MUFU ex2.approx everywhere: faster, but its error near 1 accumulates over a channel's memory
    // (docs/cuda.md). Default: a polynomial where the decay is near 1, error at rounding level.
    bool fast_exp = false;
};

// Device workspace the scan needs for these sizes on the current device (0 when a single pass suffices): the
// chunks' end and start states and sums, and (Δ' once, unless MAMBASCOPE_M1_DT_ONCE=0) T·E floats at its end
// for the Δ' that pass 1 hands to pass 3 (docs/cuda.md, "Δ' once").
size_t scan_mamba1_workspace_bytes(int64_t T, int64_t E, int64_t N, int64_t chunk_len = 0);

// Runs the scan on `stream`. `workspace` (≥ scan_mamba1_workspace_bytes) may be null: the scan then allocates
// it stream-ordered (cudaMallocAsync). Throws mambascope::Error on bad shapes or CUDA errors. Asynchronous.
void scan_mamba1(const Mamba1ScanArgs& args, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// Whether a call with these arguments reads its inputs through the cp.async ring (M1Ring in scan_mamba1.cu):
// no fused dt_proj, and every input row on a 16-byte boundary with E a whole number of 16-byte copies
// (pointers 16-byte aligned; strides and E multiples of 8 for bf16 inputs, of 4 for float32), unless
// MAMBASCOPE_M1_RING=0. The same arithmetic as the per-thread loads.
bool scan_mamba1_ring(const Mamba1ScanArgs& args);

// Whether a decode step (T = 1, dt_proj fused) with these arguments copies its block's dt_proj and A rows
// into shared memory before the PDL wait (m1_step in scan_mamba1.cu): 96 ≤ dt_rank ≤ 188 (from 4 with
// MAMBASCOPE_M1_STEP_STAGE=1; never with =0 or MAMBASCOPE_M1_STEP=0), dt_rank % 4 == 0, dt_proj_w and A
// 16-byte aligned. The same values in the same order as reading them from global memory.
bool scan_mamba1_step_staged(const Mamba1ScanArgs& args);

// The chunk plan the scan uses (exposed for tests and benchmarks): S chunks of chunk_len tokens (the last may
// be shorter).
struct ScanPlan {
    int64_t chunks = 1;
    int64_t chunk_len = 0;
};
ScanPlan scan_mamba1_plan(int64_t T, int64_t E, int64_t chunk_len = 0);

}  // namespace mambascope::kernels::cuda
