#include "input.h"

#include <unistd.h>

#include <cstdio>

#include "mambascope/error.h"
#include "mambascope/forward.h"

namespace mambascope::cli {

std::vector<int32_t> read_input_ids(const Args& args, const Model& model) {
    if (args.has("ids") == args.has("text")) throw Error("give exactly one of --ids FILE and --text FILE");
    std::vector<int32_t> ids;
    if (args.has("ids")) {
        ids = read_ids_file(args.get("ids"));
    } else {
        throw Error("--text is not available in this build yet", "tokenize the text first and pass --ids");
    }
    check_ids(model, ids);
    return ids;
}

ProgressFn stderr_progress(const char* label) {
    if (!isatty(2)) return {};
    return [label](double f, std::string_view) {
        std::fprintf(stderr, "\r%s %5.1f%%", label, 100.0 * f);
        if (f >= 1.0) std::fprintf(stderr, "\n");
        return true;
    };
}

}  // namespace mambascope::cli
