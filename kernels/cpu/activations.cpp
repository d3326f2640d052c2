#include "activations.h"

#include <cstring>

namespace mambascope::kernels {

void softplus_inplace(int64_t n, float* x) {
    // 16 lanes at a time: softplus(x) = max(x,0) + ln(1 + e^{-|x|}), ln(1+u) as in softplus().
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        vf16 v;
        std::memcpy(&v, x + i, sizeof v);
        const vf16 ax = v < 0.0f ? -v : v;
        const vf16 u = vexp16(-ax);
        alignas(64) float uu[16], vv[16], out[16];
        std::memcpy(uu, &u, sizeof u);
        std::memcpy(vv, &v, sizeof v);
#pragma omp simd
        for (int l = 0; l < 16; ++l) {
            const float w = 1.0f + uu[l];
            const float series = uu[l] * (1.0f - uu[l] * (0.5f - uu[l] * (1.0f / 3.0f)));
            const float lg = uu[l] < 1e-3f ? series : fast_log(w) * (uu[l] / (w - 1.0f));
            const float r = (vv[l] > 0.0f ? vv[l] : 0.0f) + lg;
            out[l] = vv[l] > 20.0f ? vv[l] : r;
        }
        std::memcpy(x + i, out, sizeof out);
    }
    for (; i < n; ++i) x[i] = softplus(x[i]);
}

void silu_inplace(int64_t n, float* x) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) x[i] = silu(x[i]);
}

}  // namespace mambascope::kernels
