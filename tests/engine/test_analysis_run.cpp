// run_analysis on small random models: every method's numbers are sane, LongMamba's filter shows up in the
// detail channels, defaults resolve, cancellation propagates.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

#include "engine/tiny_model.h"
#include "mambascope/analysis.h"
#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/model.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

using test::tiny;

std::vector<int32_t> random_ids(int n, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (auto& i : ids) i = static_cast<int32_t>(rng() % 37u);
    return ids;
}

fs::path temp_dir() {
    // One folder per process: ctest runs the tests of both architectures at once, and they write the same
    // names.
    const fs::path d = fs::temp_directory_path() / ("mambascope_test_analysis-" + std::to_string(::getpid()));
    fs::create_directories(d);
    return d;
}

// A calibration of `m` saved to a temp file.
fs::path calibration_file(const Model& m, const std::string& name) {
    CalibrationParams p;
    p.samples = 2;
    p.lengths = {64, 128, 256, 512};
    const Calibration cal = calibrate(m, random_ids(300, 6), p);
    const fs::path f = temp_dir() / name;
    save_calibration(f, cal);
    return f;
}

class AnalysisBothArchs : public ::testing::TestWithParam<Arch> {};

}  // namespace

TEST_P(AnalysisBothArchs, EveryMethodProducesSaneNumbers) {
    auto m = random_model(tiny(GetParam()), 31);
    const int64_t L = m->config.n_layer, C = m->config.channels();
    RunInput in;
    in.ids = random_ids(300, 1);
    AnalysisRequest req;
    req.methods = {Method::Vanilla, Method::LongMamba, Method::DeciMamba};
    req.calibration_path = calibration_file(*m, "sane.h5");
    req.rf_positions = {100, 299};
    req.attention_tokens = 32;
    req.deci.L_base = 100;
    req.deci.resp_len = 20;
    const RunResult r = run_analysis(*m, in, req);
    ASSERT_EQ(r.methods.size(), 3u);
    EXPECT_EQ(r.window_begin, 0);
    EXPECT_EQ(r.window_end, 300);
    ASSERT_FALSE(r.methods[0].channels.empty());  // default detail channels chosen
    for (const auto& mr : r.methods) {
        SCOPED_TRACE(method_name(mr.method));
        if (mr.method != Method::DeciMamba) ASSERT_EQ(mr.nll.size(), 299u);
        ASSERT_EQ(mr.nll.size(), mr.nll_positions.size());
        for (float v : mr.nll) ASSERT_TRUE(std::isfinite(v) && v > 0);
        ASSERT_EQ(mr.log_decay.shape, (std::vector<int64_t>{L, C}));
        for (double v : mr.log_decay.data) ASSERT_LE(v, 0.0);
        for (double v : mr.delta_sum.data) ASSERT_GE(v, 0.0);
        ASSERT_EQ(mr.receptive_field.shape, (std::vector<int64_t>{L, 2, C}));
        for (int64_t l = 0; l < L; ++l)
            for (int64_t c = 0; c < C; ++c) {
                const int64_t rf = mr.receptive_field.data[static_cast<size_t>((l * 2 + 1) * C + c)];
                ASSERT_GE(rf, 1);
                ASSERT_LE(rf, 300);
            }
        for (const auto& ct : mr.channels) {
            ASSERT_EQ(ct.delta_raw.size(), 300u);
            ASSERT_EQ(ct.cum_log_decay.size(), 300u);
            for (size_t t = 1; t < ct.cum_log_decay.size(); ++t)
                ASSERT_LE(ct.cum_log_decay[t], ct.cum_log_decay[t - 1] + 1e-6f);  // decay only accumulates
        }
        ASSERT_EQ(mr.attention.size(), mr.channels.size());
        for (const auto& am : mr.attention) {
            EXPECT_EQ(am.begin, 300 - 32);
            if (mr.method != Method::DeciMamba) ASSERT_EQ(am.alpha.shape, (std::vector<int64_t>{32, 32}));
            for (float v : am.alpha.data) ASSERT_LE(std::abs(v), 1.0f + 1e-6f);  // AbsMax normalisation
        }
    }
    const MethodResult& van = *r.find(Method::Vanilla);
    for (int64_t v : van.critical_count.data) EXPECT_EQ(v, 0);  // unfiltered: nothing is "critical"
    for (const auto& ct : van.channels) {
        EXPECT_EQ(ct.delta_raw, ct.delta_used);
        EXPECT_TRUE(std::isinf(ct.threshold) && ct.threshold < 0);
    }
    // The last-layer cumulative decay equals A_c·Σ Δ_used of the summary.
    const MethodResult& deci = *r.find(Method::DeciMamba);
    EXPECT_FALSE(deci.kept_positions.empty());
    EXPECT_LT(deci.kept_positions.size(), 300u);
    EXPECT_EQ(deci.kept_positions.back(), 299);
    // Global mask is the calibration's (§8.4), the same for every method.
    EXPECT_EQ(van.global_mask.data, r.find(Method::LongMamba)->global_mask.data);
}

TEST_P(AnalysisBothArchs, GlobalKeepCountSumsTheCriticalTokensOfGlobalChannels) {
    auto m = random_model(tiny(GetParam()), 33);
    RunInput in;
    in.ids = random_ids(300, 4);
    AnalysisRequest req;
    req.methods = {Method::Vanilla, Method::LongMamba, Method::DeciMamba};
    req.calibration_path = calibration_file(*m, "keep.h5");
    req.c = 1e-30;  // global if log_decay > ln c = -69: many global channels in a tiny random model
    req.attention = false;
    req.deci.L_base = 100;
    req.deci.resp_len = 20;
    const RunResult r = run_analysis(*m, in, req);
    const MethodResult& lm = *r.find(Method::LongMamba);
    int64_t n_global = 0;
    for (uint8_t g : lm.global_mask.data) n_global += g;
    ASSERT_GT(n_global, 0);
    ASSERT_EQ(lm.params.at("filtered"), 1.0);  // T = 300 > train_len 64
    // Vanilla: every global channel uses every token.
    const MethodResult& van = *r.find(Method::Vanilla);
    ASSERT_EQ(van.global_keep_count.size(), 300u);
    for (int64_t k : van.global_keep_count) ASSERT_EQ(k, n_global);
    // LongMamba: per token at most n_global, some fewer, and the total is the critical tokens of all global
    // channels (critical_count, counted by the probe independently).
    ASSERT_EQ(lm.global_keep_count.size(), 300u);
    int64_t total = 0, fewer = 0;
    for (int64_t k : lm.global_keep_count) {
        ASSERT_GE(k, 0);
        ASSERT_LE(k, n_global);
        total += k;
        fewer += k < n_global;
    }
    int64_t critical = 0;
    for (size_t i = 0; i < lm.critical_count.data.size(); ++i)
        if (lm.global_mask.data[i]) critical += lm.critical_count.data[i];
    EXPECT_EQ(total, critical);
    EXPECT_GT(fewer, 0);
    // DeciMamba: decimated positions are absent from later layers, so they count fewer channels there.
    const MethodResult& deci = *r.find(Method::DeciMamba);
    ASSERT_EQ(deci.global_keep_count.size(), 300u);
    const int64_t C = m->config.channels();
    int64_t global_after = 0;  // global channels in the decimation layer (n_layer / 2) and later
    for (int64_t l = m->config.n_layer / 2; l < m->config.n_layer; ++l)
        for (int64_t c = 0; c < C; ++c) global_after += lm.global_mask.data[static_cast<size_t>(l * C + c)];
    if (global_after > 0)
        EXPECT_LT(*std::min_element(deci.global_keep_count.begin(), deci.global_keep_count.end()), n_global);
    // Without a calibration there are no global channels and no count.
    AnalysisRequest plain;
    plain.methods = {Method::Vanilla};
    plain.attention = false;
    EXPECT_TRUE(run_analysis(*m, in, plain).methods[0].global_keep_count.empty());
}

TEST_P(AnalysisBothArchs, LongMambaWithHugeThresholdZeroesAGlobalChannel) {
    auto m = random_model(tiny(GetParam()), 32);
    const int64_t C = m->config.channels();
    CalibrationParams p;
    p.samples = 2;
    p.lengths = {64, 128, 256, 512};
    Calibration cal = calibrate(*m, random_ids(300, 6), p);
    const int layer = 1;
    const int64_t ch = 3;
    cal.log_decay[static_cast<size_t>(layer * C + ch)] = -1e-3;  // global (> ln 0.05)
    for (int64_t li = 0; li < cal.n_lengths(); ++li)
        cal.thresholds[static_cast<size_t>((layer * cal.n_lengths() + li) * C + ch)] = 1e30;
    const fs::path f = temp_dir() / "huge.h5";
    save_calibration(f, cal);
    RunInput in;
    in.ids = random_ids(200, 2);
    AnalysisRequest req;
    req.methods = {Method::Vanilla, Method::LongMamba};
    req.calibration_path = f;
    req.channels = {{layer, ch}, {0, 0}};
    req.window_begin = 50;
    req.window_end = 150;
    req.attention = false;
    const RunResult r = run_analysis(*m, in, req);
    const MethodResult& lm = *r.find(Method::LongMamba);
    ASSERT_EQ(lm.channels.size(), 2u);
    const ChannelTrace& ct = lm.channels[0];
    EXPECT_TRUE(ct.global);
    EXPECT_FLOAT_EQ(ct.threshold, 1e30f);
    ASSERT_EQ(ct.delta_used.size(), 100u);
    for (size_t t = 0; t < 100; ++t) {
        EXPECT_GT(ct.delta_raw[t], 0.0f);
        EXPECT_EQ(ct.delta_used[t], 0.0f);
        EXPECT_EQ(ct.critical[t], 0);
    }
    for (float v : ct.cum_log_decay) EXPECT_EQ(v, 0.0f);  // no decay at all
    EXPECT_EQ(lm.delta_sum.at2(layer, ch), 0.0);
    EXPECT_EQ(lm.critical_count.at2(layer, ch), 0);
    // The same channel decays in the vanilla run.
    EXPECT_LT(r.find(Method::Vanilla)->channels[0].cum_log_decay.back(), 0.0f);
    EXPECT_GT(lm.params.at("key_length"), 0.0);
}

TEST(Analysis, CancellationPropagates) {
    auto m = random_model(tiny(Arch::Mamba2), 33);
    RunInput in;
    in.ids = random_ids(100, 3);
    AnalysisRequest req;
    req.methods = {Method::Vanilla};
    EXPECT_THROW(run_analysis(*m, in, req, [](double, std::string_view) { return false; }), Cancelled);
}

TEST(Analysis, LongMambaWithoutCalibrationAndBadChannelAreClearErrors) {
    auto m = random_model(tiny(Arch::Mamba2), 34);
    RunInput in;
    in.ids = random_ids(50, 4);
    AnalysisRequest req;
    req.methods = {Method::LongMamba};
    try {
        run_analysis(*m, in, req);
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("calibration"), std::string::npos);
    }
    req.methods = {Method::Vanilla};
    req.channels = {{7, 0}};
    EXPECT_THROW(run_analysis(*m, in, req), Error);
}

// run_analysis keeps the calibration's log decay ([n_layer, C]) for the GUI's Global ratio view.
TEST(Analysis, DemoCalibrationLogDecayIsKeptInTheResult) {
    const fs::path res = MAMBASCOPE_RESOURCES_DIR;
    auto m = load_model(res / "models" / "demo-mamba2");
    const fs::path cal_path = res / "calibration" / "demo-mamba2.h5";
    const Calibration cal = load_calibration(cal_path);
    RunInput in;
    in.ids = random_ids(40, 9);
    AnalysisRequest req;
    req.methods = {Method::Vanilla};
    req.calibration_path = cal_path;
    req.attention = false;
    const RunResult r = run_analysis(*m, in, req);
    ASSERT_EQ(r.calibration_log_decay.shape, (std::vector<int64_t>{r.n_layer, r.channels}));
    EXPECT_EQ(r.calibration_log_decay.data, cal.log_decay);
    // The per-layer ratio agrees with the run's global mask (both are log_decay > ln c, §8.4).
    const auto ratio = global_ratio_per_layer(r.calibration_log_decay, req.c);
    const auto& mask = r.find(Method::Vanilla)->global_mask;
    for (int l = 0; l < r.n_layer; ++l) {
        int64_t n = 0;
        for (int64_t c = 0; c < r.channels; ++c) n += mask.at2(l, c);
        EXPECT_DOUBLE_EQ(ratio[size_t(l)], 100.0 * double(n) / double(r.channels)) << "layer " << l;
    }
    // Without a calibration the field stays empty.
    req.calibration_path.clear();
    const RunResult r2 = run_analysis(*m, in, req);
    EXPECT_TRUE(r2.calibration_log_decay.data.empty());
    EXPECT_TRUE(r2.calibration_log_decay.shape.empty());
}

TEST(Analysis, GlobalRatioPerLayerCountsChannelsAboveLnC) {
    // ln 0.05 ≈ −2.996, ln 1e-4 ≈ −9.21.
    Array<double> a;
    a.shape = {3, 4};
    a.data = {-1.0, -2.0, -5.0,  -20.0,   // layer 0: 2 of 4 above ln 0.05, 3 of 4 above ln 1e-4
              -3.0, -2.9, -2.99, -100.0,  // layer 1: −2.9, −2.99 above ln 0.05 (−3.0 is not)
              -1e9, -1e9, -1e9,  -1e9};   // layer 2: none
    const auto r = global_ratio_per_layer(a, 0.05);
    ASSERT_EQ(r.size(), 3u);
    EXPECT_DOUBLE_EQ(r[0], 50.0);
    EXPECT_DOUBLE_EQ(r[1], 50.0);
    EXPECT_DOUBLE_EQ(r[2], 0.0);
    const auto r4 = global_ratio_per_layer(a, 1e-4);
    EXPECT_DOUBLE_EQ(r4[0], 75.0);
    EXPECT_DOUBLE_EQ(r4[1], 75.0);
    EXPECT_DOUBLE_EQ(r4[2], 0.0);
    // Strictly greater: a channel exactly at ln c is local.
    Array<double> e;
    e.shape = {1, 2};
    e.data = {std::log(0.5), std::log(0.5) + 1e-9};
    EXPECT_DOUBLE_EQ(global_ratio_per_layer(e, 0.5)[0], 50.0);
    // A tiny c makes almost every channel global (1e-300: ln c ≈ −690.8).
    EXPECT_DOUBLE_EQ(global_ratio_per_layer(a, 1e-300)[2], 0.0);
    EXPECT_DOUBLE_EQ(global_ratio_per_layer(a, 1e-300)[1], 100.0);
    // c outside (0, 1) and a non-2-D array are errors.
    for (double c : {0.0, -0.1, 1.0, 1.5, std::nan("")})
        EXPECT_THROW(global_ratio_per_layer(a, c), Error) << c;
    Array<double> flat;
    flat.shape = {4};
    flat.data = {0, 0, 0, 0};
    EXPECT_THROW(global_ratio_per_layer(flat, 0.05), Error);
}

INSTANTIATE_TEST_SUITE_P(Archs, AnalysisBothArchs, ::testing::Values(Arch::Mamba1, Arch::Mamba2));
