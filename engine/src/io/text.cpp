// UTF-8 validation, replacement and file reading (text.h).
#include "mambascope/text.h"

#include <fstream>
#include <sstream>

#include "mambascope/error.h"

namespace mambascope {

int decode_utf8(std::string_view s, size_t i, uint32_t& cp) {
    const size_t n = s.size();
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
        cp = b0;
        return 1;
    }
    int len = 0;
    uint32_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        len = 2;
        cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        len = 3;
        cp = b0 & 0x0F;
        if (b0 == 0xE0) lo = 0xA0;  // no overlongs
        if (b0 == 0xED) hi = 0x9F;  // no surrogates
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        len = 4;
        cp = b0 & 0x07;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F;  // ≤ U+10FFFF
    } else {
        return 0;
    }
    for (int k = 1; k < len; ++k) {
        if (i + k >= n) return 0;
        const auto b = static_cast<unsigned char>(s[i + k]);
        if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return 0;
        cp = (cp << 6) | (b & 0x3F);
    }
    return len;
}

// Length of the maximal invalid subpart at s[i] (≥ 1): the bytes that start a valid prefix of a sequence.
static size_t invalid_subpart_length(std::string_view s, size_t i) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    int len = 0;
    uint32_t lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF)
        len = 2;
    else if (b0 >= 0xE0 && b0 <= 0xEF) {
        len = 3;
        if (b0 == 0xE0) lo = 0xA0;
        if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        len = 4;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F;
    } else {
        return 1;
    }
    size_t k = 1;
    for (; k < static_cast<size_t>(len) && i + k < s.size(); ++k) {
        const auto b = static_cast<unsigned char>(s[i + k]);
        if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
    }
    return k;
}

size_t find_invalid_utf8(std::string_view s) {
    size_t i = 0;
    const size_t n = s.size();
    uint32_t cp = 0;
    while (i < n) {
        if (static_cast<unsigned char>(s[i]) < 0x80) {
            ++i;
            continue;
        }
        const int len = decode_utf8(s, i, cp);
        if (len == 0) return i;
        i += static_cast<size_t>(len);
    }
    return std::string_view::npos;
}

std::string replace_invalid_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    uint32_t cp = 0;
    while (i < s.size()) {
        const int len = decode_utf8(s, i, cp);
        if (len > 0) {
            out.append(s.substr(i, static_cast<size_t>(len)));
            i += static_cast<size_t>(len);
        } else {
            out += "\xEF\xBF\xBD";
            i += invalid_subpart_length(s, i);
        }
    }
    return out;
}

void check_utf8(std::string_view s, std::string_view what) {
    const size_t bad = find_invalid_utf8(s);
    if (bad == std::string_view::npos) return;
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned>(static_cast<unsigned char>(s[bad])));
    throw Error(std::string(what) + ": invalid UTF-8 at byte " + std::to_string(bad) + " (byte " + hex + ")",
                "convert the text to UTF-8, or pass --replace-invalid to substitute U+FFFD");
}

std::string read_text_file(const std::filesystem::path& path, const TextReadOptions& options) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("cannot open text file " + path.string(), "check the path and permissions");
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) throw Error("error reading text file " + path.string());
    std::string text = std::move(ss).str();
    if (find_invalid_utf8(text) == std::string_view::npos) return text;
    if (options.replace_invalid) return replace_invalid_utf8(text);
    check_utf8(text, path.string());
    return text;
}

}  // namespace mambascope
