// HDF5 traces: write → read keeps every field; cancelled writes leave nothing; truncated, foreign and newer
// files give clear errors; SHA-256 matches the FIPS test vectors.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "mambascope/analysis.h"
#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/h5.h"
#include "mambascope/model.h"
#include "mambascope/sha256.h"
#include "mambascope/trace.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

ModelConfig tiny_m1() {
    ModelConfig c;
    c.arch = Arch::Mamba1;
    c.d_model = 16;
    c.n_layer = 2;
    c.vocab_size = 37;
    c.d_conv = 3;
    c.train_len = 64;
    c.d_inner = 32;
    c.d_state = 4;
    c.dt_rank = 2;
    return c;
}

std::vector<int32_t> random_ids(int n, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (auto& i : ids) i = static_cast<int32_t>(rng() % 37u);
    return ids;
}

fs::path fresh_dir(const std::string& name) {
    const fs::path d = fs::temp_directory_path() / "mambascope_test_trace" / name;
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

// A run with all three methods, a calibration, provenance and token strings.
RunResult sample_run(const fs::path& dir) {
    auto m = random_model(tiny_m1(), 41);
    CalibrationParams p;
    p.samples = 2;
    p.lengths = {64, 128, 256};
    save_calibration(dir / "cal.h5", calibrate(*m, random_ids(200, 7), p));
    RunInput in;
    in.ids = random_ids(150, 8);
    in.text_path = "/some/text.txt";
    in.text_sha256 = sha256_hex("hello");
    in.text_bytes = 150;
    for (size_t i = 0; i < in.ids.size(); ++i) {
        in.token_strings.push_back("t" + std::to_string(in.ids[i]));
        in.byte_offsets.push_back(static_cast<int64_t>(i));
    }
    AnalysisRequest req;
    req.methods = {Method::Vanilla, Method::LongMamba, Method::DeciMamba};
    req.calibration_path = dir / "cal.h5";
    req.rf_positions = {10, 149};
    req.window_begin = 20;
    req.window_end = 120;
    req.attention_tokens = 16;
    req.deci_L_base = 60;
    req.deci_resp_len = 10;
    RunResult r = run_analysis(*m, in, req);
    r.provenance["model_path"] = "/models/tiny";
    r.provenance["arch"] = "mamba";
    r.provenance["config_json"] = "{\"d_model\": 16}";
    return r;
}

std::string error_of(const fs::path& p) {
    try {
        read_trace(p);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

template <class T>
void expect_array_eq(const Array<T>& a, const Array<T>& b) {
    EXPECT_EQ(a.shape, b.shape);
    EXPECT_EQ(a.data, b.data);
}

}  // namespace

TEST(Trace, RoundTripKeepsEveryField) {
    const fs::path dir = fresh_dir("roundtrip");
    const RunResult a = sample_run(dir);
    write_trace(dir / "run.h5", a);
    const RunResult b = read_trace(dir / "run.h5");
    EXPECT_EQ(b.input.ids, a.input.ids);
    EXPECT_EQ(b.input.token_strings, a.input.token_strings);
    EXPECT_EQ(b.input.byte_offsets, a.input.byte_offsets);
    EXPECT_EQ(b.input.text_path, a.input.text_path);
    EXPECT_EQ(b.input.text_sha256, a.input.text_sha256);
    EXPECT_EQ(b.input.text_bytes, a.input.text_bytes);
    EXPECT_EQ(b.provenance, a.provenance);
    EXPECT_EQ(b.n_layer, a.n_layer);
    EXPECT_EQ(b.channels, a.channels);
    EXPECT_EQ(b.train_len, a.train_len);
    EXPECT_EQ(b.rf_positions, a.rf_positions);
    EXPECT_EQ(b.window_begin, a.window_begin);
    EXPECT_EQ(b.window_end, a.window_end);
    EXPECT_EQ(b.calibration_path, a.calibration_path);
    ASSERT_EQ(a.calibration_log_decay.shape, (std::vector<int64_t>{a.n_layer, a.channels}));
    expect_array_eq(b.calibration_log_decay, a.calibration_log_decay);
    ASSERT_EQ(b.methods.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
        const MethodResult &x = a.methods[i], &y = b.methods[i];
        SCOPED_TRACE(method_name(x.method));
        EXPECT_EQ(y.method, x.method);
        EXPECT_EQ(y.params, x.params);
        EXPECT_EQ(y.nll_positions, x.nll_positions);
        EXPECT_EQ(y.nll, x.nll);
        expect_array_eq(y.delta_sum, x.delta_sum);
        expect_array_eq(y.log_decay, x.log_decay);
        expect_array_eq(y.global_mask, x.global_mask);
        expect_array_eq(y.critical_count, x.critical_count);
        expect_array_eq(y.receptive_field, x.receptive_field);
        expect_array_eq(y.receptive_field_censored, x.receptive_field_censored);
        EXPECT_EQ(y.receptive_field_resolution, x.receptive_field_resolution);
        EXPECT_EQ(y.kept_positions, x.kept_positions);
        EXPECT_EQ(y.global_keep_count, x.global_keep_count);
        EXPECT_EQ(y.backend, x.backend);
        EXPECT_EQ(y.seconds, x.seconds);
        ASSERT_EQ(y.channels.size(), x.channels.size());
        for (size_t k = 0; k < x.channels.size(); ++k) {
            EXPECT_EQ(y.channels[k].ref, x.channels[k].ref);
            EXPECT_EQ(y.channels[k].global, x.channels[k].global);
            EXPECT_EQ(y.channels[k].threshold, x.channels[k].threshold);
            EXPECT_EQ(y.channels[k].delta_raw, x.channels[k].delta_raw);
            EXPECT_EQ(y.channels[k].delta_used, x.channels[k].delta_used);
            EXPECT_EQ(y.channels[k].critical, x.channels[k].critical);
            EXPECT_EQ(y.channels[k].cum_log_decay, x.channels[k].cum_log_decay);
        }
        ASSERT_EQ(y.attention.size(), x.attention.size());
        for (size_t k = 0; k < x.attention.size(); ++k) {
            EXPECT_EQ(y.attention[k].ref, x.attention[k].ref);
            EXPECT_EQ(y.attention[k].norm, x.attention[k].norm);
            EXPECT_EQ(y.attention[k].log_floor, x.attention[k].log_floor);
            EXPECT_EQ(y.attention[k].begin, x.attention[k].begin);
            expect_array_eq(y.attention[k].alpha, x.attention[k].alpha);
        }
    }
    // The calibration's arrays are copied into the trace.
    h5::Reader r(dir / "run.h5");
    EXPECT_TRUE(r.exists("/calibration/thresholds"));
    EXPECT_EQ(h5::get_attr_string(r.root(), "format"), "mambascope-trace");
}

// The calibration's log decay survives a trace → RunResult → trace round trip even when the calibration file
// is gone by then (a trace opened and exported again), and stays empty for a run without a calibration.
TEST(Trace, CalibrationLogDecayRoundTripsWithoutTheCalibrationFile) {
    const fs::path dir = fresh_dir("cal_log_decay");
    const RunResult a = sample_run(dir);
    const Calibration cal = load_calibration(dir / "cal.h5");
    EXPECT_EQ(a.calibration_log_decay.data, cal.log_decay);
    write_trace(dir / "run1.h5", a);
    fs::remove(dir / "cal.h5");
    const RunResult b = read_trace(dir / "run1.h5");
    write_trace(dir / "run2.h5", b);
    const RunResult c = read_trace(dir / "run2.h5");
    expect_array_eq(c.calibration_log_decay, a.calibration_log_decay);

    RunResult none = a;
    none.calibration_path.reset();
    none.calibration_log_decay = {};
    write_trace(dir / "run3.h5", none);
    const RunResult d = read_trace(dir / "run3.h5");
    EXPECT_TRUE(d.calibration_log_decay.shape.empty());
    EXPECT_TRUE(d.calibration_log_decay.data.empty());
}

TEST(Trace, CancelledWriteLeavesNoFileAndNoTempFile) {
    const fs::path dir = fresh_dir("cancel");
    const RunResult a = sample_run(dir);
    fs::remove(dir / "cal.h5");
    EXPECT_THROW(write_trace(dir / "run.h5", a, [](double, std::string_view) { return false; }), Cancelled);
    EXPECT_TRUE(fs::is_empty(dir));
}

TEST(Trace, TruncatedFileIsAClearError) {
    const fs::path dir = fresh_dir("truncated");
    write_trace(dir / "run.h5", sample_run(dir));
    const auto size = fs::file_size(dir / "run.h5");
    fs::copy_file(dir / "run.h5", dir / "cut.h5");
    fs::resize_file(dir / "cut.h5", size / 2);
    const std::string e = error_of(dir / "cut.h5");
    EXPECT_TRUE(e.find("truncated") != std::string::npos || e.find("corrupt") != std::string::npos) << e;
}

TEST(Trace, ForeignHdf5IsAClearError) {
    const fs::path dir = fresh_dir("foreign");
    {
        h5::Writer w(dir / "other.h5");
        const double x[2] = {1, 2};
        w.write_f64("/data", {2}, x);
        w.commit();
    }
    EXPECT_NE(error_of(dir / "other.h5").find("not a mambascope trace"), std::string::npos);
    std::ofstream(dir / "text.h5") << "hello";
    EXPECT_NE(error_of(dir / "text.h5").find("not an HDF5 file"), std::string::npos);
}

TEST(Trace, NewerFormatVersionIsAClearError) {
    const fs::path dir = fresh_dir("newer");
    write_trace(dir / "run.h5", sample_run(dir));
    {
        hid_t f = H5Fopen((dir / "run.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
        ASSERT_GE(f, 0);
        h5::set_attr(f, "format_version", int64_t{7});
        H5Fclose(f);
    }
    const std::string e = error_of(dir / "run.h5");
    EXPECT_NE(e.find("newer version 7"), std::string::npos) << e;
}

TEST(Sha256, MatchesFipsVectors) {
    EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const fs::path dir = fresh_dir("sha");
    {
        std::ofstream f(dir / "a.bin", std::ios::binary);
        f << std::string(1000000, 'a');  // crosses the 1 MiB block size boundary logic with odd tails
    }
    EXPECT_EQ(sha256_file(dir / "a.bin"), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
