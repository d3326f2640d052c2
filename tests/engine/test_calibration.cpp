// LongMamba calibration files (round trip, bad files) and the calibration driver on small random models.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/tiny_model.h"
#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "mambascope/h5.h"
#include "mambascope/longmamba.h"
#include "mambascope/model.h"
#include "cli_runner.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

fs::path temp_path(const std::string& name) {
    static const fs::path dir = mambascope::test::fresh_temp_dir("mambascope_test", "calibration");
    return dir / name;
}

Calibration small_calibration() {
    Calibration cal;
    cal.model_name = "toy";
    cal.arch = "mamba2";
    cal.n_layer = 2;
    cal.channels = 3;
    cal.lengths = {1000, 2000, 4000};
    cal.params.train_len = 2000;
    cal.params.samples = 7;
    cal.params.clamp_top = 0.15;
    cal.params.aggregate = Aggregate::Max;
    cal.params.m1_decay = M1Decay::Mean;
    cal.params.lengths = cal.lengths;
    cal.samples_used = 5;
    cal.stream_tokens = 12345;
    for (int i = 0; i < 6; ++i) {
        cal.log_decay.push_back(-0.5 * i);
        cal.delta_sum.push_back(1.0 + i);
    }
    for (int i = 0; i < 18; ++i) {
        cal.thresholds.push_back(0.01 * i);
        cal.alpha.push_back(1.0 / (1 + i));
    }
    return cal;
}

// Writes a calibration-like file by hand; `skip` omits one dataset, `bad_shape` writes /thresholds as [2, 3].
void write_custom(const fs::path& p, const std::string& skip, bool bad_shape, bool nan,
                  const std::string& format) {
    const Calibration cal = small_calibration();
    h5::Writer w(p);
    std::vector<double> ld = cal.log_decay;
    if (nan) ld[1] = std::numeric_limits<double>::quiet_NaN();
    if (skip != "/log_decay") w.write_f64("/log_decay", {2, 3}, ld.data());
    if (skip != "/delta_sum") w.write_f64("/delta_sum", {2, 3}, cal.delta_sum.data());
    if (skip != "/thresholds") {
        if (bad_shape)
            w.write_f64("/thresholds", {2, 3}, cal.thresholds.data());
        else
            w.write_f64("/thresholds", {2, 3, 3}, cal.thresholds.data());
    }
    if (skip != "/alpha") w.write_f64("/alpha", {2, 3, 3}, cal.alpha.data());
    if (skip != "/lengths") w.write_i64("/lengths", {3}, cal.lengths.data());
    const int64_t root = w.root();
    if (!format.empty()) h5::set_attr(root, "format", format);
    h5::set_attr(root, "format_version", int64_t{1});
    h5::set_attr(root, "n_layer", int64_t{2});
    h5::set_attr(root, "channels", int64_t{3});
    h5::set_attr(root, "train_len", int64_t{2000});
    h5::set_attr(root, "clamp_top", 0.1);
    h5::set_attr(root, "aggregate", std::string("mean"));
    h5::set_attr(root, "m1_decay", std::string("slowest"));
    h5::set_attr(root, "arch", std::string("mamba2"));
    w.commit();
}

std::string load_error(const fs::path& p) {
    try {
        load_calibration(p);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

using test::tiny;

std::vector<int32_t> random_ids(int n, int vocab, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (auto& i : ids) i = static_cast<int32_t>(rng() % static_cast<unsigned>(vocab));
    return ids;
}

// Records raw and used Δ of every layer as dense (T × C) arrays.
class DeltaRecorder : public ScanObserver {
  public:
    DeltaRecorder(int64_t n_layer, int64_t T, int64_t C)
        : T_(T),
          C_(C),
          raw(n_layer, std::vector<float>(T * C, -1)),
          used(n_layer, std::vector<float>(T * C, -1)) {}
    void on_delta(const DeltaBlock& r, const DeltaBlock& u) override {
        for (int64_t i = 0; i < r.rows; ++i)
            for (int64_t c = 0; c < C_; ++c) {
                raw[r.layer][r.positions[i] * C_ + c] = r.at(i, c);
                used[u.layer][u.positions[i] * C_ + c] = u.at(i, c);
            }
    }
    int64_t T_, C_;
    std::vector<std::vector<float>> raw, used;
};

class CalibrationBothArchs : public ::testing::TestWithParam<Arch> {};

}  // namespace

TEST(CalibrationFile, RoundTripKeepsEveryArrayAndParameter) {
    const Calibration cal = small_calibration();
    const fs::path p = temp_path("roundtrip.h5");
    save_calibration(p, cal);
    const Calibration back = load_calibration(p);
    EXPECT_EQ(back.model_name, "toy");
    EXPECT_EQ(back.arch, "mamba2");
    EXPECT_EQ(back.n_layer, 2);
    EXPECT_EQ(back.channels, 3);
    EXPECT_EQ(back.lengths, cal.lengths);
    EXPECT_EQ(back.log_decay, cal.log_decay);
    EXPECT_EQ(back.delta_sum, cal.delta_sum);
    EXPECT_EQ(back.thresholds, cal.thresholds);
    EXPECT_EQ(back.alpha, cal.alpha);
    EXPECT_EQ(back.params.train_len, 2000);
    EXPECT_EQ(back.params.samples, 7);
    EXPECT_EQ(back.samples_used, 5);
    EXPECT_EQ(back.stream_tokens, 12345);
    EXPECT_DOUBLE_EQ(back.params.clamp_top, 0.15);
    EXPECT_EQ(back.params.aggregate, Aggregate::Max);
    EXPECT_EQ(back.params.m1_decay, M1Decay::Mean);
    // the exact dataset layout the format promises
    h5::Reader r(p);
    EXPECT_EQ(r.shape("/thresholds"), (std::vector<uint64_t>{2, 3, 3}));
    EXPECT_EQ(r.shape("/log_decay"), (std::vector<uint64_t>{2, 3}));
    EXPECT_EQ(h5::get_attr_string(r.root(), "format"), "mambascope-calibration");
    EXPECT_EQ(h5::get_attr_int(r.root(), "format_version"), 1);
}

TEST(CalibrationFile, MissingDatasetIsAClearError) {
    const fs::path p = temp_path("missing.h5");
    write_custom(p, "/alpha", false, false, kCalibrationFormat);
    EXPECT_NE(load_error(p).find("lacks the dataset /alpha"), std::string::npos) << load_error(p);
}

TEST(CalibrationFile, WrongShapeIsAClearError) {
    const fs::path p = temp_path("shape.h5");
    write_custom(p, "", true, false, kCalibrationFormat);
    EXPECT_NE(load_error(p).find("/thresholds has shape [2, 3], expected [2, 3, 3]"), std::string::npos)
        << load_error(p);
}

TEST(CalibrationFile, NaNIsRejected) {
    const fs::path p = temp_path("nan.h5");
    write_custom(p, "", false, true, kCalibrationFormat);
    EXPECT_NE(load_error(p).find("NaN"), std::string::npos) << load_error(p);
}

TEST(CalibrationFile, ForeignHdf5IsRejected) {
    const fs::path p = temp_path("foreign.h5");
    {
        h5::Writer w(p);
        const double x[2] = {1, 2};
        w.write_f64("/something_else", {2}, x);
        w.commit();
    }
    EXPECT_NE(load_error(p).find("not a Mambascope calibration"), std::string::npos) << load_error(p);
    write_custom(p, "", false, false, "other-format");
    EXPECT_NE(load_error(p).find("not a Mambascope calibration"), std::string::npos);
    EXPECT_NE(load_error(temp_path("does_not_exist.h5")).find("does not exist"), std::string::npos);
}

TEST_P(CalibrationBothArchs, DriverAggregatesPerWindowStatistics) {
    auto m = random_model(tiny(GetParam()), 21);
    const int64_t C = m->config.channels(), L = m->config.n_layer, T = m->config.train_len;
    const std::vector<int32_t> stream = random_ids(400, 37, 5);
    CalibrationParams p;
    p.samples = 3;
    p.lengths = {32, 64, 128, 256};
    p.aggregate = Aggregate::Max;
    const Calibration cal = calibrate(*m, stream, p);
    ASSERT_EQ(cal.samples_used, 3);
    ASSERT_EQ(cal.n_layer, L);
    ASSERT_EQ(cal.channels, C);
    ASSERT_EQ(static_cast<int64_t>(cal.thresholds.size()), L * 4 * C);

    // Recompute by hand: each window through a plain forward, window_stats per layer, elementwise max.
    const std::vector<int64_t> starts = calibration_window_starts(400, T, 3);
    std::vector<StatsAggregator> agg;
    for (int64_t l = 0; l < L; ++l) agg.emplace_back(C, 4, Aggregate::Max);
    for (int64_t s : starts) {
        DeltaRecorder rec(L, T, C);
        ForwardOptions opt;
        opt.observer = &rec;
        run_forward(*m,
                    std::span<const int32_t>(stream).subspan(static_cast<size_t>(s), static_cast<size_t>(T)),
                    opt);
        for (int64_t l = 0; l < L; ++l) {
            const Tensor& A = m->layers[l].A;
            agg[l].add(window_stats(T, C, rec.raw[l].data(), C, std::span<const float>(A.data, A.numel()),
                                    GetParam() == Arch::Mamba1 ? m->config.d_state : 1, p.lengths,
                                    p.clamp_top, p.m1_decay));
        }
    }
    for (int64_t l = 0; l < L; ++l) {
        const WindowStats w = agg[l].result();
        for (int64_t c = 0; c < C; ++c) {
            EXPECT_NEAR(cal.log_decay[l * C + c], w.log_decay[c], 1e-9 * (1 + std::abs(w.log_decay[c])));
            for (int li = 0; li < 4; ++li)
                EXPECT_NEAR(cal.threshold(l, li, c), w.threshold[li * C + c], 1e-9);
        }
    }
    // identity entries (λ ≤ train_len) and a non-trivial one beyond it
    EXPECT_EQ(cal.threshold(0, 0, 0), 0.0);
    EXPECT_EQ(cal.threshold(0, 1, 0), 0.0);
    EXPECT_GT(cal.threshold(0, 3, 0), 0.0);
}

TEST_P(CalibrationBothArchs, FilteredRunZeroesExactlyTheSubThresholdDeltaOfGlobalChannels) {
    auto m = random_model(tiny(GetParam()), 22);
    const int64_t C = m->config.channels(), L = m->config.n_layer;
    CalibrationParams p;
    p.samples = 2;
    p.lengths = {64, 128, 256};
    const Calibration cal = calibrate(*m, random_ids(300, 37, 6), p);
    FilterParams fp;
    fp.c = 1e-30;  // make (almost) every channel global so the test exercises filtering everywhere
    const int64_t S = 200;
    const DeltaFilter filter = make_longmamba_filter(cal, fp, S);
    ASSERT_FALSE(filter.empty());
    DeltaRecorder rec(L, S, C);
    ForwardOptions opt;
    opt.filter = &filter;
    opt.observer = &rec;
    opt.chunk_tokens = 64;
    run_forward(*m, random_ids(static_cast<int>(S), 37, 7), opt);
    int64_t filtered = 0, kept = 0;
    for (int64_t l = 0; l < L; ++l)
        for (int64_t t = 0; t < S; ++t)
            for (int64_t c = 0; c < C; ++c) {
                const float raw = rec.raw[l][t * C + c], used = rec.used[l][t * C + c];
                const float thr = filter.threshold[l][c];
                if (raw > thr) {
                    EXPECT_EQ(used, raw);
                    ++kept;
                } else {
                    EXPECT_EQ(used, 0.0f);
                    ++filtered;
                }
            }
    EXPECT_GT(filtered, 0);
    EXPECT_GT(kept, 0);
}

TEST_P(CalibrationBothArchs, FilterInactiveAtTrainLenAndForeignModelRejected) {
    auto m = random_model(tiny(GetParam()), 23);
    CalibrationParams p;
    p.samples = 1;
    p.lengths = {64, 128};
    const Calibration cal = calibrate(*m, random_ids(100, 37, 8), p);
    EXPECT_TRUE(make_longmamba_filter(cal, FilterParams{}, 64).empty());
    EXPECT_THROW(
        check_calibration_matches(cal, tiny(GetParam() == Arch::Mamba1 ? Arch::Mamba2 : Arch::Mamba1)),
        Error);
}

TEST(Calibration, ShortStreamIsAClearError) {
    auto m = random_model(tiny(Arch::Mamba2), 24);
    CalibrationParams p;
    p.samples = 5;
    try {
        calibrate(*m, random_ids(70, 37, 9), p);  // train_len 64 + 10 > 70
        FAIL() << "expected an Error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("fewer than train_len"), std::string::npos) << e.what();
    }
}

TEST(Calibration, CancelStopsTheDriver) {
    auto m = random_model(tiny(Arch::Mamba2), 25);
    CalibrationParams p;
    p.samples = 3;
    p.lengths = {64};
    int calls = 0;
    EXPECT_THROW(
        calibrate(*m, random_ids(300, 37, 10), p, [&](double, std::string_view) { return ++calls < 2; }),
        Cancelled);
}

INSTANTIATE_TEST_SUITE_P(Archs, CalibrationBothArchs, ::testing::Values(Arch::Mamba1, Arch::Mamba2));
