// Selective scans on the CPU; see scan.h for the equations.
//
// Mamba-1: channels are processed in blocks of kLanes (one AVX-512 register of floats); for each block the N
// states of kLanes channels live in a small local array that the compiler keeps in registers (N = 16 is
// specialised), and exp(Δ·A) uses the vectorisable fast_exp. Mamba-2: one head at a time, the P × N state in
// cache, vectorised over N.
#include "scan.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "activations.h"

namespace mambascope::kernels {
namespace {

// Channels per vector block: 16 floats = one AVX-512 register (two AVX2 registers).
constexpr int kLanes = 16;
// Largest d_state the generic Mamba-1 path keeps on the stack.
constexpr int kMaxStateM1 = 256;

template <int kN>
void scan_m1_block(int64_t T, int64_t N_rt, int64_t E, int64_t d0, const float* x, int64_t ldx, float* delta,
                   int64_t ldd, const float* A, const float* B, int64_t ldb, const float* C, int64_t ldc,
                   const float* Dskip, const float* thr, float* h, float* y, int64_t ldy) {
    static_assert(kLanes == 16, "the block uses 16-lane vectors");
    const int64_t N = kN > 0 ? kN : N_rt;
    constexpr int kCap = kN > 0 ? kN : kMaxStateM1;
    const int lanes = static_cast<int>(std::min<int64_t>(kLanes, E - d0));
    // State and A of 16 channels × N states: hs[n] holds lanes l = channel d0+l.
    vf16 hs[kCap], As[kCap];
    alignas(64) float tmp[kLanes];
    auto load_lanes = [&](const float* src, int64_t stride, float pad) {
        for (int l = 0; l < kLanes; ++l) tmp[l] = l < lanes ? src[l * stride] : pad;
        vf16 v;
        std::memcpy(&v, tmp, sizeof v);
        return v;
    };
    for (int64_t n = 0; n < N; ++n) {
        hs[n] = load_lanes(h + d0 * N + n, N, 0.0f);
        As[n] = load_lanes(A + d0 * N + n, N, 0.0f);
    }
    const vf16 Dv = load_lanes(Dskip + d0, 1, 0.0f);
    const vf16 th = thr ? load_lanes(thr + d0, 1, -INFINITY) : vsplat(-INFINITY);
    const bool full = lanes == kLanes;
    for (int64_t t = 0; t < T; ++t) {
        float* drow = delta + t * ldd + d0;
        const float* xrow = x + t * ldx + d0;
        vf16 d, xv;
        if (full) {
            std::memcpy(&d, drow, sizeof d);
            std::memcpy(&xv, xrow, sizeof xv);
        } else {
            d = load_lanes(drow, 1, 0.0f);
            xv = load_lanes(xrow, 1, 0.0f);
        }
        const vf16 dt = d > th ? d : vf16{};  // LongMamba filter (method doc §8.5)
        if (thr) {
            std::memcpy(tmp, &dt, sizeof dt);
            for (int l = 0; l < lanes; ++l) drow[l] = tmp[l];
        }
        const vf16 dtx = dt * xv;
        vf16 yv = Dv * xv;
        const float* Bt = B + t * ldb;
        const float* Ct = C + t * ldc;
        for (int64_t n = 0; n < N; ++n) {
            // h = exp(Δ·A)·h + Δ·B·x ; y += C·h
            hs[n] = vexp16(dt * As[n]) * hs[n] + dtx * Bt[n];
            yv += Ct[n] * hs[n];
        }
        float* yrow = y + t * ldy + d0;
        if (full) {
            std::memcpy(yrow, &yv, sizeof yv);
        } else {
            std::memcpy(tmp, &yv, sizeof yv);
            for (int l = 0; l < lanes; ++l) yrow[l] = tmp[l];
        }
    }
    for (int64_t n = 0; n < N; ++n) {
        std::memcpy(tmp, &hs[n], sizeof tmp);
        for (int l = 0; l < lanes; ++l) h[(d0 + l) * N + n] = tmp[l];
    }
}

}  // namespace

void scan_mamba1(int64_t T, int64_t E, int64_t N, const float* x, int64_t ldx, float* delta, int64_t ldd,
                 const float* A, const float* B, int64_t ldb, const float* C, int64_t ldc, const float* Dskip,
                 const float* thr, float* h, float* y, int64_t ldy) {
    const int64_t blocks = (E + kLanes - 1) / kLanes;
#pragma omp parallel for schedule(static) if (T * E > 4096)
    for (int64_t b = 0; b < blocks; ++b) {
        const int64_t d0 = b * kLanes;
        if (N == 16)
            scan_m1_block<16>(T, N, E, d0, x, ldx, delta, ldd, A, B, ldb, C, ldc, Dskip, thr, h, y, ldy);
        else if (N <= kMaxStateM1)
            scan_m1_block<0>(T, N, E, d0, x, ldx, delta, ldd, A, B, ldb, C, ldc, Dskip, thr, h, y, ldy);
    }
    if (N > kMaxStateM1) {
        // Scalar path for unusually large states (no real checkpoint has one).
        for (int64_t d = 0; d < E; ++d)
            for (int64_t t = 0; t < T; ++t) {
                float dt = delta[t * ldd + d];
                if (thr) dt = dt > thr[d] ? dt : 0.0f, delta[t * ldd + d] = dt;
                const float xv = x[t * ldx + d];
                float acc = Dskip[d] * xv;
                for (int64_t n = 0; n < N; ++n) {
                    float& hv = h[d * N + n];
                    hv = std::exp(dt * A[d * N + n]) * hv + dt * B[t * ldb + n] * xv;
                    acc += C[t * ldc + n] * hv;
                }
                y[t * ldy + d] = acc;
            }
    }
}

void scan_mamba2(int64_t T, int64_t H, int64_t P, int64_t G, int64_t N, const float* x, int64_t ldx,
                 float* delta, int64_t ldd, const float* A, const float* B, int64_t ldb, const float* C,
                 int64_t ldc, const float* Dskip, const float* thr, float* s, float* y, int64_t ldy) {
    const int64_t heads_per_group = H / G;
#pragma omp parallel for schedule(static) if (T * H * P * N > 16384)
    for (int64_t hh = 0; hh < H; ++hh) {
        const int64_t g = hh / heads_per_group;
        const float a = A[hh];
        const float th = thr ? thr[hh] : -INFINITY;
        float* sh = s + hh * P * N;  // (P, N)
        for (int64_t t = 0; t < T; ++t) {
            float dt = delta[t * ldd + hh];
            dt = dt > th ? dt : 0.0f;  // LongMamba filter (method doc §8.5)
            if (thr) delta[t * ldd + hh] = dt;
            const float dA = std::exp(dt * a);
            const float* Bt = B + t * ldb + g * N;
            const float* Ct = C + t * ldc + g * N;
            const float* xt = x + t * ldx + hh * P;
            float* yt = y + t * ldy + hh * P;
            for (int64_t p = 0; p < P; ++p) {
                const float dtx = dt * xt[p];
                float* sp = sh + p * N;
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int64_t n = 0; n < N; ++n) {
                    sp[n] = dA * sp[n] + dtx * Bt[n];
                    acc += Ct[n] * sp[n];
                }
                yt[p] = acc + Dskip[hh] * xt[p];
            }
        }
    }
}

}  // namespace mambascope::kernels
