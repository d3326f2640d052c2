// HDF5 C API wrapper; see mambascope/h5.h.
#include "mambascope/h5.h"

#include <hdf5.h>
#include <hdf5_hl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

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

struct Silence {
    // HDF5 prints its own error stack to stderr by default; our Errors carry the message instead.
    Silence() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }
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

hid_t utf8_vlen_string() {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
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
    hid_t t = utf8_vlen_string();
    auto ct = closer(t, H5Tclose);
    const char* p = value.c_str();
    write_attr_raw(obj, name, t, {}, &p);
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
    hid_t t = utf8_vlen_string();
    auto ct = closer(t, H5Tclose);
    std::vector<const char*> p;
    for (auto& v : values) p.push_back(v.c_str());
    write_attr_raw(obj, name, t, {values.size()}, p.data());
}
bool has_attr(int64_t obj, const std::string& name) {
    return H5Aexists(obj, name.c_str()) > 0;
}

std::string get_attr_string(int64_t obj, const std::string& name) {
    if (!has_attr(obj, name)) throw Error("HDF5: missing attribute '" + name + "'");
    hid_t a = H5_CHECK(H5Aopen(obj, name.c_str(), H5P_DEFAULT), "open attribute " + name);
    auto ca = closer(a, H5Aclose);
    hid_t ft = H5Aget_type(a);
    auto cft = closer(ft, H5Tclose);
    if (H5Tget_class(ft) != H5T_STRING) throw Error("HDF5: attribute '" + name + "' is not a string");
    if (H5Tis_variable_str(ft) > 0) {
        hid_t t = utf8_vlen_string();
        auto ct = closer(t, H5Tclose);
        char* p = nullptr;
        H5_CHECK(H5Aread(a, t, &p), "read attribute " + name);
        std::string s = p ? p : "";
        if (p) H5free_memory(p);
        return s;
    }
    size_t n = H5Tget_size(ft);
    std::string s(n, '\0');
    hid_t t = H5Tcopy(H5T_C_S1);
    auto ct = closer(t, H5Tclose);
    H5Tset_size(t, n);
    H5_CHECK(H5Aread(a, t, s.data()), "read attribute " + name);
    s.resize(strnlen(s.c_str(), n));
    return s;
}
double get_attr_double(int64_t obj, const std::string& name) {
    if (!has_attr(obj, name)) throw Error("HDF5: missing attribute '" + name + "'");
    hid_t a = H5_CHECK(H5Aopen(obj, name.c_str(), H5P_DEFAULT), "open attribute " + name);
    auto ca = closer(a, H5Aclose);
    double v = 0;
    H5_CHECK(H5Aread(a, H5T_NATIVE_DOUBLE, &v), "read attribute " + name);
    return v;
}
int64_t get_attr_int(int64_t obj, const std::string& name) {
    if (!has_attr(obj, name)) throw Error("HDF5: missing attribute '" + name + "'");
    hid_t a = H5_CHECK(H5Aopen(obj, name.c_str(), H5P_DEFAULT), "open attribute " + name);
    auto ca = closer(a, H5Aclose);
    int64_t v = 0;
    H5_CHECK(H5Aread(a, H5T_NATIVE_INT64, &v), "read attribute " + name);
    return v;
}

// ---- Writer ------------------------------------------------------------------------------------------

Writer::Writer(std::filesystem::path target) : target_(std::move(target)) {
    auto dir = target_.has_parent_path() ? target_.parent_path() : std::filesystem::path(".");
    if (!std::filesystem::is_directory(dir))
        throw Error("cannot write " + target_.string() + ": directory " + dir.string() + " does not exist",
                    "create the directory first");
    temp_ = target_;
    temp_ += ".tmp-" + std::to_string(::getpid());
    file_ = H5Fcreate(temp_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file_ < 0)
        throw Error("cannot create HDF5 file " + temp_.string(), "check that the directory is writable");
}

Writer::~Writer() {
    if (file_ >= 0) H5Fclose(file_);
    if (!committed_) {
        std::error_code ec;
        std::filesystem::remove(temp_, ec);
    }
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
    hid_t t = utf8_vlen_string();
    auto ct = closer(t, H5Tclose);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    auto cp = closer(dcpl, H5Pclose);
    if (n > 0) {
        hsize_t c = std::min<hsize_t>(n, 16384);
        H5Pset_chunk(dcpl, 1, &c);
        H5Pset_deflate(dcpl, 4);
    }
    hid_t ds = H5_CHECK(H5Dcreate2(file_, path.c_str(), t, space, H5P_DEFAULT, dcpl, H5P_DEFAULT),
                        "create dataset " + path);
    auto cd = closer(ds, H5Dclose);
    std::vector<const char*> p;
    p.reserve(values.size());
    for (auto& v : values) p.push_back(v.c_str());
    if (n > 0) H5_CHECK(H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, p.data()), "write dataset " + path);
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
    H5_CHECK(H5Fflush(file_, H5F_SCOPE_GLOBAL), "flush " + temp_.string());
    H5Fclose(file_);
    file_ = -1;
    std::error_code ec;
    std::filesystem::rename(temp_, target_, ec);
    if (ec) {
        std::filesystem::remove(temp_, ec);
        throw Error("cannot rename " + temp_.string() + " to " + target_.string() + ": " + ec.message());
    }
    committed_ = true;
}

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
    hid_t space = H5Dget_space(ds);
    auto cs = closer(space, H5Sclose);
    int rank = H5Sget_simple_extent_ndims(space);
    std::vector<hsize_t> dims(static_cast<size_t>(std::max(rank, 0)));
    if (rank > 0) H5Sget_simple_extent_dims(space, dims.data(), nullptr);
    uint64_t n = 1;
    for (auto d : dims) n *= d;
    if (shape_out) shape_out->assign(dims.begin(), dims.end());
    std::vector<T> out(n);
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
    hsize_t n = 0;
    H5Sget_simple_extent_dims(space, &n, nullptr);
    hid_t t = utf8_vlen_string();
    auto ct = closer(t, H5Tclose);
    std::vector<char*> p(n, nullptr);
    if (n > 0) H5_CHECK(H5Dread(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, p.data()), "read strings " + path);
    std::vector<std::string> out;
    out.reserve(n);
    for (auto* s : p) {
        out.emplace_back(s ? s : "");
        if (s) H5free_memory(s);
    }
    return out;
}

std::vector<float> Reader::read_rows_f32(const std::string& path, uint64_t row0, uint64_t rows) const {
    auto dims64 = shape(path);
    if (dims64.empty() || row0 + rows > dims64[0])
        throw Error(path_.string() + ": rows out of range for " + path);
    hid_t ds = H5_CHECK(H5Dopen2(file_, path.c_str(), H5P_DEFAULT), "open dataset " + path);
    auto cd = closer(ds, H5Dclose);
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

}  // namespace mambascope::h5
