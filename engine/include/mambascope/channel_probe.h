// channel_probe.h: per-layer, per-channel LongMamba statistics of one forward run, gathered as a ScanObserver
// (method doc §8.2, §8.6, §8.7): Σ used Δ, Σ raw Δ, the log decay of the used Δ, critical-token counts, and Δ
// windows (raw and used) for chosen channels over a chosen position range.
//
// Design decision (critical tokens, §8.6): a token is critical in a channel iff raw Δ > threshold[l][c] of a
// reference filter with a finite threshold for that channel (global channels). Give the probe the filter the
// run uses, and "critical" is exactly "survived the filter" (raw > θ ⇔ used == raw > 0); give it the filter a
// LongMamba run *would* use, and an unfiltered run reports the tokens that would survive. Without a reference
// filter, or for channels whose threshold is −inf (local), the count is 0. Memory is O(n_layer·C) plus the
// requested windows.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "mambascope/forward.h"
#include "mambascope/longmamba.h"
#include "mambascope/model.h"

namespace mambascope {

// Largest Δ window (positions) a probe stores per chosen channel.
constexpr int64_t kProbeMaxWindowTokens = int64_t{1} << 20;

struct ProbeOptions {
    const DeltaFilter* reference = nullptr;  // thresholds defining critical tokens (may be the run's filter)
    M1Decay m1_decay = M1Decay::Slowest;     // how log_decay reduces Mamba-1's N states (§8.2)
    std::vector<std::pair<int, int64_t>> window_channels;  // (layer, channel) pairs whose Δ window is stored
    int64_t window_begin = 0;                              // [window_begin, window_end) in original positions
    int64_t window_end = 0;
};

// The stored Δ of one chosen channel over [window_begin, window_end).
struct ChannelWindow {
    int layer = 0;
    int64_t channel = 0;
    std::vector<int64_t> positions;  // positions that reached the layer (all, unless decimated)
    std::vector<float> raw;          // aligned with positions
    std::vector<float> used;
    std::vector<int64_t> critical;  // positions in the window with raw > reference threshold
};

class ChannelProbe : public ScanObserver {
  public:
    ChannelProbe(const Model& model, ProbeOptions options = {});
    void on_delta(const DeltaBlock& raw, const DeltaBlock& used) override;

    int64_t n_layer() const { return n_layer_; }
    int64_t channels() const { return C_; }
    // (n_layer × C) row-major, double
    const std::vector<double>& sum_used() const { return sum_used_; }
    const std::vector<double>& sum_raw() const { return sum_raw_; }
    std::vector<double> log_decay_used() const;  // A_c·Σ used Δ (slowest / Mamba-2) or Σ_t ln mean_n exp(Δ·A)
    const std::vector<int64_t>& critical_count() const { return critical_; }
    const std::vector<int64_t>& tokens() const { return tokens_; }  // per layer: positions that reached it
    const std::vector<ChannelWindow>& windows() const { return windows_; }

  private:
    const Model& model_;
    ProbeOptions opt_;
    int64_t n_layer_, C_, n_a_;
    std::vector<std::vector<double>> rate_;  // per layer, per channel: A_c for the slowest reduction
    std::vector<double> sum_used_, sum_raw_, mean_log_decay_;
    std::vector<int64_t> critical_, tokens_;
    std::vector<ChannelWindow> windows_;
};

}  // namespace mambascope
