// Run inputs built from text: ids with each token's text and byte offset; see analysis.h.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include "mambascope/analysis.h"
#include "mambascope/error.h"
#include "mambascope/sha256.h"
#include "mambascope/text.h"

namespace mambascope {
namespace {

// token_strings[i] = utf8[offsets[i], offsets[i+1]) (the text's last token runs to its end), so the strings
// of an uncapped input concatenate back to the text. `offsets` covers the whole text (it may be longer than a
// capped in.ids). Offsets are non-decreasing and inside the text; anything else is a tokenizer bug.
void fill_token_text(RunInput& in, std::string_view utf8, std::vector<int64_t> offsets) {
    MS_CHECK(offsets.size() >= in.ids.size(), "tokenizer returned fewer offsets than ids");
    const int64_t n_bytes = static_cast<int64_t>(utf8.size());
    in.token_strings.clear();
    in.token_strings.reserve(in.ids.size());
    for (size_t i = 0; i < in.ids.size(); ++i) {
        const int64_t begin = offsets[i];
        const int64_t end = i + 1 < offsets.size() ? offsets[i + 1] : n_bytes;
        MS_CHECK(begin >= 0 && begin <= end && end <= n_bytes, "tokenizer offsets are not inside the text");
        in.token_strings.emplace_back(
            utf8.substr(static_cast<size_t>(begin), static_cast<size_t>(end - begin)));
    }
    offsets.resize(in.ids.size());
    in.byte_offsets = std::move(offsets);
}

}  // namespace

RunInput text_run_input(const Tokenizer& tok, std::string_view utf8, std::string text_path,
                        int64_t max_tokens) {
    RunInput in;
    in.text_path = std::move(text_path);
    in.text_sha256 = sha256_hex(utf8);
    in.text_bytes = static_cast<int64_t>(utf8.size());
    std::vector<int64_t> offsets;
    in.ids = tok.encode_with_offsets(utf8, offsets);
    if (max_tokens > 0 && static_cast<int64_t>(in.ids.size()) > max_tokens)
        in.ids.resize(static_cast<size_t>(max_tokens));
    fill_token_text(in, utf8, std::move(offsets));
    return in;
}

bool attach_token_text(RunInput& input, const Model& model) {
    if (!input.token_strings.empty() || input.ids.empty() || input.text_path.empty() ||
        input.text_sha256.empty())
        return false;
    std::error_code ec;
    const std::filesystem::path path(input.text_path);
    if (!std::filesystem::is_regular_file(path, ec) ||
        static_cast<int64_t>(std::filesystem::file_size(path, ec)) != input.text_bytes || ec)
        return false;
    std::string text;
    try {
        text = read_text_file(path);
    } catch (const Error&) {
        return false;  // not valid UTF-8 (the ids came from a replaced copy): keep the ids alone
    }
    if (sha256_hex(text) != input.text_sha256) return false;
    std::vector<int64_t> offsets;
    std::vector<int32_t> ids;
    try {
        ids = choose_tokenizer(model.dir, model.config.tokenizer)->encode_with_offsets(text, offsets);
    } catch (const Error&) {
        return false;
    }
    if (ids.size() < input.ids.size() || !std::equal(input.ids.begin(), input.ids.end(), ids.begin()))
        return false;  // tokenized with another tokenizer (--tokenizer): the offsets would not match
    fill_token_text(input, text, std::move(offsets));
    return true;
}

}  // namespace mambascope
