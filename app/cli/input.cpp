#include "input.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "mambascope/text.h"
#include "mambascope/tokenizer.h"

namespace mambascope::cli {

std::vector<int32_t> read_input_ids(const Args& args, const Model& model) {
    if (args.has("ids") == args.has("text")) throw Error("give exactly one of --ids FILE and --text FILE");
    std::vector<int32_t> ids;
    if (args.has("ids")) {
        ids = read_ids_file(args.get("ids"));
    } else {
        const auto tok = args.has("tokenizer") ? tokenizer_from_spec(args.get("tokenizer"))
                                               : choose_tokenizer(model.dir, model.config.tokenizer);
        const std::string text =
            read_text_file(args.get("text"), {.replace_invalid = args.has("replace-invalid")});
        ids = tok->encode(text);
    }
    check_ids(model, ids);
    return ids;
}

namespace {
std::atomic<bool> g_cancel{false};
static_assert(std::atomic<bool>::is_always_lock_free, "the cancel flag is set from a signal handler");
}  // namespace

void request_cancel() noexcept {
    g_cancel.store(true);
}
bool cancel_requested() noexcept {
    return g_cancel.load();
}

ProgressFn stderr_progress(const char* label) {
    const bool tty = isatty(2);
    return [label, tty](double f, std::string_view) {
        if (cancel_requested()) {
            if (tty) std::fprintf(stderr, "\n");
            return false;
        }
        if (tty) {
            std::fprintf(stderr, "\r%s %5.1f%%", label, 100.0 * f);
            if (f >= 1.0) std::fprintf(stderr, "\n");
        }
        return true;
    };
}

}  // namespace mambascope::cli
