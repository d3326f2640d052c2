// bench_cuda_forward: whole-model prefill on the GPU vs the GEMM ceiling, random weights of real shapes.
// usage: bench_cuda_forward [shape ...]   (default: mamba-130m mamba-1.4b mamba2-130m mamba2-1.3b)
// Prints tokens/s at 2k/16k/128k tokens, with and without filtering+probes. Asserts nothing.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "mambascope/forward.h"
#include "mambascope/model.h"

using namespace mambascope;

namespace {

struct NullObserver : ScanObserver {
    void on_delta(const DeltaBlock&, const DeltaBlock&) override {}
};

}  // namespace

int main(int argc, char** argv) {
    std::string why;
    if (!cuda_usable(&why)) {
        std::printf("bench_cuda_forward: %s\n", why.c_str());
        return 0;
    }
    std::vector<std::string> shapes;
    for (int i = 1; i < argc; ++i) shapes.push_back(argv[i]);
    if (shapes.empty()) shapes = {"mamba-130m", "mamba-1.4b", "mamba2-130m", "mamba2-1.3b"};
    std::printf("%-12s %8s %12s %12s %12s %14s\n", "shape", "tokens", "mode", "seconds", "tok/s",
                "proj TFLOP/s");
    for (const auto& s : shapes) {
        auto cfg = reference_config(s);
        auto m = random_model(cfg, 1);
        const double proj_flops_per_token = 2.0 * double(m->parameter_count() - m->embedding.numel());
        for (int64_t T : {2048, 16384, 131072}) {
            std::mt19937 rng(1);
            std::vector<int32_t> ids(static_cast<size_t>(T));
            for (auto& id : ids) id = int32_t(rng() % 50277);
            for (int mode = 0; mode < 4; ++mode) {
                ForwardOptions opt;
                opt.device = Device::Cuda;
                opt.precision = mode == 2 ? Precision::Tf32 : mode == 3 ? Precision::Bf16 : Precision::Fp32;
                opt.chunk_tokens = 16384;
                DeltaFilter f;
                if (mode == 1) {
                    f.threshold.assign(size_t(cfg.n_layer),
                                       std::vector<float>(size_t(cfg.channels()), 0.01f));
                    opt.filter = &f;
                }
                run_forward(*m, std::span<const int32_t>(ids.data(), 2048), opt);  // warm-up (upload, cuBLAS)
                auto r = run_forward(*m, ids, opt);
                std::printf("%-12s %8lld %12s %12.4f %12.0f %14.2f\n", s.c_str(), (long long)T,
                            mode == 0   ? "fp32"
                            : mode == 1 ? "fp32+filter"
                            : mode == 2 ? "tf32"
                                        : "bf16",
                            r.seconds, double(T) / r.seconds,
                            proj_flops_per_token * double(T) / r.seconds / 1e12);
            }
        }
        m->device_weights.reset();
    }
    return 0;
}
