// Fuzz target: an analysis trace HDF5 file (read_trace on a temp file made from the bytes), as the GUI opens
// it.
#include "fuzz_common.h"
#include "mambascope/trace.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto path = fuzz::write_temp("trace.h5", data, size);
    try {
        const mambascope::RunResult run = mambascope::read_trace(path);
        fuzz_keep(run);
    } catch (const mambascope::Error& e) {
        fuzz::keep_probe_crash(path, e);
    }
    return 0;
}
