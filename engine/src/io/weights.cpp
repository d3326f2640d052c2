// Model-directory weight loading: picks the checkpoint file(s) and normalises tensor names (method doc §1.4).
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "mambascope/error.h"
#include "mambascope/weights.h"
#include "io/json_limits.h"

namespace mambascope {

namespace {

constexpr const char* kSafetensors = "model.safetensors";
constexpr const char* kSafetensorsIndex = "model.safetensors.index.json";
constexpr const char* kTorchBin = "pytorch_model.bin";

// Sharded safetensors: index.json maps every tensor name to a shard file in the same directory.
WeightMap load_sharded(const std::filesystem::path& index_path) {
    const std::string origin = index_path.string();
    std::ifstream in(index_path, std::ios::binary);
    if (!in) throw Error("cannot read " + origin);
    std::stringstream ss;
    ss << in.rdbuf();
    check_json_nesting(ss.str(), origin, kMaxJsonNesting);  // before nlohmann recurses
    nlohmann::json index;
    try {
        index = nlohmann::json::parse(ss.str());
    } catch (const nlohmann::json::exception& e) {
        throw Error(origin + ": not valid JSON: " + e.what());
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
        throw Error(origin + ": no \"weight_map\" object",
                    "a sharded checkpoint index maps tensor names to files");
    }
    std::map<std::string, std::vector<std::string>> by_shard;  // shard file → tensor names it must hold
    for (const auto& [name, file] : index["weight_map"].items()) {
        if (!file.is_string()) throw Error(origin + ": weight_map entry for " + name + " is not a file name");
        const std::string f = file.get<std::string>();
        const std::filesystem::path fp(f);
        if (f.empty() || fp.has_parent_path() || fp.is_absolute() || f == "." || f == "..") {
            throw Error(origin + ": shard name '" + f + "' is not a plain file name in the model directory");
        }
        by_shard[f].push_back(name);
    }
    if (by_shard.empty()) throw Error(origin + ": weight_map is empty");
    WeightMap out;
    for (const auto& [shard, names] : by_shard) {
        const auto shard_path = index_path.parent_path() / shard;
        WeightMap part = load_safetensors(shard_path);  // each shard is read once
        for (const auto& n : names) {
            if (!part.count(n)) {
                throw Error(origin + ": tensor " + n + " is listed in " + shard +
                            " but that file does not contain it");
            }
        }
        for (auto& [n, t] : part) {
            if (!out.emplace(n, std::move(t)).second) {
                throw Error(origin + ": tensor " + n + " appears in more than one shard (again in " + shard +
                            ")");
            }
        }
    }
    return out;
}

}  // namespace

WeightMap load_model_weights(const std::filesystem::path& model_dir, std::filesystem::path* weights_file) {
    const auto single = model_dir / kSafetensors;
    const auto index = model_dir / kSafetensorsIndex;
    const auto bin = model_dir / kTorchBin;
    WeightMap w;
    std::filesystem::path used;
    if (std::filesystem::is_regular_file(single)) {
        used = single;
        w = load_safetensors(single);
    } else if (std::filesystem::is_regular_file(index)) {
        used = index;
        w = load_sharded(index);
    } else if (std::filesystem::is_regular_file(bin)) {
        used = bin;
        w = load_torch_zip(bin);
    } else {
        throw Error("no weights in " + model_dir.string() + ": looked for " + kSafetensors + ", " +
                        kSafetensorsIndex + " and " + kTorchBin,
                    "point Mambascope at a directory holding config.json and one of these files");
    }
    normalise_weight_names(w);
    if (weights_file) *weights_file = used;
    return w;
}

void normalise_weight_names(WeightMap& weights) {
    static const std::string from = "backbone.embedding.", to = "backbone.embeddings.";
    std::vector<std::string> renames;
    for (const auto& [name, t] : weights)
        if (name.rfind(from, 0) == 0) renames.push_back(name);
    for (const auto& name : renames) {
        const std::string new_name = to + name.substr(from.size());
        auto node = weights.extract(name);
        if (weights.count(new_name)) {
            throw Error("checkpoint has both " + name + " and " + new_name,
                        "keep only one spelling of the embedding");
        }
        node.key() = new_name;
        weights.insert(std::move(node));
    }
}

}  // namespace mambascope
