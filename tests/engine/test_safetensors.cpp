// Tests for the safetensors loader, sharded indexes, model-directory selection and the half/bf16 conversions.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/dtype.h"
#include "mambascope/error.h"
#include "mambascope/weights.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

struct RawTensor {
    std::string name, dtype;
    std::vector<int64_t> shape;
    std::string bytes;
};

template <typename T>
std::string le_bytes(const std::vector<T>& v) {
    return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

uint16_t bf16_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return static_cast<uint16_t>(u >> 16);  // values used below are exact in bfloat16
}

// A minimal safetensors writer. `pad_to` aligns the data block (real files pad the header to 8 bytes);
// `mutate` lets a test corrupt the header JSON before it is written.
std::string safetensors_bytes(const std::vector<RawTensor>& ts, size_t pad_to = 8,
                              const std::function<void(nlohmann::json&)>& mutate = {}) {
    nlohmann::json h = nlohmann::json::object();
    h["__metadata__"] = {{"format", "pt"}};
    std::string data;
    for (const auto& t : ts) {
        h[t.name] = {{"dtype", t.dtype},
                     {"shape", t.shape},
                     {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
        data += t.bytes;
    }
    if (mutate) mutate(h);
    std::string header = h.dump();
    while (pad_to > 1 && (8 + header.size()) % pad_to != 0) header += ' ';
    std::string out(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    return out + header + data;
}

class TempDir : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("mambascope_st_" + std::to_string(::getpid()) + "_" +
                                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }
    fs::path write(const std::string& name, const std::string& bytes) {
        const fs::path p = dir_ / name;
        std::ofstream(p, std::ios::binary) << bytes;
        return p;
    }
    std::string error_of(const fs::path& p) {
        try {
            load_safetensors(p);
        } catch (const Error& e) {
            return e.what();
        }
        return "<no error>";
    }
    fs::path dir_;
};

const std::vector<float> kF32 = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};

}  // namespace

using Safetensors = TempDir;

TEST_F(Safetensors, RoundTripsF32F16Bf16F64) {
    const float inf = std::numeric_limits<float>::infinity();
    // F16: 1, -2.5, smallest subnormal 2^-24, largest subnormal, smallest normal 2^-14, 65504, -inf, NaN
    const std::vector<uint16_t> f16 = {0x3c00, 0xc100, 0x0001, 0x03ff, 0x0400, 0x7bff, 0xfc00, 0x7e00};
    const std::vector<float> f16_expect = {
        1.0f, -2.5f, std::ldexp(1.0f, -24), std::ldexp(1023.0f, -24), std::ldexp(1.0f, -14), 65504.0f,
        -inf, NAN};
    const std::vector<float> bf = {1.0f, -3.140625f, std::ldexp(1.0f, -130), inf};
    std::vector<uint16_t> bf_bits;
    for (float f : bf) bf_bits.push_back(bf16_of(f));
    const std::vector<double> f64 = {0.5, -1e-3};
    const auto p =
        write("m.safetensors", safetensors_bytes({{"a", "F32", {2, 3}, le_bytes(kF32)},
                                                  {"b", "F32", {3}, le_bytes(std::vector<float>{4, 5, 6})},
                                                  {"h", "F16", {8}, le_bytes(f16)},
                                                  {"bf", "BF16", {2, 2}, le_bytes(bf_bits)},
                                                  {"d", "F64", {2}, le_bytes(f64)}}));
    const WeightMap w = load_safetensors(p);
    ASSERT_EQ(w.size(), 5u);
    EXPECT_EQ(w.at("a").shape, (std::vector<int64_t>{2, 3}));
    for (size_t i = 0; i < kF32.size(); ++i) EXPECT_EQ(w.at("a").data[i], kF32[i]);
    // F32 tensors are zero-copy views into one shared mapping.
    EXPECT_EQ(w.at("a").owner, w.at("b").owner);
    EXPECT_NE(w.at("a").owner, w.at("h").owner);
    for (size_t i = 0; i < f16_expect.size(); ++i) {
        if (std::isnan(f16_expect[i]))
            EXPECT_TRUE(std::isnan(w.at("h").data[i]));
        else
            EXPECT_EQ(w.at("h").data[i], f16_expect[i]) << i;
    }
    for (size_t i = 0; i < bf.size(); ++i) EXPECT_EQ(w.at("bf").data[i], bf[i]) << i;
    EXPECT_EQ(w.at("d").data[0], 0.5f);
    EXPECT_EQ(w.at("d").data[1], static_cast<float>(-1e-3));
}

TEST_F(Safetensors, UnalignedF32IsCopiedCorrectly) {
    // pad_to = 1 and a header of odd length leave the data block unaligned.
    std::string bytes = safetensors_bytes({{"a", "F32", {6}, le_bytes(kF32)}}, 1);
    if ((bytes.size() - 24) % 4 == 0)
        bytes = safetensors_bytes({{"a", "F32", {6}, le_bytes(kF32)}}, 1,
                                  [](auto& h) { h["__metadata__"]["pad"] = "x"; });
    ASSERT_NE((bytes.size() - 24) % 4, 0u);
    const WeightMap w = load_safetensors(write("u.safetensors", bytes));
    for (size_t i = 0; i < kF32.size(); ++i) EXPECT_EQ(w.at("a").data[i], kF32[i]);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(w.at("a").data) % 4, 0u);
}

TEST_F(Safetensors, TruncatedFileIsRefused) {
    const std::string full = safetensors_bytes({{"a", "F32", {6}, le_bytes(kF32)}});
    EXPECT_NE(error_of(write("t1", full.substr(0, full.size() - 4))).find("outside the data block"),
              std::string::npos);
    EXPECT_NE(error_of(write("t2", full.substr(0, 20))).find("exceeds the file size"), std::string::npos);
    EXPECT_NE(error_of(write("t3", full.substr(0, 5))).find("shorter than the 8-byte header"),
              std::string::npos);
}

TEST_F(Safetensors, AbsurdHeaderLengthIsRefused) {
    std::string bytes(16, '\0');
    bytes[4] = 0x01;  // 2^32 bytes
    EXPECT_NE(error_of(write("h", bytes)).find("100 MB"), std::string::npos);
}

TEST_F(Safetensors, HeaderThatIsNotJsonIsRefused) {
    std::string bytes = std::string("\x04\0\0\0\0\0\0\0", 8) + "nope";
    EXPECT_NE(error_of(write("j", bytes)).find("header is not JSON"), std::string::npos);
}

TEST_F(Safetensors, OffsetsBeyondDataAreRefused) {
    const auto p = write("o", safetensors_bytes({{"a", "F32", {6}, le_bytes(kF32)}}, 8, [](auto& h) {
                             h["a"]["data_offsets"] = {
                                 8, 32};  // 24 bytes as the shape says, but ending past the 24-byte block
                         }));
    const std::string err = error_of(p);
    EXPECT_NE(err.find("tensor 'a' data_offsets [8, 32] lie outside"), std::string::npos) << err;
}

TEST_F(Safetensors, ShapeThatDisagreesWithByteCountIsRefused) {
    const auto p = write("s", safetensors_bytes({{"a", "F32", {7}, le_bytes(kF32)}}));
    const std::string err = error_of(p);
    EXPECT_NE(err.find("28 bytes"), std::string::npos) << err;
    EXPECT_NE(err.find("span 24 bytes"), std::string::npos) << err;
}

TEST_F(Safetensors, NegativeDimensionIsRefused) {
    const auto p = write("n", safetensors_bytes({{"a", "F32", {6}, le_bytes(kF32)}}, 8,
                                                [](auto& h) { h["a"]["shape"] = {-6}; }));
    EXPECT_NE(error_of(p).find("negative dimension"), std::string::npos);
}

TEST_F(Safetensors, UnsupportedDtypeNamesTheTensor) {
    const auto p = write("d", safetensors_bytes({{"step", "I64", {1}, std::string(8, '\0')}}));
    EXPECT_NE(error_of(p).find("unsupported dtype I64 for tensor step"), std::string::npos);
}

TEST_F(Safetensors, ShardedIndexLoadsEveryShard) {
    write("model-00001-of-00002.safetensors",
          safetensors_bytes({{"backbone.embedding.weight", "F32", {2, 3}, le_bytes(kF32)}}));
    write("model-00002-of-00002.safetensors",
          safetensors_bytes({{"backbone.norm_f.weight", "F32", {3}, le_bytes(std::vector<float>{1, 2, 3})}}));
    write("model.safetensors.index.json", R"({"metadata":{},"weight_map":{
        "backbone.embedding.weight":"model-00001-of-00002.safetensors",
        "backbone.norm_f.weight":"model-00002-of-00002.safetensors"}})");
    fs::path used;
    const WeightMap w = load_model_weights(dir_, &used);
    EXPECT_EQ(used.filename(), "model.safetensors.index.json");
    ASSERT_EQ(w.size(), 2u);
    EXPECT_EQ(w.count("backbone.embeddings.weight"), 1u);  // normalised spelling
    EXPECT_EQ(w.at("backbone.norm_f.weight").data[2], 3.0f);
}

TEST_F(Safetensors, ShardIndexNamingAMissingTensorIsRefused) {
    write("s1.safetensors", safetensors_bytes({{"a", "F32", {6}, le_bytes(kF32)}}));
    write("model.safetensors.index.json", R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors"}})");
    try {
        load_model_weights(dir_);
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("tensor b is listed in s1.safetensors"), std::string::npos)
            << e.what();
    }
}

TEST_F(Safetensors, ShardIndexCannotEscapeTheDirectory) {
    write("model.safetensors.index.json", R"({"weight_map":{"a":"../elsewhere.safetensors"}})");
    EXPECT_THROW(load_model_weights(dir_), Error);
}

TEST_F(Safetensors, ModelDirPrefersSafetensorsAndNamesFilesWhenEmpty) {
    try {
        load_model_weights(dir_);
        FAIL() << "expected an error";
    } catch (const Error& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find(dir_.string()), std::string::npos);
        EXPECT_NE(m.find("model.safetensors.index.json"), std::string::npos);
        EXPECT_NE(m.find("pytorch_model.bin"), std::string::npos);
    }
    write("pytorch_model.bin", "not a zip at all");  // would fail if it were read
    write("model.safetensors", safetensors_bytes({{"a", "F32", {6}, le_bytes(kF32)}}));
    fs::path used;
    EXPECT_EQ(load_model_weights(dir_, &used).size(), 1u);
    EXPECT_EQ(used.filename(), "model.safetensors");
}

TEST(Dtype, HalfToFloatIsExactForAllBitPatterns) {
    for (uint32_t h = 0; h < 0x10000; ++h) {
        const int sign = (h & 0x8000) ? -1 : 1;
        const int exp = (h >> 10) & 0x1f;
        const int mant = h & 0x3ff;
        const float got = io::half_to_float(static_cast<uint16_t>(h));
        if (exp == 0x1f) {
            if (mant == 0)
                EXPECT_EQ(got, sign * std::numeric_limits<float>::infinity());
            else
                EXPECT_TRUE(std::isnan(got)) << h;
            continue;
        }
        const double expect = exp == 0 ? sign * std::ldexp(static_cast<double>(mant), -24)
                                       : sign * std::ldexp(1.0 + mant / 1024.0, exp - 15);
        ASSERT_EQ(got, static_cast<float>(expect)) << "half bits " << h;
        ASSERT_EQ(std::signbit(got), sign < 0) << h;
    }
}

TEST(Dtype, NormaliseWeightNamesRenamesEmbeddingOnly) {
    WeightMap w;
    w["backbone.embedding.weight"] = Tensor::owned({1}, {1.0f});
    w["backbone.embeddings_other"] = Tensor::owned({1}, {2.0f});
    normalise_weight_names(w);
    EXPECT_EQ(w.count("backbone.embeddings.weight"), 1u);
    EXPECT_EQ(w.count("backbone.embedding.weight"), 0u);
    EXPECT_EQ(w.count("backbone.embeddings_other"), 1u);
}
