// zip.h: a read-only ZIP archive reader over a memory-mapped file (what torch.save writes).
//
// Design decision: we parse the central directory ourselves (classic and ZIP64 records) and never trust a
// field we have not range-checked against the file size. Stored entries (method 0, what torch writes) are
// returned as views into the mapping, so a 10 GB checkpoint costs no copy; deflated entries (method 8) are
// inflated with zlib into an owned buffer whose claimed size is bounded by the maximum deflate ratio.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/mapped_file.h"

namespace mambascope::io {

struct ZipEntry {
    std::string name;
    uint16_t method = 0;  // 0 stored, 8 deflate
    uint16_t flags = 0;
    uint32_t crc32 = 0;
    uint64_t compressed_size = 0;  // bytes in the archive
    uint64_t size = 0;             // bytes once extracted
    uint64_t local_header_offset = 0;
};

// Bytes of one entry: a view into the mapping (stored) or an owned buffer (deflated). `owner` keeps them
// alive.
struct ZipBlob {
    const uint8_t* data = nullptr;
    size_t size = 0;
    std::shared_ptr<const void> owner;
};

class ZipArchive {
  public:
    // Reads the central directory. Throws Error (naming the file) on anything malformed.
    explicit ZipArchive(std::shared_ptr<const MappedFile> file);

    const std::vector<ZipEntry>& entries() const { return entries_; }
    const ZipEntry* find(const std::string& name) const;  // nullptr when absent
    // Extracts one entry. `verify_crc` checks the CRC-32 (costs one pass over the bytes).
    ZipBlob read(const ZipEntry& entry, bool verify_crc) const;
    const std::string& origin() const { return origin_; }

  private:
    std::shared_ptr<const MappedFile> file_;
    std::string origin_;
    std::vector<ZipEntry> entries_;
};

// Tunables: bounds that keep a hostile archive from making us allocate or loop without limit.
constexpr uint64_t kZipMaxEntries = 1'000'000;  // a 64-layer model has ~600 storages
constexpr uint64_t kZipMaxDeflateRatio = 1032;  // deflate cannot expand 1 byte into more than ~1032

}  // namespace mambascope::io
