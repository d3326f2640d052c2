// scan_mamba2_ssd.cuh: Mamba-2 scan in its chunked state-space-duality (SSD) form on tensor cores (bf16
// operands, fp32 accumulation), with LongMamba's Δ filter (a masked Δ inside each chunk's cumulative sum),
// fused softplus, carried state and per-head probes (method doc §1.3, §9.2). Same arguments and results as
// the recurrent scan_mamba2 (scan_mamba2.cuh) up to bf16 rounding of the matrix operands; it also takes the
// bf16 activations of Mamba2ScanArgs (x16, delta16, B16, C16, y16: the forward's bf16 chain), which only it
// takes. CPU twin:
// kernels/cpu/scan_ssd.h (same chunking, same rounding points).
//
// Design decision: four kernels, each a GEMM-shaped piece of the chunked form (method doc §9.2), WMMA
// 16×16×16 bf16 fragments with fp32 accumulation:
//   1. dt:     Δ' = filter(softplus(dt + bias)), l = within-chunk cumulative Σ Δ'·A, probes, Δ' out;
//              grid (head, chunk of kSsdChunk tokens);
//   2. group:  per (group, chunk): C·Bᵀ (Q×Q, K = N) and B, C rounded to bf16, done once for the H/G heads
//              that share them;
//   3. chain:  per (head, 16×64 state tile): S_{c+1} = exp(l_last)·S_c + (diag(w)·X)ᵀ·B, w_j =
//              exp(l_last − l_j)·Δ'_j, sequential over chunks with the fp32 state in the accumulator
//              fragments; writes each entering state S_c in bf16;
//   4. output: per (head, chunk): Y = (C·Bᵀ ∘ L)·X + diag(exp(l))·C·S_cᵀ + D·x, L_ij = exp(l_i − l_j)·Δ'_j
//              for j ≤ i.
// The workspace holds Δ', l, C·Bᵀ, the bf16 B and C, and the entering states in bf16 (chunks × H × P × N × 2
// bytes, the largest part). Used by the bf16 forward for Mamba-2 prefill (engine/src/model/forward_cuda.cpp);
// fp32 runs keep the exact recurrent scan.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/scan_mamba2.cuh"

namespace mambascope::kernels::cuda {

constexpr int64_t kSsdChunk = 64;  // tokens per chunk (Q): the L mask is Q×Q; state traffic ∝ T/Q

// Workspace for T tokens (G groups); scan_mamba2_ssd allocates it when given none.
size_t scan_mamba2_ssd_workspace_bytes(int64_t T, int64_t H, int64_t P, int64_t G, int64_t N);

// Whether the SSD kernels take this shape: P and N multiples of 16, P ≤ 128, N ≤ 256.
bool scan_mamba2_ssd_supports(int64_t P, int64_t N);

// Runs the chunked scan on `stream` (args.chunk_len is ignored: chunks are kSsdChunk tokens). Asynchronous;
// throws mambascope::Error on bad shapes or CUDA errors.
void scan_mamba2_ssd(const Mamba2ScanArgs& args, void* workspace, size_t workspace_bytes,
                     cudaStream_t stream);

}  // namespace mambascope::kernels::cuda
