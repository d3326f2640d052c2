// model.h: a loaded Mamba / Mamba-2 language model: config + float32 weights, checked on load.
//
// Design decision: loading validates everything once (every tensor present with the shape the config implies,
// no NaN/Inf, embedding rows ≥ padded vocab) so that the forward can trust shapes. A = −exp(A_log) is
// precomputed here.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mambascope/config.h"
#include "mambascope/progress.h"
#include "mambascope/tensor.h"

namespace mambascope {

struct LayerWeights {
    Tensor norm;        // [D] pre-mixer RMSNorm
    Tensor in_proj;     // [2E, D] (M1) | [2E+2GN+H, D] (M2)
    Tensor in_proj_b;   // [rows] or empty (use_bias)
    Tensor conv_w;      // [conv_dim, K] (the [conv_dim, 1, K] checkpoint tensor, squeezed)
    Tensor conv_b;      // [conv_dim] or empty
    Tensor out_proj;    // [D, E]
    Tensor out_proj_b;  // [D] or empty
    Tensor A;           // M1: [E, N]; M2: [H]. A = −exp(A_log)
    Tensor Dskip;       // M1: [E]; M2: [H]
    // Mamba-1 only
    Tensor x_proj;     // [R+2N, E]
    Tensor dt_proj_w;  // [E, R]
    Tensor dt_proj_b;  // [E]
    // Mamba-2 only
    Tensor dt_bias;    // [H]
    Tensor gate_norm;  // [E] gated RMSNorm weight
};

struct Model {
    ModelConfig config;
    std::filesystem::path dir;           // where it was loaded from
    std::filesystem::path weights_file;  // the file read
    std::string name;                    // directory name, for display
    Tensor embedding;                    // [V_rows, D]
    Tensor norm_f;                       // [D]
    Tensor lm_head;                      // [V_rows, D] (= embedding when tied)
    std::vector<LayerWeights> layers;    // [n_layer]

    // Backend-owned copies of the weights (the CUDA backend uploads once per model). Opaque to everyone else.
    mutable std::shared_ptr<void> device_weights;

    int64_t vocab_rows() const { return embedding.dim(0); }
    int64_t parameter_count() const;  // tied head counted once
};

// Loads and validates a model directory (config.json + weights).
std::shared_ptr<const Model> load_model(const std::filesystem::path& dir, const ProgressFn& progress = {});

// Builds a model from a config and a weight map (names in HF spelling), with the same checks. Used by tests
// and by random-weight benchmarks.
struct WeightMapHolder;
std::shared_ptr<const Model> build_model(const ModelConfig& config,
                                         const std::map<std::string, Tensor>& weights,
                                         const std::filesystem::path& dir = {});

// Writes a model directory in HF form: config.json (with the "mambascope" extension: train_len, tokenizer)
// and model.safetensors (F32; A_log = ln(−A)). Atomic per file. Used to convert pickles and by
// tests/benchmarks.
void save_model_dir(const Model& model, const std::filesystem::path& dir);

// The configuration of a published checkpoint by name (benchmarks on random weights of real shapes):
// mamba-130m, mamba-370m, mamba-1.4b, mamba-2.8b, mamba2-130m, mamba2-1.3b. Error for other names.
ModelConfig reference_config(const std::string& shape);

// Random weights of the given shape (benchmarks): deterministic for a seed, realistic Δ ranges.
std::shared_ptr<const Model> random_model(const ModelConfig& config, uint64_t seed);

}  // namespace mambascope
