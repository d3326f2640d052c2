// Analysis runs and their HDF5 traces (issue 5): the run's numbers are the engine's, the file round-trips
// every field, and bad files / cancellation give clear errors and leave nothing behind.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>

#include "mambascope/analysis.h"
#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/h5.h"
#include "mambascope/trace.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

std::shared_ptr<const Model> model() {
    ModelConfig c;
    c.arch = Arch::Mamba1;
    c.d_model = 16;
    c.n_layer = 2;
    c.vocab_size = 50;
    c.d_inner = 32;
    c.d_state = 4;
    c.dt_rank = 2;
    c.train_len = 32;
    return random_model(c, 9);
}

fs::path tmp(const std::string& name) {
    return fs::temp_directory_path() / ("mambascope_trace_" + name);
}

// A calibration for `m`: channels 0..7 global (log decay −0.01) with threshold θ, the rest local.
fs::path write_calibration(const Model& m, double theta) {
    auto p = tmp("cal.h5");
    Calibration cal;
    cal.params.train_len = 32;
    cal.params.lengths = {32, 64, 128, 256};
    cal.lengths = cal.params.lengths;
    cal.model_name = "t";
    cal.arch = "mamba";
    cal.n_layer = m.config.n_layer;
    cal.channels = m.config.channels();
    cal.samples_used = 1;
    const size_t LC = size_t(cal.n_layer * cal.channels);
    cal.log_decay.assign(LC, -50.0);
    for (int64_t l = 0; l < cal.n_layer; ++l)
        for (int64_t c = 0; c < 8; ++c) cal.log_decay[size_t(l * cal.channels + c)] = -0.01;
    cal.delta_sum.assign(LC, 1.0);
    cal.thresholds.assign(LC * 4, theta);
    cal.alpha.assign(LC * 4, 0.5);
    save_calibration(p, cal);
    return p;
}

RunInput input(int T) {
    RunInput in;
    std::mt19937 rng(1);
    for (int i = 0; i < T; ++i) {
        in.ids.push_back(int32_t(rng() % 50));
        in.token_strings.push_back("t" + std::to_string(in.ids.back()));
        in.byte_offsets.push_back(i);
    }
    in.text_path = "x.txt";
    in.text_sha256 = "abc";
    in.text_bytes = T;
    return in;
}

AnalysisRequest request(const fs::path& cal) {
    AnalysisRequest r;
    r.methods = {Method::Vanilla, Method::LongMamba, Method::DeciMamba};
    r.calibration_path = cal;
    r.channels = {{1, 0}, {1, 20}};
    r.window_begin = 10;
    r.window_end = 150;
    r.rf_positions = {63, 199};
    r.attention_tokens = 48;
    r.deci_L_base = 40;
    r.deci_resp_len = 20;
    return r;
}

}  // namespace

TEST(Analysis, LongMambaRunFiltersGlobalChannelsOnlyAndVanillaReportsWouldBeCriticalTokens) {
    auto m = model();
    // the threshold: the median raw Δ of channel (1, 0), so that about half its tokens are critical
    auto probe = run_analysis(*m, input(200), request(write_calibration(*m, 1.0)));
    auto raw = probe.methods[0].channels[0].delta_raw;
    std::nth_element(raw.begin(), raw.begin() + long(raw.size() / 2), raw.end());
    const double kTheta = raw[raw.size() / 2];
    auto cal = write_calibration(*m, kTheta);
    auto run = run_analysis(*m, input(200), request(cal));
    ASSERT_EQ(run.methods.size(), 3u);
    const auto* van = run.find(Method::Vanilla);
    const auto* lm = run.find(Method::LongMamba);
    ASSERT_TRUE(van && lm);
    // global channel (1, 0): Δ used is Δ raw where Δ > 0.05, else 0; local channel (1, 20) untouched
    const auto& g = lm->channels[0];
    ASSERT_EQ(g.ref.channel, 0);
    EXPECT_TRUE(g.global);
    EXPECT_FLOAT_EQ(g.threshold, float(kTheta));
    int kept = 0;
    for (size_t i = 0; i < g.delta_raw.size(); ++i) {
        EXPECT_EQ(g.delta_used[i], g.delta_raw[i] > float(kTheta) ? g.delta_raw[i] : 0.0f);
        EXPECT_EQ(g.critical[i], g.delta_raw[i] > float(kTheta) ? 1 : 0);
        kept += g.critical[i];
    }
    EXPECT_GT(kept, 0);
    EXPECT_LT(kept, int(g.delta_raw.size()));
    const auto& loc = lm->channels[1];
    EXPECT_FALSE(loc.global);
    EXPECT_EQ(loc.delta_used, loc.delta_raw);
    // vanilla's Δ is unfiltered, and its critical counts are those LongMamba's filter would keep
    EXPECT_EQ(van->channels[0].delta_used, van->channels[0].delta_raw);
    EXPECT_EQ(van->critical_count.at2(1, 0) > 0, true);
    EXPECT_EQ(van->critical_count.at2(1, 20), 0);
    // the cumulative decay of the filtered global channel ends higher (less decay) than vanilla's
    EXPECT_GT(lm->channels[0].cum_log_decay.back(), van->channels[0].cum_log_decay.back());
    EXPECT_EQ(lm->channels[0].cum_log_decay.size(), 200u);
    // global mask from the calibration
    EXPECT_EQ(lm->global_mask.at2(0, 7), 1);
    EXPECT_EQ(lm->global_mask.at2(0, 8), 0);
    // DeciMamba dropped tokens, kept the tail
    const auto* deci = run.find(Method::DeciMamba);
    ASSERT_TRUE(deci);
    EXPECT_LT(deci->kept_positions.size(), 200u);
    EXPECT_EQ(deci->kept_positions.back(), 199);
    // hidden attention maps are lower-triangular W × W
    ASSERT_EQ(lm->attention.size(), 2u);
    EXPECT_EQ(lm->attention[0].alpha.shape, (std::vector<int64_t>{48, 48}));
    EXPECT_EQ(lm->attention[0].alpha.at2(0, 5), 0.0f);
    fs::remove(cal);
}

TEST(Trace, WriteReadRoundTripsEveryField) {
    auto m = model();
    auto cal = write_calibration(*m, 0.05);
    auto run = run_analysis(*m, input(200), request(cal));
    run.provenance["weights_sha256"] = "0123";
    auto p = tmp("rt.h5");
    write_trace(p, run);
    auto back = read_trace(p);
    EXPECT_EQ(back.input.ids, run.input.ids);
    EXPECT_EQ(back.input.token_strings, run.input.token_strings);
    EXPECT_EQ(back.input.byte_offsets, run.input.byte_offsets);
    EXPECT_EQ(back.input.text_sha256, "abc");
    EXPECT_EQ(back.rf_positions, run.rf_positions);
    EXPECT_EQ(back.provenance["weights_sha256"], "0123");
    ASSERT_EQ(back.methods.size(), run.methods.size());
    for (size_t i = 0; i < run.methods.size(); ++i) {
        const auto &a = run.methods[i], &b = back.methods[i];
        EXPECT_EQ(a.method, b.method);
        EXPECT_EQ(a.nll, b.nll);
        EXPECT_EQ(a.nll_positions, b.nll_positions);
        EXPECT_EQ(a.delta_sum.data, b.delta_sum.data);
        EXPECT_EQ(a.log_decay.data, b.log_decay.data);
        EXPECT_EQ(a.global_mask.data, b.global_mask.data);
        EXPECT_EQ(a.critical_count.data, b.critical_count.data);
        EXPECT_EQ(a.receptive_field.data, b.receptive_field.data);
        EXPECT_EQ(a.receptive_field_censored.data, b.receptive_field_censored.data);
        EXPECT_EQ(a.kept_positions, b.kept_positions);
        EXPECT_EQ(a.params, b.params);
        ASSERT_EQ(a.channels.size(), b.channels.size());
        for (size_t k = 0; k < a.channels.size(); ++k) {
            EXPECT_EQ(a.channels[k].ref, b.channels[k].ref);
            EXPECT_EQ(a.channels[k].delta_raw, b.channels[k].delta_raw);
            EXPECT_EQ(a.channels[k].critical, b.channels[k].critical);
            EXPECT_EQ(a.channels[k].cum_log_decay, b.channels[k].cum_log_decay);
            EXPECT_EQ(a.channels[k].global, b.channels[k].global);
        }
        ASSERT_EQ(a.attention.size(), b.attention.size());
        for (size_t k = 0; k < a.attention.size(); ++k)
            EXPECT_EQ(a.attention[k].alpha.data, b.attention[k].alpha.data);
    }
    fs::remove(p);
    fs::remove(cal);
}

TEST(Trace, CancellationLeavesNoFileBehind) {
    auto m = model();
    auto dir = tmp("cancel");
    fs::remove_all(dir);
    fs::create_directories(dir);
    AnalysisRequest r;
    r.methods = {Method::Vanilla};
    int calls = 0;
    EXPECT_THROW(run_analysis(*m, input(3000), r, [&](double, std::string_view) { return ++calls < 2; }),
                 Cancelled);
    // a writer that is destroyed without commit() removes its temp file and never touches the target
    std::ofstream(dir / "run.h5") << "old contents";
    {
        h5::Writer w(dir / "run.h5");
        w.write_i64("/x", {1}, std::vector<int64_t>{1}.data());
    }
    EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
    std::ifstream f(dir / "run.h5");
    std::string s((std::istreambuf_iterator<char>(f)), {});
    EXPECT_EQ(s, "old contents");
    fs::remove_all(dir);
}

TEST(Trace, ForeignTruncatedAndFutureFilesGiveClearErrors) {
    auto foreign = tmp("foreign.h5");
    {
        h5::Writer w(foreign);
        w.write_i64("/ids", {1}, std::vector<int64_t>{1}.data());
        w.commit();
    }
    try {
        read_trace(foreign);
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("not a mambascope trace"), std::string::npos) << e.what();
    }
    auto future = tmp("future.h5");
    {
        h5::Writer w(future);
        h5::set_attr(w.root(), "format", std::string(kTraceFormat));
        h5::set_attr(w.root(), "format_version", int64_t(99));
        w.commit();
    }
    try {
        read_trace(future);
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("newer"), std::string::npos) << e.what();
    }
    // truncated: the first 1000 bytes of a real trace
    auto m = model();
    AnalysisRequest r;
    r.methods = {Method::Vanilla};
    auto good = tmp("good.h5");
    write_trace(good, run_analysis(*m, input(100), r));
    std::ifstream in(good, std::ios::binary);
    std::string bytes(1000, '\0');
    in.read(bytes.data(), 1000);
    auto trunc = tmp("trunc.h5");
    std::ofstream(trunc, std::ios::binary) << bytes;
    EXPECT_THROW(read_trace(trunc), Error);
    EXPECT_THROW(read_trace(tmp("does-not-exist.h5")), Error);
    for (auto& p : {foreign, future, good, trunc}) fs::remove(p);
}
