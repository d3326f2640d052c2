// activations.h: softplus, SiLU and a vectorisable exp, shared by the CPU kernels.
//
// Design decision: exp is our own Cephes-style polynomial (max relative error ≈ 2 ulp on [-87, 88]), written
// so that GCC vectorises loops that call it (no libm call inside the loop). softplus follows PyTorch: x for x
// > 20.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace mambascope::kernels {

// The Cephes polynomials, written once for float and for the 16-lane vf16 below (same operations, same
// order). e^r for |r| ≤ ln2 / 2.
template <class V>
inline V exp_poly(V r) {
    V p = V{} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    return p * r * r + r + 1.0f;
}
// ln(1 + m) − m + m²/2 for m ∈ [√½ − 1, √2 − 1), z = m² (the caller adds the rest and the exponent).
template <class V>
inline V log_poly(V m, V z) {
    V y = V{} + 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    return y * m * z;
}

// exp(x) for x in [-87.3, 88.7]; 0 below, +inf above. Vectorisable.
inline float fast_exp(float x) {
    constexpr float kLog2e = 1.44269504088896341f;
    constexpr float kLn2Hi = 0.693359375f;
    constexpr float kLn2Lo = -2.12194440e-4f;
    const float xc = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
    const float n = std::floor(xc * kLog2e + 0.5f);
    float r = xc - n * kLn2Hi;
    r = r - n * kLn2Lo;
    const float e = exp_poly(r);  // |r| <= ln2/2
    int32_t bits;
    std::memcpy(&bits, &e, 4);
    bits += static_cast<int32_t>(n) << 23;
    float out;
    std::memcpy(&out, &bits, 4);
    return x < -87.3f ? 0.0f : out;
}

// ln(x) for normal x > 0 (Cephes logf polynomial, ≈ 1 ulp). Vectorisable.
inline float fast_log(float x) {
    int32_t bits;
    std::memcpy(&bits, &x, 4);
    int32_t e = ((bits >> 23) & 0xff) - 126;
    bits = (bits & 0x807fffff) | 0x3f000000;  // mantissa in [0.5, 1)
    float m;
    std::memcpy(&m, &bits, 4);
    constexpr float kSqrtHalf = 0.707106781186547524f;
    const bool small = m < kSqrtHalf;
    e -= small ? 1 : 0;
    m = small ? m + m - 1.0f : m - 1.0f;
    const float z = m * m;
    float y = log_poly(m, z);
    const float fe = static_cast<float>(e);
    y += -2.12194440e-4f * fe;
    y += -0.5f * z;
    return m + y + 0.693359375f * fe;
}

// softplus(x) = ln(1 + e^x) = max(x, 0) + ln(1 + e^{-|x|}); PyTorch returns x for x > 20.
inline float softplus(float x) {
    const float u = fast_exp(-std::fabs(x));  // (0, 1]
    // ln(1+u): series for small u keeps full relative precision, the log polynomial otherwise
    const float series = u * (1.0f - u * (0.5f - u * (1.0f / 3.0f)));
    const float w = 1.0f + u;  // ln(1+u) = ln(w)·u/(w−1) cancels the rounding of 1+u (Goldberg)
    const float l = u < 1e-3f ? series : fast_log(w) * (u / (w - 1.0f));
    const float r = (x > 0.0f ? x : 0.0f) + l;
    return x > 20.0f ? x : r;
}
inline float silu(float x) {
    return x / (1.0f + fast_exp(-x));
}

// ---- 16-lane versions (GCC vector extensions: one AVX-512 register, two AVX2 registers, or four SSE
// registers) ----
typedef float vf16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));

inline vf16 vsplat(float v) {
    return vf16{} + v;
}

// fast_exp on 16 lanes: round-to-nearest via the 1.5·2^23 magic constant, Cephes polynomial, exponent by
// integer add.
inline vf16 vexp16(vf16 x) {
    constexpr float kMagic =
        12582912.0f;  // 1.5 · 2^23: adding it rounds to an integer held in the low mantissa bits
    const vf16 lo = vsplat(-87.3f), hi = vsplat(88.7f);
    const vf16 xc = x < lo ? lo : (x > hi ? hi : x);
    const vf16 t = xc * 1.44269504088896341f + kMagic;
    const vf16 n = t - kMagic;
    vf16 r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    const vf16 e = exp_poly(r);
    const vi16 ni = (vi16)t - 0x4B400000;  // vector casts reinterpret the bits (GCC)
    const vi16 bits = (vi16)e + (ni << 23);
    const vf16 out = (vf16)bits;
    return x < lo ? vf16{} : out;
}

// fast_log on 16 lanes (the same steps, lane by lane), for normal x > 0.
inline vf16 vlog16(vf16 x) {
    vi16 bits = (vi16)x;
    vi16 e = ((bits >> 23) & 0xff) - 126;
    bits = (bits & static_cast<int32_t>(0x807fffffu)) | 0x3f000000;  // mantissa in [0.5, 1)
    vf16 m = (vf16)bits;
    const vi16 small = m < 0.707106781186547524f;  // −1 (all bits) where true
    e = e + small;
    m = small ? m + m - 1.0f : m - 1.0f;
    const vf16 z = m * m;
    vf16 y = log_poly(m, z);
    const vf16 fe = __builtin_convertvector(e, vf16);
    y += -2.12194440e-4f * fe;
    y += -0.5f * z;
    return m + y + 0.693359375f * fe;
}

// softplus on 16 lanes (the same steps as softplus(), both branches evaluated and selected).
inline vf16 vsoftplus16(vf16 v) {
    const vf16 u = vexp16(-(v < 0.0f ? -v : v));
    const vf16 series = u * (1.0f - u * (0.5f - u * (1.0f / 3.0f)));
    const vf16 w = 1.0f + u;
    const vf16 l = u < 1e-3f ? series : vlog16(w) * (u / (w - 1.0f));  // 0/0 lanes are not selected
    const vf16 r = (v > 0.0f ? v : vf16{}) + l;
    return v > 20.0f ? v : r;
}

// silu on 16 lanes (the same steps as silu()).
inline vf16 vsilu16(vf16 v) {
    return v / (1.0f + vexp16(-v));
}

// y[0, n) *= silu(z[0, n)) on one thread, 16 lanes at a time (y null: z = silu(z)).
inline void mul_silu_span(int64_t n, float* y, const float* z) {
    float* out = y ? y : const_cast<float*>(z);
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
        vf16 zv, yv;
        std::memcpy(&zv, z + c, sizeof zv);
        if (y) {
            std::memcpy(&yv, y + c, sizeof yv);
            yv = yv * vsilu16(zv);
        } else {
            yv = vsilu16(zv);
        }
        std::memcpy(out + c, &yv, sizeof yv);
    }
    for (; c < n; ++c) out[c] = y ? y[c] * silu(z[c]) : silu(z[c]);
}

// In place over n values (split over the OpenMP threads when n is large).
void softplus_inplace(int64_t n, float* x);
// x (rows × cols, row-major, contiguous) = softplus(x + bias[col]) in place; bias null: no bias. The
// forward's Δ = softplus(dt_proj(x) + dt_bias) in one pass over the OpenMP threads.
void softplus_bias_inplace(int64_t rows, int64_t cols, float* x, const float* bias);
void silu_inplace(int64_t n, float* x);
// y (rows × cols, stride ldy) *= silu(z (rows × cols, stride ldz)): Mamba-1's output gate, rows over the
// OpenMP threads, 16 lanes at a time.
void mul_silu_rows(int64_t rows, int64_t cols, float* y, int64_t ldy, const float* z, int64_t ldz);

}  // namespace mambascope::kernels
