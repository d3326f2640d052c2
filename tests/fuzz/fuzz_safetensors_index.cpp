// Fuzz target: a sharded checkpoint's model.safetensors.index.json, through load_model_weights (the index parser
// is internal to engine/src/io/weights.cpp). The bytes become the index in a scratch model directory that also
// holds one small valid shard, "model-00001-of-00001.safetensors", so that mutated indexes can name it.
#include <cstring>

#include "fuzz_common.h"
#include "mambascope/weights.h"

namespace {

// A valid shard with two float32 tensors: "a" [2] and "backbone.norm_f.weight" [1].
const std::filesystem::path& model_dir() {
    static const std::filesystem::path dir = [] {
        const auto d = fuzz::scratch_dir() / "index_model";
        std::filesystem::create_directories(d);
        const std::string header =
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("backbone.norm_f.weight":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
        std::string file(8, '\0');
        const uint64_t n = header.size();
        for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((n >> (8 * i)) & 0xff);
        file += header;
        const float values[3] = {1.0f, 2.0f, 3.0f};
        file.append(reinterpret_cast<const char*>(values), sizeof values);
        fuzz::write_file(d / "model-00001-of-00001.safetensors", reinterpret_cast<const uint8_t*>(file.data()),
                         file.size());
        return d;
    }();
    return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto& dir = model_dir();
    fuzz::write_file(dir / "model.safetensors.index.json", data, size);
    try {
        const mambascope::WeightMap w = mambascope::load_model_weights(dir);
        float acc = 0.0f;
        for (const auto& [name, t] : w) acc += fuzz::touch(t);
        fuzz_keep(acc);
    } catch (const mambascope::Error&) {
    }
    return 0;
}
