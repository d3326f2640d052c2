// config.h: a Mamba or Mamba-2 model's hyper-parameters, read from config.json in either of the two forms
// real checkpoints use (HF transformers `MambaConfig`/`Mamba2Config`, or the original mamba_ssm
// `MambaConfig`).
//
// Design decision: missing fields are derived exactly as the references derive them (see docs/file-formats.md
// and
// docs/checkpoints.md: dt_rank = ceil(d_model/16), d_inner = expand·d_model, vocab padded to
// pad_vocab_size_multiple, n_heads = d_inner/head_dim, ...), so a config that loads here describes the same
// network that transformers / mamba_ssm would build. Anything we cannot interpret is an Error, never a guess.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace mambascope {

enum class Arch { Mamba1, Mamba2 };

const char* arch_name(Arch a);  // "mamba" / "mamba2"

// A passkey prompt template (method doc §10.1). `needle` holds "{KEY}" where the key goes (once or more).
struct PromptTemplate {
    std::string prefix;    // instruction before the haystack (may be empty)
    std::string needle;    // e.g. " The pass key is {KEY}. Remember it. {KEY} is the pass key. "
    std::string question;  // e.g. " What is the pass key? The pass key is "
    int64_t key_digits = 5;
};

struct ModelConfig {
    Arch arch = Arch::Mamba1;
    std::string source_format;  // "hf" (transformers) or "mamba_ssm" (original)

    int64_t d_model = 0;     // D
    int64_t n_layer = 0;     // L
    int64_t vocab_size = 0;  // as written in the config (HF: padded; mamba_ssm: unpadded, e.g. 50277)
    int64_t pad_vocab_size_multiple = 1;
    int64_t d_inner = 0;         // E = expand · D
    int64_t d_state = 0;         // N
    int64_t d_conv = 4;          // K
    int64_t dt_rank = 0;         // R (Mamba-1)
    int64_t n_heads = 0;         // H (Mamba-2); E = H · P
    int64_t head_dim = 0;        // P (Mamba-2)
    int64_t n_groups = 1;        // G (Mamba-2): B and C are shared by H/G heads
    double norm_eps = 1e-5;      // RMSNorm epsilon (block norms, final norm, gated norm)
    bool tie_embeddings = true;  // lm_head = embedding
    bool use_conv_bias = true;
    bool use_bias = false;      // in_proj/out_proj bias (no state-spaces checkpoint has one)
    double dt_limit_min = 0.0;  // Mamba-2: Δ clamped to [min, max] after softplus
    double dt_limit_max = std::numeric_limits<double>::infinity();

    // Mambascope extensions, read from an optional "mambascope" object in config.json.
    int64_t train_len = 2048;  // tokens the model was trained at (state-spaces models: 2048)
    std::string tokenizer;     // "byte" for byte-level models; empty: tokenizer.json or GPT-NeoX-20B
    // Mamba-2 gated RMSNorm groups. 0 (default) = n_groups, as mamba_ssm computes it (the models were trained
    // so); 1 = normalise the full width, as HF transformers (<= 5.17) does; identical when n_groups = 1.
    int64_t gated_norm_groups = 0;
    // The passkey template the model was trained with ("mambascope.retrieval"); retrieval uses it by default.
    std::optional<PromptTemplate> retrieval_template;
    int64_t norm_groups() const { return gated_norm_groups > 0 ? gated_norm_groups : n_groups; }

    // Channels in LongMamba's sense (method doc §8.1): Mamba-1 inner channels, Mamba-2 heads.
    int64_t channels() const { return arch == Arch::Mamba1 ? d_inner : n_heads; }
    // Width of the depthwise conv: Mamba-1 x only; Mamba-2 x, B and C together.
    int64_t conv_dim() const { return arch == Arch::Mamba1 ? d_inner : d_inner + 2 * n_groups * d_state; }
    // Rows of in_proj.
    int64_t in_proj_rows() const {
        return arch == Arch::Mamba1 ? 2 * d_inner : 2 * d_inner + 2 * n_groups * d_state + n_heads;
    }
    // Vocabulary rows the embedding must have: vocab_size rounded up to pad_vocab_size_multiple.
    int64_t padded_vocab() const {
        const int64_t m = pad_vocab_size_multiple > 0 ? pad_vocab_size_multiple : 1;
        return (vocab_size + m - 1) / m * m;
    }
};

// Parses config.json text. `origin` names the file in error messages. Accepts bare
// `Infinity`/`-Infinity`/`NaN` tokens and transformers 5.x's {"__float__": "Infinity"} objects.
ModelConfig parse_config_json(std::string_view text, const std::string& origin);

// Reads <dir>/config.json.
ModelConfig load_config(const std::filesystem::path& model_dir);

}  // namespace mambascope
