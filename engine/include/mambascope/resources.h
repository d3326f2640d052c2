// resources.h: finding files shipped with Mambascope (tokenizer, demo models) at run time, both from a build
// tree and from an installed prefix.
//
// Design decision: a fixed, documented search order, first hit wins: env MAMBASCOPE_RESOURCES,
// <exe dir>/../share/mambascope, <exe dir>/../resources, <exe dir>/../../resources, then the source tree's
// resources/ recorded at compile time. A miss is an Error that lists every place tried.
#pragma once

#include <filesystem>
#include <string_view>

namespace mambascope {

std::filesystem::path find_resource(std::string_view relative);

}  // namespace mambascope
