// CPU kernels against direct double-precision implementations of the equations (method doc §1.2, §1.3).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "cpu/activations.h"
#include "cpu/conv1d.h"
#include "cpu/norm.h"
#include "cpu/scan.h"

using namespace mambascope::kernels;

namespace {

std::vector<float> randv(size_t n, std::mt19937& rng, float lo, float hi) {
    std::uniform_real_distribution<float> u(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = u(rng);
    return v;
}

double max_rel(const std::vector<float>& a, const std::vector<double>& b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        num = std::max(num, std::abs(double(a[i]) - b[i]));
        den = std::max(den, std::abs(b[i]));
    }
    return num / std::max(den, 1e-30);
}

struct M1Case {
    int64_t T, E, N;
};

}  // namespace

TEST(CpuActivations, FastExpMatchesStdExp) {
    for (float x = -87.0f; x < 88.0f; x += 0.0137f) {
        const float e = std::exp(x);
        EXPECT_NEAR(fast_exp(x), e, 3e-7f * e) << x;
    }
    EXPECT_EQ(fast_exp(-200.0f), 0.0f);
}

TEST(CpuActivations, SoftplusMatchesLog1pExp) {
    for (float x = -30.0f; x < 30.0f; x += 0.0071f) {
        const double ref = x > 20 ? x : std::log1p(std::exp(double(x)));
        EXPECT_NEAR(softplus(x), ref, 4e-7 * std::max(1.0, ref) + 1e-12) << x;
        EXPECT_NEAR(softplus(x) / ref, 1.0, 2e-6) << x;
    }
}

// The forward's Δ = softplus(dt + bias[col]) over a (rows × cols) block, split over the OpenMP threads: every
// value (16-lane blocks and the scalar tail, rows not a multiple of 16 wide) is softplus of x + bias in
// float, to softplus's accuracy; with a null bias it is softplus_inplace.
TEST(CpuActivations, SoftplusBiasInplaceMatchesLog1pExpOfTheSum) {
    std::mt19937 rng(5);
    const int64_t rows = 701, cols = 101;  // 70,801 values: above the threading threshold, tail of 1
    auto x = randv(rows * cols, rng, -12, 8), bias = randv(cols, rng, -4, 1);
    std::vector<float> got = x, plain = x;
    softplus_bias_inplace(rows, cols, got.data(), bias.data());
    softplus_inplace(rows * cols, plain.data());
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
            const float v = x[r * cols + c] + bias[c];
            const double ref = v > 20 ? v : std::log1p(std::exp(double(v)));
            ASSERT_NEAR(got[r * cols + c], ref, 4e-7 * std::max(1.0, ref) + 1e-12) << r << "," << c;
            const double ref0 = std::log1p(std::exp(double(x[r * cols + c])));
            ASSERT_NEAR(plain[r * cols + c], ref0, 4e-7 * std::max(1.0, ref0) + 1e-12) << r << "," << c;
        }
}

// Mamba-1's output gate y *= silu(z) over strided rows (16-lane blocks and a tail), and silu_inplace, against
// z / (1 + e^{-z}) in double; columns past `cols` are left alone.
TEST(CpuActivations, MulSiluRowsMatchesTheGateInDouble) {
    std::mt19937 rng(6);
    const int64_t rows = 650, cols = 107, ldy = 110, ldz = 113;  // 69,550 values: threaded, tail of 11
    auto y = randv(rows * ldy, rng, -3, 3), z = randv(rows * ldz, rng, -30, 30);
    std::vector<float> got = y;
    mul_silu_rows(rows, cols, got.data(), ldy, z.data(), ldz);
    std::vector<float> zs(z.begin(), z.begin() + rows * cols);
    silu_inplace(rows * cols, zs.data());
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < ldy; ++c) {
            if (c >= cols) {
                ASSERT_EQ(got[r * ldy + c], y[r * ldy + c]);
                continue;
            }
            const double zv = z[r * ldz + c], s = zv / (1.0 + std::exp(-zv));
            const double want = y[r * ldy + c] * s;
            ASSERT_NEAR(got[r * ldy + c], want, 1e-6 * std::max(1.0, std::abs(want))) << r << "," << c;
            const double zf = z[r * cols + c], sf = zf / (1.0 + std::exp(-zf));
            ASSERT_NEAR(zs[r * cols + c], sf, 1e-6 * std::max(1.0, std::abs(sf))) << r << "," << c;
        }
}

class ScanMamba1 : public ::testing::TestWithParam<M1Case> {};

TEST_P(ScanMamba1, MatchesRecurrenceWithFilterAndCarriedState) {
    const auto [T, E, N] = GetParam();
    std::mt19937 rng(static_cast<unsigned>(T * 131 + E * 7 + N));
    auto x = randv(T * E, rng, -1, 1), delta = randv(T * E, rng, 0.001f, 1.0f),
         A = randv(E * N, rng, -4, -0.05f);
    auto B = randv(T * N, rng, -1, 1), C = randv(T * N, rng, -1, 1), Dk = randv(E, rng, -1, 1);
    auto thr = randv(E, rng, 0.2f, 0.8f);
    for (int64_t e = 0; e < E; e += 3) thr[e] = -INFINITY;  // every third channel unfiltered
    // reference in double
    std::vector<double> h(E * N, 0.0), yref(T * E), dref(T * E);
    for (int64_t t = 0; t < T; ++t)
        for (int64_t d = 0; d < E; ++d) {
            double dt = delta[t * E + d];
            dt = dt > thr[d] ? dt : 0.0;
            dref[t * E + d] = dt;
            double acc = Dk[d] * x[t * E + d];
            for (int64_t n = 0; n < N; ++n) {
                double& hv = h[d * N + n];
                hv = std::exp(dt * A[d * N + n]) * hv + dt * B[t * N + n] * x[t * E + d];
                acc += C[t * N + n] * hv;
            }
            yref[t * E + d] = acc;
        }
    // two calls (carried state) over a split point
    std::vector<float> hs(E * N, 0.0f), y(T * E), dl = delta;
    const int64_t split = T / 3;
    scan_mamba1(split, E, N, x.data(), E, dl.data(), E, A.data(), B.data(), N, C.data(), N, Dk.data(),
                thr.data(), hs.data(), y.data(), E);
    scan_mamba1(T - split, E, N, x.data() + split * E, E, dl.data() + split * E, E, A.data(),
                B.data() + split * N, N, C.data() + split * N, N, Dk.data(), thr.data(), hs.data(),
                y.data() + split * E, E);
    EXPECT_LT(max_rel(y, yref), 2e-5);
    EXPECT_LT(max_rel(dl, dref), 1e-7);  // Δ written back is the Δ used
    std::vector<float> hf(hs.begin(), hs.end());
    EXPECT_LT(max_rel(hf, h), 2e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ScanMamba1,
                         ::testing::Values(M1Case{37, 16, 16}, M1Case{50, 45, 16}, M1Case{20, 7, 5},
                                           M1Case{64, 33, 4}, M1Case{9, 70, 300}));

TEST(ScanMamba2, MatchesRecurrenceWithGroupsAndFilter) {
    const int64_t T = 41, H = 6, P = 5, G = 2, N = 7;
    std::mt19937 rng(3);
    auto x = randv(T * H * P, rng, -1, 1), delta = randv(T * H, rng, 0.001f, 1.0f),
         A = randv(H, rng, -4, -0.05f);
    auto B = randv(T * G * N, rng, -1, 1), C = randv(T * G * N, rng, -1, 1), Dk = randv(H, rng, -1, 1);
    std::vector<float> thr{-INFINITY, 0.5f, -INFINITY, 0.3f, 0.9f, -INFINITY};
    std::vector<double> s(H * P * N, 0.0), yref(T * H * P);
    for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h) {
            const int64_t g = h / (H / G);
            double dt = delta[t * H + h];
            dt = dt > thr[h] ? dt : 0.0;
            for (int64_t p = 0; p < P; ++p) {
                double acc = 0;
                for (int64_t n = 0; n < N; ++n) {
                    double& sv = s[(h * P + p) * N + n];
                    sv = std::exp(dt * A[h]) * sv + dt * x[t * H * P + h * P + p] * B[t * G * N + g * N + n];
                    acc += C[t * G * N + g * N + n] * sv;
                }
                yref[t * H * P + h * P + p] = acc + Dk[h] * x[t * H * P + h * P + p];
            }
        }
    std::vector<float> ss(H * P * N, 0.0f), y(T * H * P), dl = delta;
    scan_mamba2(T, H, P, G, N, x.data(), H * P, dl.data(), H, A.data(), B.data(), G * N, C.data(), G * N,
                Dk.data(), thr.data(), ss.data(), y.data(), H * P);
    EXPECT_LT(max_rel(y, yref), 2e-5);
}

TEST(Conv1dSilu, ChunkedEqualsOnePassAndMatchesDefinition) {
    const int64_t T = 23, Cn = 11, K = 4;
    std::mt19937 rng(5);
    auto in = randv(T * Cn, rng, -2, 2), w = randv(Cn * K, rng, -1, 1), b = randv(Cn, rng, -0.5f, 0.5f);
    std::vector<double> ref(T * Cn);
    for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < Cn; ++c) {
            double acc = b[c];
            for (int64_t k = 0; k < K; ++k) {
                const int64_t r = t - (K - 1) + k;
                if (r >= 0) acc += w[c * K + k] * in[r * Cn + c];
            }
            ref[t * Cn + c] = acc / (1 + std::exp(-acc));
        }
    std::vector<float> state((K - 1) * Cn, 0.0f), out(T * Cn);
    conv1d_silu(5, Cn, K, in.data(), Cn, w.data(), b.data(), state.data(), out.data(), Cn);
    conv1d_silu(1, Cn, K, in.data() + 5 * Cn, Cn, w.data(), b.data(), state.data(), out.data() + 5 * Cn, Cn);
    conv1d_silu(T - 6, Cn, K, in.data() + 6 * Cn, Cn, w.data(), b.data(), state.data(), out.data() + 6 * Cn,
                Cn);
    EXPECT_LT(max_rel(out, ref), 1e-6);
}

TEST(RmsNorm, GatedGroupedMatchesDefinition) {
    const int64_t T = 3, E = 12, G = 3;
    std::mt19937 rng(9);
    auto y = randv(T * E, rng, -2, 2), z = randv(T * E, rng, -2, 2), w = randv(E, rng, 0.5f, 1.5f);
    std::vector<double> ref(T * E);
    for (int64_t t = 0; t < T; ++t)
        for (int64_t g = 0; g < G; ++g) {
            double ss = 0;
            std::vector<double> v(E / G);
            for (int64_t e = 0; e < E / G; ++e) {
                const int64_t i = t * E + g * (E / G) + e;
                v[e] = y[i] * z[i] / (1 + std::exp(-double(z[i])));
                ss += v[e] * v[e];
            }
            const double inv = 1.0 / std::sqrt(ss / (E / G) + 1e-5);
            for (int64_t e = 0; e < E / G; ++e)
                ref[t * E + g * (E / G) + e] = v[e] * inv * w[g * (E / G) + e];
        }
    gated_rmsnorm(T, E, G, y.data(), E, z.data(), E, w.data(), 1e-5f);
    EXPECT_LT(max_rel(y, ref), 1e-6);
}
