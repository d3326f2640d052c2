// bench_cuda_forward: whole-model prefill on the GPU vs the GEMM ceiling, random weights of real shapes.
// usage: bench_cuda_forward [shape ...]   (default: mamba-130m mamba-1.4b mamba2-130m mamba2-1.3b)
// Prints tokens/s at 2k/16k/128k tokens (fp32, fp32 + filter, tf32, bf16), the GEMM ceiling of the same
// projections measured alone with cuBLAS on this GPU (in_proj shape and the model's whole projection set),
// and decode tokens/s with the state on the GPU. Asserts nothing.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "mambascope/forward.h"
#include "mambascope/model.h"
#include "model/backend.h"

#ifdef MAMBASCOPE_HAVE_CUDA
#include "cuda/cuda_check.cuh"
#include "cuda/gemm.cuh"

using namespace mambascope;

namespace {

struct NullObserver : ScanObserver {
    void on_delta(const DeltaBlock&, const DeltaBlock&) override {}
};

// Median milliseconds of `fn` over `reps` runs on `s` (after one warm-up).
template <class F>
double median_ms(cudaStream_t s, int reps, F fn) {
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    fn();
    std::vector<float> t;
    for (int i = 0; i < reps; ++i) {
        CUDA_CHECK(cudaEventRecord(a, s));
        fn();
        CUDA_CHECK(cudaEventRecord(b, s));
        CUDA_CHECK(cudaEventSynchronize(b));
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms);
    }
    CUDA_CHECK(cudaEventDestroy(a));
    CUDA_CHECK(cudaEventDestroy(b));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

// The GEMM ceiling for this model's projections in bf16: (a) cuBLAS TFLOP/s at the in_proj shape, (b) the
// seconds per token of all of a layer's projections (in_proj, x_proj, dt_proj, out_proj) run alone at
// M = 16384 rows, i.e. the whole-model time if everything else were free.
struct GemmCeiling {
    double inproj_tflops = 0, proj_only_s_per_token = 0;
};
GemmCeiling bf16_ceiling(const ModelConfig& c) {
    namespace kc = kernels::cuda;
    const int64_t M = 16384, D = c.d_model, E = c.d_inner, P = c.in_proj_rows();
    const int64_t xp = c.arch == Arch::Mamba1 ? c.dt_rank + 2 * c.d_state : 0;
    struct G {
        int64_t N, K;
    };
    std::vector<G> gemms{{P, D}, {D, E}};
    if (c.arch == Arch::Mamba1) gemms.push_back({xp, E}), gemms.push_back({E, c.dt_rank});
    size_t maxA = 0, maxW = 0, maxC = 0;
    for (auto g : gemms)
        maxA = std::max(maxA, size_t(M * g.K)), maxW = std::max(maxW, size_t(g.N * g.K)),
        maxC = std::max(maxC, size_t(M * g.N));
    __nv_bfloat16 *A = nullptr, *W = nullptr;
    float* C = nullptr;
    CUDA_CHECK(cudaMalloc(&A, maxA * 2));
    CUDA_CHECK(cudaMalloc(&W, maxW * 2));
    CUDA_CHECK(cudaMalloc(&C, maxC * 4));
    CUDA_CHECK(cudaMemset(A, 0x3c, maxA * 2));  // small finite bf16 values
    CUDA_CHECK(cudaMemset(W, 0x3c, maxW * 2));
    kc::CublasHandle h;
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreate(&s));
    GemmCeiling out;
    double total_ms = 0;
    for (size_t i = 0; i < gemms.size(); ++i) {
        const auto g = gemms[i];
        const double ms = median_ms(
            s, 10, [&] { kc::gemm_rowmajor_bf16(h.get(), s, M, g.N, g.K, A, g.K, W, g.K, C, g.N, 0.0f); });
        if (i == 0) out.inproj_tflops = 2.0 * double(M) * double(g.N) * double(g.K) / ms / 1e9;
        total_ms += ms;
    }
    out.proj_only_s_per_token = total_ms / 1e3 / double(M) * double(c.n_layer);
    CUDA_CHECK(cudaStreamDestroy(s));
    cudaFree(A);
    cudaFree(W);
    cudaFree(C);
    return out;
}

const char* const kModeNames[] = {"fp32", "fp32+filter", "tf32", "bf16"};

// BENCH_FORWARD_MODES="bf16,tf32" limits the prefill modes (default: all four); BENCH_FORWARD_NO_DECODE=1
// skips decode. For short A/B runs on the GPU machine.
bool mode_selected(int mode) {
    const char* e = std::getenv("BENCH_FORWARD_MODES");
    if (!e || !*e) return true;
    std::string list = std::string(",") + e + ",";
    return list.find(std::string(",") + kModeNames[mode] + ",") != std::string::npos;
}

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
    // BENCH_FORWARD_PROFILE=T: one bf16 prefill of T tokens and nothing else (no warm-up, ceiling or decode),
    // for a per-kernel time breakdown under a profiler (scripts/device/profile_scan_and_forward.sh).
    const char* profile = std::getenv("BENCH_FORWARD_PROFILE");
    for (const auto& s : shapes) {
        auto cfg = reference_config(s);
        auto m = random_model(cfg, 1);
        const double proj_flops_per_token = 2.0 * double(m->parameter_count() - m->embedding.numel());
        if (profile) {
            const int64_t T = std::max<int64_t>(1, std::atoll(profile));
            std::vector<int32_t> ids(static_cast<size_t>(T));
            for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7919) % 50277);
            ForwardOptions opt;
            opt.device = Device::Cuda;
            opt.precision = Precision::Bf16;
            opt.chunk_tokens = 16384;
            const auto r = run_forward(*m, ids, opt);
            std::printf("%-12s %8lld %12s %12.4f (profiled run: times include the profiler's overhead)\n",
                        s.c_str(), static_cast<long long>(T), "bf16", r.seconds);
            m->device_weights.reset();
            continue;
        }
        // BENCH_FORWARD_DECODE_ONLY=1: the decode rows only (short A/B runs of the decode graph).
        const bool decode_only = std::getenv("BENCH_FORWARD_DECODE_ONLY") != nullptr;
        const GemmCeiling ceil = decode_only ? GemmCeiling{} : bf16_ceiling(cfg);
        if (!decode_only)
            std::printf("%-12s bf16 GEMM ceiling: in_proj %.0f TFLOP/s; all projections alone %.0f tok/s\n",
                        s.c_str(), ceil.inproj_tflops, 1.0 / ceil.proj_only_s_per_token);
        for (int64_t T : {2048, 16384, 131072}) {
            if (decode_only) break;
            std::mt19937 rng(1);
            std::vector<int32_t> ids(static_cast<size_t>(T));
            for (auto& id : ids) id = int32_t(rng() % 50277);
            for (int mode = 0; mode < 4; ++mode) {
                if (!mode_selected(mode)) continue;
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
                // Warm-up (the model's first call uploads the weights; the first bf16 call makes their bf16
                // copies).
                const auto w0 = std::chrono::steady_clock::now();
                // One chunk of this size first, so that the timed run does not include growing the pooled
                // workspace (the 2026-12-03 runs warmed up with 2048 tokens: their 16k rows include it).
                run_forward(*m, std::span<const int32_t>(ids.data(), size_t(std::min<int64_t>(T, 16384))),
                            opt);
                const double warm_s =
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
                if (T == 2048)
                    std::printf("%-12s warm-up call (%s, 2048 tokens%s): %.3f s\n", s.c_str(),
                                kModeNames[mode],
                                mode == 0 || !mode_selected(0) ? "; first call: weights upload" : "", warm_s);
                auto r = run_forward(*m, ids, opt);
                const double tflops = proj_flops_per_token * double(T) / r.seconds / 1e12;
                std::printf("%-12s %8lld %12s %12.4f %12.0f %14.2f", s.c_str(), (long long)T,
                            kModeNames[mode], r.seconds, double(T) / r.seconds, tflops);
                if (mode == 3)
                    std::printf("   %.0f%% of in_proj ceiling, %.0f%% of projections-alone time",
                                100.0 * tflops / ceil.inproj_tflops,
                                100.0 * ceil.proj_only_s_per_token * double(T) / r.seconds);
                std::printf("\n");
            }
        }
        // Decode: prefill 2048 tokens, then 256 greedy steps with the state on the GPU: fp32 and bf16 with
        // one CUDA graph per step (the default), bf16 without graphs (MAMBASCOPE_DECODE_GRAPH=0, one launch
        // per kernel), and bf16 with a LongMamba filter kept while decoding (the graph decoder with
        // thresholds).
        // The graph rows use PDL edges (MAMBASCOPE_DECODE_PDL, default "auto") and the gemv's L2 prefetch;
        // more bf16 rows A/B them: PDL "launch", "exit" and off ("0"), no prefetch, and Mamba-1's one-token
        // scan through m1_scan instead of m1_step; x_proj folded into in_proj (opt-in:
        // MAMBASCOPE_DECODE_XPROJ_FUSED=1, docs/cuda.md "x_proj inside in_proj"; Mamba-1 models whose conv
        // folds); and the persistent decode kernel (Mamba-1, opt-in: MAMBASCOPE_DECODE_PERSISTENT=1,
        // docs/cuda.md) at 1 and 2 blocks per SM, and its ring version (MAMBASCOPE_DECODE_PERSISTENT=ring).
        // "greedy on the GPU" rows take the next id from Decoder::step_greedy (the argmax in the step's
        // graph: inside the LM head by default, MAMBASCOPE_ARGMAX; a few bytes back) instead of the logits
        // row and std::max_element on the host. "greedy run on the GPU" rows take all 256 ids from one
        // Decoder::step_greedy_run (each step fed the one before's id on the device, MAMBASCOPE_DECODE_RUN
        // steps per graph launch; docs/cuda.md, "Greedy runs on the device").
        struct DecodeCase {
            Precision prec;
            bool graph, filter;
            const char* name;
            const char* env;  // "VAR=value VAR2=value2" set while the decoder records its graph, or null
        };
        for (const DecodeCase dc :
             {DecodeCase{Precision::Fp32, true, false, "fp32, graph", nullptr},
              DecodeCase{Precision::Bf16, true, false, "bf16, graph", nullptr},
              DecodeCase{Precision::Fp32, true, false, "fp32, graph, greedy on the GPU", nullptr},
              DecodeCase{Precision::Bf16, true, false, "bf16, graph, greedy on the GPU", nullptr},
              DecodeCase{Precision::Bf16, true, false, "bf16, graph, greedy run on the GPU", nullptr},
              DecodeCase{Precision::Bf16, true, false, "bf16, persistent kernel, greedy on the GPU",
                         "MAMBASCOPE_DECODE_PERSISTENT=1"},
              DecodeCase{Precision::Bf16, true, false, "bf16, persistent kernel",
                         "MAMBASCOPE_DECODE_PERSISTENT=1"},
              DecodeCase{Precision::Bf16, true, false, "bf16, ring kernel, greedy on the GPU",
                         "MAMBASCOPE_DECODE_PERSISTENT=ring"},
              DecodeCase{Precision::Bf16, true, false, "bf16, ring kernel",
                         "MAMBASCOPE_DECODE_PERSISTENT=ring"},
              DecodeCase{Precision::Bf16, true, false, "bf16, persistent kernel, 2 blocks/SM",
                         "MAMBASCOPE_DECODE_PERSISTENT=1 MAMBASCOPE_DECODE_BLOCKS_PER_SM=2"},
              DecodeCase{Precision::Bf16, true, false, "bf16, graph, PDL launch",
                         "MAMBASCOPE_DECODE_PDL=launch"},
              DecodeCase{Precision::Bf16, true, false, "bf16, graph, PDL exit", "MAMBASCOPE_DECODE_PDL=exit"},
              DecodeCase{Precision::Bf16, true, false, "bf16, graph, no PDL", "MAMBASCOPE_DECODE_PDL=0"},
              DecodeCase{Precision::Bf16, true, false, "bf16, graph, no prefetch",
                         "MAMBASCOPE_GEMV_PREFETCH=0"},
              DecodeCase{Precision::Bf16, true, false, "bf16, graph, Mamba-1 step by m1_scan",
                         "MAMBASCOPE_M1_STEP=0"},
              DecodeCase{Precision::Bf16, true, false, "bf16, graph, greedy on the GPU, x_proj folded",
                         "MAMBASCOPE_DECODE_XPROJ_FUSED=1"},
              DecodeCase{Precision::Bf16, false, false, "bf16, no graph", "MAMBASCOPE_DECODE_GRAPH=0"},
              DecodeCase{Precision::Bf16, true, true, "bf16 + filter, graph", nullptr},
              DecodeCase{Precision::Bf16, true, true, "bf16 + filter, greedy run on the GPU", nullptr},
              DecodeCase{Precision::Bf16, true, true, "bf16 + filter, persistent kernel",
                         "MAMBASCOPE_DECODE_PERSISTENT=1"}}) {
            if (std::getenv("BENCH_FORWARD_NO_DECODE")) break;
            // BENCH_FORWARD_DECODE_ROW=name: that decode row only (e.g. "bf16, graph", for a profiler)
            const char* only = std::getenv("BENCH_FORWARD_DECODE_ROW");
            if (only && std::string(only) != dc.name) continue;
            std::vector<int32_t> ids(2048);
            for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7919) % 50277);
            DeltaFilter f;
            if (dc.filter)
                f.threshold.assign(size_t(cfg.n_layer), std::vector<float>(size_t(cfg.channels()), 0.01f));
            ModelState st = make_state(*m);
            ForwardOptions opt;
            opt.device = Device::Cuda;
            opt.precision = dc.prec;
            if (dc.filter) opt.filter = &f;
            run_prefill(*m, ids, st, opt);
            std::vector<std::string> vars;
            if (dc.env) {
                std::string rest = dc.env;
                while (!rest.empty()) {
                    const size_t sp = rest.find(' ');
                    const std::string kv = rest.substr(0, sp);
                    rest = sp == std::string::npos ? "" : rest.substr(sp + 1);
                    vars.push_back(kv.substr(0, kv.find('=')));
                    setenv(vars.back().c_str(), kv.substr(kv.find('=') + 1).c_str(), 1);
                }
            }
            auto dec = detail::make_cuda_decoder(*m, st, dc.prec, dc.filter ? &f : nullptr);
            std::vector<float> logits;
            const auto w0 = std::chrono::steady_clock::now();
            const bool greedy = std::string(dc.name).find("greedy on the GPU") != std::string::npos;
            const bool greedy_run = std::string(dc.name).find("greedy run on the GPU") != std::string::npos;
            // warm-up: records and instantiates the graph (reads the variables); greedy: the greedy graph;
            // a greedy run: its graph of several steps
            if (greedy_run)
                (void)dec->step_greedy_run(1, 50277, 32);
            else if (greedy)
                dec->step_greedy(1, 50277);
            else
                dec->step(1, logits);
            for (const std::string& v : vars) unsetenv(v.c_str());
            const double first_ms =
                1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
            const int steps = 256;
            const auto t0 = std::chrono::steady_clock::now();
            int32_t next = 1;
            if (greedy_run) next = dec->step_greedy_run(next, 50277, steps).back();
            for (int i = 0; i < steps && !greedy_run; ++i) {
                if (greedy) {
                    next = dec->step_greedy(next, 50277);
                } else {
                    dec->step(next, logits);
                    next = int32_t(std::max_element(logits.begin(), logits.begin() + 50277) - logits.begin());
                }
            }
            const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            const detail::DecodeGraphInfo gi = dec->graph_info();
            // a greedy run's row: its graph of several steps (the step graph itself was never built)
            const bool run_graph = greedy_run && gi.greedy_run_steps > 0;
            const int64_t kernels = run_graph ? gi.greedy_run_kernel_nodes : gi.kernel_nodes;
            const int64_t edges = run_graph ? gi.greedy_run_programmatic_edges : gi.programmatic_edges;
            std::string how =
                gi.persistent ? std::string(gi.persistent_ring ? "ring" : "persistent") + " kernel, " +
                                    std::to_string(gi.persistent_blocks) + " blocks"
                              : std::to_string(kernels) + " kernels, " + std::to_string(edges) +
                                    " PDL edges, " + gi.pdl_mode +
                                    (gi.persistent_note.empty() || gi.persistent_note.rfind("opt-in", 0) == 0
                                         ? ""
                                         : "; not persistent: " + gi.persistent_note);
            if (!gi.greedy_argmax.empty()) how += "; argmax in the " + gi.greedy_argmax;
            if (gi.early_launch) how += "; early launch";  // docs/cuda.md, "The early launch"
            if (greedy_run)
                how += gi.greedy_run_steps > 0 ? "; " + std::to_string(gi.greedy_run_steps) +
                                                     " steps per graph fed on the GPU, argmax in the head"
                                               : "; a loop over step_greedy";
            std::printf("%-12s decode (%s): %.3f ms/token, %.0f tok/s (first step %.1f ms; %s)\n", s.c_str(),
                        dc.name, 1e3 * sec / steps, steps / sec, first_ms, how.c_str());
            std::fflush(stdout);
        }
        m->device_weights.reset();
    }
    return 0;
}

#else
#include <cstdio>
int main() {
    std::printf("bench_cuda_forward: this build has no CUDA backend\n");
    return 0;
}
#endif
