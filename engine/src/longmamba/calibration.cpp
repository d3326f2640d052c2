// LongMamba calibration driver and filter (method doc §2.3, §8.3–§8.5). See calibration.h.
#include "mambascope/calibration.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "mambascope/error.h"

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

// Gathers each layer's raw Δ of one window into a T × C buffer; when a layer is complete, reduces it to
// WindowStats and feeds the layer's aggregator, then frees the buffer (with chunk_tokens ≥ T only one layer's
// buffer is alive at a time).
class CalibrationObserver : public ScanObserver {
  public:
    CalibrationObserver(const Model& model, const CalibrationParams& p, std::vector<StatsAggregator>& agg)
        : model_(model),
          p_(p),
          agg_(agg),
          C_(model.config.channels()),
          buffers_(static_cast<size_t>(model.config.n_layer)),
          rows_(buffers_.size(), 0) {}

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
            agg_[l].add(window_stats(T, C_, buf.data(), C_, a, decay_width(model_), p_.lengths, p_.clamp_top,
                                     p_.m1_decay));
            std::vector<float>().swap(buf);
        }
    }
    void reset() {
        for (auto& b : buffers_) std::vector<float>().swap(b);
        std::fill(rows_.begin(), rows_.end(), 0);
    }
    bool complete() const {
        return std::all_of(rows_.begin(), rows_.end(), [&](int64_t r) { return r == p_.train_len; });
    }

  private:
    const Model& model_;
    const CalibrationParams& p_;
    std::vector<StatsAggregator>& agg_;
    int64_t C_;
    std::vector<std::vector<float>> buffers_;  // per layer (T × C)
    std::vector<int64_t> rows_;
};

}  // namespace

Calibration calibrate(const Model& model, std::span<const int32_t> stream, const CalibrationParams& params,
                      const ProgressFn& progress) {
    const CalibrationParams p = resolve_calibration_params(model.config, params);
    check_ids(model, stream);
    const int64_t P = static_cast<int64_t>(stream.size());
    const std::vector<int64_t> starts = calibration_window_starts(P, p.train_len, p.samples);
    const int64_t n_layer = model.config.n_layer, C = model.config.channels();
    const int64_t n_len = static_cast<int64_t>(p.lengths.size());

    std::vector<StatsAggregator> agg;
    for (int64_t l = 0; l < n_layer; ++l) agg.emplace_back(C, n_len, p.aggregate);
    CalibrationObserver obs(model, p, agg);

    const double n_win = static_cast<double>(starts.size());
    for (size_t i = 0; i < starts.size(); ++i) {
        const std::string stage =
            "calibration window " + std::to_string(i + 1) + "/" + std::to_string(starts.size());
        report_progress(progress, static_cast<double>(i) / n_win, stage);
        obs.reset();
        ForwardOptions opt;
        opt.observer = &obs;
        opt.device = p.device;
        opt.stop_after_layer = static_cast<int>(n_layer - 1);
        opt.chunk_tokens =
            std::max<int64_t>(p.train_len, 1);  // whole window per chunk: one live layer buffer
        opt.progress = [&](double f, std::string_view) {
            return progress ? progress((static_cast<double>(i) + f) / n_win, stage) : true;
        };
        run_forward(model, stream.subspan(static_cast<size_t>(starts[i]), static_cast<size_t>(p.train_len)),
                    opt);
        MS_CHECK(obs.complete(), "calibration: the forward did not report Δ for every layer and token");
    }
    report_progress(progress, 1.0, "calibration done");

    Calibration cal;
    cal.params = p;
    cal.samples_used = static_cast<int64_t>(starts.size());
    cal.stream_tokens = P;
    cal.model_name = model.name;
    cal.arch = arch_name(model.config.arch);
    cal.n_layer = n_layer;
    cal.channels = C;
    cal.lengths = p.lengths;
    for (int64_t l = 0; l < n_layer; ++l) {
        const WindowStats w = agg[static_cast<size_t>(l)].result();
        cal.log_decay.insert(cal.log_decay.end(), w.log_decay.begin(), w.log_decay.end());
        cal.delta_sum.insert(cal.delta_sum.end(), w.delta_sum.begin(), w.delta_sum.end());
        cal.thresholds.insert(cal.thresholds.end(), w.threshold.begin(), w.threshold.end());
        cal.alpha.insert(cal.alpha.end(), w.alpha.begin(), w.alpha.end());
    }
    return cal;
}

}  // namespace mambascope
