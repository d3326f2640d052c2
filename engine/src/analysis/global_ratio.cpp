// global_ratio.cpp: share of global channels per layer (method doc §8.4), for the GUI's Global ratio view.
#include <cmath>
#include <string>

#include "mambascope/analysis.h"
#include "mambascope/error.h"

namespace mambascope {

std::vector<double> global_ratio_per_layer(const Array<double>& log_decay, double c) {
    if (!(c > 0 && c < 1))
        throw Error("global ratio: c must be in (0, 1), got " + std::to_string(c),
                    "a channel is global when its log decay exceeds ln c (method doc §8.4)");
    if (log_decay.shape.size() != 2 || log_decay.numel() != int64_t(log_decay.data.size()))
        throw Error("global ratio: log decay must be a [n_layer, C] array");
    const int64_t L = log_decay.shape[0], C = log_decay.shape[1];
    const double ln_c = std::log(c);
    std::vector<double> out(size_t(L), 0.0);
    if (C == 0) return out;
    for (int64_t l = 0; l < L; ++l) {
        int64_t n = 0;
        for (int64_t k = 0; k < C; ++k) n += log_decay.at2(l, k) > ln_c ? 1 : 0;
        out[size_t(l)] = 100.0 * double(n) / double(C);
    }
    return out;
}

}  // namespace mambascope
