// receptive_field.h: receptive-field lengths of channels (method doc §8.7), exact on an in-memory Δ series
// and streaming with bounded memory over inputs of any length.
//
// Definition (§8.7): RF_c(t) = the smallest r ≥ 1 with A_c · Σ_{k=t−r+1..t} Δ_k,c < ln ε, computed on the Δ
// the scan actually used (so a LongMamba run gives LongMamba's receptive field); if no r ≤ t+1 gets there the
// length is censored at t+1 ("≥ t+1"). For Mamba-1, A_c is the slowest state's rate max_n A[c,n]
// (channel_decay_rate), the same reduction as log_decay under `--m1-decay slowest`.
//
// Design decision: the tracker stores per (layer, channel) prefix sums of Δ only at checkpoints every
// `stride` positions (plus the exact prefix at the requested positions), so memory is n_layer·C·(T/stride +
// queries) doubles. stride = 1 is exact; with stride > 1 the answer is an interval [lo, hi] whose width is <
// stride tokens (resolution = stride). The stride is the smallest that fits a memory budget.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "mambascope/forward.h"

namespace mambascope {

// Default memory budget of a ReceptiveFieldTracker's checkpoints (bytes).
constexpr int64_t kReceptiveFieldBudgetBytes = int64_t{256} << 20;

struct ReceptiveField {
    int64_t length = 0;     // exact RF (or the lower bound `lo` of an interval); = t+1 when censored
    int64_t upper = 0;      // upper bound of the interval; == length when exact
    bool censored = false;  // the decay never fell below ε inside [0, t]: RF ≥ t+1
};

// Exact RF of one channel at position t (0-based) from its Δ series (positions 0..t at least). a_c < 0, ε in
// (0,1).
ReceptiveField receptive_field(std::span<const float> delta, double a_c, double epsilon, int64_t t);

// Streaming RF for every (layer, channel). Feed it the *used* Δ block by block (as a ScanObserver, or via
// add()), positions increasing within a layer (positions absent because of decimation count as Δ = 0), then
// finish().
class ReceptiveFieldTracker : public ScanObserver {
  public:
    // rate: per layer, the per-channel A_c (channel_decay_rate). expected_tokens sizes the stride: the
    // smallest stride ≥ 1 with n_layer·C·(expected_tokens/stride + 1)·8 bytes ≤ budget_bytes. `queries`:
    // positions (any order) where an RF is wanted with an exact prefix sum; finish() adds the last position.
    ReceptiveFieldTracker(std::vector<std::vector<double>> rate, int64_t expected_tokens,
                          std::vector<int64_t> queries = {},
                          int64_t budget_bytes = kReceptiveFieldBudgetBytes);
    // A tracker with a given stride (1 = exact).
    static ReceptiveFieldTracker with_stride(std::vector<std::vector<double>> rate, int64_t stride,
                                             std::vector<int64_t> queries = {});

    void on_delta(const DeltaBlock& raw, const DeltaBlock& used) override;
    // rows × channels of layer `layer`, row r at original position positions[r] (null: consecutive from the
    // last).
    void add(int layer, int64_t rows, const float* delta, int64_t ld, const int64_t* positions);
    // All tokens seen: total_tokens = input length.
    void finish(int64_t total_tokens);

    int64_t stride() const { return stride_; }
    int64_t tokens() const { return total_; }
    int64_t memory_bytes() const;
    // RF of (layer, channel) at position t. Exact when stride == 1 or t+1 is a checkpoint; for a requested
    // query position with stride > 1, an interval. Throws Error for a position that was neither.
    ReceptiveField at(int layer, int64_t channel, int64_t t, double epsilon) const;

  private:
    ReceptiveFieldTracker(std::vector<std::vector<double>> rate, std::vector<int64_t> queries);
    struct Layer {
        std::vector<double> running;  // (C) Σ Δ over positions seen
        std::vector<double> cps;      // (n_checkpoints, C): prefix P(m·stride) = Σ_{k < m·stride} Δ_k
        std::vector<double> qsum;     // (n_queries, C): exact P(q+1)
        int64_t next_cp = 0;          // index m of the next checkpoint to record
        size_t next_q = 0;            // next query (sorted) to record
        int64_t next_pos = 0;         // expected next position when none are given
    };
    void advance_to(Layer& ly, int64_t position);  // record checkpoints/queries with prefix < position

    std::vector<std::vector<double>> rate_;
    int64_t channels_ = 0;
    int64_t stride_ = 1;
    std::vector<int64_t> queries_;  // sorted, unique
    std::vector<Layer> layers_;
    int64_t total_ = -1;
};

}  // namespace mambascope
