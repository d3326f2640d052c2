// fuzz_common.h: helpers shared by the fuzz targets (tests/fuzz/fuzz_*.cpp).
//
// Every target defines LLVMFuzzerTestOneInput, calls the engine's public API on the bytes and catches
// mambascope::Error only: any other exception escapes (std::terminate -> abort) and any crash or sanitizer
// report is a finding. The same translation unit is linked either with libFuzzer (build-fuzz, clang,
// MAMBASCOPE_FUZZ=ON) or with replay_main.cpp (every build: ctest fuzz_replay.<target> runs the committed
// corpus and crashes).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "mambascope/error.h"
#include "mambascope/tensor.h"

namespace fuzz {

// A scratch directory private to this process ($TMPDIR or /tmp), removed at normal exit.
inline const std::filesystem::path& scratch_dir() {
    static const std::filesystem::path dir = [] {
        const auto d =
            std::filesystem::temp_directory_path() / ("mambascope-fuzz-" + std::to_string(::getpid()));
        std::filesystem::create_directories(d);
        std::atexit([] {
            std::error_code ec;
            std::filesystem::remove_all(scratch_dir(), ec);
        });
        return d;
    }();
    return dir;
}

// Writes `size` bytes to <scratch>/<name> (replacing it) and returns the path. A failure here is the
// harness's, not the engine's: abort loudly.
inline std::filesystem::path write_file(const std::filesystem::path& path, const uint8_t* data, size_t size) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) {
        std::perror(path.c_str());
        std::abort();
    }
    if ((size && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
        std::perror(path.c_str());
        std::abort();
    }
    return path;
}

inline std::filesystem::path write_temp(const std::string& name, const uint8_t* data, size_t size) {
    return write_file(scratch_dir() / name, data, size);
}

// Reads every float of a loaded tensor, so that a tensor pointing outside its buffer is caught by ASan.
inline float touch(const mambascope::Tensor& t) {
    float acc = 0.0f;
    const int64_t n = t.numel();
    for (int64_t i = 0; i < n; ++i) acc += t.data[i];
    return acc;
}

// libhdf5 crashes are contained: read_trace / load_calibration read an HDF5 file in a child process first
// (h5::probe_read_in_child) and turn the child's crash into an Error that says "the HDF5 library crashed".
// Such inputs are kept in $MAMBASCOPE_FUZZ_PROBE_DIR (set by scripts/fuzz.sh), which replays them afterwards
// without the probe to check that the crash was inside libhdf5 and not in Mambascope's code (which the child
// also runs).
inline void keep_probe_crash(const std::filesystem::path& input, const mambascope::Error& e) {
    const char* dir = std::getenv("MAMBASCOPE_FUZZ_PROBE_DIR");
    if (!dir || !*dir ||
        std::string_view(e.what()).find("the HDF5 library crashed") == std::string_view::npos)
        return;
    std::error_code ec;
    const auto size = std::filesystem::file_size(input, ec);
    if (ec) return;
    // Named by a hash of the bytes (FNV-1a), so the same input is kept once.
    std::FILE* f = std::fopen(input.c_str(), "rb");
    if (!f) return;
    uint64_t h = 1469598103934665603ull;
    for (int c; (c = std::fgetc(f)) != EOF;) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
    std::fclose(f);
    char name[64];
    std::snprintf(name, sizeof name, "probe-%016llx-%llu.h5", static_cast<unsigned long long>(h),
                  static_cast<unsigned long long>(size));
    std::filesystem::create_directories(dir, ec);
    std::filesystem::copy_file(input, std::filesystem::path(dir) / name,
                               std::filesystem::copy_options::skip_existing, ec);
}

// Splits the input at its first NUL byte: (head, tail). No NUL: the whole input is the head, the tail is
// empty.
inline std::pair<std::string_view, std::string_view> split_at_nul(const uint8_t* data, size_t size) {
    const std::string_view all(reinterpret_cast<const char*>(data), size);
    const size_t p = all.find('\0');
    if (p == std::string_view::npos) return {all, {}};
    return {all.substr(0, p), all.substr(p + 1)};
}

}  // namespace fuzz

// Keeps a computed value alive so the optimiser cannot drop the reads that produced it.
template <class T>
inline void fuzz_keep(const T& v) {
    asm volatile("" : : "g"(&v) : "memory");
}
