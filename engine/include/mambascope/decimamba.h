// decimamba.h: the DeciMamba baseline (method doc §4, §8.8): at each decimating layer, drop all but the top-K
// tokens by ‖Δ_t,:‖₂ for that layer and every later one (prefill only).
//
// Design decision: decimation is expressed through the forward's declarative `keep_positions` hook, so every
// backend runs it unchanged. The driver makes one pass per decimating layer (stopping after that layer, with
// the positions already decided for earlier decimating layers) to score tokens by the raw Δ norm of that
// layer, selects, and then runs the final pass with all the kept positions and the head. Cost: (#decimating
// layers + 1) partial forwards; with a shared prefix (below) each starts at the first decimating layer.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "mambascope/forward.h"
#include "mambascope/model.h"

namespace mambascope {

// Defaults (LongMamba's DeciMamba baselines, §4/§7: mamba-1.4b L_base 4000, β 1, layers [12]; adapted to the
// model: layers = [n_layer/2], L_base = train_len).
constexpr double kDeciDefaultBeta = 1.0;
constexpr int64_t kDeciDefaultMinSeqLen = 20;
constexpr int64_t kDeciDefaultRespLen = 100;

struct DeciParams {
    std::vector<int> layers;  // decimating layers, increasing; empty → {n_layer/2}
    int64_t L_base = -1;      // < 0 → the model's train_len
    double beta = kDeciDefaultBeta;
    int64_t min_seq_len = kDeciDefaultMinSeqLen;
    int64_t resp_len = kDeciDefaultRespLen;  // trailing tokens that are always kept (their logits are needed)
};
// Fills the model-dependent defaults and checks the rest (layers in range and increasing, β > 0, ...).
DeciParams resolve_deci_params(const ModelConfig& config, DeciParams p);

// Number of tokens kept among the first T_dec (§4 step 3): K = max(min(T_dec, ⌊L_base·β^s⌋), min_seq_len),
// then capped at T_dec (a min_seq_len larger than what can be dropped keeps everything).
int64_t decimation_keep_count(int64_t T_dec, int64_t L_base, double beta, int step, int64_t min_seq_len);

// Selection at one decimating layer (§4 steps 2–4). `positions` (T) are the original positions reaching the
// layer (increasing), `scores` (T) their ‖Δ_t,:‖₂. The first T_dec = max(T − resp_len, 0) compete: the top-K
// by score (ties → the earlier position) are kept; the last resp_len are always kept. Returns kept original
// positions, sorted.
std::vector<int64_t> select_decimated(std::span<const int64_t> positions, std::span<const double> scores,
                                      int64_t resp_len, int64_t L_base, double beta, int step,
                                      int64_t min_seq_len);

// Runs the model with DeciMamba decimation (prefill of the whole `ids`). `kept` (optional) receives, per
// decimating layer, the kept original positions. Progress covers all passes; cancellable.
ForwardResult run_decimamba(const Model& model, std::span<const int32_t> ids, const DeciParams& params,
                            const HeadRequest& head = {}, const ProgressFn& progress = {},
                            std::map<int, std::vector<int64_t>>* kept = nullptr,
                            ScanObserver* observer = nullptr, ModelState* final_state = nullptr,
                            const LayerInput* prefix = nullptr);
// `final_state` (optional) receives the state after the decimated prefill, for decoding after it
// (method doc §9.1: decimation is prefill-only; generated tokens go through every layer).
// `prefix` (optional, issue 16): the residual stream entering a layer at or below the first decimating one,
// captured by an unfiltered forward over the same ids (ForwardOptions::capture_input). Every pass starts
// there instead of recomputing the layers below, which compute exactly what the unfiltered forward did, so
// the result is the same bit for bit; `observer` then sees only the layers from prefix->layer up. Not with
// `final_state` (the skipped layers' state is not computed).

}  // namespace mambascope
