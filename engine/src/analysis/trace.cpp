// HDF5 traces of analysis runs; see trace.h and docs/trace-format.md.
#include "mambascope/trace.h"

#include <hdf5.h>
#include <hdf5_hl.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <set>
#include <string>

#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/h5.h"

namespace mambascope {
namespace {

using h5::DType;

constexpr const char* kProvenancePrefix = "provenance.";
// Method-group attributes that are not analysis parameters.
const std::set<std::string> kMethodReserved{
    "NX_class", "signal", "axes", "method", "seconds", "receptive_field_resolution", "backend"};

std::string utc_now_iso() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

std::vector<uint64_t> u64(const std::vector<int64_t>& s) {
    return {s.begin(), s.end()};
}

bool all_positive(const std::vector<uint64_t>& s) {
    for (auto d : s)
        if (d == 0) return false;
    return true;
}

// Writes a dataset: chunked + shuffle + gzip (chunks ≤ 1 MiB, h5.h) unless it is empty.
void put(h5::Writer& w, const std::string& path, DType t, const std::vector<uint64_t>& shape,
         const void* data) {
    h5::DatasetOptions o;
    o.chunked = all_positive(shape);
    w.write(path, t, shape, data, o);
}

std::string chan_key(const ChannelRef& r) {
    return std::to_string(r.layer) + "_" + std::to_string(r.channel);
}

void set_label(h5::Writer& w, const std::string& ds, int axis, const std::string& label) {
    auto o = w.open(ds);
    H5DSset_label(static_cast<hid_t>(o.id()), static_cast<unsigned>(axis), label.c_str());
}

void scale(h5::Writer& w, const std::string& ds, int axis, const std::string& scale_path,
           const std::string& name) {
    w.attach_scale(ds, axis, scale_path, name);
    set_label(w, ds, axis, name);
}

// All numeric attributes of an object (name → value), skipping `skip`.
std::map<std::string, double> numeric_attrs(hid_t obj, const std::set<std::string>& skip) {
    struct Ctx {
        std::vector<std::string> names;
    } ctx;
    hsize_t idx = 0;
    H5Aiterate2(
        obj, H5_INDEX_NAME, H5_ITER_INC, &idx,
        [](hid_t, const char* name, const H5A_info_t*, void* op) -> herr_t {
            static_cast<Ctx*>(op)->names.emplace_back(name);
            return 0;
        },
        &ctx);
    std::map<std::string, double> out;
    for (const auto& n : ctx.names) {
        if (skip.count(n)) continue;
        hid_t a = H5Aopen(obj, n.c_str(), H5P_DEFAULT);
        if (a < 0) continue;
        hid_t t = H5Aget_type(a);
        const auto cls = H5Tget_class(t);
        hid_t sp = H5Aget_space(a);
        const bool scalar = H5Sget_simple_extent_npoints(sp) == 1;
        H5Sclose(sp);
        H5Tclose(t);
        H5Aclose(a);
        if ((cls == H5T_FLOAT || cls == H5T_INTEGER) && scalar) out[n] = h5::get_attr_double(obj, n);
    }
    return out;
}

std::vector<std::string> attr_names(hid_t obj) {
    std::vector<std::string> names;
    hsize_t idx = 0;
    H5Aiterate2(
        obj, H5_INDEX_NAME, H5_ITER_INC, &idx,
        [](hid_t, const char* name, const H5A_info_t*, void* op) -> herr_t {
            static_cast<std::vector<std::string>*>(op)->emplace_back(name);
            return 0;
        },
        &names);
    return names;
}

std::vector<std::string> child_names(hid_t group) {
    std::vector<std::string> names;
    hsize_t idx = 0;
    H5Literate(
        group, H5_INDEX_NAME, H5_ITER_INC, &idx,
        [](hid_t, const char* name, const H5L_info_t*, void* op) -> herr_t {
            static_cast<std::vector<std::string>*>(op)->emplace_back(name);
            return 0;
        },
        &names);
    return names;
}

ChannelRef parse_key(const std::string& k, const std::string& file) {
    const auto us = k.find('_');
    try {
        if (us == std::string::npos) throw std::invalid_argument(k);
        return {std::stoi(k.substr(0, us)), std::stoll(k.substr(us + 1))};
    } catch (const std::exception&) {
        throw Error(file + ": bad channel group name '" + k + "' (expected <layer>_<channel>)");
    }
}

void check_shape(const h5::Reader& r, const std::string& path, const std::vector<uint64_t>& want) {
    auto got = r.shape(path);
    if (got != want) {
        auto str = [](const std::vector<uint64_t>& s) {
            std::string o = "(";
            for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
            return o + ")";
        };
        throw Error(
            r.path().string() + ": dataset " + path + " has shape " + str(got) + ", expected " + str(want),
            "the trace is corrupt or was edited by hand");
    }
}

template <class T>
std::vector<T> cast_i64(const std::vector<int64_t>& v) {
    return {v.begin(), v.end()};
}

void write_calibration_copy(h5::Writer& w, const std::filesystem::path& path) {
    Calibration cal = load_calibration(path);
    const uint64_t L = static_cast<uint64_t>(cal.n_layer), C = static_cast<uint64_t>(cal.channels),
                   n = static_cast<uint64_t>(cal.n_lengths());
    put(w, "/calibration/log_decay", DType::F64, {L, C}, cal.log_decay.data());
    put(w, "/calibration/delta_sum", DType::F64, {L, C}, cal.delta_sum.data());
    put(w, "/calibration/thresholds", DType::F64, {L, n, C}, cal.thresholds.data());
    put(w, "/calibration/alpha", DType::F64, {L, n, C}, cal.alpha.data());
    put(w, "/calibration/lengths", DType::I64, {n}, cal.lengths.data());
    auto g = w.open("/calibration");
    h5::set_attr(g.id(), "source_path", std::filesystem::absolute(path).string());
    h5::set_attr(g.id(), "model_name", cal.model_name);
    h5::set_attr(g.id(), "arch", cal.arch);
    h5::set_attr(g.id(), "train_len", cal.params.train_len);
    h5::set_attr(g.id(), "samples_used", cal.samples_used);
    h5::set_attr(g.id(), "clamp_top", cal.params.clamp_top);
    h5::set_attr(g.id(), "aggregate", std::string(aggregate_name(cal.params.aggregate)));
    h5::set_attr(g.id(), "m1_decay", std::string(m1_decay_name(cal.params.m1_decay)));
}

}  // namespace

void write_trace(const std::filesystem::path& path, const RunResult& run, const ProgressFn& progress) {
    const uint64_t L = static_cast<uint64_t>(run.n_layer), C = static_cast<uint64_t>(run.channels);
    const uint64_t T = run.input.ids.size(), P = run.rf_positions.size();
    h5::Writer w(path);
    const int64_t root = w.root();
    h5::set_attr(root, "format", std::string(kTraceFormat));
    h5::set_attr(root, "format_version", kTraceFormatVersion);
    h5::set_attr(root, "software_version", std::string(MAMBASCOPE_VERSION));
    h5::set_attr(root, "creation_time", utc_now_iso());
    h5::set_attr(root, "NX_class", std::string("NXentry"));
    if (!run.methods.empty())
        h5::set_attr(root, "default", std::string("methods/") + method_name(run.methods[0].method));
    h5::set_attr(root, "n_layer", static_cast<int64_t>(run.n_layer));
    h5::set_attr(root, "channels", run.channels);
    h5::set_attr(root, "train_len", run.train_len);
    h5::set_attr(root, "window_begin", run.window_begin);
    h5::set_attr(root, "window_end", run.window_end);
    if (run.calibration_path) h5::set_attr(root, "calibration_path", run.calibration_path->string());
    for (const auto& [k, v] : run.provenance) h5::set_attr(root, kProvenancePrefix + k, v);

    // Dimension scales.
    std::vector<int64_t> idx;
    auto iota = [&](uint64_t n, int64_t start = 0) {
        idx.resize(n);
        for (uint64_t i = 0; i < n; ++i) idx[i] = start + static_cast<int64_t>(i);
        return idx.data();
    };
    const uint64_t W = static_cast<uint64_t>(std::max<int64_t>(0, run.window_end - run.window_begin));
    put(w, "/dims/layer", DType::I64, {L}, iota(L));
    put(w, "/dims/channel", DType::I64, {C}, iota(C));
    put(w, "/dims/position", DType::I64, {T}, iota(T));
    put(w, "/dims/rf_position", DType::I64, {P}, run.rf_positions.data());
    put(w, "/dims/window_position", DType::I64, {W}, iota(W, run.window_begin));

    // Input.
    std::vector<int32_t> ids = run.input.ids;
    put(w, "/input/ids", DType::I32, {T}, ids.data());
    scale(w, "/input/ids", 0, "/dims/position", "position");
    if (!run.input.token_strings.empty()) w.write_strings("/input/token_strings", run.input.token_strings);
    if (!run.input.byte_offsets.empty())
        put(w, "/input/byte_offsets", DType::I64, {run.input.byte_offsets.size()},
            run.input.byte_offsets.data());
    {
        auto g = w.open("/input");
        h5::set_attr(g.id(), "text_path", run.input.text_path);
        h5::set_attr(g.id(), "text_sha256", run.input.text_sha256);
        h5::set_attr(g.id(), "text_bytes", run.input.text_bytes);
        h5::set_attr(g.id(), "length", static_cast<int64_t>(T));
    }

    for (size_t mi = 0; mi < run.methods.size(); ++mi) {
        report_progress(progress, static_cast<double>(mi) / static_cast<double>(run.methods.size() + 1),
                        "writing trace");
        const auto& m = run.methods[mi];
        const std::string g = std::string("/methods/") + method_name(m.method);
        MS_CHECK(m.delta_sum.data.size() == L * C && m.log_decay.data.size() == L * C &&
                     m.global_mask.data.size() == L * C && m.critical_count.data.size() == L * C,
                 "write_trace: summary arrays are not n_layer × channels");
        MS_CHECK(
            m.receptive_field.data.size() == L * P * C && m.receptive_field_censored.data.size() == L * P * C,
            "write_trace: receptive_field is not n_layer × P × channels");
        MS_CHECK(m.nll.size() == m.nll_positions.size(),
                 "write_trace: nll and nll_positions differ in length");
        put(w, g + "/nll_positions", DType::I64, {m.nll_positions.size()}, m.nll_positions.data());
        put(w, g + "/nll", DType::F32, {m.nll.size()}, m.nll.data());
        put(w, g + "/delta_sum", DType::F64, {L, C}, m.delta_sum.data.data());
        put(w, g + "/log_decay", DType::F64, {L, C}, m.log_decay.data.data());
        put(w, g + "/global_mask", DType::U8, {L, C}, m.global_mask.data.data());
        put(w, g + "/critical_count", DType::I64, {L, C}, m.critical_count.data.data());
        put(w, g + "/receptive_field", DType::I64, {L, P, C}, m.receptive_field.data.data());
        put(w, g + "/receptive_field_censored", DType::U8, {L, P, C}, m.receptive_field_censored.data.data());
        if (!m.nll.empty()) {
            w.attach_scale(g + "/nll", 0, g + "/nll_positions", "nll_position");
            set_label(w, g + "/nll", 0, "nll_position");
        }
        for (const char* name : {"delta_sum", "log_decay", "global_mask", "critical_count"}) {
            scale(w, g + "/" + name, 0, "/dims/layer", "layer");
            scale(w, g + "/" + name, 1, "/dims/channel", "channel");
        }
        for (const char* name : {"receptive_field", "receptive_field_censored"}) {
            scale(w, g + "/" + name, 0, "/dims/layer", "layer");
            scale(w, g + "/" + name, 1, "/dims/rf_position", "rf_position");
            scale(w, g + "/" + name, 2, "/dims/channel", "channel");
        }
        if (!m.kept_positions.empty())
            put(w, g + "/kept_positions", DType::I64, {m.kept_positions.size()}, m.kept_positions.data());
        if (!m.global_keep_count.empty()) {
            MS_CHECK(m.global_keep_count.size() == run.input.ids.size(),
                     "write_trace: global_keep_count does not have one entry per token");
            put(w, g + "/global_keep_count", DType::I64, {m.global_keep_count.size()},
                m.global_keep_count.data());
        }
        for (const auto& ct : m.channels) {
            const std::string cg = g + "/channels/" + chan_key(ct.ref);
            MS_CHECK(ct.delta_raw.size() == W && ct.delta_used.size() == W && ct.critical.size() == W,
                     "write_trace: channel window arrays do not match the window");
            MS_CHECK(ct.cum_log_decay.size() == T, "write_trace: cum_log_decay is not [T]");
            put(w, cg + "/delta_raw", DType::F32, {W}, ct.delta_raw.data());
            put(w, cg + "/delta_used", DType::F32, {W}, ct.delta_used.data());
            put(w, cg + "/critical", DType::U8, {W}, ct.critical.data());
            put(w, cg + "/cum_log_decay", DType::F32, {T}, ct.cum_log_decay.data());
            if (W > 0)
                for (const char* name : {"delta_raw", "delta_used", "critical"})
                    scale(w, cg + "/" + name, 0, "/dims/window_position", "window_position");
            if (T > 0) scale(w, cg + "/cum_log_decay", 0, "/dims/position", "position");
            auto o = w.open(cg);
            h5::set_attr(o.id(), "layer", static_cast<int64_t>(ct.ref.layer));
            h5::set_attr(o.id(), "channel", ct.ref.channel);
            h5::set_attr(o.id(), "global", static_cast<int64_t>(ct.global ? 1 : 0));
            h5::set_attr(o.id(), "threshold", static_cast<double>(ct.threshold));
        }
        for (const auto& am : m.attention) {
            const std::string ag = g + "/attention/" + chan_key(am.ref);
            MS_CHECK(
                am.alpha.shape.size() == 2 && am.alpha.data.size() == static_cast<size_t>(am.alpha.numel()),
                "write_trace: attention map is not W × W");
            put(w, ag + "/alpha", DType::F32, u64(am.alpha.shape), am.alpha.data.data());
            auto o = w.open(ag);
            h5::set_attr(o.id(), "layer", static_cast<int64_t>(am.ref.layer));
            h5::set_attr(o.id(), "channel", am.ref.channel);
            h5::set_attr(o.id(), "norm", std::string(attention_norm_name(am.norm)));
            h5::set_attr(o.id(), "log_floor", am.log_floor);
            h5::set_attr(o.id(), "begin", am.begin);
        }
        auto o = w.open(g);
        h5::set_attr(o.id(), "NX_class", std::string("NXdata"));
        h5::set_attr(o.id(), "signal", std::string("log_decay"));
        h5::set_attr(o.id(), "axes", std::vector<std::string>{"layer", "channel"});
        h5::set_attr(o.id(), "method", std::string(method_name(m.method)));
        h5::set_attr(o.id(), "seconds", m.seconds);
        h5::set_attr(o.id(), "backend", m.backend);
        h5::set_attr(o.id(), "receptive_field_resolution", m.receptive_field_resolution);
        for (const auto& [k, v] : m.params) h5::set_attr(o.id(), k, v);
    }
    if (run.calibration_path && std::filesystem::exists(*run.calibration_path)) {
        write_calibration_copy(w, *run.calibration_path);
    } else if (run.calibration_log_decay.shape.size() == 2 && !run.calibration_log_decay.data.empty()) {
        // The calibration file is gone (e.g. a trace opened and exported again): keep its log decay.
        const auto& a = run.calibration_log_decay;
        put(w, "/calibration/log_decay", DType::F64,
            {static_cast<uint64_t>(a.shape[0]), static_cast<uint64_t>(a.shape[1])}, a.data.data());
    }
    report_progress(progress, 1.0, "writing trace");
    w.commit();
}

RunResult read_trace(const std::filesystem::path& path) {
    h5::Reader r(path);
    const std::string file = path.string();
    const hid_t root = static_cast<hid_t>(r.root());
    if (!h5::has_attr(root, "format") || h5::get_attr_string(root, "format") != kTraceFormat)
        throw Error(file + " is not a mambascope trace (no format=\"mambascope-trace\" attribute)",
                    "open a file written by `mambascope-cli analyze` or the GUI");
    const int64_t version = h5::get_attr_int(root, "format_version");
    if (version > kTraceFormatVersion)
        throw Error(
            file + " was written by a newer version " + std::to_string(version) + " of the trace format",
            "this build reads format_version ≤ " + std::to_string(kTraceFormatVersion) +
                "; update mambascope");
    if (version < 1) throw Error(file + ": bad trace format_version " + std::to_string(version));

    RunResult run;
    try {
        const int64_t n_layer = h5::get_attr_int(root, "n_layer");
        if (n_layer < 0 || n_layer > (int64_t{1} << 20))  // read into an int: no silent truncation
            throw Error(file + ": attribute 'n_layer' = " + std::to_string(n_layer) + " is out of range");
        run.n_layer = static_cast<int>(n_layer);
        run.channels = h5::get_attr_int(root, "channels");
        if (run.channels < 0 || run.channels > (int64_t{1} << 32))
            throw Error(file + ": attribute 'channels' = " + std::to_string(run.channels) +
                        " is out of range");
        run.train_len = h5::get_attr_int(root, "train_len");
        run.window_begin = h5::get_attr_int(root, "window_begin");
        run.window_end = h5::get_attr_int(root, "window_end");
        if (h5::has_attr(root, "calibration_path"))
            run.calibration_path = h5::get_attr_string(root, "calibration_path");
        const std::string pre = kProvenancePrefix;
        for (const auto& n : attr_names(root))
            if (n.rfind(pre, 0) == 0) run.provenance[n.substr(pre.size())] = h5::get_attr_string(root, n);

        auto ids = r.read_i64("/input/ids");
        run.input.ids = cast_i64<int32_t>(ids);
        const uint64_t T = ids.size();
        if (r.exists("/input/token_strings"))
            run.input.token_strings = r.read_strings("/input/token_strings");
        if (r.exists("/input/byte_offsets")) run.input.byte_offsets = r.read_i64("/input/byte_offsets");
        {
            auto g = r.open("/input");
            run.input.text_path = h5::get_attr_string(g.id(), "text_path");
            run.input.text_sha256 = h5::get_attr_string(g.id(), "text_sha256");
            run.input.text_bytes = h5::get_attr_int(g.id(), "text_bytes");
        }
        run.rf_positions = r.read_i64("/dims/rf_position");
        const uint64_t L = static_cast<uint64_t>(run.n_layer), C = static_cast<uint64_t>(run.channels),
                       P = run.rf_positions.size();
        if (r.exists("/calibration/log_decay")) {
            check_shape(r, "/calibration/log_decay", {L, C});
            run.calibration_log_decay = {{run.n_layer, run.channels}, r.read_f64("/calibration/log_decay")};
        }
        const uint64_t W = static_cast<uint64_t>(std::max<int64_t>(0, run.window_end - run.window_begin));
        if (!r.exists("/methods")) return run;
        auto mg = r.open("/methods");
        for (const auto& name : child_names(static_cast<hid_t>(mg.id()))) {
            const std::string g = "/methods/" + name;
            MethodResult m;
            m.method = parse_method(name);
            m.nll_positions = r.read_i64(g + "/nll_positions");
            m.nll = r.read_f32(g + "/nll");
            check_shape(r, g + "/nll", {m.nll_positions.size()});
            const std::vector<int64_t> LC{run.n_layer, run.channels};
            for (const char* n : {"delta_sum", "log_decay", "global_mask", "critical_count"})
                check_shape(r, g + "/" + n, {L, C});
            m.delta_sum = {LC, r.read_f64(g + "/delta_sum")};
            m.log_decay = {LC, r.read_f64(g + "/log_decay")};
            m.global_mask = {LC, cast_i64<uint8_t>(r.read_i64(g + "/global_mask"))};
            m.critical_count = {LC, r.read_i64(g + "/critical_count")};
            const std::vector<int64_t> LPC{run.n_layer, static_cast<int64_t>(P), run.channels};
            check_shape(r, g + "/receptive_field", {L, P, C});
            check_shape(r, g + "/receptive_field_censored", {L, P, C});
            m.receptive_field = {LPC, r.read_i64(g + "/receptive_field")};
            m.receptive_field_censored = {LPC,
                                          cast_i64<uint8_t>(r.read_i64(g + "/receptive_field_censored"))};
            if (r.exists(g + "/kept_positions")) m.kept_positions = r.read_i64(g + "/kept_positions");
            if (r.exists(g + "/global_keep_count")) {
                m.global_keep_count = r.read_i64(g + "/global_keep_count");
                check_shape(r, g + "/global_keep_count", {run.input.ids.size()});
            }
            if (r.exists(g + "/channels")) {
                auto cgrp = r.open(g + "/channels");
                for (const auto& k : child_names(static_cast<hid_t>(cgrp.id()))) {
                    const std::string cg = g + "/channels/" + k;
                    ChannelTrace ct;
                    ct.ref = parse_key(k, file);
                    for (const char* n : {"delta_raw", "delta_used", "critical"})
                        check_shape(r, cg + "/" + n, {W});
                    check_shape(r, cg + "/cum_log_decay", {T});
                    ct.delta_raw = r.read_f32(cg + "/delta_raw");
                    ct.delta_used = r.read_f32(cg + "/delta_used");
                    ct.critical = cast_i64<uint8_t>(r.read_i64(cg + "/critical"));
                    ct.cum_log_decay = r.read_f32(cg + "/cum_log_decay");
                    auto o = r.open(cg);
                    ct.global = h5::get_attr_int(o.id(), "global") != 0;
                    ct.threshold = static_cast<float>(h5::get_attr_double(o.id(), "threshold"));
                    m.channels.push_back(std::move(ct));
                }
            }
            if (r.exists(g + "/attention")) {
                auto agrp = r.open(g + "/attention");
                for (const auto& k : child_names(static_cast<hid_t>(agrp.id()))) {
                    const std::string ag = g + "/attention/" + k;
                    AttentionMap am;
                    am.ref = parse_key(k, file);
                    std::vector<uint64_t> shape;
                    am.alpha.data = r.read_f32(ag + "/alpha", &shape);
                    if (shape.size() != 2 || shape[0] != shape[1])
                        throw Error(file + ": " + ag + "/alpha is not a square matrix");
                    am.alpha.shape = {static_cast<int64_t>(shape[0]), static_cast<int64_t>(shape[1])};
                    auto o = r.open(ag);
                    const std::string norm = h5::get_attr_string(o.id(), "norm");
                    am.norm = norm == "none"        ? AttentionNorm::None
                              : norm == "absmax"    ? AttentionNorm::AbsMax
                              : norm == "absminmax" ? AttentionNorm::AbsMinMax
                              : norm == "log10"
                                  ? AttentionNorm::Log10Floor
                                  : throw Error(file + ": unknown attention norm '" + norm + "'");
                    am.log_floor = h5::get_attr_double(o.id(), "log_floor");
                    am.begin = h5::get_attr_int(o.id(), "begin");
                    m.attention.push_back(std::move(am));
                }
            }
            auto o = r.open(g);
            m.seconds = h5::get_attr_double(o.id(), "seconds");
            if (h5::has_attr(o.id(), "backend")) m.backend = h5::get_attr_string(o.id(), "backend");
            m.receptive_field_resolution = h5::get_attr_int(o.id(), "receptive_field_resolution");
            m.params = numeric_attrs(static_cast<hid_t>(o.id()), kMethodReserved);
            run.methods.push_back(std::move(m));
        }
    } catch (const Cancelled&) {
        throw;
    } catch (const Error& e) {
        throw Error(std::string("cannot read trace: ") + e.what(),
                    e.hint().empty() ? "the file may be truncated or corrupt" : e.hint());
    }
    // Methods in the canonical order (vanilla, longmamba, decimamba), as run_analysis usually lists them.
    std::sort(run.methods.begin(), run.methods.end(),
              [](const MethodResult& a, const MethodResult& b) { return a.method < b.method; });
    return run;
}

}  // namespace mambascope
