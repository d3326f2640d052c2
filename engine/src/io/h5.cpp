// HDF5 C API wrapper; see mambascope/h5.h.
#include "mambascope/h5.h"

#include <fcntl.h>
#include <hdf5.h>
#include <hdf5_hl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "mambascope/atomic_file.h"
#include "mambascope/env_switch.h"
#include "mambascope/error.h"

namespace mambascope::h5 {
namespace {

// Every HDF5 call that returns a negative value on failure goes through this.
#define H5_CHECK(expr, what)                                                                  \
    ([&]() {                                                                                  \
        auto _r = (expr);                                                                     \
        if (_r < 0)                                                                           \
            throw Error(std::string("HDF5: ") + (what) + " failed [" + __FILE__ + ":" +       \
                            std::to_string(__LINE__) + "]",                                   \
                        "check that the file is a valid HDF5 file and the disk is writable"); \
        return _r;                                                                            \
    }())

// Set when H5Fclose of a writer's file failed (disk full): HDF5 1.10 then keeps a half-closed file that
// H5_term_library dereferences at exit (SIGSEGV). We shut the library down ourselves, and skip that when a
// close failed (the OS reclaims everything; the temp file is already removed).
std::atomic<bool> g_close_failed{false};

extern "C" void shut_down_hdf5() {
    if (!g_close_failed.load()) H5close();
}

struct Silence {
    // HDF5 prints its own error stack to stderr by default; our Errors carry the message instead.
    Silence() {
        H5dont_atexit();  // must precede the first call that initialises the library
        std::atexit(shut_down_hdf5);
        H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    }
};
const Silence kSilence;

hid_t native(DType t) {
    switch (t) {
        case DType::F32:
            return H5T_NATIVE_FLOAT;
        case DType::F64:
            return H5T_NATIVE_DOUBLE;
        case DType::I64:
            return H5T_NATIVE_INT64;
        case DType::I32:
            return H5T_NATIVE_INT32;
        case DType::U8:
            return H5T_NATIVE_UINT8;
    }
    return H5T_NATIVE_FLOAT;
}
size_t type_size(DType t) {
    switch (t) {
        case DType::F32:
            return 4;
        case DType::F64:
            return 8;
        case DType::I64:
            return 8;
        case DType::I32:
            return 4;
        case DType::U8:
            return 1;
    }
    return 4;
}

// Target chunk size for automatic chunking (HDF5 and xarray work well with ~1 MiB chunks).
constexpr uint64_t kTargetChunkBytes = 1 << 20;

std::vector<hsize_t> auto_chunk(const std::vector<uint64_t>& shape, size_t elem) {
    std::vector<hsize_t> c(shape.begin(), shape.end());
    for (auto& v : c) v = std::max<hsize_t>(v, 1);
    auto bytes = [&]() {
        uint64_t b = elem;
        for (auto v : c) b *= v;
        return b;
    };
    // Halve the largest leading dims until under the target.
    size_t axis = 0;
    while (bytes() > kTargetChunkBytes) {
        while (axis < c.size() && c[axis] == 1) ++axis;
        if (axis >= c.size()) break;
        c[axis] = (c[axis] + 1) / 2;
    }
    return c;
}

void make_parents(hid_t file, const std::string& path) {
    size_t pos = 1;
    while ((pos = path.find('/', pos)) != std::string::npos) {
        std::string g = path.substr(0, pos);
        htri_t e = H5Lexists(file, g.c_str(), H5P_DEFAULT);
        if (e <= 0) {
            hid_t gid = H5Gcreate2(file, g.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (gid < 0) throw Error("HDF5: cannot create group " + g);
            H5Gclose(gid);
        }
        ++pos;
    }
}

hid_t make_dcpl(const std::vector<uint64_t>& shape, size_t elem, const DatasetOptions& opt) {
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    bool nonempty =
        !shape.empty() && std::all_of(shape.begin(), shape.end(), [](uint64_t v) { return v > 0; });
    if (opt.chunked && nonempty) {
        std::vector<hsize_t> c = opt.chunk.empty() ? auto_chunk(shape, elem)
                                                   : std::vector<hsize_t>(opt.chunk.begin(), opt.chunk.end());
        H5Pset_chunk(dcpl, static_cast<int>(c.size()), c.data());
        H5Pset_shuffle(dcpl);
        H5Pset_deflate(dcpl, static_cast<unsigned>(opt.gzip_level));
    }
    return dcpl;
}

template <class F>
struct Closer {
    hid_t id;
    F f;
    ~Closer() {
        if (id >= 0) f(id);
    }
};
template <class F>
Closer<F> closer(hid_t id, F f) {
    return Closer<F>{id, f};
}

void write_attr_raw(hid_t obj, const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
                    const void* data) {
    if (H5Aexists(obj, name.c_str()) > 0) H5Adelete(obj, name.c_str());
    hid_t space = dims.empty() ? H5Screate(H5S_SCALAR)
                               : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    auto cs = closer(space, H5Sclose);
    hid_t a = H5_CHECK(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT),
                       "create attribute " + name);
    auto ca = closer(a, H5Aclose);
    H5_CHECK(H5Awrite(a, type, data), "write attribute " + name);
}

// Strings are written FIXED-length (UTF-8, null-padded, width = the longest value, at least 1 byte) and only
// fixed-length strings are read. libhdf5 1.10 reads a variable-length string through the file's global heap
// and trusts the heap index stored beside it: a corrupt index makes H5HG_read copy from a wild pointer
// (SIGSEGV, found by fuzz_trace / fuzz_calibration; docs/reliability.md, "libhdf5"). Fixed-length strings are
// stored inline and their size is checked before the read. h5py reads them as bytes (.decode()),
// netCDF/xarray as str.
hid_t utf8_fixed_string(size_t width) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, std::max<size_t>(width, 1));
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

// The values packed into one buffer of `width`-byte cells (null-padded), for a fixed-length string write.
std::vector<char> pack_fixed(const std::vector<std::string>& values, size_t width) {
    std::vector<char> buf(values.size() * width, '\0');
    for (size_t i = 0; i < values.size(); ++i)
        if (!values[i].empty())  // width 0 (all empty) leaves buf empty: no memcpy into its null data()
            std::memcpy(buf.data() + i * width, values[i].data(), values[i].size());
    return buf;
}

size_t max_length(const std::vector<std::string>& values) {
    size_t w = 1;
    for (const auto& v : values) w = std::max(w, v.size());
    return w;
}

}  // namespace

Object& Object::operator=(Object&& o) noexcept {
    if (this != &o) {
        if (id_ >= 0) H5Oclose(id_);
        id_ = o.id_;
        o.id_ = -1;
    }
    return *this;
}
Object::~Object() {
    if (id_ >= 0) H5Oclose(id_);
}

void set_attr(int64_t obj, const std::string& name, const std::string& value) {
    const size_t width = std::max<size_t>(value.size(), 1);
    hid_t t = utf8_fixed_string(width);
    auto ct = closer(t, H5Tclose);
    const std::vector<char> buf = pack_fixed({value}, width);
    write_attr_raw(obj, name, t, {}, buf.data());
}
void set_attr(int64_t obj, const std::string& name, double value) {
    write_attr_raw(obj, name, H5T_NATIVE_DOUBLE, {}, &value);
}
void set_attr(int64_t obj, const std::string& name, int64_t value) {
    write_attr_raw(obj, name, H5T_NATIVE_INT64, {}, &value);
}
void set_attr(int64_t obj, const std::string& name, const std::vector<double>& values) {
    write_attr_raw(obj, name, H5T_NATIVE_DOUBLE, {values.size()}, values.data());
}
void set_attr(int64_t obj, const std::string& name, const std::vector<int64_t>& values) {
    write_attr_raw(obj, name, H5T_NATIVE_INT64, {values.size()}, values.data());
}
void set_attr(int64_t obj, const std::string& name, const std::vector<std::string>& values) {
    const size_t width = max_length(values);
    hid_t t = utf8_fixed_string(width);
    auto ct = closer(t, H5Tclose);
    const std::vector<char> buf = pack_fixed(values, width);
    write_attr_raw(obj, name, t, {values.size()}, buf.data());
}
bool has_attr(int64_t obj, const std::string& name) {
    return H5Aexists(obj, name.c_str()) > 0;
}

namespace {

// Longest fixed-length string attribute read (a corrupt size field must not allocate gigabytes).
constexpr size_t kMaxAttrStringBytes = size_t{16} << 20;

// The message for a variable-length string (see utf8_fixed_string: never handed to libhdf5's reader).
std::string variable_length_refusal() {
    return " is a variable-length string, which Mambascope does not read (libhdf5 can crash on a corrupt "
           "one); "
           "rewrite the file's strings fixed-length: python3 scripts/h5_fixed_strings.py FILE";
}

// "<file>: attribute '<object>/<name>'" for errors about attribute `name` of `obj`.
std::string attr_where(hid_t obj, const std::string& name) {
    std::string file = "(HDF5 file)", object;
    const ssize_t fn = H5Fget_name(obj, nullptr, 0);
    if (fn > 0) {
        file.assign(static_cast<size_t>(fn) + 1, '\0');
        H5Fget_name(obj, file.data(), file.size());
        file.resize(static_cast<size_t>(fn));
    }
    if (H5Iget_type(obj) != H5I_FILE) {
        const ssize_t on = H5Iget_name(obj, nullptr, 0);
        if (on > 0) {
            object.assign(static_cast<size_t>(on) + 1, '\0');
            H5Iget_name(obj, object.data(), object.size());
            object.resize(static_cast<size_t>(on));
        }
    }
    return file + ": attribute '" + (object.empty() || object == "/" ? "" : object + "/") + name + "'";
}

// Opens attribute `name` of `obj` after checking that it exists and holds exactly one value; returns the
// attribute and its file type. An array-valued attribute read into one value would overflow the buffer.
std::pair<hid_t, hid_t> open_single_attr(hid_t obj, const std::string& name) {
    if (!has_attr(obj, name))
        throw Error(attr_where(obj, name) + " is missing", "the file may be truncated or from another tool");
    const hid_t a = H5Aopen(obj, name.c_str(), H5P_DEFAULT);
    if (a < 0) throw Error(attr_where(obj, name) + " cannot be opened", "the file may be corrupt");
    const hid_t space = H5Aget_space(a);
    const H5S_class_t sclass = space >= 0 ? H5Sget_simple_extent_type(space) : H5S_NO_CLASS;
    const hssize_t npoints = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    if (space >= 0) H5Sclose(space);
    if (!(sclass == H5S_SCALAR || (sclass == H5S_SIMPLE && npoints == 1))) {
        H5Aclose(a);
        throw Error(attr_where(obj, name) + " must hold a single value, it holds " +
                        (npoints >= 0 ? std::to_string(npoints) : std::string("an unknown number of")) +
                        " values",
                    "the file is corrupt or was not written by Mambascope");
    }
    const hid_t ft = H5Aget_type(a);
    if (ft < 0) {
        H5Aclose(a);
        throw Error(attr_where(obj, name) + " has an unreadable type", "the file may be corrupt");
    }
    return {a, ft};
}

}  // namespace

std::string get_attr_string(int64_t obj, const std::string& name) {
    const auto [a, ft] = open_single_attr(obj, name);
    auto ca = closer(a, H5Aclose);
    auto cft = closer(ft, H5Tclose);
    if (H5Tget_class(ft) != H5T_STRING)
        throw Error(attr_where(obj, name) + " must be a string", "the file is corrupt or from another tool");
    if (H5Tis_variable_str(ft) != 0) throw Error(attr_where(obj, name) + variable_length_refusal());
    const size_t n = H5Tget_size(ft);
    if (n == 0 || n > kMaxAttrStringBytes)
        throw Error(attr_where(obj, name) + " is a string of " + std::to_string(n) + " bytes (at most " +
                        std::to_string(kMaxAttrStringBytes) + ")",
                    "the file is corrupt");
    std::string s(n, '\0');
    hid_t t = H5Tcopy(ft);  // same width and character set; null-padded so that no byte is dropped
    auto ct = closer(t, H5Tclose);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    if (H5Aread(a, t, s.data()) < 0)
        throw Error(attr_where(obj, name) + " cannot be read", "the file may be corrupt");
    s.resize(strnlen(s.c_str(), n));
    return s;
}
double get_attr_double(int64_t obj, const std::string& name) {
    const auto [a, ft] = open_single_attr(obj, name);
    auto ca = closer(a, H5Aclose);
    auto cft = closer(ft, H5Tclose);
    const H5T_class_t cls = H5Tget_class(ft);
    if (cls != H5T_FLOAT && cls != H5T_INTEGER)
        throw Error(attr_where(obj, name) + " must be a number", "the file is corrupt or from another tool");
    double v = 0;
    if (H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0)
        throw Error(attr_where(obj, name) + " cannot be read", "the file may be corrupt");
    return v;
}
int64_t get_attr_int(int64_t obj, const std::string& name) {
    const auto [a, ft] = open_single_attr(obj, name);
    auto ca = closer(a, H5Aclose);
    auto cft = closer(ft, H5Tclose);
    const H5T_class_t cls = H5Tget_class(ft);
    if (cls == H5T_FLOAT) {
        // Accepted only when it holds an integer that int64 represents exactly.
        double d = 0;
        if (H5Aread(a, H5T_NATIVE_DOUBLE, &d) < 0)
            throw Error(attr_where(obj, name) + " cannot be read", "the file may be corrupt");
        if (!(d > -9.0e15 && d < 9.0e15 && static_cast<double>(static_cast<int64_t>(d)) == d))
            throw Error(attr_where(obj, name) + " must be an integer, got " + std::to_string(d),
                        "the file is corrupt or from another tool");
        return static_cast<int64_t>(d);
    }
    if (cls != H5T_INTEGER)
        throw Error(attr_where(obj, name) + " must be an integer",
                    "the file is corrupt or from another tool");
    int64_t v = 0;
    if (H5Aread(a, H5T_NATIVE_INT64, &v) < 0)
        throw Error(attr_where(obj, name) + " cannot be read", "the file may be corrupt");
    return v;
}

// ---- Writer ------------------------------------------------------------------------------------------

namespace {

// Closes every id still open in `file` (datasets, groups, named types, attributes), then the file itself.
// Failure paths use this so that nothing of the file is left for H5_term_library to flush at exit (a file
// whose flush failed, still open at exit, crashed the library's shutdown). Returns false if the close failed.
bool close_everything(hid_t file) {
    if (file < 0) return true;
    const unsigned types = H5F_OBJ_DATASET | H5F_OBJ_GROUP | H5F_OBJ_DATATYPE | H5F_OBJ_ATTR | H5F_OBJ_LOCAL;
    const ssize_t n = H5Fget_obj_count(file, types);
    if (n > 0) {
        std::vector<hid_t> ids(static_cast<size_t>(n));
        const ssize_t got = H5Fget_obj_ids(file, types, static_cast<size_t>(n), ids.data());
        for (ssize_t k = 0; k < got; ++k) {
            const hid_t id = ids[static_cast<size_t>(k)];
            if (H5Iget_type(id) == H5I_ATTR)
                H5Aclose(id);
            else
                H5Oclose(id);
        }
    }
    if (H5Fclose(file) >= 0) return true;
    g_close_failed.store(true);
    return false;
}

std::string h5_error_hint() {
    return "check that the disk has space and is writable";
}

}  // namespace

Writer::Writer(std::filesystem::path target) : target_(std::move(target)) {
    auto dir = target_.has_parent_path() ? target_.parent_path() : std::filesystem::path(".");
    std::error_code ec;
    if (std::filesystem::is_directory(target_, ec))
        throw Error("cannot write " + target_.string() + ": " + std::strerror(EISDIR),
                    "give a file name, not a folder");
    if (std::filesystem::exists(target_, ec) && !std::filesystem::is_regular_file(target_, ec))
        throw Error("cannot write " + target_.string() + ": not a regular file",
                    "an HDF5 file is never written into a device or pipe; give a file name");
    if (std::filesystem::is_symlink(target_, ec)) {  // replace the file the link points to, keep the link
        auto real = std::filesystem::weakly_canonical(target_, ec);
        if (!ec) target_ = real;
        dir = target_.parent_path();
    }
    if (!std::filesystem::is_directory(dir, ec))
        throw Error("cannot write " + target_.string() + ": directory " + dir.string() + " does not exist",
                    "create the directory first");
    const DestinationSnapshot snap = snapshot_destination(target_);
    existed_ = snap.existed;
    ino_ = snap.ino;
    size_ = snap.size;
    mtime_ns_ = snap.mtime_ns;
    temp_ = target_;
    temp_ += ".tmp-" + std::to_string(::getpid());
    // Close degree STRONG: closing the file closes every object still open in it, so commit() has really
    // written everything before the rename and a failure leaves nothing open.
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    errno = 0;
    file_ = H5Fcreate(temp_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl >= 0 ? fapl : H5P_DEFAULT);
    const int err = errno;
    if (fapl >= 0) H5Pclose(fapl);
    if (file_ < 0) {
        ::unlink(temp_.c_str());
        throw Error(
            "cannot create HDF5 file " + temp_.string() + (err ? ": " + std::string(std::strerror(err)) : ""),
            "check that the directory is writable");
    }
    slot_ = register_temp_file(temp_);
}

Writer::~Writer() {
    if (!committed_) abandon();
}

void Writer::abandon() noexcept {
    close_everything(file_);
    file_ = -1;
    ::unlink(temp_.c_str());
    unregister_temp_file(slot_);
    slot_ = -1;
}

int64_t Writer::root() const {
    return file_;
}

Object Writer::group(const std::string& path) {
    make_parents(file_, path + "/");
    return Object(H5_CHECK(H5Oopen(file_, path.c_str(), H5P_DEFAULT), "open group " + path));
}

Object Writer::open(const std::string& path) {
    return Object(H5_CHECK(H5Oopen(file_, path.c_str(), H5P_DEFAULT), "open " + path));
}

void Writer::write(const std::string& path, DType type, const std::vector<uint64_t>& shape, const void* data,
                   const DatasetOptions& opt) {
    make_parents(file_, path);
    std::vector<hsize_t> dims(shape.begin(), shape.end());
    hid_t space = dims.empty() ? H5Screate(H5S_SCALAR)
                               : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    auto cs = closer(space, H5Sclose);
    hid_t dcpl = make_dcpl(shape, type_size(type), opt);
    auto cp = closer(dcpl, H5Pclose);
    hid_t ds = H5_CHECK(H5Dcreate2(file_, path.c_str(), native(type), space, H5P_DEFAULT, dcpl, H5P_DEFAULT),
                        "create dataset " + path);
    auto cd = closer(ds, H5Dclose);
    uint64_t n = 1;
    for (auto v : shape) n *= v;
    if (n > 0)
        H5_CHECK(H5Dwrite(ds, native(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "write dataset " + path);
}

void Writer::write_strings(const std::string& path, const std::vector<std::string>& values) {
    make_parents(file_, path);
    hsize_t n = values.size();
    hid_t space = H5Screate_simple(1, &n, nullptr);
    auto cs = closer(space, H5Sclose);
    const size_t width = max_length(values);
    hid_t t = utf8_fixed_string(width);
    auto ct = closer(t, H5Tclose);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    auto cp = closer(dcpl, H5Pclose);
    constexpr hsize_t kRowsPerChunk = 16384;  // also the rows packed per write (bounded memory)
    if (n > 0) {
        hsize_t c = std::min<hsize_t>(n, kRowsPerChunk);
        H5Pset_chunk(dcpl, 1, &c);
        H5Pset_deflate(dcpl, 4);
    }
    hid_t ds = H5_CHECK(H5Dcreate2(file_, path.c_str(), t, space, H5P_DEFAULT, dcpl, H5P_DEFAULT),
                        "create dataset " + path);
    auto cd = closer(ds, H5Dclose);
    for (hsize_t r0 = 0; r0 < n; r0 += kRowsPerChunk) {
        const hsize_t rows = std::min<hsize_t>(kRowsPerChunk, n - r0);
        const std::vector<std::string> part(values.begin() + static_cast<ptrdiff_t>(r0),
                                            values.begin() + static_cast<ptrdiff_t>(r0 + rows));
        const std::vector<char> buf = pack_fixed(part, width);
        hid_t fspace = H5Dget_space(ds);
        auto cf = closer(fspace, H5Sclose);
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &r0, nullptr, &rows, nullptr);
        hid_t mspace = H5Screate_simple(1, &rows, nullptr);
        auto cm = closer(mspace, H5Sclose);
        H5_CHECK(H5Dwrite(ds, t, mspace, fspace, H5P_DEFAULT, buf.data()), "write dataset " + path);
    }
}

Object Writer::create_appendable(const std::string& path, DType type,
                                 const std::vector<uint64_t>& inner_shape, uint64_t rows_per_chunk) {
    make_parents(file_, path);
    std::vector<hsize_t> dims{0}, maxdims{H5S_UNLIMITED};
    uint64_t inner = 1;
    for (auto v : inner_shape) {
        dims.push_back(v);
        maxdims.push_back(v);
        inner *= std::max<uint64_t>(v, 1);
    }
    hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), maxdims.data());
    auto cs = closer(space, H5Sclose);
    if (rows_per_chunk == 0)
        rows_per_chunk = std::max<uint64_t>(1, kTargetChunkBytes / (inner * type_size(type)));
    std::vector<hsize_t> chunk{rows_per_chunk};
    for (auto v : inner_shape) chunk.push_back(std::max<uint64_t>(v, 1));
    // keep chunks ≤ ~1 MiB even when one row is large
    uint64_t bytes = rows_per_chunk * inner * type_size(type);
    for (size_t a = 1; bytes > kTargetChunkBytes && a < chunk.size(); ++a) {
        while (bytes > kTargetChunkBytes && chunk[a] > 1) {
            chunk[a] = (chunk[a] + 1) / 2;
            bytes = chunk[0] * type_size(type);
            for (size_t b = 1; b < chunk.size(); ++b) bytes *= chunk[b];
        }
    }
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    auto cp = closer(dcpl, H5Pclose);
    H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data());
    H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, 4);
    hid_t ds = H5_CHECK(H5Dcreate2(file_, path.c_str(), native(type), space, H5P_DEFAULT, dcpl, H5P_DEFAULT),
                        "create dataset " + path);
    return Object(ds);
}

void Writer::append(const Object& dataset, DType type, uint64_t rows, const void* data) {
    if (rows == 0) return;
    hid_t ds = dataset.id();
    hid_t space = H5Dget_space(ds);
    int rank = H5Sget_simple_extent_ndims(space);
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    H5Sget_simple_extent_dims(space, dims.data(), nullptr);
    H5Sclose(space);
    std::vector<hsize_t> start(dims.size(), 0), count(dims);
    start[0] = dims[0];
    count[0] = rows;
    dims[0] += rows;
    H5_CHECK(H5Dset_extent(ds, dims.data()), "extend dataset");
    hid_t fspace = H5Dget_space(ds);
    auto cf = closer(fspace, H5Sclose);
    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
    hid_t mspace = H5Screate_simple(rank, count.data(), nullptr);
    auto cm = closer(mspace, H5Sclose);
    H5_CHECK(H5Dwrite(ds, native(type), mspace, fspace, H5P_DEFAULT, data), "append to dataset");
}

Object Writer::create(const std::string& path, DType type, const std::vector<uint64_t>& shape,
                      const std::vector<uint64_t>& chunk) {
    make_parents(file_, path);
    std::vector<hsize_t> dims(shape.begin(), shape.end());
    hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    auto cs = closer(space, H5Sclose);
    DatasetOptions opt;
    opt.chunked = true;
    opt.chunk = chunk;
    hid_t dcpl = make_dcpl(shape, type_size(type), opt);
    auto cp = closer(dcpl, H5Pclose);
    return Object(
        H5_CHECK(H5Dcreate2(file_, path.c_str(), native(type), space, H5P_DEFAULT, dcpl, H5P_DEFAULT),
                 "create dataset " + path));
}

void Writer::write_slab(const Object& dataset, DType type, const std::vector<uint64_t>& start,
                        const std::vector<uint64_t>& count, const void* data) {
    std::vector<hsize_t> st(start.begin(), start.end()), ct(count.begin(), count.end());
    for (auto c : ct)
        if (c == 0) return;
    hid_t fspace = H5Dget_space(dataset.id());
    auto cf = closer(fspace, H5Sclose);
    H5_CHECK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, st.data(), nullptr, ct.data(), nullptr),
             "select slab");
    hid_t mspace = H5Screate_simple(static_cast<int>(ct.size()), ct.data(), nullptr);
    auto cm = closer(mspace, H5Sclose);
    H5_CHECK(H5Dwrite(dataset.id(), native(type), mspace, fspace, H5P_DEFAULT, data), "write slab");
}

void Writer::make_scale(const std::string& scale_path, const std::string& name) {
    hid_t scale = H5_CHECK(H5Dopen2(file_, scale_path.c_str(), H5P_DEFAULT), "open scale " + scale_path);
    auto cs = closer(scale, H5Dclose);
    if (H5DSis_scale(scale) <= 0) H5_CHECK(H5DSset_scale(scale, name.c_str()), "make scale " + scale_path);
}

void Writer::attach_scale(const std::string& dataset_path, int axis, const std::string& scale_path,
                          const std::string& label) {
    hid_t scale = H5_CHECK(H5Dopen2(file_, scale_path.c_str(), H5P_DEFAULT), "open scale " + scale_path);
    auto cs = closer(scale, H5Dclose);
    hid_t ds = H5_CHECK(H5Dopen2(file_, dataset_path.c_str(), H5P_DEFAULT), "open dataset " + dataset_path);
    auto cd = closer(ds, H5Dclose);
    if (H5DSis_scale(scale) <= 0) H5_CHECK(H5DSset_scale(scale, label.c_str()), "make scale " + scale_path);
    H5_CHECK(H5DSattach_scale(ds, scale, static_cast<unsigned>(axis)), "attach scale " + scale_path);
    H5_CHECK(H5DSset_label(ds, static_cast<unsigned>(axis), label.c_str()), "label axis of " + dataset_path);
}

void Writer::commit() {
    if (committed_) return;
    if (file_ < 0) throw Error("cannot write " + target_.string() + ": an earlier write failed");
    const bool testing_fail = testing::take_commit_failure();
    errno = 0;
    bool ok = !testing_fail && H5Fflush(file_, H5F_SCOPE_GLOBAL) >= 0;
    int err = testing_fail ? ENOSPC : errno;
    if (ok) {
        // STRONG close: every object still open is closed and written now.
        errno = 0;
        ok = H5Fclose(file_) >= 0;
        err = errno;
        if (!ok) g_close_failed.store(true);
        file_ = -1;
    }
    if (!ok) {
        abandon();
        throw Error("cannot write HDF5 file " + target_.string() +
                        (err ? ": " + std::string(std::strerror(err)) : std::string(": flush failed")),
                    h5_error_hint());
    }
    DestinationSnapshot before;
    before.existed = existed_;
    before.ino = ino_;
    before.size = size_;
    before.mtime_ns = mtime_ns_;
    const std::string change = destination_change(target_, before);
    if (!change.empty()) {
        committed_ = true;  // the temp file is moved to .conflict-<pid> (or removed) below
        const int slot = slot_;
        slot_ = -1;
        try {
            throw_destination_conflict(temp_, target_, change);
        } catch (...) {
            unregister_temp_file(slot);
            throw;
        }
    }
    if (::rename(temp_.c_str(), target_.c_str()) != 0) {
        err = errno;  // saved before the cleanup can overwrite it
        abandon();
        committed_ = true;
        throw Error("cannot rename " + temp_.string() + " to " + target_.string() + ": " + std::strerror(err),
                    h5_error_hint());
    }
    committed_ = true;
    unregister_temp_file(slot_);
    slot_ = -1;
    note_committed(target_);
}

namespace testing {
namespace {
std::atomic<bool> g_fail_commit{false};
}
void fail_next_commit() {
    g_fail_commit.store(true);
}
bool take_commit_failure() {
    return g_fail_commit.exchange(false);
}
}  // namespace testing

// ---- Reader ------------------------------------------------------------------------------------------

Reader::Reader(const std::filesystem::path& file) : path_(file) {
    if (!std::filesystem::exists(file)) throw Error("file not found: " + file.string());
    if (H5Fis_hdf5(file.c_str()) <= 0)
        throw Error("not an HDF5 file (or truncated/corrupt): " + file.string(),
                    "the file must be written by mambascope or h5py");
    file_ = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file_ < 0) throw Error("cannot open HDF5 file (truncated or corrupt?): " + file.string());
}
Reader::~Reader() {
    if (file_ >= 0) H5Fclose(file_);
}

bool Reader::exists(const std::string& path) const {
    // check each component so that a missing parent is not an HDF5 error
    size_t pos = 1;
    while (true) {
        size_t next = path.find('/', pos);
        std::string part = path.substr(0, next);
        if (H5Lexists(file_, part.c_str(), H5P_DEFAULT) <= 0) return false;
        if (next == std::string::npos) return true;
        pos = next + 1;
    }
}

Object Reader::open(const std::string& path) const {
    if (!exists(path)) throw Error(path_.string() + ": missing object " + path);
    return Object(H5_CHECK(H5Oopen(file_, path.c_str(), H5P_DEFAULT), "open " + path));
}

std::vector<uint64_t> Reader::shape(const std::string& path) const {
    if (!exists(path)) throw Error(path_.string() + ": missing dataset " + path);
    hid_t ds = H5_CHECK(H5Dopen2(file_, path.c_str(), H5P_DEFAULT), "open dataset " + path);
    auto cd = closer(ds, H5Dclose);
    hid_t space = H5Dget_space(ds);
    auto cs = closer(space, H5Sclose);
    int rank = H5Sget_simple_extent_ndims(space);
    std::vector<hsize_t> dims(static_cast<size_t>(std::max(rank, 0)));
    if (rank > 0) H5Sget_simple_extent_dims(space, dims.data(), nullptr);
    return {dims.begin(), dims.end()};
}

namespace {
// Largest dataset a reader loads at once (elements), and how many times its stored bytes a dataset may expand
// to (compression); a dataset of at most kSmallReadBytes is always read.
constexpr uint64_t kMaxReadElements = uint64_t(1) << 36;
constexpr uint64_t kMaxExpansion = 1024;
constexpr uint64_t kSmallReadBytes = uint64_t(64) << 20;
// Largest chunk a reader lets libhdf5 read (bytes). libhdf5 allocates a whole chunk's buffer to read from a
// chunked dataset (decompression, partial chunks), sized by what the file declares (the same kind of trust as
// the element size below, fuzz finding 6). Mambascope writes chunks of ≤ 1 MiB (kTargetChunkBytes), as h5py
// and xarray do by default; 64 MiB leaves room for other writers.
constexpr uint64_t kMaxChunkBytes = uint64_t(64) << 20;
constexpr size_t kMaxNumberBytes = 16;  // the widest numeric element a reader takes (long double, int128)

// Throws when dataset `ds` is chunked in chunks larger than kMaxChunkBytes (of its stored element size, or of
// the 8-byte element it is read into).
void check_chunk_bytes(hid_t ds, const std::filesystem::path& fpath, const std::string& path) {
    hid_t dcpl = H5Dget_create_plist(ds);
    if (dcpl < 0)
        throw Error(fpath.string() + ": dataset " + path + " has no readable layout", "the file is corrupt");
    auto cp = closer(dcpl, H5Pclose);
    if (H5Pget_layout(dcpl) != H5D_CHUNKED) return;
    hsize_t dims[H5S_MAX_RANK];
    const int rank = H5Pget_chunk(dcpl, H5S_MAX_RANK, dims);
    hid_t ft = H5Dget_type(ds);
    if (rank < 0 || ft < 0)
        throw Error(fpath.string() + ": dataset " + path + " has an unreadable chunk layout",
                    "the file is corrupt");
    auto cft = closer(ft, H5Tclose);
    uint64_t bytes = std::max<uint64_t>(H5Tget_size(ft), sizeof(double));
    for (int a = 0; a < rank; ++a)
        if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(dims[a]), &bytes) || bytes > kMaxChunkBytes)
            throw Error(fpath.string() + ": dataset " + path + " is stored in chunks of more than " +
                            std::to_string(kMaxChunkBytes >> 20) + " MiB (corrupt file?)",
                        "the file is damaged or not a Mambascope file");
}

template <class T>
std::vector<T> read_all(hid_t file, const std::filesystem::path& fpath, const std::string& path,
                        hid_t memtype, std::vector<uint64_t>* shape_out) {
    hid_t ds = H5Dopen2(file, path.c_str(), H5P_DEFAULT);
    if (ds < 0) throw Error(fpath.string() + ": missing dataset " + path);
    auto cd = closer(ds, H5Dclose);
    hid_t ft = H5Dget_type(ds);
    auto cft = closer(ft, H5Tclose);
    H5T_class_t cls = H5Tget_class(ft);
    if (cls != H5T_FLOAT && cls != H5T_INTEGER)
        throw Error(fpath.string() + ": dataset " + path + " is not numeric");
    // A number is at most 16 bytes. libhdf5 sizes its conversion buffer by the file's element size: a corrupt
    // size made it allocate and fill 1.98 GB for a 39 KB trace (fuzz finding 6, tests/fuzz/crashes/trace/).
    if (const size_t es = H5Tget_size(ft); es == 0 || es > kMaxNumberBytes)
        throw Error(fpath.string() + ": dataset " + path + " has " + std::to_string(es) +
                        "-byte numbers (corrupt file?)",
                    "the file is damaged or not a Mambascope file");
    hid_t space = H5Dget_space(ds);
    auto cs = closer(space, H5Sclose);
    int rank = H5Sget_simple_extent_ndims(space);
    std::vector<hsize_t> dims(static_cast<size_t>(std::max(rank, 0)));
    if (rank > 0) H5Sget_simple_extent_dims(space, dims.data(), nullptr);
    if (rank < 0) throw Error(fpath.string() + ": dataset " + path + " has an unreadable shape");
    // The element count is checked before anything is allocated: a corrupt extent must be an Error, not a
    // std::length_error or an attempt to allocate petabytes (fuzz finding, tests/fuzz/crashes/trace/).
    uint64_t n = 1;
    for (auto d : dims)
        if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n) || n > kMaxReadElements)
            throw Error(fpath.string() + ": dataset " + path + " claims more than " +
                            std::to_string(kMaxReadElements) + " elements (corrupt file?)",
                        "the file is damaged or not a Mambascope file");
    const uint64_t stored = H5Dget_storage_size(ds);
    if (n * sizeof(T) > std::max(kSmallReadBytes, stored * kMaxExpansion))
        throw Error(fpath.string() + ": dataset " + path + " claims " + std::to_string(n) +
                        " elements but stores only " + std::to_string(stored) + " bytes (corrupt file?)",
                    "the file is damaged or not a Mambascope file");
    check_chunk_bytes(ds, fpath, path);
    if (shape_out) shape_out->assign(dims.begin(), dims.end());
    std::vector<T> out;
    try {
        out.resize(static_cast<size_t>(n));
    } catch (const std::bad_alloc&) {
        throw Error(fpath.string() + ": dataset " + path + " (" + std::to_string(n) +
                    " elements) does not fit in memory");
    }
    if (n > 0 && H5Dread(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
        throw Error(fpath.string() + ": cannot read dataset " + path + " (truncated or corrupt file?)");
    return out;
}
}  // namespace

std::vector<float> Reader::read_f32(const std::string& path, std::vector<uint64_t>* shape) const {
    if (!exists(path)) throw Error(path_.string() + ": missing dataset " + path);
    return read_all<float>(file_, path_, path, H5T_NATIVE_FLOAT, shape);
}
std::vector<double> Reader::read_f64(const std::string& path, std::vector<uint64_t>* shape) const {
    if (!exists(path)) throw Error(path_.string() + ": missing dataset " + path);
    return read_all<double>(file_, path_, path, H5T_NATIVE_DOUBLE, shape);
}
std::vector<int64_t> Reader::read_i64(const std::string& path, std::vector<uint64_t>* shape) const {
    if (!exists(path)) throw Error(path_.string() + ": missing dataset " + path);
    return read_all<int64_t>(file_, path_, path, H5T_NATIVE_INT64, shape);
}

std::vector<std::string> Reader::read_strings(const std::string& path) const {
    if (!exists(path)) throw Error(path_.string() + ": missing dataset " + path);
    hid_t ds = H5_CHECK(H5Dopen2(file_, path.c_str(), H5P_DEFAULT), "open dataset " + path);
    auto cd = closer(ds, H5Dclose);
    hid_t space = H5Dget_space(ds);
    auto cs = closer(space, H5Sclose);
    if (H5Sget_simple_extent_ndims(space) != 1)
        throw Error(path_.string() + ": dataset " + path + " must be a 1-D array of strings",
                    "the file is corrupt");
    hsize_t n = 0;
    H5Sget_simple_extent_dims(space, &n, nullptr);
    hid_t ft = H5_CHECK(H5Dget_type(ds), "type of " + path);
    auto cft = closer(ft, H5Tclose);
    if (H5Tget_class(ft) != H5T_STRING)
        throw Error(path_.string() + ": dataset " + path + " must hold strings", "the file is corrupt");
    if (H5Tis_variable_str(ft) != 0)
        throw Error(path_.string() + ": dataset " + path + variable_length_refusal());
    // Fixed-length: `width` bytes per value, bounded before anything is allocated.
    const size_t width = H5Tget_size(ft);
    constexpr size_t kMaxStringBytes = size_t{1} << 31;
    if (width == 0 || width > kMaxAttrStringBytes || (n > 0 && width > kMaxStringBytes / n))
        throw Error(path_.string() + ": dataset " + path + " holds " + std::to_string(n) + " strings of " +
                        std::to_string(width) + " bytes (more than 2 GiB)",
                    "the file is corrupt");
    check_chunk_bytes(ds, path_, path);
    hid_t t = H5Tcopy(ft);  // same width and character set; null-padded so that no byte is dropped
    auto ct = closer(t, H5Tclose);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    std::vector<char> buf(static_cast<size_t>(n) * width);
    if (n > 0) H5_CHECK(H5Dread(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), "read strings " + path);
    std::vector<std::string> out;
    out.reserve(n);
    for (hsize_t i = 0; i < n; ++i) {
        const char* v = buf.data() + i * width;
        out.emplace_back(v, strnlen(v, width));
    }
    return out;
}

std::vector<float> Reader::read_rows_f32(const std::string& path, uint64_t row0, uint64_t rows) const {
    auto dims64 = shape(path);
    if (dims64.empty() || row0 + rows > dims64[0])
        throw Error(path_.string() + ": rows out of range for " + path);
    hid_t ds = H5_CHECK(H5Dopen2(file_, path.c_str(), H5P_DEFAULT), "open dataset " + path);
    auto cd = closer(ds, H5Dclose);
    check_chunk_bytes(ds, path_, path);
    std::vector<hsize_t> dims(dims64.begin(), dims64.end()), start(dims.size(), 0), count(dims);
    start[0] = row0;
    count[0] = rows;
    hid_t fspace = H5Dget_space(ds);
    auto cf = closer(fspace, H5Sclose);
    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
    hid_t mspace = H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr);
    auto cm = closer(mspace, H5Sclose);
    uint64_t n = 1;
    for (auto c : count) n *= c;
    std::vector<float> out(n);
    H5_CHECK(H5Dread(ds, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, out.data()), "read rows " + path);
    return out;
}

void probe_read_in_child(const std::filesystem::path& file, const std::function<void()>& read) {
    if (!env_flag("MAMBASCOPE_H5_PROBE", true,
                  "it sets whether an HDF5 file is first read in a child process (docs/reliability.md)"))
        return;
    // Exit codes of the child: 0 read, 3 mambascope::Error (the in-process read reports it), 4 other
    // exception.
    constexpr int kChildRead = 0, kChildError = 3, kChildOther = 4;
    std::fflush(nullptr);  // nothing buffered is written twice
    const pid_t pid = ::fork();
    if (pid < 0) return;  // no probe possible (out of processes): read in-process as before
    if (pid == 0) {
        // The child: default signal dispositions (the CLI's SIGINT handler would remove the parent's temp
        // files), read, and leave with _exit (no atexit handlers, no flush of the parent's buffers).
        ::signal(SIGINT, SIG_DFL);
        ::signal(SIGTERM, SIG_DFL);
        // Its output goes nowhere: libhdf5's error stacks and a sanitizer's report of libhdf5's crash are not
        // this program's (MAMBASCOPE_H5_PROBE=0 reproduces a crash in-process, with its report).
        if (const int null = ::open("/dev/null", O_WRONLY); null >= 0) {
            ::dup2(null, STDOUT_FILENO);
            ::dup2(null, STDERR_FILENO);
            ::close(null);
        }
        int code = kChildRead;
        try {
            read();
        } catch (const Error&) {
            code = kChildError;
        } catch (...) {
            code = kChildOther;
        }
        ::_exit(code);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return;
    }
    if (WIFEXITED(status) && (WEXITSTATUS(status) == kChildRead || WEXITSTATUS(status) == kChildError))
        return;
    // Killed by a signal, or ended by a crash handler (a sanitizer's or a fuzzer's exits with its own code),
    // or an exception that is not ours: the file is not safe to read in this process.
    std::string how;
    if (WIFSIGNALED(status)) {
        const int sig = WTERMSIG(status);
        const char* name = ::strsignal(sig);
        how = "signal " + std::to_string(sig) + ", " + (name ? name : "?");
    } else {
        how = WEXITSTATUS(status) == kChildOther ? std::string("an unexpected exception")
                                                 : "exit status " + std::to_string(WEXITSTATUS(status));
    }
    throw Error(file.string() + ": the HDF5 library crashed reading this file (" + how +
                    "); the file is corrupt, nothing was loaded",
                "re-create it (analyze / calibrate); docs/reliability.md, \"libhdf5\"");
}

}  // namespace mambascope::h5
