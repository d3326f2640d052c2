// activations.h: softplus, SiLU and a vectorisable exp, shared by the CPU kernels.
//
// Design decision: exp is our own Cephes-style polynomial (max relative error ≈ 2 ulp on [-87, 88]), written so that
// GCC vectorises loops that call it (no libm call inside the loop). softplus follows PyTorch: x for x > 20.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace mambascope::kernels {

// exp(x) for x in [-87.3, 88.7]; 0 below, +inf above. Vectorisable.
inline float fast_exp(float x) {
    constexpr float kLog2e = 1.44269504088896341f;
    constexpr float kLn2Hi = 0.693359375f;
    constexpr float kLn2Lo = -2.12194440e-4f;
    const float xc = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
    const float n = std::floor(xc * kLog2e + 0.5f);
    float r = xc - n * kLn2Hi;
    r = r - n * kLn2Lo;
    // Cephes expf polynomial on |r| <= ln2/2
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float e = p * r * r + r + 1.0f;
    int32_t bits;
    std::memcpy(&bits, &e, 4);
    bits += static_cast<int32_t>(n) << 23;
    float out;
    std::memcpy(&out, &bits, 4);
    return x < -87.3f ? 0.0f : out;
}

inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }
inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

// In place over n values.
void softplus_inplace(int64_t n, float* x);
void silu_inplace(int64_t n, float* x);

}  // namespace mambascope::kernels
