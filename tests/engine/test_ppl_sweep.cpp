// Perplexity sweeps (the PG19 protocol): window placement, scoring of the tail, methods, CSV round trip.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "mambascope/error.h"
#include "mambascope/ppl_sweep.h"
#include "cli_runner.h"

using namespace mambascope;

namespace {

std::shared_ptr<const Model> small_model() {
    ModelConfig c;
    c.arch = Arch::Mamba1;
    c.d_model = 16;
    c.n_layer = 2;
    c.vocab_size = 29;
    c.d_inner = 32;
    c.d_state = 4;
    c.dt_rank = 2;
    c.d_conv = 4;
    c.train_len = 16;
    return random_model(c, 21);
}

std::vector<int32_t> doc(int n) {
    std::mt19937 rng(4);
    std::vector<int32_t> ids(n);
    for (auto& i : ids) i = int32_t(rng() % 29);
    return ids;
}

// A calibration with the given log decay for every channel and one threshold for every length.
Calibration flat_calibration(const Model& m, double log_decay, double threshold) {
    Calibration cal;
    cal.params.train_len = 16;
    cal.n_layer = m.config.n_layer;
    cal.channels = m.config.channels();
    cal.arch = "mamba";
    cal.lengths = {16, 32, 64};
    cal.params.lengths = cal.lengths;
    const size_t LC = size_t(cal.n_layer * cal.channels);
    cal.log_decay.assign(LC, log_decay);
    cal.delta_sum.assign(LC, 1.0);
    cal.thresholds.assign(LC * 3, threshold);
    cal.alpha.assign(LC * 3, 1.0);
    return cal;
}

}  // namespace

TEST(PplSweep, WindowsAreSpreadEvenlyAndTooShortDocumentsAreErrors) {
    EXPECT_EQ(sweep_window_starts(100, 40, 4), (std::vector<int64_t>{0, 20, 40, 60}));
    EXPECT_EQ(sweep_window_starts(100, 100, 3), (std::vector<int64_t>{0, 0, 0}));
    EXPECT_EQ(sweep_window_starts(100, 40, 1), (std::vector<int64_t>{0}));
    EXPECT_THROW(sweep_window_starts(30, 40, 2), Error);
}

TEST(PplSweep, VanillaScoresTheLastTokensOfEachWindow) {
    auto m = small_model();
    auto d = doc(200);
    PplSweepParams p;
    p.lengths = {40};
    p.windows = 2;
    p.predict = 10;
    p.methods = {Method::Vanilla};
    auto pts = run_ppl_sweep(*m, d, p);
    ASSERT_EQ(pts.size(), 1u);
    EXPECT_EQ(pts[0].tokens_scored, 20);
    // Window 2 starts at 160: mean NLL of positions 29..38 from a full-NLL forward of that window.
    HeadRequest head;
    head.nll = true;
    auto res = run_forward(*m, std::span<const int32_t>(d.data() + 160, 40), {}, head);
    double s = 0;
    for (size_t i = 0; i < res.nll.size(); ++i)
        if (res.nll_positions[i] >= 29) s += res.nll[i];
    EXPECT_NEAR(pts[0].window_nll[1], s / 10, 1e-5);
    EXPECT_NEAR(pts[0].perplexity, std::exp(pts[0].mean_nll), 1e-9);
}

TEST(PplSweep, LongMambaWithOnlyLocalChannelsEqualsVanillaAndFilteringChangesIt) {
    auto m = small_model();
    auto d = doc(300);
    PplSweepParams p;
    p.lengths = {16, 64};
    p.windows = 2;
    p.predict = 8;
    p.methods = {Method::Vanilla, Method::LongMamba, Method::DeciMamba};
    auto local = flat_calibration(*m, -100.0, 1e9);  // every channel local → no filtering
    p.calibration = &local;
    auto a = run_ppl_sweep(*m, d, p);
    ASSERT_EQ(a.size(), 6u);
    EXPECT_DOUBLE_EQ(a[3].mean_nll, a[4].mean_nll);    // L = 64: vanilla == LongMamba
    auto global = flat_calibration(*m, -0.001, 0.05);  // every channel global, thresholds 0.05
    p.calibration = &global;
    auto b = run_ppl_sweep(*m, d, p);
    EXPECT_DOUBLE_EQ(b[0].mean_nll, b[1].mean_nll);  // L = 16 ≤ train_len: not activated
    EXPECT_NE(b[3].mean_nll, b[4].mean_nll);         // L = 64: filtered
    EXPECT_EQ(b[5].method, Method::DeciMamba);
    EXPECT_EQ(b[5].tokens_scored, 16);
}

TEST(PplSweep, LongMambaWithoutCalibrationIsAClearError) {
    auto m = small_model();
    auto d = doc(100);
    PplSweepParams p;
    p.lengths = {40};
    p.methods = {Method::LongMamba};
    EXPECT_THROW(run_ppl_sweep(*m, d, p), Error);
}

TEST(PplSweep, CsvRoundTrip) {
    std::vector<PplPoint> pts(2);
    pts[0].length = 1024;
    pts[0].method = Method::Vanilla;
    pts[0].windows = 10;
    pts[0].tokens_scored = 1000;
    pts[0].mean_nll = 1.25;
    pts[0].perplexity = std::exp(1.25);
    pts[1] = pts[0];
    pts[1].method = Method::LongMamba;
    pts[1].mean_nll = 1.5;
    auto path = mambascope::test::fresh_temp_dir("mambascope_test", "sweep") / "sweep.csv";
    write_ppl_csv(path, pts);
    auto back = read_ppl_csv(path);
    ASSERT_EQ(back.size(), 2u);
    EXPECT_EQ(back[1].method, Method::LongMamba);
    EXPECT_DOUBLE_EQ(back[1].mean_nll, 1.5);
    EXPECT_EQ(back[0].length, 1024);
    std::filesystem::remove(path);
    EXPECT_NE(format_ppl_table(pts).find("longmamba"), std::string::npos);
}
