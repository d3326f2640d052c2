// Depthwise causal conv1d + SiLU with carried state; see conv1d.h.
#include "conv1d.h"

#include <algorithm>
#include <vector>

#include "activations.h"

namespace mambascope::kernels {

void conv1d_silu(int64_t T, int64_t Cn, int64_t K, const float* in, int64_t ldi, const float* w,
                 const float* bias, float* state, float* out, int64_t ldo) {
    // Row r of the virtual input: r < 0 → state row (K-1)+r, else in row r.
    auto row = [&](int64_t r) -> const float* { return r < 0 ? state + (K - 1 + r) * Cn : in + r * ldi; };
#pragma omp parallel for schedule(static) if (T * Cn > 65536)
    for (int64_t t = 0; t < T; ++t) {
        float* o = out + t * ldo;
        for (int64_t c = 0; c < Cn; ++c) o[c] = bias ? bias[c] : 0.0f;
        for (int64_t k = 0; k < K; ++k) {
            const float* src = row(t - (K - 1) + k);
#pragma omp simd
            for (int64_t c = 0; c < Cn; ++c) o[c] += w[c * K + k] * src[c];
        }
        mul_silu_span(Cn, nullptr, o);  // o = silu(o), 16 lanes at a time
    }
    // New state: the last K-1 rows of [state; in].
    if (K > 1) {
        std::vector<float> next(static_cast<size_t>((K - 1) * Cn));
        for (int64_t r = 0; r < K - 1; ++r) {
            const float* src = row(T - (K - 1) + r);
            std::copy(src, src + Cn, next.begin() + r * Cn);
        }
        std::copy(next.begin(), next.end(), state);
    }
}

}  // namespace mambascope::kernels
