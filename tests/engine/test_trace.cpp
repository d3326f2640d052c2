// HDF5 traces: write → read keeps every field; every dataset has dimension scales netCDF readers can see,
// units and long_name; format-1 traces still read; cancelled writes leave nothing; truncated, foreign and
// newer files give clear errors; run inputs from text keep each token's text; SHA-256 matches the FIPS test
// vectors.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <hdf5_hl.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "cli_runner.h"
#include "mambascope/analysis.h"
#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/h5.h"
#include "mambascope/model.h"
#include "mambascope/sha256.h"
#include "mambascope/tokenizer.h"
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
    return mambascope::test::fresh_temp_dir("mambascope_test_trace", name);  // per process: parallel runs
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
    req.deci.L_base = 60;
    req.deci.resp_len = 10;
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

namespace {

// Every object path of an HDF5 file (groups and datasets), depth first.
std::vector<std::string> object_paths(hid_t file) {
    std::vector<std::string> paths;
    H5Lvisit(
        file, H5_INDEX_NAME, H5_ITER_INC,
        [](hid_t, const char* name, const H5L_info_t*, void* op) -> herr_t {
            static_cast<std::vector<std::string>*>(op)->push_back(std::string("/") + name);
            return 0;
        },
        &paths);
    return paths;
}

std::string object_name(hid_t id) {
    std::string s(static_cast<size_t>(H5Iget_name(id, nullptr, 0)) + 1, '\0');
    H5Iget_name(id, s.data(), s.size());
    s.resize(s.size() - 1);
    return s;
}

std::string parent_of(const std::string& path) {
    const auto slash = path.rfind('/');
    return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

// netCDF-4 readers (xarray's h5netcdf and netcdf4 engines) find a dimension only in the dataset's own group
// or a parent group: every axis of every dataset has exactly one scale there, of the axis's length, and every
// dataset has units and long_name (docs/trace-format.md, format version 2).
TEST(Trace, EveryDatasetHasVisibleDimensionScalesUnitsAndLongName) {
    const fs::path dir = fresh_dir("scales");
    const RunResult run = sample_run(dir);
    ASSERT_FALSE(run.methods[1].attention.empty());
    const ChannelRef att = run.methods[1].attention[0].ref;
    write_trace(dir / "run.h5", run);
    h5::Reader r(dir / "run.h5");
    const hid_t file = static_cast<hid_t>(r.root());
    EXPECT_EQ(h5::get_attr_int(file, "format_version"), kTraceFormatVersion);
    EXPECT_EQ(h5::get_attr_string(file, "NX_class"), "NXroot");
    EXPECT_EQ(h5::get_attr_string(file, "default"), "methods");
    int datasets = 0, attached = 0;
    for (const auto& path : object_paths(file)) {
        SCOPED_TRACE(path);
        const auto obj = r.open(path);
        const hid_t id = static_cast<hid_t>(obj.id());
        if (H5Iget_type(id) != H5I_DATASET) continue;
        ++datasets;
        EXPECT_TRUE(h5::has_attr(id, "units"));
        EXPECT_TRUE(h5::has_attr(id, "long_name"));
        const auto shape = r.shape(path);
        if (H5DSis_scale(id) > 0) {
            EXPECT_EQ(shape.size(), 1u);
            continue;
        }
        for (unsigned axis = 0; axis < shape.size(); ++axis) {
            ASSERT_EQ(H5DSget_num_scales(id, axis), 1) << "axis " << axis;
            std::string scale;
            int idx = 0;
            H5DSiterate_scales(
                id, axis, &idx,
                [](hid_t, unsigned, hid_t s, void* op) -> herr_t {
                    *static_cast<std::string*>(op) = object_name(s);
                    return 1;
                },
                &scale);
            const std::string group = parent_of(scale);
            EXPECT_TRUE(group == "/" || path.rfind(group + "/", 0) == 0)
                << "scale " << scale << " is not in the group of " << path << " or a parent";
            EXPECT_EQ(r.shape(scale), std::vector<uint64_t>{shape[axis]}) << "scale " << scale;
            ++attached;
        }
    }
    EXPECT_GT(datasets, 50);
    EXPECT_GT(attached, 50);
    // NXdata: the signal and every axis are datasets of the group.
    const std::string att_group =
        "/methods/longmamba/attention/" + std::to_string(att.layer) + "_" + std::to_string(att.channel);
    for (const std::string& g : {std::string("/methods/vanilla"), att_group}) {
        SCOPED_TRACE(g);
        const auto grp = r.open(g);
        EXPECT_EQ(h5::get_attr_string(grp.id(), "NX_class"), "NXdata");
        EXPECT_TRUE(r.exists(g + "/" + h5::get_attr_string(grp.id(), "signal")));
    }
    EXPECT_TRUE(r.exists("/methods/vanilla/layer") && r.exists("/methods/vanilla/channel"));
}

// Format version 1 kept its dimension scales in /dims; read_trace still reads such traces.
TEST(Trace, ReadsFormatVersion1Traces) {
    const fs::path dir = fresh_dir("v1");
    const RunResult a = sample_run(dir);
    write_trace(dir / "run.h5", a);
    {
        hid_t f = H5Fopen((dir / "run.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
        ASSERT_GE(f, 0);
        hid_t g = H5Gcreate2(f, "/dims", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        ASSERT_GE(g, 0);
        H5Gclose(g);
        for (const char* d : {"layer", "channel", "position", "rf_position", "window_position"})
            ASSERT_GE(H5Lmove(f, d, f, (std::string("/dims/") + d).c_str(), H5P_DEFAULT, H5P_DEFAULT), 0);
        h5::set_attr(f, "format_version", int64_t{1});
        H5Fclose(f);
    }
    const RunResult b = read_trace(dir / "run.h5");
    EXPECT_EQ(b.rf_positions, a.rf_positions);
    ASSERT_EQ(b.methods.size(), a.methods.size());
    expect_array_eq(b.methods[1].receptive_field, a.methods[1].receptive_field);
    EXPECT_EQ(b.input.token_strings, a.input.token_strings);
}

// A trace from a text shows the text: text_run_input keeps each token's bytes and byte offset (a capped input
// does not give its last token the rest of the text), and attach_token_text fills them for ids of a text
// file only when the file is the text the ids came from.
TEST(RunInput, TextInputKeepsEachTokenTextAndOffset) {
    const auto tok = make_byte_tokenizer();
    const std::string text = "h\xc3\xa9llo";  // "héllo": é is two bytes, two byte tokens
    const RunInput in = text_run_input(*tok, text, "t.txt");
    EXPECT_EQ(in.ids.size(), 6u);
    EXPECT_EQ(in.byte_offsets, (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
    std::string joined;
    for (const auto& s : in.token_strings) joined += s;
    EXPECT_EQ(joined, text);
    EXPECT_EQ(in.text_sha256, sha256_hex(text));
    EXPECT_EQ(in.text_bytes, 6);
    const RunInput capped = text_run_input(*tok, text, "t.txt", 3);
    EXPECT_EQ(capped.token_strings, (std::vector<std::string>{"h", "\xc3", "\xa9"}));
    EXPECT_EQ(capped.byte_offsets.size(), 3u);
}

TEST(RunInput, AttachTokenTextOnlyForTheTextTheIdsCameFrom) {
    const fs::path dir = fresh_dir("attach");
    const std::string text = "the cat sat";
    std::ofstream(dir / "t.txt", std::ios::binary) << text;
    ModelConfig cfg = tiny_m1();
    cfg.tokenizer = "byte";
    const auto model = random_model(cfg, 3);
    RunInput in = text_run_input(*make_byte_tokenizer(), text, (dir / "t.txt").string(), 5);
    in.token_strings.clear();
    in.byte_offsets.clear();
    RunInput same = in;
    ASSERT_TRUE(attach_token_text(same, *model));
    EXPECT_EQ(same.token_strings, (std::vector<std::string>{"t", "h", "e", " ", "c"}));
    EXPECT_EQ(same.byte_offsets, (std::vector<int64_t>{0, 1, 2, 3, 4}));
    RunInput other_ids = in;
    other_ids.ids[0] = 'x';
    EXPECT_FALSE(attach_token_text(other_ids, *model));
    EXPECT_TRUE(other_ids.token_strings.empty());
    RunInput edited = in;
    edited.text_sha256 = sha256_hex("the cat sad");
    EXPECT_FALSE(attach_token_text(edited, *model));
    RunInput pasted = in;
    pasted.text_path = "(pasted text)";
    EXPECT_FALSE(attach_token_text(pasted, *model));
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
