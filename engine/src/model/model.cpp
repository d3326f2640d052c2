// Model assembly and validation; see mambascope/model.h.
#include "mambascope/model.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "mambascope/error.h"
#include "mambascope/weights.h"

namespace mambascope {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
    Tensor t;
    t.shape = s;
    return t.shape_string();
}

class Assembler {
  public:
    Assembler(const ModelConfig& cfg, const std::map<std::string, Tensor>& w, std::string origin)
        : cfg_(cfg), w_(w), origin_(std::move(origin)) {}

    const Tensor* find(const std::string& name) const {
        auto it = w_.find(name);
        return it == w_.end() ? nullptr : &it->second;
    }

    // The tensor `name` with exactly `shape` (a [C,1,K] conv weight may be given for [C,K]).
    Tensor get(const std::string& name, const std::vector<int64_t>& shape) const {
        const Tensor* t = find(name);
        if (!t)
            throw Error(origin_ + ": missing tensor '" + name + "' (expected shape " + shape_str(shape) + ")",
                        "the checkpoint does not match its config.json; is this a " +
                            std::string(arch_name(cfg_.arch)) + " checkpoint?");
        Tensor out = *t;
        if (out.shape.size() == 3 && shape.size() == 2 && out.shape[1] == 1)
            out.shape = {out.shape[0], out.shape[2]};
        if (out.shape != shape)
            throw Error(origin_ + ": tensor '" + name + "' has shape " + t->shape_string() +
                            ", config.json implies " + shape_str(shape),
                        "the weights and config.json disagree (d_model, d_state, expand, n_groups, ...)");
        check_finite(name, out);
        return out;
    }
    Tensor optional(const std::string& name, const std::vector<int64_t>& shape) const {
        return find(name) ? get(name, shape) : Tensor{};
    }
    void check_finite(const std::string& name, const Tensor& t) const {
        const int64_t n = t.numel();
        for (int64_t i = 0; i < n; ++i)
            if (!std::isfinite(t.data[i]))
                throw Error(origin_ + ": tensor '" + name + "' contains NaN or Inf (element " +
                                std::to_string(i) + ")",
                            "the checkpoint is corrupt or was saved after a diverged training run");
    }

  private:
    const ModelConfig& cfg_;
    const std::map<std::string, Tensor>& w_;
    std::string origin_;
};

Tensor neg_exp(const Tensor& a_log) {
    std::vector<float> v(static_cast<size_t>(a_log.numel()));
    for (size_t i = 0; i < v.size(); ++i) v[i] = -std::exp(a_log.data[i]);
    return Tensor::owned(a_log.shape, std::move(v));
}

void check_config(const ModelConfig& c, const std::string& origin) {
    auto positive = [&](int64_t v, const char* name) {
        if (v <= 0)
            throw Error(origin + ": config value " + name + " must be positive, got " + std::to_string(v));
    };
    positive(c.d_model, "d_model");
    positive(c.n_layer, "n_layer");
    positive(c.vocab_size, "vocab_size");
    positive(c.d_inner, "d_inner");
    positive(c.d_state, "d_state");
    positive(c.d_conv, "d_conv");
    if (c.arch == Arch::Mamba1) {
        positive(c.dt_rank, "dt_rank");
    } else {
        positive(c.n_heads, "n_heads");
        positive(c.head_dim, "head_dim");
        positive(c.n_groups, "n_groups");
        if (c.n_heads * c.head_dim != c.d_inner)
            throw Error(origin + ": n_heads·head_dim = " + std::to_string(c.n_heads * c.head_dim) +
                        " differs from d_inner = " + std::to_string(c.d_inner));
        if (c.gated_norm_groups < 0 || (c.gated_norm_groups > 0 && c.d_inner % c.gated_norm_groups != 0))
            throw Error(origin + ": gated_norm_groups = " + std::to_string(c.gated_norm_groups) +
                        " must divide d_inner = " + std::to_string(c.d_inner));
        if (c.n_heads % c.n_groups != 0 || c.d_inner % c.n_groups != 0)
            throw Error(origin + ": n_groups = " + std::to_string(c.n_groups) + " does not divide n_heads");
    }
}

}  // namespace

int64_t Model::parameter_count() const {
    int64_t n = embedding.numel() + norm_f.numel();
    if (lm_head.data != embedding.data) n += lm_head.numel();
    for (const auto& l : layers)
        for (const Tensor* t :
             {&l.norm, &l.in_proj, &l.in_proj_b, &l.conv_w, &l.conv_b, &l.out_proj, &l.out_proj_b, &l.A,
              &l.Dskip, &l.x_proj, &l.dt_proj_w, &l.dt_proj_b, &l.dt_bias, &l.gate_norm})
            if (t->data) n += t->numel();
    return n;
}

std::shared_ptr<const Model> build_model(const ModelConfig& cfg, const std::map<std::string, Tensor>& weights,
                                         const std::filesystem::path& dir) {
    const std::string origin = dir.empty() ? std::string("model") : dir.string();
    check_config(cfg, origin);
    // Weights for layers beyond n_layer mean config.json and the checkpoint disagree (e.g. num_hidden_layers
    // 3 on a 6-layer checkpoint): running the first n_layer layers would silently compute another network.
    {
        const std::string prefix = "backbone.layers.";
        int64_t max_layer = -1;
        for (auto it = weights.lower_bound(prefix); it != weights.end() && it->first.rfind(prefix, 0) == 0;
             ++it) {
            int64_t idx = 0;
            size_t k = prefix.size();
            bool digits = false;
            while (k < it->first.size() && it->first[k] >= '0' && it->first[k] <= '9' &&
                   idx < (int64_t{1} << 40)) {
                idx = idx * 10 + (it->first[k++] - '0');
                digits = true;
            }
            if (digits) max_layer = std::max(max_layer, idx);
        }
        if (max_layer >= cfg.n_layer)
            throw Error(
                origin + ": the checkpoint has weights for layer " + std::to_string(max_layer) +
                    " but config.json says n_layer (num_hidden_layers) = " + std::to_string(cfg.n_layer),
                "the weights and config.json disagree; fix num_hidden_layers / n_layer");
    }
    Assembler a(cfg, weights, origin);
    auto m = std::make_shared<Model>();
    m->config = cfg;
    m->dir = dir;
    m->name = dir.empty() ? std::string("(in memory)") : dir.filename().string();
    const int64_t D = cfg.d_model, E = cfg.d_inner, N = cfg.d_state, K = cfg.d_conv;

    const Tensor* emb = a.find("backbone.embeddings.weight");
    if (!emb)
        throw Error(origin + ": missing tensor 'backbone.embeddings.weight' (or backbone.embedding.weight)",
                    "is this a Mamba checkpoint?");
    if (emb->shape.size() != 2 || emb->shape[1] != D)
        throw Error(origin + ": embedding has shape " + emb->shape_string() + ", expected [vocab, " +
                    std::to_string(D) + "]");
    const int64_t V = emb->shape[0];
    if (V < cfg.vocab_size)
        throw Error(origin + ": embedding has " + std::to_string(V) + " rows but config vocab_size is " +
                    std::to_string(cfg.vocab_size));
    m->embedding = a.get("backbone.embeddings.weight", {V, D});
    m->norm_f = a.get("backbone.norm_f.weight", {D});
    if (cfg.tie_embeddings) {
        m->lm_head = m->embedding;
    } else {
        if (!a.find("lm_head.weight"))
            throw Error(
                origin +
                    ": config says the head is not tied (tie_word_embeddings false) but lm_head.weight "
                    "is missing",
                "set tie_word_embeddings to true in config.json if the head is the embedding");
        m->lm_head = a.get("lm_head.weight", {V, D});
    }

    const int64_t conv_dim = cfg.conv_dim();
    for (int64_t i = 0; i < cfg.n_layer; ++i) {
        const std::string p = "backbone.layers." + std::to_string(i) + ".";
        LayerWeights l;
        l.norm = a.get(p + "norm.weight", {D});
        l.in_proj = a.get(p + "mixer.in_proj.weight", {cfg.in_proj_rows(), D});
        l.in_proj_b = a.optional(p + "mixer.in_proj.bias", {cfg.in_proj_rows()});
        l.conv_w = a.get(p + "mixer.conv1d.weight", {conv_dim, K});
        l.conv_b = cfg.use_conv_bias ? a.get(p + "mixer.conv1d.bias", {conv_dim})
                                     : a.optional(p + "mixer.conv1d.bias", {conv_dim});
        l.out_proj = a.get(p + "mixer.out_proj.weight", {D, E});
        l.out_proj_b = a.optional(p + "mixer.out_proj.bias", {D});
        if (cfg.arch == Arch::Mamba1) {
            const int64_t R = cfg.dt_rank;
            l.x_proj = a.get(p + "mixer.x_proj.weight", {R + 2 * N, E});
            l.dt_proj_w = a.get(p + "mixer.dt_proj.weight", {E, R});
            l.dt_proj_b = a.get(p + "mixer.dt_proj.bias", {E});
            l.A = neg_exp(a.get(p + "mixer.A_log", {E, N}));
            l.Dskip = a.get(p + "mixer.D", {E});
        } else {
            const int64_t H = cfg.n_heads;
            l.dt_bias = a.get(p + "mixer.dt_bias", {H});
            l.A = neg_exp(a.get(p + "mixer.A_log", {H}));
            l.Dskip = a.get(p + "mixer.D", {H});
            l.gate_norm = a.get(p + "mixer.norm.weight", {E});
        }
        m->layers.push_back(std::move(l));
    }
    return m;
}

std::shared_ptr<const Model> load_model(const std::filesystem::path& dir, const ProgressFn& progress) {
    if (!std::filesystem::is_directory(dir))
        throw Error("model directory not found: " + dir.string(),
                    "pass a directory that holds config.json and model.safetensors or pytorch_model.bin");
    report_progress(progress, 0.0, "reading config.json");
    ModelConfig cfg = load_config(dir);
    report_progress(progress, 0.1, "reading weights");
    std::filesystem::path wfile;
    WeightMap weights = load_model_weights(dir, &wfile);
    normalise_weight_names(weights);
    report_progress(progress, 0.7, "checking weights");
    auto m = build_model(cfg, weights, dir);
    const_cast<Model&>(*m).weights_file = wfile;
    report_progress(progress, 1.0, "model loaded");
    return m;
}

ModelConfig reference_config(const std::string& shape) {
    // docs/checkpoints.md §4 (all: d_conv 4, trained at 2048 tokens).
    ModelConfig c;
    c.source_format = "reference-shape";
    c.d_conv = 4;
    c.train_len = 2048;
    auto m1 = [&](int64_t D, int64_t L) {
        c.arch = Arch::Mamba1, c.d_model = D, c.n_layer = L, c.d_inner = 2 * D, c.d_state = 16;
        c.dt_rank = (D + 15) / 16, c.vocab_size = 50280;
    };
    auto m2 = [&](int64_t D, int64_t L) {
        c.arch = Arch::Mamba2, c.d_model = D, c.n_layer = L, c.d_inner = 2 * D, c.d_state = 128;
        c.head_dim = 64, c.n_heads = 2 * D / 64, c.n_groups = 1, c.vocab_size = 50288;
    };
    if (shape == "mamba-130m")
        m1(768, 24);
    else if (shape == "mamba-370m")
        m1(1024, 48);
    else if (shape == "mamba-1.4b")
        m1(2048, 48);
    else if (shape == "mamba-2.8b")
        m1(2560, 64);
    else if (shape == "mamba2-130m")
        m2(768, 24);
    else if (shape == "mamba2-1.3b")
        m2(2048, 48);
    else
        throw Error("unknown model shape '" + shape + "'",
                    "one of mamba-130m, mamba-370m, mamba-1.4b, mamba-2.8b, mamba2-130m, mamba2-1.3b");
    return c;
}

std::shared_ptr<const Model> random_model(const ModelConfig& cfg, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> uni(0.0f, 1.0f);
    std::map<std::string, Tensor> w;
    auto randn = [&](std::vector<int64_t> shape, float scale) {
        Tensor t;
        t.shape = shape;
        std::vector<float> v(static_cast<size_t>(t.numel()));
        for (auto& x : v) x = normal(rng) * scale;
        return Tensor::owned(std::move(shape), std::move(v));
    };
    auto fill = [&](std::vector<int64_t> shape, auto fn) {
        Tensor t;
        t.shape = shape;
        std::vector<float> v(static_cast<size_t>(t.numel()));
        for (size_t i = 0; i < v.size(); ++i) v[i] = fn(i);
        return Tensor::owned(std::move(shape), std::move(v));
    };
    const int64_t D = cfg.d_model, E = cfg.d_inner, N = cfg.d_state, K = cfg.d_conv, V = cfg.padded_vocab();
    // Δ init of Mamba: dt = exp(U[ln 0.001, ln 0.1]), bias = softplus⁻¹(dt)
    auto dt_bias = [&](size_t) {
        const float dt = std::exp(std::log(0.001f) + uni(rng) * (std::log(0.1f) - std::log(0.001f)));
        return dt + std::log(-std::expm1(-dt));
    };
    w["backbone.embeddings.weight"] = randn({V, D}, 0.02f);
    w["backbone.norm_f.weight"] = fill({D}, [](size_t) { return 1.0f; });
    if (!cfg.tie_embeddings) w["lm_head.weight"] = randn({V, D}, 0.02f);
    const int64_t cd = cfg.conv_dim();
    for (int64_t i = 0; i < cfg.n_layer; ++i) {
        const std::string p = "backbone.layers." + std::to_string(i) + ".";
        w[p + "norm.weight"] = fill({D}, [](size_t) { return 1.0f; });
        w[p + "mixer.in_proj.weight"] = randn({cfg.in_proj_rows(), D}, 1.0f / std::sqrt(float(D)));
        w[p + "mixer.conv1d.weight"] = randn({cd, 1, K}, 1.0f / std::sqrt(float(K)));
        w[p + "mixer.conv1d.bias"] = randn({cd}, 0.1f);
        w[p + "mixer.out_proj.weight"] = randn({D, E}, 1.0f / std::sqrt(float(E)));
        if (cfg.arch == Arch::Mamba1) {
            const int64_t R = cfg.dt_rank;
            w[p + "mixer.x_proj.weight"] = randn({R + 2 * N, E}, 1.0f / std::sqrt(float(E)));
            w[p + "mixer.dt_proj.weight"] = randn({E, R}, 1.0f / std::sqrt(float(R)));
            w[p + "mixer.dt_proj.bias"] = fill({E}, dt_bias);
            w[p + "mixer.A_log"] = fill({E, N}, [&](size_t j) { return std::log(float(j % N + 1)); });
            w[p + "mixer.D"] = fill({E}, [](size_t) { return 1.0f; });
        } else {
            const int64_t H = cfg.n_heads;
            w[p + "mixer.dt_bias"] = fill({H}, dt_bias);
            w[p + "mixer.A_log"] = fill({H}, [&](size_t) { return std::log(1.0f + 15.0f * uni(rng)); });
            w[p + "mixer.D"] = fill({H}, [](size_t) { return 1.0f; });
            w[p + "mixer.norm.weight"] = fill({E}, [](size_t) { return 1.0f; });
        }
    }
    return build_model(cfg, w, {});
}

}  // namespace mambascope
