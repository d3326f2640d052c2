// gemv_row.cuh: one output row of a one-row projection, one warp (device code). Shared by the gemv kernels
// (gemv.cu) and the persistent decode kernel (decode_mamba1.cu), so that both add every product in the same
// order and agree bit for bit.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#ifndef MAMBASCOPE_EMU  // the CPU emulation (tests/cuda/emu) includes its own device_math first
#include "cuda/device_math.cuh"
#endif

namespace mambascope::kernels::cuda::detail {

constexpr int kGemvVec = 8;  // elements per 16-byte bf16 load (two float4 loads for float32)

__device__ __forceinline__ float to_f32(float v) {
    return v;
}
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) {
    return __bfloat162float(v);
}

// 8 consecutive elements as float32 (p 16-byte aligned).
__device__ __forceinline__ void load8(const float* p, float (&v)[kGemvVec]) {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
// bf16 → float32 is the bf16 bits in the high half of a float: one shift or mask per element, exact.
__device__ __forceinline__ float bf16_lo(unsigned w) {
    return __uint_as_float(w << 16);
}
__device__ __forceinline__ float bf16_hi(unsigned w) {
    return __uint_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ void load8(const __nv_bfloat16* p, float (&v)[kGemvVec]) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);  // elements 2i (low half) and 2i+1 of each word
    v[0] = bf16_lo(u.x), v[1] = bf16_hi(u.x), v[2] = bf16_lo(u.y), v[3] = bf16_hi(u.y);
    v[4] = bf16_lo(u.z), v[5] = bf16_hi(u.z), v[6] = bf16_lo(u.w), v[7] = bf16_hi(u.w);
}

__device__ __forceinline__ void store(float* y, float acc, float beta) {
    *y = beta != 0.0f ? acc + beta * *y : acc;
}
__device__ __forceinline__ void store(__nv_bfloat16* y, float acc, float) {
    *y = __float2bfloat16_rn(acc);
}

// This lane's share of Σ_k w[k]·a[k] over k < K, added onto acc: 8 elements per 16-byte load step, lane l
// taking elements 8l … 8l + 7, then 8l + 256, … in that order (K % 8 == 0, w and a 16-byte aligned). kUnroll
// load steps are issued before their products (the order of the sum does not depend on it). row_dot's vec
// path, and the ring decode kernel's over a row held in several pieces (decode_mamba1.cu: a piece a whole
// number of 256-element steps long continues the order exactly).
template <int kUnroll = 4, typename TW, typename TA>
__device__ __forceinline__ float row_dot_steps(const TW* __restrict__ w, const TA* a, int64_t K, int lane,
                                               float acc) {
#pragma unroll kUnroll  // several 16-byte loads in flight per lane: the product is bound by memory latency
                        // otherwise
    for (int64_t k = static_cast<int64_t>(lane) * kGemvVec; k < K; k += 32 * kGemvVec) {
        float wv[kGemvVec], av[kGemvVec];
        load8(w + k, wv);
        load8(a + k, av);
#pragma unroll
        for (int i = 0; i < kGemvVec; ++i) acc = fmaf(wv[i], av[i], acc);
    }
    return acc;
}

// Σ_k w[k]·a[k] over one row, one warp (the sum lands in every lane). vec: 8 elements per 16-byte load step
// (row_dot_steps; K % 8 == 0, w and a 16-byte aligned); otherwise one element per lane and step. The same
// bits for every kUnroll.
template <int kUnroll = 4, typename TW, typename TA>
__device__ __forceinline__ float row_dot(const TW* __restrict__ w, const TA* a, int64_t K, int lane,
                                         bool vec) {
    float acc = 0.0f;
    if (vec) {
        acc = row_dot_steps<kUnroll>(w, a, K, lane, acc);
    } else {
        for (int64_t k = lane; k < K; k += 32) acc = fmaf(to_f32(w[k]), to_f32(a[k]), acc);
    }
    return warp_sum(acc);
}

// Two rows' Σ_k w[k]·a[k] at once (row_dot's vec order for each, so each sum equals row_dot's bit for bit):
// twice the loads in flight per lane, for phases bound by DRAM latency. vec rows only (K % 8 == 0, 16-byte
// aligned rows and a).
template <typename TW, typename TA>
__device__ __forceinline__ void row_dot2(const TW* __restrict__ w0, const TW* __restrict__ w1, const TA* a,
                                         int64_t K, int lane, float& out0, float& out1) {
    float acc0 = 0.0f, acc1 = 0.0f;
#pragma unroll 4
    for (int64_t k = static_cast<int64_t>(lane) * kGemvVec; k < K; k += 32 * kGemvVec) {
        float u[kGemvVec], v[kGemvVec], av[kGemvVec];
        load8(w0 + k, u);
        load8(w1 + k, v);
        load8(a + k, av);
#pragma unroll
        for (int i = 0; i < kGemvVec; ++i) {
            acc0 = fmaf(u[i], av[i], acc0);
            acc1 = fmaf(v[i], av[i], acc1);
        }
    }
    out0 = warp_sum(acc0);
    out1 = warp_sum(acc1);
}

// Lane 0 starts the row's weights on their way to L2 (vec rows only: 16-byte aligned, K·sizeof(TW) a multiple
// of 16). Issued before grid_dependency_wait, the DRAM reads overlap the previous kernel of a decode graph.
template <typename TW>
__device__ __forceinline__ void prefetch_row(const TW* w, int64_t K, int lane, bool prefetch) {
    if (prefetch && lane == 0) prefetch_l2(w, static_cast<unsigned>(K * static_cast<int64_t>(sizeof(TW))));
}

}  // namespace mambascope::kernels::cuda::detail
