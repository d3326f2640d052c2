// bench: prefill speed and peak memory of the CPU forward on random weights of real model shapes (issue 2
// item 6). Prints figures; asserts nothing. docs/benchmarks.md records the results and the commands.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <random>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <string>

#include "commands.h"
#include "input.h"
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

struct BenchOptions {
    std::string shape = "mamba-130m", model;
    int64_t tokens = 2048, chunk = kPrefillChunkTokens, seed = 1;
    bool head = false, longmamba = false, probes = false;
};

int run_bench(const BenchOptions& o) {
    const int64_t T = o.tokens;
    std::shared_ptr<const Model> m;
    if (!o.model.empty()) {
        m = load_model(o.model);
    } else {
        m = random_model(reference_config(o.shape), static_cast<uint64_t>(o.seed));
    }
    const ModelConfig& cfg = m->config;
    const double rss_model = peak_rss_mb();
    std::mt19937 rng(7);
    std::vector<int32_t> ids(static_cast<size_t>(T));
    for (auto& id : ids) id = static_cast<int32_t>(rng() % std::min<int64_t>(50277, m->vocab_rows()));
    // --longmamba: a filter on every other channel (threshold at a typical Δ) to time the filtered scan;
    // --probes: the per-channel probe observer (Σ Δ, log decay, critical counts) on every layer.
    DeltaFilter filter;
    if (o.longmamba) {
        filter.threshold.assign(size_t(cfg.n_layer), std::vector<float>(size_t(cfg.channels()), -INFINITY));
        for (auto& layer : filter.threshold)
            for (size_t c = 0; c < layer.size(); c += 2) layer[c] = 0.01f;
    }
    ProbeOptions po;
    if (o.longmamba) po.reference = &filter;
    ChannelProbe probe(*m, po);
    ForwardOptions opt;
    opt.chunk_tokens = o.chunk;
    if (o.longmamba) opt.filter = &filter;
    if (o.probes) opt.observer = &probe;
    HeadRequest head;
    head.nll = o.head;
    auto res = run_forward(*m, ids, opt, head);
    const double rss = peak_rss_mb();
    std::printf(
        "model=%s longmamba=%s probes=%s tokens=%lld head=%s chunk=%lld threads=%d seconds=%.3f "
        "tok_per_s=%.1f peak_rss_mb=%.0f model_rss_mb=%.0f\n",
        !o.model.empty() ? m->name.c_str() : o.shape.c_str(), o.longmamba ? "yes" : "no",
        o.probes ? "yes" : "no", (long long)T, head.nll ? "yes" : "no", (long long)opt.chunk_tokens,
#ifdef _OPENMP
        omp_get_max_threads(),
#else
        1,
#endif
        res.seconds, double(T) / res.seconds, rss, rss_model);
    return 0;
}

}  // namespace

Command add_bench(CLI::App& root) {
    auto o = std::make_shared<BenchOptions>();
    auto* app = root.add_subcommand(
        "bench", "prefill tokens/s and peak RSS on random weights of real shapes (or --model)");
    app->add_option("--shape", o->shape,
                    "reference shape of the random weights (mamba-130m, mamba2-130m, ...)")
        ->capture_default_str();
    app->add_option("--model", o->model, "time this model instead of random weights")->type_name("DIR");
    app->add_option("--tokens", o->tokens, "prompt length")
        ->check(CLI::Range(int64_t(2), std::numeric_limits<int64_t>::max()))
        ->capture_default_str();
    app->add_option("--chunk", o->chunk, "tokens per prefill chunk")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app->add_option("--seed", o->seed, "seed of the random weights")->capture_default_str();
    app->add_flag("--head", o->head, "also compute per-token NLL (the LM head on every token)");
    app->add_flag("--longmamba", o->longmamba, "time the filtered scan (a filter on every other channel)");
    app->add_flag("--probes", o->probes, "time the per-channel probe observer");
    return {app, [o] { return run_bench(*o); }};
}

}  // namespace mambascope::cli
