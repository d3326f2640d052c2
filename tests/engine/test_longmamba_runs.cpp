// LongMamba pieces on real forward runs of small random models: the filter inside the scan, the channel
// probe, the streaming receptive-field tracker, and the DeciMamba driver.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "../../kernels/cpu/scan.h"
#include "engine/tiny_model.h"
#include "mambascope/channel_probe.h"
#include "mambascope/decimamba.h"
#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "mambascope/longmamba.h"
#include "mambascope/model.h"
#include "mambascope/receptive_field.h"

using namespace mambascope;

namespace {

using test::tiny;

std::vector<int32_t> random_ids(int n, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (auto& i : ids) i = static_cast<int32_t>(rng() % 37u);
    return ids;
}

std::vector<float> random_vec(size_t n, float lo, float hi, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> U(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = U(rng);
    return v;
}

// A filter for the tiny model: threshold = median-ish value on even channels (global), −inf on odd (local).
DeltaFilter half_filter(int64_t n_layer, int64_t C, float thr) {
    DeltaFilter f;
    f.threshold.assign(static_cast<size_t>(n_layer), std::vector<float>(static_cast<size_t>(C)));
    for (auto& row : f.threshold)
        for (size_t c = 0; c < row.size(); ++c)
            row[c] = c % 2 == 0 ? thr : -std::numeric_limits<float>::infinity();
    return f;
}

struct Recorder : ScanObserver {
    std::vector<std::vector<float>> raw, used;  // per layer, T × C
    int64_t C = 0;
    void on_delta(const DeltaBlock& r, const DeltaBlock& u) override {
        if (raw.size() <= static_cast<size_t>(r.layer)) raw.resize(r.layer + 1), used.resize(r.layer + 1);
        C = r.channels;
        for (int64_t i = 0; i < r.rows; ++i)
            for (int64_t c = 0; c < C; ++c)
                raw[r.layer].push_back(r.at(i, c)), used[u.layer].push_back(u.at(i, c));
    }
};

class RunsBothArchs : public ::testing::TestWithParam<Arch> {};

}  // namespace

TEST(LongMambaScan, FilteredScanEqualsPlainScanOnFilteredDelta) {
    // Mamba-2 scan with the in-scan filter vs the same scan (no filter) fed Δ' = Δ·1[Δ > thr] by hand.
    const int64_t T = 12, H = 3, P = 2, G = 1, N = 4;
    const auto x = random_vec(T * H * P, -1, 1, 1), B = random_vec(T * N, -1, 1, 2),
               C = random_vec(T * N, -1, 1, 3);
    const auto delta = random_vec(T * H, 0.01f, 1.0f, 4);
    const std::vector<float> A = {-0.5f, -1.0f, -2.0f}, D = {0.1f, 0.2f, 0.3f};
    const std::vector<float> thr = {0.5f, -std::numeric_limits<float>::infinity(), 0.3f};
    std::vector<float> d1 = delta, d2 = delta;
    for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h)
            if (!(d2[t * H + h] > thr[h])) d2[t * H + h] = 0;
    std::vector<float> s1(H * P * N, 0), s2(H * P * N, 0), y1(T * H * P), y2(T * H * P);
    kernels::scan_mamba2(T, H, P, G, N, x.data(), H * P, d1.data(), H, A.data(), B.data(), N, C.data(), N,
                         D.data(), thr.data(), s1.data(), y1.data(), H * P);
    kernels::scan_mamba2(T, H, P, G, N, x.data(), H * P, d2.data(), H, A.data(), B.data(), N, C.data(), N,
                         D.data(), nullptr, s2.data(), y2.data(), H * P);
    EXPECT_EQ(d1, d2);  // the scan writes back the Δ it used
    for (size_t i = 0; i < y1.size(); ++i) EXPECT_FLOAT_EQ(y1[i], y2[i]);
    for (size_t i = 0; i < s1.size(); ++i) EXPECT_FLOAT_EQ(s1[i], s2[i]);
}

TEST(LongMambaScan, FrozenChannelStateIsUnchangedAcrossAFilteredToken) {
    // Mamba-1: one token whose Δ is below the threshold in channel 0 leaves that channel's N states
    // untouched.
    const int64_t E = 2, N = 3;
    const auto x = random_vec(E, -1, 1, 5), B = random_vec(N, -1, 1, 6), C = random_vec(N, -1, 1, 7);
    const auto A = random_vec(E * N, -2, -0.1f, 8);
    const std::vector<float> Dskip = {0, 0}, thr = {0.5f, 0.5f};
    std::vector<float> delta = {0.2f, 0.9f};  // channel 0 filtered, channel 1 kept
    std::vector<float> h = random_vec(E * N, -1, 1, 9), h0 = h, y(E);
    kernels::scan_mamba1(1, E, N, x.data(), E, delta.data(), E, A.data(), B.data(), N, C.data(), N,
                         Dskip.data(), thr.data(), h.data(), y.data(), E);
    for (int64_t n = 0; n < N; ++n) EXPECT_EQ(h[n], h0[n]) << n;  // frozen
    bool changed = false;
    for (int64_t n = 0; n < N; ++n) changed |= h[N + n] != h0[N + n];
    EXPECT_TRUE(changed);
}

TEST_P(RunsBothArchs, ProbeCountsExactlyTheSurvivingTokens) {
    auto m = random_model(tiny(GetParam()), 31);
    const int64_t L = m->config.n_layer, C = m->config.channels(), T = 150;
    const auto ids = random_ids(static_cast<int>(T), 1);
    // threshold near the median raw Δ of the model
    Recorder probe_raw;
    ForwardOptions o0;
    o0.observer = &probe_raw;
    run_forward(*m, ids, o0);
    std::vector<float> all = probe_raw.raw[0];
    std::nth_element(all.begin(), all.begin() + all.size() / 2, all.end());
    const DeltaFilter f = half_filter(L, C, all[all.size() / 2]);

    ProbeOptions po;
    po.reference = &f;
    po.window_channels = {{1, 0}, {2, 1}};
    po.window_begin = 20;
    po.window_end = 60;
    ChannelProbe probe(*m, po);
    Recorder rec;
    struct Both : ScanObserver {
        ScanObserver *a, *b;
        void on_delta(const DeltaBlock& r, const DeltaBlock& u) override {
            a->on_delta(r, u);
            b->on_delta(r, u);
        }
    } both;
    both.a = &probe;
    both.b = &rec;
    ForwardOptions opt;
    opt.filter = &f;
    opt.observer = &both;
    opt.chunk_tokens = 32;
    run_forward(*m, ids, opt);

    int64_t channels_filtered = 0;
    for (int64_t l = 0; l < L; ++l)
        for (int64_t c = 0; c < C; ++c) {
            int64_t survived = 0;
            double su = 0, sr = 0;
            for (int64_t t = 0; t < T; ++t) {
                const float r = rec.raw[l][t * C + c], u = rec.used[l][t * C + c];
                su += u;
                sr += r;
                if (c % 2 == 0 && u == r && r > 0) ++survived;
            }
            EXPECT_EQ(probe.critical_count()[l * C + c], survived) << l << " " << c;
            EXPECT_NEAR(probe.sum_used()[l * C + c], su, 1e-9 * (1 + su));
            EXPECT_NEAR(probe.sum_raw()[l * C + c], sr, 1e-9 * (1 + sr));
            if (su < sr) ++channels_filtered;
        }
    EXPECT_GT(channels_filtered, 0);  // the test exercises filtering
    ASSERT_EQ(probe.windows().size(), 2u);
    const ChannelWindow& w = probe.windows()[0];
    ASSERT_EQ(w.positions.size(), 40u);
    EXPECT_EQ(w.positions.front(), 20);
    for (size_t i = 0; i < w.positions.size(); ++i) {
        EXPECT_EQ(w.raw[i], rec.raw[1][w.positions[i] * C + 0]);
        EXPECT_EQ(w.used[i], rec.used[1][w.positions[i] * C + 0]);
    }
    EXPECT_FALSE(w.critical.empty());
    EXPECT_TRUE(probe.windows()[1].critical.empty());  // channel 1 is local: never critical
    // log decay of the used Δ: A_c · Σ used (Mamba-2 head / Mamba-1 slowest state)
    const std::vector<double> ld = probe.log_decay_used();
    const Tensor& A = m->layers[0].A;
    const auto rate = channel_decay_rate(std::span<const float>(A.data, A.numel()), C,
                                         GetParam() == Arch::Mamba1 ? m->config.d_state : 1);
    EXPECT_NEAR(ld[0], rate[0] * probe.sum_used()[0], 1e-9);
    EXPECT_THROW(ChannelProbe(*m, ProbeOptions{nullptr, M1Decay::Slowest, {{L, 0}}, 0, 10}), Error);
}

TEST_P(RunsBothArchs, TrackerOnARunMatchesExactReceptiveFieldOfUsedDelta) {
    auto m = random_model(tiny(GetParam()), 32);
    const int64_t L = m->config.n_layer, C = m->config.channels(), T = 120;
    std::vector<std::vector<double>> rate;
    for (int64_t l = 0; l < L; ++l) {
        const Tensor& A = m->layers[l].A;
        rate.push_back(channel_decay_rate(std::span<const float>(A.data, A.numel()), C,
                                          GetParam() == Arch::Mamba1 ? m->config.d_state : 1));
    }
    auto tr = ReceptiveFieldTracker::with_stride(rate, 1);
    Recorder rec;
    struct Both : ScanObserver {
        ScanObserver *a, *b;
        void on_delta(const DeltaBlock& r, const DeltaBlock& u) override {
            a->on_delta(r, u);
            b->on_delta(r, u);
        }
    } both;
    both.a = &tr;
    both.b = &rec;
    const DeltaFilter f = half_filter(L, C, 0.3f);
    ForwardOptions opt;
    opt.filter = &f;
    opt.observer = &both;
    opt.chunk_tokens = 50;
    run_forward(*m, random_ids(static_cast<int>(T), 2), opt);
    tr.finish(T);
    const double eps = 0.05;
    int64_t censored = 0, finite = 0;
    for (int64_t l = 0; l < L; ++l)
        for (int64_t c = 0; c < C; ++c) {
            std::vector<float> s(static_cast<size_t>(T));
            for (int64_t t = 0; t < T; ++t) s[t] = rec.used[l][t * C + c];
            for (int64_t t : {int64_t{10}, int64_t{77}, T - 1}) {
                const ReceptiveField want = receptive_field(s, rate[l][c], eps, t);
                const ReceptiveField got = tr.at(static_cast<int>(l), c, t, eps);
                EXPECT_EQ(got.censored, want.censored);
                if (!want.censored) EXPECT_EQ(got.length, want.length) << l << " " << c << " " << t;
                (want.censored ? censored : finite) += 1;
            }
        }
    EXPECT_GT(finite, 0);
}

TEST_P(RunsBothArchs, DeciMambaKeepsTopKAndResponseTokens) {
    auto m = random_model(tiny(GetParam()), 33);
    const int64_t T = 200;
    DeciParams p;
    p.layers = {1, 2};
    p.L_base = 60;
    p.beta = 0.5;
    p.min_seq_len = 20;
    p.resp_len = 10;
    std::map<int, std::vector<int64_t>> kept;
    HeadRequest head;
    head.nll = true;
    const ForwardResult r = run_decimamba(*m, random_ids(static_cast<int>(T), 3), p, head, {}, &kept);
    ASSERT_EQ(kept.size(), 2u);
    EXPECT_EQ(kept[1].size(), 60u + 10u);  // K = 60·0.5^0 + resp
    EXPECT_EQ(kept[2].size(), 30u + 10u);  // K = 60·0.5^1 + resp
    for (int64_t t = T - 10; t < T; ++t) EXPECT_TRUE(std::binary_search(kept[2].begin(), kept[2].end(), t));
    EXPECT_TRUE(std::includes(kept[1].begin(), kept[1].end(), kept[2].begin(), kept[2].end()));
    // NLL only where the token survived to the head and has a next token
    EXPECT_EQ(r.nll_positions.size(), kept[2].size() - 1);
    for (int64_t pos : r.nll_positions) EXPECT_TRUE(std::binary_search(kept[2].begin(), kept[2].end(), pos));
}

INSTANTIATE_TEST_SUITE_P(Archs, RunsBothArchs, ::testing::Values(Arch::Mamba1, Arch::Mamba2));
