// The CPU forward's own invariants on small random models (the reference comparisons are in
// test_reference_models.cpp): chunking, decode, filtering hooks, decimation and input checks.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "engine/tiny_model.h"
#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "mambascope/model.h"

using namespace mambascope;

namespace {

using test::tiny;

std::vector<int32_t> random_ids(int n, int vocab, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<int32_t> ids(n);
    for (auto& i : ids) i = static_cast<int32_t>(rng() % vocab);
    return ids;
}

std::vector<std::vector<float>> all_logits(const Model& m, const std::vector<int32_t>& ids,
                                           ForwardOptions opt = {}) {
    std::vector<std::vector<float>> out;
    HeadRequest head;
    head.all_logits = true;
    head.logits_sink = [&](int64_t, const float* row, int64_t V) { out.emplace_back(row, row + V); };
    run_forward(m, ids, opt, head);
    return out;
}

double max_abs_diff(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
    double d = 0;
    for (size_t i = 0; i < a.size(); ++i)
        for (size_t j = 0; j < a[i].size(); ++j) d = std::max(d, double(std::abs(a[i][j] - b[i][j])));
    return d;
}

class ForwardBothArchs : public ::testing::TestWithParam<Arch> {};

}  // namespace

TEST_P(ForwardBothArchs, ChunkedPrefillEqualsOnePass) {
    auto m = random_model(tiny(GetParam()), 11);
    auto ids = random_ids(70, 37, 1);
    auto one = all_logits(*m, ids);
    ForwardOptions opt;
    opt.chunk_tokens = 9;
    auto chunked = all_logits(*m, ids, opt);
    ASSERT_EQ(one.size(), 70u);
    ASSERT_EQ(chunked.size(), 70u);
    EXPECT_LT(max_abs_diff(one, chunked), 1e-5);
}

TEST_P(ForwardBothArchs, DecodeStepsEqualPrefillLogits) {
    auto m = random_model(tiny(GetParam()), 12);
    auto ids = random_ids(30, 37, 2);
    auto pre = all_logits(*m, ids);
    ModelState st = make_state(*m);
    std::vector<float> logits;
    double d = 0;
    // prefill the first 10, then decode one by one
    HeadRequest head;
    head.logits_positions = {9};
    std::vector<float> last;
    head.logits_sink = [&](int64_t, const float* r, int64_t V) { last.assign(r, r + V); };
    run_prefill(*m, std::span<const int32_t>(ids.data(), 10), st, {}, head);
    for (size_t j = 0; j < last.size(); ++j) d = std::max(d, double(std::abs(last[j] - pre[9][j])));
    for (int t = 10; t < 30; ++t) {
        decode_step(*m, ids[t], st, logits);
        for (size_t j = 0; j < logits.size(); ++j) d = std::max(d, double(std::abs(logits[j] - pre[t][j])));
    }
    EXPECT_LT(d, 1e-5);
    EXPECT_EQ(st.tokens_seen, 30);
}

TEST_P(ForwardBothArchs, DecoderMatchesPrefillAndFallsBackToTheCpuWithANote) {
    auto m = random_model(tiny(GetParam()), 12);
    auto ids = random_ids(30, 37, 2);
    auto pre = all_logits(*m, ids);
    ModelState st = make_state(*m);
    run_prefill(*m, std::span<const int32_t>(ids.data(), 10), st);
    // Asking for the GPU: on a machine without one (or a CPU-only build) the decoder says so and uses the
    // CPU.
    Decoder dec(*m, st, Device::Cuda);
    if (!cuda_usable()) {
        EXPECT_EQ(dec.backend(), "cpu");
        EXPECT_NE(dec.note().find("CUDA not used"), std::string::npos) << dec.note();
    }
    std::vector<float> logits;
    double d = 0;
    for (int t = 10; t < 30; ++t) {
        dec.step(ids[t], logits);
        ASSERT_EQ(logits.size(), pre[t].size());
        for (size_t j = 0; j < logits.size(); ++j) d = std::max(d, double(std::abs(logits[j] - pre[t][j])));
    }
    EXPECT_LT(d, 1e-4);
    EXPECT_EQ(dec.state().tokens_seen, 30);
    EXPECT_THROW(dec.step(9999, logits), Error);  // out-of-range id: a clear error, state untouched
    EXPECT_EQ(dec.state().tokens_seen, 30);
}

// Decoder::step_greedy on the CPU: the first index of the largest of logits [0, n) of the same step (a twin
// decoder's step()), n short of the row so that a maximum in the tail is not taken; a bad n is a clear error
// that leaves the state as it was.
TEST_P(ForwardBothArchs, GreedyStepIsTheArgmaxOfTheStepsLogits) {
    auto m = random_model(tiny(GetParam()), 15);
    auto ids = random_ids(12, 37, 5);
    ModelState st = make_state(*m);
    run_prefill(*m, ids, st);
    Decoder a(*m, st, Device::Cpu), b(*m, st, Device::Cpu);
    const int64_t n = m->vocab_rows() - 5;
    std::vector<float> logits;
    int32_t next = ids.back();
    std::set<int32_t> seen;
    for (int t = 0; t < 25; ++t) {
        a.step(next, logits);
        const int32_t want = int32_t(std::max_element(logits.begin(), logits.begin() + n) - logits.begin());
        const int32_t got = b.step_greedy(next, n);
        ASSERT_EQ(got, want) << t;
        seen.insert(got);
        next = got;
    }
    EXPECT_GT(seen.size(), 2u);
    EXPECT_THROW(b.step_greedy(next, 0), Error);
    EXPECT_THROW(b.step_greedy(next, m->vocab_rows() + 1), Error);
    EXPECT_EQ(b.state().tokens_seen, a.state().tokens_seen);
    EXPECT_EQ(b.state().layers[0].ssm, a.state().layers[0].ssm);
}

// Decoder::step_greedy_run on the CPU: count greedy steps fed back, equal to a twin's step_greedy loop (ids,
// state and token count); count 0 changes nothing; a bad n, count or id is a clear error that leaves the
// state as it was.
TEST_P(ForwardBothArchs, GreedyRunIsStepGreedyFedBack) {
    auto m = random_model(tiny(GetParam()), 16);
    auto ids = random_ids(12, 37, 6);
    ModelState st = make_state(*m);
    run_prefill(*m, ids, st);
    Decoder a(*m, st, Device::Cpu), b(*m, st, Device::Cpu);
    const int64_t n = m->vocab_rows() - 5;
    std::vector<int32_t> want;
    int32_t next = ids.back();
    for (int t = 0; t < 20; ++t) want.push_back(next = a.step_greedy(next, n));
    EXPECT_TRUE(b.step_greedy_run(ids.back(), n, 0).empty());
    EXPECT_EQ(b.state().tokens_seen, 12);
    const std::vector<int32_t> got = b.step_greedy_run(ids.back(), n, 20);
    EXPECT_EQ(got, want);
    EXPECT_GT(std::set<int32_t>(got.begin(), got.end()).size(), 2u);
    EXPECT_EQ(b.state().tokens_seen, 32);
    EXPECT_EQ(b.state().layers[1].ssm, a.state().layers[1].ssm);
    EXPECT_THROW(b.step_greedy_run(next, 0, 3), Error);
    EXPECT_THROW(b.step_greedy_run(next, n, -1), Error);
    EXPECT_THROW(b.step_greedy_run(int32_t(m->vocab_rows()), n, 0), Error);
    EXPECT_EQ(b.state().tokens_seen, 32);
}

TEST_P(ForwardBothArchs, MinusInfinityThresholdsLeaveTheModelVanilla) {
    auto m = random_model(tiny(GetParam()), 13);
    auto ids = random_ids(40, 37, 3);
    DeltaFilter f;
    f.threshold.assign(3, std::vector<float>(size_t(m->config.channels()), -INFINITY));
    ForwardOptions opt;
    opt.filter = &f;
    EXPECT_EQ(max_abs_diff(all_logits(*m, ids), all_logits(*m, ids, opt)), 0.0);
}

TEST_P(ForwardBothArchs, FilteredChannelIsFrozenAndOthersMove) {
    auto m = random_model(tiny(GetParam()), 14);
    auto ids = random_ids(25, 37, 4);
    const int64_t C = m->config.channels();
    DeltaFilter f;
    f.threshold.assign(3, std::vector<float>(size_t(C), -INFINITY));
    f.threshold[1][2] = INFINITY;  // layer 1, channel 2: every token filtered → Δ = 0 → state never changes
    ForwardOptions opt;
    opt.filter = &f;
    struct Seen : ScanObserver {
        double used_sum = 0, raw_sum = 0;
        void on_delta(const DeltaBlock& raw, const DeltaBlock& used) override {
            if (used.layer != 1) return;
            for (int64_t r = 0; r < used.rows; ++r) used_sum += used.at(r, 2), raw_sum += raw.at(r, 2);
        }
    } seen;
    opt.observer = &seen;
    ModelState st = make_state(*m);
    run_prefill(*m, ids, st, opt);
    const auto& ssm = st.layers[1].ssm;
    const int64_t per_channel =
        m->config.arch == Arch::Mamba1 ? m->config.d_state : m->config.head_dim * m->config.d_state;
    double frozen = 0, other = 0;
    for (int64_t i = 0; i < per_channel; ++i) frozen += std::abs(ssm[size_t(2 * per_channel + i)]);
    for (int64_t i = 0; i < per_channel; ++i) other += std::abs(ssm[size_t(3 * per_channel + i)]);
    EXPECT_EQ(frozen, 0.0);
    EXPECT_GT(other, 0.0);
    EXPECT_EQ(seen.used_sum, 0.0);
    EXPECT_GT(seen.raw_sum, 0.0);  // the observer sees the raw Δ separately
}

TEST_P(ForwardBothArchs, KeepingAllPositionsIsVanillaAndDroppingShortensTheSequence) {
    auto m = random_model(tiny(GetParam()), 15);
    auto ids = random_ids(40, 37, 5);
    HeadRequest head;
    head.nll = true;
    auto vanilla = run_forward(*m, ids, {}, head);
    std::map<int, std::vector<int64_t>> keep;
    for (int64_t p = 0; p < 40; ++p) keep[1].push_back(p);
    ForwardOptions opt;
    opt.keep_positions = &keep;
    auto same = run_forward(*m, ids, opt, head);
    ASSERT_EQ(same.nll.size(), vanilla.nll.size());
    for (size_t i = 0; i < same.nll.size(); ++i) EXPECT_FLOAT_EQ(same.nll[i], vanilla.nll[i]);
    keep[1] = {0, 5, 6, 20, 30, 35, 36, 37, 38, 39};
    opt.chunk_tokens = 8;
    auto dec = run_forward(*m, ids, opt, head);
    EXPECT_EQ(dec.nll_positions, (std::vector<int64_t>{0, 5, 6, 20, 30, 35, 36, 37, 38}));
    // the last position's prediction differs from vanilla once tokens were dropped
    EXPECT_NE(dec.nll.back(), vanilla.nll[38]);
}

INSTANTIATE_TEST_SUITE_P(Archs, ForwardBothArchs, ::testing::Values(Arch::Mamba1, Arch::Mamba2),
                         [](const auto& info) { return info.param == Arch::Mamba1 ? "Mamba1" : "Mamba2"; });

TEST(ForwardInput, OutOfRangeIdIsAClearError) {
    auto m = random_model(tiny(Arch::Mamba1), 1);
    std::vector<int32_t> ids{1, 2, 37};
    try {
        run_forward(*m, ids);
        FAIL() << "expected an Error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("token id 37 at position 2"), std::string::npos) << e.what();
    }
    std::vector<int32_t> neg{-1};
    EXPECT_THROW(run_forward(*m, neg), Error);
}

TEST(ForwardInput, EmptyInputIsAClearError) {
    auto m = random_model(tiny(Arch::Mamba2), 1);
    std::vector<int32_t> ids;
    EXPECT_THROW(run_forward(*m, ids), Error);
}

TEST(ForwardInput, NllIsTheCrossEntropyOfTheNextToken) {
    auto m = random_model(tiny(Arch::Mamba1), 2);
    auto ids = random_ids(12, 37, 9);
    auto logits = all_logits(*m, ids);
    HeadRequest head;
    head.nll = true;
    auto res = run_forward(*m, ids, {}, head);
    ASSERT_EQ(res.nll.size(), 11u);
    for (int p = 0; p < 11; ++p) {
        double mx = -1e30, se = 0;
        for (float v : logits[p]) mx = std::max(mx, double(v));
        for (float v : logits[p]) se += std::exp(double(v) - mx);
        EXPECT_NEAR(res.nll[p], std::log(se) + mx - logits[p][ids[p + 1]], 1e-4);
    }
}

// The published shapes used by the benchmarks have the parameter counts of the real checkpoints
// (docs/checkpoints.md §4, tied embeddings counted once).
TEST(ReferenceShapes, ParameterCountsMatchThePublishedCheckpoints) {
    EXPECT_EQ(random_model(reference_config("mamba-130m"), 1)->parameter_count(), 129135360);
    EXPECT_EQ(random_model(reference_config("mamba2-130m"), 1)->parameter_count(), 128989632);
    EXPECT_EQ(reference_config("mamba-2.8b").dt_rank, 160);
    EXPECT_THROW(reference_config("mamba-7b"), Error);
}
