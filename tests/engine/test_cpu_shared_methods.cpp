// Shared work between methods in run_analysis (issue 16): LongMamba at or below its activation length runs
// no filter, so it is the vanilla forward and the analysis computes it once; DeciMamba's probes ride on its
// final pass instead of a separate pass over the same selection. Each shared result must equal the separate
// computation bit for bit, and an active filter must not be shared.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <random>
#include <string>

#include "engine/tiny_model.h"
#include "mambascope/analysis.h"
#include "mambascope/calibration.h"
#include "mambascope/channel_probe.h"
#include "mambascope/decimamba.h"
#include "mambascope/forward.h"
#include "mambascope/model.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

std::vector<int32_t> random_ids(int n, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (auto& i : ids) i = static_cast<int32_t>(rng() % 37u);
    return ids;
}

fs::path calibration_file(const Model& m, const std::string& name) {
    CalibrationParams p;
    p.samples = 2;
    p.lengths = {64, 128, 256, 512};
    const Calibration cal = calibrate(m, random_ids(300, 6), p);
    // One folder per process: ctest runs these tests in parallel processes.
    const fs::path d = fs::temp_directory_path() / ("mambascope_test_shared-" + std::to_string(::getpid()));
    fs::create_directories(d);
    save_calibration(d / name, cal);
    return d / name;
}

// Every number of two method results, bit for bit (name, parameters and timing aside).
void expect_same_numbers(const MethodResult& a, const MethodResult& b) {
    EXPECT_EQ(a.nll_positions, b.nll_positions);
    EXPECT_EQ(a.nll, b.nll);
    EXPECT_EQ(a.delta_sum.data, b.delta_sum.data);
    EXPECT_EQ(a.log_decay.data, b.log_decay.data);
    EXPECT_EQ(a.global_mask.data, b.global_mask.data);
    EXPECT_EQ(a.critical_count.data, b.critical_count.data);
    EXPECT_EQ(a.global_keep_count, b.global_keep_count);
    EXPECT_EQ(a.receptive_field.data, b.receptive_field.data);
    EXPECT_EQ(a.receptive_field_censored.data, b.receptive_field_censored.data);
    ASSERT_EQ(a.channels.size(), b.channels.size());
    for (size_t i = 0; i < a.channels.size(); ++i) {
        EXPECT_EQ(a.channels[i].delta_raw, b.channels[i].delta_raw);
        EXPECT_EQ(a.channels[i].delta_used, b.channels[i].delta_used);
        EXPECT_EQ(a.channels[i].critical, b.channels[i].critical);
        EXPECT_EQ(a.channels[i].cum_log_decay, b.channels[i].cum_log_decay);
        EXPECT_EQ(a.channels[i].threshold, b.channels[i].threshold);
    }
    ASSERT_EQ(a.attention.size(), b.attention.size());
    for (size_t i = 0; i < a.attention.size(); ++i)
        EXPECT_EQ(a.attention[i].alpha.data, b.attention[i].alpha.data);
}

}  // namespace

TEST(CpuShared, LongMambaBelowItsActivationLengthEqualsItsOwnRunAndVanilla) {
    for (Arch arch : {Arch::Mamba1, Arch::Mamba2}) {
        auto m = random_model(test::tiny(arch), 41);
        RunInput in;
        in.ids = random_ids(60, 3);  // ≤ train_len 64: LongMamba's filter is not active
        AnalysisRequest req;
        req.calibration_path =
            calibration_file(*m, std::string("below-") + (arch == Arch::Mamba1 ? "m1" : "m2") + ".h5");
        req.attention_tokens = 16;
        req.methods = {Method::Vanilla, Method::LongMamba};
        const RunResult both = run_analysis(*m, in, req);
        req.methods = {Method::LongMamba};
        const RunResult alone = run_analysis(*m, in, req);
        req.methods = {Method::Vanilla};
        const RunResult van = run_analysis(*m, in, req);
        const MethodResult& lm = *both.find(Method::LongMamba);
        EXPECT_EQ(lm.params.at("filtered"), 0.0);
        EXPECT_EQ(lm.params, alone.methods[0].params);  // its own parameters, not vanilla's
        expect_same_numbers(lm, alone.methods[0]);
        expect_same_numbers(*both.find(Method::Vanilla), van.methods[0]);
    }
}

TEST(CpuShared, AnActiveFilterIsNotShared) {
    auto m = random_model(test::tiny(Arch::Mamba1), 42);
    RunInput in;
    in.ids = random_ids(200, 4);  // > train_len: the filter is active
    AnalysisRequest req;
    req.calibration_path = calibration_file(*m, "active.h5");
    req.c = 0.5;  // plenty of global channels, so the filter changes something
    req.attention = false;
    req.methods = {Method::Vanilla, Method::LongMamba};
    const RunResult both = run_analysis(*m, in, req);
    req.methods = {Method::LongMamba};
    const RunResult alone = run_analysis(*m, in, req);
    const MethodResult& lm = *both.find(Method::LongMamba);
    EXPECT_EQ(lm.params.at("filtered"), 1.0);
    expect_same_numbers(lm, alone.methods[0]);
    EXPECT_NE(lm.delta_sum.data, both.find(Method::Vanilla)->delta_sum.data);
}

// DeciMamba's probes are taken on its final pass instead of a separate probe pass over the same selection:
// the summaries equal those of that separate pass bit for bit, and the NLL is the driver's.
TEST(CpuShared, DeciMambaProbesOnItsFinalPassEqualASeparateProbePass) {
    for (Arch arch : {Arch::Mamba1, Arch::Mamba2}) {
        auto m = random_model(test::tiny(arch), 43);
        RunInput in;
        in.ids = random_ids(400, 5);
        AnalysisRequest req;
        req.methods = {Method::DeciMamba};
        req.attention = false;
        const MethodResult r = run_analysis(*m, in, req).methods[0];

        DeciParams dp;
        HeadRequest head;
        head.nll = true;
        std::map<int, std::vector<int64_t>> kept;
        const ForwardResult fr = run_decimamba(*m, in.ids, dp, head, {}, &kept);
        ChannelProbe probe(*m, ProbeOptions{});
        ForwardOptions opt;
        opt.observer = &probe;
        opt.keep_positions = &kept;
        opt.stop_after_layer = int(m->config.n_layer) - 1;
        run_forward(*m, in.ids, opt);

        ASSERT_FALSE(kept.empty());
        EXPECT_LT(kept.rbegin()->second.size(), in.ids.size());  // something was decimated
        EXPECT_EQ(r.kept_positions, kept.rbegin()->second);
        EXPECT_EQ(r.delta_sum.data, probe.sum_used());
        EXPECT_EQ(r.log_decay.data, probe.log_decay_used());
        EXPECT_EQ(r.critical_count.data, probe.critical_count());
        EXPECT_EQ(r.nll, fr.nll);
        EXPECT_EQ(r.nll_positions, fr.nll_positions);
    }
}
