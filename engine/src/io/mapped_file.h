// mapped_file.h: a read-only memory map of a whole file, owned through a shared_ptr.
//
// Design decision: tensors loaded from safetensors / torch zip files point straight into the mapping (zero
// copy) and hold a shared_ptr to it, so the mapping lives exactly as long as the last tensor that views it.
// The file is mapped MAP_PRIVATE + PROT_READ: nothing we do can modify it, and a file truncated underneath us
// is the one hazard left (the usual mmap caveat), which a model directory in normal use does not hit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

namespace mambascope::io {

class MappedFile {
  public:
    // Maps `path`. Throws Error if it cannot be opened or mapped. An empty file maps to size() == 0.
    static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path);

    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    const std::filesystem::path& path() const { return path_; }

  private:
    MappedFile() = default;
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
    std::filesystem::path path_;
};

}  // namespace mambascope::io
