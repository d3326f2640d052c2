// Fuzz target: an ids file (whitespace-separated token ids), read by the CLI's read_ids_file (app/cli/args.cpp is
// compiled into this target: the reader is not part of the engine).
#include "args.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto path = fuzz::write_temp("input.ids", data, size);
    try {
        const std::vector<int32_t> ids = mambascope::cli::read_ids_file(path.string());
        for (int32_t id : ids) {
            if (id < 0) {
                std::fprintf(stderr, "fuzz_ids: negative id %d accepted\n", id);
                std::abort();
            }
        }
    } catch (const mambascope::Error&) {
    }
    return 0;
}
