// RMSNorm and gated grouped RMSNorm; see norm.h.
#include "norm.h"

#include <cmath>

#include "activations.h"

namespace mambascope::kernels {

void rmsnorm(int64_t T, int64_t D, const float* x, int64_t ldx, const float* w, float eps, float* out,
             int64_t ldo) {
#pragma omp parallel for schedule(static) if (T * D > 65536)
    for (int64_t t = 0; t < T; ++t) {
        const float* xr = x + t * ldx;
        float* o = out + t * ldo;
        double ss = 0;
        for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(xr[d]) * xr[d];
        const float inv = 1.0f / std::sqrt(static_cast<float>(ss / D) + eps);
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) o[d] = xr[d] * inv * w[d];
    }
}

void gated_rmsnorm(int64_t T, int64_t E, int64_t G, float* y, int64_t ldy, const float* z, int64_t ldz,
                   const float* w, float eps) {
    const int64_t group = E / G;
#pragma omp parallel for schedule(static) if (T * E > 65536)
    for (int64_t t = 0; t < T; ++t) {
        float* yr = y + t * ldy;
        const float* zr = z + t * ldz;
        mul_silu_span(E, yr, zr);  // gate first (16 lanes; omp simd leaves fast_exp scalar)
        for (int64_t g = 0; g < G; ++g) {
            float* yg = yr + g * group;
            double ss = 0;
            for (int64_t e = 0; e < group; ++e) ss += static_cast<double>(yg[e]) * yg[e];
            const float inv = 1.0f / std::sqrt(static_cast<float>(ss / group) + eps);
            const float* wg = w + g * group;
#pragma omp simd
            for (int64_t e = 0; e < group; ++e) yg[e] = yg[e] * inv * wg[e];
        }
    }
}

}  // namespace mambascope::kernels
