// Fuzz target: config.json (parse_config_json), then the derived sizes every loader computes from it.
#include "fuzz_common.h"
#include "mambascope/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        const mambascope::ModelConfig c = mambascope::parse_config_json(text, "fuzz/config.json");
        // A config that parses must describe sizes whose products fit in int64 (checked by the parser).
        const int64_t sizes[] = {c.channels(), c.conv_dim(), c.in_proj_rows(), c.padded_vocab(), c.norm_groups()};
        fuzz_keep(sizes);
    } catch (const mambascope::Error&) {
    }
    return 0;
}
