// Hostile and careless inputs (issue 13): every parser answers with a mambascope::Error that names the file
// and the field, in one line, or with a correct result; never a crash, never a silently wrong value.
// Each test feeds the input that crashed or misled the old code.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mambascope/calibration.h"
#include "mambascope/config.h"
#include "mambascope/decimamba.h"
#include "mambascope/error.h"
#include "mambascope/h5.h"
#include "mambascope/model.h"
#include "mambascope/retrieval.h"
#include "mambascope/session.h"
#include "mambascope/tokenizer.h"
#include "mambascope/trace.h"
#include "mambascope/weights.h"
#include "tiny_model.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

fs::path tmpdir(const std::string& name) {
    auto d = fs::temp_directory_path() / ("mambascope_hostile_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

void write_file(const fs::path& p, const std::string& text) {
    std::ofstream f(p, std::ios::binary);
    f << text;
}

std::string slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// The Error message `fn` throws; fails the test when it throws nothing or something else.
template <class Fn>
std::string error_of(Fn&& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    } catch (const std::exception& e) {
        ADD_FAILURE() << "expected a mambascope::Error, got std::exception: " << e.what();
        return {};
    }
    ADD_FAILURE() << "expected a mambascope::Error, nothing was thrown";
    return {};
}

bool contains(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

// `depth` nested arrays.
std::string nested(int depth) {
    return std::string(static_cast<size_t>(depth), '[') + std::string(static_cast<size_t>(depth), ']');
}

const char* kMamba1Config = R"({"model_type": "mamba", "hidden_size": 24, "num_hidden_layers": 3,
  "vocab_size": 37, "state_size": 5, "conv_kernel": 3, "intermediate_size": 48, "time_step_rank": 3)";

// A minimal byte-level BPE tokenizer: vocab a, b, ab and one merge.
nlohmann::json tiny_tokenizer() {
    return nlohmann::json::parse(R"({
      "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
      "normalizer": null, "added_tokens": []})");
}

Calibration small_calibration(const std::string& arch = "mamba2") {
    Calibration cal;
    cal.model_name = "toy";
    cal.arch = arch;
    cal.n_layer = 2;
    cal.channels = 3;
    cal.lengths = {1000, 2000, 4000};
    cal.params.train_len = 2000;
    cal.params.samples = 7;
    cal.params.clamp_top = 0.15;
    cal.params.lengths = cal.lengths;
    cal.log_decay.assign(6, -0.5);
    cal.delta_sum.assign(6, 1.0);
    cal.thresholds.assign(18, 0.1);
    cal.alpha.assign(18, 0.5);
    return cal;
}

// Reopens an HDF5 file read-write and lets `edit` change it with the C API.
template <class Fn>
void edit_h5(const fs::path& p, Fn&& edit) {
    const hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    edit(f);
    H5Fclose(f);
}

int cli(const std::string& args, const fs::path& log) {
    const std::string cmd = std::string(MAMBASCOPE_CLI_PATH) + " " + args + " > " + log.string() + " 2>&1";
    const int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace

// ---- 1. config.json nesting ---------------------------------------------------------------------------

TEST(HostileConfig, NestedThirtyThousandDeepIsAShortErrorNotAStackOverflow) {
    const std::string deep = std::string(kMamba1Config) + ", \"extra\": " + nested(30000) + "}";
    const std::string msg = error_of([&] { parse_config_json(deep, "/models/x/config.json"); });
    EXPECT_TRUE(contains(msg, "/models/x/config.json")) << msg.substr(0, 300);
    EXPECT_TRUE(contains(msg, "nested deeper than 64")) << msg.substr(0, 300);
    EXPECT_LT(msg.size(), 400u) << "the message must not echo the JSON";
    EXPECT_EQ(msg.find('\n'), std::string::npos);
    // Deep objects too, read from a model directory.
    std::string objects;
    for (int i = 0; i < 30000; ++i) objects += "{\"a\":";
    objects += "1" + std::string(30000, '}');
    const fs::path dir = tmpdir("deep_config");
    write_file(dir / "config.json", objects);
    const std::string msg2 = error_of([&] { load_config(dir); });
    EXPECT_TRUE(contains(msg2, (dir / "config.json").string())) << msg2.substr(0, 300);
    EXPECT_LT(msg2.size(), 400u);
    // Ordinary nesting still parses (strings holding brackets do not count).
    const std::string fine =
        std::string(kMamba1Config) + ", \"note\": \"[[[[{{{{\", \"extra\": " + nested(20) + "}";
    EXPECT_EQ(parse_config_json(fine, "config.json").n_layer, 3);
    fs::remove_all(dir);
}

// ---- 2. tokenizer nesting -----------------------------------------------------------------------------

TEST(HostileTokenizer, DeeplyNestedNormalizerIsAnErrorNamingTheFile) {
    const fs::path dir = tmpdir("deep_tokenizer");
    std::string text = tiny_tokenizer().dump();
    const std::string null_norm = "\"normalizer\":null";
    ASSERT_NE(text.find(null_norm), std::string::npos);
    text.replace(text.find(null_norm), null_norm.size(),
                 "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":" + nested(100000) + "}");
    write_file(dir / "tokenizer.json", text);
    const std::string msg = error_of([&] { load_tokenizer_json(dir / "tokenizer.json"); });
    EXPECT_TRUE(contains(msg, (dir / "tokenizer.json").string())) << msg.substr(0, 300);
    EXPECT_LT(msg.size(), 500u);
    // A shallow but unsupported normalizer is echoed at most ~200 characters.
    auto j = tiny_tokenizer();
    j["normalizer"] = {{"type", "Lowercase"}, {"pad", std::string(5000, 'x')}};
    write_file(dir / "tokenizer.json", j.dump());
    const std::string msg2 = error_of([&] { load_tokenizer_json(dir / "tokenizer.json"); });
    EXPECT_TRUE(contains(msg2, "normalizer")) << msg2;
    EXPECT_LT(msg2.size(), 600u);
    fs::remove_all(dir);
}

// ---- 3. HDF5 attributes stored as arrays ---------------------------------------------------------------

TEST(HostileHdf5, ArrayValuedCalibrationAttributesAreErrorsNamingFileAndAttribute) {
    const fs::path dir = tmpdir("h5_attr");
    const fs::path p = dir / "cal.h5";
    struct Case {
        const char* attr;
        std::function<void(hid_t)> write;
    };
    const std::vector<Case> cases{
        {"n_layer", [](hid_t f) { h5::set_attr(f, "n_layer", std::vector<int64_t>(4096, 2)); }},
        {"clamp_top", [](hid_t f) { h5::set_attr(f, "clamp_top", std::vector<double>(4096, 0.1)); }},
        {"arch", [](hid_t f) { h5::set_attr(f, "arch", std::vector<std::string>(1000, "mamba2")); }},
        {"format", [](hid_t f) { h5::set_attr(f, "format", std::vector<std::string>(1000, "x")); }},
        // Wrong class: a string where an integer is expected, a number where a string is.
        {"channels", [](hid_t f) { h5::set_attr(f, "channels", std::string("three")); }},
        {"aggregate", [](hid_t f) { h5::set_attr(f, "aggregate", int64_t{3}); }},
    };
    for (const auto& c : cases) {
        save_calibration(p, small_calibration());
        edit_h5(p, c.write);
        const std::string msg = error_of([&] { load_calibration(p); });
        EXPECT_TRUE(contains(msg, p.string())) << c.attr << ": " << msg;
        EXPECT_TRUE(contains(msg, std::string("'") + c.attr + "'")) << c.attr << ": " << msg;
        EXPECT_EQ(msg.find(".cpp:"), std::string::npos) << "names a source file: " << msg;
    }
    // A one-element array is a single value: accepted.
    save_calibration(p, small_calibration());
    edit_h5(p, [](hid_t f) { h5::set_attr(f, "n_layer", std::vector<int64_t>{2}); });
    EXPECT_EQ(load_calibration(p).n_layer, 2);
    fs::remove_all(dir);
}

TEST(HostileHdf5, ArrayValuedTraceAttributesAreErrors) {
    const fs::path dir = tmpdir("h5_trace");
    const fs::path p = dir / "trace.h5";
    for (int which = 0; which < 3; ++which) {
        const hid_t f = H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        ASSERT_GE(f, 0);
        if (which == 0) {
            h5::set_attr(f, "format", std::vector<std::string>(1000, "mambascope-trace"));
        } else {
            h5::set_attr(f, "format", std::string("mambascope-trace"));
            if (which == 1)
                h5::set_attr(f, "format_version", std::vector<int64_t>(4096, 1));
            else
                h5::set_attr(f, "format_version", std::vector<double>(4096, 1.0));
        }
        H5Fclose(f);
        const std::string msg = error_of([&] { read_trace(p); });
        EXPECT_TRUE(contains(msg, p.string())) << msg;
        EXPECT_TRUE(contains(msg, "single value")) << msg;
    }
    fs::remove_all(dir);
}

// Variable-length strings are never handed to libhdf5's reader (a corrupt heap index crashes it: the fuzzers'
// finding, tests/fuzz/crashes/{calibration,trace}/hdf5-vlen-*): refused with an error naming the converter.
TEST(HostileHdf5, VariableLengthStringsAreRefusedWithTheConverterNamed) {
    const fs::path dir = tmpdir("h5_vlen");
    const fs::path p = dir / "cal.h5";
    save_calibration(p, small_calibration());
    EXPECT_EQ(load_calibration(p).arch, small_calibration().arch);  // written fixed-length: loads
    edit_h5(p, [](hid_t f) {
        H5Adelete(f, "arch");
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, H5T_VARIABLE);
        hid_t s = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(f, "arch", t, s, H5P_DEFAULT, H5P_DEFAULT);
        const char* v = "mamba2";
        H5Awrite(a, t, &v);
        H5Aclose(a);
        H5Sclose(s);
        H5Tclose(t);
    });
    const std::string msg = error_of([&] { load_calibration(p); });
    EXPECT_TRUE(contains(msg, p.string())) << msg;
    EXPECT_TRUE(contains(msg, "'arch'")) << msg;
    EXPECT_TRUE(contains(msg, "variable-length")) << msg;
    EXPECT_TRUE(contains(msg, "scripts/h5_fixed_strings.py")) << msg;
    fs::remove_all(dir);
}

// libhdf5 1.10 itself crashes on some corrupt object headers (the fuzzers' findings in
// tests/fuzz/crashes/trace/ hdf5-attr-*.h5: SIGSEGV in H5A__close, a heap over-read in H5Aexists). read_trace
// and load_calibration read the file in a child process first (h5::probe_read_in_child), so the crash becomes
// an Error naming the file.
TEST(HostileHdf5, AFileThatCrashesLibhdf5IsACleanErrorNotACrash) {
    const fs::path segv = fs::path(MAMBASCOPE_TEST_DATA_DIR) / ".." / "fuzz" / "crashes" / "trace" /
                          "hdf5-attr-iterate-segv.h5";
    ASSERT_TRUE(fs::exists(segv));
    // Whether libhdf5 faults on these bytes depends on the memory layout (it reads freed or wild memory):
    // with this build it may crash (then the probe's "crashed" Error) or fail a check (then that check's
    // Error). Either way: an Error naming the file, and this process is still here. The probe's crash path
    // itself is pinned by ProbeReportsTheChildsSignalAndLetsErrorsThrough.
    const std::string msg = error_of([&] { read_trace(segv); });
    EXPECT_TRUE(contains(msg, segv.string())) << msg;
    // The same bytes as a calibration: a clean Error too (whichever check catches it first).
    const std::string msg2 = error_of([&] { load_calibration(segv); });
    EXPECT_TRUE(contains(msg2, segv.string())) << msg2;
}

TEST(HostileHdf5, ProbeReportsTheChildsSignalAndLetsErrorsThrough) {
    const fs::path f = "/nonexistent/x.h5";
    // SIGKILL: a signal no sanitizer intercepts, so the child dies of exactly it in every build.
    const std::string msg = error_of([&] { h5::probe_read_in_child(f, [] { ::raise(SIGKILL); }); });
    EXPECT_TRUE(contains(msg, f.string())) << msg;
    EXPECT_TRUE(contains(msg, "crashed reading this file (signal " + std::to_string(SIGKILL))) << msg;
    // A crash handler that ends the child with its own status (a sanitizer's, a fuzzer's) counts as a crash
    // too.
    const std::string msg2 = error_of([&] { h5::probe_read_in_child(f, [] { ::_exit(1); }); });
    EXPECT_TRUE(contains(msg2, "crashed reading this file (exit status 1)")) << msg2;
    // An Error in the child is left to the in-process read (it reports it with its own message): no throw
    // here.
    EXPECT_NO_THROW(h5::probe_read_in_child(f, [] { throw Error("bad file"); }));
    // The child's work never reaches this process.
    int touched = 0;
    h5::probe_read_in_child(f, [&] { touched = 1; });
    EXPECT_EQ(touched, 0);
}

// libhdf5 sizes its buffers by what the file declares: a 39 KB trace whose integer dataset claimed 1.98 GB
// per element made it allocate and fill 1.98 GB (fuzz finding 6, tests/fuzz/crashes/trace/
// hdf5-huge-element-size-oom.h5). Numbers wider than 16 bytes, and chunks over 64 MiB, are refused before
// libhdf5 reads them, with the file and the dataset named.
TEST(HostileHdf5, ImplausibleElementAndChunkSizesAreRefusedBeforeLibhdf5AllocatesThem) {
    const fs::path dir = tmpdir("h5_sizes");
    const fs::path p = dir / "sizes.h5";
    {
        const hid_t f = H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        ASSERT_GE(f, 0);
        // 4 integers of 32 bytes each (a valid HDF5 type; no Mambascope writer makes it).
        const hid_t wide = H5Tcopy(H5T_STD_I64LE);
        ASSERT_GE(H5Tset_size(wide, 32), 0);
        const hsize_t n = 4;
        hid_t space = H5Screate_simple(1, &n, nullptr);
        hid_t ds = H5Dcreate2(f, "wide", wide, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        ASSERT_GE(ds, 0);
        std::vector<unsigned char> bytes(4 * 32, 0);
        H5Dwrite(ds, wide, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data());
        H5Dclose(ds);
        H5Tclose(wide);
        H5Sclose(space);
        // 4 doubles in chunks of 16 Mi elements (128 MiB; the extent is unlimited, so the chunk may exceed
        // it).
        const hsize_t maxn = H5S_UNLIMITED, chunk = hsize_t(16) << 20;
        space = H5Screate_simple(1, &n, &maxn);
        const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
        H5Pset_chunk(dcpl, 1, &chunk);
        ds = H5Dcreate2(f, "huge_chunks", H5T_IEEE_F64LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        ASSERT_GE(ds, 0);
        H5Dclose(ds);
        H5Pclose(dcpl);
        H5Sclose(space);
        H5Fclose(f);
    }
    const h5::Reader r(p);
    const std::string wide = error_of([&] { r.read_i64("wide"); });
    EXPECT_TRUE(contains(wide, p.string()) && contains(wide, "wide") && contains(wide, "32-byte numbers"))
        << wide;
    const std::string chunks = error_of([&] { r.read_f64("huge_chunks"); });
    EXPECT_TRUE(contains(chunks, p.string()) && contains(chunks, "huge_chunks") &&
                contains(chunks, "chunks of more than 64 MiB"))
        << chunks;
    // The fuzzers' input, through the trace reader: an Error naming the file (the process stays small: the
    // fuzz replay runs it under scripts/fuzz.sh's 2 GB limit).
    const fs::path oom = fs::path(MAMBASCOPE_TEST_DATA_DIR) / ".." / "fuzz" / "crashes" / "trace" /
                         "hdf5-huge-element-size-oom.h5";
    ASSERT_TRUE(fs::exists(oom));
    const std::string msg = error_of([&] { read_trace(oom); });
    EXPECT_TRUE(contains(msg, oom.string()) && contains(msg, "-byte numbers")) << msg;
    fs::remove_all(dir);
}

TEST(Hdf5Strings, FixedLengthStringsRoundTripWithoutLosingBytes) {
    const fs::path dir = tmpdir("h5_strings");
    const fs::path p = dir / "s.h5";
    // Values of every width up to the longest: the longest has no terminating NUL in its cell, the empty one
    // is all padding; UTF-8 bytes are kept as they are; more values than one write chunk (16,384).
    std::vector<std::string> values{"", "a", "\xce\x94 delta", std::string(300, 'x')};
    for (int i = 0; i < 20000; ++i) values.push_back(std::to_string(i));
    {
        h5::Writer w(p);
        w.write_strings("/input/token_strings", values);
        h5::set_attr(w.root(), "name", std::string("\xce\x94-model"));
        h5::set_attr(w.root(), "empty", std::string());
        w.commit();
    }
    h5::Reader r(p);
    EXPECT_EQ(r.read_strings("/input/token_strings"), values);
    EXPECT_EQ(h5::get_attr_string(r.root(), "name"), "\xce\x94-model");
    EXPECT_EQ(h5::get_attr_string(r.root(), "empty"), "");
    fs::remove_all(dir);
}

// ---- 4. products of dimensions -------------------------------------------------------------------------

TEST(HostileConfig, OverflowingDimensionProductsAreErrors) {
    // num_heads·head_dim wraps to exactly expand·hidden_size (48) in 64 bits: (2^60 + 3)·16 = 2^64 + 48.
    const std::string wrap = R"({"model_type": "mamba2", "hidden_size": 24, "num_hidden_layers": 2,
        "vocab_size": 37, "num_heads": 1152921504606846979, "head_dim": 16, "n_groups": 1})";
    const std::string msg = error_of([&] { parse_config_json(wrap, "m2/config.json"); });
    EXPECT_TRUE(contains(msg, "m2/config.json")) << msg;
    EXPECT_TRUE(contains(msg, "overflows")) << msg;
    // Each dimension is in range (≤ 2^40), but vocab·d_model is 2^80: the embedding size overflows.
    const std::string big = R"({"model_type": "mamba", "hidden_size": 1099511627776, "num_hidden_layers": 2,
        "vocab_size": 1099511627776, "intermediate_size": 64, "state_size": 16})";
    const std::string msg2 = error_of([&] { parse_config_json(big, "m1/config.json"); });
    EXPECT_TRUE(contains(msg2, "m1/config.json")) << msg2;
    EXPECT_TRUE(contains(msg2, "overflows")) << msg2;
    // An unsigned integer beyond int64 is out of range, not a negative number.
    const std::string huge = std::string(kMamba1Config) + R"(, "conv_kernel": 18446744073709551615})";
    EXPECT_TRUE(contains(error_of([&] { parse_config_json(huge, "c.json"); }), "conv_kernel"));
}

// ---- 5. numbers out of range in JSON -------------------------------------------------------------------

TEST(HostileConfig, NumberBeyondDoubleIsAnErrorNamingTheFile) {
    const std::string text = std::string(kMamba1Config) + R"(, "layer_norm_epsilon": 1e400})";
    const std::string msg = error_of([&] { parse_config_json(text, "/m/config.json"); });
    EXPECT_TRUE(contains(msg, "/m/config.json")) << msg;
    EXPECT_FALSE(contains(msg, "internal error")) << msg;
    const std::string smsg = error_of([&] { session_from_json(R"({"c": 1e400})", "/s/session.json"); });
    EXPECT_TRUE(contains(smsg, "/s/session.json")) << smsg;
    const std::string deep = error_of([&] { session_from_json("{\"x\":" + nested(30000) + "}", "s.json"); });
    EXPECT_TRUE(contains(deep, "s.json")) << deep.substr(0, 300);
    EXPECT_LT(deep.size(), 400u);
}

// ---- 6. wrong results without a warning ----------------------------------------------------------------

TEST(HostileTokenizer, MergesAsAStringIsAnError) {
    const fs::path dir = tmpdir("merges");
    auto j = tiny_tokenizer();
    write_file(dir / "tokenizer.json", j.dump());
    EXPECT_EQ(load_tokenizer_json(dir / "tokenizer.json")->encode("ab"), (std::vector<int32_t>{2}));
    j["model"]["merges"] = "a b";  // a string, not a list: the old code took it as one merge
    write_file(dir / "tokenizer.json", j.dump());
    const std::string msg = error_of([&] { load_tokenizer_json(dir / "tokenizer.json"); });
    EXPECT_TRUE(contains(msg, (dir / "tokenizer.json").string())) << msg;
    EXPECT_TRUE(contains(msg, "merges")) << msg;
    j["model"]["merges"] = nlohmann::json::array({nlohmann::json::array({"a"})});  // one half of a pair
    write_file(dir / "tokenizer.json", j.dump());
    EXPECT_TRUE(contains(error_of([&] { load_tokenizer_json(dir / "tokenizer.json"); }), "merges"));
    fs::remove_all(dir);
}

TEST(HostileTokenizer, VocabIdsMustBeIntegersInInt32Range) {
    const fs::path dir = tmpdir("vocab_ids");
    for (const nlohmann::json& bad :
         {nlohmann::json(int64_t{1} << 40), nlohmann::json(1.5), nlohmann::json(-1), nlohmann::json("0"),
          nlohmann::json(int64_t{1} << 31)}) {
        auto j = tiny_tokenizer();
        j["model"]["vocab"]["a"] = bad;
        write_file(dir / "tokenizer.json", j.dump());
        const std::string msg = error_of([&] { load_tokenizer_json(dir / "tokenizer.json"); });
        EXPECT_TRUE(contains(msg, (dir / "tokenizer.json").string())) << bad.dump() << ": " << msg;
        EXPECT_TRUE(contains(msg, "vocab")) << bad.dump() << ": " << msg;
    }
    auto j = tiny_tokenizer();
    j["added_tokens"] = {{{"content", "<x>"}, {"id", 2.5}}};
    write_file(dir / "tokenizer.json", j.dump());
    EXPECT_TRUE(contains(error_of([&] { load_tokenizer_json(dir / "tokenizer.json"); }), "added_tokens"));
    // A valid id far beyond the vocabulary would allocate a 2^31-entry table: refused.
    j = tiny_tokenizer();
    j["model"]["vocab"]["a"] = 2147483647;
    write_file(dir / "tokenizer.json", j.dump());
    EXPECT_TRUE(contains(error_of([&] { load_tokenizer_json(dir / "tokenizer.json"); }), "2147483647"));
    fs::remove_all(dir);
}

TEST(HostileSession, IntegersAreValidatedAsIntegersInRange) {
    const std::string layers =
        error_of([&] { session_from_json(R"({"deci": {"layers": [1099511627776]}})", "s.json"); });
    EXPECT_TRUE(contains(layers, "s.json")) << layers;
    EXPECT_TRUE(contains(layers, "deci.layers")) << layers;
    EXPECT_TRUE(contains(error_of([&] { session_from_json(R"({"deci": {"layers": [1.5]}})", "s.json"); }),
                         "deci.layers"));
    EXPECT_TRUE(contains(error_of([&] { session_from_json(R"({"deci": {"layers": [-1]}})", "s.json"); }),
                         "deci.layers"));
    EXPECT_TRUE(
        contains(error_of([&] { session_from_json(R"({"max_tokens": 4096.5})", "s.json"); }), "max_tokens"));
    EXPECT_TRUE(
        contains(error_of([&] { session_from_json(R"({"selection": {"layer": 4294967296}})", "s.json"); }),
                 "selection.layer"));
    EXPECT_TRUE(contains(error_of([&] { session_from_json(R"({"haystack": {"seed": -3}})", "s.json"); }),
                         "haystack.seed"));
    // Valid values still load; a layer beyond the model is refused when the request meets the model.
    const Session s = session_from_json(R"({"deci": {"layers": [7]}, "max_tokens": 4096.0})", "s.json");
    EXPECT_EQ(s.deci.layers, (std::vector<int>{7}));
    EXPECT_EQ(s.max_tokens, 4096);
    DeciParams dp;
    dp.layers = session_request(s).deci.layers;
    EXPECT_TRUE(contains(error_of([&] { resolve_deci_params(test::tiny(Arch::Mamba1), dp); }), "layer 7"));
}

TEST(HostileModel, ConfigWithFewerLayersThanTheCheckpointIsAnError) {
    ModelConfig c = test::tiny(Arch::Mamba1);
    c.n_layer = 6;
    const auto m = random_model(c, 3);
    const fs::path dir = tmpdir("layers");
    save_model_dir(*m, dir / "model");
    auto j = nlohmann::json::parse(slurp(dir / "model" / "config.json"));
    ASSERT_EQ(j["num_hidden_layers"], 6);
    j["num_hidden_layers"] = 3;
    write_file(dir / "model" / "config.json", j.dump(2));
    const std::string msg = error_of([&] { load_model(dir / "model"); });
    EXPECT_TRUE(contains(msg, (dir / "model").string())) << msg;
    EXPECT_TRUE(contains(msg, "layer 5")) << msg;
    fs::remove_all(dir);
}

TEST(HostileCalibration, FractionalLengthsAreAnError) {
    const fs::path dir = tmpdir("lengths");
    const fs::path p = dir / "cal.h5";
    save_calibration(p, small_calibration());
    edit_h5(p, [](hid_t f) {
        H5Ldelete(f, "/lengths", H5P_DEFAULT);
        const hsize_t n = 3;
        const double v[3] = {1000.5, 2000, 4000};
        const hid_t space = H5Screate_simple(1, &n, nullptr);
        const hid_t ds =
            H5Dcreate2(f, "/lengths", H5T_NATIVE_DOUBLE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
        H5Dclose(ds);
        H5Sclose(space);
    });
    const std::string msg = error_of([&] { load_calibration(p); });
    EXPECT_TRUE(contains(msg, p.string())) << msg;
    EXPECT_TRUE(contains(msg, "/lengths")) << msg;
    fs::remove_all(dir);
}

// Token counts past 2^40 are refused: the analysis adds to them (the CI fuzz step found a /lengths value of
// 2^63 − 1 that loaded, tests/fuzz/crashes/calibration/calibration-length-int64-max.h5).
TEST(HostileCalibration, ImplausiblyLargeTokenCountsAreAnError) {
    const fs::path dir = tmpdir("huge_lengths");
    const fs::path p = dir / "cal.h5";
    save_calibration(p, small_calibration());
    const int64_t n_len = small_calibration().n_lengths();
    edit_h5(p, [&](hid_t f) {
        std::vector<int64_t> v = small_calibration().lengths;
        v.back() = INT64_MAX;
        const hid_t ds = H5Dopen2(f, "/lengths", H5P_DEFAULT);
        H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
        H5Dclose(ds);
    });
    std::string msg = error_of([&] { load_calibration(p); });
    EXPECT_TRUE(contains(msg, p.string()) && contains(msg, "/lengths[" + std::to_string(n_len - 1) + "]") &&
                contains(msg, "implausibly large"))
        << msg;
    save_calibration(p, small_calibration());
    edit_h5(p, [](hid_t f) {
        const int64_t big = int64_t{1} << 50;
        const hid_t a = H5Aopen(f, "train_len", H5P_DEFAULT);
        H5Awrite(a, H5T_NATIVE_INT64, &big);
        H5Aclose(a);
    });
    msg = error_of([&] { load_calibration(p); });
    EXPECT_TRUE(contains(msg, p.string()) && contains(msg, "train_len") && contains(msg, "implausibly large"))
        << msg;
    fs::remove_all(dir);
}

TEST(HostileCli, NegativeOrEmptyWindowsAndCountsAreClearErrors) {
    const fs::path dir = tmpdir("cli");
    save_model_dir(*random_model(test::tiny(Arch::Mamba1), 4), dir / "model");
    {
        std::ofstream f(dir / "ids.txt");
        for (int i = 0; i < 40; ++i) f << (i * 7) % 37 << ' ';
    }
    const std::string base = "analyze --model " + (dir / "model").string() + " --ids " +
                             (dir / "ids.txt").string() + " --methods vanilla --out " +
                             (dir / "t.h5").string();
    const fs::path log = dir / "log.txt";
    ASSERT_EQ(cli(base + " --window 0:20", log), 0) << slurp(log);
    struct Case {
        std::string args, expect;
    };
    for (const Case& c : std::vector<Case>{{"--window -5:-1", "--window"},
                                           {"--window 10:10", "--window"},
                                           {"--window 20:10", "--window"},
                                           {"--window 5x:9", "--window"},
                                           {"--max-tokens -1", "--max-tokens"},
                                           {"--max-tokens 0", "--max-tokens"},
                                           {"--attention-window -5", "--attention-window"},
                                           {"--attention-window 0", "--attention-window"}}) {
        EXPECT_EQ(cli(base + " " + c.args, log), 2) << c.args << ": " << slurp(log);  // usage error
        const std::string out = slurp(log);
        EXPECT_TRUE(contains(out, c.expect)) << c.args << ": " << out;
        EXPECT_FALSE(contains(out, "vector")) << c.args << ": " << out;
    }
    fs::remove_all(dir);
}

// ---- 7. calibration identity ---------------------------------------------------------------------------

TEST(HostileCalibration, ArchIsComparedWithTheModel) {
    // Same n_layer and channel count (Mamba-1 channels = d_inner), other architecture.
    ModelConfig cfg = test::tiny(Arch::Mamba1);
    Calibration cal = small_calibration("mamba2");
    cal.n_layer = cfg.n_layer;
    cal.channels = cfg.channels();
    const std::string msg = error_of([&] { check_calibration_matches(cal, cfg); });
    EXPECT_TRUE(contains(msg, "mamba2")) << msg;
    cal.arch = "mamba";
    EXPECT_NO_THROW(check_calibration_matches(cal, cfg));
    cal.model_name = "renamed-directory";  // the name may differ (see check_calibration_matches)
    EXPECT_NO_THROW(check_calibration_matches(cal, cfg));
    // A calibration file whose arch is neither is refused on load.
    const fs::path dir = tmpdir("arch");
    save_calibration(dir / "cal.h5", small_calibration("transformer"));
    const std::string lmsg = error_of([&] { load_calibration(dir / "cal.h5"); });
    EXPECT_TRUE(contains(lmsg, (dir / "cal.h5").string())) << lmsg;
    EXPECT_TRUE(contains(lmsg, "arch")) << lmsg;
    fs::remove_all(dir);
}

// The 64-level JSON bound also guards the safetensors header, the sharded index and retrieval results. A
// million levels parse (nlohmann's parser is iterative) but its recursive destructor would overflow the
// stack; the bound refuses them first, with a message that says so.
TEST(HostileJson, DeepSafetensorsHeaderIndexAndRetrievalJsonAreErrors) {
    const fs::path dir = tmpdir("deep_json");
    const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
    {
        std::ofstream f(dir / "model.safetensors", std::ios::binary);
        const uint64_t n = deep.size();
        for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xff));
        f << deep;
    }
    try {
        load_safetensors(dir / "model.safetensors");
        FAIL() << "a 30,000-deep header was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("model.safetensors"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("nested deeper than 64"), std::string::npos) << e.what();
        EXPECT_LT(std::string(e.what()).size(), 1000u);
    }
    std::ofstream(dir / "retrieval.json") << deep;
    try {
        read_retrieval_json(dir / "retrieval.json");
        FAIL() << "a deep retrieval JSON was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("nested deeper than 64"), std::string::npos) << e.what();
    }
    fs::create_directories(dir / "sharded");
    std::ofstream(dir / "sharded" / "config.json") << R"({"model_type": "mamba", "hidden_size": 16})";
    std::ofstream(dir / "sharded" / "model.safetensors.index.json") << deep;
    try {
        load_model_weights(dir / "sharded");
        FAIL() << "a deep index was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("nested deeper than 64"), std::string::npos) << e.what();
    }
    fs::remove_all(dir);
}
