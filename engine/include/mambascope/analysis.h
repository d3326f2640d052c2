// analysis.h: one analysis run = the same input through several methods (vanilla, LongMamba, DeciMamba), with
// the probes a researcher asked for. The result structs are what the CLI writes to an HDF5 trace (trace.h),
// what the GUI draws, and what reading a trace gives back.
//
// Design decision: everything here is either O(n_layer × channels) summaries, O(T) per-token series, or
// bounded windows the user chose (a few channels × a window of ≤ kMaxWindowTokens tokens; hidden attention ≤
// kMaxAttentionTokens²). Nothing is O(T × channels × state) or O(T × vocab), so a 128k-token run stays small.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mambascope/decimamba.h"
#include "mambascope/forward.h"
#include "mambascope/model.h"
#include "mambascope/progress.h"
#include "mambascope/tokenizer.h"

namespace mambascope {

enum class Method { Vanilla, LongMamba, DeciMamba };
const char* method_name(Method m);          // "vanilla", "longmamba", "decimamba"
Method parse_method(const std::string& s);  // Error on unknown names

// Longest window of per-token Δ / critical masks stored per chosen channel.
constexpr int64_t kMaxWindowTokens = 65536;
// Longest window for hidden attention maps (W × W floats per channel and method).
constexpr int64_t kMaxAttentionTokens = 1024;
// Largest residual stream (T × d_model floats, bytes) run_analysis keeps so that DeciMamba starts at its
// first decimating layer from the vanilla forward's rows instead of recomputing the layers below (issue 16):
// 512 MiB is 174k tokens of mamba-130m (d_model 768) or 65k of mamba-1.4b (2048). Longer inputs recompute
// them.
constexpr int64_t kMaxSharedPrefixBytes = int64_t{512} << 20;

enum class AttentionNorm { None, AbsMax, AbsMinMax, Log10Floor };
const char* attention_norm_name(AttentionNorm n);  // "none", "absmax", "absminmax", "log10"

// A dense row-major array with its shape; the common currency of results.
template <class T>
struct Array {
    std::vector<int64_t> shape;
    std::vector<T> data;
    int64_t numel() const {
        int64_t n = 1;
        for (auto d : shape) n *= d;
        return n;
    }
    T& at2(int64_t i, int64_t j) { return data[size_t(i * shape[1] + j)]; }
    const T& at2(int64_t i, int64_t j) const { return data[size_t(i * shape[1] + j)]; }
    static Array zeros(std::vector<int64_t> s) {
        Array a;
        a.shape = std::move(s);
        a.data.assign(size_t(a.numel()), T{});
        return a;
    }
};

struct ChannelRef {
    int layer = 0;
    int64_t channel = 0;
    bool operator==(const ChannelRef&) const = default;
};

// Per chosen channel, for one method.
struct ChannelTrace {
    ChannelRef ref;
    bool global = false;            // global channel under the calibration (method doc §8.4)
    float threshold = 0;            // b·θ(key) used by the filter (−inf when not filtered)
    std::vector<float> delta_raw;   // [W] Δ after softplus over the window
    std::vector<float> delta_used;  // [W] Δ the scan used (0 where filtered)
    std::vector<uint8_t> critical;  // [W] 1 where the token survives the filter (method doc §8.6)
    std::vector<float>
        cum_log_decay;  // [T] Σ_{k≤t} A_c·Δ_used,k over the whole input (natural log; §8.2 A_c)
};

// Hidden attention map of one channel over the window (method doc §5).
struct AttentionMap {
    ChannelRef ref;
    AttentionNorm norm = AttentionNorm::AbsMax;
    double log_floor = 1e-3;  // for Log10Floor
    int64_t begin = 0;        // window start position
    Array<float> alpha;       // [W, W], lower triangular, normalised as `norm`
};

struct MethodResult {
    Method method = Method::Vanilla;
    std::map<std::string, double> params;  // c, b, activate_above, key_length, L_base, beta, ...
    std::vector<int64_t> nll_positions;    // [T'] positions p whose NLL predicts token p+1
    std::vector<float> nll;                // [T'] nats
    // Summaries, [n_layer, C]
    Array<double> delta_sum;        // Σ_t Δ_used
    Array<double> log_decay;        // A_c·Σ Δ_used (Mamba-1: §8.2 with the calibration's m1_decay)
    Array<uint8_t> global_mask;     // 1 for global channels (all 0 without calibration)
    Array<int64_t> critical_count;  // tokens surviving the filter in global channels
    // [T] per token: how many global channels (all layers) kept it, i.e. used its Δ (§8.6); empty without
    // global channels. LongMamba's filter lowers it below the number of global channels.
    std::vector<int64_t> global_keep_count;
    Array<int64_t> receptive_field;           // [n_layer, P, C] at rf_positions (method doc §8.7)
    Array<uint8_t> receptive_field_censored;  // [n_layer, P, C] 1 = "≥ t+1"
    int64_t receptive_field_resolution = 1;   // tokens; 1 = exact
    std::vector<ChannelTrace> channels;
    std::vector<AttentionMap> attention;
    std::vector<int64_t>
        kept_positions;  // DeciMamba: positions that reached the last layer (empty otherwise)
    double seconds = 0;
    std::string backend = "cpu";  // where the method's forward ran ("cpu" / "cuda")
};

struct RunInput {
    std::string text_path;    // may be empty (ids given directly)
    std::string text_sha256;  // of the UTF-8 bytes; empty without text
    int64_t text_bytes = 0;
    std::vector<int32_t> ids;                // [T]
    std::vector<std::string> token_strings;  // [T] decoded text of each token (may be empty)
    std::vector<int64_t> byte_offsets;       // [T] start of each token in the text (may be empty)
};

// The input of a run on a UTF-8 text: the ids `tok` gives, each token's text and byte offset (so a trace
// and the GUI show text, not raw ids), the text's SHA-256 and size; at most max_tokens tokens if > 0.
RunInput text_run_input(const Tokenizer& tok, std::string_view utf8, std::string text_path,
                        int64_t max_tokens = 0);
// For inputs given as ids of a text file (`--text FILE`): fills token_strings and byte_offsets from the file
// input.text_path when they are empty and the file is the text the ids came from (same size and SHA-256 as
// recorded in `input`, and the model's tokenizer encodes it to ids that start with input.ids). Returns
// whether it did; a text that does not fit leaves the input as it was. run_analysis calls it.
bool attach_token_text(RunInput& input, const Model& model);

struct RunResult {
    RunInput input;
    std::map<std::string, std::string>
        provenance;  // model path, arch, config json, weights sha256, tokenizer, ...
    int n_layer = 0;
    int64_t channels = 0;
    int64_t train_len = 0;
    std::vector<int64_t> rf_positions;  // [P]
    int64_t window_begin = 0, window_end = 0;
    std::optional<std::filesystem::path> calibration_path;
    // The calibration's log decay (method doc §8.2), [n_layer, C]; empty without a calibration. run_analysis
    // fills it from the loaded calibration; read_trace from the trace's /calibration/log_decay copy.
    Array<double> calibration_log_decay;
    std::vector<MethodResult> methods;
    const MethodResult* find(Method m) const {
        for (const auto& r : methods)
            if (r.method == m) return &r;
        return nullptr;
    }
};

// What to run and record. Defaults are the method doc's §7/§8 defaults; -1 means "derive from the
// model/input".
struct AnalysisRequest {
    std::vector<Method> methods{Method::Vanilla, Method::LongMamba};
    std::filesystem::path calibration_path;  // needed for LongMamba (and for global masks); empty: none
    double c = 0.05;                         // global if log_decay > ln c (§8.4)
    double b = 1.0;                          // threshold multiplier (§8.5)
    int64_t activate_above = -1;             // filter when T > this; -1: the calibration's train_len
    std::string m1_decay = "slowest";        // Mamba-1 channel decay for summaries when no calibration says
    // DeciMamba (§4, §8.8): layers empty → {n_layer / 2}, L_base −1 → train_len (resolve_deci_params)
    DeciParams deci;
    // Probes
    std::vector<ChannelRef> channels;   // detail channels; empty: chosen automatically (see docs)
    int64_t window_begin = 0;           // Δ / critical-mask window [begin, end)
    int64_t window_end = -1;            // -1: min(T, begin + kMaxWindowTokens)
    std::vector<int64_t> rf_positions;  // empty: {T − 1}
    double rf_epsilon = -1;             // -1: c (§8.7)
    bool attention = true;              // hidden attention of the detail channels
    int64_t attention_begin = -1;       // -1: the last attention_tokens tokens
    int64_t attention_tokens = 256;     // ≤ kMaxAttentionTokens
    AttentionNorm attention_norm = AttentionNorm::AbsMax;
    double attention_log_floor = 1e-3;
    bool nll = true;  // per-token NLL (needs the LM head on every token)
    // Where vanilla and LongMamba run (probes and filter are identical on both backends); DeciMamba's
    // selection runs on the CPU. Cuda/Auto fall back to the CPU when no GPU is usable: MethodResult::backend
    // says where each method ran and RunResult::provenance["device_note"] why it fell back.
    Device device = Device::Cpu;
};

// Global-channel ratio per layer (method doc §8.4, the paper's "global-channel ratio per layer" figure):
// 100 × (channels of layer l with log_decay > ln c) / C, for a [n_layer, C] log decay. Error unless
// 0 < c < 1 and log_decay is 2-D.
std::vector<double> global_ratio_per_layer(const Array<double>& log_decay, double c);

// Runs every requested method on the input. Progress covers the whole run; cancellation throws Cancelled.
RunResult run_analysis(const Model& model, const RunInput& input, const AnalysisRequest& request,
                       const ProgressFn& progress = {});

}  // namespace mambascope
