// calibration.h: a LongMamba calibration (method doc §2.3, §8.3): how it is computed from a model and a token
// stream, stored in HDF5, validated on load, and turned into the forward's Δ filter (§8.5).
//
// Design decision: a calibration is self-describing: the file holds every parameter and the identity of the
// model it was computed for (name, arch, n_layer, channels, train_len), and load_calibration() refuses
// anything that is not exactly our format (missing datasets, wrong shapes, NaN) with an Error that says what
// to do. The maths are in longmamba.h; this file only runs the model and moves arrays.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "mambascope/forward.h"
#include "mambascope/longmamba.h"
#include "mambascope/model.h"
#include "mambascope/progress.h"
#include "mambascope/work_units.h"

namespace mambascope {

constexpr const char* kCalibrationFormat = "mambascope-calibration";
constexpr int64_t kCalibrationFormatVersion = 1;

struct CalibrationParams {
    int64_t train_len = -1;                    // window length L_cal; < 0 → the model's train_len
    int samples = kDefaultCalibrationSamples;  // capped to what the stream allows
    double clamp_top = kDefaultClampTop;
    std::vector<int64_t> lengths;  // target lengths λ, ascending; empty → official_lengths()
    Aggregate aggregate = Aggregate::Mean;
    M1Decay m1_decay = M1Decay::Slowest;
    Device device = Device::Cpu;  // where the windows run (Auto/Cuda fall back to the CPU); not stored
};

struct Calibration {
    CalibrationParams params;   // resolved (train_len, lengths filled in)
    int64_t samples_used = 0;   // windows actually aggregated
    int64_t stream_tokens = 0;  // P
    // model identity
    std::string model_name;
    std::string arch;  // "mamba" / "mamba2"
    int64_t n_layer = 0;
    int64_t channels = 0;            // C
    std::vector<int64_t> lengths;    // (n_len) = params.lengths
    std::vector<double> log_decay;   // (n_layer, C)
    std::vector<double> delta_sum;   // (n_layer, C)
    std::vector<double> thresholds;  // (n_layer, n_len, C)
    std::vector<double> alpha;       // (n_layer, n_len, C)

    int64_t n_lengths() const { return static_cast<int64_t>(lengths.size()); }
    double threshold(int64_t layer, int64_t li, int64_t c) const {
        return thresholds[static_cast<size_t>((layer * n_lengths() + li) * channels + c)];
    }
};

// Fills model-dependent defaults and checks the parameters (clamp_top in (0,1], samples ≥ 1, lengths
// ascending > 0).
CalibrationParams resolve_calibration_params(const ModelConfig& config, CalibrationParams p);

// Window start offsets (§8.3): int(P/samples·i + 10) for i = 0..samples−1, with samples capped so that every
// window fits in the stream. Throws an Error when P < train_len + 10.
std::vector<int64_t> calibration_window_starts(int64_t stream_tokens, int64_t train_len, int samples);

// Runs the model on each window (stopping after the last layer, no head), captures raw Δ per layer and
// aggregates. Progress per window; cancellable (throws Cancelled).
Calibration calibrate(const Model& model, std::span<const int32_t> stream, const CalibrationParams& params,
                      const ProgressFn& progress = {});

// calibrate() as work units (work_units.h): unit u is window u of calibration_window_starts (cost train_len
// tokens); its result is the window's statistics of every layer (window_stats); reduce() feeds them to the
// per-layer aggregators in window order, as the single loop did.
class CalibrationJob : public UnitJob {
  public:
    // Resolves and checks the parameters and the stream (the errors calibrate() gives).
    CalibrationJob(const Model& model, std::span<const int32_t> stream, const CalibrationParams& params);
    size_t unit_count() const override { return starts_.size(); }
    double unit_cost(size_t u) const override;
    std::string unit_name(size_t u) const override;
    std::string fingerprint() const override;
    UnitResult compute_unit(size_t u, const ProgressFn& progress) const override;
    void reduce(size_t u, const UnitResult& result) override;
    Calibration result() const;  // once every unit was reduced

  private:
    const Model& model_;
    std::span<const int32_t> stream_;
    CalibrationParams p_;               // resolved
    std::vector<int64_t> starts_;       // window starts
    std::vector<StatsAggregator> agg_;  // (n_layer)
    size_t reduced_ = 0;
};

// Writes /log_decay, /delta_sum (float64 [n_layer, C]), /thresholds, /alpha (float64 [n_layer, n_len, C]),
// /lengths (int64 [n_len]) and root attributes (format, format_version, every parameter, model identity).
// Atomic.
void save_calibration(const std::filesystem::path& path, const Calibration& cal);
// Reads and validates a calibration file.
Calibration load_calibration(const std::filesystem::path& path);
// Throws an Error when `cal` was computed for a model of another shape (n_layer, channels).
void check_calibration_matches(const Calibration& cal, const ModelConfig& config);

// Global channels of a calibration (§8.4): (n_layer, C), 1 = global.
std::vector<uint8_t> global_mask(const Calibration& cal, double c);

// LongMamba's filter for a prefill of S tokens (§8.5): empty when S ≤ activate_above (default: train_len);
// else threshold[l][c] = b·θ_l,c(key) for global channels, −inf for local ones, key =
// nearest_length_index(lengths, S).
DeltaFilter make_longmamba_filter(const Calibration& cal, const FilterParams& params, int64_t S);

}  // namespace mambascope
