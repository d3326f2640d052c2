// The CUDA forward against the CPU forward (the reference) on random models: logits, NLL, Δ seen by
// observers, the final state, for vanilla, LongMamba-filtered and DeciMamba runs, Mamba-1 and Mamba-2. Skips
// without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "mambascope/decimamba.h"
#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "mambascope/model.h"
#include "model/backend.h"

using namespace mambascope;

namespace {

bool have_gpu() {
    return cuda_usable(nullptr);
}

ModelConfig cfg(Arch arch) {
    ModelConfig c;
    c.arch = arch;
    c.d_model = 64;
    c.n_layer = 3;
    c.vocab_size = 97;
    c.d_conv = 4;
    c.d_inner = 128;
    if (arch == Arch::Mamba1) {
        c.d_state = 16;
        c.dt_rank = 4;
    } else {
        c.n_heads = 4;
        c.head_dim = 32;
        c.n_groups = 2;
        c.d_state = 64;
    }
    return c;
}

std::vector<int32_t> ids(int n) {
    std::mt19937 rng(17);
    std::vector<int32_t> v(n);
    for (auto& i : v) i = int32_t(rng() % 97);
    return v;
}

struct Run {
    std::vector<float> logits;  // (T', V)
    ForwardResult res;
    std::vector<float> delta;  // all used Δ in the order the observer saw them (chunk, layer)
    std::map<int, std::vector<float>> by_layer;  // layer → used Δ (T, C)
    ModelState state;
};

// r.logits, r.res and r.state of a prefill of x from a fresh state with `opt` (every position's logits, the
// NLL).
void prefill_into(Run& r, const Model& m, const std::vector<int32_t>& x, const ForwardOptions& opt) {
    HeadRequest head;
    head.nll = true;
    head.all_logits = true;
    head.logits_sink = [&](int64_t, const float* row, int64_t V) {
        r.logits.insert(r.logits.end(), row, row + V);
    };
    r.state = make_state(m);
    r.res = run_prefill(m, x, r.state, opt, head);
}

Run run(const Model& m, const std::vector<int32_t>& x, Device dev, const DeltaFilter* f,
        const std::map<int, std::vector<int64_t>>* keep = nullptr, int64_t chunk = 100) {
    struct Obs : ScanObserver {
        Run* run;
        void on_delta(const DeltaBlock&, const DeltaBlock& used) override {
            for (int64_t r = 0; r < used.rows; ++r)
                for (int64_t c = 0; c < used.channels; ++c) {
                    run->delta.push_back(used.at(r, c));
                    run->by_layer[used.layer].push_back(used.at(r, c));
                }
        }
    } obs;
    Run r;
    obs.run = &r;
    ForwardOptions opt;
    opt.device = dev;
    opt.filter = f;
    opt.observer = &obs;
    opt.keep_positions = keep;
    opt.chunk_tokens = chunk;
    prefill_into(r, m, x, opt);
    return r;
}

// Environment settings for the life of the object: (name, value) pairs, a null value unsetting the variable;
// every named variable is unset again at the end, also when the code between throws.
struct EnvSettings {
    // a copy: an initializer_list member would refer to the constructor argument's array, which ends with the
    // full-expression that built this object
    std::vector<std::pair<const char*, const char*>> env;
    explicit EnvSettings(std::initializer_list<std::pair<const char*, const char*>> e) : env(e) {
        for (const auto& [name, value] : env) value ? setenv(name, value, 1) : unsetenv(name);
    }
    ~EnvSettings() {
        for (const auto& [name, value] : env) unsetenv(name);
    }
    EnvSettings(const EnvSettings&) = delete;
    EnvSettings& operator=(const EnvSettings&) = delete;
};

// A bf16 CUDA prefill of x in chunks of 256 tokens (logits of every position, NLL, final state) under some
// environment settings: (name, value) pairs, a null value unsetting the variable; every named variable is
// unset again afterwards, also when the prefill throws.
Run bf16_prefill(const Model& m, const std::vector<int32_t>& x, const DeltaFilter* f,
                 std::initializer_list<std::pair<const char*, const char*>> env) {
    const EnvSettings settings(env);
    ForwardOptions opt;
    opt.device = Device::Cuda;
    opt.precision = Precision::Bf16;
    opt.filter = f;
    opt.chunk_tokens = 256;
    Run r;
    prefill_into(r, m, x, opt);
    return r;
}

double rel(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
        num = std::max(num, double(std::abs(a[i] - b[i])));
        den = std::max(den, double(std::abs(b[i])));
    }
    return num / std::max(den, 1e-30);
}

// A filter on the 3-layer test models: every other channel of layer 1 at 0.02, layer 2's channel 0 frozen
// (∞).
DeltaFilter test_filter(const Model& m) {
    DeltaFilter f;
    const int64_t C = m.config.channels();
    f.threshold.assign(3, std::vector<float>(size_t(C), -INFINITY));
    for (int64_t c = 0; c < C; c += 2) f.threshold[1][size_t(c)] = 0.02f;
    f.threshold[2][0] = INFINITY;
    return f;
}

// What a CUDA decoder made under some environment settings gives for steps x[from, to): every step's logits,
// the state after them and its graph's description. `env`: (name, value) pairs set for the decoder's
// construction and its steps (the first records the graph), unset after (EnvSettings), also when a step
// throws.
struct Decoded {
    std::vector<float> logits;
    ModelState state;
    detail::DecodeGraphInfo info;
};

Decoded decode_steps(const Model& m, const ModelState& st, Precision prec, const DeltaFilter* f,
                     const std::vector<int32_t>& x, int from, int to,
                     std::initializer_list<std::pair<const char*, const char*>> env) {
    Decoded d;
    std::unique_ptr<detail::DecoderBackend> dec;
    {
        const EnvSettings settings(env);
        dec = detail::make_cuda_decoder(m, st, prec, f);
        std::vector<float> lg;
        for (int t = from; t < to; ++t) {
            dec->step(x[size_t(t)], lg);
            d.logits.insert(d.logits.end(), lg.begin(), lg.end());
        }
    }
    d.info = dec->graph_info();
    d.state = st;
    dec->download(d.state);
    return d;
}

// A bf16 decoder made while `var` is `value` is refused with an error that names the variable (unset
// afterwards).
void expect_decoder_refuses(const Model& m, const ModelState& st, const char* var, const char* value) {
    const EnvSettings bad({{var, value}});
    try {
        auto dec = detail::make_cuda_decoder(m, st, Precision::Bf16, nullptr);
        ADD_FAILURE() << var << "=" << value << " was accepted";
    } catch (const mambascope::Error& e) {
        EXPECT_NE(std::string(e.what()).find(var), std::string::npos) << e.what();
    }
}

// b's logits and states equal a's bit for bit.
void expect_same_steps(const Decoded& a, const Decoded& b) {
    EXPECT_TRUE(b.logits == a.logits);
    ASSERT_EQ(b.state.layers.size(), a.state.layers.size());
    for (size_t l = 0; l < a.state.layers.size(); ++l) {
        EXPECT_TRUE(b.state.layers[l].ssm == a.state.layers[l].ssm) << "layer " << l;
        EXPECT_TRUE(b.state.layers[l].conv == a.state.layers[l].conv) << "layer " << l;
    }
    EXPECT_EQ(b.state.tokens_seen, a.state.tokens_seen);
}

class CudaForward : public ::testing::TestWithParam<Arch> {
  protected:
    void SetUp() override {
        if (!have_gpu()) GTEST_SKIP() << "no usable GPU";
    }
};

}  // namespace

TEST_P(CudaForward, VanillaMatchesTheCpuForward) {
    auto m = random_model(cfg(GetParam()), 3);
    auto x = ids(333);
    auto cpu = run(*m, x, Device::Cpu, nullptr), gpu = run(*m, x, Device::Cuda, nullptr);
    EXPECT_EQ(gpu.res.backend, "cuda");
    EXPECT_LT(rel(gpu.logits, cpu.logits), 1e-4);
    EXPECT_LT(rel(gpu.res.nll, cpu.res.nll), 1e-4);
    EXPECT_LT(rel(gpu.delta, cpu.delta), 1e-5);
    for (size_t l = 0; l < cpu.state.layers.size(); ++l)
        EXPECT_LT(rel(gpu.state.layers[l].ssm, cpu.state.layers[l].ssm), 1e-4);
}

TEST_P(CudaForward, FilteredMatchesTheCpuForward) {
    auto m = random_model(cfg(GetParam()), 4);
    auto x = ids(300);
    const DeltaFilter f = test_filter(*m);
    const int64_t C = m->config.channels();
    auto cpu = run(*m, x, Device::Cpu, &f), gpu = run(*m, x, Device::Cuda, &f);
    EXPECT_LT(rel(gpu.logits, cpu.logits), 1e-4);
    EXPECT_LT(rel(gpu.delta, cpu.delta), 1e-5);
    // the filtered channel (layer 2, channel 0) has Δ exactly zero on the GPU too; its neighbour does not
    const auto& l2 = gpu.by_layer[2];
    ASSERT_EQ(l2.size(), size_t(300 * C));
    double frozen = 0, neighbour = 0;
    for (int64_t t = 0; t < 300; ++t) frozen += l2[size_t(t * C)], neighbour += l2[size_t(t * C + 1)];
    EXPECT_EQ(frozen, 0.0);
    EXPECT_GT(neighbour, 0.0);
}

TEST_P(CudaForward, DecimatedMatchesTheCpuForward) {
    auto m = random_model(cfg(GetParam()), 5);
    auto x = ids(250);
    std::map<int, std::vector<int64_t>> keep;
    for (int64_t p = 0; p < 250; p += 3) keep[1].push_back(p);
    keep[1].push_back(249);
    auto cpu = run(*m, x, Device::Cpu, nullptr, &keep, 64),
         gpu = run(*m, x, Device::Cuda, nullptr, &keep, 64);
    EXPECT_EQ(gpu.res.nll_positions, cpu.res.nll_positions);
    EXPECT_LT(rel(gpu.res.nll, cpu.res.nll), 1e-4);
}

TEST_P(CudaForward, GpuDecoderMatchesCpuDecodeSteps) {
    auto m = random_model(cfg(GetParam()), 6);
    auto x = ids(160);
    // Prefill 100 tokens on the CPU, then decode 60 on each backend from the same state.
    ModelState st = make_state(*m);
    run_prefill(*m, std::span<const int32_t>(x.data(), 100), st);
    Decoder gpu(*m, st, Device::Cuda);
    ASSERT_EQ(gpu.backend(), "cuda") << gpu.note();
    ModelState cpu_state = st;
    std::vector<float> lg, lc, all_g, all_c;
    for (int t = 100; t < 160; ++t) {
        gpu.step(x[size_t(t)], lg);
        decode_step(*m, x[size_t(t)], cpu_state, lc);
        all_g.insert(all_g.end(), lg.begin(), lg.end());
        all_c.insert(all_c.end(), lc.begin(), lc.end());
    }
    EXPECT_LT(rel(all_g, all_c), 1e-4);
    const ModelState gs = gpu.state();
    EXPECT_EQ(gs.tokens_seen, 160);
    for (size_t l = 0; l < gs.layers.size(); ++l) {
        EXPECT_LT(rel(gs.layers[l].ssm, cpu_state.layers[l].ssm), 1e-4) << l;
        EXPECT_LT(rel(gs.layers[l].conv, cpu_state.layers[l].conv), 1e-5) << l;
    }
}

// LongMamba's filter kept while decoding (method doc §9.1): the Decoder's GPU steps (the filtered graph)
// equal the CPU's filtered steps, and both equal the filtered prefill of the whole sequence.
TEST_P(CudaForward, FilteredDecoderMatchesCpuAndTheFilteredPrefill) {
    auto m = random_model(cfg(GetParam()), 9);
    auto x = ids(160);
    DeltaFilter f;
    const int64_t C = m->config.channels();
    f.threshold.assign(3, std::vector<float>(size_t(C), -INFINITY));
    for (int64_t c = 0; c < C; c += 2) f.threshold[1][size_t(c)] = 0.02f;
    ForwardOptions o;
    o.filter = &f;
    ModelState st = make_state(*m);
    run_prefill(*m, std::span<const int32_t>(x.data(), 100), st, o);
    Decoder gpu(*m, st, Device::Cuda, Precision::Fp32, &f), cpu(*m, st, Device::Cpu, Precision::Fp32, &f);
    ASSERT_EQ(gpu.backend(), "cuda") << gpu.note();
    std::vector<float> lg, lc, all_g, all_c;
    for (int t = 100; t < 159; ++t) {
        gpu.step(x[size_t(t)], lg);
        cpu.step(x[size_t(t)], lc);
        all_g.insert(all_g.end(), lg.begin(), lg.end());
        all_c.insert(all_c.end(), lc.begin(), lc.end());
    }
    EXPECT_LT(rel(all_g, all_c), 1e-4);
    // the filtered prefill of all 159 tokens: logits at positions 100..158
    std::vector<float> ref;
    HeadRequest head;
    for (int64_t p = 100; p < 159; ++p) head.logits_positions.push_back(p);
    head.logits_sink = [&](int64_t, const float* row, int64_t V) { ref.insert(ref.end(), row, row + V); };
    run_forward(*m, std::span<const int32_t>(x.data(), 159), o, head);
    EXPECT_LT(rel(all_g, ref), 1e-4);
    EXPECT_EQ(gpu.state().tokens_seen, 159);
}

// The decoder replays one CUDA graph per step (forward_cuda.cpp, CudaDecoder): a filtered graph decoder (the
// thresholds captured once) equals the CPU's filtered steps.
TEST_P(CudaForward, FilteredGraphDecoderMatchesCpuFilteredSteps) {
    if (!have_gpu()) GTEST_SKIP() << "no GPU";
    auto m = random_model(cfg(GetParam()), 10);
    auto x = ids(150);
    DeltaFilter f;
    const int64_t C = m->config.channels();
    f.threshold.assign(3, std::vector<float>(size_t(C), -INFINITY));
    for (int64_t c = 0; c < C; c += 2) f.threshold[1][size_t(c)] = 0.02f;
    ForwardOptions o;
    o.filter = &f;
    ModelState st = make_state(*m);
    run_prefill(*m, std::span<const int32_t>(x.data(), 100), st, o);
    auto gpu = detail::make_cuda_decoder(*m, st, Precision::Fp32, &f);
    ModelState cpu_state = st;
    std::vector<float> lg, lc, all_g, all_c;
    for (int t = 100; t < 150; ++t) {
        gpu->step(x[size_t(t)], lg);
        decode_step_filtered(*m, x[size_t(t)], cpu_state, f, lc);
        all_g.insert(all_g.end(), lg.begin(), lg.end());
        all_c.insert(all_c.end(), lc.begin(), lc.end());
    }
    EXPECT_LT(rel(all_g, all_c), 1e-4);
    ModelState gs = st;
    gpu->download(gs);
    EXPECT_EQ(gs.tokens_seen, 150);
    for (size_t l = 0; l < gs.layers.size(); ++l)
        EXPECT_LT(rel(gs.layers[l].ssm, cpu_state.layers[l].ssm), 1e-4);
    // and it differs from the unfiltered decode (the filter is really in the graph)
    auto plain = detail::make_cuda_decoder(*m, st, Precision::Fp32, nullptr);
    std::vector<float> lp, all_p;
    for (int t = 100; t < 150; ++t) {
        plain->step(x[size_t(t)], lp);
        all_p.insert(all_p.end(), lp.begin(), lp.end());
    }
    EXPECT_GT(rel(all_p, all_g), 1e-4);
}

// bf16 graph decoding (bf16 chain, bf16 LM head) within the bf16 bound of the CPU's float32 steps.
TEST_P(CudaForward, Bf16GraphDecoderStaysWithinTheBf16BoundOfTheCpu) {
    if (!have_gpu()) GTEST_SKIP() << "no GPU";
    auto m = random_model(cfg(GetParam()), 11);
    auto x = ids(140);
    ModelState st = make_state(*m);
    run_prefill(*m, std::span<const int32_t>(x.data(), 100), st);
    Decoder gpu(*m, st, Device::Cuda, Precision::Bf16);
    ASSERT_EQ(gpu.backend(), "cuda") << gpu.note();
    ModelState cpu_state = st;
    std::vector<float> lg, lc, all_g, all_c;
    for (int t = 100; t < 140; ++t) {
        gpu.step(x[size_t(t)], lg);
        decode_step(*m, x[size_t(t)], cpu_state, lc);
        all_g.insert(all_g.end(), lg.begin(), lg.end());
        all_c.insert(all_c.end(), lc.begin(), lc.end());
    }
    const double e = rel(all_g, all_c);
    std::printf("  bf16 graph decoder vs CPU float32 steps: %.2e\n", e);
    EXPECT_LT(e, 3e-2);
    EXPECT_GT(e, 0.0);
    EXPECT_EQ(gpu.state().tokens_seen, 140);
}

// Programmatic dependent launch in the step graph (docs/cuda.md, "Decoding on the GPU"): every kernel after
// the embedding waits in grid_dependency_wait, so every kernel → kernel edge becomes programmatic. A kernel
// that read its input before the wait would race the kernel before it; the logits and states of 80 steps
// (fp32 and bf16, with a filter kept) equal those of the graph with full dependencies bit for bit, in each
// PDL mode.
TEST_P(CudaForward, PdlStepGraphEqualsTheFullDependencyGraphBitForBit) {
    if (!have_gpu()) GTEST_SKIP() << "no GPU";
    auto m = random_model(cfg(GetParam()), 12);
    auto x = ids(180);
    const DeltaFilter f = test_filter(*m);
    ModelState st = make_state(*m);
    run_prefill(*m, std::span<const int32_t>(x.data(), 100), st);
    for (Precision prec : {Precision::Fp32, Precision::Bf16}) {
        std::vector<Decoded> runs;
        for (const char* mode : {"0", "auto", "launch", "exit"}) {
            // the step graph, whatever the shapes
            runs.push_back(
                decode_steps(*m, st, prec, &f, x, 100, 180,
                             {{"MAMBASCOPE_DECODE_PDL", mode}, {"MAMBASCOPE_DECODE_PERSISTENT", "0"}}));
            const detail::DecodeGraphInfo& info = runs.back().info;
            ASSERT_TRUE(info.graph) << mode;
            if (std::string(mode) == "0") {
                EXPECT_EQ(info.programmatic_edges, 0);
                EXPECT_EQ(info.pdl_mode, "off");
            } else {
                // a chain of kernels: every edge but the one into the embedding (from the id's copy)
                EXPECT_EQ(info.programmatic_edges, info.kernel_nodes - 1)
                    << mode << " " << precision_name(prec);
                EXPECT_EQ(info.pdl_mode, mode);
            }
            std::printf("  %s decode graph, PDL %s: %lld kernels, %lld programmatic edges\n",
                        precision_name(prec), mode, static_cast<long long>(info.kernel_nodes),
                        static_cast<long long>(info.programmatic_edges));
        }
        for (size_t k = 1; k < runs.size(); ++k) {
            SCOPED_TRACE(std::string(precision_name(prec)) + " mode " + std::to_string(k));
            expect_same_steps(runs[0], runs[k]);
        }
    }
}

// The port tests' model: bf16 Mamba-1 with d_model 2048 and d_inner 256, whose only grid above one block per
// SM is out_proj's (2048 rows, 256 blocks of 8 warps), after a 100-token prefill; `off` is its steps 100–139
// (test_filter kept) without PDL, the reference the tests compare with bit for bit.
struct WideOutProjModel {
    static constexpr int64_t kOutProjBlocks = 2048 / 8;
    ModelConfig c = cfg(Arch::Mamba1);
    std::shared_ptr<const Model> m;
    std::vector<int32_t> x = ids(140);
    DeltaFilter f;
    ModelState st;
    int sms = 0;
    Decoded off;
    explicit WideOutProjModel(uint64_t seed) {
        c.d_model = 2048;
        c.d_inner = 256;
        c.n_layer = 3;  // test_filter's layers
        m = random_model(c, seed);
        f = test_filter(*m);
        st = make_state(*m);
        run_prefill(*m, std::span<const int32_t>(x.data(), 100), st);
        int dev = 0;
        EXPECT_EQ(cudaGetDevice(&dev), cudaSuccess);
        EXPECT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), cudaSuccess);
        off = steps({{"MAMBASCOPE_DECODE_PDL", "0"}, {"MAMBASCOPE_DECODE_PERSISTENT", "0"}});
    }
    Decoded steps(std::initializer_list<std::pair<const char*, const char*>> env) const {
        return decode_steps(*m, st, Precision::Bf16, &f, x, 100, 140, env);
    }
    // the "exit" edges auto's rule leaves at k blocks per SM: one per out_proj where its grid is larger
    int64_t exit_edges(int64_t per_sm) const { return kOutProjBlocks > per_sm * sms ? c.n_layer : 0; }
};

// auto's port rule (docs/cuda.md, "Decoding on the GPU"; MAMBASCOPE_DECODE_PDL_LAUNCH_PER_SM): an edge takes
// the "launch" port after a grid of at most k blocks per SM, "exit" after a larger one. A bf16 Mamba-1 model
// with d_model 2048 has one grid above one block per SM, out_proj's (2048 rows, 256 blocks of 8 warps), whose
// edge into the next layer's in_proj (the head after the last layer) is the step's only "exit" edge at k = 1
// and turns to "launch" at k = 2 (on a GPU of 128 to 255 SMs) and at k = 6; the steps stay those of the graph
// without PDL bit for bit. Another value is an error. (The model's in_proj is small enough for the early
// launch, whose k is 2: pinned off here, it has its own test below.)
TEST(CudaForwardDevice, PdlLaunchPortThresholdMovesOutProjsEdgesAndKeepsTheSteps) {
    if (!have_gpu()) GTEST_SKIP() << "no GPU";
    const WideOutProjModel w(14);
    EXPECT_EQ(w.off.info.launch_port_edges, 0);
    for (const char* k : {static_cast<const char*>(nullptr), "1", "2", "6"}) {
        SCOPED_TRACE(k ? k : "(unset)");
        const Decoded d = w.steps({{"MAMBASCOPE_DECODE_PDL_LAUNCH_PER_SM", k},
                                   {"MAMBASCOPE_DECODE_PERSISTENT", "0"},
                                   {"MAMBASCOPE_DECODE_EARLY_LAUNCH", "0"}});
        ASSERT_TRUE(d.info.graph);
        EXPECT_EQ(d.info.pdl_mode, "auto");
        EXPECT_EQ(d.info.programmatic_edges, d.info.kernel_nodes - 1);
        EXPECT_EQ(d.info.launch_port_edges, d.info.programmatic_edges - w.exit_edges(k ? std::atoi(k) : 1));
        expect_same_steps(w.off, d);
    }
    expect_decoder_refuses(*w.m, w.st, "MAMBASCOPE_DECODE_PDL_LAUNCH_PER_SM", "4");
}

// The projections' trigger after their PDL wait (MAMBASCOPE_GEMV_TRIGGER = wait, norm, plain; docs/cuda.md,
// "The early launch"): on a model whose out_proj (256 blocks) takes the "exit" port,
// the kernel behind it then launches while it runs and reads nothing before its own wait, so 40 filtered
// steps with the trigger, under auto's rule and with the "launch" port after grids of two blocks per SM,
// equal the steps without PDL bit for bit. (A bad value:
// CudaGemv.TriggerAfterTheWaitKeepsEveryVariantsOutputs.) The early launch (MAMBASCOPE_DECODE_EARLY_LAUNCH),
// the default for this model's 2 MB in_proj, is the trigger on every projection with the "launch" port after
// grids of up to 2 blocks per SM: out_proj's edges take it (on a GPU of 128 to 255 SMs), and its steps equal
// those without PDL too; forced off, the decoder reports it off and out_proj's edges keep the "exit" port.
TEST(CudaForwardDevice, GemvTriggerKeepsTheSteps) {
    if (!have_gpu()) GTEST_SKIP() << "no GPU";
    const WideOutProjModel w(15);
    for (const char* trigger : {"wait", "norm", "plain"})
        for (const char* k : {static_cast<const char*>(nullptr), "2"}) {
            SCOPED_TRACE(std::string(trigger) + ", launch per SM " + (k ? k : "(unset)"));
            const Decoded d = w.steps({{"MAMBASCOPE_GEMV_TRIGGER", trigger},
                                       {"MAMBASCOPE_DECODE_PDL_LAUNCH_PER_SM", k},
                                       {"MAMBASCOPE_DECODE_PERSISTENT", "0"}});
            ASSERT_TRUE(d.info.graph);
            EXPECT_EQ(d.info.programmatic_edges, d.info.kernel_nodes - 1);
            expect_same_steps(w.off, d);
        }
    for (const char* early : {static_cast<const char*>(nullptr), "1", "0"}) {
        SCOPED_TRACE(std::string("early launch ") + (early ? early : "(unset)"));
        const Decoded d =
            w.steps({{"MAMBASCOPE_DECODE_EARLY_LAUNCH", early}, {"MAMBASCOPE_DECODE_PERSISTENT", "0"}});
        const bool on = !early || std::string(early) == "1";
        ASSERT_TRUE(d.info.graph);
        EXPECT_EQ(d.info.early_launch, on);
        EXPECT_EQ(d.info.launch_port_edges, d.info.programmatic_edges - w.exit_edges(on ? 2 : 1));
        expect_same_steps(w.off, d);
    }
    expect_decoder_refuses(*w.m, w.st, "MAMBASCOPE_DECODE_EARLY_LAUNCH", "yes");
}

// The conv inside in_proj's gemv (docs/cuda.md, "The conv inside in_proj"): a bf16 Mamba-1 step graph with
// the conv folded in (the default) has one kernel per layer fewer than with the conv as its own kernel
// (MAMBASCOPE_DECODE_CONV_FUSED=0), and 80 steps after a prefill, with a filter kept, give the same logits
// and states bit for bit. Mamba-2 (whose conv is over x, B and C) and float32 steps keep the conv kernel. A
// value other than 0 or 1 is an error.
TEST_P(CudaForward, ConvInsideInProjEqualsTheConvKernelsStepsBitForBit) {
    if (!have_gpu()) GTEST_SKIP() << "no GPU";
    auto m = random_model(cfg(GetParam()), 13);
    auto x = ids(180);
    const DeltaFilter f = test_filter(*m);
    ModelState st = make_state(*m);
    run_prefill(*m, std::span<const int32_t>(x.data(), 100), st);
    const bool m1 = GetParam() == Arch::Mamba1;
    for (Precision prec : {Precision::Bf16, Precision::Fp32}) {
        SCOPED_TRACE(precision_name(prec));
        const Decoded sep =
            decode_steps(*m, st, prec, &f, x, 100, 180,
                         {{"MAMBASCOPE_DECODE_CONV_FUSED", "0"}, {"MAMBASCOPE_DECODE_PERSISTENT", "0"}});
        const Decoded fused =
            decode_steps(*m, st, prec, &f, x, 100, 180,
                         {{"MAMBASCOPE_DECODE_PERSISTENT", "0"}, {"MAMBASCOPE_DECODE_XPROJ_FUSED", "0"}});
        const bool folds = m1 && prec == Precision::Bf16;
        ASSERT_TRUE(sep.info.graph && fused.info.graph);
        EXPECT_FALSE(sep.info.conv_fused);
        EXPECT_EQ(fused.info.conv_fused, folds);
        EXPECT_EQ(sep.info.kernel_nodes - fused.info.kernel_nodes, folds ? m->config.n_layer : 0);
        std::printf("  %s decode graph: %lld kernels with the conv kernels, %lld with the conv in in_proj\n",
                    precision_name(prec), static_cast<long long>(sep.info.kernel_nodes),
                    static_cast<long long>(fused.info.kernel_nodes));
        expect_same_steps(sep, fused);
        EXPECT_EQ(fused.state.tokens_seen, 180);
    }
    expect_decoder_refuses(*m, st, "MAMBASCOPE_DECODE_CONV_FUSED", "yes");
}

// L2 ahead (docs/cuda.md, "L2 ahead"; MAMBASCOPE_DECODE_L2_AHEAD): a bf16 Mamba-1 step graph whose x_proj
// prefetches out_proj's weights (1) and whose out_proj prefetches the next layer's in_proj or the LM head (2)
// gives the same logits and states bit for bit, with the conv folded into in_proj and as its own kernel; the
// decoder reports the mode; float32 and Mamba-2 decoders take none; another value is an error for every
// decoder.
TEST_P(CudaForward, L2AheadStepsEqualTheStepsWithoutBitForBit) {
    if (!have_gpu()) GTEST_SKIP() << "no GPU";
    auto m = random_model(cfg(GetParam()), 17);
    auto x = ids(140);
    const DeltaFilter f = test_filter(*m);
    ModelState st = make_state(*m);
    run_prefill(*m, std::span<const int32_t>(x.data(), 100), st);
    const bool m1 = GetParam() == Arch::Mamba1;
    for (const char* conv : {"0", "1"}) {
        SCOPED_TRACE(std::string("MAMBASCOPE_DECODE_CONV_FUSED=") + conv);
        const Decoded off = decode_steps(*m, st, Precision::Bf16, &f, x, 100, 140,
                                         {{"MAMBASCOPE_DECODE_CONV_FUSED", conv},
                                          {"MAMBASCOPE_DECODE_PERSISTENT", "0"},
                                          {"MAMBASCOPE_DECODE_L2_AHEAD", "0"}});
        EXPECT_EQ(off.info.l2_ahead, 0);
        for (const char* mode : {"1", "2"}) {
            const Decoded on = decode_steps(*m, st, Precision::Bf16, &f, x, 100, 140,
                                            {{"MAMBASCOPE_DECODE_CONV_FUSED", conv},
                                             {"MAMBASCOPE_DECODE_PERSISTENT", "0"},
                                             {"MAMBASCOPE_DECODE_L2_AHEAD", mode}});
            SCOPED_TRACE(std::string("MAMBASCOPE_DECODE_L2_AHEAD=") + mode);
            EXPECT_EQ(on.info.l2_ahead, m1 ? std::atoi(mode) : 0);
            EXPECT_EQ(on.info.kernel_nodes, off.info.kernel_nodes);  // no node of its own
            expect_same_steps(off, on);
        }
    }
    const Decoded fp32 =
        decode_steps(*m, st, Precision::Fp32, nullptr, x, 100, 104, {{"MAMBASCOPE_DECODE_L2_AHEAD", "2"}});
    EXPECT_EQ(fp32.info.l2_ahead, 0);
    expect_decoder_refuses(*m, st, "MAMBASCOPE_DECODE_L2_AHEAD", "all");
}

// x_proj inside in_proj's gemv (docs/cuda.md, "x_proj inside in_proj"; opt-in,
// MAMBASCOPE_DECODE_XPROJ_FUSED=1): a bf16 Mamba-1 step graph that folds the conv and whose x_proj rows are a
// multiple of 8 (dt_rank 8: 8 + 2·16) folds x_proj too: one kernel per layer fewer than without the setting.
// x_proj's sums are added in another order before their bf16 rounding, so 80 steps after a prefill, with a
// filter kept, are not bit for bit the unfused steps: they stay within 1.5e-2 of them and within the bf16
// chain's bound of the CPU's filtered float32 steps (3e-2, as the unfused graph). Its order is fixed by the
// grid, not by timing: the folded steps with full dependencies instead of PDL edges are the same bit for bit.
// dt_rank 4 (36 rows) keeps the x_proj kernel; a value other than 0 or 1 is an error.
TEST(CudaForwardDevice, XprojInsideInProjStaysWithinTheBf16BoundOfTheUnfusedSteps) {
    if (!have_gpu()) GTEST_SKIP() << "no GPU";
    ModelConfig c = cfg(Arch::Mamba1);
    c.dt_rank = 8;
    auto m = random_model(c, 14);
    auto x = ids(180);
    const DeltaFilter f = test_filter(*m);
    ModelState st = make_state(*m);
    run_prefill(*m, std::span<const int32_t>(x.data(), 100), st);
    const Decoded sep =
        decode_steps(*m, st, Precision::Bf16, &f, x, 100, 180, {{"MAMBASCOPE_DECODE_PERSISTENT", "0"}});
    const Decoded fused =
        decode_steps(*m, st, Precision::Bf16, &f, x, 100, 180,
                     {{"MAMBASCOPE_DECODE_PERSISTENT", "0"}, {"MAMBASCOPE_DECODE_XPROJ_FUSED", "1"}});
    ASSERT_TRUE(sep.info.graph && fused.info.graph);
    EXPECT_TRUE(sep.info.conv_fused && fused.info.conv_fused);
    EXPECT_FALSE(sep.info.xproj_fused);
    EXPECT_TRUE(fused.info.xproj_fused);
    EXPECT_EQ(sep.info.kernel_nodes - fused.info.kernel_nodes, c.n_layer);
    // the same bits whatever the timing: with full dependencies instead of PDL edges
    const Decoded fused_no_pdl = decode_steps(*m, st, Precision::Bf16, &f, x, 100, 180,
                                              {{"MAMBASCOPE_DECODE_PERSISTENT", "0"},
                                               {"MAMBASCOPE_DECODE_XPROJ_FUSED", "1"},
                                               {"MAMBASCOPE_DECODE_PDL", "0"}});
    EXPECT_TRUE(fused_no_pdl.info.xproj_fused);
    expect_same_steps(fused, fused_no_pdl);
    // the CPU's float32 steps, filtered
    ModelState cpu_state = st;
    std::vector<float> lc, cpu;
    for (int t = 100; t < 180; ++t) {
        decode_step_filtered(*m, x[size_t(t)], cpu_state, f, lc);
        cpu.insert(cpu.end(), lc.begin(), lc.end());
    }
    const double e_sep = rel(fused.logits, sep.logits), e_cpu = rel(fused.logits, cpu),
                 e_sep_cpu = rel(sep.logits, cpu);
    std::printf(
        "  x_proj in in_proj: %lld kernels (%lld without); logits vs unfused %.2e, vs CPU float32 %.2e "
        "(unfused vs CPU %.2e)\n",
        static_cast<long long>(fused.info.kernel_nodes), static_cast<long long>(sep.info.kernel_nodes), e_sep,
        e_cpu, e_sep_cpu);
    EXPECT_LT(e_sep, 1.5e-2);
    EXPECT_LT(e_cpu, 3e-2);
    for (size_t l = 0; l < st.layers.size(); ++l) {
        EXPECT_LT(rel(fused.state.layers[l].ssm, sep.state.layers[l].ssm), 1.5e-2) << "layer " << l;
        EXPECT_LT(rel(fused.state.layers[l].conv, sep.state.layers[l].conv), 1.5e-2) << "layer " << l;
    }
    EXPECT_EQ(fused.state.tokens_seen, 180);
    // 4 + 32 rows: the x_proj kernel stays
    auto m4 = random_model(cfg(Arch::Mamba1), 14);
    const Decoded d4 =
        decode_steps(*m4, st, Precision::Bf16, nullptr, x, 100, 102,
                     {{"MAMBASCOPE_DECODE_PERSISTENT", "0"}, {"MAMBASCOPE_DECODE_XPROJ_FUSED", "1"}});
    EXPECT_TRUE(d4.info.conv_fused);
    EXPECT_FALSE(d4.info.xproj_fused);
    setenv("MAMBASCOPE_DECODE_XPROJ_FUSED", "yes", 1);
    try {
        auto dec = detail::make_cuda_decoder(*m, st, Precision::Bf16, nullptr);
        ADD_FAILURE() << "MAMBASCOPE_DECODE_XPROJ_FUSED=yes was accepted";
    } catch (const mambascope::Error& e) {
        EXPECT_NE(std::string(e.what()).find("MAMBASCOPE_DECODE_XPROJ_FUSED"), std::string::npos) << e.what();
        EXPECT_FALSE(e.hint().empty());
    }
    unsetenv("MAMBASCOPE_DECODE_XPROJ_FUSED");
}

// Which step graphs fold the conv into in_proj (docs/cuda.md, "The conv inside in_proj"): by default the bf16
// Mamba-1 graphs up to the measured width (mamba-130m and mamba-370m fold, mamba-1.4b and mamba-2.8b keep the
// conv kernel); MAMBASCOPE_DECODE_CONV_FUSED=1 folds every width the layout allows, 0 none; float32, Mamba-2
// and launches without a graph never fold. Needs no GPU.
// The early launch's rule (docs/cuda.md, "The early launch"): bf16 Mamba-1 step graphs
// whose in_proj weights are at most kDecodeEarlyLaunchMaxInProjBytes (mamba-130m's 4.7 MB and mamba-370m's
// 8.4 MB, not mamba-1.4b's 33.5 MB or mamba-2.8b's 52 MB), none in float32, without a graph or for Mamba-2;
// MAMBASCOPE_DECODE_EARLY_LAUNCH=1 takes it at every size, 0 never, another value is an error naming it.
TEST(CudaDecodeChoice, EarlyLaunchUpToTheMeasuredSizeUnlessForced) {
    auto shape = [](int64_t d_model) {
        ModelConfig c = cfg(Arch::Mamba1);
        c.d_model = d_model;
        c.d_inner = 2 * d_model;
        c.dt_rank = (d_model + 15) / 16;
        return c;
    };
    const ModelConfig m130 = shape(768), m370 = shape(1024), m1b4 = shape(2048), m2b8 = shape(2560);
    {
        const EnvSettings unset({{"MAMBASCOPE_DECODE_EARLY_LAUNCH", nullptr}});
        EXPECT_TRUE(detail::decode_early_launch(m130, Precision::Bf16, true));
        EXPECT_TRUE(detail::decode_early_launch(m370, Precision::Bf16, true));
        EXPECT_FALSE(detail::decode_early_launch(m1b4, Precision::Bf16, true));
        EXPECT_FALSE(detail::decode_early_launch(m2b8, Precision::Bf16, true));
        EXPECT_FALSE(detail::decode_early_launch(m130, Precision::Fp32, true));
        EXPECT_FALSE(detail::decode_early_launch(m130, Precision::Bf16, false));
        EXPECT_FALSE(detail::decode_early_launch(cfg(Arch::Mamba2), Precision::Bf16, true));
    }
    {
        const EnvSettings on({{"MAMBASCOPE_DECODE_EARLY_LAUNCH", "1"}});
        EXPECT_TRUE(detail::decode_early_launch(m2b8, Precision::Bf16, true));
        EXPECT_FALSE(detail::decode_early_launch(m2b8, Precision::Fp32, true));
        EXPECT_FALSE(detail::decode_early_launch(cfg(Arch::Mamba2), Precision::Bf16, true));
    }
    {
        const EnvSettings off({{"MAMBASCOPE_DECODE_EARLY_LAUNCH", "0"}});
        EXPECT_FALSE(detail::decode_early_launch(m130, Precision::Bf16, true));
    }
    const EnvSettings bad({{"MAMBASCOPE_DECODE_EARLY_LAUNCH", "on"}});
    try {
        (void)detail::decode_early_launch(m130, Precision::Bf16, true);
        ADD_FAILURE() << "MAMBASCOPE_DECODE_EARLY_LAUNCH=on was accepted";
    } catch (const mambascope::Error& e) {
        EXPECT_NE(std::string(e.what()).find("MAMBASCOPE_DECODE_EARLY_LAUNCH"), std::string::npos)
            << e.what();
    }
}

TEST(CudaDecodeChoice, ConvFoldsUpToTheMeasuredWidthUnlessForced) {
    auto shape = [](int64_t d_model) {
        ModelConfig c = cfg(Arch::Mamba1);
        c.d_model = d_model;
        c.d_inner = 2 * d_model;
        c.dt_rank = (d_model + 15) / 16;
        return c;
    };
    const ModelConfig m130 = shape(768), m370 = shape(1024), m1b4 = shape(2048), m2b8 = shape(2560);
    unsetenv("MAMBASCOPE_DECODE_CONV_FUSED");
    EXPECT_TRUE(detail::decode_conv_fold(m130, Precision::Bf16, true));
    EXPECT_TRUE(detail::decode_conv_fold(m370, Precision::Bf16, true));
    EXPECT_FALSE(detail::decode_conv_fold(m1b4, Precision::Bf16, true));
    EXPECT_FALSE(detail::decode_conv_fold(m2b8, Precision::Bf16, true));
    EXPECT_FALSE(detail::decode_conv_fold(m130, Precision::Fp32, true));
    EXPECT_FALSE(detail::decode_conv_fold(m130, Precision::Bf16, false));
    EXPECT_FALSE(detail::decode_conv_fold(cfg(Arch::Mamba2), Precision::Bf16, true));
    setenv("MAMBASCOPE_DECODE_CONV_FUSED", "1", 1);
    EXPECT_TRUE(detail::decode_conv_fold(m1b4, Precision::Bf16, true));
    EXPECT_TRUE(detail::decode_conv_fold(m2b8, Precision::Bf16, true));
    EXPECT_FALSE(detail::decode_conv_fold(m2b8, Precision::Fp32, true));
    EXPECT_FALSE(detail::decode_conv_fold(cfg(Arch::Mamba2), Precision::Bf16, true));
    setenv("MAMBASCOPE_DECODE_CONV_FUSED", "0", 1);
    EXPECT_FALSE(detail::decode_conv_fold(m130, Precision::Bf16, true));
    setenv("MAMBASCOPE_DECODE_CONV_FUSED", "on", 1);
    try {
        (void)detail::decode_conv_fold(m130, Precision::Bf16, true);
        ADD_FAILURE() << "MAMBASCOPE_DECODE_CONV_FUSED=on was accepted";
    } catch (const mambascope::Error& e) {
        EXPECT_NE(std::string(e.what()).find("MAMBASCOPE_DECODE_CONV_FUSED"), std::string::npos) << e.what();
        EXPECT_FALSE(e.hint().empty()) << e.what();
    }
    unsetenv("MAMBASCOPE_DECODE_CONV_FUSED");
    // x_proj folds in only when asked (MAMBASCOPE_DECODE_XPROJ_FUSED=1), then wherever the conv does and its
    // rows are a multiple of 8, at most 256 (every Mamba-1 checkpoint: 80, 96, 160, 192)
    unsetenv("MAMBASCOPE_DECODE_XPROJ_FUSED");
    EXPECT_FALSE(detail::decode_xproj_fold(m130, true));
    setenv("MAMBASCOPE_DECODE_XPROJ_FUSED", "1", 1);
    for (const ModelConfig& mc : {m130, m370, m1b4, m2b8}) {
        EXPECT_TRUE(detail::decode_xproj_fold(mc, true)) << mc.d_model;
        EXPECT_FALSE(detail::decode_xproj_fold(mc, false)) << mc.d_model;
    }
    ModelConfig odd = m130;
    odd.dt_rank = 44;  // 44 + 32 = 76 rows
    EXPECT_FALSE(detail::decode_xproj_fold(odd, true));
    odd.dt_rank = 232;  // 264 rows
    EXPECT_FALSE(detail::decode_xproj_fold(odd, true));
    setenv("MAMBASCOPE_DECODE_XPROJ_FUSED", "0", 1);
    EXPECT_FALSE(detail::decode_xproj_fold(m130, true));
    setenv("MAMBASCOPE_DECODE_XPROJ_FUSED", "on", 1);
    try {
        (void)detail::decode_xproj_fold(m130, true);
        ADD_FAILURE() << "MAMBASCOPE_DECODE_XPROJ_FUSED=on was accepted";
    } catch (const mambascope::Error& e) {
        EXPECT_NE(std::string(e.what()).find("MAMBASCOPE_DECODE_XPROJ_FUSED"), std::string::npos) << e.what();
        EXPECT_FALSE(e.hint().empty());
    }
    unsetenv("MAMBASCOPE_DECODE_XPROJ_FUSED");
}

// The persistent decode kernel (docs/cuda.md, "The persistent decode kernel") behind the bf16 Mamba-1
// decoder (MAMBASCOPE_DECODE_PERSISTENT=1, and the ring kernel: =ring): 80 steps after a prefill, with a
// filter kept, give the logits and the states of the step graph of one kernel per operation (the default)
// bit for bit; on every grid the kernel takes (1 and 2 blocks per SM; the ring kernel's one). A model whose
// shapes it does not take keeps the step graph and says why.
TEST(CudaForwardDevice, PersistentDecodeKernelEqualsTheStepGraphBitForBit) {
    if (!have_gpu()) GTEST_SKIP() << "no GPU";
    ModelConfig c = cfg(Arch::Mamba1);
    c.dt_rank = 8;  // dt_rank + 2·d_state a multiple of 8 (16-byte rows of x_proj's output)
    auto m = random_model(c, 21);
    auto x = ids(180);
    DeltaFilter f;
    f.threshold.assign(3, std::vector<float>(size_t(c.d_inner), -INFINITY));
    for (int64_t ch = 0; ch < c.d_inner; ch += 3) f.threshold[1][size_t(ch)] = 0.02f;
    f.threshold[2][5] = INFINITY;
    ModelState st = make_state(*m);
    run_prefill(*m, std::span<const int32_t>(x.data(), 100), st);
    struct Got {
        std::vector<float> logits;
        ModelState state;
        detail::DecodeGraphInfo info;
    };
    auto decode = [&](const char* persistent, const char* per_sm) {
        setenv("MAMBASCOPE_DECODE_PERSISTENT", persistent, 1);
        setenv("MAMBASCOPE_DECODE_XPROJ_FUSED", "0", 1);  // the step graph's x_proj as its own gemv
        if (per_sm) setenv("MAMBASCOPE_DECODE_BLOCKS_PER_SM", per_sm, 1);
        auto dec = detail::make_cuda_decoder(*m, st, Precision::Bf16, &f);
        Got g{{}, st, {}};
        std::vector<float> lg;
        for (int t = 100; t < 180; ++t) {
            dec->step(x[size_t(t)], lg);
            g.logits.insert(g.logits.end(), lg.begin(), lg.end());
        }
        unsetenv("MAMBASCOPE_DECODE_PERSISTENT");
        unsetenv("MAMBASCOPE_DECODE_BLOCKS_PER_SM");
        unsetenv("MAMBASCOPE_DECODE_XPROJ_FUSED");
        g.info = dec->graph_info();
        dec->download(g.state);
        return g;
    };
    const Got want = decode("0", nullptr);
    ASSERT_TRUE(want.info.graph);
    EXPECT_FALSE(want.info.persistent);
    EXPECT_NE(want.info.persistent_note.find("MAMBASCOPE_DECODE_PERSISTENT=1"), std::string::npos);
    struct Variant {
        const char* kernel;
        const char* per_sm;
    };
    for (const Variant v : {Variant{"1", "1"}, Variant{"1", "2"}, Variant{"ring", nullptr}}) {
        const char* per_sm = v.per_sm ? v.per_sm : "-";
        const Got got = decode(v.kernel, v.per_sm);
        ASSERT_TRUE(got.info.persistent) << got.info.persistent_note;
        EXPECT_EQ(got.info.persistent_ring, std::string(v.kernel) == "ring");
        EXPECT_EQ(got.info.kernel_nodes, 1);
        EXPECT_GT(got.info.persistent_blocks, 0);
        std::printf("  persistent decode kernel %s, %s block(s)/SM: %lld blocks\n", v.kernel, per_sm,
                    static_cast<long long>(got.info.persistent_blocks));
        EXPECT_TRUE(got.logits == want.logits) << v.kernel << " " << per_sm;
        EXPECT_EQ(got.state.tokens_seen, 180);
        for (size_t l = 0; l < want.state.layers.size(); ++l) {
            EXPECT_TRUE(got.state.layers[l].ssm == want.state.layers[l].ssm) << l;
            EXPECT_TRUE(got.state.layers[l].conv == want.state.layers[l].conv) << l;
        }
    }
    expect_decoder_refuses(*m, st, "MAMBASCOPE_DECODE_PERSISTENT", "yes");
    // dt_rank 4: 4 + 32 is not a multiple of 8, so the step graph runs, with the reason
    auto m4 = random_model(cfg(Arch::Mamba1), 21);
    ModelState st4 = make_state(*m4);
    setenv("MAMBASCOPE_DECODE_PERSISTENT", "1", 1);
    auto dec4 = detail::make_cuda_decoder(*m4, st4, Precision::Bf16, nullptr);
    std::vector<float> lg;
    dec4->step(x[0], lg);
    unsetenv("MAMBASCOPE_DECODE_PERSISTENT");
    EXPECT_FALSE(dec4->graph_info().persistent);
    EXPECT_NE(dec4->graph_info().persistent_note.find("multiple of 8"), std::string::npos)
        << dec4->graph_info().persistent_note;
}

// The greedy tests' decoder start: a random model (Mamba-1 with dt_rank 8, which the persistent kernel
// takes), 100 tokens prefilled on the CPU, a filter that keeps every third channel of layer 1 at Δ ≥ 0.02,
// and n, the candidate count, short of the padded rows.
struct GreedyFixture {
    std::shared_ptr<const Model> m;
    std::vector<int32_t> x;
    DeltaFilter f;
    ModelState st;
    int64_t n = 0;
};
GreedyFixture greedy_fixture(Arch arch, uint64_t seed) {
    ModelConfig c = cfg(arch);
    if (arch == Arch::Mamba1) c.dt_rank = 8;
    GreedyFixture g;
    g.m = random_model(c, seed);
    g.x = ids(100);
    g.f.threshold.assign(3, std::vector<float>(size_t(c.channels()), -INFINITY));
    for (int64_t ch = 0; ch < c.channels(); ch += 3) g.f.threshold[1][size_t(ch)] = 0.02f;
    g.st = make_state(*g.m);
    run_prefill(*g.m, std::span<const int32_t>(g.x.data(), 100), g.st);
    g.n = g.m->vocab_rows() - 3;
    return g;
}

// Greedy steps (docs/cuda.md, "Greedy steps"): step_greedy's ids equal std::max_element over the first n
// logits of step() on a twin decoder (fp32 and bf16, a filter kept, n short of the padded rows), the twins'
// states stay equal bit for bit, and interleaving step() and step_greedy() on one decoder (two graphs, one
// state) changes nothing. Mamba-1 also through the persistent decode kernel (dt_rank 8). The argmax inside
// the LM head (the default, bf16) and in its own kernel (MAMBASCOPE_ARGMAX=vec, and fp32 and the persistent
// kernel always), each where graph_info says it is.
TEST_P(CudaForward, GreedyStepsEqualTheHostArgmaxOfTheLogits) {
    if (!have_gpu()) GTEST_SKIP() << "no GPU";
    const auto& [m, x, f, st, n] = greedy_fixture(GetParam(), 31);
    std::vector<const char*> persistent = {"0"};
    if (GetParam() == Arch::Mamba1) persistent.push_back("1");
    for (Precision prec : {Precision::Fp32, Precision::Bf16})
        for (const char* p : persistent)
            for (const char* where : {static_cast<const char*>(nullptr), "vec"}) {
                if (prec == Precision::Fp32 && std::string(p) == "1")
                    continue;  // the persistent kernel is bf16
                SCOPED_TRACE(std::string(precision_name(prec)) + " persistent=" + p +
                             " MAMBASCOPE_ARGMAX=" + (where ? where : "(unset)"));
                const EnvSettings argmax_env({{"MAMBASCOPE_ARGMAX", where}});
                setenv("MAMBASCOPE_DECODE_PERSISTENT", p, 1);
                auto host = detail::make_cuda_decoder(*m, st, prec, &f);
                auto dev = detail::make_cuda_decoder(*m, st, prec, &f);
                std::vector<float> lg;
                int32_t next = x[99], distinct = 0, prev = -1;
                for (int t = 0; t < 60; ++t) {
                    host->step(next, lg);
                    const int32_t want = int32_t(std::max_element(lg.begin(), lg.begin() + n) - lg.begin());
                    int32_t got;
                    if (t % 7 == 3) {  // the logits graph on the greedy decoder too
                        std::vector<float> lg2;
                        dev->step(next, lg2);
                        EXPECT_TRUE(lg2 == lg) << t;
                        got = int32_t(std::max_element(lg2.begin(), lg2.begin() + n) - lg2.begin());
                    } else {
                        got = dev->step_greedy(next, n);
                    }
                    ASSERT_EQ(got, want) << "step " << t;
                    distinct += got != prev, prev = got;
                    next = got;
                }
                if (std::string(p) == "0") {
                    // the greedy graph alone: every kernel edge programmatic, the argmax's from the head too
                    auto greedy = detail::make_cuda_decoder(*m, st, prec, &f);
                    (void)greedy->step_greedy(x[99], n);
                    const detail::DecodeGraphInfo gi = greedy->graph_info();
                    EXPECT_EQ(gi.programmatic_edges, gi.kernel_nodes - 1) << gi.kernel_nodes;
                }
                unsetenv("MAMBASCOPE_DECODE_PERSISTENT");
                EXPECT_GT(distinct, 3);  // not a constant sequence
                EXPECT_EQ(dev->graph_info().persistent, std::string(p) == "1");
                const bool in_head = prec == Precision::Bf16 && std::string(p) == "0" && !where;
                EXPECT_EQ(dev->graph_info().greedy_argmax, in_head ? "head" : "kernel");
                ModelState a = st, b = st;
                host->download(a), dev->download(b);
                EXPECT_EQ(b.tokens_seen, 160);
                for (size_t l = 0; l < a.layers.size(); ++l) {
                    EXPECT_TRUE(a.layers[l].ssm == b.layers[l].ssm) << l;
                    EXPECT_TRUE(a.layers[l].conv == b.layers[l].conv) << l;
                }
            }
    Decoder d(*m, st, Device::Cuda, Precision::Bf16);
    EXPECT_THROW(d.step_greedy(1, 0), Error);
    EXPECT_THROW(d.step_greedy(1, m->vocab_rows() + 1), Error);
}

// Greedy runs on the device (docs/cuda.md, "Greedy runs on the device"): step_greedy_run's ids equal a twin's
// step_greedy loop fed back, and the states stay equal bit for bit, with 1, 8 (the default) and 16 steps per
// graph, a run that is not a multiple of them (the rest through step_greedy) and one past the 1,024 ids of a
// copy back; the run's graph is K step graphs, programmatic edges within each step and full ones between
// steps; a step() after the runs continues the same state. MAMBASCOPE_DECODE_RUN=0 and fp32 (no
// argmax in the head) loop over step_greedy, with the same ids.
TEST_P(CudaForward, GreedyRunOnTheDeviceEqualsStepGreedyFedBack) {
    if (!have_gpu()) GTEST_SKIP() << "no GPU";
    const auto& [m, x, f, st, n] = greedy_fixture(GetParam(), 33);
    struct Case {
        Precision prec;
        const char* run;  // MAMBASCOPE_DECODE_RUN
        int64_t steps;    // graph_info().greedy_run_steps after the runs
    };
    for (const Case k :
         {Case{Precision::Bf16, nullptr, 8}, Case{Precision::Bf16, "1", 1}, Case{Precision::Bf16, "16", 16},
          Case{Precision::Bf16, "0", 0}, Case{Precision::Fp32, nullptr, 0}}) {
        SCOPED_TRACE(std::string(precision_name(k.prec)) +
                     " MAMBASCOPE_DECODE_RUN=" + (k.run ? k.run : "(unset)"));
        const EnvSettings env({{"MAMBASCOPE_DECODE_RUN", k.run}});
        auto loop = detail::make_cuda_decoder(*m, st, k.prec, &f);
        auto run = detail::make_cuda_decoder(*m, st, k.prec, &f);
        int32_t next = x[99];
        std::set<int32_t> seen;
        for (const int64_t count : {int64_t(37), int64_t(1100)}) {
            const int32_t first = next;
            std::vector<int32_t> want;
            for (int64_t t = 0; t < count; ++t) want.push_back(next = loop->step_greedy(next, n));
            const std::vector<int32_t> got = run->step_greedy_run(first, n, count);
            ASSERT_EQ(got.size(), want.size());
            for (size_t t = 0; t < got.size(); ++t)
                ASSERT_EQ(got[t], want[t]) << "run of " << count << ", step " << t;
            seen.insert(got.begin(), got.end());
        }
        EXPECT_GT(seen.size(), 3u);  // not a constant sequence
        const detail::DecodeGraphInfo gi = run->graph_info();
        EXPECT_EQ(gi.greedy_run_steps, k.steps);
        if (k.steps > 0) {
            // K copies of the greedy step graph's kernels, every kernel edge programmatic but the K − 1 from
            // a step's head into the next step's embedding (full dependencies: greedy_run.cu says why)
            auto one = detail::make_cuda_decoder(*m, st, k.prec, &f);
            (void)one->step_greedy(x[99], n);
            EXPECT_EQ(gi.greedy_run_kernel_nodes, k.steps * one->graph_info().kernel_nodes);
            EXPECT_EQ(gi.greedy_run_programmatic_edges, gi.greedy_run_kernel_nodes - k.steps);
        }
        std::vector<float> a, b;
        loop->step(next, a);
        run->step(next, b);
        EXPECT_TRUE(a == b);
        ModelState sa = st, sb = st;
        loop->download(sa), run->download(sb);
        EXPECT_EQ(sb.tokens_seen, 100 + 37 + 1100 + 1);
        for (size_t l = 0; l < sa.layers.size(); ++l) {
            EXPECT_TRUE(sa.layers[l].ssm == sb.layers[l].ssm) << l;
            EXPECT_TRUE(sa.layers[l].conv == sb.layers[l].conv) << l;
        }
        EXPECT_THROW(run->step_greedy_run(next, n, -1), Error);
        EXPECT_THROW(run->step_greedy_run(int32_t(m->vocab_rows()), n, 8), Error);
        EXPECT_THROW(run->step_greedy_run(next, 0, 8), Error);
    }
    const EnvSettings bad({{"MAMBASCOPE_DECODE_RUN", "3"}});
    EXPECT_THROW(detail::make_cuda_decoder(*m, st, Precision::Bf16, &f), Error);
}

// The L2 branch (docs/cuda.md, "The L2 branch"; MAMBASCOPE_DECODE_L2_AHEAD=branch): a bf16 Mamba-1 step graph
// with a prefetch kernel per layer on a parallel branch gives the same logits, states and greedy ids bit for
// bit as the chain alone, with the conv folded into in_proj and as its own kernel, with x_proj folded too,
// with every budget share, in step() and in greedy runs on the device. The branch adds one kernel node per
// layer and no programmatic edge (its edges are full dependencies; its join goes into the step's copy or the
// next step's embedding); float32 and Mamba-2 decoders take none; a share it does not know is an error.
TEST_P(CudaForward, L2BranchStepsAndRunsEqualTheChainAloneBitForBit) {
    if (!have_gpu()) GTEST_SKIP() << "no GPU";
    const auto& [m, x, f, st, n] = greedy_fixture(GetParam(), 35);
    const bool m1 = GetParam() == Arch::Mamba1;
    struct Case {
        const char* conv;   // MAMBASCOPE_DECODE_CONV_FUSED
        const char* xproj;  // MAMBASCOPE_DECODE_XPROJ_FUSED
        const char* share;  // MAMBASCOPE_DECODE_L2_BRANCH_SHARE
    };
    for (const Case k : {Case{"0", "0", nullptr}, Case{"1", "0", nullptr}, Case{"1", "1", nullptr},
                         Case{"0", "0", "0.25"}, Case{"1", "0", "1"}}) {
        SCOPED_TRACE(std::string("conv ") + k.conv + ", x_proj " + k.xproj + ", share " +
                     (k.share ? k.share : "(unset)"));
        const Decoded off = decode_steps(*m, st, Precision::Bf16, &f, x, 60, 100,
                                         {{"MAMBASCOPE_DECODE_CONV_FUSED", k.conv},
                                          {"MAMBASCOPE_DECODE_XPROJ_FUSED", k.xproj},
                                          {"MAMBASCOPE_DECODE_PERSISTENT", "0"},
                                          {"MAMBASCOPE_DECODE_L2_BRANCH_SHARE", k.share},
                                          {"MAMBASCOPE_DECODE_L2_AHEAD", "0"}});
        const Decoded on = decode_steps(*m, st, Precision::Bf16, &f, x, 60, 100,
                                        {{"MAMBASCOPE_DECODE_CONV_FUSED", k.conv},
                                         {"MAMBASCOPE_DECODE_XPROJ_FUSED", k.xproj},
                                         {"MAMBASCOPE_DECODE_PERSISTENT", "0"},
                                         {"MAMBASCOPE_DECODE_L2_BRANCH_SHARE", k.share},
                                         {"MAMBASCOPE_DECODE_L2_AHEAD", "branch"}});
        EXPECT_EQ(on.info.l2_ahead, m1 ? 3 : 0);
        EXPECT_EQ(on.info.kernel_nodes, off.info.kernel_nodes + (m1 ? m->config.n_layer : 0));
        EXPECT_EQ(on.info.programmatic_edges, off.info.programmatic_edges);
        expect_same_steps(off, on);
        // greedy runs on the device: 8 steps per graph, each with its branch
        std::vector<int32_t> got[2];
        ModelState after[2] = {st, st};
        detail::DecodeGraphInfo gi[2];
        for (int b = 0; b < 2; ++b) {
            const EnvSettings e({{"MAMBASCOPE_DECODE_CONV_FUSED", k.conv},
                                 {"MAMBASCOPE_DECODE_XPROJ_FUSED", k.xproj},
                                 {"MAMBASCOPE_DECODE_PERSISTENT", "0"},
                                 {"MAMBASCOPE_DECODE_L2_BRANCH_SHARE", k.share},
                                 {"MAMBASCOPE_DECODE_L2_AHEAD", b ? "branch" : "0"}});
            auto dec = detail::make_cuda_decoder(*m, st, Precision::Bf16, &f);
            got[b] = dec->step_greedy_run(x[99], n, 45);
            gi[b] = dec->graph_info();
            dec->download(after[b]);
        }
        EXPECT_EQ(gi[1].greedy_run_steps, 8);
        EXPECT_EQ(gi[1].greedy_run_kernel_nodes,
                  gi[0].greedy_run_kernel_nodes + (m1 ? 8 * m->config.n_layer : 0));
        EXPECT_EQ(gi[1].greedy_run_programmatic_edges, gi[0].greedy_run_programmatic_edges);
        EXPECT_TRUE(got[1] == got[0]);
        for (size_t l = 0; l < after[0].layers.size(); ++l) {
            EXPECT_TRUE(after[1].layers[l].ssm == after[0].layers[l].ssm) << l;
            EXPECT_TRUE(after[1].layers[l].conv == after[0].layers[l].conv) << l;
        }
    }
    const Decoded fp32 = decode_steps(*m, st, Precision::Fp32, nullptr, x, 96, 100,
                                      {{"MAMBASCOPE_DECODE_L2_AHEAD", "branch"}});
    EXPECT_EQ(fp32.info.l2_ahead, 0);
    expect_decoder_refuses(*m, st, "MAMBASCOPE_DECODE_L2_BRANCH_SHARE", "0.3");
}

// z on a branch (docs/cuda.md, "z on a branch"; MAMBASCOPE_DECODE_Z_BRANCH=1): a bf16 Mamba-1 step graph
// splits in_proj into its x half on the chain (with the conv folded in, or the conv kernel after it) and its
// z half on a parallel branch, joined into the scan step: the same logits, states and greedy ids bit for bit
// (every row is the same warp code and the same norm), alone and with the L2 branch too. One kernel node per
// layer more and two programmatic edges (x half → z half, z half → scan step: both kernels wait in
// grid_dependency_wait), and one more from each z half to the next (the branch's kernels follow one another
// on its stream: L − 1 per step graph, K·L − 1 per run graph of K steps); with x_proj folded into in_proj,
// and for Mamba-2 and float32, nothing changes; another value is an error.
TEST_P(CudaForward, ZBranchStepsAndRunsEqualOneInProjBitForBit) {
    if (!have_gpu()) GTEST_SKIP() << "no GPU";
    const auto& [m, x, f, st, n] = greedy_fixture(GetParam(), 37);
    const bool m1 = GetParam() == Arch::Mamba1;
    struct Case {
        const char* conv;   // MAMBASCOPE_DECODE_CONV_FUSED
        const char* l2;     // MAMBASCOPE_DECODE_L2_AHEAD
        const char* xproj;  // MAMBASCOPE_DECODE_XPROJ_FUSED
        bool split;         // the step takes the z branch
    };
    for (const Case k : {Case{"0", "0", "0", m1}, Case{"0", "branch", "0", m1}, Case{"1", "0", "0", m1},
                         Case{"1", "branch", "0", m1}, Case{"1", "0", "1", false}}) {
        SCOPED_TRACE(std::string("conv ") + k.conv + ", L2 ahead " + k.l2 + ", x_proj " + k.xproj);
        Decoded d[2];
        std::vector<int32_t> got[2];
        ModelState after[2] = {st, st};
        detail::DecodeGraphInfo gi[2];
        for (int b = 0; b < 2; ++b) {
            const std::initializer_list<std::pair<const char*, const char*>> env = {
                {"MAMBASCOPE_DECODE_CONV_FUSED", k.conv},
                {"MAMBASCOPE_DECODE_PERSISTENT", "0"},
                {"MAMBASCOPE_DECODE_L2_AHEAD", k.l2},
                {"MAMBASCOPE_DECODE_XPROJ_FUSED", k.xproj},
                {"MAMBASCOPE_DECODE_Z_BRANCH", b ? "1" : "0"}};
            d[b] = decode_steps(*m, st, Precision::Bf16, &f, x, 60, 100, env);
            const EnvSettings e(env);
            auto dec = detail::make_cuda_decoder(*m, st, Precision::Bf16, &f);
            got[b] = dec->step_greedy_run(x[99], n, 45);
            gi[b] = dec->graph_info();
            dec->download(after[b]);
        }
        EXPECT_FALSE(d[0].info.z_branch);
        EXPECT_EQ(d[1].info.z_branch, k.split);
        const int64_t L = k.split ? m->config.n_layer : 0;
        EXPECT_EQ(d[1].info.kernel_nodes, d[0].info.kernel_nodes + L);
        const int64_t chain = L ? L - 1 : 0, run_chain = L ? 8 * L - 1 : 0;  // z half → next z half
        EXPECT_EQ(d[1].info.programmatic_edges, d[0].info.programmatic_edges + 2 * L + chain);
        expect_same_steps(d[0], d[1]);
        EXPECT_EQ(gi[1].greedy_run_steps, 8);
        EXPECT_EQ(gi[1].greedy_run_kernel_nodes, gi[0].greedy_run_kernel_nodes + 8 * L);
        EXPECT_EQ(gi[1].greedy_run_programmatic_edges,
                  gi[0].greedy_run_programmatic_edges + 16 * L + run_chain);
        EXPECT_TRUE(got[1] == got[0]);
        for (size_t l = 0; l < after[0].layers.size(); ++l) {
            EXPECT_TRUE(after[1].layers[l].ssm == after[0].layers[l].ssm) << l;
            EXPECT_TRUE(after[1].layers[l].conv == after[0].layers[l].conv) << l;
        }
    }
    const Decoded fp32 =
        decode_steps(*m, st, Precision::Fp32, nullptr, x, 96, 100, {{"MAMBASCOPE_DECODE_Z_BRANCH", "1"}});
    EXPECT_FALSE(fp32.info.z_branch);
    expect_decoder_refuses(*m, st, "MAMBASCOPE_DECODE_Z_BRANCH", "yes");
}
INSTANTIATE_TEST_SUITE_P(Archs, CudaForward, ::testing::Values(Arch::Mamba1, Arch::Mamba2),
                         [](const auto& i) { return i.param == Arch::Mamba1 ? "Mamba1" : "Mamba2"; });

TEST(CudaForwardDevice, AutoFallsBackWithANoteWhenTheModelIsUnsupported) {
    ModelConfig c = cfg(Arch::Mamba1);
    c.d_state = 5;  // the CUDA Mamba-1 scan is built for d_state 16
    auto m = random_model(c, 1);
    auto x = ids(20);
    ForwardOptions opt;
    opt.device = Device::Auto;
    auto r = run_forward(*m, x, opt);
    EXPECT_EQ(r.backend, "cpu");
    EXPECT_FALSE(r.note.empty());
}

// Reduced-precision projections: the stated bounds (docs/cuda.md) on normalised logits error vs the float32
// CPU forward, and the NLL within a small absolute margin.
TEST_P(CudaForward, Tf32AndBf16ProjectionsStayWithinTheirBounds) {
    auto m = random_model(cfg(GetParam()), 8);
    auto x = ids(300);
    auto cpu = run(*m, x, Device::Cpu, nullptr);
    for (auto [prec, bound] : {std::pair{Precision::Tf32, 5e-3}, std::pair{Precision::Bf16, 3e-2}}) {
        ForwardOptions opt;
        opt.device = Device::Cuda;
        opt.precision = prec;
        std::vector<float> logits;
        HeadRequest head;
        head.nll = true;
        head.all_logits = true;
        head.logits_sink = [&](int64_t, const float* r, int64_t V) { logits.insert(logits.end(), r, r + V); };
        auto res = run_forward(*m, x, opt, head);
        const double e = rel(logits, cpu.logits);
        EXPECT_LT(e, bound) << precision_name(prec);
        EXPECT_GT(e, 0.0) << precision_name(prec) << " should actually change the arithmetic";
        EXPECT_NEAR(res.mean_nll(), cpu.res.mean_nll(), 10 * bound) << precision_name(prec);
    }
}

// bf16 Mamba-1 prefill through the time-parallel scan (kernels/cuda/scan_mamba1_tp.cuh; MAMBASCOPE_M1_TP): a
// model whose x_proj rows keep B and C on 16-byte boundaries (dt_rank 8), across prefill chunks of 256 tokens
// and a last one of 188, filtered or not. With each shape the logits and final states stay within the bf16
// bound of the CPU's float32 forward, the final states within it of the chunked bf16 scan's
// (MAMBASCOPE_M1_TP=0), and the logits differ from the chunked scan's, which shows the time-parallel scan
// ran.
TEST(CudaForwardTp, Mamba1Bf16PrefillWithTheTimeParallelScanStaysWithinTheBf16Bound) {
    if (!have_gpu()) GTEST_SKIP() << "no usable GPU";
    ModelConfig c = cfg(Arch::Mamba1);
    c.dt_rank = 8;
    auto m = random_model(c, 10);
    auto x = ids(700);
    const DeltaFilter f = test_filter(*m);
    auto bf16_run = [&](const DeltaFilter* filter, const char* tp) {
        return bf16_prefill(*m, x, filter, {{"MAMBASCOPE_M1_TP", tp}});
    };
    for (const DeltaFilter* filter : std::vector<const DeltaFilter*>{nullptr, &f}) {
        SCOPED_TRACE(filter ? "filtered" : "vanilla");
        const ::Run cpu = run(*m, x, Device::Cpu, filter, nullptr, 256);
        const ::Run chunked = bf16_run(filter, "0");
        for (size_t l = 0; l < cpu.state.layers.size(); ++l)
            std::printf("  chunked bf16 scan's final state vs CPU float32 (%s), layer %zu: %.2e\n",
                        filter ? "filtered" : "vanilla", l,
                        rel(chunked.state.layers[l].ssm, cpu.state.layers[l].ssm));
        for (const char* shape : {"4x8", "4x16", "8x8", "8x16"}) {
            SCOPED_TRACE(shape);
            const ::Run tp = bf16_run(filter, shape);
            EXPECT_LT(rel(tp.logits, cpu.logits), 3e-2);
            EXPECT_NEAR(tp.res.mean_nll(), cpu.res.mean_nll(), 0.3);
            // the states against the chunked bf16 scan's (the same bf16 chain): against the CPU's float32
            // forward the filtered run's layer-1 state is 6.5e-2 off, for the chunked scan as for every shape
            // (printed above; the H200, twelfth stop): tokens near a threshold that the bf16 Δ filters
            // differently from the float32 Δ
            for (size_t l = 0; l < cpu.state.layers.size(); ++l)
                EXPECT_LT(rel(tp.state.layers[l].ssm, chunked.state.layers[l].ssm), 3e-2) << "layer " << l;
            EXPECT_GT(rel(tp.logits, chunked.logits), 0.0) << "the time-parallel scan did not run";
            std::printf(
                "  bf16 Mamba-1 prefill vs CPU float32 (%s, %s): logits %.2e time-parallel, %.2e chunked\n",
                filter ? "filtered" : "vanilla", shape, rel(tp.logits, cpu.logits),
                rel(chunked.logits, cpu.logits));
        }
    }
    EXPECT_THROW(bf16_run(nullptr, "5x5"), mambascope::Error);
    EXPECT_EQ(std::getenv("MAMBASCOPE_M1_TP"), nullptr);
}

// bf16 Mamba-2 prefill takes the chunked SSD scan (kernels/cuda/scan_mamba2_ssd.cuh) from 128 tokens on,
// with bf16 activations from in_proj to out_proj (the bf16 chain): across prefill chunks of 256 tokens (and a
// last chunk of 188, which takes the chain too; 700 = 2·256 + 188), filtered or not, the logits and the final
// states stay within the bf16 bound of the CPU's float32 forward. They differ from the SSD scan with float32
// activations (MAMBASCOPE_M2_BF16_CHAIN=0) and from the recurrent scan's bf16 run (MAMBASCOPE_M2_SSD=0),
// which shows that each path actually ran.
TEST(CudaForwardSsd, Mamba2Bf16PrefillUsesTheChunkedScanWithinTheBf16Bound) {
    if (!have_gpu()) GTEST_SKIP() << "no usable GPU";
    auto m = random_model(cfg(Arch::Mamba2), 9);
    auto x = ids(700);
    const DeltaFilter f = test_filter(*m);
    enum Path { kChain, kSsdFloatActivations, kRecurrent };
    auto bf16_run = [&](const DeltaFilter* filter, Path path) {
        return bf16_prefill(*m, x, filter,
                            {{"MAMBASCOPE_M2_SSD", path == kRecurrent ? "0" : nullptr},
                             {"MAMBASCOPE_M2_BF16_CHAIN", path == kSsdFloatActivations ? "0" : nullptr}});
    };
    for (const DeltaFilter* filter : std::vector<const DeltaFilter*>{nullptr, &f}) {
        SCOPED_TRACE(filter ? "filtered" : "vanilla");
        const ::Run cpu = run(*m, x, Device::Cpu, filter, nullptr, 256);
        const ::Run chain = bf16_run(filter, kChain), ssd = bf16_run(filter, kSsdFloatActivations),
                    rec = bf16_run(filter, kRecurrent);
        for (const ::Run* r : {&chain, &ssd}) {
            SCOPED_TRACE(r == &chain ? "bf16 chain" : "float32 activations");
            EXPECT_LT(rel(r->logits, cpu.logits), 3e-2);
            EXPECT_NEAR(r->res.mean_nll(), cpu.res.mean_nll(), 0.3);
            for (size_t l = 0; l < cpu.state.layers.size(); ++l) {
                EXPECT_LT(rel(r->state.layers[l].ssm, cpu.state.layers[l].ssm), 3e-2) << "layer " << l;
                EXPECT_LT(rel(r->state.layers[l].conv, cpu.state.layers[l].conv), 3e-2) << "layer " << l;
            }
        }
        EXPECT_GT(rel(ssd.logits, rec.logits), 0.0) << "the SSD scan did not run";
        EXPECT_GT(rel(chain.logits, ssd.logits), 0.0) << "the bf16 chain did not run";
        std::printf(
            "  bf16 SSD prefill vs CPU float32 (%s): logits %.2e with the bf16 chain, %.2e with float32 "
            "activations (recurrent bf16: %.2e)\n",
            filter ? "filtered" : "vanilla", rel(chain.logits, cpu.logits), rel(ssd.logits, cpu.logits),
            rel(rec.logits, cpu.logits));
    }
}
