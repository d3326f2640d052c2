// Activation capture (forward.h ActivationSink): every captured tensor equals an independent computation of
// the same quantity, and capturing changes nothing in the forward.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <set>
#include <tuple>

#include "mambascope/forward.h"
#include "mambascope/model.h"
#include "tiny_model.h"

using namespace mambascope;

namespace {

// Keeps every row handed over: (kind, layer, position) → row.
struct Recorder : ActivationSink {
    int64_t b = 0, e = 0;
    std::set<int> layers;
    std::map<std::tuple<int, int, int64_t>, std::vector<float>> rows;
    int64_t max_rows_per_block = 0;
    bool wants(ActivationKind, int layer) const override { return layers.count(layer) > 0; }
    int64_t begin() const override { return b; }
    int64_t end() const override { return e; }
    void on_activation(const ActivationBlock& blk) override {
        max_rows_per_block = std::max(max_rows_per_block, blk.rows);
        for (int64_t r = 0; r < blk.rows; ++r) {
            EXPECT_GE(blk.positions[r], b);
            EXPECT_LT(blk.positions[r], e);
            rows[{int(blk.kind), blk.layer, blk.positions[r]}] =
                std::vector<float>(blk.data + r * blk.ld, blk.data + r * blk.ld + blk.width);
        }
    }
    const std::vector<float>& at(ActivationKind k, int l, int64_t p) const { return rows.at({int(k), l, p}); }
};

// The scan's inputs and the Δ it used, through the existing ScanObserver (an independent path).
struct Observer : ScanObserver {
    std::map<std::pair<int, int64_t>, std::vector<float>> dt, x, B, C;
    int64_t E = 0, GN = 0;
    void on_delta(const DeltaBlock&, const DeltaBlock& u) override {
        for (int64_t r = 0; r < u.rows; ++r)
            dt[{u.layer, u.positions[r]}] =
                std::vector<float>(u.data + r * u.ld, u.data + r * u.ld + u.channels);
    }
    bool wants_scan_inputs(int) const override { return true; }
    void on_scan_inputs(const ScanInputs& in) override {
        for (int64_t r = 0; r < in.rows; ++r) {
            x[{in.layer, in.positions[r]}] = std::vector<float>(in.x + r * in.ldx, in.x + r * in.ldx + E);
            B[{in.layer, in.positions[r]}] = std::vector<float>(in.B + r * in.ldbc, in.B + r * in.ldbc + GN);
            C[{in.layer, in.positions[r]}] = std::vector<float>(in.C + r * in.ldbc, in.C + r * in.ldbc + GN);
        }
    }
};

class Activations : public ::testing::TestWithParam<Arch> {};

}  // namespace

TEST_P(Activations, CapturedTensorsEqualIndependentComputations) {
    const ModelConfig cfg = test::tiny(GetParam());
    auto m = random_model(cfg, 11);
    std::vector<int32_t> ids(29);
    std::mt19937 rng(3);
    for (auto& i : ids) i = int32_t(rng() % 37);
    const int L = int(cfg.n_layer);

    Recorder rec;
    rec.b = 5;
    rec.e = 20;
    rec.layers = {0, L - 1};
    Observer obs;
    obs.E = cfg.d_inner;
    obs.GN = (cfg.arch == Arch::Mamba1 ? 1 : cfg.n_groups) * cfg.d_state;
    ForwardOptions opt;
    opt.chunk_tokens = 7;  // the window crosses chunk boundaries
    opt.activations = &rec;
    opt.observer = &obs;
    std::map<int64_t, std::vector<float>> logits;
    HeadRequest head;
    head.all_logits = true;
    head.logits_sink = [&](int64_t p, const float* row, int64_t V) { logits[p].assign(row, row + V); };
    run_forward(*m, ids, opt, head);

    // Capturing changes nothing: the same logits as a plain run, bit for bit.
    std::map<int64_t, std::vector<float>> plain;
    HeadRequest h2 = head;
    h2.logits_sink = [&](int64_t p, const float* row, int64_t V) { plain[p].assign(row, row + V); };
    ForwardOptions o2;
    o2.chunk_tokens = 7;
    run_forward(*m, ids, o2, h2);
    EXPECT_EQ(plain, logits);

    // Only the window and the asked layers were handed over (6 kinds × 2 layers × 15 positions).
    EXPECT_EQ(rec.rows.size(), size_t(6 * 2 * 15));
    EXPECT_LE(rec.max_rows_per_block, 7);  // never more than one chunk's window

    const int64_t D = cfg.d_model, V = m->vocab_rows();
    for (int l : {0, L - 1})
        for (int64_t p = rec.b; p < rec.e; ++p) {
            EXPECT_EQ(rec.at(ActivationKind::Dt, l, p), (obs.dt[{l, p}])) << l << " " << p;
            EXPECT_EQ(rec.at(ActivationKind::X, l, p), (obs.x[{l, p}]));
            EXPECT_EQ(rec.at(ActivationKind::B, l, p), (obs.B[{l, p}]));
            EXPECT_EQ(rec.at(ActivationKind::C, l, p), (obs.C[{l, p}]));
            // h after token p = the state of a fresh prefill of ids[0..p]
            ModelState st = make_state(*m);
            ForwardOptions o3;
            o3.stop_after_layer = l;
            run_prefill(*m, std::span<const int32_t>(ids.data(), size_t(p + 1)), st, o3);
            const auto& h = rec.at(ActivationKind::H, l, p);
            ASSERT_EQ(h.size(), st.layers[size_t(l)].ssm.size());
            for (size_t k = 0; k < h.size(); ++k) EXPECT_NEAR(h[k], st.layers[size_t(l)].ssm[k], 1e-5);
        }
    // The last layer's residual stream feeds the final norm and the head: RMSNorm(resid; norm_f)·lm_headᵀ =
    // logits.
    for (int64_t p = rec.b; p < rec.e; ++p) {
        const auto& x = rec.at(ActivationKind::Resid, L - 1, p);
        ASSERT_EQ(int64_t(x.size()), D);
        double ss = 0;
        for (float v : x) ss += double(v) * v;
        const double inv = 1.0 / std::sqrt(ss / double(D) + cfg.norm_eps);
        for (int64_t v = 0; v < V; ++v) {
            double dot = 0;
            for (int64_t d = 0; d < D; ++d)
                dot += double(x[size_t(d)]) * inv * m->norm_f.data[d] * m->lm_head.data[v * D + d];
            EXPECT_NEAR(dot, logits[p][size_t(v)], 1e-4) << p << " " << v;
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Archs, Activations, ::testing::Values(Arch::Mamba1, Arch::Mamba2),
                         [](const auto& i) { return i.param == Arch::Mamba1 ? "Mamba1" : "Mamba2"; });
