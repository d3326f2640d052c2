// bench: prefill speed and peak memory of the CPU forward on random weights of real model shapes (issue 2
// item 6). Prints figures; asserts nothing. docs/benchmarks.md records the results and the commands.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <string>

#include "args.h"
#include "commands.h"
#include "mambascope/channel_probe.h"
#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "mambascope/model.h"

namespace mambascope::cli {
namespace {

// Peak resident set size of this process so far (VmHWM), in MB.
double peak_rss_mb() {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
    return NAN;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (!std::strcmp(argv[i], "--help")) {
            std::printf(
                "mambascope-cli bench [--shape mamba-130m|mamba2-130m|...] [--tokens N] [--head] "
                "[--chunk N] [--seed S] [--model DIR] [--longmamba] [--probes]\n  prefill tokens/s and peak "
                "RSS on random weights; --head also "
                "computes per-token NLL (the LM head on every token)\n");
            return 0;
        }
    Args a(argc, argv, {"shape", "tokens", "chunk", "seed", "model"}, {"head", "longmamba", "probes"});
    const std::string shape = a.get("shape", "mamba-130m");
    const int64_t T = a.get_int("tokens", 2048);
    if (T < 2) throw Error("--tokens must be at least 2");
    std::shared_ptr<const Model> m;
    if (a.has("model")) {
        m = load_model(a.get("model"));
    } else {
        m = random_model(reference_config(shape), static_cast<uint64_t>(a.get_int("seed", 1)));
    }
    const ModelConfig& cfg = m->config;
    const double rss_model = peak_rss_mb();
    std::mt19937 rng(7);
    std::vector<int32_t> ids(static_cast<size_t>(T));
    for (auto& id : ids) id = static_cast<int32_t>(rng() % std::min<int64_t>(50277, m->vocab_rows()));
    // --longmamba: a filter on every other channel (threshold at a typical Δ) to time the filtered scan;
    // --probes: the per-channel probe observer (Σ Δ, log decay, critical counts) on every layer.
    DeltaFilter filter;
    if (a.has("longmamba")) {
        filter.threshold.assign(size_t(cfg.n_layer), std::vector<float>(size_t(cfg.channels()), -INFINITY));
        for (auto& layer : filter.threshold)
            for (size_t c = 0; c < layer.size(); c += 2) layer[c] = 0.01f;
    }
    ProbeOptions po;
    if (a.has("longmamba")) po.reference = &filter;
    ChannelProbe probe(*m, po);
    ForwardOptions opt;
    opt.chunk_tokens = a.get_int("chunk", kPrefillChunkTokens);
    if (a.has("longmamba")) opt.filter = &filter;
    if (a.has("probes")) opt.observer = &probe;
    HeadRequest head;
    head.nll = a.has("head");
    auto res = run_forward(*m, ids, opt, head);
    const double rss = peak_rss_mb();
    std::printf(
        "model=%s longmamba=%s probes=%s tokens=%lld head=%s chunk=%lld threads=%d seconds=%.3f "
        "tok_per_s=%.1f peak_rss_mb=%.0f model_rss_mb=%.0f\n",
        a.has("model") ? m->name.c_str() : shape.c_str(), a.has("longmamba") ? "yes" : "no",
        a.has("probes") ? "yes" : "no", (long long)T, head.nll ? "yes" : "no", (long long)opt.chunk_tokens,
#ifdef _OPENMP
        omp_get_max_threads(),
#else
        1,
#endif
        res.seconds, double(T) / res.seconds, rss, rss_model);
    return 0;
}

}  // namespace mambascope::cli
