// scan_mamba2_ssd.cuh: Mamba-2 scan in its chunked state-space-duality (SSD) form on tensor cores (bf16
// operands, fp32 accumulation), with LongMamba's Δ filter (a masked Δ inside each chunk's cumulative sum),
// fused softplus, carried state and per-head probes (method doc §1.3, §9.2). Same arguments and results as
// the recurrent scan_mamba2 (scan_mamba2.cuh) up to bf16 rounding of the matrix operands. CPU twin:
// kernels/cpu/scan_ssd.h (same chunking, same rounding points).
//
// Design decision: four kernels, each the GEMM-shaped piece of the chunked form (method doc §9.2), one
// block per (head, time chunk of kSsdChunk tokens), heads fastest, WMMA 16×16×16 bf16 fragments:
//   1. dt:     Δ' = filter(softplus(dt + bias)), l = within-chunk cumulative Σ Δ'·A, probes, Δ' out;
//   2. state:  ΔS_c = Xᵀ·diag(w)·B (P×N, K = chunk), w_j = exp(l_last − l_j)·Δ'_j;
//   3. pass:   S_c = exp(l_last(c−1))·S_{c−1} + ΔS_{c−1}, sequential over chunks, elementwise (fp32);
//   4. output: Y = (C·Bᵀ ∘ L)·X + diag(exp(l))·C·S_cᵀ + D·x, L_ij = exp(l_i − l_j)·Δ'_j for j ≤ i.
// The chunk states live in the workspace: ΔS_c in fp32, the states entering each chunk in bf16 (the output
// kernel's operand), chunks × H × P × N × 6 bytes. Used by the bf16 forward for Mamba-2
// prefill (engine/src/model/forward_cuda.cpp); fp32 runs keep the exact recurrent scan.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/scan_mamba2.cuh"

namespace mambascope::kernels::cuda {

constexpr int64_t kSsdChunk = 64;  // tokens per chunk (Q): the L mask is Q×Q; state traffic ∝ T/Q

// Workspace for T tokens (Δ', l and the chunk states); scan_mamba2_ssd allocates it when given none.
size_t scan_mamba2_ssd_workspace_bytes(int64_t T, int64_t H, int64_t P, int64_t N);

// Whether the SSD kernels take this shape: P and N multiples of 16, P ≤ 128, N ≤ 256.
bool scan_mamba2_ssd_supports(int64_t P, int64_t N);

// Runs the chunked scan on `stream` (args.chunk_len is ignored: chunks are kSsdChunk tokens). Asynchronous;
// throws mambascope::Error on bad shapes or CUDA errors.
void scan_mamba2_ssd(const Mamba2ScanArgs& args, void* workspace, size_t workspace_bytes,
                     cudaStream_t stream);

}  // namespace mambascope::kernels::cuda
