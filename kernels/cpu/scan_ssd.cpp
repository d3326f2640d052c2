// Chunked SSD form of the Mamba-2 scan; see scan_ssd.h. Per head h (scalar A), chunk c, positions i, j in it:
//   Δ'_j  = Δ_j > thr ? Δ_j : 0,   l_i = Σ_{k≤i} Δ'_k·A   (the filter is a masked Δ inside the cumulative
//   sum) Y_i   = Σ_{j≤i} (C_i·B_j)·exp(l_i − l_j)·Δ'_j·x_j  +  exp(l_i)·C_i·S_c  +  D·x_i S_{c+1} =
//   exp(l_last)·S_c + Σ_j exp(l_last − l_j)·Δ'_j·x_j·B_jᵀ
// The loops follow the GPU's four kernels (dt, chunk state, chain, output) and its rounding points: R(·)
// below is bf16 rounding when bf16_operands is set and the identity otherwise.
#include "cpu/scan_ssd.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace mambascope::kernels {

float round_bf16(float v) {
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        u = (u | 0x00400000u) & 0xffff0000u;  // NaN stays a (quiet) NaN
    else
        u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    float r;
    std::memcpy(&r, &u, sizeof r);
    return r;
}

void scan_mamba2_chunked(int64_t T, int64_t H, int64_t P, int64_t G, int64_t N, const float* x, int64_t ldx,
                         float* delta, int64_t ldd, const float* A, const float* B, int64_t ldb,
                         const float* C, int64_t ldc, const float* Dskip, const float* thr, float* s,
                         float* y, int64_t ldy, int64_t Q, bool bf16_operands) {
    auto R = [bf16_operands](float v) { return bf16_operands ? round_bf16(v) : v; };
    const int64_t heads_per_group = H / G;
    const int64_t chunks = (T + Q - 1) / Q;
#pragma omp parallel for schedule(static) if (T * H * P * N > 16384)
    for (int64_t h = 0; h < H; ++h) {
        const int64_t g = h / heads_per_group;
        const float a = A[h];
        const float th = thr ? thr[h] : -INFINITY;
        float* S = s + h * P * N;                 // (P, N): the state entering the current chunk (fp32)
        std::vector<float> dt(Q), l(Q), w(Q);     // Δ', l, w = exp(l_last − l_j)·Δ'_j
        std::vector<float> Sr(P * N), dS(P * N);  // R(S_c); ΔS_c
        std::vector<float> cb(Q * Q), m(Q * Q);   // C·Bᵀ (fp32 accumulation); R(L ∘ C·Bᵀ)
        for (int64_t c = 0; c < chunks; ++c) {
            const int64_t t0 = c * Q, len = std::min(Q, T - t0);
            // 1. Δ' and the within-chunk cumulative sum (padding tokens: Δ' = 0).
            float cum = 0.0f;
            for (int64_t i = 0; i < Q; ++i) {
                float d = 0.0f;
                if (i < len) {
                    d = delta[(t0 + i) * ldd + h];
                    d = d > th ? d : 0.0f;  // LongMamba filter (method doc §8.5)
                    if (thr) delta[(t0 + i) * ldd + h] = d;
                }
                dt[size_t(i)] = d;
                cum += d * a;
                l[size_t(i)] = cum;
            }
            const float l_last = l[size_t(Q - 1)];
            auto xv = [&](int64_t i, int64_t p) { return i < len ? x[(t0 + i) * ldx + h * P + p] : 0.0f; };
            auto Bv = [&](int64_t i, int64_t n) { return i < len ? B[(t0 + i) * ldb + g * N + n] : 0.0f; };
            auto Cv = [&](int64_t i, int64_t n) { return i < len ? C[(t0 + i) * ldc + g * N + n] : 0.0f; };
            // 2. ΔS_c = Σ_j R(w_j·x_j)·R(B_j) (chunk state, from a zero state).
            for (int64_t i = 0; i < Q; ++i) w[size_t(i)] = std::exp(l_last - l[size_t(i)]) * dt[size_t(i)];
            std::fill(dS.begin(), dS.end(), 0.0f);
            for (int64_t j = 0; j < len; ++j)
                for (int64_t p = 0; p < P; ++p) {
                    const float xw = R(xv(j, p) * w[size_t(j)]);
                    for (int64_t n = 0; n < N; ++n) dS[size_t(p * N + n)] += xw * R(Bv(j, n));
                }
            // 4. outputs from the state entering the chunk (the GPU's output kernel reads it after the
            // chain).
            for (int64_t k = 0; k < P * N; ++k) Sr[size_t(k)] = R(S[k]);
            for (int64_t i = 0; i < len; ++i)
                for (int64_t j = 0; j <= i; ++j) {
                    float acc = 0.0f;
                    for (int64_t n = 0; n < N; ++n) acc += R(Cv(i, n)) * R(Bv(j, n));
                    cb[size_t(i * Q + j)] = acc;
                    m[size_t(i * Q + j)] = R(acc * std::exp(l[size_t(i)] - l[size_t(j)]) * dt[size_t(j)]);
                }
            for (int64_t i = 0; i < len; ++i) {
                const float el = std::exp(l[size_t(i)]);
                for (int64_t p = 0; p < P; ++p) {
                    float cs = 0.0f;  // C_i·S_c, scaled by exp(l_i) in fp32 (the GPU's row scale)
                    for (int64_t n = 0; n < N; ++n) cs += R(Cv(i, n)) * Sr[size_t(p * N + n)];
                    float acc = el * cs;
                    for (int64_t j = 0; j <= i; ++j) acc += m[size_t(i * Q + j)] * R(xv(j, p));
                    y[(t0 + i) * ldy + h * P + p] = acc + Dskip[h] * xv(i, p);
                }
            }
            // 3. the chain: S_{c+1} = exp(l_last)·S_c + ΔS_c (fp32).
            const float decay = std::exp(l_last);
            for (int64_t k = 0; k < P * N; ++k) S[k] = decay * S[k] + dS[size_t(k)];
        }
    }
}

}  // namespace mambascope::kernels
