// device_math.cuh: the few device-side math helpers the CUDA kernels share (include from .cu files only).
//
// Design decision: exp goes through ex2.approx.ftz on x·log2(e) (one MUFU op; max relative error ≈ 2^-22 plus
// the rounding of the product), callers pre-scale A by log2(e) once so the scan's inner loop is one multiply
// + one MUFU. softplus keeps log1pf (accurate for tiny Δ, where lg2.approx(1+e^x) would lose the relative
// precision).
#pragma once

#include <cuda_runtime.h>

namespace mambascope::kernels::cuda::detail {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kSoftplusLinear = 20.0f;  // softplus(x) = x above this (PyTorch's threshold)

// 2^x, flushing denormal results to 0.
__device__ __forceinline__ float ex2_approx(float x) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

// log2(x) for x > 0.
__device__ __forceinline__ float lg2_approx(float x) {
    float r;
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

// Above this |x|, 2^x is ≤ 0.71 or ≥ 1.41: the state forgets within a few tokens, MUFU's 2 ulp do not
// accumulate.
constexpr float kExp2TaylorRange = 0.5f;

// 2^x with rounding-level error for |x| ≤ 0.5 (Taylor of e^y, y = x·ln2, |y| ≤ 0.347, truncation < 6e-9),
// MUFU elsewhere.
__device__ __forceinline__ float exp2_accurate(float x) {
    const float y = x * kLn2;
    float p = 1.0f / 5040.0f;
    p = fmaf(p, y, 1.0f / 720.0f);
    p = fmaf(p, y, 1.0f / 120.0f);
    p = fmaf(p, y, 1.0f / 24.0f);
    p = fmaf(p, y, 1.0f / 6.0f);
    p = fmaf(p, y, 0.5f);
    p = fmaf(p, y, 1.0f);
    p = fmaf(p, y, 1.0f);
    return fabsf(x) <= kExp2TaylorRange ? p : ex2_approx(x);
}

template <bool kFast>
__device__ __forceinline__ float exp2_scan(float x) {
    if constexpr (kFast)
        return ex2_approx(x);
    else
        return exp2_accurate(x);
}

__device__ __forceinline__ float softplus(float x) {
    return x > kSoftplusLinear ? x : log1pf(ex2_approx(x * kLog2e));
}

__device__ __forceinline__ float silu(float x) {
    return x / (1.0f + ex2_approx(-x * kLog2e));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

}  // namespace mambascope::kernels::cuda::detail
