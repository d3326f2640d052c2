// LongMamba calibration maths and filter policy (method doc §2.3, §8.2–§8.5) on hand-made Δ.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/longmamba.h"

using namespace mambascope;

namespace {

// Δ (T × 1) of one channel as floats.
std::vector<float> column(std::initializer_list<float> v) {
    return std::vector<float>(v);
}

}  // namespace

TEST(LongMambaCalibration, ThresholdMatchesWorkedExample) {
    // §2.3: u = [4,3,2,1], S = 10, λ = 8 → v = [4, 3.75, 3.25, 2.75, ...], i* = 2, K = 3, θ = 2.75, α = 0.375
    const std::vector<double> u = {4, 3, 2, 1};
    const ThresholdAlpha ta = threshold_alpha(u, 10.0, 8);
    EXPECT_DOUBLE_EQ(ta.threshold, 2.75);
    EXPECT_DOUBLE_EQ(ta.alpha, 0.375);
}

TEST(LongMambaCalibration, ResampleMatchesTorchLinearExample) {
    const std::vector<double> u = {4, 3, 2, 1};
    const std::vector<double> v = resample_linear(u, 8);
    const std::vector<double> expect = {4, 3.75, 3.25, 2.75, 2.25, 1.75, 1.25, 1};
    ASSERT_EQ(v.size(), expect.size());
    for (size_t i = 0; i < v.size(); ++i) EXPECT_DOUBLE_EQ(v[i], expect[i]) << i;
}

TEST(LongMambaCalibration, ResampleMatchesDirectFormulaOnRandomInput) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<double> U(0, 1);
    for (int L : {1, 2, 5, 17}) {
        std::vector<double> u(static_cast<size_t>(L));
        for (double& x : u) x = U(rng);
        for (int lam : {1, 3, 7, 40, 101}) {
            const std::vector<double> v = resample_linear(u, lam);
            for (int i = 0; i < lam; ++i) {
                double s = (i + 0.5) * L / lam - 0.5;
                if (s < 0) s = 0;
                const int i0 = static_cast<int>(std::floor(s));
                const int i1 = std::min(i0 + 1, L - 1);
                const double f = s - i0;
                EXPECT_NEAR(v[static_cast<size_t>(i)],
                            (1 - f) * u[static_cast<size_t>(i0)] + f * u[static_cast<size_t>(i1)], 1e-12)
                    << "L=" << L << " λ=" << lam << " i=" << i;
            }
        }
    }
}

TEST(LongMambaCalibration, LengthsUpToTrainLenAreIdentity) {
    const std::vector<double> u = {4, 3, 2, 1};
    for (int64_t lam : {1, 3, 4}) {
        const ThresholdAlpha ta = threshold_alpha(u, 10.0, lam);
        EXPECT_EQ(ta.threshold, 0.0);
        EXPECT_EQ(ta.alpha, 1.0);
    }
}

TEST(LongMambaCalibration, NoCrossingGivesFirstIndexAndGuardsLastIndex) {
    // All-zero Δ: cum never exceeds S = 0 → i* = 0, K = 1, θ = v[1] = 0, α = 1/λ.
    const std::vector<double> z = {0, 0, 0};
    ThresholdAlpha ta = threshold_alpha(z, 0.0, 6);
    EXPECT_EQ(ta.threshold, 0.0);
    EXPECT_DOUBLE_EQ(ta.alpha, 1.0 / 6);
    // Crossing at the last index (S just below the total of v): K = λ → θ = v[λ−1] (guard), α = 1.
    const std::vector<double> u = {1, 1};  // v = [1,1,1,1] for λ = 4, cum = 1,2,3,4
    ta = threshold_alpha(u, 3.5, 4);
    EXPECT_DOUBLE_EQ(ta.threshold, 1.0);
    EXPECT_DOUBLE_EQ(ta.alpha, 1.0);
}

TEST(LongMambaCalibration, ClampTopFlattensTheTopFraction) {
    // n = 10, sc = 0.2 → k = 2, v = 2nd largest = 9 → the 10 becomes 9, the rest unchanged
    const std::vector<float> d = {1, 10, 2, 9, 3, 8, 4, 7, 5, 6};
    const std::vector<double> c = clamp_top(d, 0.2);
    for (size_t i = 0; i < d.size(); ++i) EXPECT_EQ(c[i], std::min<double>(d[i], 9.0)) << i;
    // k = max(1, int(n·sc)): a tiny ratio still keeps k = 1 → the maximum itself, nothing changes
    const std::vector<double> c1 = clamp_top(d, 0.01);
    for (size_t i = 0; i < d.size(); ++i) EXPECT_EQ(c1[i], d[i]);
    EXPECT_THROW(clamp_top(d, 0.0), Error);
}

TEST(LongMambaCalibration, WindowStatsMamba2UsesClampedSum) {
    // T = 4, C = 2 (row-major T × C); A = [-0.5, -2]; sc = 0.25 → k = 1: clamp to the max (no change)
    const std::vector<float> delta = {4, 1, 3, 1, 2, 1, 1, 1};
    const std::vector<float> A = {-0.5f, -2.0f};
    const std::vector<int64_t> lengths = {2, 8};
    const WindowStats w = window_stats(4, 2, delta.data(), 2, A, 1, lengths, 0.25, M1Decay::Slowest);
    EXPECT_DOUBLE_EQ(w.delta_sum[0], 10.0);
    EXPECT_DOUBLE_EQ(w.delta_sum[1], 4.0);
    EXPECT_DOUBLE_EQ(w.log_decay[0], -5.0);  // A·ΣΔ̃
    EXPECT_DOUBLE_EQ(w.log_decay[1], -8.0);
    // λ = 2 ≤ T: identity; λ = 8, channel 0: the worked example
    EXPECT_EQ(w.threshold[0 * 2 + 0], 0.0);
    EXPECT_EQ(w.alpha[0 * 2 + 0], 1.0);
    EXPECT_DOUBLE_EQ(w.threshold[1 * 2 + 0], 2.75);
    EXPECT_DOUBLE_EQ(w.alpha[1 * 2 + 0], 0.375);
    // channel 1, constant Δ = 1: v = 1s, cum crosses 4 at i = 4 → K = 5, θ = 1, α = 5/8
    EXPECT_DOUBLE_EQ(w.threshold[1 * 2 + 1], 1.0);
    EXPECT_DOUBLE_EQ(w.alpha[1 * 2 + 1], 5.0 / 8);
}

TEST(LongMambaCalibration, WindowStatsMamba1SlowestAndMean) {
    // One channel, N = 2 states A = [-1, -3], Δ̃ = [0.5, 1] (sc = 1: k = int(2·1) = 2 → 2nd largest = 0.5 →
    // clamp!) use sc = 0.5 → k = 1 → clamp at the max 1.0: Δ̃ unchanged
    const std::vector<float> delta = {0.5f, 1.0f};
    const std::vector<float> A = {-1.0f, -3.0f};
    const std::vector<int64_t> lengths = {1000};
    const WindowStats slow = window_stats(2, 1, delta.data(), 1, A, 2, lengths, 0.5, M1Decay::Slowest);
    EXPECT_DOUBLE_EQ(slow.log_decay[0], -1.5);  // max_n A · ΣΔ̃ = -1 · 1.5
    const WindowStats mean = window_stats(2, 1, delta.data(), 1, A, 2, lengths, 0.5, M1Decay::Mean);
    const double expect =
        std::log(0.5 * (std::exp(-0.5) + std::exp(-1.5))) + std::log(0.5 * (std::exp(-1.0) + std::exp(-3.0)));
    EXPECT_NEAR(mean.log_decay[0], expect, 1e-12);
}

TEST(LongMambaCalibration, Mamba1MeanDecayIsStableForHugeDelta) {
    // exp(Δ·A) underflows to 0 in double for Δ·A = -2000; the stable form stays finite.
    const std::vector<float> delta = {1000.0f};
    const std::vector<float> A = {-2.0f, -4.0f};
    const WindowStats w =
        window_stats(1, 1, delta.data(), 1, A, 2, std::vector<int64_t>{1}, 1.0, M1Decay::Mean);
    EXPECT_TRUE(std::isfinite(w.log_decay[0]));
    EXPECT_NEAR(w.log_decay[0], -2000.0 + std::log(0.5), 1e-9);
}

TEST(LongMambaCalibration, AggregateMeanUsesLogMeanExpAndMaxIsElementwise) {
    WindowStats a, b;
    for (WindowStats* w : {&a, &b}) {
        w->channels = 1;
        w->n_lengths = 1;
    }
    a.log_decay = {-1000.0};  // exp underflows naively; log-mean-exp must still work
    b.log_decay = {-1002.0};
    a.delta_sum = {2};
    b.delta_sum = {4};
    a.threshold = {0.5};
    b.threshold = {1.5};
    a.alpha = {0.2};
    b.alpha = {0.6};
    StatsAggregator mean(1, 1, Aggregate::Mean);
    mean.add(a);
    mean.add(b);
    const WindowStats m = mean.result();
    EXPECT_NEAR(m.log_decay[0], -1000.0 + std::log(0.5 * (1 + std::exp(-2.0))), 1e-9);
    EXPECT_DOUBLE_EQ(m.delta_sum[0], 3.0);
    EXPECT_DOUBLE_EQ(m.threshold[0], 1.0);
    EXPECT_DOUBLE_EQ(m.alpha[0], 0.4);
    StatsAggregator mx(1, 1, Aggregate::Max);
    mx.add(a);
    mx.add(b);
    const WindowStats x = mx.result();
    EXPECT_EQ(x.log_decay[0], -1000.0);
    EXPECT_EQ(x.delta_sum[0], 4.0);
    EXPECT_EQ(x.threshold[0], 1.5);
    EXPECT_EQ(x.alpha[0], 0.6);
    StatsAggregator empty(1, 1, Aggregate::Mean);
    EXPECT_THROW(empty.result(), Error);
}

TEST(LongMambaCalibration, OfficialLengthTableAndKeys) {
    const std::vector<int64_t> l = official_lengths();
    ASSERT_EQ(l.size(), 25u);
    EXPECT_EQ(l.front(), 1000);
    EXPECT_EQ(l[8], 10000);
    EXPECT_EQ(l.back(), 192000);
    EXPECT_EQ(length_key(1000), "1k");
    EXPECT_EQ(length_key(192000), "192k");
}

TEST(LongMambaFilter, NearestLengthTiesGoToTheSmallerLength) {
    const std::vector<int64_t> l = official_lengths();
    EXPECT_EQ(l[nearest_length_index(l, 3500)], 3000);  // exactly between 3k and 4k
    EXPECT_EQ(l[nearest_length_index(l, 3501)], 4000);
    EXPECT_EQ(l[nearest_length_index(l, 9000)], 8000);      // between 8k and 10k
    EXPECT_EQ(l[nearest_length_index(l, 500000)], 192000);  // above the table → last
    EXPECT_EQ(l[nearest_length_index(l, 10)], 1000);
}

TEST(LongMambaFilter, GlobalMaskIsLogDecayAboveLnC) {
    const std::vector<double> ld = {std::log(0.05) + 1e-9, std::log(0.05), -100.0, -0.1};
    const std::vector<uint8_t> m = global_mask(ld, 0.05);
    EXPECT_EQ(m, (std::vector<uint8_t>{1, 0, 0, 1}));
}

namespace {

// 2 layers × 3 channels × 2 lengths (2000, 4000), train_len 2000.
Calibration toy_calibration() {
    Calibration cal;
    cal.n_layer = 2;
    cal.channels = 3;
    cal.lengths = {2000, 4000};
    cal.params.train_len = 2000;
    cal.params.lengths = cal.lengths;
    cal.log_decay = {-0.1,  -10.0, -1.0,    // layer 0: global, local, global (c = 0.05: ln c ≈ -3.0)
                     -20.0, -0.5,  -30.0};  // layer 1: local, global, local
    cal.delta_sum.assign(6, 1.0);
    cal.thresholds.resize(2 * 2 * 3);
    for (int l = 0; l < 2; ++l)
        for (int li = 0; li < 2; ++li)
            for (int c = 0; c < 3; ++c)
                cal.thresholds[static_cast<size_t>((l * 2 + li) * 3 + c)] = 100 * l + 10 * li + c + 1;
    cal.alpha.assign(12, 0.5);
    return cal;
}

}  // namespace

TEST(LongMambaFilter, ThresholdsAreBTimesThetaOnGlobalChannelsOnly) {
    const Calibration cal = toy_calibration();
    FilterParams fp;
    fp.c = 0.05;
    fp.b = 2.0;
    const DeltaFilter f = make_longmamba_filter(cal, fp, 5000);  // nearest λ = 4000 (li = 1)
    ASSERT_EQ(f.threshold.size(), 2u);
    const float ninf = -std::numeric_limits<float>::infinity();
    EXPECT_FLOAT_EQ(f.threshold[0][0], 2.0f * 11);
    EXPECT_EQ(f.threshold[0][1], ninf);
    EXPECT_FLOAT_EQ(f.threshold[0][2], 2.0f * 13);
    EXPECT_EQ(f.threshold[1][0], ninf);
    EXPECT_FLOAT_EQ(f.threshold[1][1], 2.0f * 112);
    EXPECT_EQ(f.threshold[1][2], ninf);
}

TEST(LongMambaFilter, InactiveAtOrBelowActivationLength) {
    const Calibration cal = toy_calibration();
    EXPECT_TRUE(make_longmamba_filter(cal, FilterParams{}, 2000).empty());  // default: train_len
    EXPECT_FALSE(make_longmamba_filter(cal, FilterParams{}, 2001).empty());
    FilterParams fp;
    fp.activate_above = 3000;
    EXPECT_TRUE(make_longmamba_filter(cal, fp, 3000).empty());
    EXPECT_FALSE(make_longmamba_filter(cal, fp, 3001).empty());
}

TEST(LongMambaFilter, CalibrationShapeMismatchIsAClearError) {
    const Calibration cal = toy_calibration();
    ModelConfig cfg;
    cfg.arch = Arch::Mamba2;
    cfg.n_layer = 2;
    cfg.n_heads = 3;
    EXPECT_NO_THROW(check_calibration_matches(cal, cfg));
    cfg.n_heads = 4;
    try {
        check_calibration_matches(cal, cfg);
        FAIL() << "expected an Error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("2 layers × 3 channels"), std::string::npos) << e.what();
    }
}

TEST(LongMambaCalibration, WindowStartsFollowTheOfficialOffsetsAndCapSamples) {
    // P = 10000, L = 2000, 4 samples: int(2500·i + 10)
    EXPECT_EQ(calibration_window_starts(10000, 2000, 4), (std::vector<int64_t>{10, 2510, 5010, 7510}));
    // 100 samples of a 2010-token stream: only one window fits
    EXPECT_EQ(calibration_window_starts(2010, 2000, 100), (std::vector<int64_t>{10}));
    EXPECT_THROW(calibration_window_starts(2009, 2000, 100), Error);
}
