// The engine against HF transformers 5.17 (the independent reference), on the tiny models written by
// scripts/fixtures/make_model_fixtures.py (docs/fixtures.md): every checkpoint layout loads, and logits and Δ
// match the reference to float32 rounding; the LongMamba calibration and filtered forward match the
// independent torch implementation.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "mambascope/calibration.h"
#include "mambascope/config.h"
#include "mambascope/forward.h"
#include "mambascope/h5.h"
#include "mambascope/model.h"
#include "mambascope/weights.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

const fs::path kModels = fs::path(MAMBASCOPE_TEST_DATA_DIR) / "models";

// Normalised max error: max|a − b| / max|b|.
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
        num = std::max(num, std::abs(double(a[i]) - double(b[i])));
        den = std::max(den, std::abs(double(b[i])));
    }
    return num / std::max(den, 1e-30);
}

struct Outputs {
    std::vector<float> logits;  // (T, V)
    std::vector<float> delta;   // (L, T, C)
};

Outputs run_all(const Model& m, const std::vector<int32_t>& ids, const DeltaFilter* filter = nullptr,
                int64_t chunk = kPrefillChunkTokens) {
    Outputs o;
    const int64_t T = int64_t(ids.size()), C = m.config.channels();
    o.delta.assign(size_t(m.config.n_layer * T * C), NAN);
    struct Obs : ScanObserver {
        Outputs* o;
        int64_t T, C;
        void on_delta(const DeltaBlock&, const DeltaBlock& u) override {
            for (int64_t r = 0; r < u.rows; ++r)
                for (int64_t c = 0; c < C; ++c)
                    o->delta[size_t((u.layer * T + u.positions[r]) * C + c)] = u.at(r, c);
        }
    } obs;
    obs.o = &o, obs.T = T, obs.C = C;
    ForwardOptions opt;
    opt.observer = &obs;
    opt.filter = filter;
    opt.chunk_tokens = chunk;
    HeadRequest head;
    head.all_logits = true;
    head.logits_sink = [&](int64_t, const float* row, int64_t V) {
        o.logits.insert(o.logits.end(), row, row + V);
    };
    run_forward(m, ids, opt, head);
    return o;
}

std::vector<int32_t> read_ids(const h5::Reader& r, const std::string& path) {
    auto v = r.read_i64(path);
    return std::vector<int32_t>(v.begin(), v.end());
}

class ReferenceModel : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(ReferenceModel, LogitsAndDeltaMatchTransformers) {
    const fs::path dir = kModels / GetParam();
    ASSERT_TRUE(fs::exists(dir / "reference.h5")) << dir;
    auto m = load_model(dir);
    h5::Reader ref(dir / "reference.h5");
    auto ids = read_ids(ref, "/ids");
    auto want_logits = ref.read_f32("/logits");
    auto want_delta = ref.read_f32("/delta");
    for (int64_t chunk : {int64_t(kPrefillChunkTokens), int64_t(7)}) {  // one pass and a chunked prefill
        auto got = run_all(*m, ids, nullptr, chunk);
        EXPECT_LT(rel_err(got.logits, want_logits), 1e-4) << GetParam() << " chunk " << chunk;
        EXPECT_LT(rel_err(got.delta, want_delta), 1e-5) << GetParam() << " chunk " << chunk;
    }
}

INSTANTIATE_TEST_SUITE_P(Layouts, ReferenceModel,
                         ::testing::Values("m1_hf", "m1_orig", "m2_hf_g1", "m2_orig"));

TEST(ReferenceModelLayouts, OriginalCheckpointsDerivePaddedVocabAndTiedHeads) {
    auto m1 = load_model(kModels / "m1_orig");
    EXPECT_EQ(m1->config.source_format, "mamba_ssm");
    EXPECT_EQ(m1->config.vocab_size, 50);
    EXPECT_EQ(m1->vocab_rows(), 56);   // padded to a multiple of 8
    EXPECT_EQ(m1->config.dt_rank, 1);  // ceil(16 / 16)
    EXPECT_EQ(m1->lm_head.data, m1->embedding.data);
    auto m2 = load_model(kModels / "m2_orig");
    EXPECT_EQ(m2->config.arch, Arch::Mamba2);
    EXPECT_EQ(m2->vocab_rows(), 48);  // 40 padded to 16
    auto hf = load_model(kModels / "m1_hf");
    EXPECT_NE(hf->lm_head.data, hf->embedding.data);  // untied
    EXPECT_EQ(hf->config.d_conv, 3);
}

// transformers 5.17 normalises Mamba-2's gated RMSNorm over the full width even when n_groups > 1, while
// mamba_ssm (which trained the real checkpoints) normalises per group. The engine defaults to mamba_ssm's
// groups and can be told to reproduce transformers (config "mambascope": {"gated_norm_groups": 1}).
TEST(ReferenceModelGroups, GroupedNormDiffersFromTransformersAndFullWidthMatchesIt) {
    const fs::path dir = kModels / "m2_hf";
    h5::Reader ref(dir / "reference.h5");
    EXPECT_EQ(h5::get_attr_int(ref.root(), "hf_gated_norm_grouped"), 0);
    auto ids = read_ids(ref, "/ids");
    auto want = ref.read_f32("/logits");
    ModelConfig cfg = load_config(dir);
    ASSERT_EQ(cfg.n_groups, 2);
    auto weights = load_model_weights(dir);
    auto grouped = build_model(cfg, weights, dir);
    EXPECT_GT(rel_err(run_all(*grouped, ids).logits, want), 1e-3);
    cfg.gated_norm_groups = 1;
    auto full = build_model(cfg, weights, dir);
    EXPECT_LT(rel_err(run_all(*full, ids).logits, want), 1e-4);
}

// LongMamba against the independent torch implementation (method doc §2.3, §8.3–§8.5).
class ReferenceLongMamba : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceLongMamba, CalibrationMatchesTorchForEveryAggregateAndDecay) {
    const fs::path dir = kModels / GetParam();
    auto m = load_model(dir);
    h5::Reader ref(dir / "longmamba_ref.h5");
    auto stream = read_ids(ref, "/stream");
    auto lengths = ref.read_i64("/lengths");
    for (const char* agg : {"mean", "max"})
        for (const char* dec : {"slowest", "mean"}) {
            CalibrationParams p;
            p.train_len = h5::get_attr_int(ref.root(), "train_len");
            p.samples = int(h5::get_attr_int(ref.root(), "samples"));
            p.clamp_top = h5::get_attr_double(ref.root(), "clamp_top");
            p.lengths = lengths;
            p.aggregate = parse_aggregate(agg);
            p.m1_decay = parse_m1_decay(dec);
            auto cal = calibrate(*m, stream, p);
            const std::string g = std::string("/cal_") + agg + "_" + dec + "/";
            auto cmp = [&](const std::vector<double>& got, const std::string& name, double tol) {
                auto want = ref.read_f64(g + name);
                ASSERT_EQ(got.size(), want.size()) << name;
                double num = 0, den = 0;
                for (size_t i = 0; i < got.size(); ++i) {
                    num = std::max(num, std::abs(got[i] - want[i]));
                    den = std::max(den, std::abs(want[i]));
                }
                EXPECT_LT(num / std::max(den, 1e-30), tol) << GetParam() << " " << g << name;
            };
            cmp(cal.log_decay, "log_decay", 1e-5);
            cmp(cal.delta_sum, "delta_sum", 1e-5);
            cmp(cal.thresholds, "thresholds", 1e-5);
            cmp(cal.alpha, "alpha", 1e-9);
        }
}

TEST_P(ReferenceLongMamba, FilteredForwardMatchesTorch) {
    const fs::path dir = kModels / GetParam();
    auto m = load_model(dir);
    h5::Reader ref(dir / "longmamba_ref.h5");
    CalibrationParams p;
    p.train_len = h5::get_attr_int(ref.root(), "train_len");
    p.samples = int(h5::get_attr_int(ref.root(), "samples"));
    p.clamp_top = h5::get_attr_double(ref.root(), "clamp_top");
    p.lengths = ref.read_i64("/lengths");
    auto cal = calibrate(*m, read_ids(ref, "/stream"), p);
    FilterParams fp;
    fp.c = h5::get_attr_double(ref.root(), "c");
    fp.b = h5::get_attr_double(ref.root(), "b");
    auto ids = read_ids(ref, "/filtered/ids");
    auto filter = make_longmamba_filter(cal, fp, int64_t(ids.size()));
    ASSERT_FALSE(filter.empty());
    // the same global channels
    std::vector<uint64_t> shape;
    auto want_mask = ref.read_i64("/filtered/global_mask", &shape);
    auto mask = global_mask(cal, fp.c);
    ASSERT_EQ(mask.size(), want_mask.size());
    for (size_t i = 0; i < mask.size(); ++i) EXPECT_EQ(int64_t(mask[i]), want_mask[i]) << i;
    auto got = run_all(*m, ids, &filter);
    EXPECT_LT(rel_err(got.logits, ref.read_f32("/filtered/logits")), 1e-4);
    EXPECT_LT(rel_err(got.delta, ref.read_f32("/filtered/delta_used")), 1e-5);
    // and filtering changed the result
    auto vanilla = run_all(*m, ids);
    EXPECT_GT(rel_err(vanilla.logits, got.logits), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Models, ReferenceLongMamba, ::testing::Values("m1_hf", "m2_hf_g1"));
