// save_model_dir: config.json (HF form) + model.safetensors (F32); see mambascope/model.h.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "mambascope/error.h"
#include "mambascope/model.h"

namespace mambascope {
namespace {

void write_atomic(const std::filesystem::path& target, const std::string& bytes) {
    std::filesystem::path tmp = target;
    tmp += ".tmp-" + std::to_string(::getpid());
    {
        std::ofstream f(tmp, std::ios::binary);
        if (!f) throw Error("cannot write " + tmp.string(), "check that the directory is writable");
        f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        if (!f) throw Error("write failed: " + tmp.string());
    }
    std::error_code ec;
    std::filesystem::rename(tmp, target, ec);
    if (ec) {
        std::filesystem::remove(tmp, ec);
        throw Error("cannot rename to " + target.string() + ": " + ec.message());
    }
}

}  // namespace

void save_model_dir(const Model& m, const std::filesystem::path& dir) {
    std::filesystem::create_directories(dir);
    const ModelConfig& c = m.config;
    nlohmann::ordered_json j;
    j["model_type"] = c.arch == Arch::Mamba1 ? "mamba" : "mamba2";
    j["architectures"] = {c.arch == Arch::Mamba1 ? "MambaForCausalLM" : "Mamba2ForCausalLM"};
    j["hidden_size"] = c.d_model;
    j["num_hidden_layers"] = c.n_layer;
    j["vocab_size"] = m.vocab_rows();
    j["state_size"] = c.d_state;
    j["expand"] = c.d_inner / c.d_model;
    j["intermediate_size"] = c.d_inner;
    j["conv_kernel"] = c.d_conv;
    j["layer_norm_epsilon"] = c.norm_eps;
    j["use_conv_bias"] = c.use_conv_bias;
    j["use_bias"] = c.use_bias;
    j["tie_word_embeddings"] = c.tie_embeddings;
    if (c.arch == Arch::Mamba1) {
        j["time_step_rank"] = c.dt_rank;
    } else {
        j["num_heads"] = c.n_heads;
        j["head_dim"] = c.head_dim;
        j["n_groups"] = c.n_groups;
        j["time_step_limit"] = {c.dt_limit_min, std::isfinite(c.dt_limit_max)
                                                    ? nlohmann::ordered_json(c.dt_limit_max)
                                                    : nlohmann::ordered_json{{"__float__", "Infinity"}}};
    }
    j["mambascope"] = {{"train_len", c.train_len}};
    if (!c.tokenizer.empty()) j["mambascope"]["tokenizer"] = c.tokenizer;
    if (c.gated_norm_groups > 0) j["mambascope"]["gated_norm_groups"] = c.gated_norm_groups;

    // Tensors in HF names; A back to A_log.
    std::vector<std::pair<std::string, Tensor>> ts;
    ts.emplace_back("backbone.embeddings.weight", m.embedding);
    ts.emplace_back("backbone.norm_f.weight", m.norm_f);
    if (!c.tie_embeddings) ts.emplace_back("lm_head.weight", m.lm_head);
    const int64_t K = c.d_conv;
    for (size_t i = 0; i < m.layers.size(); ++i) {
        const auto& l = m.layers[i];
        const std::string p = "backbone.layers." + std::to_string(i) + ".";
        std::vector<float> alog(static_cast<size_t>(l.A.numel()));
        for (size_t k = 0; k < alog.size(); ++k) alog[k] = std::log(-l.A.data[k]);
        Tensor conv = l.conv_w;
        conv.shape = {conv.shape[0], 1, K};
        ts.emplace_back(p + "norm.weight", l.norm);
        ts.emplace_back(p + "mixer.in_proj.weight", l.in_proj);
        if (l.in_proj_b.data) ts.emplace_back(p + "mixer.in_proj.bias", l.in_proj_b);
        ts.emplace_back(p + "mixer.conv1d.weight", conv);
        if (l.conv_b.data) ts.emplace_back(p + "mixer.conv1d.bias", l.conv_b);
        ts.emplace_back(p + "mixer.out_proj.weight", l.out_proj);
        if (l.out_proj_b.data) ts.emplace_back(p + "mixer.out_proj.bias", l.out_proj_b);
        ts.emplace_back(p + "mixer.A_log", Tensor::owned(l.A.shape, std::move(alog)));
        ts.emplace_back(p + "mixer.D", l.Dskip);
        if (c.arch == Arch::Mamba1) {
            ts.emplace_back(p + "mixer.x_proj.weight", l.x_proj);
            ts.emplace_back(p + "mixer.dt_proj.weight", l.dt_proj_w);
            ts.emplace_back(p + "mixer.dt_proj.bias", l.dt_proj_b);
        } else {
            ts.emplace_back(p + "mixer.dt_bias", l.dt_bias);
            ts.emplace_back(p + "mixer.norm.weight", l.gate_norm);
        }
    }
    nlohmann::ordered_json header;
    header["__metadata__"] = {{"format", "pt"}};
    uint64_t off = 0;
    for (const auto& [name, t] : ts) {
        const uint64_t bytes = static_cast<uint64_t>(t.numel()) * 4;
        header[name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {off, off + bytes}}};
        off += bytes;
    }
    std::string hs = header.dump();
    while ((8 + hs.size()) % 8) hs.push_back(' ');
    std::string blob(8, '\0');
    const uint64_t n = hs.size();
    for (int i = 0; i < 8; ++i) blob[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
    blob += hs;
    blob.reserve(blob.size() + off);
    for (const auto& [name, t] : ts)
        blob.append(reinterpret_cast<const char*>(t.data), static_cast<size_t>(t.numel()) * 4);
    write_atomic(dir / "model.safetensors", blob);
    write_atomic(dir / "config.json", j.dump(2) + "\n");
}

}  // namespace mambascope
