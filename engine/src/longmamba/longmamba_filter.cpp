// LongMamba's online filter policy (method doc §8.4, §8.5) and calibration/model matching. See calibration.h.
#include <limits>
#include <string>

#include "mambascope/calibration.h"
#include "mambascope/error.h"

namespace mambascope {

// Identity check: arch, n_layer and channels must match (channels is d_inner for Mamba-1, the head count for
// Mamba-2). d_state is not stored in a calibration, so it cannot be compared. The model_name is NOT compared:
// it is the model directory's name, which legitimately changes when a directory is renamed or copied, and
// there is no warning channel here; a calibration of a different model of the same shape is the user's call.
// An empty arch (a Calibration built in memory, not loaded; load_calibration requires it) is not compared.
void check_calibration_matches(const Calibration& cal, const ModelConfig& config) {
    if (!cal.arch.empty() && cal.arch != arch_name(config.arch))
        throw Error("the calibration was computed for a " + cal.arch + " model ('" + cal.model_name +
                        "'), this model is " + arch_name(config.arch),
                    "calibrate this model with `mambascope-cli calibrate`");
    if (cal.n_layer != config.n_layer || cal.channels != config.channels())
        throw Error("the calibration was computed for a model with " + std::to_string(cal.n_layer) +
                        " layers × " + std::to_string(cal.channels) + " channels (" + cal.arch + " '" +
                        cal.model_name + "'), this model has " + std::to_string(config.n_layer) + " × " +
                        std::to_string(config.channels()) + " (" + arch_name(config.arch) + ")",
                    "calibrate this model with `mambascope-cli calibrate`");
}

std::vector<uint8_t> global_mask(const Calibration& cal, double c) {
    return global_mask(cal.log_decay, c);
}

DeltaFilter make_longmamba_filter(const Calibration& cal, const FilterParams& params, int64_t S) {
    const int64_t activate_above = params.activate_above >= 0 ? params.activate_above : cal.params.train_len;
    DeltaFilter filter;
    if (S <= activate_above) return filter;  // vanilla below the activation length
    MS_CHECK(!cal.lengths.empty(), "LongMamba filter: the calibration has no target lengths");
    MS_CHECK(params.b >= 0, "LongMamba filter: b must be ≥ 0");
    const int64_t li = static_cast<int64_t>(nearest_length_index(cal.lengths, S));
    const std::vector<uint8_t> global = global_mask(cal, params.c);
    filter.threshold.assign(
        static_cast<size_t>(cal.n_layer),
        std::vector<float>(static_cast<size_t>(cal.channels), -std::numeric_limits<float>::infinity()));
    for (int64_t l = 0; l < cal.n_layer; ++l)
        for (int64_t c = 0; c < cal.channels; ++c)
            if (global[static_cast<size_t>(l * cal.channels + c)])
                filter.threshold[static_cast<size_t>(l)][static_cast<size_t>(c)] =
                    static_cast<float>(params.b * cal.threshold(l, li, c));  // b·θ(key)
    return filter;
}

}  // namespace mambascope
