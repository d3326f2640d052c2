// Retrieval evaluation (passkey / needle in a haystack; method doc §10). See retrieval.h.
#include "mambascope/retrieval.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/json_limits.h"
#include "mambascope/atomic_file.h"
#include "mambascope/calibration.h"
#include "mambascope/decimamba.h"
#include "mambascope/error.h"
#include "mambascope/longmamba.h"
#include "mambascope/session.h"
#include "mambascope/sha256.h"
#include "mambascope/text.h"

namespace mambascope {
namespace {

using json = nlohmann::json;

// splitmix64: a counter-based hash, identical on every platform (std distributions are not).
uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

uint64_t cell_hash(uint64_t seed, int64_t length, int depth_index, int sample, uint64_t salt) {
    uint64_t h = mix(seed ^ salt);
    h = mix(h ^ static_cast<uint64_t>(length));
    h = mix(h ^ static_cast<uint64_t>(depth_index));
    return mix(h ^ static_cast<uint64_t>(sample));
}

constexpr uint64_t kKeySalt = 0x6b6579;     // "key"
constexpr uint64_t kFillerSalt = 0x66696c;  // "fil"

void replace_all(std::string& s, const std::string& from, const std::string& to) {
    for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
        s.replace(p, from.size(), to);
}

// Writes `content` to `path` atomically (mambascope/atomic_file.h: every step checked, the temp file removed
// on any failure).
void write_text_atomic(const std::filesystem::path& path, const std::string& content) {
    write_file_atomic(path, content);
}

int64_t argmax_row(const float* row, int64_t V) {
    int64_t best = 0;
    for (int64_t v = 1; v < V; ++v)
        if (row[v] > row[best]) best = v;
    return best;
}

}  // namespace

PromptTemplate standard_passkey_template() {
    PromptTemplate t;
    t.prefix =
        "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will "
        "quiz you about the important information there. ";
    t.needle = " The pass key is {KEY}. Remember it. {KEY} is the pass key. ";
    t.question = " What is the pass key? The pass key is ";
    t.key_digits = 5;
    return t;
}

PromptTemplate default_passkey_template(const ModelConfig& config) {
    return config.retrieval_template ? *config.retrieval_template : standard_passkey_template();
}

std::string fill_needle(const PromptTemplate& t, const std::string& key) {
    std::string s = t.needle;
    replace_all(s, "{KEY}", key);
    return s;
}

std::string fold_whitespace(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    bool space = false;
    for (char ch : s) {
        const bool ws = ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r' || ch == '\f' || ch == '\v';
        if (ws) {
            space = true;
            continue;
        }
        if (space && !out.empty()) out += ' ';
        space = false;
        out += ch;
    }
    return out;
}

std::string passkey_key(uint64_t seed, int64_t length, int depth_index, int sample, int64_t digits) {
    MS_CHECK(digits >= 1 && digits <= 32, "key digits must be in 1..32");
    std::string key;
    uint64_t h = cell_hash(seed, length, depth_index, sample, kKeySalt);
    for (int64_t i = 0; i < digits; ++i) {
        h = mix(h + static_cast<uint64_t>(i));
        key += static_cast<char>('0' + h % 10);
    }
    return key;
}

HaystackBuilder::HaystackBuilder(std::shared_ptr<const Tokenizer> tokenizer, std::string_view filler_utf8,
                                 PromptTemplate tmpl)
    : tok_(std::move(tokenizer)), tmpl_(std::move(tmpl)) {
    MS_CHECK(tok_ != nullptr, "HaystackBuilder needs a tokenizer");
    if (tmpl_.needle.find("{KEY}") == std::string::npos)
        throw Error("the needle template has no {KEY}", "write the needle with {KEY} where the key goes");
    if (tmpl_.question.empty()) throw Error("the question template is empty");
    const std::string folded = fold_whitespace(filler_utf8);
    if (folded.empty()) throw Error("the filler text is empty", "give a text file with some prose in it");
    filler_ = tok_->encode(folded);
    if (!tmpl_.prefix.empty()) prefix_ = tok_->encode(tmpl_.prefix);
    question_ = tok_->encode(tmpl_.question);
}

int64_t HaystackBuilder::min_length() const {
    const std::string probe_key(static_cast<size_t>(tmpl_.key_digits), '0');
    return static_cast<int64_t>(prefix_.size() + tok_->encode(fill_needle(tmpl_, probe_key)).size() +
                                question_.size());
}

Haystack HaystackBuilder::build(int64_t length, double depth, const std::string& key,
                                int64_t filler_offset) const {
    if (!(depth >= 0.0 && depth <= 1.0))
        throw Error("needle depth " + std::to_string(depth) + " is outside [0, 1]",
                    "depths are fractions of the filler: 0 = start, 1 = end");
    if (length > kMaxHaystackTokens)
        throw Error("haystack length " + std::to_string(length) + " is above the limit of " +
                    std::to_string(kMaxHaystackTokens) + " tokens");
    const std::vector<int32_t> needle = tok_->encode(fill_needle(tmpl_, key));
    const int64_t fixed = static_cast<int64_t>(prefix_.size() + needle.size() + question_.size());
    const int64_t n_fill = length - fixed;
    if (n_fill < 0)
        throw Error("haystack length " + std::to_string(length) + " is too short for the template (" +
                        std::to_string(fixed) + " tokens without filler)",
                    "ask for longer haystacks");
    Haystack h;
    h.key = key;
    h.length = length;
    h.depth = depth;
    h.filler_tokens = n_fill;
    const int64_t F = static_cast<int64_t>(filler_.size());
    h.filler_offset = ((filler_offset % F) + F) % F;
    const int64_t before = std::llround(depth * static_cast<double>(n_fill));
    h.ids.reserve(static_cast<size_t>(length));
    h.ids.insert(h.ids.end(), prefix_.begin(), prefix_.end());
    auto put_filler = [&](int64_t from, int64_t count) {  // filler tokens [from, from + count), wrapping
        for (int64_t i = 0; i < count; ++i) h.ids.push_back(filler_[static_cast<size_t>((from + i) % F)]);
    };
    put_filler(h.filler_offset, before);
    h.needle_begin = static_cast<int64_t>(h.ids.size());
    h.ids.insert(h.ids.end(), needle.begin(), needle.end());
    h.needle_end = static_cast<int64_t>(h.ids.size());
    put_filler(h.filler_offset + before, n_fill - before);
    h.ids.insert(h.ids.end(), question_.begin(), question_.end());
    MS_CHECK(static_cast<int64_t>(h.ids.size()) == length, "haystack length mismatch");
    h.answer = tok_->encode(key);
    return h;
}

Haystack HaystackBuilder::build_cell(uint64_t seed, int64_t length, int depth_index, double depth,
                                     int sample) const {
    const std::string key = passkey_key(seed, length, depth_index, sample, tmpl_.key_digits);
    const uint64_t off = cell_hash(seed, length, depth_index, sample, kFillerSalt);
    return build(length, depth, key, static_cast<int64_t>(off % static_cast<uint64_t>(filler_.size())));
}

AnswerScore score_answer(const float* rows, int64_t vocab, int64_t ld, std::span<const int32_t> answer) {
    AnswerScore s;
    for (size_t k = 0; k < answer.size(); ++k) {
        const float* row = rows + static_cast<int64_t>(k) * ld;
        s.correct += argmax_row(row, vocab) == answer[k] ? 1 : 0;
        s.total += 1;
    }
    return s;
}

bool generation_correct(std::string_view generated, std::string_view key) {
    size_t i = 0;
    while (i < generated.size() && generated[i] == ' ') ++i;
    return !key.empty() && generated.substr(i, key.size()) == key;
}

RunInput haystack_run_input(const Haystack& h, const Tokenizer& tok) {
    RunInput in;
    in.ids = h.ids;
    in.ids.insert(in.ids.end(), h.answer.begin(), h.answer.end());
    int64_t off = 0;
    for (int32_t id : in.ids) {
        std::string s = tok.token_text(id);
        in.byte_offsets.push_back(off);
        off += static_cast<int64_t>(s.size());
        in.token_strings.push_back(std::move(s));
    }
    in.text_bytes = off;
    in.text_path = "(passkey haystack)";
    return in;
}

RunInput session_haystack_input(const Session& s, const Model& model, Haystack* out,
                                std::map<std::string, std::string>* provenance) {
    const auto& hs = s.haystack;
    if (hs.length <= 0) throw Error("the session has no haystack");
    const auto filler_path = resolve_filler_path(s);
    const std::string filler = read_text_file(filler_path);
    auto tok = choose_tokenizer(model.dir, model.config.tokenizer);
    const PromptTemplate t =
        hs.prompt == "standard" ? standard_passkey_template() : default_passkey_template(model.config);
    HaystackBuilder hb(tok, filler, t);
    const Haystack h = hb.build_cell(hs.seed, hs.length, hs.depth_index, hs.depth, hs.sample);
    RunInput in = haystack_run_input(h, *tok);
    in.text_path = "(passkey haystack; filler " + filler_path.string() + ")";
    if (provenance) {
        auto& p = *provenance;
        p["haystack.key"] = h.key;
        p["haystack.needle_begin"] = std::to_string(h.needle_begin);
        p["haystack.needle_end"] = std::to_string(h.needle_end);
        p["haystack.answer_begin"] = std::to_string(h.ids.size());
        p["haystack.length"] = std::to_string(h.length);
        p["haystack.depth"] = std::to_string(h.depth);
        p["haystack.filler"] = filler_path.string();
    }
    if (out) *out = h;
    return in;
}

AnalysisRequest to_analysis_request(const RetrievalRequest& r) {
    AnalysisRequest a;
    a.methods = r.methods;
    a.calibration_path = r.calibration_path;
    a.c = r.c;
    a.b = r.b;
    a.activate_above = r.activate_above;
    a.deci.layers = r.deci.layers;  // a retrieval request carries these three (its files store them)
    a.deci.L_base = r.deci.L_base;
    a.deci.beta = r.deci.beta;
    a.device = r.device;
    return a;
}

RetrievalRequest to_retrieval_request(const AnalysisRequest& a) {
    RetrievalRequest r;
    r.methods = a.methods;
    r.calibration_path = a.calibration_path;
    r.c = a.c;
    r.b = a.b;
    r.activate_above = a.activate_above;
    r.deci.layers = a.deci.layers;
    r.deci.L_base = a.deci.L_base;
    r.deci.beta = a.deci.beta;
    r.device = a.device;
    return r;
}

std::map<std::string, std::string> answer_haystack(const Model& model, const Haystack& h,
                                                   const AnalysisRequest& request,
                                                   const ProgressFn& progress) {
    report_progress(progress, 0.0, "answering the passkey question");
    RetrievalRequest rr = to_retrieval_request(request);
    rr.teacher_forced = true;
    rr.generate = true;
    std::optional<Calibration> cal;
    if (!rr.calibration_path.empty()) cal = load_calibration(rr.calibration_path);
    auto tok = choose_tokenizer(model.dir, model.config.tokenizer);
    std::map<std::string, std::string> p;
    const auto& methods = request.methods;
    for (size_t i = 0; i < methods.size(); ++i) {
        const Method m = methods[i];
        if (m == Method::LongMamba && !cal) continue;
        const std::string name = method_name(m);
        report_progress(progress, double(i) / double(methods.size()),
                        "answering the passkey question: " + name);
        const RetrievalRow row = score_haystack(model, *tok, h, m, rr, cal ? &*cal : nullptr);
        p["haystack.answer." + name] = row.generated;
        p["haystack.answer_correct." + name] = row.generated_correct ? "1" : "0";
        p["haystack.tf_correct." + name] = std::to_string(row.tf.correct);
        p["haystack.tf_total." + name] = std::to_string(row.tf.total);
    }
    return p;
}

namespace {

struct MethodSetup {
    DeltaFilter filter;  // LongMamba
    DeciParams deci;
};

DeltaFilter longmamba_filter(const Calibration& cal, const RetrievalRequest& req, int64_t S) {
    FilterParams fp;
    fp.c = req.c;
    fp.b = req.b;
    fp.activate_above = req.activate_above;
    return make_longmamba_filter(cal, fp, S);
}

DeciParams deci_params(const Model& model, const RetrievalRequest& req) {
    return resolve_deci_params(model.config, req.deci);
}

// One forward of `ids` with the method; logits rows at `positions` go to `rows` (V each, in order);
// `state_out` (optional) gets the state after the prefill.
void method_forward(const Model& model, std::span<const int32_t> ids, Method method,
                    const RetrievalRequest& req, const Calibration* cal,
                    const std::vector<int64_t>& positions, std::vector<float>& rows, ModelState* state_out,
                    DeltaFilter* filter_out) {
    const int64_t V = model.vocab_rows();
    rows.assign(positions.size() * static_cast<size_t>(V), std::numeric_limits<float>::quiet_NaN());
    HeadRequest head;
    head.logits_positions = positions;
    head.logits_sink = [&](int64_t p, const float* row, int64_t Vr) {
        const auto it = std::lower_bound(positions.begin(), positions.end(), p);
        if (it == positions.end() || *it != p) return;
        std::copy_n(row, Vr, rows.begin() + (it - positions.begin()) * V);
    };
    const int64_t S = static_cast<int64_t>(ids.size());
    if (method == Method::DeciMamba) {
        run_decimamba(model, ids, deci_params(model, req), head, {}, nullptr, nullptr, state_out);
        return;
    }
    ForwardOptions opt;
    opt.device = req.device;
    opt.precision = req.precision;
    DeltaFilter filter;
    if (method == Method::LongMamba) {
        if (!cal) throw Error("LongMamba needs a calibration", "pass --calibration FILE");
        filter = longmamba_filter(*cal, req, S);
        opt.filter = filter.empty() ? nullptr : &filter;
    }
    ModelState st = make_state(model);
    run_prefill(model, ids, st, opt, head);
    if (state_out) *state_out = std::move(st);
    if (filter_out) *filter_out = std::move(filter);
}

}  // namespace

RetrievalRow score_haystack(const Model& model, const Tokenizer& tok, const Haystack& h, Method method,
                            const RetrievalRequest& req, const Calibration* cal) {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t V = model.vocab_rows();
    RetrievalRow row;
    row.method = method;
    row.length = h.length;
    row.depth = h.depth;
    row.key = h.key;
    row.needle_begin = h.needle_begin;
    const int64_t L = static_cast<int64_t>(h.ids.size());
    const int64_t n_ans = static_cast<int64_t>(h.answer.size());
    // One prefill of the prompt with the method (method doc §10.3); both scores continue from its state with
    // decode steps that keep LongMamba's filter (§9.1): teacher-forced steps feed the true answer, greedy
    // steps the model's own choices.
    std::vector<float> rows;
    ModelState st;
    DeltaFilter filter;
    method_forward(model, h.ids, method, req, cal, {L - 1}, rows, &st, &filter);
    const bool keep = req.decode_filter && method == Method::LongMamba && !filter.empty();
    const std::vector<float> first(rows.begin(), rows.begin() + V);
    if (req.teacher_forced && n_ans > 0) {
        std::vector<float> answer_rows(static_cast<size_t>(n_ans * V));
        std::copy(first.begin(), first.end(), answer_rows.begin());
        Decoder dec(model, st, req.device, req.precision, keep ? &filter : nullptr);
        std::vector<float> logits;
        for (int64_t k = 1; k < n_ans; ++k) {
            dec.step(h.answer[static_cast<size_t>(k - 1)], logits);
            std::copy(logits.begin(), logits.end(), answer_rows.begin() + k * V);
        }
        row.tf = score_answer(answer_rows.data(), V, V, h.answer);
    }
    if (req.generate) {
        Decoder dec(model, st, req.device, req.precision, keep ? &filter : nullptr);
        std::vector<int32_t> out;
        std::vector<float> logits = first;
        const int64_t steps = n_ans + kRetrievalExtraNewTokens;
        for (int64_t s = 0; s < steps; ++s) {
            const int32_t next = static_cast<int32_t>(argmax_row(logits.data(), V));
            out.push_back(next);
            if (s + 1 < steps) dec.step(next, logits);
        }
        std::string text;
        for (int32_t id : out)
            text += id < tok.vocab_size() ? tok.token_text(id) : std::string("\xEF\xBF\xBD");
        row.generated = text;
        row.generated_correct = generation_correct(text, h.key);
        row.generate_ran = true;
    }
    row.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return row;
}

RetrievalJob::RetrievalJob(const Model& model, const HaystackBuilder& builder, const RetrievalRequest& req)
    : model_(model), builder_(builder), req_(req) {
    if (req.lengths.empty()) throw Error("no haystack lengths given", "pass --lengths, e.g. 256,1024,4096");
    if (req.depths.empty()) throw Error("no needle depths given", "pass --depths, e.g. 0,0.25,0.5,0.75,1");
    if (req.samples < 1) throw Error("samples must be at least 1");
    if (req.methods.empty()) throw Error("no methods requested");
    if (!req.teacher_forced && !req.generate)
        throw Error("nothing to score", "keep teacher forcing or generation on");
    const int64_t min_len = builder.min_length();
    for (int64_t L : req.lengths)
        if (L < min_len)
            throw Error("haystack length " + std::to_string(L) + " is shorter than the template (" +
                        std::to_string(min_len) + " tokens)");
    for (double d : req.depths)
        if (!(d >= 0.0 && d <= 1.0)) throw Error("needle depth " + std::to_string(d) + " is outside [0, 1]");
    const bool needs_cal =
        std::find(req.methods.begin(), req.methods.end(), Method::LongMamba) != req.methods.end();
    if (needs_cal) {
        if (req.calibration_path.empty())
            throw Error("LongMamba needs a calibration",
                        "pass --calibration FILE (mambascope-cli calibrate)");
        cal_ = std::make_unique<Calibration>(load_calibration(req.calibration_path));
        check_calibration_matches(*cal_, model.config);
    }
    res_.request = req;
    res_.prompt_template = builder.prompt_template();
    res_.tokenizer = builder.tokenizer().name();
    res_.train_len = model.config.train_len;
    res_.model = model.dir.string();
}

RetrievalJob::~RetrievalJob() = default;

size_t RetrievalJob::unit_count() const {
    return req_.lengths.size() * req_.depths.size() * static_cast<size_t>(req_.samples);
}

RetrievalJob::Cell RetrievalJob::cell(size_t u) const {
    MS_CHECK(u < unit_count(), "retrieval: unit index out of range");
    const size_t S = static_cast<size_t>(req_.samples), D = req_.depths.size();
    return {u / (D * S), static_cast<int>((u / S) % D), static_cast<int>(u % S)};
}

double RetrievalJob::unit_cost(size_t u) const {
    return static_cast<double>(req_.lengths[cell(u).length_index]) * static_cast<double>(req_.methods.size());
}

std::string RetrievalJob::unit_name(size_t u) const {
    const Cell c = cell(u);
    return "haystack " + std::to_string(req_.lengths[c.length_index]) + ":" + std::to_string(c.depth_index) +
           ":" + std::to_string(c.sample) + " (length:depth index:sample)";
}

std::string RetrievalJob::fingerprint() const {
    // the request as the result file records it, the template, the tokenizer and the filler's tokens
    RetrievalResult id = res_;
    id.rows.clear();
    std::string f = "retrieval\nmodel " + model_.name + " " + arch_name(model_.config.arch) + " " +
                    std::to_string(model_.config.n_layer) + "x" + std::to_string(model_.config.channels()) +
                    "\n" + retrieval_json_text(id) + "\nprecision " +
                    std::to_string(static_cast<int>(req_.precision)) + "\ndevice " +
                    std::to_string(static_cast<int>(req_.device)) + "\nfiller_tokens " +
                    std::to_string(builder_.filler_size());
    if (cal_) {
        ByteWriter w;
        w.f64s(cal_->thresholds);
        w.f64s(cal_->log_decay);
        f += "\ncalibration " + sha256_hex(w.take());
    }
    return f;
}

UnitResult RetrievalJob::compute_unit(size_t u, const ProgressFn& progress) const {
    const Cell c = cell(u);
    const int64_t L = req_.lengths[c.length_index];
    const Haystack h = builder_.build_cell(req_.seed, L, c.depth_index,
                                           req_.depths[static_cast<size_t>(c.depth_index)], c.sample);
    ByteWriter w;
    w.i64(static_cast<int64_t>(req_.methods.size()));
    const double n_methods = static_cast<double>(req_.methods.size());
    for (size_t mi = 0; mi < req_.methods.size(); ++mi) {
        const Method m = req_.methods[mi];
        RetrievalRow row = score_haystack(model_, builder_.tokenizer(), h, m, req_, cal_.get());
        row.depth_index = c.depth_index;
        row.sample = c.sample;
        write_retrieval_row(w, row);
        report_progress(progress, static_cast<double>(mi + 1) / n_methods,
                        std::string(method_name(m)) + " at " + std::to_string(L) + " tokens");
    }
    return w.take();
}

void RetrievalJob::reduce(size_t u, const UnitResult& result) {
    MS_CHECK(u == reduced_, "retrieval: units must be reduced in order");
    ByteReader r(result);
    const int64_t n = r.i64();
    if (n != static_cast<int64_t>(req_.methods.size()))
        throw Error("retrieval: a haystack's result is malformed");
    for (int64_t i = 0; i < n; ++i) res_.rows.push_back(read_retrieval_row(r));
    if (!r.done()) throw Error("retrieval: a haystack's result has trailing bytes");
    ++reduced_;
}

RetrievalResult RetrievalJob::result() const {
    MS_CHECK(reduced_ == unit_count(), "retrieval: result() before every haystack was reduced");
    RetrievalResult res = res_;
    if (req_.device != Device::Cpu) res.backend = cuda_usable() ? "cuda" : "cpu";
    return res;
}

void write_retrieval_row(ByteWriter& w, const RetrievalRow& row) {
    w.i64(static_cast<int64_t>(row.method));
    w.i64(row.length);
    w.i64(row.depth_index);
    w.f64(row.depth);
    w.i64(row.sample);
    w.str(row.key);
    w.i64(row.needle_begin);
    w.i64(row.tf.correct);
    w.i64(row.tf.total);
    w.str(row.generated);
    w.i64(row.generated_correct ? 1 : 0);
    w.i64(row.generate_ran ? 1 : 0);
    w.f64(row.seconds);
}

RetrievalRow read_retrieval_row(ByteReader& r) {
    RetrievalRow row;
    const int64_t method = r.i64();
    if (method < 0 || method > static_cast<int64_t>(Method::DeciMamba))
        throw Error("retrieval: a row's method is malformed");
    row.method = static_cast<Method>(method);
    row.length = r.i64();
    row.depth_index = static_cast<int>(r.i64());
    row.depth = r.f64();
    row.sample = static_cast<int>(r.i64());
    row.key = r.str();
    row.needle_begin = r.i64();
    row.tf.correct = r.i64();
    row.tf.total = r.i64();
    row.generated = r.str();
    row.generated_correct = r.i64() != 0;
    row.generate_ran = r.i64() != 0;
    row.seconds = r.f64();
    return row;
}

RetrievalResult run_retrieval(const Model& model, const HaystackBuilder& builder, const RetrievalRequest& req,
                              const ProgressFn& progress) {
    RetrievalJob job(model, builder, req);
    report_progress(progress, 0.0, "retrieval");
    run_units_serially(job, progress);
    return job.result();
}

double RetrievalResult::cell_accuracy(Method m, int64_t length, int depth_index, bool generated) const {
    double sum = 0;
    int64_t n = 0;
    for (const auto& r : rows) {
        if (r.method != m || r.length != length || (depth_index >= 0 && r.depth_index != depth_index))
            continue;
        if (generated) {
            if (!r.generate_ran) continue;
            sum += r.generated_correct ? 1.0 : 0.0;
            n += 1;
        } else {
            if (r.tf.total == 0) continue;
            sum += static_cast<double>(r.tf.correct) / static_cast<double>(r.tf.total);
            n += 1;
        }
    }
    return n ? sum / static_cast<double>(n) : std::numeric_limits<double>::quiet_NaN();
}

double RetrievalResult::length_accuracy(Method m, int64_t length, bool generated) const {
    return cell_accuracy(m, length, -1, generated);
}

namespace {

std::string csv_quote(const std::string& s) {
    std::string out = "\"";
    for (char ch : s) {
        if (ch == '"') out += '"';
        out += ch;
    }
    return out + "\"";
}

// Generated text may hold partial UTF-8 (a byte model's output): keep it printable and valid in the files.
std::string printable(const std::string& s) {
    std::string out;
    for (unsigned char ch : s) {
        if (ch >= 0x20 && ch < 0x7f)
            out += static_cast<char>(ch);
        else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", ch);
            out += buf;
        }
    }
    return out;
}

}  // namespace

void write_retrieval_csv(const std::filesystem::path& path, const RetrievalResult& r) {
    std::ostringstream o;
    o << "method,length,depth,sample,key,needle_begin,tf_correct,tf_total,tf_accuracy,tf_exact,generated,"
         "generated_correct,seconds\n";
    char buf[64];
    for (const auto& row : r.rows) {
        o << method_name(row.method) << ',' << row.length << ',';
        std::snprintf(buf, sizeof buf, "%.4g", row.depth);
        o << buf << ',' << row.sample << ',' << row.key << ',' << row.needle_begin << ',' << row.tf.correct
          << ',' << row.tf.total << ',';
        if (row.tf.total) {
            std::snprintf(buf, sizeof buf, "%.4f",
                          static_cast<double>(row.tf.correct) / static_cast<double>(row.tf.total));
            o << buf;
        }
        o << ',' << (row.tf.exact() ? 1 : 0) << ','
          << (row.generate_ran ? csv_quote(printable(row.generated)) : "") << ','
          << (row.generate_ran ? (row.generated_correct ? "1" : "0") : "") << ',';
        std::snprintf(buf, sizeof buf, "%.3f", row.seconds);
        o << buf << '\n';
    }
    write_text_atomic(path, o.str());
}

std::string retrieval_json_text(const RetrievalResult& r) {
    json j;
    j["format"] = "mambascope-retrieval";
    j["version"] = 1;
    j["model"] = r.model;
    j["tokenizer"] = r.tokenizer;
    j["train_len"] = r.train_len;
    j["filler"] = r.filler;
    j["backend"] = r.backend;
    j["template"] = {{"prefix", r.prompt_template.prefix},
                     {"needle", r.prompt_template.needle},
                     {"question", r.prompt_template.question},
                     {"key_digits", r.prompt_template.key_digits}};
    const auto& q = r.request;
    json methods = json::array();
    for (Method m : q.methods) methods.push_back(method_name(m));
    j["request"] = {{"lengths", q.lengths},
                    {"depths", q.depths},
                    {"samples", q.samples},
                    {"seed", q.seed},
                    {"methods", methods},
                    {"calibration", q.calibration_path.string()},
                    {"c", q.c},
                    {"b", q.b},
                    {"activate_above", q.activate_above},
                    {"deci_layers", q.deci.layers},
                    {"deci_L_base", q.deci.L_base},
                    {"deci_beta", q.deci.beta},
                    {"teacher_forced", q.teacher_forced},
                    {"generate", q.generate},
                    {"decode_filter", q.decode_filter}};
    json rows = json::array();
    for (const auto& row : r.rows)
        rows.push_back({{"method", method_name(row.method)},
                        {"length", row.length},
                        {"depth_index", row.depth_index},
                        {"depth", row.depth},
                        {"sample", row.sample},
                        {"key", row.key},
                        {"needle_begin", row.needle_begin},
                        {"tf_correct", row.tf.correct},
                        {"tf_total", row.tf.total},
                        {"generated", printable(row.generated)},
                        {"generated_correct", row.generated_correct},
                        {"generate_ran", row.generate_ran},
                        {"seconds", row.seconds}});
    j["rows"] = std::move(rows);
    return j.dump(1);
}

void write_retrieval_json(const std::filesystem::path& path, const RetrievalResult& r) {
    write_text_atomic(path, retrieval_json_text(r));
}

RetrievalResult read_retrieval_json(const std::filesystem::path& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error("cannot open retrieval result '" + path.string() + "'", "check the path");
    std::stringstream ss;
    ss << f.rdbuf();
    json j;
    try {
        check_json_nesting(ss.str(), path.string(), kMaxJsonNesting);  // before nlohmann recurses
        j = json::parse(ss.str(), nullptr, true, false);
    } catch (const std::exception& e) {
        throw Error(path.string() + ": not valid JSON (" + std::string(e.what()).substr(0, 200) + ")");
    }
    RetrievalResult r;
    try {
        if (!j.is_object() || j.value("format", "") != "mambascope-retrieval")
            throw Error(
                path.string() + ": not a Mambascope retrieval result (format \"mambascope-retrieval\")",
                "write one with mambascope-cli retrieval --json FILE");
        r.model = j.at("model").get<std::string>();
        r.tokenizer = j.value("tokenizer", "");
        r.train_len = j.value("train_len", int64_t(0));
        r.filler = j.value("filler", "");
        r.backend = j.value("backend", "cpu");
        const json& t = j.at("template");
        r.prompt_template.prefix = t.at("prefix").get<std::string>();
        r.prompt_template.needle = t.at("needle").get<std::string>();
        r.prompt_template.question = t.at("question").get<std::string>();
        r.prompt_template.key_digits = t.at("key_digits").get<int64_t>();
        const json& q = j.at("request");
        r.request.lengths = q.at("lengths").get<std::vector<int64_t>>();
        r.request.depths = q.at("depths").get<std::vector<double>>();
        r.request.samples = q.at("samples").get<int>();
        r.request.seed = q.at("seed").get<uint64_t>();
        r.request.methods.clear();
        for (const auto& m : q.at("methods")) r.request.methods.push_back(parse_method(m.get<std::string>()));
        r.request.calibration_path = q.value("calibration", "");
        r.request.c = q.value("c", 0.05);
        r.request.b = q.value("b", 1.0);
        r.request.activate_above = q.value("activate_above", int64_t(-1));
        r.request.deci.layers = q.value("deci_layers", std::vector<int>{});
        r.request.deci.L_base = q.value("deci_L_base", int64_t(-1));
        r.request.deci.beta = q.value("deci_beta", 1.0);
        r.request.teacher_forced = q.value("teacher_forced", true);
        r.request.generate = q.value("generate", true);
        r.request.decode_filter = q.value("decode_filter", true);
        for (const auto& row : j.at("rows")) {
            RetrievalRow x;
            x.method = parse_method(row.at("method").get<std::string>());
            x.length = row.at("length").get<int64_t>();
            x.depth_index = row.at("depth_index").get<int>();
            x.depth = row.at("depth").get<double>();
            x.sample = row.at("sample").get<int>();
            x.key = row.at("key").get<std::string>();
            x.needle_begin = row.value("needle_begin", int64_t(0));
            x.tf.correct = row.at("tf_correct").get<int64_t>();
            x.tf.total = row.at("tf_total").get<int64_t>();
            x.generated = row.value("generated", "");
            x.generated_correct = row.value("generated_correct", false);
            x.generate_ran = row.value("generate_ran", false);
            x.seconds = row.value("seconds", 0.0);
            if (x.depth_index < 0 || x.depth_index >= static_cast<int>(r.request.depths.size()))
                throw Error(path.string() + ": a row's depth_index is outside the request's depths");
            r.rows.push_back(std::move(x));
        }
    } catch (const Error&) {
        throw;
    } catch (const std::exception& e) {
        throw Error(path.string() + ": malformed retrieval result (" + std::string(e.what()).substr(0, 200) +
                    ")");
    }
    return r;
}

}  // namespace mambascope
