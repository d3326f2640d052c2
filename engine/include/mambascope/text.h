// text.h: reading text files as UTF-8. Validation names the byte offset of the first bad sequence; with
// replace_invalid each maximal invalid subpart becomes U+FFFD (the WHATWG/Unicode "substitution of maximal
// subparts" practice), so a valid file comes back byte-identical.
//
// Design decision: validation is one linear pass over the bytes with an ASCII fast path, so multi-MB corpora
// cost milliseconds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace mambascope {

struct TextReadOptions {
    bool replace_invalid = false;  // invalid UTF-8 → U+FFFD instead of an Error
};

// Byte offset of the first invalid UTF-8 sequence, or npos when `s` is valid (overlongs, surrogates and
// code points > U+10FFFF are invalid).
size_t find_invalid_utf8(std::string_view s);

// `s` with each invalid subpart replaced by U+FFFD.
std::string replace_invalid_utf8(std::string_view s);

// Error "… invalid UTF-8 at byte N" (with `what` naming the source) unless `s` is valid.
void check_utf8(std::string_view s, std::string_view what);

// The whole file as UTF-8 (a leading BOM is kept: it is text). Error names the file and the byte offset.
std::string read_text_file(const std::filesystem::path& path, const TextReadOptions& options = {});

// Decodes one code point at s[i]; returns its length (1..4) or 0 if invalid. `cp` receives the value.
int decode_utf8(std::string_view s, size_t i, uint32_t& cp);

}  // namespace mambascope
