// Retrieval evaluation (method doc §9.1, §10): the haystack builder, the scorer, the filtered decoder and the
// result files.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>

#include <unistd.h>

#include "engine/tiny_model.h"
#include "mambascope/config.h"
#include "mambascope/decimamba.h"
#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "mambascope/retrieval.h"
#include "mambascope/tokenizer.h"

using namespace mambascope;

namespace {

const char* kFiller =
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home\n and happy disposition, seemed to "
    "unite some of the best blessings of existence;   and had lived nearly twenty-one years in the world "
    "with very little to distress or vex her.";

std::string decode(const Tokenizer& t, const std::vector<int32_t>& ids, int64_t b, int64_t e) {
    return t.decode(std::vector<int32_t>(ids.begin() + b, ids.begin() + e));
}

// Checks the structure of a haystack against its template.
void expect_haystack(const HaystackBuilder& hb, const Haystack& h, int64_t length, double depth) {
    const Tokenizer& t = hb.tokenizer();
    const PromptTemplate& tp = hb.prompt_template();
    ASSERT_EQ(static_cast<int64_t>(h.ids.size()), length);
    const int64_t prefix = tp.prefix.empty() ? 0 : static_cast<int64_t>(t.encode(tp.prefix).size());
    const int64_t question = static_cast<int64_t>(t.encode(tp.question).size());
    // the needle sits after round(depth × filler) filler tokens
    EXPECT_EQ(h.needle_begin, prefix + std::llround(depth * static_cast<double>(h.filler_tokens)));
    EXPECT_EQ(decode(t, h.ids, h.needle_begin, h.needle_end), fill_needle(tp, h.key));
    EXPECT_EQ(decode(t, h.ids, 0, prefix), tp.prefix);
    EXPECT_EQ(decode(t, h.ids, length - question, length), tp.question);
    EXPECT_EQ(h.filler_tokens, length - prefix - question - (h.needle_end - h.needle_begin));
    EXPECT_EQ(t.decode(h.answer), h.key);
    EXPECT_EQ(static_cast<int64_t>(h.key.size()), tp.key_digits);
}

std::shared_ptr<const Model> tiny_byte_model(Arch arch, uint64_t seed) {
    ModelConfig c = test::tiny(arch);
    c.vocab_size = 256;
    return random_model(c, seed);
}

// Raw Δ of every layer and channel (per token), from a vanilla pass.
class DeltaRecorder : public ScanObserver {
  public:
    std::vector<std::vector<std::vector<float>>> by_layer;  // [layer][channel][t]
    void on_delta(const DeltaBlock& raw, const DeltaBlock&) override {
        if (by_layer.size() <= size_t(raw.layer)) by_layer.resize(size_t(raw.layer) + 1);
        auto& L = by_layer[size_t(raw.layer)];
        L.resize(size_t(raw.channels));
        for (int64_t r = 0; r < raw.rows; ++r)
            for (int64_t c = 0; c < raw.channels; ++c) L[size_t(c)].push_back(raw.at(r, c));
    }
};

// A filter that drops about half of the tokens in every other channel (the median Δ as threshold).
DeltaFilter median_filter(const Model& m, const std::vector<int32_t>& ids) {
    DeltaRecorder rec;
    ForwardOptions o;
    o.observer = &rec;
    run_forward(m, ids, o);
    DeltaFilter f;
    f.threshold.assign(size_t(m.config.n_layer), std::vector<float>(size_t(m.config.channels()), -INFINITY));
    for (size_t l = 0; l < rec.by_layer.size(); ++l)
        for (size_t c = 0; c < rec.by_layer[l].size(); c += 2) {
            auto v = rec.by_layer[l][c];
            std::sort(v.begin(), v.end());
            // halfway between two neighbours: no token sits on the threshold, where rounding could flip it
            f.threshold[l][c] = 0.5f * (v[v.size() / 2 - 1] + v[v.size() / 2]);
        }
    return f;
}

std::vector<int32_t> random_ids(int64_t n, int64_t vocab, uint32_t seed) {
    std::vector<int32_t> ids(static_cast<size_t>(n), 0);
    uint32_t x = seed;
    for (auto& id : ids) x = x * 1664525u + 1013904223u, id = int32_t((x >> 8) % uint32_t(vocab));
    return ids;
}

}  // namespace

TEST(Haystack, ByteTokenizerExactLengthAndNeedleAtEveryDepth) {
    HaystackBuilder hb(make_byte_tokenizer(), kFiller, standard_passkey_template());
    for (int64_t L : {hb.min_length(), hb.min_length() + 1, int64_t(300), int64_t(1000)})
        for (double d : {0.0, 0.1, 0.25, 0.5, 0.77, 1.0}) {
            const Haystack h = hb.build(L, d, "31415", 7);
            expect_haystack(hb, h, L, d);
        }
    // at depth 1 the needle is followed directly by the question
    const Haystack h = hb.build(400, 1.0, "27182", 0);
    EXPECT_EQ(h.needle_end, 400 - static_cast<int64_t>(hb.prompt_template().question.size()));
}

TEST(Haystack, FillerIsWhitespaceFoldedAndWraps) {
    EXPECT_EQ(fold_whitespace("  a \n\n b\t\tc  "), "a b c");
    PromptTemplate t = standard_passkey_template();
    t.prefix.clear();
    HaystackBuilder hb(make_byte_tokenizer(), kFiller, t);
    const std::string folded = fold_whitespace(kFiller);
    ASSERT_EQ(hb.filler_size(), static_cast<int64_t>(folded.size()));
    // a haystack longer than the filler wraps around it, starting at the offset
    const int64_t L = 3 * hb.filler_size();
    const Haystack h = hb.build(L, 0.0, "11111", 5);
    const std::string text = hb.tokenizer().decode(h.ids);
    const std::string after_needle = text.substr(size_t(h.needle_end), 2 * folded.size());
    const std::string expect = (folded + folded + folded).substr(5, 2 * folded.size());
    EXPECT_EQ(after_needle, expect);
}

TEST(Haystack, GptNeoxTokenizerExactLengthAndNeedle) {
    auto tok = builtin_gpt_neox_tokenizer();
    HaystackBuilder hb(tok, std::string(kFiller) + " " + kFiller, standard_passkey_template());
    for (int64_t L : {int64_t(120), int64_t(257), int64_t(1024)})
        for (double d : {0.0, 0.4, 1.0}) {
            const Haystack h = hb.build(L, d, "90210", 3);
            expect_haystack(hb, h, L, d);
        }
}

TEST(Haystack, BadRequestsAreErrors) {
    HaystackBuilder hb(make_byte_tokenizer(), kFiller, standard_passkey_template());
    EXPECT_THROW(hb.build(hb.min_length() - 1, 0.5, "12345", 0), Error);
    EXPECT_THROW(hb.build(1000, 1.5, "12345", 0), Error);
    EXPECT_THROW(hb.build(1000, -0.1, "12345", 0), Error);
    EXPECT_THROW(hb.build(1000, std::nan(""), "12345", 0), Error);
    PromptTemplate no_key = standard_passkey_template();
    no_key.needle = " The pass key is here. ";
    EXPECT_THROW(HaystackBuilder(make_byte_tokenizer(), kFiller, no_key), Error);
    EXPECT_THROW(HaystackBuilder(make_byte_tokenizer(), " \n\t ", standard_passkey_template()), Error);
}

TEST(Haystack, KeysAreDeterministicDigitsPerCell) {
    const std::string k = passkey_key(0, 1024, 2, 3, 5);
    EXPECT_EQ(k, passkey_key(0, 1024, 2, 3, 5));
    ASSERT_EQ(k.size(), 5u);
    EXPECT_TRUE(std::all_of(k.begin(), k.end(), [](char c) { return c >= '0' && c <= '9'; }));
    std::set<std::string> keys;
    for (int s = 0; s < 50; ++s) keys.insert(passkey_key(0, 1024, 2, s, 5));
    EXPECT_GT(keys.size(), 45u);  // 50 draws from 10^5 keys
    EXPECT_NE(passkey_key(1, 1024, 2, 3, 5), k);
    HaystackBuilder hb(make_byte_tokenizer(), kFiller, standard_passkey_template());
    const Haystack a = hb.build_cell(0, 500, 1, 0.25, 4), b = hb.build_cell(0, 500, 1, 0.25, 4);
    EXPECT_EQ(a.ids, b.ids);
    EXPECT_EQ(a.key, passkey_key(0, 500, 1, 4, 5));
}

TEST(RetrievalScore, TeacherForcedAccuracyByHand) {
    // 3 answer tokens, vocab 4; rows' argmax: 2, 0 (tie 0/3 → the lower id), 1
    const float rows[3][4] = {{0.1f, 0.2f, 3.0f, -1.f}, {5.f, 1.f, 1.f, 5.f}, {0.f, 0.5f, 0.4f, 0.49f}};
    const std::vector<int32_t> right{2, 0, 1}, one_wrong{2, 3, 1}, all_wrong{0, 1, 2};
    AnswerScore s = score_answer(&rows[0][0], 4, 4, right);
    EXPECT_EQ(s.correct, 3);
    EXPECT_EQ(s.total, 3);
    EXPECT_TRUE(s.exact());
    s = score_answer(&rows[0][0], 4, 4, one_wrong);
    EXPECT_EQ(s.correct, 2);
    EXPECT_FALSE(s.exact());
    EXPECT_EQ(score_answer(&rows[0][0], 4, 4, all_wrong).correct, 0);
}

TEST(RetrievalScore, GenerationMustStartWithTheKey) {
    EXPECT_TRUE(generation_correct("12345.", "12345"));
    EXPECT_TRUE(generation_correct("  12345 is", "12345"));
    EXPECT_FALSE(generation_correct("1234.", "12345"));
    EXPECT_FALSE(generation_correct("x12345", "12345"));
    EXPECT_FALSE(generation_correct("", "12345"));
}

class FilteredDecoder : public ::testing::TestWithParam<Arch> {};

TEST_P(FilteredDecoder, StepsEqualTheFilteredPrefill) {
    auto m = random_model(test::tiny(GetParam()), 41);
    const int64_t T = 90, k = 7;
    const auto ids = random_ids(T, m->config.vocab_size, 5);
    const DeltaFilter f = median_filter(*m, ids);
    const int64_t V = m->vocab_rows();
    // one filtered prefill of all T tokens: logits at T−k−1 .. T−2 predict ids[T−k .. T−1]
    std::vector<float> ref(size_t(k * V));
    HeadRequest head;
    for (int64_t p = T - k - 1; p < T - 1; ++p) head.logits_positions.push_back(p);
    head.logits_sink = [&](int64_t p, const float* row, int64_t) {
        std::copy_n(row, V, ref.begin() + (p - (T - k - 1)) * V);
    };
    ForwardOptions o;
    o.filter = &f;
    run_forward(*m, ids, o, head);
    // filtered prefill of the first T−k tokens, then k filtered decode steps
    ModelState st = make_state(*m);
    std::vector<float> first;
    HeadRequest h1;
    h1.logits_positions = {T - k - 1};
    h1.logits_sink = [&](int64_t, const float* row, int64_t) { first.assign(row, row + V); };
    run_prefill(*m, std::span<const int32_t>(ids.data(), size_t(T - k)), st, o, h1);
    Decoder keep(*m, st, Device::Cpu, Precision::Fp32, &f), plain(*m, st);
    double max_err = 0, max_plain_diff = 0, max_ref = 0;
    std::vector<float> lk = first, lp = first;
    for (int64_t i = 0; i < k; ++i) {
        for (int64_t v = 0; v < V; ++v) {
            const float r = ref[size_t(i * V + v)];
            max_err = std::max(max_err, double(std::abs(lk[size_t(v)] - r)));
            max_plain_diff = std::max(max_plain_diff, double(std::abs(lp[size_t(v)] - r)));
            max_ref = std::max(max_ref, double(std::abs(r)));
        }
        if (i + 1 < k) {
            keep.step(ids[size_t(T - k + i)], lk);
            plain.step(ids[size_t(T - k + i)], lp);
        }
    }
    EXPECT_LT(max_err, 1e-4 * std::max(1.0, max_ref));
    // the filter matters: unfiltered steps drift away from the filtered prefill
    EXPECT_GT(max_plain_diff, 1e-3 * std::max(1.0, max_ref));
    EXPECT_EQ(keep.state().tokens_seen, T - 1);
}

TEST_P(FilteredDecoder, DecimatedPrefillStateContinuesDecoding) {
    auto m = random_model(test::tiny(GetParam()), 42);
    const int64_t T = 200;
    const auto ids = random_ids(T, m->config.vocab_size, 9);
    DeciParams dp;
    dp.L_base = 40;
    dp.resp_len = 10;
    ModelState st;
    std::vector<float> last;
    HeadRequest head;
    head.logits_positions = {T - 2};
    head.logits_sink = [&](int64_t, const float* row, int64_t V) { last.assign(row, row + V); };
    std::map<int, std::vector<int64_t>> kept;
    run_decimamba(*m, std::span<const int32_t>(ids.data(), size_t(T - 1)), dp, head, {}, &kept, nullptr, &st);
    ASSERT_FALSE(kept.empty());
    ASSERT_LT(kept.begin()->second.size(), size_t(T - 1));  // something was dropped
    EXPECT_EQ(st.tokens_seen, T - 1);
    // a decimated prefill of all T tokens keeps the same positions among the first T−1 (the last resp_len are
    // always kept); its logits at T−1 equal one decode step from the T−1 state
    dp.resp_len = 11;
    std::vector<float> ref;
    HeadRequest h2;
    h2.logits_positions = {T - 1};
    h2.logits_sink = [&](int64_t, const float* row, int64_t V) { ref.assign(row, row + V); };
    std::map<int, std::vector<int64_t>> kept2;
    run_decimamba(*m, ids, dp, h2, {}, &kept2);
    ASSERT_EQ(kept2.begin()->second.size(), kept.begin()->second.size() + 1);
    ASSERT_TRUE(
        std::equal(kept.begin()->second.begin(), kept.begin()->second.end(), kept2.begin()->second.begin()));
    Decoder dec(*m, st);
    std::vector<float> step;
    dec.step(ids[size_t(T - 1)], step);
    ASSERT_EQ(step.size(), ref.size());
    for (size_t v = 0; v < ref.size(); ++v)
        EXPECT_NEAR(step[v], ref[v], 1e-4f * std::max(1.0f, std::abs(ref[v])));
}

INSTANTIATE_TEST_SUITE_P(Arch, FilteredDecoder, ::testing::Values(Arch::Mamba1, Arch::Mamba2),
                         [](const auto& info) { return info.param == Arch::Mamba1 ? "Mamba1" : "Mamba2"; });

TEST(RetrievalRun, GridRowsScoresAndJsonRoundTrip) {
    auto m = tiny_byte_model(Arch::Mamba2, 43);
    PromptTemplate t = standard_passkey_template();
    t.prefix.clear();
    HaystackBuilder hb(make_byte_tokenizer(), kFiller, t);
    RetrievalRequest req;
    req.lengths = {120, 200};
    req.depths = {0.0, 0.5, 1.0};
    req.samples = 2;
    req.methods = {Method::Vanilla, Method::DeciMamba};
    req.deci.L_base = 50;
    RetrievalResult r = run_retrieval(*m, hb, req);
    ASSERT_EQ(r.rows.size(), 2u * 3 * 2 * 2);
    for (const auto& row : r.rows) {
        EXPECT_EQ(row.tf.total, 5);
        EXPECT_TRUE(row.generate_ran);
        // the row's teacher-forced score is what scoring its haystack alone gives
        const Haystack h = hb.build_cell(req.seed, row.length, row.depth_index, row.depth, row.sample);
        EXPECT_EQ(row.key, h.key);
        EXPECT_EQ(row.needle_begin, h.needle_begin);
    }
    // vanilla: teacher-forced accuracy equals the argmax of a plain forward over prompt + answer
    const RetrievalRow& first = r.rows[0];
    ASSERT_EQ(first.method, Method::Vanilla);
    const Haystack h = hb.build_cell(0, first.length, 0, 0.0, 0);
    std::vector<int32_t> seq = h.ids;
    seq.insert(seq.end(), h.answer.begin(), h.answer.end());
    int64_t correct = 0;
    HeadRequest head;
    for (int64_t k = 0; k < 5; ++k) head.logits_positions.push_back(int64_t(h.ids.size()) - 1 + k);
    head.logits_sink = [&](int64_t p, const float* row, int64_t V) {
        const int64_t am = std::max_element(row, row + V) - row;
        correct += am == h.answer[size_t(p - int64_t(h.ids.size()) + 1)];
    };
    run_forward(*m, seq, {}, head);
    EXPECT_EQ(first.tf.correct, correct);
    // file round trip
    const auto dir = std::filesystem::temp_directory_path() / ("ms_retrieval_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    write_retrieval_json(dir / "r.json", r);
    write_retrieval_csv(dir / "r.csv", r);
    const RetrievalResult back = read_retrieval_json(dir / "r.json");
    ASSERT_EQ(back.rows.size(), r.rows.size());
    for (size_t i = 0; i < r.rows.size(); ++i) {
        EXPECT_EQ(back.rows[i].key, r.rows[i].key);
        EXPECT_EQ(back.rows[i].tf.correct, r.rows[i].tf.correct);
        EXPECT_EQ(back.rows[i].generated_correct, r.rows[i].generated_correct);
        EXPECT_EQ(back.rows[i].method, r.rows[i].method);
    }
    EXPECT_EQ(back.request.lengths, req.lengths);
    EXPECT_EQ(back.prompt_template.needle, t.needle);
    EXPECT_DOUBLE_EQ(back.cell_accuracy(Method::Vanilla, 200, 1), r.cell_accuracy(Method::Vanilla, 200, 1));
    std::ifstream csv(dir / "r.csv");
    int lines = 0;
    for (std::string line; std::getline(csv, line);) ++lines;
    EXPECT_EQ(lines, 1 + int(r.rows.size()));
    // bad files are errors, not crashes
    std::ofstream(dir / "bad.json") << "{\"format\": \"mambascope-retrieval\", \"rows\": 3}";
    EXPECT_THROW(read_retrieval_json(dir / "bad.json"), Error);
    std::ofstream(dir / "bad2.json") << "[1,2";
    EXPECT_THROW(read_retrieval_json(dir / "bad2.json"), Error);
    EXPECT_THROW(read_retrieval_json(dir / "missing.json"), Error);
    std::filesystem::remove_all(dir);
}

TEST(RetrievalRun, LongMambaWithoutCalibrationIsAnError) {
    auto m = tiny_byte_model(Arch::Mamba1, 44);
    HaystackBuilder hb(make_byte_tokenizer(), kFiller, standard_passkey_template());
    RetrievalRequest req;
    req.lengths = {300};
    req.depths = {0.5};
    req.methods = {Method::LongMamba};
    EXPECT_THROW(run_retrieval(*m, hb, req), Error);
    req.methods = {Method::Vanilla};
    req.lengths = {10};  // shorter than the template
    EXPECT_THROW(run_retrieval(*m, hb, req), Error);
}

TEST(RetrievalConfig, ModelTemplateFromConfigJson) {
    const std::string base =
        R"({"model_type": "mamba2", "hidden_size": 24, "num_hidden_layers": 2, "vocab_size": 256,
            "num_heads": 6, "head_dim": 8, "state_size": 4, "expand": 2, "n_groups": 1,
            "mambascope": {"train_len": 256, "tokenizer": "byte", "retrieval": )";
    const ModelConfig c = parse_config_json(
        base + R"({"prefix": "", "needle": " key {KEY}. ", "question": " key? ", "key_digits": 4}}})", "cfg");
    ASSERT_TRUE(c.retrieval_template.has_value());
    EXPECT_EQ(default_passkey_template(c).needle, " key {KEY}. ");
    EXPECT_EQ(default_passkey_template(c).key_digits, 4);
    EXPECT_THROW(parse_config_json(base + R"({"needle": " no key ", "question": " q "}}})", "cfg"), Error);
    EXPECT_THROW(parse_config_json(base + R"("text"}})", "cfg"), Error);
    ModelConfig plain = test::tiny(Arch::Mamba1);
    EXPECT_EQ(default_passkey_template(plain).needle, standard_passkey_template().needle);
}

TEST(RetrievalRun, GptNeoxTokenizedModelScoresEveryAnswerToken) {
    ModelConfig c = test::tiny(Arch::Mamba2);
    c.vocab_size = 50280;  // GPT-NeoX-20B's padded vocabulary
    auto m = random_model(c, 45);
    auto tok = builtin_gpt_neox_tokenizer();
    HaystackBuilder hb(tok, std::string(kFiller) + " " + kFiller, standard_passkey_template());
    RetrievalRequest req;
    req.lengths = {hb.min_length() + 40};
    req.depths = {0.0, 1.0};
    req.samples = 3;
    req.methods = {Method::Vanilla};
    const RetrievalResult r = run_retrieval(*m, hb, req);
    ASSERT_EQ(r.rows.size(), 6u);
    for (const auto& row : r.rows) {
        const Haystack h = hb.build_cell(0, row.length, row.depth_index, row.depth, row.sample);
        EXPECT_EQ(row.tf.total, static_cast<int64_t>(h.answer.size()));  // BPE: the key is 1-3 tokens
        EXPECT_EQ(tok->decode(h.answer), row.key);
        EXPECT_TRUE(row.generate_ran);
        EXPECT_EQ(row.generated_correct, generation_correct(row.generated, row.key));
    }
}

TEST(RetrievalRequestMapping, MethodParametersSurviveTheRoundTrip) {
    RetrievalRequest r;
    r.methods = {Method::LongMamba, Method::DeciMamba};
    r.calibration_path = "cal.h5";
    r.c = 0.01;
    r.b = 1.5;
    r.activate_above = 777;
    r.deci.layers = {2, 4};
    r.deci.L_base = 300;
    r.deci.beta = 0.5;
    r.device = Device::Auto;
    const AnalysisRequest a = to_analysis_request(r);
    const RetrievalRequest back = to_retrieval_request(a);
    EXPECT_EQ(back.methods, r.methods);
    EXPECT_EQ(back.calibration_path, r.calibration_path);
    EXPECT_EQ(back.c, r.c);
    EXPECT_EQ(back.b, r.b);
    EXPECT_EQ(back.activate_above, r.activate_above);
    EXPECT_EQ(back.deci.layers, r.deci.layers);
    EXPECT_EQ(back.deci.L_base, r.deci.L_base);
    EXPECT_EQ(back.deci.beta, r.deci.beta);
    EXPECT_EQ(back.device, r.device);
}
