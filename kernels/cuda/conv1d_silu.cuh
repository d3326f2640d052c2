// conv1d_silu.cuh: depthwise causal conv1d + SiLU on the GPU with the last K-1 inputs carried as state
// (method doc §1.2, §1.3). Reference: kernels/cpu/conv1d.h (same arguments, device pointers).
//
// Design decision: one thread per (channel, tile of tokens) keeps the K-tap window in registers and slides
// it, so each input is read once per tile (bf16 in and bf16 out only, over more than one tile: 2 channels per
// thread, measured faster on the H200, docs/cuda.md); the carried state is updated by a second,
// sequential-per-channel kernel so that the in-place shift of `state` (when T < K-1) cannot race.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace mambascope::kernels::cuda {

constexpr int64_t kConvMaxK = 8;  // largest kernel width built (every checkpoint has d_conv = 4)

// out[t,c] = silu(bias[c] + Σ_k w[c,k]·in[t-(K-1)+k, c]), rows before the chunk from `state` ((K-1)×Cn,
// oldest first). in (T×Cn, stride ldi), w (Cn×K), bias (Cn) or null, out (T×Cn, stride ldo; must not alias in
// or state). On return `state` holds the last K-1 input rows. Asynchronous on `stream`.
// out16 (optional, T×Cn, stride ldo16): a bf16 copy of out written by the same pass (the input of a bf16
// projection, without a separate conversion pass).
void conv1d_silu(int64_t T, int64_t Cn, int64_t K, const float* in, int64_t ldi, const float* w,
                 const float* bias, float* state, float* out, int64_t ldo, cudaStream_t stream,
                 __nv_bfloat16* out16 = nullptr, int64_t ldo16 = 0);

// The same with a bf16 input (the bf16 in_proj output): out may then be null when only out16 is wanted. The
// carried state stays float32 (bf16 → float32 is exact, so the state equals the rounded inputs).
void conv1d_silu(int64_t T, int64_t Cn, int64_t K, const __nv_bfloat16* in, int64_t ldi, const float* w,
                 const float* bias, float* state, float* out, int64_t ldo, cudaStream_t stream,
                 __nv_bfloat16* out16 = nullptr, int64_t ldo16 = 0);

}  // namespace mambascope::kernels::cuda
