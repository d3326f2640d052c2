// Hidden attention (method doc §5): α·x + D·x must reproduce the recurrent scan started from zero.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "mambascope/error.h"
#include "mambascope/hidden_attention.h"

using namespace mambascope;

namespace {

struct Window {
    int64_t W, N;
    std::vector<float> delta, A, B, C, x;
    float D;
};

Window random_window(int64_t W, int64_t N, int64_t n_a, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> U(-1, 1), Pos(0.01f, 0.8f), Neg(-2.0f, -0.05f);
    Window w{W, N, {}, {}, {}, {}, {}, U(rng)};
    for (int64_t t = 0; t < W; ++t) w.delta.push_back(Pos(rng));
    for (int64_t n = 0; n < n_a; ++n) w.A.push_back(Neg(rng));
    for (int64_t i = 0; i < W * N; ++i) w.B.push_back(U(rng)), w.C.push_back(U(rng));
    for (int64_t t = 0; t < W; ++t) w.x.push_back(U(rng));
    return w;
}

// Direct recurrence: h_n = exp(Δ_t A_n) h_n + Δ_t B_t,n x_t ; y_t = Σ_n C_t,n h_n + D x_t.
std::vector<double> scan(const Window& w) {
    std::vector<double> h(static_cast<size_t>(w.N), 0.0), y;
    for (int64_t t = 0; t < w.W; ++t) {
        double yt = 0;
        for (int64_t n = 0; n < w.N; ++n) {
            const double a = w.A.size() == 1 ? w.A[0] : w.A[static_cast<size_t>(n)];
            h[n] = std::exp(w.delta[t] * a) * h[n] + w.delta[t] * w.B[t * w.N + n] * w.x[t];
            yt += w.C[t * w.N + n] * h[n];
        }
        y.push_back(yt + w.D * w.x[t]);
    }
    return y;
}

void expect_reproduces_scan(const Window& w) {
    const std::vector<double> alpha =
        hidden_attention(w.W, w.N, w.delta, w.A, w.B.data(), w.N, w.C.data(), w.N);
    const std::vector<double> ref = scan(w);
    for (int64_t i = 0; i < w.W; ++i) {
        double y = w.D * w.x[i];
        for (int64_t j = 0; j < w.W; ++j) y += alpha[i * w.W + j] * w.x[j];
        EXPECT_NEAR(y, ref[i], 1e-5 * (1 + std::abs(ref[i]))) << "i=" << i;
        for (int64_t j = i + 1; j < w.W; ++j) EXPECT_EQ(alpha[i * w.W + j], 0.0);  // causal
    }
}

}  // namespace

TEST(HiddenAttention, Mamba1ReproducesTheRecurrence) {
    expect_reproduces_scan(random_window(40, 8, 8, 11));
}

TEST(HiddenAttention, Mamba2ReproducesTheRecurrence) {
    expect_reproduces_scan(random_window(40, 16, 1, 12));
}

TEST(HiddenAttention, ZeroDeltaColumnVanishesAndDoesNotDecay) {
    // LongMamba's filtered token j (Δ_j = 0): column j is zero, and pairs across j decay as if j were absent.
    Window w = random_window(6, 4, 1, 13);
    w.delta[2] = 0;
    const std::vector<double> a = hidden_attention(w.W, w.N, w.delta, w.A, w.B.data(), w.N, w.C.data(), w.N);
    for (int64_t i = 2; i < w.W; ++i) EXPECT_EQ(a[i * w.W + 2], 0.0);
    Window v = w;  // same but drop token 2 entirely
    auto drop = [](std::vector<float>& x, int64_t k, int64_t width) {
        x.erase(x.begin() + k * width, x.begin() + (k + 1) * width);
    };
    drop(v.delta, 2, 1);
    drop(v.B, 2, v.N);
    drop(v.C, 2, v.N);
    v.W = 5;
    const std::vector<double> b = hidden_attention(v.W, v.N, v.delta, v.A, v.B.data(), v.N, v.C.data(), v.N);
    EXPECT_NEAR(a[5 * 6 + 0], b[4 * 5 + 0], 1e-12);  // (5,0) in the full window == (4,0) without token 2
}

TEST(HiddenAttention, NormalisationsAreExplicit) {
    std::vector<double> a = {2, 0, -4, 1};  // W = 2: [[2, x], [-4, 1]] (upper entry ignored)
    std::vector<double> m = a;
    normalise_attention(m, 2, {AttentionNorm::AbsMax});
    EXPECT_EQ(m, (std::vector<double>{0.5, 0, 1, 0.25}));
    m = a;
    normalise_attention(m, 2, {AttentionNorm::AbsMinMax});
    EXPECT_EQ(m, (std::vector<double>{1.0 / 3, 0, 1, 0}));
    m = a;
    normalise_attention(m, 2, {AttentionNorm::Log10Floor, 0.3});
    EXPECT_NEAR(m[0], std::log10(0.5), 1e-12);
    EXPECT_NEAR(m[1], std::log10(0.3), 1e-12);  // above the diagonal: the floor
    EXPECT_NEAR(m[3], std::log10(0.3), 1e-12);  // 0.25 < floor
    m = a;
    normalise_attention(m, 2, {AttentionNorm::None});
    EXPECT_EQ(m, a);
    EXPECT_EQ(parse_attention_norm("log10floor"), AttentionNorm::Log10Floor);
    EXPECT_THROW(parse_attention_norm("softmax"), Error);
}

TEST(HiddenAttention, RejectsOversizedWindow) {
    std::vector<float> d(static_cast<size_t>(kHiddenAttentionMaxWindow + 1), 0.1f), A = {-1.0f}, B(d.size()),
                                                                                    C(d.size());
    EXPECT_THROW(hidden_attention(kHiddenAttentionMaxWindow + 1, 1, d, A, B.data(), 1, C.data(), 1), Error);
}
