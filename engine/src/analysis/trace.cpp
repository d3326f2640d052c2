// HDF5 traces of analysis runs; see trace.h and docs/trace-format.md.
#include "mambascope/trace.h"

#include <hdf5.h>

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

// units and long_name on a dataset (CF/netCDF attribute names, shown by xarray, H5Web and silx).
void describe(h5::Writer& w, const std::string& path, const std::string& units,
              const std::string& long_name) {
    auto o = w.open(path);
    h5::set_attr(o.id(), "units", units);
    h5::set_attr(o.id(), "long_name", long_name);
}

std::string base_name(const std::string& path) {
    return path.substr(path.rfind('/') + 1);
}

// A 1-D int64 coordinate that is also a dimension scale: netCDF-4 readers (xarray's h5netcdf and netcdf4
// engines) see the dimension named after the dataset in this group and every group below it.
void put_scale(h5::Writer& w, const std::string& path, const std::vector<int64_t>& values,
               const std::string& units, const std::string& long_name) {
    put(w, path, DType::I64, {values.size()}, values.data());
    w.make_scale(path, base_name(path));
    describe(w, path, units, long_name);
}

// Attaches one dimension scale per axis of `ds` (labelled with the dimension's name, for h5py's
// dims[i].label) and sets units/long_name.
void put_dims(h5::Writer& w, const std::string& ds, const std::vector<std::string>& scales,
              const std::string& units, const std::string& long_name) {
    for (size_t axis = 0; axis < scales.size(); ++axis)
        w.attach_scale(ds, static_cast<int>(axis), scales[axis], base_name(scales[axis]));
    describe(w, ds, units, long_name);
}

std::vector<int64_t> iota(uint64_t n, int64_t start = 0) {
    std::vector<int64_t> v(n);
    for (uint64_t i = 0; i < n; ++i) v[i] = start + static_cast<int64_t>(i);
    return v;
}

// Root dimensions (format version 2; version 1 kept them in /dims, which netCDF readers cannot see).
constexpr const char* kLayer = "/layer";
constexpr const char* kChannel = "/channel";
constexpr const char* kPosition = "/position";
constexpr const char* kRfPosition = "/rf_position";
constexpr const char* kWindowPosition = "/window_position";
// Where format version 1 kept the receptive-field positions.
constexpr const char* kRfPositionV1 = "/dims/rf_position";

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

void write_calibration_copy(h5::Writer& w, const std::filesystem::path& path, uint64_t L, uint64_t C) {
    Calibration cal = load_calibration(path);
    if (static_cast<uint64_t>(cal.n_layer) != L || static_cast<uint64_t>(cal.channels) != C)
        throw Error("write_trace: calibration " + path.string() + " is " + std::to_string(cal.n_layer) +
                        " × " + std::to_string(cal.channels) + " (n_layer × channels), the run is " +
                        std::to_string(L) + " × " + std::to_string(C),
                    "the calibration file changed since the run; run the analysis again");
    const uint64_t n = static_cast<uint64_t>(cal.n_lengths());
    put_scale(w, "/calibration/lengths", cal.lengths, "token", "calibration sequence length λ (§2.3)");
    put(w, "/calibration/log_decay", DType::F64, {L, C}, cal.log_decay.data());
    put_dims(w, "/calibration/log_decay", {kLayer, kChannel}, "1",
             "calibrated log decay (natural log, §8.2)");
    put(w, "/calibration/delta_sum", DType::F64, {L, C}, cal.delta_sum.data());
    put_dims(w, "/calibration/delta_sum", {kLayer, kChannel}, "1", "calibrated Σ Δ (§8.3)");
    put(w, "/calibration/thresholds", DType::F64, {L, n, C}, cal.thresholds.data());
    put_dims(w, "/calibration/thresholds", {kLayer, "/calibration/lengths", kChannel}, "1",
             "filter threshold θ per length (§8.5)");
    put(w, "/calibration/alpha", DType::F64, {L, n, C}, cal.alpha.data());
    put_dims(w, "/calibration/alpha", {kLayer, "/calibration/lengths", kChannel}, "1",
             "calibration α per length (§2.3)");
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
    // NeXus: NXroot → NXentry (/methods) → NXdata (/methods/<first method>), followed by H5Web and silx.
    h5::set_attr(root, "NX_class", std::string("NXroot"));
    if (!run.methods.empty()) h5::set_attr(root, "default", std::string("methods"));
    h5::set_attr(root, "n_layer", static_cast<int64_t>(run.n_layer));
    h5::set_attr(root, "channels", run.channels);
    h5::set_attr(root, "train_len", run.train_len);
    h5::set_attr(root, "window_begin", run.window_begin);
    h5::set_attr(root, "window_end", run.window_end);
    if (run.calibration_path) h5::set_attr(root, "calibration_path", run.calibration_path->string());
    for (const auto& [k, v] : run.provenance) h5::set_attr(root, kProvenancePrefix + k, v);

    // Dimensions, at the root so that every group sees them (netCDF looks in the group and its parents).
    const uint64_t W = static_cast<uint64_t>(std::max<int64_t>(0, run.window_end - run.window_begin));
    const auto layers = iota(L), channels = iota(C);
    put_scale(w, kLayer, layers, "1", "layer");
    put_scale(w, kChannel, channels, "1", "channel (Mamba-1 inner channel, Mamba-2 head)");
    put_scale(w, kPosition, iota(T), "token", "token position (0-based index into /input/ids)");
    put_scale(w, kRfPosition, run.rf_positions, "token", "position where receptive fields were measured");
    put_scale(w, kWindowPosition, iota(W, run.window_begin), "token", "token position in the Δ window");

    // Input.
    std::vector<int32_t> ids = run.input.ids;
    put(w, "/input/ids", DType::I32, {T}, ids.data());
    put_dims(w, "/input/ids", {kPosition}, "1", "token id");
    if (!run.input.token_strings.empty()) {
        MS_CHECK(run.input.token_strings.size() == T, "write_trace: token_strings is not [T]");
        w.write_strings("/input/token_strings", run.input.token_strings);
        put_dims(w, "/input/token_strings", {kPosition}, "1", "text of each token (UTF-8 bytes)");
    }
    if (!run.input.byte_offsets.empty()) {
        MS_CHECK(run.input.byte_offsets.size() == T, "write_trace: byte_offsets is not [T]");
        put(w, "/input/byte_offsets", DType::I64, {T}, run.input.byte_offsets.data());
        put_dims(w, "/input/byte_offsets", {kPosition}, "byte", "byte offset of each token in the text");
    }
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
        // The NXdata axes of log_decay (NeXus wants them in the group) and its xarray coordinates: copies of
        // the root scales (small), which shadow them for this group.
        const std::string g_layer = g + "/layer", g_channel = g + "/channel", g_rf = g + "/rf_position";
        put_scale(w, g_layer, layers, "1", "layer");
        put_scale(w, g_channel, channels, "1", "channel (Mamba-1 inner channel, Mamba-2 head)");
        put_scale(w, g_rf, run.rf_positions, "token", "position where receptive fields were measured");
        put_scale(w, g + "/nll_positions", m.nll_positions, "token",
                  "position p whose NLL predicts token p+1");
        put(w, g + "/nll", DType::F32, {m.nll.size()}, m.nll.data());
        put_dims(w, g + "/nll", {g + "/nll_positions"}, "nat",
                 "negative log-likelihood −ln p(ids[p+1] | ids[≤p])");
        put(w, g + "/delta_sum", DType::F64, {L, C}, m.delta_sum.data.data());
        put_dims(w, g + "/delta_sum", {g_layer, g_channel}, "1", "Σ_t Δ used (time-step units)");
        put(w, g + "/log_decay", DType::F64, {L, C}, m.log_decay.data.data());
        put_dims(w, g + "/log_decay", {g_layer, g_channel}, "1", "log decay A·Σ Δ used (natural log, §8.2)");
        put(w, g + "/global_mask", DType::U8, {L, C}, m.global_mask.data.data());
        put_dims(w, g + "/global_mask", {g_layer, g_channel}, "1", "global channel (1) or local (0), §8.4");
        put(w, g + "/critical_count", DType::I64, {L, C}, m.critical_count.data.data());
        put_dims(w, g + "/critical_count", {g_layer, g_channel}, "token", "critical tokens (Δ > b·θ), §8.6");
        put(w, g + "/receptive_field", DType::I64, {L, P, C}, m.receptive_field.data.data());
        put_dims(w, g + "/receptive_field", {g_layer, g_rf, g_channel}, "token",
                 "receptive field RF(t), §8.7");
        put(w, g + "/receptive_field_censored", DType::U8, {L, P, C}, m.receptive_field_censored.data.data());
        put_dims(w, g + "/receptive_field_censored", {g_layer, g_rf, g_channel}, "1",
                 "1 when the decay never reached ε (RF ≥ t+1)");
        if (!m.kept_positions.empty())
            put_scale(w, g + "/kept_positions", m.kept_positions, "token",
                      "position that reaches the last layer (DeciMamba, §4)");
        if (!m.global_keep_count.empty()) {
            MS_CHECK(m.global_keep_count.size() == run.input.ids.size(),
                     "write_trace: global_keep_count does not have one entry per token");
            put(w, g + "/global_keep_count", DType::I64, {T}, m.global_keep_count.data());
            put_dims(w, g + "/global_keep_count", {kPosition}, "1",
                     "global channels whose scan used the token (§8.6)");
        }
        for (const auto& ct : m.channels) {
            const std::string cg = g + "/channels/" + chan_key(ct.ref);
            MS_CHECK(ct.delta_raw.size() == W && ct.delta_used.size() == W && ct.critical.size() == W,
                     "write_trace: channel window arrays do not match the window");
            MS_CHECK(ct.cum_log_decay.size() == T, "write_trace: cum_log_decay is not [T]");
            put(w, cg + "/delta_raw", DType::F32, {W}, ct.delta_raw.data());
            put_dims(w, cg + "/delta_raw", {kWindowPosition}, "1", "Δ after softplus, before the filter");
            put(w, cg + "/delta_used", DType::F32, {W}, ct.delta_used.data());
            put_dims(w, cg + "/delta_used", {kWindowPosition}, "1", "Δ the scan used (§8.5)");
            put(w, cg + "/critical", DType::U8, {W}, ct.critical.data());
            put_dims(w, cg + "/critical", {kWindowPosition}, "1", "critical token (1), §8.6");
            put(w, cg + "/cum_log_decay", DType::F32, {T}, ct.cum_log_decay.data());
            put_dims(w, cg + "/cum_log_decay", {kPosition}, "1", "cumulative log decay Σ_{k≤t} A·Δ used");
            auto o = w.open(cg);
            h5::set_attr(o.id(), "layer", static_cast<int64_t>(ct.ref.layer));
            h5::set_attr(o.id(), "channel", ct.ref.channel);
            h5::set_attr(o.id(), "global", static_cast<int64_t>(ct.global ? 1 : 0));
            h5::set_attr(o.id(), "threshold", static_cast<double>(ct.threshold));
        }
        for (const auto& am : m.attention) {
            const std::string ag = g + "/attention/" + chan_key(am.ref);
            MS_CHECK(am.alpha.shape.size() == 2 && am.alpha.shape[0] == am.alpha.shape[1] &&
                         am.alpha.data.size() == static_cast<size_t>(am.alpha.numel()),
                     "write_trace: attention map is not W × W");
            const auto window = iota(static_cast<uint64_t>(am.alpha.shape[0]));
            put_scale(w, ag + "/output_index", window, "1", "output row i in the attention window");
            put_scale(w, ag + "/source_index", window, "1", "source column j in the attention window");
            put(w, ag + "/alpha", DType::F32, u64(am.alpha.shape), am.alpha.data.data());
            put_dims(w, ag + "/alpha", {ag + "/output_index", ag + "/source_index"}, "1",
                     "hidden attention α_{i,j} (§5, §8.9), normalised as `norm`");
            auto o = w.open(ag);
            h5::set_attr(o.id(), "NX_class", std::string("NXdata"));
            h5::set_attr(o.id(), "signal", std::string("alpha"));
            h5::set_attr(o.id(), "axes", std::vector<std::string>{"output_index", "source_index"});
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
    if (!run.methods.empty()) {
        auto o = w.open("/methods");
        h5::set_attr(o.id(), "NX_class", std::string("NXentry"));
        h5::set_attr(o.id(), "default", std::string(method_name(run.methods[0].method)));
    }
    if (run.calibration_path && std::filesystem::exists(*run.calibration_path)) {
        write_calibration_copy(w, *run.calibration_path, L, C);
    } else if (run.calibration_log_decay.shape.size() == 2 && !run.calibration_log_decay.data.empty()) {
        // The calibration file is gone (e.g. a trace opened and exported again): keep its log decay.
        const auto& a = run.calibration_log_decay;
        MS_CHECK(a.shape[0] == run.n_layer && a.shape[1] == run.channels &&
                     a.data.size() == static_cast<size_t>(a.numel()),
                 "write_trace: calibration_log_decay is not n_layer × channels");
        put(w, "/calibration/log_decay", DType::F64, {L, C}, a.data.data());
        put_dims(w, "/calibration/log_decay", {kLayer, kChannel}, "1",
                 "calibrated log decay (natural log, §8.2)");
    }
    report_progress(progress, 1.0, "writing trace");
    w.commit();
}

namespace {

RunResult read_trace_in_process(const std::filesystem::path& path) {
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
        run.rf_positions = r.read_i64(version == 1 ? kRfPositionV1 : kRfPosition);
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

}  // namespace

RunResult read_trace(const std::filesystem::path& path) {
    // A corrupt file can crash libhdf5 itself: read it in a child process first (h5::probe_read_in_child).
    h5::probe_read_in_child(path, [&] { (void)read_trace_in_process(path); });
    return read_trace_in_process(path);
}

}  // namespace mambascope
