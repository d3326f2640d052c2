#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "mambascope/error.h"

namespace mambascope::io {

namespace {
// A one-byte buffer that stands in for the data of an empty file (mmap of length 0 is invalid).
const uint8_t kEmpty[1] = {0};
}  // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        throw Error("cannot open " + path.string() + ": " + std::strerror(errno),
                    "check that the file exists and is readable");
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw Error("cannot map " + path.string() + ": not a regular file");
    }
    std::shared_ptr<MappedFile> f(new MappedFile());
    f->path_ = path;
    f->size_ = static_cast<size_t>(st.st_size);
    if (f->size_ == 0) {
        f->data_ = kEmpty;
        ::close(fd);
        return f;
    }
    void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int mmap_errno = errno;
    ::close(fd);  // the mapping stays valid after close
    if (p == MAP_FAILED) {
        throw Error("cannot memory-map " + path.string() + ": " + std::strerror(mmap_errno),
                    "the file may be on a file system that does not support mmap");
    }
    f->data_ = static_cast<const uint8_t*>(p);
    return f;
}

MappedFile::~MappedFile() {
    if (size_ > 0 && data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace mambascope::io
