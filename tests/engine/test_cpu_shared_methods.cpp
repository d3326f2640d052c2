// Shared work between methods in run_analysis (issue 16): LongMamba at or below its activation length runs
// no filter, so it is the vanilla forward and the analysis computes it once; DeciMamba's probes ride on its
// final pass instead of a separate pass over the same selection; DeciMamba after vanilla starts at its first
// decimating layer from vanilla's residual stream there. Each shared result must equal the separate
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
#include "mambascope/error.h"
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
    for (size_t i = 0; i < a.attention.size(); ++i) {
        EXPECT_EQ(a.attention[i].ref, b.attention[i].ref);
        EXPECT_EQ(a.attention[i].alpha.data, b.attention[i].alpha.data);
    }
    EXPECT_EQ(a.receptive_field_resolution, b.receptive_field_resolution);
    EXPECT_EQ(a.kept_positions, b.kept_positions);
}

// The tiny shape with 5 layers, so that DeciMamba has two layers below its first decimating layer (2) and
// decimates twice (layers 2 and 3).
ModelConfig five_layers(Arch arch) {
    ModelConfig c = test::tiny(arch);
    c.n_layer = 5;
    return c;
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

// DeciMamba after vanilla in one analysis starts at its first decimating layer from vanilla's residual stream
// (issue 16): NLL, summaries of every layer (those below l0 come from vanilla's run), receptive fields,
// detail channels below and above l0, hidden attention, global keep counts and kept positions equal
// DeciMamba's own run bit for bit. 1,500 tokens: two prefill chunks, so the kept rows span a chunk boundary.
TEST(CpuShared, DeciMambaAfterVanillaStartsFromItsRowsAndEqualsItsOwnRun) {
    for (Arch arch : {Arch::Mamba1, Arch::Mamba2}) {
        auto m = random_model(five_layers(arch), 44);
        RunInput in;
        in.ids = random_ids(1500, 7);
        AnalysisRequest req;
        req.calibration_path =
            calibration_file(*m, std::string("deci-") + (arch == Arch::Mamba1 ? "m1" : "m2") + ".h5");
        req.c = 1e-30;  // (nearly) every channel global, so the global keep count is recorded
        req.deci.layers = {2, 3};
        req.deci.L_base = 200;
        req.channels = {{0, 3}, {1, 5}, {2, 2}, {4, 1}};  // two below l0 = 2, two at or above it
        req.attention_tokens = 16;
        req.rf_positions = {100, 1499};
        req.methods = {Method::Vanilla, Method::DeciMamba};
        const RunResult both = run_analysis(*m, in, req);
        req.methods = {Method::DeciMamba};
        const RunResult alone = run_analysis(*m, in, req);
        EXPECT_EQ(both.provenance.at("decimamba_shared_layers"), "0..1 from vanilla");  // the shared path ran
        EXPECT_EQ(alone.provenance.count("decimamba_shared_layers"), 0u);
        const MethodResult& shared = *both.find(Method::DeciMamba);
        const MethodResult& own = alone.methods[0];
        ASSERT_FALSE(own.kept_positions.empty());
        EXPECT_LT(own.kept_positions.size(), in.ids.size());  // something was decimated
        EXPECT_FALSE(own.global_keep_count.empty());
        EXPECT_EQ(own.attention.size(), req.channels.size());
        EXPECT_EQ(shared.params, own.params);
        expect_same_numbers(shared, own);
        // Vanilla's own result is untouched by keeping the prefix.
        req.methods = {Method::Vanilla};
        expect_same_numbers(*both.find(Method::Vanilla), run_analysis(*m, in, req).methods[0]);
    }
}

// The mechanism underneath: a forward that keeps the residual stream entering layer l (capture_input), and a
// forward started there (start_from), give the plain forward's NLL and logits; run_decimamba from that prefix
// gives its own NLL, logits of the response window and kept positions, element by element. Chunks of 64 rows,
// so the captured rows come from many chunks.
TEST(CpuShared, AForwardStartedFromCapturedLayerInputEqualsTheWholeForward) {
    for (Arch arch : {Arch::Mamba1, Arch::Mamba2}) {
        auto m = random_model(five_layers(arch), 45);
        const std::vector<int32_t> ids = random_ids(700, 8);
        std::map<int64_t, std::vector<float>> logits_a, logits_b;
        auto head_into = [&](std::map<int64_t, std::vector<float>>& into) {
            HeadRequest h;
            h.nll = true;
            for (int64_t p = 640; p < 700; ++p) h.logits_positions.push_back(p);  // inside resp_len 100
            h.logits_sink = [&into](int64_t p, const float* row, int64_t V) { into[p].assign(row, row + V); };
            return h;
        };

        LayerInput at2;
        at2.layer = 2;
        ForwardOptions cap;
        cap.chunk_tokens = 64;
        cap.capture_input = &at2;
        const ForwardResult whole = run_forward(*m, ids, cap, head_into(logits_a));
        ASSERT_EQ(at2.tokens, 700);
        ASSERT_EQ(at2.x.size(), size_t(700 * m->config.d_model));
        ForwardOptions from;
        from.chunk_tokens = 64;
        from.start_from = &at2;
        const ForwardResult started = run_forward(*m, ids, from, head_into(logits_b));
        EXPECT_EQ(started.nll_positions, whole.nll_positions);
        EXPECT_EQ(started.nll, whole.nll);
        EXPECT_EQ(logits_b, logits_a);

        // DeciMamba runs in chunks of kPrefillChunkTokens: its prefix must come from the same chunking (the
        // GEMMs' blocking depends on the rows per call), which start_from checks.
        LayerInput deci_in;
        deci_in.layer = 2;
        ForwardOptions cap_default;
        cap_default.capture_input = &deci_in;
        run_forward(*m, ids, cap_default);
        EXPECT_THROW(run_decimamba(*m, ids, DeciParams{{2, 3}}, {}, {}, nullptr, nullptr, nullptr, &at2),
                     Error);
        DeciParams dp;
        dp.layers = {2, 3};
        dp.L_base = 150;
        std::map<int, std::vector<int64_t>> kept_own, kept_shared;
        logits_a.clear();
        logits_b.clear();
        const ForwardResult own = run_decimamba(*m, ids, dp, head_into(logits_a), {}, &kept_own);
        const ForwardResult shared =
            run_decimamba(*m, ids, dp, head_into(logits_b), {}, &kept_shared, nullptr, nullptr, &deci_in);
        ASSERT_LT(kept_own.rbegin()->second.size(), ids.size());
        EXPECT_EQ(kept_shared, kept_own);
        EXPECT_EQ(shared.nll_positions, own.nll_positions);
        EXPECT_EQ(shared.nll, own.nll);
        EXPECT_EQ(logits_a.size(), 60u);
        EXPECT_EQ(logits_b, logits_a);

        // A prefix above the first decimating layer, or with a final state asked for, is refused.
        LayerInput at3 = deci_in;
        at3.layer = 3;
        dp.layers = {1, 3};
        EXPECT_THROW(run_decimamba(*m, ids, dp, {}, {}, nullptr, nullptr, nullptr, &at3), Error);
        ModelState st;
        dp.layers = {2, 3};
        EXPECT_THROW(run_decimamba(*m, ids, dp, {}, {}, nullptr, nullptr, &st, &deci_in), Error);
    }
}
