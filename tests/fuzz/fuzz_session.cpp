// Fuzz target: a session file (session_from_json). A session that loads must also save and load again
// (session_to_json -> session_from_json): a saved session the program then refuses would be lost work.
#include "fuzz_common.h"
#include "mambascope/session.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    mambascope::Session s;
    try {
        s = mambascope::session_from_json(text, "fuzz/session.json", "/nonexistent-fuzz-base");
    } catch (const mambascope::Error&) {
        return 0;
    }
    try {
        const auto req = mambascope::session_request(s);
        fuzz_keep(req);
    } catch (const mambascope::Error&) {
    }
    const std::string saved = mambascope::session_to_json(s);
    try {
        (void)mambascope::session_from_json(saved, "fuzz/session.json (saved again)", "/nonexistent-fuzz-base");
    } catch (const mambascope::Error& e) {
        std::fprintf(stderr, "fuzz_session: a loaded session saves to JSON that does not load: %s\n%s\n", e.what(),
                     saved.c_str());
        std::abort();
    }
    return 0;
}
