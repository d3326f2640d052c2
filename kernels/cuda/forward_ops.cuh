// forward_ops.cuh: the small glue kernels of the GPU forward: embedding lookup, row gather (DeciMamba), and
// the per-row negative log-likelihood of the LM head (a streaming log-softmax). Reference:
// engine/src/model/forward.cpp.
//
// Design decision: NLL is reduced on the GPU, one block per row, so T × vocab logits never leave the device;
// only rows the caller asked for are copied back.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mambascope::kernels::cuda {

// out[r, :] = table[ids[r], :]   ids (R) int32, table (V, D), out (R, D). Device pointers.
void embed_rows(int64_t R, int64_t D, const int32_t* ids, const float* table, float* out,
                cudaStream_t stream);

// out[r, :] = src[rows[r], :]   rows (R) int64, src (·, cols) with stride lds, out (R, cols) with stride ldo.
void gather_rows(int64_t R, int64_t cols, const int64_t* rows, const float* src, int64_t lds, float* out,
                 int64_t ldo, cudaStream_t stream);

// nll[r] = logsumexp(logits[r, :]) − logits[r, target[r]]   logits (R, V) stride ldl, target (R) int32.
void nll_rows(int64_t R, int64_t V, const float* logits, int64_t ldl, const int32_t* target, float* nll,
              cudaStream_t stream);

}  // namespace mambascope::kernels::cuda
