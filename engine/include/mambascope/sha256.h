// sha256.h: SHA-256 of byte strings and files, for provenance (weights and text hashes in traces).
//
// Design decision: a small self-contained implementation (FIPS 180-4) with a streaming object, so hashing a
// multi-GB weights file reads it in fixed-size blocks and never holds it in memory.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace mambascope {

// Bytes read per block when hashing a file.
constexpr size_t kSha256FileBlockBytes = size_t{1} << 20;

class Sha256 {
  public:
    Sha256();
    void update(const void* data, size_t n);
    std::string hex_digest();  // finishes the hash; lowercase hex, 64 characters

  private:
    void block(const uint8_t* p);
    std::array<uint32_t, 8> h_;
    std::array<uint8_t, 64> buf_{};
    size_t buf_len_ = 0;
    uint64_t total_ = 0;
};

std::string sha256_hex(std::string_view bytes);
// Streams the file; Error when it cannot be read.
std::string sha256_file(const std::filesystem::path& path);

}  // namespace mambascope
