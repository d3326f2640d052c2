// config.json parsing for both checkpoint families (docs/file-formats.md §config.json; method doc §1.4;
// docs/checkpoints.md §1-3). Missing fields get the defaults of the library that wrote the file.
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/json_limits.h"
#include "mambascope/config.h"
#include "mambascope/error.h"

namespace mambascope {

const char* arch_name(Arch a) {
    return a == Arch::Mamba1 ? "mamba" : "mamba2";
}

namespace {

using json = nlohmann::json;

// Bare non-finite tokens are rewritten to this string prefix before parsing, then turned back into numbers.
constexpr std::string_view kFloatMarker = "__mambascope_float__:";
constexpr int64_t kMaxSize = int64_t{1} << 40;  // any dimension beyond this is a corrupt file
// No config.json nests deeper than a handful of levels. Deeper input is refused before nlohmann builds or
// copies it: nlohmann's parser is iterative, but its copy, dump and our walks recurse.
constexpr int kMaxJsonDepth = 64;
// Longest JSON excerpt echoed in an error message.
constexpr size_t kMaxEcho = 200;

const char* kSupported =
    "supported: HF model_type \"mamba\" / \"mamba2\" (or architectures MambaForCausalLM / "
    "Mamba2ForCausalLM), "
    "or a mamba_ssm config with d_model, n_layer and ssm_cfg";

[[noreturn]] void fail(const std::string& origin, const std::string& what, std::string hint = {}) {
    throw Error(origin + ": " + what, std::move(hint));
}

// ---- nesting bound -----------------------------------------------------------------------------

// Line and column (1-based) of byte `pos` of `text`.
std::string line_col(std::string_view text, size_t pos) {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < pos && i < text.size(); ++i) {
        if (text[i] == '\n') {
            ++line;
            col = 1;
        } else {
            ++col;
        }
    }
    return "line " + std::to_string(line) + ", column " + std::to_string(col);
}

// Dump of `v`, cut to kMaxEcho characters, for error messages (v is at most kMaxJsonDepth deep).
std::string excerpt(const json& v) {
    std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
    if (s.size() > kMaxEcho) s = s.substr(0, kMaxEcho) + "... (" + std::to_string(s.size()) + " bytes)";
    return s;
}

// Follows a left-to-right scan of raw JSON text through string literals (escapes included), so that the
// scanners below see only the text's structure: give it every byte in order.
struct JsonStringSkipper {
    bool in_string = false, escaped = false;
    // Whether `c` belongs to a string literal (its quotes included).
    bool skip(char c) {
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            return true;
        }
        in_string = c == '"';
        return in_string;
    }
};

}  // namespace

// Scans the raw text (strings skipped) and refuses arrays/objects nested deeper than `max_depth`, naming
// the line and column. Shared with the tokenizer and session readers (declared there).
void check_json_nesting(std::string_view text, const std::string& origin, int max_depth) {
    int depth = 0;
    JsonStringSkipper strings;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (strings.skip(c)) continue;
        if (c == '[' || c == '{') {
            if (++depth > max_depth)
                throw Error(origin + ": JSON nested deeper than " + std::to_string(max_depth) +
                                " levels at " + line_col(text, i),
                            "the file is corrupt or hostile; no valid file nests this deep");
        } else if (c == ']' || c == '}') {
            if (depth > 0) --depth;
        }
    }
}

namespace {

// ---- Infinity / NaN pre-processing --------------------------------------------------------------

bool is_ident(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}

// Rewrites bare Infinity / -Infinity / NaN tokens outside JSON strings into marker strings. `to_input[i]`
// gives the input byte of output byte i, so parse errors can be reported at the user's line and column.
std::string rewrite_non_finite(std::string_view in, std::vector<size_t>& to_input) {
    static constexpr std::string_view kTokens[] = {"-Infinity", "Infinity", "NaN"};
    std::string out;
    out.reserve(in.size() + 64);
    to_input.clear();
    to_input.reserve(in.size() + 64);
    JsonStringSkipper strings;
    for (size_t i = 0; i < in.size();) {
        const char c = in[i];
        if (!strings.skip(c) && (i == 0 || !is_ident(in[i - 1]))) {
            bool replaced = false;
            for (std::string_view tok : kTokens) {
                const size_t end = i + tok.size();
                if (in.substr(i, tok.size()) == tok && (end == in.size() || !is_ident(in[end]))) {
                    const std::string rep = "\"" + std::string(kFloatMarker) + std::string(tok) + "\"";
                    out += rep;
                    to_input.insert(to_input.end(), rep.size(), i);
                    i = end;
                    replaced = true;
                    break;
                }
            }
            if (replaced) continue;
        }
        out += c;
        to_input.push_back(i);
        ++i;
    }
    return out;
}

double non_finite_value(const std::string& s, const std::string& origin) {
    if (s == "Infinity" || s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-Infinity" || s == "-inf") return -std::numeric_limits<double>::infinity();
    if (s == "NaN" || s == "nan") return std::numeric_limits<double>::quiet_NaN();
    fail(origin, "{\"__float__\": \"" + s + "\"} is not Infinity, -Infinity or NaN");
}

// Turns marker strings and {"__float__": "..."} objects into double values (nlohmann holds inf/NaN doubles).
// The recursion is bounded: check_json_nesting() has refused input deeper than kMaxJsonDepth.
void restore_non_finite(json& j, const std::string& origin, int depth = 0) {
    if (depth > kMaxJsonDepth)
        fail(origin, "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    if (j.is_string()) {
        const auto& s = j.get_ref<const std::string&>();
        if (s.rfind(kFloatMarker, 0) == 0) j = non_finite_value(s.substr(kFloatMarker.size()), origin);
    } else if (j.is_object()) {
        if (j.size() == 1 && j.contains("__float__") && j["__float__"].is_string()) {
            j = non_finite_value(j["__float__"].get<std::string>(), origin);
            return;
        }
        for (auto& [k, v] : j.items()) restore_non_finite(v, origin, depth + 1);
    } else if (j.is_array()) {
        for (auto& v : j) restore_non_finite(v, origin, depth + 1);
    }
}

// ---- typed access with precise errors -----------------------------------------------------------

std::string type_of(const json& v) {
    if (v.is_string()) return "string \"" + v.get<std::string>().substr(0, 40) + "\"";
    return v.type_name();
}

class Fields {
  public:
    Fields(const json& j, std::string origin, std::string scope = {})
        : j_(j), origin_(std::move(origin)), scope_(std::move(scope)) {}

    bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }
    const json& at(const char* key) const { return j_[key]; }
    std::string name(const char* key) const { return "\"" + scope_ + key + "\""; }

    int64_t req_int(const char* key) const {
        if (!has(key)) fail(origin_, "missing required key " + name(key), "is this a Mamba config.json?");
        return as_int(key, j_[key]);
    }
    int64_t opt_int(const char* key, int64_t def) const { return has(key) ? as_int(key, j_[key]) : def; }
    double opt_num(const char* key, double def) const {
        if (!has(key)) return def;
        if (!j_[key].is_number()) fail(origin_, name(key) + " must be a number, got " + type_of(j_[key]));
        return j_[key].get<double>();
    }
    bool opt_bool(const char* key, bool def) const {
        if (!has(key)) return def;
        if (!j_[key].is_boolean())
            fail(origin_, name(key) + " must be true or false, got " + type_of(j_[key]));
        return j_[key].get<bool>();
    }
    std::string opt_str(const char* key, const std::string& def) const {
        if (!has(key)) return def;
        if (!j_[key].is_string()) fail(origin_, name(key) + " must be a string, got " + type_of(j_[key]));
        return j_[key].get<std::string>();
    }
    // "auto" → auto_value, else an integer.
    int64_t int_or_auto(const char* key, int64_t auto_value) const {
        if (!has(key)) return auto_value;
        if (j_[key].is_string()) {
            if (j_[key].get<std::string>() == "auto") return auto_value;
            fail(origin_, name(key) + " must be an integer or \"auto\", got " + type_of(j_[key]));
        }
        return as_int(key, j_[key]);
    }
    // [min, max] pair of numbers (Infinity allowed).
    bool opt_range(const char* key, double& lo, double& hi) const {
        if (!has(key)) return false;
        const json& v = j_[key];
        if (!v.is_array() || v.size() != 2 || !v[0].is_number() || !v[1].is_number()) {
            fail(origin_, name(key) + " must be a [min, max] pair of numbers, got " + excerpt(v));
        }
        lo = v[0].get<double>();
        hi = v[1].get<double>();
        return true;
    }

  private:
    int64_t as_int(const char* key, const json& v) const {
        if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
            fail(origin_, name(key) + " = " + v.dump() + " is out of range");
        if (v.is_number_integer()) return v.get<int64_t>();
        if (v.is_number_float()) {
            const double d = v.get<double>();
            if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
        }
        fail(origin_, name(key) + " must be an integer, got " + (v.is_number() ? excerpt(v) : type_of(v)));
    }

    const json& j_;
    std::string origin_, scope_;
};

// ---- checked arithmetic on dimensions ------------------------------------------------------------

int64_t checked_mul(int64_t a, int64_t b, const std::string& origin, const std::string& what) {
    int64_t r = 0;
    if (__builtin_mul_overflow(a, b, &r))
        fail(origin, what + " = " + std::to_string(a) + "·" + std::to_string(b) + " overflows 64 bits",
             "the config.json is corrupt");
    return r;
}
int64_t checked_add(int64_t a, int64_t b, const std::string& origin, const std::string& what) {
    int64_t r = 0;
    if (__builtin_add_overflow(a, b, &r))
        fail(origin, what + " = " + std::to_string(a) + " + " + std::to_string(b) + " overflows 64 bits",
             "the config.json is corrupt");
    return r;
}

// ceil(a / b) for a ≥ 0, b > 0 without overflow; a < 0 is left for validate() to report.
int64_t ceil_div(int64_t a, int64_t b) {
    return a <= 0 ? a / b : 1 + (a - 1) / b;
}

// d_inner = expand · d_model, where expand may be written as a float in some configs.
int64_t expand_width(const Fields& f, const char* key, double def, int64_t d_model,
                     const std::string& origin) {
    const double expand = f.opt_num(key, def);
    const double w = expand * static_cast<double>(d_model);
    if (!(expand > 0) || w != std::floor(w) || w > static_cast<double>(kMaxSize)) {
        fail(origin, f.name(key) + " = " + std::to_string(expand) + " does not give an integer inner width");
    }
    return static_cast<int64_t>(w);
}

void read_mambascope_extension(const json& j, ModelConfig& c, const std::string& origin) {
    if (!j.contains("mambascope")) return;
    const json& m = j["mambascope"];
    if (!m.is_object()) fail(origin, "\"mambascope\" must be an object, got " + type_of(m));
    Fields f(m, origin, "mambascope.");
    c.train_len = f.opt_int("train_len", c.train_len);
    c.tokenizer = f.opt_str("tokenizer", c.tokenizer);
    c.gated_norm_groups = f.opt_int("gated_norm_groups", c.gated_norm_groups);
    if (m.contains("retrieval")) {
        const json& r = m["retrieval"];
        if (!r.is_object()) fail(origin, "\"mambascope.retrieval\" must be an object, got " + type_of(r));
        Fields fr(r, origin, "mambascope.retrieval.");
        PromptTemplate t;
        t.prefix = fr.opt_str("prefix", "");
        t.needle = fr.opt_str("needle", "");
        t.question = fr.opt_str("question", "");
        t.key_digits = fr.opt_int("key_digits", 5);
        if (t.needle.find("{KEY}") == std::string::npos)
            fail(origin, "mambascope.retrieval.needle must contain {KEY}");
        if (t.question.empty()) fail(origin, "mambascope.retrieval.question must not be empty");
        if (t.key_digits < 1 || t.key_digits > 32)
            fail(origin,
                 "mambascope.retrieval.key_digits = " + std::to_string(t.key_digits) + " is outside 1..32");
        c.retrieval_template = t;
    }
}

// ---- HF transformers ----------------------------------------------------------------------------

ModelConfig parse_hf(const json& j, Arch arch, const std::string& origin) {
    Fields f(j, origin);
    ModelConfig c;
    c.arch = arch;
    c.source_format = "hf";
    c.d_model = f.req_int("hidden_size");
    c.n_layer = f.req_int("num_hidden_layers");
    c.vocab_size = f.req_int("vocab_size");
    c.pad_vocab_size_multiple = f.opt_int("pad_vocab_size_multiple", 1);
    c.d_conv = f.opt_int("conv_kernel", 4);
    c.norm_eps = f.opt_num("layer_norm_epsilon", 1e-5);
    c.use_bias = f.opt_bool("use_bias", false);
    c.use_conv_bias = f.opt_bool("use_conv_bias", true);
    const std::string act = f.opt_str("hidden_act", "silu");
    if (act != "silu" && act != "swish")
        fail(origin, "\"hidden_act\" \"" + act + "\" is not supported (only silu)");
    if (arch == Arch::Mamba1) {
        c.d_state = f.opt_int("state_size", 16);
        c.d_inner = f.has("intermediate_size") ? f.req_int("intermediate_size")
                                               : expand_width(f, "expand", 2, c.d_model, origin);
        c.dt_rank = f.int_or_auto("time_step_rank", ceil_div(c.d_model, 16));
        c.tie_embeddings = f.opt_bool("tie_word_embeddings", true);
    } else {
        c.d_state = f.opt_int("state_size", 128);
        c.n_heads = f.req_int("num_heads");
        c.head_dim = f.req_int("head_dim");
        c.n_groups =
            f.opt_int("n_groups", 8);  // transformers' Mamba2Config default (Codestral), not mamba_ssm's 1
        c.d_inner = expand_width(f, "expand", 2, c.d_model, origin);
        const int64_t heads_width = checked_mul(c.n_heads, c.head_dim, origin, "num_heads·head_dim");
        if (heads_width != c.d_inner) {
            fail(origin, "num_heads·head_dim = " + std::to_string(c.n_heads) + "·" +
                             std::to_string(c.head_dim) + " = " + std::to_string(heads_width) +
                             " must equal expand·hidden_size = " + std::to_string(c.d_inner));
        }
        f.opt_range("time_step_limit", c.dt_limit_min, c.dt_limit_max);
        c.tie_embeddings = f.opt_bool("tie_word_embeddings", false);
    }
    return c;
}

// ---- original mamba_ssm -------------------------------------------------------------------------

ModelConfig parse_mamba_ssm(const json& j, const std::string& origin) {
    Fields f(j, origin);
    ModelConfig c;
    c.source_format = "mamba_ssm";
    c.d_model = f.req_int("d_model");
    c.n_layer = f.req_int("n_layer");
    c.vocab_size = f.req_int("vocab_size");
    const int64_t d_intermediate = f.opt_int("d_intermediate", 0);
    const bool has_attn =
        f.has("attn_layer_idx") && !(f.at("attn_layer_idx").is_array() && f.at("attn_layer_idx").empty());
    if (d_intermediate != 0 || has_attn) {
        fail(origin,
             "hybrid models with MLP/attention layers are not supported (d_intermediate = " +
                 std::to_string(d_intermediate) + ", attn_layer_idx " +
                 (f.has("attn_layer_idx") ? excerpt(f.at("attn_layer_idx")) : "[]") + ")",
             "Mambascope runs pure Mamba / Mamba-2 stacks");
    }
    if (!f.opt_bool("rms_norm", true)) {
        fail(origin, "\"rms_norm\": false (LayerNorm blocks) is not supported",
             "state-spaces models use RMSNorm");
    }
    c.pad_vocab_size_multiple = f.opt_int("pad_vocab_size_multiple", 8);
    c.tie_embeddings = f.opt_bool("tie_embeddings", true);
    c.norm_eps = f.opt_num("norm_epsilon", 1e-5);

    static const json kEmpty = json::object();
    const json& ssm = f.has("ssm_cfg") ? f.at("ssm_cfg") : kEmpty;
    if (!ssm.is_object()) fail(origin, "\"ssm_cfg\" must be an object, got " + type_of(ssm));
    Fields s(ssm, origin, "ssm_cfg.");
    const std::string layer = s.opt_str("layer", "Mamba1");
    if (layer == "Mamba1") {
        c.arch = Arch::Mamba1;
    } else if (layer == "Mamba2") {
        c.arch = Arch::Mamba2;
    } else {
        fail(origin, "ssm_cfg.layer \"" + layer + "\" is unknown (supported: \"Mamba1\", \"Mamba2\")");
    }
    c.d_conv = s.opt_int("d_conv", 4);
    c.d_inner = expand_width(s, "expand", 2, c.d_model, origin);
    c.use_conv_bias = s.opt_bool("conv_bias", true);
    c.use_bias = s.opt_bool("bias", false);
    if (c.arch == Arch::Mamba1) {
        c.d_state = s.opt_int("d_state", 16);
        c.dt_rank = s.int_or_auto("dt_rank", ceil_div(c.d_model, 16));
    } else {
        c.d_state = s.opt_int("d_state", 128);
        c.head_dim = s.opt_int("headdim", 64);
        c.n_groups = s.opt_int("ngroups", 1);
        if (c.head_dim <= 0)
            fail(origin, "\"ssm_cfg.headdim\" must be positive, got " + std::to_string(c.head_dim));
        if (c.d_inner % c.head_dim != 0) {
            fail(origin, "expand·d_model = " + std::to_string(c.d_inner) + " is not a multiple of headdim " +
                             std::to_string(c.head_dim));
        }
        c.n_heads = c.d_inner / c.head_dim;
        if (s.has("d_ssm") && s.req_int("d_ssm") != c.d_inner) {
            fail(origin, "\"ssm_cfg.d_ssm\" different from expand·d_model (partial SSM) is not supported");
        }
        if (s.opt_bool("D_has_hdim", false)) fail(origin, "\"ssm_cfg.D_has_hdim\": true is not supported");
        if (!s.opt_bool("rmsnorm", true)) fail(origin, "\"ssm_cfg.rmsnorm\": false is not supported");
        if (s.opt_bool("norm_before_gate", false))
            fail(origin, "\"ssm_cfg.norm_before_gate\": true is not supported");
        s.opt_range("dt_limit", c.dt_limit_min, c.dt_limit_max);
    }
    return c;
}

void check_positive(const std::string& origin, const char* what, int64_t v) {
    if (v <= 0 || v > kMaxSize)
        fail(origin, std::string(what) + " must be positive, got " + std::to_string(v));
}

void validate(const ModelConfig& c, const std::string& origin) {
    check_positive(origin, "d_model (hidden_size)", c.d_model);
    check_positive(origin, "n_layer (num_hidden_layers)", c.n_layer);
    check_positive(origin, "vocab_size", c.vocab_size);
    check_positive(origin, "pad_vocab_size_multiple", c.pad_vocab_size_multiple);
    check_positive(origin, "d_inner (intermediate_size / expand·d_model)", c.d_inner);
    check_positive(origin, "d_state (state_size)", c.d_state);
    check_positive(origin, "d_conv (conv_kernel)", c.d_conv);
    check_positive(origin, "train_len", c.train_len);
    if (!(c.norm_eps > 0) || !std::isfinite(c.norm_eps)) {
        fail(origin, "norm epsilon must be a positive finite number, got " + std::to_string(c.norm_eps));
    }
    if (c.arch == Arch::Mamba1) {
        check_positive(origin, "dt_rank (time_step_rank)", c.dt_rank);
    } else {
        check_positive(origin, "n_heads (num_heads)", c.n_heads);
        check_positive(origin, "head_dim (headdim)", c.head_dim);
        check_positive(origin, "n_groups (ngroups)", c.n_groups);
        if (c.n_heads % c.n_groups != 0) {
            fail(origin, "n_heads " + std::to_string(c.n_heads) + " is not a multiple of n_groups " +
                             std::to_string(c.n_groups));
        }
        if (std::isnan(c.dt_limit_min) || std::isnan(c.dt_limit_max) || c.dt_limit_min < 0 ||
            c.dt_limit_min > c.dt_limit_max) {
            fail(origin, "dt limit [" + std::to_string(c.dt_limit_min) + ", " +
                             std::to_string(c.dt_limit_max) + "] is not a valid range");
        }
    }
    // Every product of dimensions the loader and the kernels form (tensor sizes, in_proj rows, conv width)
    // must fit in 64 bits: each factor is ≤ kMaxSize, but two of them can overflow.
    const auto mul = [&](int64_t a, int64_t b, const char* what) { return checked_mul(a, b, origin, what); };
    const auto add = [&](int64_t a, int64_t b, const char* what) { return checked_add(a, b, origin, what); };
    add(c.vocab_size, c.pad_vocab_size_multiple, "vocab_size + pad_vocab_size_multiple");
    mul(add(c.vocab_size, c.pad_vocab_size_multiple, "padded vocab"), c.d_model, "vocab·d_model");
    const int64_t conv_dim =
        c.arch == Arch::Mamba1
            ? c.d_inner
            : add(c.d_inner, mul(2, mul(c.n_groups, c.d_state, "n_groups·d_state"), "2·n_groups·d_state"),
                  "conv width");
    mul(conv_dim, c.d_conv, "conv width·d_conv");
    const int64_t in_rows = c.arch == Arch::Mamba1
                                ? mul(2, c.d_inner, "2·d_inner")
                                : add(add(c.d_inner, conv_dim, "in_proj rows"), c.n_heads, "in_proj rows");
    mul(in_rows, c.d_model, "in_proj rows·d_model");
    mul(c.d_inner, c.d_model, "d_inner·d_model");
    mul(c.d_inner, c.d_state, "d_inner·d_state");
    if (c.arch == Arch::Mamba1) {
        mul(add(c.dt_rank, mul(2, c.d_state, "2·d_state"), "dt_rank + 2·d_state"), c.d_inner,
            "x_proj rows·d_inner");
        mul(c.d_inner, c.dt_rank, "d_inner·dt_rank");
    } else {
        mul(mul(c.n_heads, c.head_dim, "n_heads·head_dim"), c.d_state, "n_heads·head_dim·d_state");
    }
    mul(c.n_layer, c.d_inner, "n_layer·d_inner");
}

ModelConfig parse_config_object(json& j, const std::string& origin) {
    restore_non_finite(j, origin);

    ModelConfig c;
    if (j.contains("model_type")) {
        if (!j["model_type"].is_string())
            fail(origin, "\"model_type\" must be a string, got " + type_of(j["model_type"]));
        const std::string mt = j["model_type"].get<std::string>();
        if (mt == "mamba")
            c = parse_hf(j, Arch::Mamba1, origin);
        else if (mt == "mamba2")
            c = parse_hf(j, Arch::Mamba2, origin);
        else
            fail(origin, "unknown model_type \"" + mt + "\"; " + kSupported);
    } else if (j.contains("architectures") && j["architectures"].is_array()) {
        bool found = false;
        for (const auto& a : j["architectures"]) {
            if (a == "MambaForCausalLM")
                c = parse_hf(j, Arch::Mamba1, origin), found = true;
            else if (a == "Mamba2ForCausalLM")
                c = parse_hf(j, Arch::Mamba2, origin), found = true;
            if (found) break;
        }
        if (!found) fail(origin, "unknown architectures " + excerpt(j["architectures"]) + "; " + kSupported);
    } else if (j.contains("d_model") || j.contains("n_layer") || j.contains("ssm_cfg")) {
        c = parse_mamba_ssm(j, origin);
    } else {
        fail(origin, "cannot tell the config format (no model_type, architectures or d_model); " +
                         std::string(kSupported));
    }
    read_mambascope_extension(j, c, origin);
    validate(c, origin);
    return c;
}

}  // namespace

ModelConfig parse_config_json(std::string_view text, const std::string& origin) {
    check_json_nesting(text, origin, kMaxJsonDepth);  // before nlohmann builds, copies or dumps anything
    std::vector<size_t> to_input;
    const std::string rewritten = rewrite_non_finite(text, to_input);
    json j;
    try {
        j = json::parse(rewritten);
    } catch (const json::out_of_range& e) {
        // e.g. 1e400: a number that does not fit a double.
        std::string msg = e.what();
        if (const auto p = msg.find("number overflow"); p != std::string::npos) msg = msg.substr(p);
        fail(origin, "a number is out of range (" + msg.substr(0, kMaxEcho) + ")",
             "numbers in config.json must fit a 64-bit float");
    } catch (const json::parse_error& e) {
        // e.byte is 1-based in the rewritten text; map it back to the user's line and column.
        size_t in_pos = text.size();
        if (e.byte >= 1 && e.byte - 1 < to_input.size()) in_pos = to_input[e.byte - 1];
        std::string msg = e.what();
        const auto colon = msg.find("syntax error");
        if (colon != std::string::npos) msg = msg.substr(colon);
        if (msg.size() > kMaxEcho) msg = msg.substr(0, kMaxEcho) + "...";
        fail(origin, "invalid JSON at " + line_col(text, in_pos) + ": " + msg,
             "fix the file with a JSON validator");
    } catch (const json::exception& e) {
        fail(origin, std::string("invalid JSON: ") + std::string(e.what()).substr(0, kMaxEcho),
             "fix the file with a JSON validator");
    }
    if (!j.is_object()) fail(origin, "config.json must be a JSON object");
    try {
        return parse_config_object(j, origin);
    } catch (const json::exception& e) {
        // A nlohmann type/range error the typed accessors did not anticipate: still name the file.
        fail(origin, std::string("malformed config.json: ") + std::string(e.what()).substr(0, kMaxEcho));
    }
}

ModelConfig load_config(const std::filesystem::path& model_dir) {
    const auto path = model_dir / "config.json";
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw Error("cannot read " + path.string(),
                    "a model directory needs a config.json next to its weights");
    }
    std::stringstream ss;
    ss << in.rdbuf();
    return parse_config_json(ss.str(), path.string());
}

}  // namespace mambascope
