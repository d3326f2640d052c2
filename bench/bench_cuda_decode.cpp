// bench_cuda_decode: where the persistent decode kernel's step goes (docs/cuda.md, "The persistent decode
// kernel"; docs/benchmarks.md).
//
// For the Mamba-1 shapes of mamba-130m and mamba-1.4b (or those named on the command line) with random bf16
// weights: the kernel alone on a stream (no graph, no copies), median ms per step of kRuns after kWarmup;
// then one step with block 0's clock64() stamped at each phase's start and end
// (Mamba1DecodeArgs::phase_clock), as a table per kind of phase: its work (block 0's start to end) and the
// barrier after it (block 0's end to the next phase's start: the wait for the slowest block plus the
// barrier's own latency). Cycles become µs at the SM clock cudaDevAttrClockRate reports. Grids: one block per
// SM and half the SMs, and the ring kernel's (one block per SM). Prints; asserts nothing.
#ifdef MAMBASCOPE_HAVE_CUDA

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_check.cuh"
#include "cuda/decode_mamba1.cuh"
#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "mambascope/model.h"
#include "model/backend.h"

namespace {

namespace kg = mambascope::kernels::cuda;

constexpr int kWarmup = 5;
constexpr int kRuns = 50;
constexpr size_t kSeed = size_t(1) << 22;  // random values uploaded once per buffer, tiled

struct Shape {
    const char* name;
    int64_t D, E, R, L, V;
};
constexpr Shape kShapes[] = {
    {"mamba-130m", 768, 1536, 48, 24, 50280},
    {"mamba-1.4b", 2048, 4096, 128, 48, 50280},
    {"mamba-2.8b", 2560, 5120, 160, 64, 50280},
};

// Device memory for n values of T, filled with `seed` tiled (values in [lo, hi)).
template <typename T>
struct Buf {
    T* p = nullptr;
    Buf(size_t n, float lo, float hi, std::mt19937& rng) {
        CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
        std::uniform_real_distribution<float> u(lo, hi);
        std::vector<T> seed(std::min(n, kSeed));
        for (auto& v : seed) v = static_cast<T>(u(rng));
        for (size_t o = 0; o < n; o += seed.size())
            CUDA_CHECK(cudaMemcpy(p + o, seed.data(), std::min(seed.size(), n - o) * sizeof(T),
                                  cudaMemcpyHostToDevice));
    }
    Buf(const Buf&) = delete;
    Buf& operator=(const Buf&) = delete;
    ~Buf() { cudaFree(p); }
};
using BufF = Buf<float>;
using BufH = Buf<__nv_bfloat16>;

struct Layer {
    BufF norm, conv_w, conv_b, dt_w, dt_b, A, Dskip, h, cst;
    BufH in_proj, x_proj, out_proj;
    Layer(const Shape& s, std::mt19937& rng)
        : norm(s.D, 0.9f, 1.1f, rng),
          conv_w(s.E * 4, -0.5f, 0.5f, rng),
          conv_b(s.E, -0.1f, 0.1f, rng),
          dt_w(s.E * s.R, -0.1f, 0.1f, rng),
          dt_b(s.E, -4.0f, -2.0f, rng),
          A(s.E * 16, -8.0f, -0.5f, rng),
          Dskip(s.E, -1.0f, 1.0f, rng),
          h(s.E * 16, -0.1f, 0.1f, rng),
          cst(3 * s.E, -0.5f, 0.5f, rng),
          in_proj(2 * s.E * s.D, -0.03f, 0.03f, rng),
          x_proj((s.R + 32) * s.E, -0.03f, 0.03f, rng),
          out_proj(s.D * s.E, -0.03f, 0.03f, rng) {}
};

void bench(const Shape& s) {
    std::mt19937 rng(7);
    std::vector<std::unique_ptr<Layer> > layers;
    for (int64_t l = 0; l < s.L; ++l) layers.push_back(std::make_unique<Layer>(s, rng));
    BufF emb(1000 * s.D, -1.0f, 1.0f, rng), norm_f(s.D, 0.9f, 1.1f, rng), x(s.D, 0, 0, rng),
        logits(s.V, 0, 0, rng);
    BufH head(s.V * s.D, -0.03f, 0.03f, rng), proj16(2 * s.E, 0, 0, rng), conv16(s.E, 0, 0, rng),
        dbc16(s.R + 32, 0, 0, rng), y16(s.E, 0, 0, rng);
    Buf<int32_t> id(1, 0, 0, rng);
    Buf<unsigned> barrier(1, 0, 0, rng);
    std::vector<kg::Mamba1DecodeLayer> hl;
    for (const auto& p : layers) {
        kg::Mamba1DecodeLayer m;
        m.norm = p->norm.p, m.in_proj = p->in_proj.p, m.conv_w = p->conv_w.p, m.conv_b = p->conv_b.p;
        m.x_proj = p->x_proj.p, m.dt_proj_w = p->dt_w.p, m.dt_proj_b = p->dt_b.p, m.A = p->A.p;
        m.Dskip = p->Dskip.p, m.out_proj = p->out_proj.p, m.h = p->h.p, m.conv_state = p->cst.p;
        hl.push_back(m);
    }
    kg::Mamba1DecodeLayer* dl = nullptr;
    CUDA_CHECK(cudaMalloc(&dl, hl.size() * sizeof(kg::Mamba1DecodeLayer)));
    CUDA_CHECK(cudaMemcpy(dl, hl.data(), hl.size() * sizeof(kg::Mamba1DecodeLayer), cudaMemcpyHostToDevice));
    kg::Mamba1DecodeArgs a;
    a.D = s.D, a.E = s.E, a.R = s.R, a.N = 16, a.K = 4, a.n_layer = s.L, a.V = s.V;
    a.layers = dl, a.id = id.p, a.embedding = emb.p, a.norm_f = norm_f.p, a.head = head.p, a.x = x.p;
    a.proj16 = proj16.p, a.conv16 = conv16.p, a.dbc16 = dbc16.p, a.y16 = y16.p, a.logits = logits.p;
    a.barrier = barrier.p;
    const std::string why = kg::decode_mamba1_unsupported(a, hl);
    if (!why.empty()) {
        std::printf("%s: not supported (%s)\n", s.name, why.c_str());
        cudaFree(dl);
        return;
    }
    int dev = 0, sms = 0, khz = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, dev));
    const int phases = kg::decode_mamba1_phases(s.L);
    long long* clk = nullptr;
    CUDA_CHECK(cudaMalloc(&clk, size_t(2 * phases) * sizeof(long long)));
    cudaStream_t st = nullptr;
    CUDA_CHECK(cudaStreamCreate(&st));
    int32_t* id_host = nullptr;
    float* logits_host = nullptr;
    CUDA_CHECK(cudaMallocHost(&id_host, sizeof(int32_t)));
    CUDA_CHECK(cudaMallocHost(&logits_host, size_t(s.V) * sizeof(float)));
    *id_host = 3;
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    double weights_mb = 0;  // bf16 projection and head bytes a step streams
    weights_mb = (double(s.L) * (2 * s.E * s.D + (s.R + 32) * s.E + s.D * s.E) + double(s.V) * s.D) * 2 / 1e6;
    struct Grid {
        bool ring;
        int blocks;
    };
    for (const Grid gr : {Grid{false, kg::decode_mamba1_blocks()}, Grid{false, std::max(1, sms / 2)},
                          Grid{true, kg::decode_mamba1_blocks(true)}}) {
        const int blocks = gr.blocks;
        a.ring = gr.ring;
        a.phase_clock = nullptr;
        std::vector<float> ms;
        for (int i = 0; i < kWarmup + kRuns; ++i) {
            CUDA_CHECK(cudaEventRecord(e0, st));
            kg::decode_mamba1_step(a, st, blocks);
            CUDA_CHECK(cudaEventRecord(e1, st));
            CUDA_CHECK(cudaEventSynchronize(e1));
            float t = 0;
            CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
            if (i >= kWarmup) ms.push_back(t);
        }
        std::sort(ms.begin(), ms.end());
        const double med = ms[ms.size() / 2];
        std::printf(
            "%-11s %-5s %4d blocks: %.3f ms/step (kernel alone, median of %d), %.0f MB of bf16 weights: "
            "%.2f TB/s\n",
            s.name, gr.ring ? "ring" : "plain", blocks, med, kRuns, weights_mb,
            weights_mb / 1e6 / (med / 1e3));
        // the step as a decoder runs it: a graph of the id's copy from pinned memory, the kernel (with its
        // barrier memset) and the logits' copy into pinned memory, launched and waited for once per step
        // (wall clock); and the same graph without the copies
        for (const bool copies : {true, false}) {
            cudaGraph_t g = nullptr;
            cudaGraphExec_t ge = nullptr;
            CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed));
            if (copies)
                CUDA_CHECK(cudaMemcpyAsync(id.p, id_host, sizeof(int32_t), cudaMemcpyHostToDevice, st));
            kg::decode_mamba1_step(a, st, blocks);
            if (copies)
                CUDA_CHECK(cudaMemcpyAsync(logits_host, logits.p, size_t(s.V) * sizeof(float),
                                           cudaMemcpyDeviceToHost, st));
            CUDA_CHECK(cudaStreamEndCapture(st, &g));
            CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
            std::vector<double> wall;
            for (int i = 0; i < kWarmup + kRuns; ++i) {
                const auto t0 = std::chrono::steady_clock::now();
                CUDA_CHECK(cudaGraphLaunch(ge, st));
                CUDA_CHECK(cudaStreamSynchronize(st));
                if (i >= kWarmup)
                    wall.push_back(
                        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                            .count());
            }
            std::sort(wall.begin(), wall.end());
            std::printf("  as a graph%s, launched and waited for per step: %.3f ms/step (wall, median)\n",
                        copies ? " with the id and logits copies" : " without copies", wall[wall.size() / 2]);
            cudaGraphExecDestroy(ge), cudaGraphDestroy(g);
        }
        a.phase_clock = clk;
        kg::decode_mamba1_step(a, st, blocks);
        CUDA_CHECK(cudaStreamSynchronize(st));
        std::vector<long long> c(size_t(2 * phases));
        CUDA_CHECK(cudaMemcpy(c.data(), clk, c.size() * sizeof(long long), cudaMemcpyDeviceToHost));
        const char* kinds[6] = {"embedding", "in_proj + conv", "x_proj", "scan", "out_proj", "head"};
        double work[6] = {}, wait[6] = {};
        int count[6] = {};
        for (int ph = 0; ph < phases; ++ph) {
            const int k = ph == 0 ? 0 : ph == phases - 1 ? 5 : 1 + (ph - 1) % 4;
            work[k] += double(c[size_t(2 * ph + 1)] - c[size_t(2 * ph)]);
            if (ph + 1 < phases) wait[k] += double(c[size_t(2 * ph + 2)] - c[size_t(2 * ph + 1)]);
            count[k] += 1;
        }
        const double us_per_cycle = 1e3 / double(khz);
        const double total = double(c.back() - c.front()) * us_per_cycle;
        std::printf("  %-15s %6s %12s %12s %10s %10s\n", "phase", "count", "work µs", "barrier µs", "sum µs",
                    "share");
        for (int k = 0; k < 6; ++k) {
            const double w = work[k] * us_per_cycle, b = wait[k] * us_per_cycle;
            std::printf("  %-15s %6d %12.2f %12.2f %10.1f %9.0f%%\n", kinds[k], count[k], w / count[k],
                        b / count[k], w + b, 100.0 * (w + b) / total);
        }
        std::printf("  stamped step: %.1f µs at %.2f GHz (block 0's clock)\n", total, khz / 1e6);
        std::fflush(stdout);
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1), cudaStreamDestroy(st);
    cudaFree(clk), cudaFree(dl), cudaFreeHost(id_host), cudaFreeHost(logits_host);
}

// The same step through the engine's decoder (random_model of the shape, MAMBASCOPE_DECODE_PERSISTENT=ring, 1
// and 0), 200 steps after a 64-token prefill: wall ms per step with the logits row out and a fixed next id,
// with the greedy argmax on the host (bench_cuda_forward's decode rows), and with step_greedy (argmax on the
// GPU).
void bench_decoder(const Shape& s) {
    using namespace mambascope;
    auto m = random_model(reference_config(s.name), 1);
    std::vector<int32_t> ids(64);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7919) % 50277);
    ModelState st = make_state(*m);
    ForwardOptions opt;
    opt.device = Device::Cuda;
    opt.precision = Precision::Bf16;
    run_prefill(*m, ids, st, opt);
    for (const char* persistent : {"ring", "1", "0"}) {
        setenv("MAMBASCOPE_DECODE_PERSISTENT", persistent, 1);
        auto dec = detail::make_cuda_decoder(*m, st, Precision::Bf16, nullptr);
        std::vector<float> logits;
        dec->step(1, logits);        // records the graph (reads the variable)
        dec->step_greedy(1, 50277);  // and the greedy one
        unsetenv("MAMBASCOPE_DECODE_PERSISTENT");
        for (const int mode : {0, 1, 2}) {  // fixed id; the host's argmax; step_greedy
            const int steps = 200;
            int32_t next = 1;
            const auto t0 = std::chrono::steady_clock::now();
            for (int i = 0; i < steps; ++i) {
                if (mode == 2) {
                    next = dec->step_greedy(next, 50277);
                    continue;
                }
                dec->step(next, logits);
                if (mode == 1)
                    next = int32_t(std::max_element(logits.begin(), logits.begin() + 50277) - logits.begin());
            }
            const double ms =
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            std::printf("%-11s decoder, %s, %s: %.3f ms/step (wall)\n", s.name,
                        !dec->graph_info().persistent       ? "step graph"
                        : dec->graph_info().persistent_ring ? "ring kernel"
                                                            : "persistent kernel",
                        mode == 0   ? "logits row out, fixed id"
                        : mode == 1 ? "logits row out, argmax on the host"
                                    : "step_greedy (argmax on the GPU)",
                        ms / steps);
        }
    }
    m->device_weights.reset();
}

}  // namespace

int main(int argc, char** argv) {
    try {
        for (const Shape& s : kShapes) {
            bool want = argc < 2;
            for (int i = 1; i < argc; ++i) want = want || std::strcmp(argv[i], s.name) == 0;
            if (want) bench(s), bench_decoder(s);
        }
    } catch (const mambascope::Error& e) {
        std::fprintf(stderr, "bench_cuda_decode: %s\n", mambascope::describe(e).c_str());
        return 1;
    }
    return 0;
}

#else
#include <cstdio>
int main() {
    std::printf("bench_cuda_decode: this build has no CUDA backend\n");
    return 0;
}
#endif
