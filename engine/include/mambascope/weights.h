// weights.h: reading checkpoint tensors from disk into float32 Tensors, by name.
//
// Formats (docs/file-formats.md): safetensors (memory-mapped; F32 zero-copy, F16/BF16 converted on load;
// sharded via model.safetensors.index.json) and PyTorch's zip `pytorch_model.bin` through a restricted
// unpickler that knows only what a tensor state dict needs (no code execution, bounded allocation). Names are
// normalised to the HF spelling
// (`backbone.embedding.` → `backbone.embeddings.`). Every inconsistency (offsets past the end, shapes that
// disagree with byte counts, unknown dtypes, forbidden pickle opcodes/globals) is an Error naming the file
// and tensor.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "mambascope/tensor.h"

namespace mambascope {

using WeightMap = std::map<std::string, Tensor>;

// One safetensors file.
WeightMap load_safetensors(const std::filesystem::path& file);

// One PyTorch zip checkpoint (torch.save, the default format since PyTorch 1.6).
WeightMap load_torch_zip(const std::filesystem::path& file);

// A model directory: model.safetensors, or model.safetensors.index.json + shards, or pytorch_model.bin
// (in that order of preference). `weights_file` receives the path that was read (the index for sharded
// models).
WeightMap load_model_weights(const std::filesystem::path& model_dir,
                             std::filesystem::path* weights_file = nullptr);

// Renames mamba_ssm spellings to the HF ones, in place.
void normalise_weight_names(WeightMap& weights);

}  // namespace mambascope
