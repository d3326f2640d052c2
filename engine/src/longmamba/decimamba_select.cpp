// DeciMamba token selection (method doc §4 steps 2–4, §8.8): pure functions. See decimamba.h.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "mambascope/decimamba.h"
#include "mambascope/error.h"

namespace mambascope {

DeciParams resolve_deci_params(const ModelConfig& config, DeciParams p) {
    if (p.layers.empty()) p.layers = {static_cast<int>(config.n_layer / 2)};
    if (p.L_base < 0) p.L_base = config.train_len;
    for (size_t i = 0; i < p.layers.size(); ++i) {
        if (p.layers[i] < 0 || p.layers[i] >= config.n_layer)
            throw Error("DeciMamba layer " + std::to_string(p.layers[i]) + " out of range",
                        "the model has layers 0.." + std::to_string(config.n_layer - 1));
        if (i > 0 && p.layers[i] <= p.layers[i - 1])
            throw Error("DeciMamba layers must be strictly increasing", "e.g. --deci-layers 12,20");
    }
    if (p.L_base < 1) throw Error("DeciMamba L_base must be ≥ 1");
    if (!(p.beta > 0)) throw Error("DeciMamba β must be > 0");
    if (p.min_seq_len < 0 || p.resp_len < 0) throw Error("DeciMamba min_seq_len and resp_len must be ≥ 0");
    return p;
}

int64_t decimation_keep_count(int64_t T_dec, int64_t L_base, double beta, int step, int64_t min_seq_len) {
    MS_CHECK(T_dec >= 0 && step >= 0, "decimation_keep_count: negative size");
    const double target = static_cast<double>(L_base) * std::pow(beta, step);  // L_base·β^s
    const int64_t by_schedule =
        static_cast<int64_t>(std::floor(std::min(target, static_cast<double>(T_dec))));
    const int64_t K = std::max(by_schedule, min_seq_len);
    return std::min(K, T_dec);
}

std::vector<int64_t> select_decimated(std::span<const int64_t> positions, std::span<const double> scores,
                                      int64_t resp_len, int64_t L_base, double beta, int step,
                                      int64_t min_seq_len) {
    MS_CHECK(positions.size() == scores.size(), "select_decimated: positions and scores differ in length");
    const int64_t T = static_cast<int64_t>(positions.size());
    const int64_t T_dec = std::max<int64_t>(T - resp_len, 0);
    const int64_t K = decimation_keep_count(T_dec, L_base, beta, step, min_seq_len);
    std::vector<int64_t> order(static_cast<size_t>(T_dec));
    std::iota(order.begin(), order.end(), 0);
    // top-K by score, ties → earlier position (stable on index)
    std::partial_sort(order.begin(), order.begin() + K, order.end(), [&](int64_t a, int64_t b) {
        const double sa = scores[static_cast<size_t>(a)], sb = scores[static_cast<size_t>(b)];
        return sa > sb || (sa == sb && a < b);
    });
    order.resize(static_cast<size_t>(K));
    std::sort(order.begin(), order.end());
    std::vector<int64_t> kept;
    kept.reserve(static_cast<size_t>(K + T - T_dec));
    for (int64_t i : order) kept.push_back(positions[static_cast<size_t>(i)]);
    for (int64_t i = T_dec; i < T; ++i) kept.push_back(positions[static_cast<size_t>(i)]);  // resp tokens
    return kept;
}

}  // namespace mambascope
