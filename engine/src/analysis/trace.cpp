// HDF5 traces; see mambascope/trace.h and docs/trace-format.md.
#include "mambascope/trace.h"

#include <chrono>
#include <ctime>

#include "mambascope/error.h"
#include "mambascope/h5.h"

namespace mambascope {
namespace {

using u64 = uint64_t;
std::vector<u64> dims(const std::vector<int64_t>& s) {
    return {s.begin(), s.end()};
}

std::string utc_now() {
    const std::time_t t = std::time(nullptr);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    return buf;
}

std::string chan_key(const ChannelRef& r) {
    return "L" + std::to_string(r.layer) + "_C" + std::to_string(r.channel);
}

const h5::DatasetOptions kZ{true, 4, {}};

template <class T>
void put(h5::Writer& w, const std::string& path, h5::DType t, const Array<T>& a) {
    w.write(path, t, dims(a.shape), a.data.data(), kZ);
}

}  // namespace

void write_trace(const std::filesystem::path& path, const RunResult& run) {
    h5::Writer w(path);
    const int64_t T = int64_t(run.input.ids.size()), L = run.n_layer, C = run.channels;
    const int64_t P = int64_t(run.rf_positions.size());
    auto root = w.root();
    h5::set_attr(root, "format", std::string(kTraceFormat));
    h5::set_attr(root, "format_version", kTraceFormatVersion);
    h5::set_attr(root, "software", std::string("mambascope ") + MAMBASCOPE_VERSION);
    h5::set_attr(root, "created_utc", utc_now());
    h5::set_attr(root, "NX_class", std::string("NXentry"));
    h5::set_attr(root, "n_layer", int64_t(L));
    h5::set_attr(root, "channels", C);
    h5::set_attr(root, "train_len", run.train_len);
    h5::set_attr(root, "window_begin", run.window_begin);
    h5::set_attr(root, "window_end", run.window_end);
    h5::set_attr(root, "calibration_path",
                 run.calibration_path ? run.calibration_path->string() : std::string());
    for (const auto& [k, v] : run.provenance) h5::set_attr(root, "provenance." + k, v);
    std::vector<std::string> methods;
    for (const auto& m : run.methods) methods.push_back(method_name(m.method));
    h5::set_attr(root, "methods", methods);

    // Dimension scales (xarray labels axes with them).
    std::vector<int64_t> layer(static_cast<size_t>(L)), channel(static_cast<size_t>(C)),
        position(static_cast<size_t>(T));
    for (int64_t i = 0; i < L; ++i) layer[size_t(i)] = i;
    for (int64_t i = 0; i < C; ++i) channel[size_t(i)] = i;
    for (int64_t i = 0; i < T; ++i) position[size_t(i)] = i;
    w.write_i64("/dims/layer", {u64(L)}, layer.data());
    w.write_i64("/dims/channel", {u64(C)}, channel.data());
    w.write_i64("/dims/position", {u64(T)}, position.data(), kZ);
    w.write_i64("/dims/rf_position", {u64(P)}, run.rf_positions.data());

    // Input
    w.write_i64(
        "/input/ids", {u64(T)},
        [&] {
            static thread_local std::vector<int64_t> v;
            v.assign(run.input.ids.begin(), run.input.ids.end());
            return v.data();
        }(),
        kZ);
    w.attach_scale("/input/ids", 0, "/dims/position", "position");
    if (!run.input.token_strings.empty()) w.write_strings("/input/token_strings", run.input.token_strings);
    if (!run.input.byte_offsets.empty())
        w.write_i64("/input/byte_offsets", {u64(run.input.byte_offsets.size())},
                    run.input.byte_offsets.data(), kZ);
    {
        auto g = w.open("/input");
        h5::set_attr(g.id(), "text_path", run.input.text_path);
        h5::set_attr(g.id(), "text_sha256", run.input.text_sha256);
        h5::set_attr(g.id(), "text_bytes", run.input.text_bytes);
    }

    for (const auto& m : run.methods) {
        const std::string base = std::string("/methods/") + method_name(m.method);
        w.write_f32(base + "/nll", {u64(m.nll.size())}, m.nll.data(), kZ);
        w.write_i64(base + "/nll_positions", {u64(m.nll_positions.size())}, m.nll_positions.data(), kZ);
        put(w, base + "/delta_sum", h5::DType::F64, m.delta_sum);
        put(w, base + "/log_decay", h5::DType::F64, m.log_decay);
        put(w, base + "/global_mask", h5::DType::U8, m.global_mask);
        put(w, base + "/critical_count", h5::DType::I64, m.critical_count);
        put(w, base + "/receptive_field", h5::DType::I64, m.receptive_field);
        put(w, base + "/receptive_field_censored", h5::DType::U8, m.receptive_field_censored);
        for (const char* n : {"/delta_sum", "/log_decay", "/global_mask", "/critical_count"}) {
            w.attach_scale(base + n, 0, "/dims/layer", "layer");
            w.attach_scale(base + n, 1, "/dims/channel", "channel");
        }
        for (const char* n : {"/receptive_field", "/receptive_field_censored"}) {
            w.attach_scale(base + n, 0, "/dims/layer", "layer");
            w.attach_scale(base + n, 1, "/dims/rf_position", "rf_position");
            w.attach_scale(base + n, 2, "/dims/channel", "channel");
        }
        if (!m.kept_positions.empty())
            w.write_i64(base + "/kept_positions", {u64(m.kept_positions.size())}, m.kept_positions.data(),
                        kZ);
        auto g = w.open(base);
        h5::set_attr(g.id(), "NX_class", std::string("NXdata"));
        h5::set_attr(g.id(), "signal", std::string("log_decay"));
        h5::set_attr(g.id(), "axes", std::vector<std::string>{"layer", "channel"});
        h5::set_attr(g.id(), "seconds", m.seconds);
        h5::set_attr(g.id(), "receptive_field_resolution", m.receptive_field_resolution);
        for (const auto& [k, v] : m.params) h5::set_attr(g.id(), "param." + k, v);
        // the detail and attention channels, as (layer, channel) rows, so readers need not search
        for (int pass = 0; pass < 2; ++pass) {
            std::vector<int64_t> rows;
            if (pass == 0)
                for (const auto& ct : m.channels)
                    rows.insert(rows.end(), {int64_t(ct.ref.layer), ct.ref.channel});
            else
                for (const auto& am : m.attention)
                    rows.insert(rows.end(), {int64_t(am.ref.layer), am.ref.channel});
            w.write_i64(base + (pass == 0 ? "/detail_channels" : "/attention_channels"),
                        {u64(rows.size() / 2), 2}, rows.data());
        }
        for (const auto& ct : m.channels) {
            const std::string cb = base + "/channels/" + chan_key(ct.ref);
            w.write_f32(cb + "/delta_raw", {u64(ct.delta_raw.size())}, ct.delta_raw.data(), kZ);
            w.write_f32(cb + "/delta_used", {u64(ct.delta_used.size())}, ct.delta_used.data(), kZ);
            w.write(cb + "/critical", h5::DType::U8, {u64(ct.critical.size())}, ct.critical.data(), kZ);
            w.write_f32(cb + "/cum_log_decay", {u64(ct.cum_log_decay.size())}, ct.cum_log_decay.data(), kZ);
            if (int64_t(ct.cum_log_decay.size()) == T)
                w.attach_scale(cb + "/cum_log_decay", 0, "/dims/position", "position");
            auto cg = w.open(cb);
            h5::set_attr(cg.id(), "layer", int64_t(ct.ref.layer));
            h5::set_attr(cg.id(), "channel", ct.ref.channel);
            h5::set_attr(cg.id(), "global", int64_t(ct.global));
            h5::set_attr(cg.id(), "threshold", double(ct.threshold));
        }
        for (const auto& am : m.attention) {
            const std::string ab = base + "/attention/" + chan_key(am.ref);
            put(w, ab + "/alpha", h5::DType::F32, am.alpha);
            auto ag = w.open(ab);
            h5::set_attr(ag.id(), "layer", int64_t(am.ref.layer));
            h5::set_attr(ag.id(), "channel", am.ref.channel);
            h5::set_attr(ag.id(), "norm", std::string(attention_norm_name(am.norm)));
            h5::set_attr(ag.id(), "log_floor", am.log_floor);
            h5::set_attr(ag.id(), "begin", am.begin);
        }
    }
    w.commit();
}

namespace {

template <class T>
Array<T> get_array(const h5::Reader& r, const std::string& path, const std::vector<int64_t>& want);

template <>
Array<double> get_array(const h5::Reader& r, const std::string& path, const std::vector<int64_t>& want) {
    std::vector<u64> s;
    Array<double> a;
    a.data = r.read_f64(path, &s);
    a.shape.assign(s.begin(), s.end());
    if (a.shape != want) throw Error(r.path().string() + ": " + path + " has an unexpected shape");
    return a;
}
template <>
Array<int64_t> get_array(const h5::Reader& r, const std::string& path, const std::vector<int64_t>& want) {
    std::vector<u64> s;
    Array<int64_t> a;
    a.data = r.read_i64(path, &s);
    a.shape.assign(s.begin(), s.end());
    if (a.shape != want) throw Error(r.path().string() + ": " + path + " has an unexpected shape");
    return a;
}
template <>
Array<float> get_array(const h5::Reader& r, const std::string& path, const std::vector<int64_t>& want) {
    std::vector<u64> s;
    Array<float> a;
    a.data = r.read_f32(path, &s);
    a.shape.assign(s.begin(), s.end());
    if (a.shape != want) throw Error(r.path().string() + ": " + path + " has an unexpected shape");
    return a;
}
Array<uint8_t> get_u8(const h5::Reader& r, const std::string& path, const std::vector<int64_t>& want) {
    auto a = get_array<int64_t>(r, path, want);
    Array<uint8_t> out;
    out.shape = a.shape;
    out.data.assign(a.data.begin(), a.data.end());
    return out;
}
std::vector<uint8_t> to_u8(const std::vector<int64_t>& v) {
    return {v.begin(), v.end()};
}

}  // namespace

RunResult read_trace(const std::filesystem::path& path) {
    h5::Reader r(path);
    const auto root = r.root();
    if (!h5::has_attr(root, "format") || h5::get_attr_string(root, "format") != kTraceFormat)
        throw Error(path.string() + " is not a mambascope trace (no format = \"mambascope-trace\" attribute)",
                    "open a file written by `mambascope-cli analyze` or the app's Export");
    const int64_t version = h5::get_attr_int(root, "format_version");
    if (version > kTraceFormatVersion)
        throw Error(path.string() + " was written by a newer Mambascope (trace format version " +
                        std::to_string(version) + "; this build reads up to " +
                        std::to_string(kTraceFormatVersion) + ")",
                    "update Mambascope");
    RunResult run;
    run.n_layer = int(h5::get_attr_int(root, "n_layer"));
    run.channels = h5::get_attr_int(root, "channels");
    run.train_len = h5::get_attr_int(root, "train_len");
    run.window_begin = h5::get_attr_int(root, "window_begin");
    run.window_end = h5::get_attr_int(root, "window_end");
    const std::string cal = h5::get_attr_string(root, "calibration_path");
    if (!cal.empty()) run.calibration_path = cal;
    for (const char* k : {"model_path", "model_name", "arch", "weights_file", "weights_sha256", "tokenizer"})
        if (h5::has_attr(root, std::string("provenance.") + k))
            run.provenance[k] = h5::get_attr_string(root, std::string("provenance.") + k);
    const int64_t L = run.n_layer, C = run.channels;
    auto ids = r.read_i64("/input/ids");
    run.input.ids.assign(ids.begin(), ids.end());
    const int64_t T = int64_t(ids.size());
    if (r.exists("/input/token_strings")) run.input.token_strings = r.read_strings("/input/token_strings");
    if (r.exists("/input/byte_offsets")) run.input.byte_offsets = r.read_i64("/input/byte_offsets");
    {
        auto g = r.open("/input");
        run.input.text_path = h5::get_attr_string(g.id(), "text_path");
        run.input.text_sha256 = h5::get_attr_string(g.id(), "text_sha256");
        run.input.text_bytes = h5::get_attr_int(g.id(), "text_bytes");
    }
    run.rf_positions = r.read_i64("/dims/rf_position");
    const int64_t P = int64_t(run.rf_positions.size());
    // methods, in the order the file lists them
    std::vector<std::string> names;
    {
        // a string-array attribute: read through the h5 layer one by one is not exposed; probe known names
        for (const char* n : {"vanilla", "longmamba", "decimamba"})
            if (r.exists(std::string("/methods/") + n)) names.push_back(n);
    }
    if (names.empty()) throw Error(path.string() + ": the trace holds no method results");
    for (const auto& name : names) {
        const std::string base = "/methods/" + name;
        MethodResult m;
        m.method = parse_method(name);
        m.nll = r.read_f32(base + "/nll");
        m.nll_positions = r.read_i64(base + "/nll_positions");
        if (m.nll.size() != m.nll_positions.size())
            throw Error(path.string() + ": " + base + "/nll and nll_positions differ in length");
        m.delta_sum = get_array<double>(r, base + "/delta_sum", {L, C});
        m.log_decay = get_array<double>(r, base + "/log_decay", {L, C});
        m.global_mask = get_u8(r, base + "/global_mask", {L, C});
        m.critical_count = get_array<int64_t>(r, base + "/critical_count", {L, C});
        m.receptive_field = get_array<int64_t>(r, base + "/receptive_field", {L, P, C});
        m.receptive_field_censored = get_u8(r, base + "/receptive_field_censored", {L, P, C});
        if (r.exists(base + "/kept_positions")) m.kept_positions = r.read_i64(base + "/kept_positions");
        auto g = r.open(base);
        m.seconds = h5::get_attr_double(g.id(), "seconds");
        m.receptive_field_resolution = h5::get_attr_int(g.id(), "receptive_field_resolution");
        for (const char* k : {"c", "b", "activate_above", "key_length", "activated", "L_base", "beta",
                              "min_seq_len", "resp_len", "layer_0", "layer_1", "layer_2", "layer_3"})
            if (h5::has_attr(g.id(), std::string("param.") + k))
                m.params[k] = h5::get_attr_double(g.id(), std::string("param.") + k);
        for (int pass = 0; pass < 2; ++pass) {
            const std::string sub = base + (pass == 0 ? "/channels" : "/attention");
            if (!r.exists(sub)) continue;
            std::vector<u64> ls;
            auto list = r.read_i64(base + (pass == 0 ? "/detail_channels" : "/attention_channels"), &ls);
            for (size_t i = 0; i + 1 < list.size(); i += 2) {
                {
                    const int64_t l = list[i], c = list[i + 1];
                    if (l < 0 || l >= L || c < 0 || c >= C)
                        throw Error(path.string() + ": bad channel in " + base);
                    const std::string key = sub + "/L" + std::to_string(l) + "_C" + std::to_string(c);
                    auto kg = r.open(key);
                    if (pass == 0) {
                        ChannelTrace ct;
                        ct.ref = {int(l), c};
                        ct.global = h5::get_attr_int(kg.id(), "global") != 0;
                        ct.threshold = float(h5::get_attr_double(kg.id(), "threshold"));
                        ct.delta_raw = r.read_f32(key + "/delta_raw");
                        ct.delta_used = r.read_f32(key + "/delta_used");
                        ct.critical = to_u8(r.read_i64(key + "/critical"));
                        ct.cum_log_decay = r.read_f32(key + "/cum_log_decay");
                        if (int64_t(ct.cum_log_decay.size()) != T)
                            throw Error(path.string() + ": " + key + "/cum_log_decay has the wrong length");
                        m.channels.push_back(std::move(ct));
                    } else {
                        AttentionMap am;
                        am.ref = {int(l), c};
                        const std::string norm = h5::get_attr_string(kg.id(), "norm");
                        am.norm = norm == "none"        ? AttentionNorm::None
                                  : norm == "absminmax" ? AttentionNorm::AbsMinMax
                                  : norm == "log10"     ? AttentionNorm::Log10Floor
                                                        : AttentionNorm::AbsMax;
                        am.log_floor = h5::get_attr_double(kg.id(), "log_floor");
                        am.begin = h5::get_attr_int(kg.id(), "begin");
                        std::vector<u64> s;
                        am.alpha.data = r.read_f32(key + "/alpha", &s);
                        am.alpha.shape.assign(s.begin(), s.end());
                        if (s.size() != 2 || s[0] != s[1])
                            throw Error(path.string() + ": " + key + "/alpha is not square");
                        m.attention.push_back(std::move(am));
                    }
                }
            }
        }
        run.methods.push_back(std::move(m));
    }
    return run;
}

}  // namespace mambascope
