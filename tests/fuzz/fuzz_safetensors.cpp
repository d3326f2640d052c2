// Fuzz target: a .safetensors file (8-byte header length, JSON header, data). load_safetensors needs a path, so
// the bytes go to a temp file; every float of every tensor is then read (ASan catches a tensor outside the data).
#include "fuzz_common.h"
#include "mambascope/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto path = fuzz::write_temp("model.safetensors", data, size);
    try {
        const mambascope::WeightMap w = mambascope::load_safetensors(path);
        float acc = 0.0f;
        for (const auto& [name, t] : w) acc += fuzz::touch(t);
        fuzz_keep(acc);
    } catch (const mambascope::Error&) {
    }
    return 0;
}
