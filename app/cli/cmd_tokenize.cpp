// tokenize, detokenize: text ↔ whitespace-separated ids with the GPT-NeoX-20B, a tokenizer.json or the byte
// tokenizer (issue 3).
#include <cstdio>
#include <cstring>
#include <string>

#include "args.h"
#include "commands.h"
#include "mambascope/error.h"
#include "mambascope/text.h"
#include "mambascope/tokenizer.h"

namespace mambascope::cli {
namespace {

bool wants_help(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) return true;
    return false;
}

}  // namespace

int cmd_tokenize(int argc, char** argv) {
    if (wants_help(argc, argv)) {
        std::printf(
            "mambascope-cli tokenize [--tokenizer FILE|byte] --in TEXT_FILE --out IDS_FILE "
            "[--replace-invalid]\n"
            "  writes whitespace-separated ids (--out - : standard output); without --tokenizer: the built-in\n"
            "  GPT-NeoX-20B tokenizer\n");
        return 0;
    }
    Args a(argc, argv, {"tokenizer", "in", "out"}, {"replace-invalid"});
    const auto tok = tokenizer_from_spec(a.get("tokenizer"));
    const std::string text = read_text_file(a.require("in"), {.replace_invalid = a.has("replace-invalid")});
    const auto ids = tok->encode(text);
    std::string out;
    out.reserve(ids.size() * 6);
    for (size_t i = 0; i < ids.size(); ++i) {
        out += std::to_string(ids[i]);
        out += (i + 1) % 32 == 0 || i + 1 == ids.size() ? '\n' : ' ';
    }
    write_text_file_atomic(a.require("out"), out);
    std::fprintf(stderr, "%zu bytes -> %zu tokens (%s)\n", text.size(), ids.size(), tok->name().c_str());
    return 0;
}

int cmd_detokenize(int argc, char** argv) {
    if (wants_help(argc, argv)) {
        std::printf(
            "mambascope-cli detokenize [--tokenizer FILE|byte] --in IDS_FILE --out TEXT_FILE\n"
            "  --out - writes to standard output\n");
        return 0;
    }
    Args a(argc, argv, {"tokenizer", "in", "out"}, {});
    const auto tok = tokenizer_from_spec(a.get("tokenizer"));
    const auto ids = read_ids_file(a.require("in"));
    write_text_file_atomic(a.require("out"), tok->decode(ids));
    return 0;
}

}  // namespace mambascope::cli
