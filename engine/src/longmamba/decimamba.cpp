// DeciMamba baseline (method doc §4, §8.8). See decimamba.h.
#include "mambascope/decimamba.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "mambascope/error.h"

namespace mambascope {

namespace {

// Collects (position, ‖raw Δ_t,:‖₂) for one layer.
class DeltaNormObserver : public ScanObserver {
  public:
    explicit DeltaNormObserver(int layer) : layer_(layer) {}
    void on_delta(const DeltaBlock& raw, const DeltaBlock& /*used*/) override {
        if (raw.layer != layer_) return;
        for (int64_t r = 0; r < raw.rows; ++r) {
            double s = 0;
            for (int64_t c = 0; c < raw.channels; ++c) s += static_cast<double>(raw.at(r, c)) * raw.at(r, c);
            positions.push_back(raw.positions ? raw.positions[r] : static_cast<int64_t>(positions.size()));
            scores.push_back(std::sqrt(s));
        }
    }
    std::vector<int64_t> positions;
    std::vector<double> scores;

  private:
    int layer_;
};

}  // namespace

ForwardResult run_decimamba(const Model& model, std::span<const int32_t> ids, const DeciParams& params_in,
                            const HeadRequest& head, const ProgressFn& progress,
                            std::map<int, std::vector<int64_t>>* kept_out, ScanObserver* observer,
                            ModelState* final_state, const LayerInput* prefix) {
    const DeciParams p = resolve_deci_params(model.config, params_in);
    check_ids(model, ids);
    if (prefix) {
        // Every layer below the first decimating one sees all positions and no filter: the vanilla forward's
        // work, which `prefix` carries (its residual stream entering prefix->layer).
        MS_CHECK(prefix->layer <= p.layers.front(),
                 "DeciMamba: the shared prefix ends above the first decimating layer");
        MS_CHECK(!final_state, "DeciMamba: a shared prefix leaves the state of the layers below it unset");
    }
    std::map<int, std::vector<int64_t>> keep;
    const double passes = static_cast<double>(p.layers.size() + 1);
    double start = 0;
    for (size_t step = 0; step < p.layers.size(); ++step) {
        const int layer = p.layers[step];
        DeltaNormObserver obs(layer);
        ForwardOptions opt;
        opt.observer = &obs;
        opt.keep_positions = keep.empty() ? nullptr : &keep;
        opt.stop_after_layer = layer;
        opt.start_from = prefix;
        const std::string stage = "DeciMamba scoring layer " + std::to_string(layer);
        opt.progress = [&](double f, std::string_view) {
            if (!progress) return true;
            return progress((start + f) / passes, stage);
        };
        run_forward(model, ids, opt);
        MS_CHECK(!obs.positions.empty(), "DeciMamba: no Δ observed at layer " + std::to_string(layer));
        keep[layer] = select_decimated(obs.positions, obs.scores, p.resp_len, p.L_base, p.beta,
                                       static_cast<int>(step), p.min_seq_len);
        start += 1;
    }
    ForwardOptions opt;
    opt.keep_positions = &keep;
    opt.observer = observer;  // probes see the final, decimated pass (from prefix->layer up, with a prefix)
    opt.start_from = prefix;
    opt.progress = [&](double f, std::string_view) {
        if (!progress) return true;
        return progress((start + f) / passes, "DeciMamba final pass");
    };
    ModelState st = make_state(model);
    ForwardResult result = run_prefill(model, ids, st, opt, head);
    if (final_state) *final_state = std::move(st);
    if (kept_out) *kept_out = std::move(keep);
    return result;
}

}  // namespace mambascope
