// LongMamba calibration driver and filter (method doc §2.3, §8.3–§8.5). See calibration.h.
#include "mambascope/calibration.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>

#include "mambascope/error.h"
#include "mambascope/sha256.h"

namespace mambascope {

CalibrationParams resolve_calibration_params(const ModelConfig& config, CalibrationParams p) {
    if (p.train_len < 0) p.train_len = config.train_len;
    if (p.lengths.empty()) p.lengths = official_lengths();
    if (p.train_len < 1) throw Error("calibration train_len must be ≥ 1", "pass --train-len");
    if (p.samples < 1)
        throw Error("calibration needs at least one sample window", "pass --samples 1 or more");
    if (!(p.clamp_top > 0 && p.clamp_top <= 1))
        throw Error("clamp_top must be in (0, 1], got " + std::to_string(p.clamp_top),
                    "e.g. --clamp-top 0.1");
    for (size_t i = 0; i < p.lengths.size(); ++i) {
        if (p.lengths[i] < 1) throw Error("target lengths must be positive", "e.g. --lengths 1000,2000,4000");
        if (i > 0 && p.lengths[i] <= p.lengths[i - 1])
            throw Error("target lengths must be strictly increasing", "e.g. --lengths 1000,2000,4000");
    }
    return p;
}

std::vector<int64_t> calibration_window_starts(int64_t P, int64_t train_len, int samples) {
    if (P < train_len + kCalibrationWindowOffset)
        throw Error("the calibration stream has " + std::to_string(P) + " tokens, fewer than train_len + " +
                        std::to_string(kCalibrationWindowOffset) + " = " +
                        std::to_string(train_len + kCalibrationWindowOffset),
                    "use a longer calibration text or a smaller --train-len");
    auto starts_for = [&](int s) {
        std::vector<int64_t> out;
        for (int i = 0; i < s; ++i)  // int(P/samples·i + 10)
            out.push_back(static_cast<int64_t>(static_cast<double>(P) / s * i +
                                               static_cast<double>(kCalibrationWindowOffset)));
        return out;
    };
    for (int s = samples; s >= 1; --s) {
        std::vector<int64_t> st = starts_for(s);
        if (st.back() + train_len <= P) return st;
    }
    return starts_for(1);  // unreachable: s = 1 fits by the check above
}

namespace {

// A (C × n_a) of a layer as floats: Mamba-1 A[E, N] (n_a = N), Mamba-2 A[H] (n_a = 1).
int64_t decay_width(const Model& model) {
    return model.config.arch == Arch::Mamba1 ? model.config.d_state : 1;
}

// Gathers each layer's raw Δ of one window into a T × C buffer; when a layer is complete, reduces it to its
// WindowStats, then frees the buffer (with chunk_tokens ≥ T only one layer's buffer is alive at a time).
class CalibrationObserver : public ScanObserver {
  public:
    CalibrationObserver(const Model& model, const CalibrationParams& p)
        : model_(model),
          p_(p),
          C_(model.config.channels()),
          buffers_(static_cast<size_t>(model.config.n_layer)),
          rows_(buffers_.size(), 0),
          stats_(buffers_.size()) {}

    void on_delta(const DeltaBlock& raw, const DeltaBlock& /*used*/) override {
        MS_CHECK(raw.channels == C_, "calibration: Δ block with an unexpected channel count");
        MS_CHECK(raw.layer >= 0 && raw.layer < static_cast<int>(buffers_.size()),
                 "calibration: bad layer index");
        const size_t l = static_cast<size_t>(raw.layer);
        const int64_t T = p_.train_len;
        auto& buf = buffers_[l];
        if (buf.empty()) buf.resize(static_cast<size_t>(T * C_));
        for (int64_t r = 0; r < raw.rows; ++r) {
            const int64_t t = raw.positions ? raw.positions[r] : rows_[l];
            MS_CHECK(t >= 0 && t < T, "calibration: Δ position outside the window");
            std::copy(raw.data + r * raw.ld, raw.data + r * raw.ld + C_, buf.begin() + t * C_);
            ++rows_[l];
        }
        if (rows_[l] == T) {
            const Tensor& A = model_.layers[l].A;
            const std::span<const float> a(A.data, static_cast<size_t>(A.numel()));
            stats_[l] = window_stats(T, C_, buf.data(), C_, a, decay_width(model_), p_.lengths, p_.clamp_top,
                                     p_.m1_decay);
            std::vector<float>().swap(buf);
        }
    }
    bool complete() const {
        return std::all_of(rows_.begin(), rows_.end(), [&](int64_t r) { return r == p_.train_len; });
    }
    const std::vector<WindowStats>& stats() const { return stats_; }  // (n_layer)

  private:
    const Model& model_;
    const CalibrationParams& p_;
    int64_t C_;
    std::vector<std::vector<float>> buffers_;  // per layer (T × C)
    std::vector<int64_t> rows_;
    std::vector<WindowStats> stats_;  // per layer, once complete
};

}  // namespace

CalibrationJob::CalibrationJob(const Model& model, std::span<const int32_t> stream,
                               const CalibrationParams& params)
    : model_(model), stream_(stream), p_(resolve_calibration_params(model.config, params)) {
    check_ids(model, stream);
    starts_ = calibration_window_starts(static_cast<int64_t>(stream.size()), p_.train_len, p_.samples);
    for (int64_t l = 0; l < model.config.n_layer; ++l)
        agg_.emplace_back(model.config.channels(), static_cast<int64_t>(p_.lengths.size()), p_.aggregate);
}

double CalibrationJob::unit_cost(size_t) const {
    return static_cast<double>(p_.train_len);
}

std::string CalibrationJob::unit_name(size_t u) const {
    return "calibration window " + std::to_string(u + 1) + "/" + std::to_string(starts_.size()) +
           " at tokens " + std::to_string(starts_[u]) + ".." + std::to_string(starts_[u] + p_.train_len);
}

std::string CalibrationJob::fingerprint() const {
    std::string f = "calibrate\nmodel " + model_.name + " " + arch_name(model_.config.arch) + " " +
                    std::to_string(model_.config.n_layer) + "x" + std::to_string(model_.config.channels()) +
                    "\ntrain_len " + std::to_string(p_.train_len) + "\nsamples " + std::to_string(p_.samples);
    char buf[64];
    std::snprintf(buf, sizeof buf, "\nclamp_top %.17g", p_.clamp_top);
    f += buf;
    f += "\nlengths";
    for (int64_t L : p_.lengths) (f += ' ') += std::to_string(L);
    f += std::string("\naggregate ") + aggregate_name(p_.aggregate) + "\nm1_decay " +
         m1_decay_name(p_.m1_decay) + "\ndevice " + std::to_string(static_cast<int>(p_.device)) +
         "\nstream " +
         sha256_hex(std::string_view(reinterpret_cast<const char*>(stream_.data()), stream_.size_bytes()));
    return f;
}

UnitResult CalibrationJob::compute_unit(size_t u, const ProgressFn& progress) const {
    MS_CHECK(u < starts_.size(), "calibration: unit index out of range");
    const std::string stage =
        "calibration window " + std::to_string(u + 1) + "/" + std::to_string(starts_.size());
    report_progress(progress, 0.0, stage);
    CalibrationObserver obs(model_, p_);
    ForwardOptions opt;
    opt.observer = &obs;
    opt.device = p_.device;
    opt.stop_after_layer = static_cast<int>(model_.config.n_layer - 1);
    opt.chunk_tokens = std::max<int64_t>(p_.train_len, 1);  // whole window per chunk: one live layer buffer
    opt.progress = [&](double f, std::string_view) { return !progress || progress(f, stage); };
    run_forward(model_, stream_.subspan(static_cast<size_t>(starts_[u]), static_cast<size_t>(p_.train_len)),
                opt);
    MS_CHECK(obs.complete(), "calibration: the forward did not report Δ for every layer and token");
    // per layer: log_decay (C), delta_sum (C), threshold (n_len × C), alpha (n_len × C)
    ByteWriter w;
    for (const WindowStats& s : obs.stats()) {
        w.f64s(s.log_decay);
        w.f64s(s.delta_sum);
        w.f64s(s.threshold);
        w.f64s(s.alpha);
    }
    return w.take();
}

void CalibrationJob::reduce(size_t u, const UnitResult& result) {
    MS_CHECK(u == reduced_, "calibration: units must be reduced in order");
    ByteReader r(result);
    const int64_t C = model_.config.channels(), n_len = static_cast<int64_t>(p_.lengths.size());
    for (auto& agg : agg_) {
        WindowStats s;
        s.channels = C;
        s.n_lengths = n_len;
        s.log_decay = r.f64s();
        s.delta_sum = r.f64s();
        s.threshold = r.f64s();
        s.alpha = r.f64s();
        if (static_cast<int64_t>(s.log_decay.size()) != C || static_cast<int64_t>(s.delta_sum.size()) != C ||
            static_cast<int64_t>(s.threshold.size()) != n_len * C ||
            static_cast<int64_t>(s.alpha.size()) != n_len * C)
            throw Error(
                "calibration: a window's result has the wrong shape (a checkpoint of another model?)");
        agg.add(s);
    }
    if (!r.done()) throw Error("calibration: a window's result has trailing bytes");
    ++reduced_;
}

Calibration CalibrationJob::result() const {
    MS_CHECK(reduced_ == starts_.size(), "calibration: result() before every window was reduced");
    const int64_t n_layer = model_.config.n_layer;
    Calibration cal;
    cal.params = p_;
    cal.samples_used = static_cast<int64_t>(starts_.size());
    cal.stream_tokens = static_cast<int64_t>(stream_.size());
    cal.model_name = model_.name;
    cal.arch = arch_name(model_.config.arch);
    cal.n_layer = n_layer;
    cal.channels = model_.config.channels();
    cal.lengths = p_.lengths;
    for (int64_t l = 0; l < n_layer; ++l) {
        const WindowStats w = agg_[static_cast<size_t>(l)].result();
        cal.log_decay.insert(cal.log_decay.end(), w.log_decay.begin(), w.log_decay.end());
        cal.delta_sum.insert(cal.delta_sum.end(), w.delta_sum.begin(), w.delta_sum.end());
        cal.thresholds.insert(cal.thresholds.end(), w.threshold.begin(), w.threshold.end());
        cal.alpha.insert(cal.alpha.end(), w.alpha.begin(), w.alpha.end());
    }
    return cal;
}

Calibration calibrate(const Model& model, std::span<const int32_t> stream, const CalibrationParams& params,
                      const ProgressFn& progress) {
    CalibrationJob job(model, stream, params);
    run_units_serially(job, progress);
    report_progress(progress, 1.0, "calibration done");
    return job.result();
}

}  // namespace mambascope
