// scan_mamba2.cuh: Mamba-2 (SSD) scan in its recurrent form on the GPU, with LongMamba's Δ filter, optional
// fused softplus, carried state and per-head probes (method doc §1.3, §2.4, §8.5). Reference:
// kernels/cpu/scan.h.
//
// Design decision: one block per (head, time chunk); a head's P×N state is spread over the block in register
// tiles of 4 channels × 8 states per thread, so each B/C value read from shared memory serves 4 channels and
// y = Σ_n C·s is a reduce-scatter over the N/8 lanes of a channel group (details and the cost model in
// scan_mamba2.cu). Time is chunked like the Mamba-1 scan (pass 1: chunk end states from zero; pass 2: chain;
// pass 3: rescan and write y) so that batch 1 fills the GPU even with 24 heads. exp(Δ·A) is one scalar per
// (token, head), computed once per block in shared memory. MAMBASCOPE_M2_SCAN=legacy selects the previous
// kernels (4 lanes per channel, N/4 states each) for A/B comparisons.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/scan_mamba1.cuh"
#include "cuda/scan_probes.cuh"

namespace mambascope::kernels::cuda {

// All pointers are device pointers; strides in floats. Head h uses group g = h / (H/G).
struct Mamba2ScanArgs {
    int64_t T = 0;    // tokens
    int64_t H = 0;    // heads
    int64_t P = 64;   // channels per head (headdim), ≤ 128
    int64_t G = 1;    // groups of B/C, divides H
    int64_t N = 128;  // states per channel: 16, 32, 64 or 128

    const float* x = nullptr;  // x (T, H·P), stride ldx
    int64_t ldx = 0;
    const float* delta = nullptr;  // Δ (T, H), stride ldd: Δ itself, or raw dt when delta_softplus is set
    int64_t ldd = 0;
    const float* delta_bias = nullptr;  // dt_bias (H) or null
    bool delta_softplus = false;        // Δ = softplus(delta + delta_bias)
    const float* A = nullptr;           // A (H), negative
    const float* B = nullptr;           // B (T, G·N), stride ldb
    int64_t ldb = 0;
    const float* C = nullptr;  // C (T, G·N), stride ldc
    int64_t ldc = 0;
    const float* Dskip = nullptr;  // D (H) or null
    const float* thr = nullptr;    // (H) or null: Δ' = Δ > thr ? Δ : 0
    float* s = nullptr;            // s (H, P, N) state in/out, 16-byte aligned; null = zero state, discarded
    float* y = nullptr;  // y (T, H·P), stride ldy (no gating: Mamba-2 gates in the grouped RMSNorm)
    int64_t ldy = 0;
    float* delta_out = nullptr;  // (T, H), stride ldo, or null: the Δ' used
    int64_t ldo = 0;
    ScanProbes probes;      // per head (H), accumulated; log_decay += Σ_t Δ'·A[h]
    int64_t chunk_len = 0;  // tokens per time chunk; 0 = automatic

    // bf16 activations (the bf16 Mamba-2 chain of the forward; chunked SSD scan only, scan_mamba2_ssd.cuh):
    // x16, delta16, B16, C16 instead of x, delta, B, C — all or none (same strides, in elements); y16
    // instead of y. The state, Δ', l and every sum stay fp32.
    const __nv_bfloat16* x16 = nullptr;      // bf16 x (T, H·P), stride ldx
    const __nv_bfloat16* delta16 = nullptr;  // bf16 Δ or raw dt (T, H), stride ldd
    const __nv_bfloat16* B16 = nullptr;      // bf16 B (T, G·N), stride ldb
    const __nv_bfloat16* C16 = nullptr;      // bf16 C (T, G·N), stride ldc
    __nv_bfloat16* y16 = nullptr;            // bf16 y (T, H·P), stride ldy, instead of y
};

ScanPlan scan_mamba2_plan(int64_t T, int64_t H, int64_t P, int64_t N, int64_t chunk_len = 0);
size_t scan_mamba2_workspace_bytes(int64_t T, int64_t H, int64_t P, int64_t N, int64_t chunk_len = 0);

// Runs the scan on `stream`; `workspace` may be null (allocated stream-ordered). Asynchronous; throws
// mambascope::Error on bad shapes or CUDA errors.
void scan_mamba2(const Mamba2ScanArgs& args, void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace mambascope::kernels::cuda
