// Fuzz target: tokenizer.json + BPE encode. The input is "<tokenizer.json> NUL <text>": the JSON part is written
// to a temp file and loaded with load_tokenizer_json; the text part (arbitrary bytes, often invalid UTF-8) is
// encoded with it, and also with the built-in GPT-NeoX-20B tokenizer; the ids are decoded back.
#include "fuzz_common.h"
#include "mambascope/tokenizer.h"

namespace {

void exercise(const mambascope::Tokenizer& tok, std::string_view text) {
    try {
        std::vector<int64_t> offsets;
        const std::vector<int32_t> ids = tok.encode_with_offsets(text, offsets);
        if (offsets.size() != ids.size()) {
            std::fprintf(stderr, "fuzz_tokenizer: %zu offsets for %zu ids\n", offsets.size(), ids.size());
            std::abort();
        }
        for (int64_t o : offsets) {
            if (o < 0 || o > static_cast<int64_t>(text.size())) {
                std::fprintf(stderr, "fuzz_tokenizer: offset %lld outside the %zu-byte text\n",
                             static_cast<long long>(o), text.size());
                std::abort();
            }
        }
        const std::string back = tok.decode(ids);
        size_t acc = back.size();
        for (int32_t id : ids) acc += tok.token_text(id).size();
        fuzz_keep(acc);
    } catch (const mambascope::Error&) {
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto [json, text] = fuzz::split_at_nul(data, size);
    const auto path =
        fuzz::write_temp("tokenizer.json", reinterpret_cast<const uint8_t*>(json.data()), json.size());
    try {
        const auto tok = mambascope::load_tokenizer_json(path);
        (void)tok->vocab_size();
        (void)tok->name();
        exercise(*tok, text);
    } catch (const mambascope::Error&) {
    }
    static const std::shared_ptr<const mambascope::Tokenizer> neox = mambascope::builtin_gpt_neox_tokenizer();
    exercise(*neox, text.empty() ? json : text);
    return 0;
}
