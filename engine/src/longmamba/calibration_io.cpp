// Calibration files (HDF5): save and validated load. See calibration.h for the layout.
#include <cmath>
#include <string>

#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/h5.h"

namespace mambascope {

namespace {

constexpr const char* kHintRecalibrate = "recompute it with `mambascope-cli calibrate ... --out FILE`";

std::vector<uint64_t> u64(std::initializer_list<int64_t> dims) {
    std::vector<uint64_t> out;
    for (int64_t d : dims) out.push_back(static_cast<uint64_t>(d));
    return out;
}

}  // namespace

void save_calibration(const std::filesystem::path& path, const Calibration& cal) {
    const int64_t L = cal.n_layer, C = cal.channels, n_len = cal.n_lengths();
    MS_CHECK(L >= 1 && C >= 1 && n_len >= 1, "save_calibration: empty calibration");
    MS_CHECK(static_cast<int64_t>(cal.log_decay.size()) == L * C &&
                 static_cast<int64_t>(cal.delta_sum.size()) == L * C &&
                 static_cast<int64_t>(cal.thresholds.size()) == L * n_len * C &&
                 static_cast<int64_t>(cal.alpha.size()) == L * n_len * C,
             "save_calibration: arrays disagree with n_layer × n_lengths × channels");
    h5::Writer w(path);
    w.write_f64("/log_decay", u64({L, C}), cal.log_decay.data());
    w.write_f64("/delta_sum", u64({L, C}), cal.delta_sum.data());
    w.write_f64("/thresholds", u64({L, n_len, C}), cal.thresholds.data());
    w.write_f64("/alpha", u64({L, n_len, C}), cal.alpha.data());
    w.write_i64("/lengths", u64({n_len}), cal.lengths.data());
    const int64_t root = w.root();
    h5::set_attr(root, "format", std::string(kCalibrationFormat));
    h5::set_attr(root, "format_version", kCalibrationFormatVersion);
    h5::set_attr(root, "model_name", cal.model_name);
    h5::set_attr(root, "arch", cal.arch);
    h5::set_attr(root, "n_layer", L);
    h5::set_attr(root, "channels", C);
    h5::set_attr(root, "train_len", cal.params.train_len);
    h5::set_attr(root, "samples", static_cast<int64_t>(cal.params.samples));
    h5::set_attr(root, "samples_used", cal.samples_used);
    h5::set_attr(root, "stream_tokens", cal.stream_tokens);
    h5::set_attr(root, "clamp_top", cal.params.clamp_top);
    h5::set_attr(root, "aggregate", std::string(aggregate_name(cal.params.aggregate)));
    h5::set_attr(root, "m1_decay", std::string(m1_decay_name(cal.params.m1_decay)));
    std::vector<std::string> keys;
    for (int64_t l : cal.lengths) keys.push_back(length_key(l));
    h5::set_attr(root, "length_keys", keys);
    w.commit();
}

namespace {
Calibration load_calibration_in_process(const std::filesystem::path& path);
}  // namespace

Calibration load_calibration(const std::filesystem::path& path) {
    const std::string where = "calibration file " + path.string();
    if (!std::filesystem::exists(path)) throw Error(where + " does not exist", kHintRecalibrate);
    // A corrupt file can crash libhdf5 itself: read it in a child process first (h5::probe_read_in_child).
    h5::probe_read_in_child(path, [&] { (void)load_calibration_in_process(path); });
    return load_calibration_in_process(path);
}

namespace {

Calibration load_calibration_in_process(const std::filesystem::path& path) {
    const std::string where = "calibration file " + path.string();
    h5::Reader r(path);
    const int64_t root = r.root();
    if (!h5::has_attr(root, "format") || h5::get_attr_string(root, "format") != kCalibrationFormat)
        throw Error(
            where + " is not a Mambascope calibration (no format=\"" + kCalibrationFormat + "\" attribute)",
            kHintRecalibrate);
    const int64_t version =
        h5::has_attr(root, "format_version") ? h5::get_attr_int(root, "format_version") : -1;
    if (version < 1 || version > kCalibrationFormatVersion)
        throw Error(where + " has format_version " + std::to_string(version) + ", this build reads 1.." +
                        std::to_string(kCalibrationFormatVersion),
                    "update Mambascope or recalibrate");
    for (const char* name : {"/log_decay", "/delta_sum", "/thresholds", "/alpha", "/lengths"})
        if (!r.exists(name)) throw Error(where + " lacks the dataset " + name, kHintRecalibrate);
    for (const char* attr :
         {"n_layer", "channels", "train_len", "clamp_top", "aggregate", "m1_decay", "arch"})
        if (!h5::has_attr(root, attr)) throw Error(where + " lacks the attribute " + attr, kHintRecalibrate);

    Calibration cal;
    cal.n_layer = h5::get_attr_int(root, "n_layer");
    cal.channels = h5::get_attr_int(root, "channels");
    cal.arch = h5::get_attr_string(root, "arch");
    if (cal.arch != "mamba" && cal.arch != "mamba2")
        throw Error(
            where + ": attribute arch = \"" + cal.arch.substr(0, 40) + "\" is not \"mamba\" or \"mamba2\"",
            kHintRecalibrate);
    cal.model_name = h5::has_attr(root, "model_name") ? h5::get_attr_string(root, "model_name") : "";
    cal.params.train_len = h5::get_attr_int(root, "train_len");
    cal.params.samples =
        h5::has_attr(root, "samples") ? static_cast<int>(h5::get_attr_int(root, "samples")) : 0;
    cal.samples_used = h5::has_attr(root, "samples_used") ? h5::get_attr_int(root, "samples_used") : 0;
    cal.stream_tokens = h5::has_attr(root, "stream_tokens") ? h5::get_attr_int(root, "stream_tokens") : 0;
    cal.params.clamp_top = h5::get_attr_double(root, "clamp_top");
    try {
        cal.params.aggregate = parse_aggregate(h5::get_attr_string(root, "aggregate"));
        cal.params.m1_decay = parse_m1_decay(h5::get_attr_string(root, "m1_decay"));
    } catch (const Error& e) {
        throw Error(where + ": " + e.what(), kHintRecalibrate);
    }
    if (cal.n_layer < 1 || cal.channels < 1 || cal.params.train_len < 1)
        throw Error(where + " has a non-positive n_layer, channels or train_len", kHintRecalibrate);
    // Bounded sizes: the products below size the arrays read next (no model has 2^20 layers or 2^32
    // channels).
    if (cal.n_layer > (int64_t{1} << 20) || cal.channels > (int64_t{1} << 32))
        throw Error(where + ": n_layer = " + std::to_string(cal.n_layer) +
                        " or channels = " + std::to_string(cal.channels) + " is implausibly large",
                    kHintRecalibrate);
    // Token counts (train_len, /lengths) up to 2^40: the filter and the analysis add to them and multiply
    // them (a length of 2^63 − 1 overflowed the fuzz harness's S = length + 1, the CI fuzz step of
    // 2026-12-03).
    constexpr int64_t kMaxTokens = int64_t{1} << 40;
    if (cal.params.train_len > kMaxTokens)
        throw Error(where + ": train_len = " + std::to_string(cal.params.train_len) +
                        " is implausibly large (at most 2^40 tokens)",
                    kHintRecalibrate);

    std::vector<uint64_t> shape;
    cal.lengths = r.read_i64("/lengths", &shape);
    if (shape.size() != 1 || shape[0] < 1) throw Error(where + ": /lengths must be a non-empty 1-D array");
    {
        // HDF5 converts a float dataset to int64 by truncation: 1500.5 would silently become 1500.
        const std::vector<double> exact = r.read_f64("/lengths");
        for (size_t i = 0; i < exact.size() && i < cal.lengths.size(); ++i)
            if (exact[i] != static_cast<double>(cal.lengths[i]))
                throw Error(where + ": /lengths[" + std::to_string(i) + "] = " + std::to_string(exact[i]) +
                                " is not an integer",
                            kHintRecalibrate);
    }
    for (size_t i = 0; i < cal.lengths.size(); ++i)
        if (cal.lengths[i] < 1 || (i > 0 && cal.lengths[i] <= cal.lengths[i - 1]))
            throw Error(where + ": /lengths must be positive and strictly increasing", kHintRecalibrate);
        else if (cal.lengths[i] > kMaxTokens)
            throw Error(where + ": /lengths[" + std::to_string(i) + "] = " + std::to_string(cal.lengths[i]) +
                            " is implausibly large (at most 2^40 tokens)",
                        kHintRecalibrate);
    cal.params.lengths = cal.lengths;
    const uint64_t L = static_cast<uint64_t>(cal.n_layer), C = static_cast<uint64_t>(cal.channels),
                   N = cal.lengths.size();

    auto read = [&](const char* name, const std::vector<uint64_t>& expect, bool allow_neg_inf) {
        std::vector<uint64_t> sh;
        std::vector<double> v = r.read_f64(name, &sh);
        if (sh != expect) {
            std::string got, want;
            for (uint64_t d : sh) got += (got.empty() ? "" : ", ") + std::to_string(d);
            for (uint64_t d : expect) want += (want.empty() ? "" : ", ") + std::to_string(d);
            throw Error(where + ": " + name + " has shape [" + got + "], expected [" + want + "]",
                        kHintRecalibrate);
        }
        for (double x : v)
            if (std::isnan(x) || (std::isinf(x) && !(allow_neg_inf && x < 0)))
                throw Error(where + ": " + name + " contains NaN or infinite values", kHintRecalibrate);
        return v;
    };
    cal.log_decay = read("/log_decay", {L, C}, true);
    cal.delta_sum = read("/delta_sum", {L, C}, false);
    cal.thresholds = read("/thresholds", {L, N, C}, false);
    cal.alpha = read("/alpha", {L, N, C}, false);
    return cal;
}

}  // namespace

}  // namespace mambascope
