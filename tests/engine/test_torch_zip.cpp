// Tests for the PyTorch zip loader and the restricted unpickler. The valid fixtures come from
// scripts/fixtures/make_fake_torch_zip.py (torch's exact layout, written without torch); hostile inputs are
// built here.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/pickle.h"
#include "mambascope/error.h"
#include "mambascope/weights.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = fs::path(MAMBASCOPE_TEST_DATA_DIR) / "checkpoints";

std::string read_all(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// ---- a tiny stored-only zip writer ----
uint32_t crc32_of(const std::string& s) {
    uint32_t c = 0xffffffffu;
    for (unsigned char b : s) {
        c ^= b;
        for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}
void put16(std::string& o, uint32_t v) {
    o += static_cast<char>(v & 0xff), o += static_cast<char>((v >> 8) & 0xff);
}
void put32(std::string& o, uint32_t v) {
    put16(o, v & 0xffff), put16(o, v >> 16);
}

void put64(std::string& o, uint64_t v) {
    put32(o, static_cast<uint32_t>(v)), put32(o, static_cast<uint32_t>(v >> 32));
}

// Stored entries. With `zip64`, every central size/offset is 0xFFFFFFFF with the real value in a ZIP64 extra
// field, and the end records are ZIP64 ones (what writers emit for archives above 4 GB).
std::string zip_bytes(const std::vector<std::pair<std::string, std::string>>& files, bool zip64 = false) {
    std::string out, central;
    for (const auto& [name, data] : files) {
        const uint32_t offset = static_cast<uint32_t>(out.size()), crc = crc32_of(data);
        const uint32_t n = static_cast<uint32_t>(data.size());
        put32(out, 0x04034b50), put16(out, 20), put16(out, 0), put16(out, 0), put16(out, 0), put16(out, 0x21);
        put32(out, crc), put32(out, n), put32(out, n);
        put16(out, static_cast<uint32_t>(name.size())), put16(out, 0);
        out += name + data;
        const uint32_t big = zip64 ? 0xffffffffu : 0;
        put32(central, 0x02014b50), put16(central, 45), put16(central, 45), put16(central, 0),
            put16(central, 0);
        put16(central, 0), put16(central, 0x21), put32(central, crc), put32(central, zip64 ? big : n);
        put32(central, zip64 ? big : n), put16(central, static_cast<uint32_t>(name.size()));
        put16(central, zip64 ? 28 : 0), put16(central, 0), put16(central, 0), put16(central, 0),
            put32(central, 0);
        put32(central, zip64 ? big : offset);
        central += name;
        if (zip64)
            put16(central, 1), put16(central, 24), put64(central, n), put64(central, n),
                put64(central, offset);
    }
    const uint32_t cd_offset = static_cast<uint32_t>(out.size());
    out += central;
    const uint16_t count = static_cast<uint16_t>(files.size());
    if (zip64) {
        const uint64_t end64 = out.size();
        put32(out, 0x06064b50), put64(out, 44), put16(out, 45), put16(out, 45), put32(out, 0), put32(out, 0);
        put64(out, files.size()), put64(out, files.size()), put64(out, central.size()), put64(out, cd_offset);
        put32(out, 0x07064b50), put32(out, 0), put64(out, end64), put32(out, 1);
    }
    put32(out, 0x06054b50), put16(out, 0), put16(out, 0), put16(out, zip64 ? 0xffff : count);
    put16(out, zip64 ? 0xffff : count),
        put32(out, zip64 ? 0xffffffffu : static_cast<uint32_t>(central.size()));
    put32(out, zip64 ? 0xffffffffu : cd_offset), put16(out, 0);
    return out;
}

// ---- a pickle writer for state dicts of float32 tensors (protocol 2, as torch.save writes) ----
struct PickleWriter {
    std::string s = "\x80\x02";
    PickleWriter& op(char c) { return s += c, *this; }
    PickleWriter& global(const std::string& module, const std::string& name) {
        return s += 'c' + module + '\n' + name + '\n', *this;
    }
    PickleWriter& str(const std::string& v) {
        s += 'X';
        put32(s, static_cast<uint32_t>(v.size()));
        return s += v, *this;
    }
    PickleWriter& integer(int64_t v) {
        s += '\x8a';  // LONG1, 8 bytes
        s += '\x08';
        for (int i = 0; i < 8; ++i) s += static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff);
        return *this;
    }
    PickleWriter& ints(const std::vector<int64_t>& v) {
        op('(');
        for (auto x : v) integer(x);
        return op('t');
    }
    // name → _rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), offset, size, stride, False,
    // {})
    PickleWriter& tensor(const std::string& name, const std::string& key, int64_t numel, int64_t offset,
                         const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
        str(name).global("torch._utils", "_rebuild_tensor_v2").op('(');
        op('(')
            .str("storage")
            .global("torch", "FloatStorage")
            .str(key)
            .str("cpu")
            .integer(numel)
            .op('t')
            .op('Q');
        integer(offset)
            .ints(size)
            .ints(stride)
            .op('\x89')
            .global("collections", "OrderedDict")
            .op(')')
            .op('R');
        return op('t').op('R');
    }
    PickleWriter& begin_dict() { return global("collections", "OrderedDict").op(')').op('R').op('('); }
    std::string end_dict() { return op('u').op('.').s; }
};

std::string floats(const std::vector<float>& v) {
    return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

class TorchZip : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("mambascope_tz_" + std::to_string(::getpid()) + "_" +
                                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }
    fs::path write(const std::string& name, const std::string& bytes) {
        std::ofstream(dir_ / name, std::ios::binary) << bytes;
        return dir_ / name;
    }
    // A torch-style zip holding one data.pkl and float32 storages "0", "1", ...
    fs::path write_checkpoint(const std::string& pkl, const std::vector<std::string>& storages,
                              bool zip64 = false) {
        std::vector<std::pair<std::string, std::string>> files = {{"archive/data.pkl", pkl}};
        for (size_t i = 0; i < storages.size(); ++i)
            files.push_back({"archive/data/" + std::to_string(i), storages[i]});
        files.push_back({"archive/version", "3\n"});
        return write("model.bin", zip_bytes(files, zip64));
    }
    std::string error_of(const fs::path& p) {
        try {
            load_torch_zip(p);
        } catch (const Error& e) {
            return e.what();
        }
        return "<no error>";
    }
    std::string unpickle_error(const std::string& bytes) {
        try {
            io::unpickle(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test.pkl");
        } catch (const Error& e) {
            return e.what();
        }
        return "<no error>";
    }
    fs::path dir_;
};

void expect_fake_state_dict(const WeightMap& w) {
    ASSERT_EQ(w.size(), 7u);
    const Tensor& emb = w.at("backbone.embedding.weight");
    EXPECT_EQ(emb.shape, (std::vector<int64_t>{6, 4}));
    for (int i = 0; i < 24; ++i) EXPECT_EQ(emb.data[i], 0.25f * i - 3.0f);
    // lm_head shares the embedding's storage: same bytes, no copy.
    EXPECT_EQ(w.at("lm_head.weight").data, emb.data);

    const Tensor& a = w.at("backbone.layers.0.mixer.A_log");  // float16
    EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
    const float f16[] = {1.0f,
                         -2.5f,
                         std::ldexp(1.0f, -24),
                         std::ldexp(1.0f, -14),
                         65504.0f,
                         -std::numeric_limits<float>::infinity()};
    for (int i = 0; i < 6; ++i) EXPECT_EQ(a.data[i], f16[i]) << i;

    const Tensor& d = w.at("backbone.layers.0.mixer.D");  // bfloat16
    EXPECT_EQ(d.data[0], 1.0f);
    EXPECT_EQ(d.data[1], -3.140625f);
    EXPECT_EQ(d.data[2], std::ldexp(1.0f, -130));

    const Tensor& t = w.at("backbone.layers.0.mixer.dt_proj.weight");  // transposed view, copied row-major
    EXPECT_EQ(t.shape, (std::vector<int64_t>{3, 2}));
    const float tr[] = {1, 4, 2, 5, 3, 6};
    for (int i = 0; i < 6; ++i) EXPECT_EQ(t.data[i], tr[i]) << i;

    const Tensor& n = w.at("backbone.norm_f.weight");  // storage offset 2
    for (int i = 0; i < 4; ++i) EXPECT_EQ(n.data[i], 3.0f + i);

    const Tensor& f64 = w.at("backbone.layers.0.norm.weight");
    EXPECT_EQ(f64.data[0], 0.5f);
    EXPECT_EQ(f64.data[1], static_cast<float>(-1e-3));
}

}  // namespace

TEST_F(TorchZip, LoadsTorchLayoutStateDictWithSharedAndConvertedStorages) {
    expect_fake_state_dict(load_torch_zip(kFixtures / "fake_torch" / "pytorch_model.bin"));
}

TEST_F(TorchZip, DeflatedEntriesLoadLikeStoredOnes) {
    expect_fake_state_dict(load_torch_zip(kFixtures / "fake_torch_deflate" / "pytorch_model.bin"));
}

TEST_F(TorchZip, ModelDirectoryLoadsBinAndNormalisesEmbeddingName) {
    fs::path used;
    const WeightMap w = load_model_weights(kFixtures / "fake_torch", &used);
    EXPECT_EQ(used.filename(), "pytorch_model.bin");
    EXPECT_EQ(w.count("backbone.embeddings.weight"), 1u);
    EXPECT_EQ(w.count("backbone.embedding.weight"), 0u);
}

TEST_F(TorchZip, HandWrittenPickleRoundTrips) {
    const std::string pkl = PickleWriter().begin_dict().tensor("w", "0", 4, 1, {3}, {1}).end_dict();
    const WeightMap w = load_torch_zip(write_checkpoint(pkl, {floats({9, 8, 7, 6})}));
    ASSERT_EQ(w.count("w"), 1u);
    EXPECT_EQ(w.at("w").data[0], 8.0f);
    EXPECT_EQ(w.at("w").data[2], 6.0f);
}

TEST_F(TorchZip, Zip64CentralDirectoryIsRead) {
    const std::string pkl = PickleWriter().begin_dict().tensor("w", "0", 4, 0, {2, 2}, {2, 1}).end_dict();
    const WeightMap w = load_torch_zip(write_checkpoint(pkl, {floats({9, 8, 7, 6})}, /*zip64=*/true));
    ASSERT_EQ(w.count("w"), 1u);
    EXPECT_EQ(w.at("w").data[3], 6.0f);
}

TEST_F(TorchZip, CorruptedBytesGiveAnErrorOrAValidLoadNeverACrash) {
    // Flip bytes of the fixture (every 5th) and truncate it (every 17th length): the loader must throw Error
    // or load.
    constexpr size_t kFlipStride = 5, kCutStride = 17;  // a sample keeps the test under a second
    const std::string good = read_all(kFixtures / "fake_torch" / "pytorch_model.bin");
    int flip_errors = 0, cut_errors = 0, cuts = 0;
    for (size_t i = 0; i < good.size(); i += kFlipStride) {
        std::string bad = good;
        bad[i] = static_cast<char>(bad[i] ^ 0xA5);
        try {
            load_torch_zip(write("fuzz.bin", bad));
        } catch (const Error&) {
            ++flip_errors;
        }
    }
    for (size_t i = 0; i < good.size(); i += kCutStride, ++cuts) {
        try {
            load_torch_zip(write("fuzz.bin", good.substr(0, i)));
        } catch (const Error&) {
            ++cut_errors;
        }
    }
    EXPECT_EQ(cut_errors, cuts);  // every truncation is detected
    EXPECT_GT(flip_errors, 0);
}

TEST_F(TorchZip, TruncatedZipIsRefused) {
    const std::string full = read_all(kFixtures / "fake_torch" / "pytorch_model.bin");
    for (size_t keep : {full.size() / 2, full.size() - 10, size_t{10}}) {
        SCOPED_TRACE(keep);
        const std::string err = error_of(write("cut.bin", full.substr(0, keep)));
        EXPECT_NE(err.find("not a valid zip archive"), std::string::npos) << err;
    }
}

TEST_F(TorchZip, CentralDirectoryPointingPastTheFileIsRefused) {
    std::string full = read_all(kFixtures / "fake_torch" / "pytorch_model.bin");
    // Point the central directory entry of data.pkl (the first one) at a local header past the end of the
    // file.
    const size_t eocd = full.rfind(std::string("PK\x05\x06", 4));
    uint32_t cd;
    std::memcpy(&cd, full.data() + eocd + 16, 4);
    ASSERT_EQ(full.compare(cd, 4, std::string("PK\x01\x02", 4)), 0);
    full[cd + 45] = '\x7f';  // high byte of the local header offset
    const std::string err = error_of(write("bad.bin", full));
    EXPECT_NE(err.find("local header of 'pytorch_model/data.pkl' is missing or out of range"),
              std::string::npos)
        << err;
}

TEST_F(TorchZip, HugeClaimedStorageSizeIsRefused) {
    const std::string pkl =
        PickleWriter().begin_dict().tensor("w", "0", int64_t{1} << 40, 0, {int64_t{1} << 40}, {1}).end_dict();
    const std::string err = error_of(write_checkpoint(pkl, {floats({1, 2, 3, 4})}));
    EXPECT_NE(err.find("claims 1099511627776 FloatStorage elements but holds 16 bytes"), std::string::npos)
        << err;
}

TEST_F(TorchZip, TensorLargerThanItsStorageIsRefused) {
    const std::string big = PickleWriter()
                                .begin_dict()
                                .tensor("w", "0", 4, 0, {int64_t{1} << 40, 1 << 20}, {1 << 20, 1})
                                .end_dict();
    EXPECT_NE(error_of(write_checkpoint(big, {floats({1, 2, 3, 4})})).find("does not fit its storage"),
              std::string::npos);
    const std::string off = PickleWriter().begin_dict().tensor("w", "0", 4, 2, {3}, {1}).end_dict();
    EXPECT_NE(error_of(write_checkpoint(off, {floats({1, 2, 3, 4})})).find("past the end of its storage"),
              std::string::npos);
    const std::string strided = PickleWriter().begin_dict().tensor("w", "0", 4, 0, {2, 2}, {3, 1}).end_dict();
    EXPECT_NE(error_of(write_checkpoint(strided, {floats({1, 2, 3, 4})})).find("past the end of its storage"),
              std::string::npos);
}

TEST_F(TorchZip, MissingStorageEntryIsRefused) {
    const std::string pkl = PickleWriter().begin_dict().tensor("w", "5", 4, 0, {4}, {1}).end_dict();
    EXPECT_NE(error_of(write_checkpoint(pkl, {floats({1, 2, 3, 4})})).find("missing storage archive/data/5"),
              std::string::npos);
}

TEST_F(TorchZip, ForbiddenGlobalInsideCheckpointIsRefused) {
    // The classic exploit: os.system("echo pwned") through GLOBAL + REDUCE.
    const std::string pkl =
        PickleWriter().global("os", "system").str("echo pwned").op('\x85').op('R').op('.').s;
    const std::string err = error_of(write_checkpoint(pkl, {}));
    EXPECT_NE(err.find("forbidden pickle global os.system at byte offset 2"), std::string::npos) << err;
    EXPECT_NE(err.find("this file may run code; refusing"), std::string::npos) << err;
}

TEST_F(TorchZip, ForbiddenStackGlobalIsRefused) {
    const std::string pkl =
        std::string("\x80\x04") + "\x8c\x08" + "builtins" + "\x8c\x04" + "eval" + "\x93" + ".";
    const std::string err = unpickle_error(pkl);
    EXPECT_NE(err.find("forbidden pickle global builtins.eval"), std::string::npos) << err;
}

TEST_F(TorchZip, ForbiddenOpcodesAreRefused) {
    // INST ('i') imports and calls in one opcode; NEWOBJ (0x81) constructs arbitrary classes.
    EXPECT_NE(
        unpickle_error(std::string("\x80\x02(ios\nsystem\n.", 15)).find("forbidden pickle opcode 0x69 'i'"),
        std::string::npos);
    EXPECT_NE(unpickle_error(std::string("\x80\x02}\x81.", 5)).find("forbidden pickle opcode 0x81"),
              std::string::npos);
    // A whitelisted name may still not be called unless it is one of the rebuild functions.
    const std::string call = PickleWriter().global("torch", "FloatStorage").op(')').op('R').op('.').s;
    EXPECT_NE(unpickle_error(call).find("call of torch.FloatStorage"), std::string::npos);
}

TEST_F(TorchZip, TruncatedAndOversizedPickleIsAnErrorNotACrash) {
    EXPECT_NE(unpickle_error(std::string("\x80\x02}q", 4)).find("truncated"), std::string::npos);
    // BINUNICODE claiming 2 GiB: refused before allocating.
    EXPECT_NE(unpickle_error(std::string("\x80\x02X\xff\xff\xff\x7f", 7)).find("exceeds the limit"),
              std::string::npos);
    EXPECT_NE(unpickle_error(std::string("\x80\x02h\x07.", 5)).find("never stored"), std::string::npos);
    EXPECT_NE(unpickle_error(std::string("\x80\x02t.", 4)).find("no MARK"), std::string::npos);
    // Deep nesting that would overflow a recursive destructor: 200k nested lists.
    std::string deep = "\x80\x02";
    for (int i = 0; i < 200000; ++i) deep += "]";
    deep += std::string(199999, 'a') + ".";
    EXPECT_NE(unpickle_error(deep).find("stack deeper"), std::string::npos);
}

TEST_F(TorchZip, NonTensorStateDictEntryIsRefused) {
    const std::string pkl = PickleWriter().begin_dict().str("step").integer(3).end_dict();
    EXPECT_NE(error_of(write_checkpoint(pkl, {})).find("state dict entry step is a int, not a tensor"),
              std::string::npos);
}
