// Hidden attention of one channel (method doc §5). See hidden_attention.h.
#include "mambascope/hidden_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "mambascope/error.h"

namespace mambascope {

std::vector<double> hidden_attention(int64_t W, int64_t N, std::span<const float> delta,
                                     std::span<const float> A, const float* B, int64_t ldb, const float* C,
                                     int64_t ldc) {
    MS_CHECK(W >= 1 && W <= kHiddenAttentionMaxWindow, "hidden attention: window of " + std::to_string(W) +
                                                           " tokens (allowed 1.." +
                                                           std::to_string(kHiddenAttentionMaxWindow) + ")");
    MS_CHECK(N >= 1 && ldb >= N && ldc >= N && B && C, "hidden attention: bad B/C shape");
    MS_CHECK(static_cast<int64_t>(delta.size()) >= W, "hidden attention: Δ shorter than the window");
    const int64_t n_a = static_cast<int64_t>(A.size());
    MS_CHECK(n_a == 1 || n_a == N, "hidden attention: A must have 1 (Mamba-2) or N (Mamba-1) entries");

    // cum_i = Σ_{k≤i} Δ_k (W), so Σ_{k=j+1..i} Δ_k = cum_i − cum_j
    std::vector<double> cum(static_cast<size_t>(W));
    double run = 0;
    for (int64_t i = 0; i < W; ++i) cum[static_cast<size_t>(i)] = run += delta[static_cast<size_t>(i)];

    std::vector<double> alpha(static_cast<size_t>(W * W), 0.0);
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t i = 0; i < W; ++i) {
        const float* ci = C + i * ldc;
        for (int64_t j = 0; j <= i; ++j) {
            const float* bj = B + j * ldb;
            const double seg = cum[static_cast<size_t>(i)] - cum[static_cast<size_t>(j)];  // Σ_{k=j+1..i} Δ_k
            double s = 0;
            if (n_a == 1) {
                // (C_i·B_j) · exp(A_h·seg)
                for (int64_t n = 0; n < N; ++n) s += static_cast<double>(ci[n]) * bj[n];
                s *= std::exp(static_cast<double>(A[0]) * seg);
            } else {
                // Σ_n C_{i,n} exp(A_n·seg) B_{j,n}
                for (int64_t n = 0; n < N; ++n)
                    s += static_cast<double>(ci[n]) *
                         std::exp(static_cast<double>(A[static_cast<size_t>(n)]) * seg) * bj[n];
            }
            alpha[static_cast<size_t>(i * W + j)] = s * delta[static_cast<size_t>(j)];  // · Δ_j
        }
    }
    return alpha;
}

AttentionNorm parse_attention_norm(const std::string& s) {
    if (s == "none") return AttentionNorm::None;
    if (s == "absmax") return AttentionNorm::AbsMax;
    if (s == "absminmax") return AttentionNorm::AbsMinMax;
    if (s == "log10" || s == "log10floor") return AttentionNorm::Log10Floor;
    throw Error("unknown attention normalisation '" + s + "'", "use none, absmax, absminmax or log10");
}

void normalise_attention(std::vector<double>& alpha, int64_t W, const AttentionNormParams& p) {
    MS_CHECK(W >= 1 && static_cast<int64_t>(alpha.size()) == W * W,
             "normalise_attention: not a W × W matrix");
    if (p.kind == AttentionNorm::None) return;
    if (p.kind == AttentionNorm::Log10Floor)
        MS_CHECK(p.floor > 0 && p.floor < 1, "normalise_attention: floor must be in (0, 1)");
    double mx = 0, mn = std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < W; ++i)
        for (int64_t j = 0; j <= i; ++j) {
            const double a = std::abs(alpha[static_cast<size_t>(i * W + j)]);
            mx = std::max(mx, a);
            mn = std::min(mn, a);
        }
    const double log_floor = std::log10(p.floor);
    for (int64_t i = 0; i < W; ++i)
        for (int64_t j = 0; j < W; ++j) {
            double& v = alpha[static_cast<size_t>(i * W + j)];
            if (j > i) {
                v = p.kind == AttentionNorm::Log10Floor ? log_floor : 0.0;
                continue;
            }
            const double a = std::abs(v);
            switch (p.kind) {
                case AttentionNorm::AbsMax:
                    v = mx > 0 ? a / mx : 0.0;
                    break;
                case AttentionNorm::AbsMinMax:
                    v = mx > mn ? (a - mn) / (mx - mn) : 0.0;
                    break;
                case AttentionNorm::Log10Floor:
                    v = std::log10(std::max(mx > 0 ? a / mx : 0.0, p.floor));
                    break;
                case AttentionNorm::None:
                    break;
            }
        }
}

}  // namespace mambascope
