// h5.h: a small, checked C++ layer over the HDF5 C API, used by every file the engine writes or reads.
//
// Design decision: writers are atomic. H5Writer creates "<target>.tmp-<pid>" next to the target and renames
// it over the target only in commit(); a writer destroyed without commit() (error, cancellation, crash)
// deletes its temp file, so an existing file is never half-overwritten. Every failure path closes every id
// open in the file (so the library shuts down cleanly after a failed flush) and removes the temp file; the
// temp file is registered so that the CLI's signal handler can remove it. Datasets are
// float32/float64/int64/uint8 with optional chunking + shuffle + gzip, and appendable 1-D/2-D/3-D datasets
// grow along their first axis for streaming writers. All HDF5 errors become mambascope::Error with the file
// and object name (H5_CHECK).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace mambascope::h5 {

enum class DType { F32, F64, I64, I32, U8 };

struct DatasetOptions {
    bool chunked = false;  // chunked + shuffle + gzip
    int gzip_level = 4;
    std::vector<uint64_t> chunk;  // chunk shape; empty: chosen automatically (≤ 1 MiB)
};

// Handle to an open object (group or dataset); closes on destruction.
class Object {
  public:
    Object() = default;
    explicit Object(int64_t id) : id_(id) {}
    Object(Object&& o) noexcept : id_(o.id_) { o.id_ = -1; }
    Object& operator=(Object&& o) noexcept;
    Object(const Object&) = delete;
    Object& operator=(const Object&) = delete;
    ~Object();
    int64_t id() const { return id_; }
    bool valid() const { return id_ >= 0; }

  private:
    int64_t id_ = -1;
};

// Attributes on any object (file root, group, dataset).
void set_attr(int64_t obj, const std::string& name, const std::string& value);
void set_attr(int64_t obj, const std::string& name, double value);
void set_attr(int64_t obj, const std::string& name, int64_t value);
void set_attr(int64_t obj, const std::string& name, const std::vector<double>& values);
void set_attr(int64_t obj, const std::string& name, const std::vector<int64_t>& values);
void set_attr(int64_t obj, const std::string& name, const std::vector<std::string>& values);
bool has_attr(int64_t obj, const std::string& name);
// Single-value readers: the attribute must exist, hold exactly one value (scalar or 1 element) of the
// expected class (string; integer or float; integer, or a float with an integral value), else an Error
// naming the file and the attribute.
std::string get_attr_string(int64_t obj, const std::string& name);
double get_attr_double(int64_t obj, const std::string& name);
int64_t get_attr_int(int64_t obj, const std::string& name);

// A file being written. Paths inside are absolute ("/group/dataset"); parent groups are created as needed.
class Writer {
  public:
    explicit Writer(std::filesystem::path target);
    ~Writer();  // without commit(): removes the temp file
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;

    int64_t root() const;
    Object group(const std::string& path);  // create (or open) a group
    // Whole datasets.
    void write(const std::string& path, DType type, const std::vector<uint64_t>& shape, const void* data,
               const DatasetOptions& opt = {});
    void write_f32(const std::string& path, const std::vector<uint64_t>& shape, const float* data,
                   const DatasetOptions& opt = {}) {
        write(path, DType::F32, shape, data, opt);
    }
    void write_f64(const std::string& path, const std::vector<uint64_t>& shape, const double* data,
                   const DatasetOptions& opt = {}) {
        write(path, DType::F64, shape, data, opt);
    }
    void write_i64(const std::string& path, const std::vector<uint64_t>& shape, const int64_t* data,
                   const DatasetOptions& opt = {}) {
        write(path, DType::I64, shape, data, opt);
    }
    void write_strings(const std::string& path,
                       const std::vector<std::string>& values);  // variable-length UTF-8
    // Appendable dataset: shape[0] starts at 0 and grows with append(); inner dims fixed. Always
    // chunked+gzip.
    Object create_appendable(const std::string& path, DType type, const std::vector<uint64_t>& inner_shape,
                             uint64_t rows_per_chunk = 0);
    void append(const Object& dataset, DType type, uint64_t rows, const void* data);
    // Fixed-shape dataset (chunked + gzip) written piecewise with write_slab.
    Object create(const std::string& path, DType type, const std::vector<uint64_t>& shape,
                  const std::vector<uint64_t>& chunk = {});
    // Writes the box [start, start+count) of a dataset from a dense row-major buffer.
    void write_slab(const Object& dataset, DType type, const std::vector<uint64_t>& start,
                    const std::vector<uint64_t>& count, const void* data);
    Object open(const std::string& path);  // an existing group or dataset, for attributes
    // Makes the 1-D dataset `scale_path` a dimension scale named `name` (netCDF-4 and xarray then see it as
    // a dimension and its coordinate variable; the dimension's name is the dataset's last path component).
    void make_scale(const std::string& scale_path, const std::string& name);
    // Makes `scale_path` (1-D) a dimension scale named `label` and attaches it to axis `axis` of
    // `dataset_path`.
    void attach_scale(const std::string& dataset_path, int axis, const std::string& scale_path,
                      const std::string& label);
    // Flush, close, rename over the target. On failure (disk full, destination changed by another run, see
    // mambascope/atomic_file.h) every open id and the temp file are closed/removed before the Error.
    void commit();
    const std::filesystem::path& target() const { return target_; }

  private:
    void abandon() noexcept;  // closes every open id and the file, removes the temp file
    std::filesystem::path target_, temp_;
    int64_t file_ = -1;
    int slot_ = -1;  // temp-file registry slot (mambascope/atomic_file.h)
    bool committed_ = false;
    bool existed_ = false;
    unsigned long long ino_ = 0, size_ = 0;
    long long mtime_ns_ = 0;
};

// Test seam: the next Writer::commit() fails as if the disk were full.
namespace testing {
void fail_next_commit();
bool take_commit_failure();
}  // namespace testing

// A file being read. Errors name the file and the object.
class Reader {
  public:
    explicit Reader(const std::filesystem::path& file);
    ~Reader();
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;

    int64_t root() const { return file_; }
    bool exists(const std::string& path) const;
    std::vector<uint64_t> shape(const std::string& path) const;
    Object open(const std::string& path) const;
    // Reads a whole dataset converted to the requested type; checks the rank if `expect_rank` ≥ 0.
    std::vector<float> read_f32(const std::string& path, std::vector<uint64_t>* shape = nullptr) const;
    std::vector<double> read_f64(const std::string& path, std::vector<uint64_t>* shape = nullptr) const;
    std::vector<int64_t> read_i64(const std::string& path, std::vector<uint64_t>* shape = nullptr) const;
    std::vector<std::string> read_strings(const std::string& path) const;
    // Rows [row0, row0+rows) of a dataset along axis 0, as float.
    std::vector<float> read_rows_f32(const std::string& path, uint64_t row0, uint64_t rows) const;
    const std::filesystem::path& path() const { return path_; }

  private:
    std::filesystem::path path_;
    int64_t file_ = -1;
};

// Reads an HDF5 file we did not write in this process first in a forked child (docs/reliability.md,
// "libhdf5"): libhdf5 1.10 is not hardened against corrupt files and can crash (SIGSEGV, heap overflows in
// its object-header and global-heap decoders; found by the fuzzers). `read` is called in a child process; if
// the child dies of a signal, this throws an Error naming `file` and the signal, and nothing is read in this
// process. If the child finished (with or without an Error), `read` is deterministic on the same bytes, so
// the caller then reads in-process, where an Error is reported as usual. Costs one extra read of the file.
// When no child can be started (fork fails), it returns without a probe. Set MAMBASCOPE_H5_PROBE=0 to skip
// it.
void probe_read_in_child(const std::filesystem::path& file, const std::function<void()>& read);

}  // namespace mambascope::h5
