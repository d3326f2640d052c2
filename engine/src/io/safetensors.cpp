// safetensors loader (docs/file-formats.md §safetensors): 8-byte little-endian header length N, N bytes of
// JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data block.
// Offsets are relative to the data block. F32 tensors are views into the mapping when 4-byte aligned;
// F16/BF16/F64 are converted to float32 on load.
#include <bit>
#include <cstring>
#include <nlohmann/json.hpp>

#include "io/dtype.h"
#include "io/mapped_file.h"
#include "mambascope/error.h"
#include "mambascope/weights.h"
#include "io/json_limits.h"

namespace mambascope {

static_assert(std::endian::native == std::endian::little, "checkpoint readers assume a little-endian host");

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull
                                     << 20;  // real headers are < 1 MB; anything above 100 MB is hostile
constexpr int64_t kMaxElements = int64_t{1} << 40;  // per tensor; far beyond any Mamba weight

io::DType parse_dtype(const std::string& s) {
    if (s == "F32") return io::DType::F32;
    if (s == "F16") return io::DType::F16;
    if (s == "BF16") return io::DType::BF16;
    if (s == "F64") return io::DType::F64;
    return io::DType::Unsupported;
}

[[noreturn]] void bad(const std::string& origin, const std::string& what) {
    throw Error(origin + ": invalid safetensors file: " + what,
                "the file is truncated or corrupt; re-download it or re-save it with safetensors");
}

}  // namespace

WeightMap load_safetensors(const std::filesystem::path& file) {
    const std::string origin = file.string();
    auto map = io::MappedFile::open(file);
    const uint8_t* base = map->data();
    const uint64_t fsize = map->size();
    if (fsize < 8)
        bad(origin, "file is " + std::to_string(fsize) + " bytes, shorter than the 8-byte header length");
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];
    if (header_len > kMaxHeaderBytes) {
        bad(origin, "header length " + std::to_string(header_len) + " exceeds the 100 MB limit");
    }
    if (header_len > fsize - 8) {
        bad(origin, "header length " + std::to_string(header_len) + " exceeds the file size " +
                        std::to_string(fsize));
    }
    const uint8_t* data = base + 8 + header_len;
    const uint64_t data_size = fsize - 8 - header_len;

    check_json_nesting(std::string_view(reinterpret_cast<const char*>(base + 8), header_len), origin + " header",
                       kMaxJsonNesting);  // before nlohmann recurses (docs/reliability.md)
    nlohmann::json header;
    try {
        header = nlohmann::json::parse(reinterpret_cast<const char*>(base + 8),
                                       reinterpret_cast<const char*>(base + 8 + header_len));
    } catch (const nlohmann::json::exception& e) {
        bad(origin, std::string("header is not JSON: ") + e.what());
    }
    if (!header.is_object()) bad(origin, "header is not a JSON object");

    WeightMap out;
    for (const auto& [name, info] : header.items()) {
        if (name == "__metadata__") continue;
        const std::string where = "tensor '" + name + "'";
        if (!info.is_object()) bad(origin, where + " is not an object");
        if (!info.contains("dtype") || !info["dtype"].is_string())
            bad(origin, where + " has no string dtype");
        if (!info.contains("shape") || !info["shape"].is_array()) bad(origin, where + " has no shape array");
        if (!info.contains("data_offsets") || !info["data_offsets"].is_array() ||
            info["data_offsets"].size() != 2) {
            bad(origin, where + " has no [begin, end] data_offsets");
        }
        const std::string dtype_name = info["dtype"].get<std::string>();
        const io::DType dtype = parse_dtype(dtype_name);
        if (dtype == io::DType::Unsupported) {
            throw Error(origin + ": unsupported dtype " + dtype_name + " for tensor " + name,
                        "Mambascope loads F32, F16, BF16 and F64 weights");
        }
        std::vector<int64_t> shape;
        int64_t numel = 1;
        for (const auto& d : info["shape"]) {
            if (!d.is_number_integer()) bad(origin, where + " has a non-integer dimension");
            const int64_t v = d.get<int64_t>();
            if (v < 0) bad(origin, where + " has a negative dimension " + std::to_string(v));
            if (v > 0 && numel > kMaxElements / v) bad(origin, where + " has an absurd shape");
            numel *= v;
            shape.push_back(v);
        }
        for (const auto& o : info["data_offsets"]) {
            if (!o.is_number_unsigned()) bad(origin, where + " has a non-integer or negative data offset");
        }
        const uint64_t begin = info["data_offsets"][0].get<uint64_t>();
        const uint64_t end = info["data_offsets"][1].get<uint64_t>();
        if (begin > end || end > data_size) {
            bad(origin, where + " data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                            "] lie outside the data block of " + std::to_string(data_size) + " bytes");
        }
        const uint64_t expected = static_cast<uint64_t>(numel) * io::dtype_bytes(dtype);
        if (end - begin != expected) {
            bad(origin, where + " has shape " + Tensor{shape, nullptr, nullptr}.shape_string() + " of " +
                            dtype_name + " (" + std::to_string(expected) + " bytes) but data_offsets span " +
                            std::to_string(end - begin) + " bytes");
        }

        const uint8_t* src = data + begin;
        Tensor t;
        t.shape = std::move(shape);
        if (dtype == io::DType::F32 && reinterpret_cast<uintptr_t>(src) % alignof(float) == 0) {
            t.data = reinterpret_cast<const float*>(src);  // zero-copy view
            t.owner = map;
        } else {
            auto buf = std::make_shared<std::vector<float>>(static_cast<size_t>(numel));
            io::convert_to_float(dtype, src, static_cast<size_t>(numel), buf->data());
            t.data = buf->data();
            t.owner = std::move(buf);
        }
        out.emplace(name, std::move(t));
    }
    return out;
}

}  // namespace mambascope
