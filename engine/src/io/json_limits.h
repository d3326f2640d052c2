// json_limits.h: the bound on JSON nesting that every JSON reader of the engine applies before nlohmann builds,
// copies or dumps anything (its copy, dump and destructor recurse; docs/reliability.md).
#pragma once

#include <string>
#include <string_view>

namespace mambascope {

// Deepest JSON nesting any reader accepts (real configs, tokenizers, sessions and headers stay under 10).
constexpr int kMaxJsonNesting = 64;

// Refuses JSON nested deeper than `max_depth` with an Error naming `origin`, the line and the column
// (defined in config.cpp). Strings are skipped correctly; the text itself is not echoed.
void check_json_nesting(std::string_view text, const std::string& origin, int max_depth);

}  // namespace mambascope
