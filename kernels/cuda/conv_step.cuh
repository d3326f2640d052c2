// conv_step.cuh: one channel of the depthwise causal conv1d + SiLU for one token (a decode step), device
// code. Shared by the in_proj gemv with the conv folded in (gemv.cu, gemv_rmsnorm_conv) and the persistent
// decode kernel (decode_mamba1.cu), so that both do conv1d_silu's T = 1 arithmetic (conv_kernel,
// conv1d_silu.cu) in its order and agree with it bit for bit:
//
//   win       = [state[0, d], …, state[K−2, d], in_d]          (the K−1 carried rows, oldest first, then the
//   token) out16[d]  = bf16(silu(b[d] + Σ_k w[d,k]·win[k]))             (k = 0 … K−1, one FMA each, in order)
//   state[k, d] = win[k + 1]                                     (the last K−1 rows)
//
// The load is split from the rest so that a kernel can start a channel's weights and state on their way
// before it waits for its input (grid_dependency_wait).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#ifndef MAMBASCOPE_EMU  // the CPU emulation (tests/cuda/emu) includes its own device_math first
#include "cuda/device_math.cuh"
#endif

namespace mambascope::kernels::cuda::detail {

// Channel d's taps, bias and carried rows (K−1 × E state, row k at k·E).
template <int kK>
struct ConvChannel {
    float w[kK], b,
        win[kK];  // win[0 … K−2]: the carried rows; win[K−1] is set to the token by conv_step_finish
};

template <int kK>
__device__ __forceinline__ ConvChannel<kK> conv_step_load(int64_t d, int64_t E, const float* w,
                                                          const float* bias, const float* state) {
    ConvChannel<kK> c;
#pragma unroll
    for (int k = 0; k < kK; ++k) c.w[k] = w[d * kK + k];
#pragma unroll
    for (int k = 0; k < kK - 1; ++k) c.win[k] = state[k * E + d];
    c.b = bias ? bias[d] : 0.0f;
    return c;
}

// The token's conv output (bf16, into out16[d]) and the shifted state, from the loaded channel and the
// token's input in_d (the bf16 chain's in_proj row, as float32: exact).
// Returns out16[d] as float32 (exact).
template <int kK>
__device__ __forceinline__ float conv_step_finish(int64_t d, int64_t E, float in_d, ConvChannel<kK> c,
                                                  float* state, __nv_bfloat16* out16) {
    c.win[kK - 1] = in_d;
    float acc = c.b;
#pragma unroll
    for (int k = 0; k < kK; ++k) acc += c.w[k] * c.win[k];
    const __nv_bfloat16 o = f32_to_bf16_rn(silu(acc));
    out16[d] = o;
#pragma unroll
    for (int k = 0; k < kK - 1; ++k) state[k * E + d] = c.win[k + 1];
    return bf16_to_f32(&o);
}

}  // namespace mambascope::kernels::cuda::detail
