// Cost of LongMamba's per-window calibration statistics (window_stats: clampTop, sort, 25 threshold/alpha
// look-ups per channel) for one layer of real shapes, on random Δ. Prints seconds per layer-window.
// usage: bench_calibration_stats [T=2000] [C=5120] [n_a=16] [repeats=3]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "mambascope/longmamba.h"

using namespace mambascope;

int main(int argc, char** argv) {
    const int64_t T = argc > 1 ? std::atoll(argv[1]) : 2000;
    const int64_t C = argc > 2 ? std::atoll(argv[2]) : 5120;
    const int64_t n_a = argc > 3 ? std::atoll(argv[3]) : 16;
    const int repeats = argc > 4 ? std::atoi(argv[4]) : 3;
    std::mt19937 rng(1);
    std::lognormal_distribution<float> dist(-3.0f, 1.5f);  // softplus outputs: mostly small, heavy tail
    std::vector<float> delta(static_cast<size_t>(T * C));
    for (float& d : delta) d = dist(rng);
    std::uniform_real_distribution<float> ua(-8.0f, -0.1f);
    std::vector<float> A(static_cast<size_t>(C * n_a));
    for (float& a : A) a = ua(rng);
    const std::vector<int64_t> lengths = official_lengths();
    for (M1Decay mode : {M1Decay::Slowest, M1Decay::Mean}) {
        double best = 1e30;
        for (int r = 0; r < repeats; ++r) {
            const auto t0 = std::chrono::steady_clock::now();
            const WindowStats w =
                window_stats(T, C, delta.data(), C, A, n_a, lengths, kDefaultClampTop, mode);
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (s < best) best = s;
            if (w.threshold.empty()) return 1;
        }
        std::printf(
            "window_stats T=%lld C=%lld n_a=%lld lengths=%zu m1_decay=%s: %.3f s per layer-window (best of "
            "%d)\n",
            static_cast<long long>(T), static_cast<long long>(C), static_cast<long long>(n_a), lengths.size(),
            m1_decay_name(mode), best, repeats);
    }
    return 0;
}
