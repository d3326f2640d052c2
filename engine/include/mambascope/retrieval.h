// retrieval.h: long-context retrieval evaluation (passkey / needle in a haystack; method doc §10): haystacks
// built from any filler text, scored per length × depth × method by teacher-forced answer accuracy and by
// greedy generation with the method's filter kept.
//
// Design decision: a haystack is a pure function of (filler, template, tokenizer, length, depth, sample,
// seed): the filler is whitespace-folded and tokenized once, every part of the prompt is tokenized
// separately and concatenated, so the prompt has exactly `length` tokens and the needle starts at an exact
// token position. Keys and filler offsets come from a counter-based hash of (seed, length, depth, sample),
// so any single cell can be rebuilt later (the GUI's retrieval view reopens a cell's haystack that way) and
// every method sees the same haystacks.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "mambascope/analysis.h"
#include "mambascope/config.h"
#include "mambascope/forward.h"
#include "mambascope/model.h"
#include "mambascope/progress.h"
#include "mambascope/tokenizer.h"
#include "mambascope/work_units.h"

namespace mambascope {

// The standard passkey template of LongMamba's and DeciMamba's evaluations (method doc §10.1).
PromptTemplate standard_passkey_template();
// The model's own template (config.json "mambascope.retrieval") when it has one, else the standard one.
PromptTemplate default_passkey_template(const ModelConfig& config);
// The needle with its key filled in.
std::string fill_needle(const PromptTemplate& t, const std::string& key);

// Extra greedy steps after the answer's tokens (so "12345." or a wrong longer answer is seen).
constexpr int kRetrievalExtraNewTokens = 2;
// Longest haystack the evaluation accepts (tokens).
constexpr int64_t kMaxHaystackTokens = int64_t(1) << 22;

struct Haystack {
    std::vector<int32_t> ids;     // the prompt: prefix, filler, needle, filler, question; exactly `length`
    std::vector<int32_t> answer;  // the key's tokens (appended for teacher forcing)
    std::string key;
    int64_t length = 0;
    double depth = 0;          // asked, in [0, 1]
    int64_t needle_begin = 0;  // token positions of the needle in ids: [begin, end)
    int64_t needle_end = 0;
    int64_t filler_tokens = 0;  // filler tokens in the prompt
    int64_t filler_offset = 0;  // where this haystack's filler starts in the tokenized filler
};

// Key of (seed, length, depth index, sample): `digits` decimal digits, deterministic on every platform.
std::string passkey_key(uint64_t seed, int64_t length, int depth_index, int sample, int64_t digits);

class HaystackBuilder {
  public:
    // `filler_utf8` any UTF-8 text (whitespace runs are folded to one space before tokenizing).
    HaystackBuilder(std::shared_ptr<const Tokenizer> tokenizer, std::string_view filler_utf8,
                    PromptTemplate tmpl);
    // A haystack of exactly `length` prompt tokens with the needle after round(depth × n_filler) filler
    // tokens. Error when `length` cannot hold the prefix, needle and question, or depth is outside [0, 1].
    Haystack build(int64_t length, double depth, const std::string& key, int64_t filler_offset) const;
    // The cell's haystack (key and filler offset from passkey_key / the same hash).
    Haystack build_cell(uint64_t seed, int64_t length, int depth_index, double depth, int sample) const;
    int64_t min_length() const;  // fewest prompt tokens that fit the template with no filler
    int64_t filler_size() const { return static_cast<int64_t>(filler_.size()); }
    const PromptTemplate& prompt_template() const { return tmpl_; }
    const Tokenizer& tokenizer() const { return *tok_; }

  private:
    std::shared_ptr<const Tokenizer> tok_;
    PromptTemplate tmpl_;
    std::vector<int32_t> filler_, prefix_, question_;
};

// Teacher-forced score of one answer: rows[k] (V floats each, `ld` apart) are the logits that predict
// answer[k]. A row counts as correct when answer[k] is its argmax (ties → the lowest id, like torch.argmax).
struct AnswerScore {
    int64_t correct = 0;
    int64_t total = 0;
    bool exact() const { return total > 0 && correct == total; }
};
AnswerScore score_answer(const float* rows, int64_t vocab, int64_t ld, std::span<const int32_t> answer);
// Greedy generation is right when the text, leading spaces removed, starts with the key.
bool generation_correct(std::string_view generated, std::string_view key);

struct RetrievalRequest {
    std::vector<int64_t> lengths;  // prompt tokens
    std::vector<double> depths;    // needle depths in [0, 1]
    int samples = 5;               // haystacks per (length, depth)
    uint64_t seed = 0;
    std::vector<Method> methods{Method::Vanilla, Method::LongMamba, Method::DeciMamba};
    std::filesystem::path calibration_path;  // LongMamba needs it
    double c = 0.05, b = 1.0;                // §8.4, §8.5
    int64_t activate_above = -1;
    DeciParams deci;  // DeciMamba (§4, §8.8); the request's layers, L_base and beta (defaults for the rest)
    bool teacher_forced = true;
    bool generate = true;
    bool decode_filter = true;  // generation keeps LongMamba's filter (method doc §9.1)
    Device device = Device::Cpu;
    Precision precision = Precision::Fp32;
};

struct RetrievalRow {
    Method method = Method::Vanilla;
    int64_t length = 0;
    int depth_index = 0;
    double depth = 0;
    int sample = 0;
    std::string key;
    int64_t needle_begin = 0;
    AnswerScore tf;  // teacher-forced (total 0 when not run)
    std::string generated;
    bool generated_correct = false;
    bool generate_ran = false;
    double seconds = 0;
};

struct RetrievalResult {
    RetrievalRequest request;
    PromptTemplate prompt_template;
    std::string filler;     // what the filler was (path or "demo")
    std::string model;      // model directory
    std::string tokenizer;  // tokenizer name
    int64_t train_len = 0;
    std::vector<RetrievalRow> rows;
    std::string backend = "cpu";
    // Mean teacher-forced answer accuracy (or generation accuracy) of one cell; NaN when absent.
    double cell_accuracy(Method m, int64_t length, int depth_index, bool generated = false) const;
    double length_accuracy(Method m, int64_t length, bool generated = false) const;  // over depths
};

// The method parameters (methods, calibration, c, b, activate_above, DeciMamba, device) carried between an
// analysis request and a retrieval request, so a haystack's trace and its scores use the same settings.
AnalysisRequest to_analysis_request(const RetrievalRequest& r);
RetrievalRequest to_retrieval_request(const AnalysisRequest& a);

// run_retrieval() as work units (work_units.h): one unit per haystack (length, depth, sample), in that
// nesting order, scored by every method (cost: length × methods tokens); its result is the haystack's rows,
// which reduce() appends in unit order.
struct Calibration;
class RetrievalJob : public UnitJob {
  public:
    // Checks the request and loads the calibration (the errors run_retrieval() gives). The model and builder
    // must outlive the job.
    RetrievalJob(const Model& model, const HaystackBuilder& builder, const RetrievalRequest& req);
    ~RetrievalJob() override;
    size_t unit_count() const override;
    double unit_cost(size_t u) const override;
    std::string unit_name(size_t u) const override;
    std::string fingerprint() const override;
    UnitResult compute_unit(size_t u, const ProgressFn& progress) const override;
    void reduce(size_t u, const UnitResult& result) override;
    RetrievalResult result() const;  // once every unit was reduced

  private:
    struct Cell {
        size_t length_index;
        int depth_index, sample;
    };
    Cell cell(size_t u) const;
    const Model& model_;
    const HaystackBuilder& builder_;
    RetrievalRequest req_;
    std::unique_ptr<Calibration> cal_;
    RetrievalResult res_;
    size_t reduced_ = 0;
};

// A retrieval row as bytes (RetrievalJob's unit results).
void write_retrieval_row(ByteWriter& w, const RetrievalRow& row);
RetrievalRow read_retrieval_row(ByteReader& r);

// Runs every cell. Progress covers the whole grid; cancellation throws Cancelled.
RetrievalResult run_retrieval(const Model& model, const HaystackBuilder& builder, const RetrievalRequest& req,
                              const ProgressFn& progress = {});

// Scores one haystack with one method (the unit run_retrieval repeats). `cal` may be null unless LongMamba.
RetrievalRow score_haystack(const Model& model, const Tokenizer& tok, const Haystack& h, Method method,
                            const RetrievalRequest& req, const Calibration* cal);

// The trace input of one haystack: the teacher-forced sequence (prompt + answer) with token strings.
RunInput haystack_run_input(const Haystack& h, const Tokenizer& tok);

// Files. CSV: one row per (method, length, depth, sample) for pandas; JSON: the request, the template and
// every row (what the GUI's retrieval view reads). Both atomic.
void write_retrieval_csv(const std::filesystem::path& path, const RetrievalResult& r);
std::string retrieval_json_text(const RetrievalResult& r);  // the JSON file's text
void write_retrieval_json(const std::filesystem::path& path, const RetrievalResult& r);
RetrievalResult read_retrieval_json(const std::filesystem::path& path);

// A session's haystack input (Session::haystack, length > 0): the teacher-forced sequence of that cell, built
// with the model's tokenizer from the session's filler; `out` (optional) receives the haystack. Provenance
// entries "haystack.*" (key, needle and answer positions) are added to `provenance` when given.
struct Session;
RunInput session_haystack_input(const Session& s, const Model& model, Haystack* out = nullptr,
                                std::map<std::string, std::string>* provenance = nullptr);

// Each method's answer to a haystack's question (method doc §10.3), as provenance entries for its trace:
// "haystack.answer.<method>" (greedy text), "haystack.answer_correct.<method>" ("1"/"0"),
// "haystack.tf_correct.<method>" and "haystack.tf_total.<method>". Methods and parameters come from the
// analysis request; LongMamba is skipped without a calibration. Progress per method; cancellable.
std::map<std::string, std::string> answer_haystack(const Model& model, const Haystack& h,
                                                   const AnalysisRequest& request,
                                                   const ProgressFn& progress = {});

// Folds every whitespace run to one space (filler normalisation, method doc §10.2).
std::string fold_whitespace(std::string_view s);

}  // namespace mambascope
