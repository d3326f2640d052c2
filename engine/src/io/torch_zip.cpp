// PyTorch zip checkpoint loader (torch.save since 1.6; docs/file-formats.md §torch zip). Layout:
//   <prefix>/data.pkl         pickle (protocol 2) of an OrderedDict name → tensor
//   <prefix>/data/<key>       raw little-endian storage bytes, 64-byte aligned (torch pads with a "FK" extra
//   field) <prefix>/byteorder        optional, "little" <prefix>/version          format version
// A tensor is _rebuild_tensor_v2(pid, storage_offset, size, stride, ...) with
// pid = ('storage', torch.<T>Storage, key, location, numel). Storages may be shared (lm_head ↔ embedding).
#include <map>

#include "io/dtype.h"
#include "io/mapped_file.h"
#include "io/pickle.h"
#include "io/zip.h"
#include "mambascope/error.h"
#include "mambascope/weights.h"

namespace mambascope {

namespace {

using io::PickleValue;
using K = PickleValue::Kind;

constexpr size_t kMaxPickleBytes = 256u << 20;  // data.pkl of a 64-layer model is ~50 KB

struct StorageInfo {
    io::DType dtype = io::DType::Unsupported;
    std::string dtype_name;
    int64_t numel = 0;
    const float* base = nullptr;  // float32 view of all numel elements
    std::shared_ptr<const void> owner;
};

io::DType storage_dtype(const std::string& cls, std::string& name) {
    name = cls.substr(cls.rfind('.') + 1);
    if (cls == "torch.FloatStorage") return io::DType::F32;
    if (cls == "torch.HalfStorage") return io::DType::F16;
    if (cls == "torch.BFloat16Storage") return io::DType::BF16;
    if (cls == "torch.DoubleStorage") return io::DType::F64;
    return io::DType::Unsupported;
}

bool is_contiguous(const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
    int64_t expected = 1;
    for (size_t i = size.size(); i-- > 0;) {
        if (size[i] == 1) continue;
        if (stride[i] != expected) return false;
        expected *= size[i];
    }
    return true;
}

class TorchZipLoader {
  public:
    explicit TorchZipLoader(const std::filesystem::path& file)
        : origin_(file.string()), map_(io::MappedFile::open(file)) {}

    WeightMap load() {
        const uint8_t* b = map_->data();
        if (map_->size() >= 2 && b[0] == 0x80 && b[1] <= 5) {
            throw Error(origin_ + " is a legacy (pre-1.6, non-zip) torch checkpoint, which is not supported",
                        "re-save it with a current torch.save, or convert it to safetensors");
        }
        zip_ = std::make_unique<io::ZipArchive>(map_);
        find_prefix();
        if (const io::ZipEntry* bo = zip_->find(prefix_ + "/byteorder")) {
            const io::ZipBlob blob = zip_->read(*bo, true);
            const std::string order(reinterpret_cast<const char*>(blob.data), blob.size);
            if (order != "little") {
                throw Error(origin_ + ": byte order '" + order + "' is not supported (only little-endian)");
            }
        }
        const io::ZipEntry* pkl = zip_->find(prefix_ + "/data.pkl");
        if (pkl->size > kMaxPickleBytes)
            throw Error(origin_ + ": data.pkl is implausibly large (" + std::to_string(pkl->size) +
                        " bytes)");
        const io::ZipBlob pbytes = zip_->read(*pkl, true);
        const io::PickleDocument doc = io::unpickle(pbytes.data, pbytes.size, origin_ + ":" + pkl->name);

        if (!doc.root->is(K::Dict)) {
            throw Error(
                origin_ + ": data.pkl holds a " + io::pickle_kind_name(doc.root->kind) + ", not a state dict",
                "save model.state_dict(), not the model object");
        }
        WeightMap out;
        const auto& items = doc.root->items;
        for (size_t i = 0; i + 1 < items.size(); i += 2) {
            if (!items[i]->is(K::String)) throw Error(origin_ + ": state dict key is not a string");
            const std::string& name = items[i]->text;
            if (!items[i + 1]->is(K::Tensor)) {
                throw Error(origin_ + ": state dict entry " + name + " is a " +
                            io::pickle_kind_name(items[i + 1]->kind) + ", not a tensor");
            }
            out.insert_or_assign(name, tensor(name, *items[i + 1]));
        }
        return out;
    }

  private:
    void find_prefix() {
        std::vector<std::string> found;
        for (const auto& e : zip_->entries()) {
            const auto slash = e.name.find('/');
            if (slash != std::string::npos && slash > 0 && e.name.substr(slash) == "/data.pkl") {
                found.push_back(e.name.substr(0, slash));
            }
        }
        if (found.size() != 1) {
            throw Error(origin_ +
                            ": a torch checkpoint zip must contain exactly one <prefix>/data.pkl, found " +
                            std::to_string(found.size()),
                        "is this a file written by torch.save?");
        }
        prefix_ = found[0];
    }

    const StorageInfo& storage(const std::string& tensor_name, const PickleValue& pid_value) {
        const PickleValue& pid = *pid_value.items.at(0);
        const auto& a = pid.items;
        if (!pid.is(K::Tuple) || a.size() != 5 || !a[0]->is(K::String) || a[0]->text != "storage" ||
            !a[1]->is(K::Global) || !a[2]->is(K::String) || !a[3]->is(K::String) || !a[4]->is(K::Int)) {
            throw Error(origin_ + ": tensor " + tensor_name +
                        " has a persistent id that is not ('storage', <type>, key, location, numel)");
        }
        const std::string& key = a[2]->text;
        const int64_t numel = a[4]->integer;
        std::string dtype_name;
        const io::DType dtype = storage_dtype(a[1]->text, dtype_name);
        auto it = storages_.find(key);
        if (it != storages_.end()) {
            if (it->second.dtype_name != dtype_name || it->second.numel != numel) {
                throw Error(origin_ + ": storage " + key +
                            " is described twice with different types or sizes");
            }
            return it->second;
        }
        if (dtype == io::DType::Unsupported) {
            throw Error(origin_ + ": unsupported dtype " + dtype_name + " for tensor " + tensor_name,
                        "Mambascope loads float32, float16, bfloat16 and float64 weights");
        }
        if (numel < 0) throw Error(origin_ + ": storage " + key + " has a negative size");
        if (key.empty() || key.find('/') != std::string::npos || key == "." || key == "..") {
            throw Error(origin_ + ": storage key '" + key + "' is not a plain name");
        }
        const std::string entry_name = prefix_ + "/data/" + key;
        const io::ZipEntry* entry = zip_->find(entry_name);
        if (!entry)
            throw Error(origin_ + ": tensor " + tensor_name + " refers to missing storage " + entry_name);
        const size_t elem = io::dtype_bytes(dtype);
        if (static_cast<uint64_t>(numel) > entry->size / elem ||
            entry->size != static_cast<uint64_t>(numel) * elem) {
            throw Error(origin_ + ": storage " + entry_name + " claims " + std::to_string(numel) + " " +
                        dtype_name + " elements but holds " + std::to_string(entry->size) + " bytes");
        }
        const io::ZipBlob blob = zip_->read(*entry, false);
        StorageInfo s;
        s.dtype = dtype;
        s.dtype_name = dtype_name;
        s.numel = numel;
        if (dtype == io::DType::F32 && reinterpret_cast<uintptr_t>(blob.data) % alignof(float) == 0) {
            s.base = reinterpret_cast<const float*>(blob.data);  // zero-copy view into the mapping
            s.owner = blob.owner;
        } else {
            auto buf = std::make_shared<std::vector<float>>(static_cast<size_t>(numel));
            io::convert_to_float(dtype, blob.data, static_cast<size_t>(numel), buf->data());
            s.base = buf->data();
            s.owner = std::move(buf);
        }
        return storages_.emplace(key, std::move(s)).first->second;
    }

    Tensor tensor(const std::string& name, const PickleValue& v) {
        const StorageInfo& s = storage(name, *v.items.at(0));
        const int64_t offset = v.integer;
        const auto& size = v.size;
        const auto& stride = v.stride;
        auto fail = [&](const std::string& what) {
            throw Error(origin_ + ": tensor " + name + " " + what,
                        "the checkpoint is corrupt or was not written by torch.save");
        };
        if (offset < 0) fail("has a negative storage offset");
        // Largest element index touched: offset + Σ (size_i − 1)·stride_i, computed without overflow.
        int64_t numel = 1, last = offset;
        bool empty = false;
        for (size_t i = 0; i < size.size(); ++i) {
            if (size[i] < 0 || stride[i] < 0) fail("has a negative size or stride");
            if (size[i] == 0) empty = true;
        }
        if (!empty) {
            for (size_t i = 0; i < size.size(); ++i) {
                if (size[i] > s.numel || numel > s.numel / size[i]) {
                    fail("of size " + Tensor{size, nullptr, nullptr}.shape_string() +
                         " does not fit its storage of " + std::to_string(s.numel) + " elements");
                }
                numel *= size[i];
                if (stride[i] > s.numel || (size[i] > 1 && stride[i] > (s.numel - last) / (size[i] - 1))) {
                    fail("reaches past the end of its storage of " + std::to_string(s.numel) + " elements");
                }
                last += (size[i] - 1) * stride[i];
            }
            if (last >= s.numel) {
                fail("(offset " + std::to_string(offset) + ", size " +
                     Tensor{size, nullptr, nullptr}.shape_string() +
                     ") reaches past the end of its storage of " + std::to_string(s.numel) + " elements");
            }
        } else {
            numel = 0;
        }
        Tensor t;
        t.shape = size;
        if (numel == 0 || is_contiguous(size, stride)) {
            t.data = s.base + (numel == 0 ? 0 : offset);
            t.owner = s.owner;
            return t;
        }
        // Strided view: gather into a row-major copy.
        auto buf = std::make_shared<std::vector<float>>(static_cast<size_t>(numel));
        std::vector<int64_t> idx(size.size(), 0);
        for (int64_t k = 0; k < numel; ++k) {
            int64_t src = offset;
            for (size_t d = 0; d < size.size(); ++d) src += idx[d] * stride[d];
            (*buf)[static_cast<size_t>(k)] = s.base[src];
            for (size_t d = size.size(); d-- > 0;) {
                if (++idx[d] < size[d]) break;
                idx[d] = 0;
            }
        }
        t.data = buf->data();
        t.owner = std::move(buf);
        return t;
    }

    std::string origin_;
    std::shared_ptr<const io::MappedFile> map_;
    std::unique_ptr<io::ZipArchive> zip_;
    std::string prefix_;
    std::map<std::string, StorageInfo> storages_;
};

}  // namespace

WeightMap load_torch_zip(const std::filesystem::path& file) {
    return TorchZipLoader(file).load();
}

}  // namespace mambascope
