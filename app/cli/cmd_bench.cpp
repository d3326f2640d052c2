// bench: prefill speed and peak memory of the CPU forward on random weights of real model shapes (issue 2
// item 6); with --analyze, the whole `analyze` job (every probe, the NLL) with its page faults and system
// time (issue 16). Prints figures; asserts nothing. docs/benchmarks.md records the results and the commands
// (scripts/bench_cpu.sh prints the whole CPU table).
//
// Next to every timing it prints what does not depend on the machine's load: minor page faults, the system
// share of CPU time, GFLOP counts, and the load average it ran under (/proc/loadavg). `cpu_bound_tok_per_s` =
// tokens × threads / (user + sys CPU seconds): the rate if every thread had a core to itself all the time; on
// a loaded machine it is far closer to the quiet figure than the wall-clock rate (an upper estimate: it
// credits nothing for the time threads wait for each other without spinning).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <random>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <string>

#include "commands.h"
#include "input.h"
#include "mambascope/analysis.h"
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

// Process CPU time and faults so far (getrusage), and the wall clock.
struct Usage {
    double wall = 0, user = 0, sys = 0;
    long minflt = 0, majflt = 0;
    static Usage now() {
        rusage ru{};
        getrusage(RUSAGE_SELF, &ru);
        Usage u;
        u.wall = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
        u.user = double(ru.ru_utime.tv_sec) + 1e-6 * double(ru.ru_utime.tv_usec);
        u.sys = double(ru.ru_stime.tv_sec) + 1e-6 * double(ru.ru_stime.tv_usec);
        u.minflt = ru.ru_minflt;
        u.majflt = ru.ru_majflt;
        return u;
    }
    Usage operator-(const Usage& b) const {
        return {wall - b.wall, user - b.user, sys - b.sys, minflt - b.minflt, majflt - b.majflt};
    }
};

// The 1-minute load average of the machine (first field of /proc/loadavg).
double load_average() {
    std::ifstream f("/proc/loadavg");
    double l = NAN;
    f >> l;
    return l;
}

// OMP_WAIT_POLICY in effect ("passive" unless the user chose: default_passive_omp_wait).
const char* wait_policy() {
    const char* p = std::getenv("OMP_WAIT_POLICY");
    return p ? p : "(unset)";
}

int threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// FLOP of the projections (in_proj, x_proj, dt_proj, out_proj) per token, all layers: 2 × their weights.
double projection_flop_per_token(const ModelConfig& c) {
    const double D = double(c.d_model), E = double(c.d_inner), N = double(c.d_state);
    double per_layer;
    if (c.arch == Arch::Mamba1)
        per_layer = D * 2 * E + E * (double(c.dt_rank) + 2 * N) + double(c.dt_rank) * E + E * D;
    else
        per_layer = D * (2 * E + 2 * double(c.n_groups) * N + double(c.n_heads)) + E * D;
    return 2.0 * per_layer * double(c.n_layer);
}

// The projections of one layer alone on a chunk of R rows (random data, the model's shapes, through the same
// sgemm_nt the forward calls), median of `repeats`: the GEMM ceiling measured beside the forward, in tokens/s
// of the whole model if everything but the projections were free, and in GFLOP/s.
std::pair<double, double> projection_ceiling(const ModelConfig& c, int64_t R, int repeats) {
    struct G {
        int64_t N, K;
    };
    std::vector<G> gs;
    if (c.arch == Arch::Mamba1)
        gs = {{2 * c.d_inner, c.d_model},
              {c.dt_rank + 2 * c.d_state, c.d_inner},
              {c.d_inner, c.dt_rank},
              {c.d_model, c.d_inner}};
    else
        gs = {{2 * c.d_inner + 2 * c.n_groups * c.d_state + c.n_heads, c.d_model}, {c.d_model, c.d_inner}};
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(-1, 1);
    std::vector<std::vector<float>> A, B, C;
    for (auto g : gs) {
        A.emplace_back(size_t(R * g.K));
        B.emplace_back(size_t(g.N * g.K));
        C.emplace_back(size_t(R * g.N));
        for (auto& v : A.back()) v = u(rng);
        for (auto& v : B.back()) v = u(rng);
    }
    std::vector<double> t;
    for (int rep = 0; rep < repeats + 1; ++rep) {
        const auto a = std::chrono::steady_clock::now();
        for (size_t i = 0; i < gs.size(); ++i)
            cpu_sgemm_nt(R, gs[i].N, gs[i].K, A[i].data(), gs[i].K, B[i].data(), gs[i].K, 0.0f, C[i].data(),
                         gs[i].N);
        if (rep > 0) t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
    }
    std::sort(t.begin(), t.end());
    const double layer_s = t[t.size() / 2];
    const double tok_s = double(R) / (layer_s * double(c.n_layer));
    return {tok_s, projection_flop_per_token(c) * tok_s * 1e-9};
}

struct BenchOptions {
    std::string shape = "mamba-130m", model, methods = "vanilla", calibration;
    int64_t tokens = 2048, chunk = kPrefillChunkTokens, seed = 1;
    bool head = false, longmamba = false, probes = false, analyze = false, ceiling = false;
};

// --analyze: the `analyze` job of mambascope-cli (run_analysis: NLL, probes, receptive fields, hidden
// attention) on random ids, with getrusage around the run only (model creation excluded).
int run_bench_analyze(const BenchOptions& o, const Model& m, const std::vector<int32_t>& ids,
                      double rss_model) {
    AnalysisRequest req;
    req.methods.clear();
    std::string list = o.methods;
    for (size_t a = 0; a <= list.size();) {
        const size_t b = std::min(list.find(',', a), list.size());
        if (b > a) req.methods.push_back(parse_method(list.substr(a, b - a)));
        a = b + 1;
    }
    req.calibration_path = o.calibration;
    RunInput in;
    in.ids = ids;
    const double load_before = load_average();
    const Usage u0 = Usage::now();
    RunResult r = run_analysis(m, in, req);
    const Usage d = Usage::now() - u0;
    const double T = double(ids.size());
    std::printf(
        "mode=analyze model=%s methods=%s tokens=%lld threads=%d blas=%s omp_wait_policy=%s seconds=%.2f "
        "tok_per_s=%.1f "
        "cpu_bound_tok_per_s=%.1f user_s=%.2f sys_s=%.2f sys_pct_of_wall=%.2f minflt=%ld "
        "minflt_per_1k_tokens=%.1f majflt=%ld "
        "peak_rss_mb=%.0f model_rss_mb=%.0f load1_before=%.2f load1_after=%.2f\n",
        !o.model.empty() ? m.name.c_str() : o.shape.c_str(), o.methods.c_str(), (long long)ids.size(),
        threads(), cpu_gemm_backend(), wait_policy(), d.wall, T * double(req.methods.size()) / d.wall,
        T * double(req.methods.size()) * threads() / (d.user + d.sys), d.user, d.sys, 100.0 * d.sys / d.wall,
        d.minflt, 1000.0 * double(d.minflt) / (T * double(req.methods.size())), d.majflt, peak_rss_mb(),
        rss_model, load_before, load_average());
    for (const auto& mr : r.methods)
        std::printf(
            "  method=%s seconds=%.2f mean_nll=%.6f\n", method_name(mr.method), mr.seconds,
            mr.nll.empty() ? NAN : [&] {
                double s = 0;
                for (float v : mr.nll) s += v;
                return s / double(mr.nll.size());
            }());
    return 0;
}

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
    if (o.analyze) return run_bench_analyze(o, *m, ids, rss_model);
    ProbeOptions po;
    if (o.longmamba) po.reference = &filter;
    ChannelProbe probe(*m, po);
    ForwardOptions opt;
    opt.chunk_tokens = o.chunk;
    if (o.longmamba) opt.filter = &filter;
    if (o.probes) opt.observer = &probe;
    HeadRequest head;
    head.nll = o.head;
    const double load_before = load_average();
    const Usage u0 = Usage::now();
    auto res = run_forward(*m, ids, opt, head);
    const Usage d = Usage::now() - u0;
    const double rss = peak_rss_mb();
    const double proj_gflops = projection_flop_per_token(cfg) * double(T) / res.seconds * 1e-9;
    std::printf(
        "model=%s longmamba=%s probes=%s tokens=%lld head=%s chunk=%lld threads=%d blas=%s "
        "omp_wait_policy=%s seconds=%.3f "
        "tok_per_s=%.1f cpu_bound_tok_per_s=%.1f proj_gflop_per_s=%.1f user_s=%.2f sys_s=%.2f minflt=%ld "
        "peak_rss_mb=%.0f "
        "model_rss_mb=%.0f load1_before=%.2f load1_after=%.2f\n",
        !o.model.empty() ? m->name.c_str() : o.shape.c_str(), o.longmamba ? "yes" : "no",
        o.probes ? "yes" : "no", (long long)T, head.nll ? "yes" : "no", (long long)opt.chunk_tokens,
        threads(), cpu_gemm_backend(), wait_policy(), res.seconds, double(T) / res.seconds,
        double(T) * threads() / (d.user + d.sys), proj_gflops, d.user, d.sys, d.minflt, rss, rss_model,
        load_before, load_average());
    if (o.ceiling) {
        // The same shapes through the same GEMM, alone, right after the forward (same load).
        const auto [tok_s, gflops] = projection_ceiling(cfg, opt.chunk_tokens, 5);
        std::printf(
            "  gemm_ceiling: projections alone %.1f tok/s = %.1f GFLOP/s; the forward reaches %.0f%% of it "
            "(load1=%.2f)\n",
            tok_s, gflops, 100.0 * proj_gflops / gflops, load_average());
    }
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
    app->add_flag("--ceiling", o->ceiling,
                  "also time the projections alone at the model's shapes (the SGEMM ceiling beside the run)");
    app->add_flag("--analyze", o->analyze,
                  "time the whole analyze job (NLL, probes) with page faults, system time and peak RSS");
    app->add_option("--methods", o->methods, "with --analyze: vanilla,longmamba,decimamba")
        ->capture_default_str();
    app->add_option("--calibration", o->calibration, "with --analyze: calibration file (LongMamba)")
        ->type_name("FILE");
    return {app, [o] { return run_bench(*o); }};
}

}  // namespace mambascope::cli
