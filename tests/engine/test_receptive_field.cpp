// Receptive-field lengths (method doc §8.7): exact function and the streaming tracker.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "mambascope/error.h"
#include "mambascope/receptive_field.h"

using namespace mambascope;

TEST(ReceptiveField, SmallestWindowWhoseDecayFallsBelowEpsilon) {
    // A = -1, ε = e^-3: need Σ Δ over the last r tokens > 3.
    const std::vector<float> d = {1, 1, 1, 1, 2, 0.5f};
    const double eps = std::exp(-3.0);
    // t = 5: 0.5, 2.5, 3.5 → r = 3
    ReceptiveField rf = receptive_field(d, -1.0, eps, 5);
    EXPECT_EQ(rf.length, 3);
    EXPECT_FALSE(rf.censored);
    // t = 3: 1, 2, 3 (not > 3), 4 → r = 4
    rf = receptive_field(d, -1.0, eps, 3);
    EXPECT_EQ(rf.length, 4);
    EXPECT_FALSE(rf.censored);
}

TEST(ReceptiveField, CensoredWhenDecayNeverReachesEpsilon) {
    const std::vector<float> d = {0.5f, 0.5f, 0.5f};  // total 1.5 < 3
    const ReceptiveField rf = receptive_field(d, -1.0, std::exp(-3.0), 2);
    EXPECT_TRUE(rf.censored);
    EXPECT_EQ(rf.length, 3);                               // ≥ t+1
    EXPECT_THROW(receptive_field(d, 1.0, 0.5, 2), Error);  // A must be negative
}

TEST(ReceptiveField, FilteredTokensExtendTheField) {
    // LongMamba's zeroed Δ (filtered tokens) do not decay the state: the field grows.
    const std::vector<float> plain = {1, 1, 1, 1, 1, 1};
    const std::vector<float> filtered = {1, 1, 0, 0, 0, 1};
    const double eps = std::exp(-2.5);
    EXPECT_EQ(receptive_field(plain, -1.0, eps, 5).length, 3);
    EXPECT_EQ(receptive_field(filtered, -1.0, eps, 5).length, 6);
}

namespace {

// Random Δ (T × C) with dyadic values so prefix differences are exact in double.
std::vector<float> dyadic_delta(int64_t T, int64_t C, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> U(0, 8);
    std::vector<float> d(static_cast<size_t>(T * C));
    for (float& x : d) x = static_cast<float>(U(rng)) / 8.0f;
    return d;
}

std::vector<float> channel_series(const std::vector<float>& d, int64_t T, int64_t C, int64_t c) {
    std::vector<float> s(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) s[static_cast<size_t>(t)] = d[static_cast<size_t>(t * C + c)];
    return s;
}

}  // namespace

TEST(ReceptiveFieldTracker, ExactAtStrideOne) {
    const int64_t T = 200, C = 3;
    const std::vector<float> d0 = dyadic_delta(T, C, 1), d1 = dyadic_delta(T, C, 2);
    const std::vector<std::vector<double>> rate = {{-0.5, -1.0, -0.01}, {-2.0, -0.25, -1.5}};
    auto tr = ReceptiveFieldTracker::with_stride(rate, 1);
    // feed in uneven blocks
    for (int64_t t0 = 0; t0 < T; t0 += 37) {
        const int64_t rows = std::min<int64_t>(37, T - t0);
        tr.add(0, rows, d0.data() + t0 * C, C, nullptr);
        tr.add(1, rows, d1.data() + t0 * C, C, nullptr);
    }
    tr.finish(T);
    const double eps = 0.05;
    for (int layer = 0; layer < 2; ++layer)
        for (int64_t c = 0; c < C; ++c) {
            const std::vector<float> s = channel_series(layer ? d1 : d0, T, C, c);
            for (int64_t t : {0, 1, 17, 99, 150, 199}) {
                const ReceptiveField want = receptive_field(s, rate[layer][c], eps, t);
                const ReceptiveField got = tr.at(layer, c, t, eps);
                EXPECT_EQ(got.length, want.length) << layer << " " << c << " " << t;
                EXPECT_EQ(got.upper, want.length);
                EXPECT_EQ(got.censored, want.censored);
            }
        }
    // the very slow channel (A = -0.01) cannot reach ε = 0.05 (needs ΣΔ > 300 > 200 tokens·1.0): censored
    EXPECT_TRUE(tr.at(0, 2, T - 1, eps).censored);
}

TEST(ReceptiveFieldTracker, IntervalContainsExactValueAtStrideAboveOne) {
    const int64_t T = 500, C = 4;
    const std::vector<float> d = dyadic_delta(T, C, 3);
    const std::vector<std::vector<double>> rate = {{-0.05, -0.2, -1.0, -0.1}};
    const std::vector<int64_t> queries = {63, 250, 333};
    const int64_t stride = 16;
    auto tr = ReceptiveFieldTracker::with_stride(rate, stride, queries);
    std::vector<int64_t> pos(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) pos[static_cast<size_t>(t)] = t;
    tr.add(0, T, d.data(), C, pos.data());
    tr.finish(T);
    const double eps = 0.01;
    for (int64_t c = 0; c < C; ++c) {
        const std::vector<float> s = channel_series(d, T, C, c);
        for (int64_t t : {int64_t{63}, int64_t{250}, int64_t{333}, T - 1, int64_t{15}, int64_t{255}}) {
            const ReceptiveField want = receptive_field(s, rate[0][c], eps, t);
            const ReceptiveField got = tr.at(0, c, t, eps);
            EXPECT_EQ(got.censored, want.censored) << c << " " << t;
            if (want.censored) continue;
            EXPECT_LE(got.length, want.length) << c << " " << t;
            EXPECT_GE(got.upper, want.length) << c << " " << t;
            EXPECT_LT(got.upper - got.length, stride);
        }
    }
    EXPECT_THROW(tr.at(0, 0, 100, eps), Error);  // neither requested nor on a checkpoint
}

TEST(ReceptiveFieldTracker, MissingPositionsCountAsZeroDelta) {
    // Decimated positions (absent) do not decay the state, exactly like Δ = 0.
    const std::vector<std::vector<double>> rate = {{-1.0}};
    auto sparse = ReceptiveFieldTracker::with_stride(rate, 1);
    const std::vector<float> kept = {1, 1, 1};
    const std::vector<int64_t> pos = {0, 1, 5};
    sparse.add(0, 3, kept.data(), 1, pos.data());
    sparse.finish(6);
    const std::vector<float> dense = {1, 1, 0, 0, 0, 1};
    const double eps = std::exp(-2.5);
    EXPECT_EQ(sparse.at(0, 0, 5, eps).length, receptive_field(dense, -1.0, eps, 5).length);
}

TEST(ReceptiveFieldTracker, StrideFitsTheMemoryBudget) {
    const std::vector<std::vector<double>> rate(4, std::vector<double>(1000, -1.0));
    // 4·1000·8 = 32 kB per checkpoint; 1 MB budget → 32 checkpoints → stride ≥ 1e6/31
    ReceptiveFieldTracker tr(rate, int64_t{1000000}, {}, int64_t{1} << 20);
    EXPECT_GE(tr.stride(), 1000000 / 31);
    EXPECT_LE((1000000 / tr.stride() + 1) * 4 * 1000 * 8, int64_t{1} << 20);
    ReceptiveFieldTracker small(rate, int64_t{10}, {}, int64_t{1} << 20);
    EXPECT_EQ(small.stride(), 1);
}
