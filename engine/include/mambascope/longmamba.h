// longmamba.h: LongMamba's calibration maths and filter policy as pure functions over Δ arrays (method doc
// §2.3, §2.4, §8.2–§8.5).
//
// Design decision: everything here is a pure function of plain arrays (no model, no files), so each equation
// is unit-tested on hand-made Δ; the driver that runs the model (calibration.h) and the file format only glue
// these together. Sums are accumulated in double. A "channel" is a Mamba-2 head or a Mamba-1 inner channel
// (§8.1); A is passed as a (C × n_a) matrix: n_a = 1 for Mamba-2 (A_h), n_a = N for Mamba-1 (A[c, n]).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace mambascope {

// How Mamba-1's N per-state decays reduce to one channel decay (method doc §8.2). Mamba-2 ignores it.
enum class M1Decay { Slowest, Mean };
// How per-window statistics are combined over the calibration windows (method doc §8.3).
enum class Aggregate { Mean, Max };

const char* m1_decay_name(M1Decay d);             // "slowest" / "mean"
const char* aggregate_name(Aggregate a);          // "mean" / "max"
M1Decay parse_m1_decay(const std::string& s);     // throws Error on anything else
Aggregate parse_aggregate(const std::string& s);  // throws Error on anything else

// Default clampTop ratio (method doc §2.3 step 3: the release script loops 0.10/0.15/0.20; we take 0.10).
constexpr double kDefaultClampTop = 0.1;
// Default number of calibration windows (§2.3, release: 100).
constexpr int kDefaultCalibrationSamples = 100;
// Offset of the first calibration window in the stream (§2.3 step 1: `int(P/100·idx + 10)`).
constexpr int64_t kCalibrationWindowOffset = 10;
// Default global-channel threshold c (§8.4, release CLI `--c`).
constexpr double kDefaultC = 0.05;
// Default threshold multiplier b (§8.5).
constexpr double kDefaultB = 1.0;

// The official table of target lengths λ (§2.3 step 6): 1000..8000 step 1000, 10000, ..., 192000.
std::vector<int64_t> official_lengths();
// The official key string of a length: f"{int(λ/1e3)}k".
std::string length_key(int64_t length);

// clampTop (§2.3 step 3): k = max(1, int(n·clamp_top)); v = k-th largest value; returns min(Δ, v)
// elementwise. clamp_top in (0, 1]; n ≥ 1.
std::vector<double> clamp_top(std::span<const float> delta, double clamp_top);

// Linear resample of `u` (length L) to length λ, exactly as torch.nn.functional.interpolate(mode='linear',
// align_corners=False): s = max(0, (i+0.5)·L/λ − 0.5), i0 = floor(s), i1 = min(i0+1, L−1),
// v_i = (1−(s−i0))·u_i0 + (s−i0)·u_i1.
std::vector<double> resample_linear(std::span<const double> u, int64_t length);

struct ThresholdAlpha {
    double threshold = 0;  // θ(λ)
    double alpha = 1;      // α(λ)
};

// Threshold and alpha of one channel for one target length λ (§2.3 step 6). `sorted_desc` = the clamped Δ of
// the window sorted descending (length L = train_len), `delta_sum` = S = its sum. λ ≤ L → θ = 0, α = 1.
// Otherwise v = resample_linear(u, λ), cum_i = Σ_{j≤i} v_j, i* = first i with cum_i > S (strict; none → 0), K
// = i*+1, θ = v[K], α = min(K/λ, 1). Guard (the official code would index out of range): K ≥ λ → θ = v[λ−1].
// Only the prefix of v up to the crossing is computed (v is non-increasing and the crossing is found early).
ThresholdAlpha threshold_alpha(std::span<const double> sorted_desc, double delta_sum, int64_t length);

// Per-window, per-channel statistics of one layer (§2.3 steps 3–6, §8.2).
struct WindowStats {
    int64_t channels = 0;
    int64_t n_lengths = 0;
    std::vector<double>
        log_decay;  // (C): natural log of the channel's cumulative decay over the window (≤ 0)
    std::vector<double> delta_sum;  // (C): S = Σ_t Δ̃_t,c
    std::vector<double> threshold;  // (n_lengths, C): θ_c(λ)
    std::vector<double> alpha;      // (n_lengths, C): α_c(λ)
};

// Statistics of one layer over one window. delta (T × C, row stride ld ≥ C; raw Δ after softplus),
// A (C × n_a, row-major; n_a = 1: Mamba-2 head scalars, n_a = N: Mamba-1), `lengths` the target lengths.
// log_decay: n_a = 1 → A_c·ΣΔ̃; Mamba-1 `Slowest` → max_n A[c,n]·ΣΔ̃; `Mean` → Σ_t ln(mean_n exp(Δ̃_t,c·A[c,n]))
// (stable: max + log-mean-exp of the shifted terms). T must be ≥ 1. Parallel over channels.
WindowStats window_stats(int64_t T, int64_t C, const float* delta, int64_t ld, std::span<const float> A,
                         int64_t n_a, std::span<const int64_t> lengths, double clamp_top, M1Decay m1_decay);

// The per-channel A used for decay-like quantities that need one scalar per channel (receptive fields, §8.7):
// n_a = 1 → A_c; n_a = N → max_n A[c,n] (the slowest state; matches log_decay under `slowest`).
std::vector<double> channel_decay_rate(std::span<const float> A, int64_t channels, int64_t n_a);

// Streaming aggregation of WindowStats over windows for one layer (§8.3): Mean → arithmetic mean of
// delta_sum, threshold, alpha and log-mean-exp of log_decay (ln(mean_i exp(log_decay_i)), computed stably
// online); Max → elementwise max of everything.
class StatsAggregator {
  public:
    StatsAggregator(int64_t channels, int64_t n_lengths, Aggregate how);
    void add(const WindowStats& w);
    int64_t count() const { return count_; }
    WindowStats result() const;  // throws Error when nothing was added

  private:
    int64_t channels_, n_lengths_;
    Aggregate how_;
    int64_t count_ = 0;
    std::vector<double> lse_max_, lse_sum_;  // online log-sum-exp of log_decay (Mean)
    WindowStats acc_;
};

// Index of the tabulated length nearest to S (§2.4 `key`); ties → the smaller λ; S above the table → the
// last. `lengths` ascending, non-empty.
size_t nearest_length_index(std::span<const int64_t> lengths, int64_t S);

// Global channels (§8.4): log_decay > ln(c). log_decay (n_layer × C) flattened; returns the same shape.
std::vector<uint8_t> global_mask(std::span<const double> log_decay, double c);

// Parameters of the online filter (§8.5).
struct FilterParams {
    double c = kDefaultC;         // global iff log_decay > ln c
    double b = kDefaultB;         // threshold multiplier
    int64_t activate_above = -1;  // filter only when S > this; < 0: the calibration's train_len
};

}  // namespace mambascope
