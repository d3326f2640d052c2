// sha256.h: SHA-256 of bytes and of files (streamed), for provenance in traces and the resource manifest.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace mambascope {

std::string sha256_hex(std::string_view bytes);
std::string sha256_file_hex(const std::filesystem::path& file);  // streams the file; Error if unreadable

}  // namespace mambascope
