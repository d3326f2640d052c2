// Every CUDA kernel against the CPU reference in kernels/cpu on random inputs (odd sizes, T not a multiple of
// the chunk, carried state, filter on/off, probes). Error = max|gpu − cpu| / max|cpu| over the whole output;
// outputs are poisoned with NaN before each run so an unwritten element fails. Tolerances (per kernel):
//   scans (Mamba-1 and Mamba-2), conv1d, norms, fp32 GEMM: 1e-5;  TF32 GEMM: 5e-3;
//   Mamba-1 with fast_exp (opt-in): 1e-3 against float64.
//   Mamba-2 chunked SSD (bf16 tensor-core operands): 2e-3 against its CPU twin with the same bf16 rounding
//   points (kernels/cpu/scan_ssd.h), 2e-2 against the fp32 recurrent scan (the bf16 bound).
// Skipped when no CUDA device is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "cpu/activations.h"
#include "cpu/conv1d.h"
#include "cpu/norm.h"
#include "cpu/scan.h"
#include "cpu/scan_ssd.h"
#include "cuda/argmax.cuh"
#include "cuda/conv1d_silu.cuh"
#include "cuda/cuda_check.cuh"
#include "cuda/decode_mamba1.cuh"
#include "cuda/gemm.cuh"
#include "cuda/gemv.cuh"
#include "cuda/greedy_run.cuh"
#include "cuda/l2_prefetch.cuh"
#include "cuda/rmsnorm.cuh"
#include "cuda/scan_mamba1.cuh"
#include "cuda/scan_mamba1_tp.cuh"
#include "cuda/scan_mamba2.cuh"
#include "cuda/scan_mamba2_ssd.cuh"
#include "mambascope/error.h"
#ifdef MAMBASCOPE_CUDA_EMULATED
#include "device_math_emu.h"  // the device math translated to C++, as every emulated kernel runs it
#endif

namespace {

namespace kc = mambascope::kernels;
namespace kg = mambascope::kernels::cuda;

constexpr double kTol = 1e-5;      // fp32 kernels vs the CPU reference (normalised max error)
constexpr double kTolTf32 = 5e-3;  // TF32 tensor-core GEMM (10-bit mantissa inputs)
// Mamba-1 with fast_exp (MUFU ex2.approx, ≈ 2 ulp near 1): the error can grow with the longest channel memory
// (≈ 3000 tokens in these inputs); the measured value is printed by AgreesWithFloat64Reference.
constexpr double kTolFastExp = 1e-3;

bool has_gpu() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define REQUIRE_GPU() \
    if (!has_gpu()) GTEST_SKIP() << "no CUDA device"

// Normalised max error; NaN/inf anywhere (an unwritten or broken output) gives +inf.
template <typename T1, typename T2>
double rel_err(const std::vector<T1>& got, const std::vector<T2>& want) {
    EXPECT_EQ(got.size(), want.size());
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
        const double g = got[i], w = want[i];
        if (!std::isfinite(g) || !std::isfinite(w)) return std::numeric_limits<double>::infinity();
        num = std::max(num, std::abs(g - w));
        den = std::max(den, std::abs(w));
    }
    return num / std::max(den, 1e-30);
}

// Device buffer of floats (or any POD), poisoned with NaN bytes on creation.
template <typename T>
struct Dev {
    T* p = nullptr;
    size_t n = 0;
    explicit Dev(size_t count) : n(count) {
        CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(1, n) * sizeof(T)));
        poison();
    }
    explicit Dev(const std::vector<T>& v) : Dev(v.size()) { upload(v); }
    ~Dev() { cudaFree(p); }
    Dev(const Dev&) = delete;
    Dev& operator=(const Dev&) = delete;
    void poison() { CUDA_CHECK(cudaMemset(p, 0xff, std::max<size_t>(1, n) * sizeof(T))); }
    void zero() { CUDA_CHECK(cudaMemset(p, 0, std::max<size_t>(1, n) * sizeof(T))); }
    void upload(const std::vector<T>& v) {
        CUDA_CHECK(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    }
    std::vector<T> download() const {
        std::vector<T> v(n);
        CUDA_CHECK(cudaDeviceSynchronize());
        CUDA_CHECK(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
        return v;
    }
};

std::vector<float> randn(size_t n, std::mt19937& rng, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

std::vector<float> uniform(size_t n, std::mt19937& rng, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// Rows [0, rows) of a (rows × ld) matrix, columns [0, cols): the logical part, for comparing strided outputs.
std::vector<float> cols_of(const std::vector<float>& m, int64_t rows, int64_t cols, int64_t ld) {
    std::vector<float> out(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = m[r * ld + c];
    return out;
}

// A threshold per channel halfway inside a gap of the channel's Δ values near the median, so that float
// differences between CPU and GPU softplus cannot flip a token. delta (T × ld), channel c at column c.
std::vector<float> safe_thresholds(const std::vector<float>& delta, int64_t T, int64_t channels, int64_t ld) {
    std::vector<float> thr(channels);
    for (int64_t c = 0; c < channels; ++c) {
        std::vector<float> v(T);
        for (int64_t t = 0; t < T; ++t) v[t] = delta[t * ld + c];
        std::sort(v.begin(), v.end());
        thr[c] = v.back() + 1.0f;  // no gap found: filter everything
        for (int64_t k = T / 2, step = 0; step < T; ++step) {
            const int64_t i = (k + step) % std::max<int64_t>(1, T - 1);
            if (i + 1 < T && v[i + 1] - v[i] > 1e-4f * std::max(1.0f, std::abs(v[i]))) {
                thr[c] = 0.5f * (v[i] + v[i + 1]);
                break;
            }
        }
    }
    return thr;
}

// ---- Mamba-1 ----------------------------------------------------------------------------------------------

struct M1Case {
    int64_t T, E, chunk_len;
    bool softplus, filter, gate;
};

struct M1Data {
    int64_t T, E, N = 16, ldx, ldd, ldb, ldc, ldz, ldy;
    std::vector<float> x, dt_raw, bias, A, B, C, D, z, thr, h0;
};

// aligned: strides that are multiples of 8 (the bf16 scan's cp.async ring needs rows on 16-byte boundaries).
M1Data make_m1(int64_t T, int64_t E, std::mt19937& rng, bool aligned = false) {
    M1Data d;
    d.T = T, d.E = E;
    d.ldx = E + 3, d.ldd = E + 1, d.ldz = E + 2, d.ldy = E + 5;  // strided rows, as slices of wider buffers
    d.ldb = 16 + 7, d.ldc = 16 + 9;
    if (aligned) d.ldx = E + 8, d.ldd = E, d.ldz = E + 16, d.ldb = 24, d.ldc = 32;
    d.x = randn(T * d.ldx, rng);
    d.dt_raw = uniform(T * d.ldd, rng, -5.0f, 0.5f);  // softplus → Δ ∈ (0.007, 0.97), as trained dt
    d.bias = uniform(E, rng, -0.5f, 0.5f);
    d.A = uniform(E * 16, rng, -16.0f, -0.05f);
    d.B = randn(T * d.ldb, rng);
    d.C = randn(T * d.ldc, rng);
    d.D = randn(E, rng);
    d.z = randn(T * d.ldz, rng, 2.0f);
    d.h0 = randn(E * 16, rng, 0.5f);
    return d;
}

// Δ (T × ldd) as the scan consumes it: softplus(dt + bias) when fused, else dt_raw mapped to positive values.
std::vector<float> m1_delta(const M1Data& d, bool softplus) {
    std::vector<float> delta(d.dt_raw.size());
    for (int64_t t = 0; t < d.T; ++t)
        for (int64_t e = 0; e < d.ldd; ++e) {
            const float raw = d.dt_raw[t * d.ldd + e];
            delta[t * d.ldd + e] =
                softplus ? kc::softplus(raw + (e < d.E ? d.bias[e] : 0.0f)) : kc::softplus(raw);
        }
    return delta;
}

struct M1Result {
    std::vector<float> y, h, delta_used;
};

M1Result run_m1_cpu(const M1Data& d, const M1Case& c, const std::vector<float>& thr) {
    std::vector<float> delta = m1_delta(d, c.softplus);
    M1Result r;
    r.h = d.h0;
    std::vector<float> y(d.T * d.ldy, 0.0f);
    kc::scan_mamba1(d.T, d.E, 16, d.x.data(), d.ldx, delta.data(), d.ldd, d.A.data(), d.B.data(), d.ldb,
                    d.C.data(), d.ldc, d.D.data(), c.filter ? thr.data() : nullptr, r.h.data(), y.data(),
                    d.ldy);
    if (c.gate)
        for (int64_t t = 0; t < d.T; ++t)
            for (int64_t e = 0; e < d.E; ++e) y[t * d.ldy + e] *= kc::silu(d.z[t * d.ldz + e]);
    r.y = cols_of(y, d.T, d.E, d.ldy);
    // Δ' as used: the CPU writes it back only when filtering.
    r.delta_used = cols_of(delta, d.T, d.E, d.ldd);
    return r;
}

M1Result run_m1_gpu(const M1Data& d, const M1Case& c, const std::vector<float>& thr,
                    kg::ScanProbes probes = {}, bool fast_exp = false,
                    Dev<unsigned char>* workspace = nullptr, bool* ring = nullptr) {
    Dev<float> x(d.x), raw(c.softplus ? d.dt_raw : m1_delta(d, false)), bias(d.bias), A(d.A), B(d.B), C(d.C),
        D(d.D), z(d.z), th(thr.empty() ? std::vector<float>(1) : thr), h(d.h0), y(d.T * d.ldy),
        dout(d.T * d.ldd);
    kg::Mamba1ScanArgs a;
    a.T = d.T, a.E = d.E, a.N = 16;
    a.x = x.p, a.ldx = d.ldx, a.delta = raw.p, a.ldd = d.ldd;
    a.delta_bias = c.softplus ? bias.p : nullptr, a.delta_softplus = c.softplus;
    a.A = A.p, a.B = B.p, a.ldb = d.ldb, a.C = C.p, a.ldc = d.ldc, a.Dskip = D.p;
    a.z = c.gate ? z.p : nullptr, a.ldz = d.ldz, a.thr = c.filter ? th.p : nullptr;
    a.h = h.p, a.y = y.p, a.ldy = d.ldy, a.delta_out = dout.p, a.ldo = d.ldd;
    a.probes = probes, a.chunk_len = c.chunk_len, a.fast_exp = fast_exp;
    if (ring) *ring = kg::scan_mamba1_ring(a);
    kg::scan_mamba1(a, workspace ? workspace->p : nullptr, workspace ? workspace->n : 0, nullptr);
    M1Result r;
    r.y = cols_of(y.download(), d.T, d.E, d.ldy);
    r.h = h.download();
    r.delta_used = cols_of(dout.download(), d.T, d.E, d.ldd);
    return r;
}

TEST(CudaScanMamba1, MatchesCpuReferenceOnOddShapesAndChunkings) {
    REQUIRE_GPU();
    std::mt19937 rng(11);
    const M1Case cases[] = {
        {1, 1, 0, false, false, false},        {7, 33, 0, false, false, false},
        {1000, 130, 0, false, false, false},   {1000, 130, 64, false, false, false},
        {2051, 257, 136, false, false, false}, {2051, 257, 100000, false, false, false},  // one pass
        {333, 1, 64, false, false, false},
    };
    for (const auto& c : cases) {
        const M1Data d = make_m1(c.T, c.E, rng);
        const auto want = run_m1_cpu(d, c, {});
        const auto got = run_m1_gpu(d, c, {});
        const auto plan = kg::scan_mamba1_plan(c.T, c.E, c.chunk_len);
        SCOPED_TRACE("T=" + std::to_string(c.T) + " E=" + std::to_string(c.E) +
                     " chunks=" + std::to_string(plan.chunks) + "x" + std::to_string(plan.chunk_len));
        EXPECT_LE(rel_err(got.y, want.y), kTol);
        EXPECT_LE(rel_err(got.h, want.h), kTol);
        EXPECT_LE(rel_err(got.delta_used, want.delta_used), kTol);
    }
}

TEST(CudaScanMamba1, FilterZeroesDeltaAtOrBelowThresholdLikeCpu) {
    REQUIRE_GPU();
    std::mt19937 rng(12);
    for (int64_t chunk : {int64_t{0}, int64_t{64}}) {
        const M1Case c{1500, 70, chunk, false, true, false};
        const M1Data d = make_m1(c.T, c.E, rng);
        std::vector<float> thr = safe_thresholds(m1_delta(d, false), d.T, d.E, d.ldd);
        for (int64_t e = 0; e < d.E; e += 3) thr[e] = -INFINITY;  // unfiltered channels
        const auto want = run_m1_cpu(d, c, thr);
        const auto got = run_m1_gpu(d, c, thr);
        EXPECT_LE(rel_err(got.y, want.y), kTol);
        EXPECT_LE(rel_err(got.h, want.h), kTol);
        EXPECT_EQ(got.delta_used, want.delta_used);  // same inputs, same compare: bit-identical Δ'
        // The filter really removed tokens (guards against a no-op filter).
        const auto zeros = std::count(got.delta_used.begin(), got.delta_used.end(), 0.0f);
        EXPECT_GT(zeros, static_cast<long>(c.T * c.E / 4));
    }
}

TEST(CudaScanMamba1, FusedSoftplusFilterAndGateMatchCpu) {
    REQUIRE_GPU();
    std::mt19937 rng(13);
    for (int64_t chunk : {int64_t{0}, int64_t{80}}) {
        const M1Case c{1203, 200, chunk, true, true, true};
        const M1Data d = make_m1(c.T, c.E, rng);
        const std::vector<float> thr = safe_thresholds(m1_delta(d, true), d.T, d.E, d.ldd);
        const auto want = run_m1_cpu(d, c, thr);
        const auto got = run_m1_gpu(d, c, thr);
        EXPECT_LE(rel_err(got.y, want.y), kTol);
        EXPECT_LE(rel_err(got.h, want.h), kTol);
        EXPECT_LE(rel_err(got.delta_used, want.delta_used), kTol);
    }
}

TEST(CudaScanMamba1, CarriedStateTwoCallsEqualOneCall) {
    REQUIRE_GPU();
    std::mt19937 rng(14);
    const M1Case c{1500, 96, 0, true, true, true};
    const M1Data d = make_m1(c.T, c.E, rng);
    const std::vector<float> thr = safe_thresholds(m1_delta(d, true), d.T, d.E, d.ldd);
    const auto whole = run_m1_gpu(d, c, thr);

    Dev<float> x(d.x), raw(d.dt_raw), bias(d.bias), A(d.A), B(d.B), C(d.C), D(d.D), z(d.z), th(thr), h(d.h0),
        y(d.T * d.ldy);
    const int64_t split = 701;
    for (int part = 0; part < 2; ++part) {
        const int64_t t0 = part == 0 ? 0 : split, n = part == 0 ? split : d.T - split;
        kg::Mamba1ScanArgs a;
        a.T = n, a.E = d.E;
        a.x = x.p + t0 * d.ldx, a.ldx = d.ldx, a.delta = raw.p + t0 * d.ldd, a.ldd = d.ldd;
        a.delta_bias = bias.p, a.delta_softplus = true, a.A = A.p;
        a.B = B.p + t0 * d.ldb, a.ldb = d.ldb, a.C = C.p + t0 * d.ldc, a.ldc = d.ldc, a.Dskip = D.p;
        a.z = z.p + t0 * d.ldz, a.ldz = d.ldz, a.thr = th.p, a.h = h.p, a.y = y.p + t0 * d.ldy, a.ldy = d.ldy;
        kg::scan_mamba1(a, nullptr, 0, nullptr);
    }
    EXPECT_LE(rel_err(cols_of(y.download(), d.T, d.E, d.ldy), whole.y), kTol);
    EXPECT_LE(rel_err(h.download(), whole.h), kTol);
}

// Sets an environment variable (or unsets it, value null) for one scope and puts the outer value back after,
// so that a run of the whole suite under that variable keeps it for the other tests.
class ScopedEnv {
  public:
    ScopedEnv(const char* name, const char* value) : name_(name) {
        const char* outer = std::getenv(name);
        had_ = outer != nullptr;
        if (had_) outer_ = outer;
        if (value)
            setenv(name, value, 1);
        else
            unsetenv(name);
    }
    ~ScopedEnv() {
        if (had_)
            setenv(name_.c_str(), outer_.c_str(), 1);
        else
            unsetenv(name_.c_str());
    }
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;

  private:
    std::string name_, outer_;
    bool had_ = false;
};

// `call` throws a mambascope::Error whose message names `what` (e.g. a rejected setting's variable) and which
// carries a hint.
template <typename F>
void expect_error_naming(const std::string& what, F&& call) {
    try {
        call();
        ADD_FAILURE() << "no error naming " << what;
    } catch (const mambascope::Error& e) {
        EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
        EXPECT_FALSE(e.hint().empty()) << e.what();
    }
}

TEST(CudaScanMamba1, ProbesMatchCpuSumsAndAccumulate) {
    REQUIRE_GPU();
    std::mt19937 rng(15);
    for (int variant = 0; variant < 3; ++variant) {
        const int64_t chunk = variant == 1 ? 64 : 0;
        const bool fast = variant == 2;  // fast_exp path of pass 1 and pass 3
        SCOPED_TRACE("variant " + std::to_string(variant));
        const M1Case c{999, 45, chunk, false, true, false};
        M1Data d = make_m1(c.T, c.E, rng);
        // Channels 0 and 1 decay so fast that every exp(Δ·A_n) underflows: the probe's log-sum-exp fallback.
        for (int64_t t = 0; t < d.T; ++t) d.dt_raw[t * d.ldd + 0] = d.dt_raw[t * d.ldd + 1] = 3.5f;
        for (int n = 0; n < 16; ++n) d.A[0 * 16 + n] = d.A[1 * 16 + n] = -30.0f - 2.0f * n;
        const std::vector<float> delta = m1_delta(d, false);
        std::vector<float> thr = safe_thresholds(delta, d.T, d.E, d.ldd);
        thr[0] = thr[1] = -INFINITY;
        thr[2] = -INFINITY;

        Dev<double> dsum(d.E), logd(d.E);
        Dev<int64_t> kept(d.E);
        dsum.zero(), logd.zero(), kept.zero();
        kg::ScanProbes pr{dsum.p, kept.p, logd.p};
        run_m1_gpu(d, c, thr, pr, fast);

        std::vector<double> want_dsum(d.E, 0.0), want_logd(d.E, 0.0);
        std::vector<int64_t> want_kept(d.E, 0);
        for (int64_t e = 0; e < d.E; ++e)
            for (int64_t t = 0; t < d.T; ++t) {
                const float dl = delta[t * d.ldd + e];
                const double used = dl > thr[e] ? dl : 0.0;
                want_dsum[e] += used;
                want_kept[e] += dl > thr[e] ? 1 : 0;
                // ln(mean_n exp(Δ'·A_n)), log-sum-exp in double
                double mx = -1e300;
                for (int n = 0; n < 16; ++n) mx = std::max(mx, used * d.A[e * 16 + n]);
                double s = 0.0;
                for (int n = 0; n < 16; ++n) s += std::exp(used * d.A[e * 16 + n] - mx);
                want_logd[e] += mx + std::log(s / 16.0);
            }
        EXPECT_LE(rel_err(dsum.download(), want_dsum), kTol);
        EXPECT_LE(rel_err(logd.download(), want_logd), kTol);
        EXPECT_EQ(kept.download(), want_kept);
        EXPECT_EQ(want_kept[0], d.T);
        EXPECT_LT(want_logd[0], -1000.0);  // the fallback path was exercised

        // Probes accumulate: a second run without zeroing doubles them.
        run_m1_gpu(d, c, thr, pr, fast);
        auto twice = kept.download();
        for (auto& v : want_kept) v *= 2;
        EXPECT_EQ(twice, want_kept);
    }
}

// y of the plain scan (Δ given, no filter, no gate) in float64: the independent reference for long memories.
std::vector<double> m1_float64_y(const M1Data& d) {
    const std::vector<float> delta = m1_delta(d, false);
    std::vector<double> h(d.h0.begin(), d.h0.end()), y(d.T * d.E);
    for (int64_t t = 0; t < d.T; ++t)
        for (int64_t e = 0; e < d.E; ++e) {
            const double dt = delta[t * d.ldd + e], xv = d.x[t * d.ldx + e];
            double acc = d.D[e] * xv;
            for (int n = 0; n < 16; ++n) {
                double& hv = h[e * 16 + n];
                hv = std::exp(dt * d.A[e * 16 + n]) * hv + dt * d.B[t * d.ldb + n] * xv;
                acc += d.C[t * d.ldc + n] * hv;
            }
            y[t * d.E + e] = acc;
        }
    return y;
}

TEST(CudaScanMamba1, AgreesWithFloat64Reference) {
    REQUIRE_GPU();
    std::mt19937 rng(16);
    const M1Case c{4000, 64, 0, false, false, false};
    const M1Data d = make_m1(c.T, c.E, rng);
    const std::vector<double> y = m1_float64_y(d);
    const auto gpu = run_m1_gpu(d, c, {});
    const auto gpu_fast = run_m1_gpu(d, c, {}, {}, true);
    const auto cpu = run_m1_cpu(d, c, {});
    const double e_gpu = rel_err(gpu.y, y), e_fast = rel_err(gpu_fast.y, y), e_cpu = rel_err(cpu.y, y);
    std::printf(
        "  Mamba-1 scan vs float64 (T=4000, memory up to ~3000 tokens): GPU %.2e, GPU fast_exp %.2e, "
        "CPU %.2e (normalised max error)\n",
        e_gpu, e_fast, e_cpu);
    EXPECT_LE(e_fast, kTolFastExp);
    EXPECT_LE(e_gpu, kTol);
}

TEST(CudaScanMamba1, RejectsUnsupportedStateSizeWithAHint) {
    // Runs without a GPU: the shape check comes before any CUDA call.
    kg::Mamba1ScanArgs a;
    a.T = 4, a.E = 4, a.N = 8;
    try {
        kg::scan_mamba1(a, nullptr, 0, nullptr);
        FAIL() << "d_state 8 was accepted";
    } catch (const mambascope::Error& e) {
        EXPECT_NE(std::string(e.what()).find("d_state"), std::string::npos);
        EXPECT_FALSE(e.hint().empty());
    }
}

// MAMBASCOPE_M1_MIN_CHUNK moves the automatic plan's shortest chunk and nothing else: with a one-wave chunk
// length q (rounded up to the 8-token tile), the plan takes max(minimum, q); unset is kM1MinChunk (48); a
// value outside the list is an error naming the switch. E = 1 so that one block per chunk asks for many short
// chunks.
TEST(CudaScanMamba1, MinChunkSwitchMovesOnlyThePlansShortestChunk) {
    REQUIRE_GPU();
    const int64_t T = 4096, E = 1;
    auto plan_with = [&](const char* v) {
        ScopedEnv env("MAMBASCOPE_M1_MIN_CHUNK", v);
        return kg::scan_mamba1_plan(T, E);
    };
    const int64_t shortest = plan_with("16").chunk_len;  // max(16, q)
    ASSERT_GE(shortest, 16);
    for (const char* v : {"24", "32", "48", "64", "128"}) {
        const int64_t m = std::atoi(v);
        const kg::ScanPlan p = plan_with(v);
        SCOPED_TRACE(std::string("MAMBASCOPE_M1_MIN_CHUNK=") + v);
        EXPECT_EQ(p.chunk_len, std::max(m, shortest));
        EXPECT_EQ(p.chunks, (T + p.chunk_len - 1) / p.chunk_len);
        // An explicit chunk length ignores the switch.
        ScopedEnv env("MAMBASCOPE_M1_MIN_CHUNK", v);
        EXPECT_EQ(kg::scan_mamba1_plan(T, E, 40).chunk_len, 40);
    }
    EXPECT_EQ(plan_with("").chunk_len, plan_with("48").chunk_len);
    expect_error_naming("MAMBASCOPE_M1_MIN_CHUNK", [&] { (void)plan_with("33"); });
}

// ---- Mamba-2 ----------------------------------------------------------------------------------------------

struct M2Case {
    int64_t T, H, P, G, N, chunk_len;
    bool softplus, filter;
};

struct M2Data {
    int64_t T, H, P, G, N, ldx, ldd, ldb, ldc, ldy;
    std::vector<float> x, dt_raw, bias, A, B, C, D, s0;
};

// Strided rows, as slices of wider buffers. The strides of x and y are multiples of 4 for even T and not for
// odd T, so kernels with float4 paths for x and y (the chunked SSD) run both paths across the cases.
M2Data make_m2(const M2Case& c, std::mt19937& rng) {
    const bool odd = c.T % 2 != 0;
    M2Data d{c.T,           c.H,
             c.P,           c.G,
             c.N,           c.H * c.P + (odd ? 3 : 4),
             c.H + 3,       c.G * c.N + 5,
             c.G * c.N + 8, c.H * c.P + (odd ? 1 : 4)};
    d.x = randn(d.T * d.ldx, rng);
    d.dt_raw = uniform(d.T * d.ldd, rng, -5.0f, 0.5f);
    d.bias = uniform(d.H, rng, -0.5f, 0.5f);
    d.A = uniform(d.H, rng, -8.0f, -0.05f);
    d.B = randn(d.T * d.ldb, rng, 0.5f);
    d.C = randn(d.T * d.ldc, rng, 0.5f);
    d.D = randn(d.H, rng);
    d.s0 = randn(d.H * d.P * d.N, rng, 0.5f);
    return d;
}

std::vector<float> m2_delta(const M2Data& d, bool softplus) {
    std::vector<float> delta(d.dt_raw.size());
    for (int64_t t = 0; t < d.T; ++t)
        for (int64_t h = 0; h < d.ldd; ++h) {
            const float raw = d.dt_raw[t * d.ldd + h];
            delta[t * d.ldd + h] = kc::softplus(raw + (softplus && h < d.H ? d.bias[h] : 0.0f));
        }
    return delta;
}

struct M2Result {
    std::vector<float> y, s, delta_used;
};

M2Result run_m2_cpu(const M2Data& d, const M2Case& c, const std::vector<float>& thr) {
    std::vector<float> delta = m2_delta(d, c.softplus);
    M2Result r;
    r.s = d.s0;
    std::vector<float> y(d.T * d.ldy, 0.0f);
    kc::scan_mamba2(d.T, d.H, d.P, d.G, d.N, d.x.data(), d.ldx, delta.data(), d.ldd, d.A.data(), d.B.data(),
                    d.ldb, d.C.data(), d.ldc, d.D.data(), c.filter ? thr.data() : nullptr, r.s.data(),
                    y.data(), d.ldy);
    r.y = cols_of(y, d.T, d.H * d.P, d.ldy);
    r.delta_used = cols_of(delta, d.T, d.H, d.ldd);
    return r;
}

// Runs one of the two CUDA Mamba-2 scans (the recurrent scan_mamba2 or the chunked scan_mamba2_ssd: same
// arguments) on the case's inputs.
using M2Scan = void (*)(const kg::Mamba2ScanArgs&, void*, size_t, cudaStream_t);

M2Result run_m2_gpu(const M2Data& d, const M2Case& c, const std::vector<float>& thr,
                    kg::ScanProbes probes = {}, M2Scan scan = kg::scan_mamba2) {
    Dev<float> x(d.x), raw(c.softplus ? d.dt_raw : m2_delta(d, false)), bias(d.bias), A(d.A), B(d.B), C(d.C),
        D(d.D), th(thr.empty() ? std::vector<float>(1) : thr), s(d.s0), y(d.T * d.ldy), dout(d.T * d.ldd);
    kg::Mamba2ScanArgs a;
    a.T = d.T, a.H = d.H, a.P = d.P, a.G = d.G, a.N = d.N;
    a.x = x.p, a.ldx = d.ldx, a.delta = raw.p, a.ldd = d.ldd;
    a.delta_bias = c.softplus ? bias.p : nullptr, a.delta_softplus = c.softplus;
    a.A = A.p, a.B = B.p, a.ldb = d.ldb, a.C = C.p, a.ldc = d.ldc, a.Dskip = D.p;
    a.thr = c.filter ? th.p : nullptr, a.s = s.p, a.y = y.p, a.ldy = d.ldy, a.delta_out = dout.p,
    a.ldo = d.ldd;
    a.probes = probes, a.chunk_len = c.chunk_len;
    scan(a, nullptr, 0, nullptr);
    M2Result r;
    r.y = cols_of(y.download(), d.T, d.H * d.P, d.ldy);
    r.s = s.download();
    r.delta_used = cols_of(dout.download(), d.T, d.H, d.ldd);
    return r;
}

// Selects the Mamba-2 scan kernels for its lifetime: "" = default (register-tiled), "legacy" = the
// 4-lanes-per-channel kernels (MAMBASCOPE_M2_SCAN).
struct M2Variant {
    explicit M2Variant(const char* v) {
        if (*v)
            setenv("MAMBASCOPE_M2_SCAN", v, 1);
        else
            unsetenv("MAMBASCOPE_M2_SCAN");
    }
    ~M2Variant() { unsetenv("MAMBASCOPE_M2_SCAN"); }
    M2Variant(const M2Variant&) = delete;
    M2Variant& operator=(const M2Variant&) = delete;
};

void check_m2_cases(const std::vector<M2Case>& cases, unsigned seed) {
    for (const char* variant : {"", "legacy"}) {
        M2Variant use(variant);
        std::mt19937 rng(seed);
        for (const auto& c : cases) {
            const M2Data d = make_m2(c, rng);
            const std::vector<float> thr = safe_thresholds(m2_delta(d, c.softplus), d.T, d.H, d.ldd);
            const auto want = run_m2_cpu(d, c, thr);
            const auto got = run_m2_gpu(d, c, thr);
            const auto plan = kg::scan_mamba2_plan(c.T, c.H, c.P, c.N, c.chunk_len);
            SCOPED_TRACE(std::string(*variant ? variant : "tiled") + " T=" + std::to_string(c.T) +
                         " H=" + std::to_string(c.H) + " P=" + std::to_string(c.P) +
                         " G=" + std::to_string(c.G) + " N=" + std::to_string(c.N) +
                         " chunks=" + std::to_string(plan.chunks) + "x" + std::to_string(plan.chunk_len) +
                         " softplus=" + std::to_string(c.softplus) + " filter=" + std::to_string(c.filter));
            EXPECT_LE(rel_err(got.y, want.y), kTol);
            EXPECT_LE(rel_err(got.s, want.s), kTol);
            EXPECT_LE(rel_err(got.delta_used, want.delta_used), kTol);
        }
    }
}

TEST(CudaScanMamba2, MatchesCpuReferenceOnOddShapesFilterAndSoftplus) {
    REQUIRE_GPU();
    check_m2_cases(
        {
            {5, 1, 1, 1, 16, 0, false, false},
            {1000, 6, 8, 2, 64, 0, false, true},
            {1000, 6, 8, 2, 64, 64, true, true},
            {777, 4, 64, 1, 128, 0, true, false},
            {777, 4, 64, 1, 128, 96, false, true},
            {300, 3, 5, 3, 32, 48, true, true},
            {1100, 2, 64, 1, 128, 100000, true, true},  // one pass
        },
        21);
}

// The register tiling (4 channels × 8 states per thread, N/8 lanes per channel group, 32-token tiles): every
// d_state, P = 128 (> 48 KiB shared memory at N = 128) / 64 / 32 / not a multiple of 4, G > 1, T and chunks
// not multiples of the 32-token tile, chunks of one 16-token tile.
TEST(CudaScanMamba2, RegisterTilingShapes) {
    REQUIRE_GPU();
    check_m2_cases(
        {
            {333, 2, 128, 1, 128, 0, true, true},
            {333, 2, 128, 2, 128, 80, false, true},
            {250, 3, 64, 3, 16, 16, true, false},
            {250, 4, 32, 2, 32, 48, true, true},
            {261, 4, 7, 4, 64, 0, false, true},
            {201, 2, 33, 1, 128, 16, true, true},
            {97, 6, 3, 2, 16, 0, true, true},
            {129, 2, 127, 1, 64, 112, false, false},
            {1, 3, 64, 1, 128, 0, true, true},
            {40, 2, 65, 2, 32, 16, true, false},
        },
        24);
}

TEST(CudaScanMamba2, CarriedStateTwoCallsEqualOneCall) {
    REQUIRE_GPU();
    for (const char* variant : {"", "legacy"}) {
        M2Variant use(variant);
        SCOPED_TRACE(*variant ? variant : "tiled");
        std::mt19937 rng(22);
        const M2Case c{1300, 4, 64, 2, 64, 0, true, false};
        const M2Data d = make_m2(c, rng);
        const auto whole = run_m2_gpu(d, c, {});
        Dev<float> x(d.x), raw(d.dt_raw), bias(d.bias), A(d.A), B(d.B), C(d.C), D(d.D), s(d.s0),
            y(d.T * d.ldy);
        const int64_t split = 517;
        for (int part = 0; part < 2; ++part) {
            const int64_t t0 = part == 0 ? 0 : split, n = part == 0 ? split : d.T - split;
            kg::Mamba2ScanArgs a;
            a.T = n, a.H = d.H, a.P = d.P, a.G = d.G, a.N = d.N;
            a.x = x.p + t0 * d.ldx, a.ldx = d.ldx, a.delta = raw.p + t0 * d.ldd, a.ldd = d.ldd;
            a.delta_bias = bias.p, a.delta_softplus = true, a.A = A.p;
            a.B = B.p + t0 * d.ldb, a.ldb = d.ldb, a.C = C.p + t0 * d.ldc, a.ldc = d.ldc, a.Dskip = D.p;
            a.s = s.p, a.y = y.p + t0 * d.ldy, a.ldy = d.ldy;
            kg::scan_mamba2(a, nullptr, 0, nullptr);
        }
        EXPECT_LE(rel_err(cols_of(y.download(), d.T, d.H * d.P, d.ldy), whole.y), kTol);
        EXPECT_LE(rel_err(s.download(), whole.s), kTol);
    }
}

TEST(CudaScanMamba2, ProbesMatchCpuSums) {
    REQUIRE_GPU();
    for (const char* variant : {"", "legacy"}) {
        M2Variant use(variant);
        SCOPED_TRACE(*variant ? variant : "tiled");
        std::mt19937 rng(23);
        for (int64_t chunk : {int64_t{0}, int64_t{64}}) {
            const M2Case c{1001, 5, 16, 1, 64, chunk, false, true};
            const M2Data d = make_m2(c, rng);
            const std::vector<float> delta = m2_delta(d, false);
            std::vector<float> thr = safe_thresholds(delta, d.T, d.H, d.ldd);
            thr[0] = -INFINITY;
            Dev<double> dsum(d.H), logd(d.H);
            Dev<int64_t> kept(d.H);
            dsum.zero(), logd.zero(), kept.zero();
            run_m2_gpu(d, c, thr, kg::ScanProbes{dsum.p, kept.p, logd.p});
            std::vector<double> want_dsum(d.H, 0.0), want_logd(d.H, 0.0);
            std::vector<int64_t> want_kept(d.H, 0);
            for (int64_t h = 0; h < d.H; ++h)
                for (int64_t t = 0; t < d.T; ++t) {
                    const float dl = delta[t * d.ldd + h];
                    const double used = dl > thr[h] ? dl : 0.0;
                    want_dsum[h] += used;
                    want_kept[h] += dl > thr[h] ? 1 : 0;
                    want_logd[h] += used * d.A[h];
                }
            EXPECT_LE(rel_err(dsum.download(), want_dsum), kTol);
            EXPECT_LE(rel_err(logd.download(), want_logd), kTol);
            EXPECT_EQ(kept.download(), want_kept);
            EXPECT_EQ(want_kept[0], d.T);
        }
    }
}

// ---- Mamba-2 chunked SSD on tensor cores (scan_mamba2_ssd.cuh)
// ----------------------------------------------

// Against the CPU twin with the GPU's bf16 rounding points: what is left is fp32 accumulation order and the
// GPU's exps (MUFU ex2 for the L mask and w, a polynomial near 0 for the decays) against std::exp, which can
// move a staged value to the neighbouring bf16 (2^-8 relative on one operand). Measured 4.2e-5 on the H200
// and ≤ 1.8e-4 in the emulation (printed below); the bound leaves 10× room.
constexpr double kTolSsdTwin = 2e-3;
// Against the exact fp32 recurrence: the bf16 rounding of x, B, C, the masked C·Bᵀ and the carried state
// (2^-9 relative each, summed over up to N + Q terms of either sign). Measured ≤ 5.0e-3.
constexpr double kTolSsdBf16 = 2e-2;

M2Result run_ssd_gpu(const M2Data& d, const M2Case& c, const std::vector<float>& thr) {
    return run_m2_gpu(d, c, thr, {}, kg::scan_mamba2_ssd);
}

M2Result run_ssd_twin(const M2Data& d, const M2Case& c, const std::vector<float>& thr, int64_t t_split = -1) {
    std::vector<float> delta = m2_delta(d, c.softplus);
    M2Result r;
    r.s = d.s0;
    std::vector<float> y(d.T * d.ldy, 0.0f);
    const int64_t split = t_split < 0 ? d.T : t_split;
    for (int64_t part = 0; part < 2; ++part) {
        const int64_t t0 = part == 0 ? 0 : split, n = part == 0 ? split : d.T - split;
        if (n == 0) continue;
        kc::scan_mamba2_chunked(n, d.H, d.P, d.G, d.N, d.x.data() + t0 * d.ldx, d.ldx,
                                delta.data() + t0 * d.ldd, d.ldd, d.A.data(), d.B.data() + t0 * d.ldb, d.ldb,
                                d.C.data() + t0 * d.ldc, d.ldc, d.D.data(), c.filter ? thr.data() : nullptr,
                                r.s.data(), y.data() + t0 * d.ldy, d.ldy, kg::kSsdChunk, true);
    }
    r.y = cols_of(y, d.T, d.H * d.P, d.ldy);
    r.delta_used = cols_of(delta, d.T, d.H, d.ldd);
    return r;
}

// Shapes: one token, T below / at / just past one chunk, many chunks with a partial last one, G > 1, every
// multiple-of-16 headdim up to 128 and d_state 16..256 (d_state 256 and headdim 128 need > 48 KiB of shared
// memory), filter and softplus on and off, a carried non-zero state.
TEST(CudaScanMamba2Ssd, MatchesItsCpuTwinAndTheFloat32RecurrenceWithinTheBf16Bound) {
    REQUIRE_GPU();
    std::mt19937 rng(41);
    double worst_twin = 0.0, worst_rec = 0.0;
    for (const M2Case& c : std::vector<M2Case>{
             {1, 2, 16, 1, 16, 0, true, false},
             {63, 3, 32, 3, 32, 0, true, true},
             {64, 2, 64, 1, 128, 0, false, true},
             {65, 4, 64, 2, 64, 0, true, true},
             {300, 2, 128, 1, 128, 0, true, true},
             {200, 2, 16, 2, 256, 0, true, false},
             {1000, 3, 64, 1, 128, 0, true, true},
         }) {
        const M2Data d = make_m2(c, rng);
        const std::vector<float> thr = safe_thresholds(m2_delta(d, c.softplus), d.T, d.H, d.ldd);
        const auto got = run_ssd_gpu(d, c, thr);
        const auto twin = run_ssd_twin(d, c, thr);
        const auto exact = run_m2_cpu(d, c, thr);
        SCOPED_TRACE("T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) + " P=" + std::to_string(c.P) +
                     " G=" + std::to_string(c.G) + " N=" + std::to_string(c.N) +
                     " softplus=" + std::to_string(c.softplus) + " filter=" + std::to_string(c.filter));
        const double e_twin = std::max(rel_err(got.y, twin.y), rel_err(got.s, twin.s));
        const double e_rec = std::max(rel_err(got.y, exact.y), rel_err(got.s, exact.s));
        EXPECT_LE(e_twin, kTolSsdTwin);
        EXPECT_LE(e_rec, kTolSsdBf16);
        EXPECT_LE(rel_err(got.delta_used, exact.delta_used), kTol);
        worst_twin = std::max(worst_twin, e_twin), worst_rec = std::max(worst_rec, e_rec);
    }
    std::printf("[ssd] worst error: %.2e against the bf16 CPU twin, %.2e against the fp32 recurrence\n",
                worst_twin, worst_rec);
}

// The state carried across two calls that split a chunk (517 = 8·64 + 5) equals the twin run the same way;
// the probes equal the CPU's sums of the Δ' actually used (thr[0] = −∞ keeps every token of head 0).
TEST(CudaScanMamba2Ssd, CarriedStateAcrossCallsAndProbes) {
    REQUIRE_GPU();
    std::mt19937 rng(42);
    const M2Case c{1100, 4, 64, 2, 64, 0, true, true};
    const M2Data d = make_m2(c, rng);
    std::vector<float> thr = safe_thresholds(m2_delta(d, true), d.T, d.H, d.ldd);
    thr[0] = -INFINITY;
    Dev<float> x(d.x), raw(d.dt_raw), bias(d.bias), A(d.A), B(d.B), C(d.C), D(d.D), th(thr), s(d.s0),
        y(d.T * d.ldy);
    Dev<double> dsum(d.H), logd(d.H);
    Dev<int64_t> kept(d.H);
    dsum.zero(), logd.zero(), kept.zero();
    const int64_t split = 517;
    for (int part = 0; part < 2; ++part) {
        const int64_t t0 = part == 0 ? 0 : split, n = part == 0 ? split : d.T - split;
        kg::Mamba2ScanArgs a;
        a.T = n, a.H = d.H, a.P = d.P, a.G = d.G, a.N = d.N;
        a.x = x.p + t0 * d.ldx, a.ldx = d.ldx, a.delta = raw.p + t0 * d.ldd, a.ldd = d.ldd;
        a.delta_bias = bias.p, a.delta_softplus = true, a.A = A.p, a.thr = th.p;
        a.B = B.p + t0 * d.ldb, a.ldb = d.ldb, a.C = C.p + t0 * d.ldc, a.ldc = d.ldc, a.Dskip = D.p;
        a.s = s.p, a.y = y.p + t0 * d.ldy, a.ldy = d.ldy;
        a.probes = kg::ScanProbes{dsum.p, kept.p, logd.p};
        kg::scan_mamba2_ssd(a, nullptr, 0, nullptr);
    }
    const auto twin = run_ssd_twin(d, c, thr, split);
    EXPECT_LE(rel_err(cols_of(y.download(), d.T, d.H * d.P, d.ldy), twin.y), kTolSsdTwin);
    EXPECT_LE(rel_err(s.download(), twin.s), kTolSsdTwin);
    const std::vector<float> delta = m2_delta(d, true);
    std::vector<double> want_dsum(d.H, 0.0), want_logd(d.H, 0.0);
    std::vector<int64_t> want_kept(d.H, 0);
    for (int64_t h = 0; h < d.H; ++h)
        for (int64_t t = 0; t < d.T; ++t) {
            const float dl = delta[t * d.ldd + h];
            const double used = dl > thr[h] ? dl : 0.0;
            want_dsum[h] += used, want_kept[h] += dl > thr[h] ? 1 : 0, want_logd[h] += used * d.A[h];
        }
    EXPECT_LE(rel_err(dsum.download(), want_dsum), kTol);
    EXPECT_LE(rel_err(logd.download(), want_logd), kTol);
    EXPECT_EQ(kept.download(), want_kept);
    EXPECT_EQ(want_kept[0], d.T);
}

TEST(CudaScanMamba2Ssd, RejectsShapesItCannotTileWithAHint) {
    kg::Mamba2ScanArgs a;
    a.T = 4, a.H = 1, a.P = 7, a.N = 128;
    EXPECT_FALSE(kg::scan_mamba2_ssd_supports(7, 128));
    EXPECT_FALSE(kg::scan_mamba2_ssd_supports(64, 512));
    EXPECT_TRUE(kg::scan_mamba2_ssd_supports(64, 128));
    try {
        kg::scan_mamba2_ssd(a, nullptr, 0, nullptr);
        FAIL() << "headdim 7 was accepted";
    } catch (const mambascope::Error& e) {
        EXPECT_NE(std::string(e.what()).find("headdim 7"), std::string::npos);
        EXPECT_FALSE(e.hint().empty());
    }
}

// ---- conv1d + SiLU ----------------------------------------------------------------------------------------

TEST(CudaConv1d, MatchesCpuAcrossTwoCallsWithCarriedState) {
    REQUIRE_GPU();
    std::mt19937 rng(31);
    struct Case {
        int64_t T1, T2, Cn, K;
    };
    for (const Case c : {Case{50, 70, 130, 4}, Case{1, 2, 33, 4}, Case{100, 1, 7, 3}, Case{40, 33, 300, 1},
                         Case{3, 200, 5, 8}}) {
        const int64_t T = c.T1 + c.T2, ldi = c.Cn + 3, ldo = c.Cn + 1;
        const auto in = randn(T * ldi, rng), w = randn(c.Cn * c.K, rng, 0.5f), bias = randn(c.Cn, rng);
        const auto state0 = randn(std::max<int64_t>(1, (c.K - 1) * c.Cn), rng);
        std::vector<float> cpu_state = state0, cpu_out(T * ldo, 0.0f);
        kc::conv1d_silu(c.T1, c.Cn, c.K, in.data(), ldi, w.data(), bias.data(), cpu_state.data(),
                        cpu_out.data(), ldo);
        kc::conv1d_silu(c.T2, c.Cn, c.K, in.data() + c.T1 * ldi, ldi, w.data(), bias.data(), cpu_state.data(),
                        cpu_out.data() + c.T1 * ldo, ldo);
        Dev<float> din(in), dw(w), db(bias), dstate(state0), dout(T * ldo);
        kg::conv1d_silu(c.T1, c.Cn, c.K, din.p, ldi, dw.p, db.p, dstate.p, dout.p, ldo, nullptr);
        kg::conv1d_silu(c.T2, c.Cn, c.K, din.p + c.T1 * ldi, ldi, dw.p, db.p, dstate.p, dout.p + c.T1 * ldo,
                        ldo, nullptr);
        SCOPED_TRACE("T1=" + std::to_string(c.T1) + " T2=" + std::to_string(c.T2) +
                     " Cn=" + std::to_string(c.Cn) + " K=" + std::to_string(c.K));
        EXPECT_LE(rel_err(cols_of(dout.download(), T, c.Cn, ldo), cols_of(cpu_out, T, c.Cn, ldo)), kTol);
        if (c.K > 1) EXPECT_EQ(dstate.download(), cpu_state);  // a copy of inputs: exact
    }
}

// ---- norms ------------------------------------------------------------------------------------------------

TEST(CudaRmsNorm, MatchesCpuIncludingInPlace) {
    REQUIRE_GPU();
    std::mt19937 rng(41);
    struct Case {
        int64_t D, ldx, ldo;
    };
    // Odd strides take the block-per-row kernel; rows of a multiple of 4 on 16-byte boundaries (up to 4096)
    // the warp-per-row kernel, with vector stores (ldo % 4 == 0) or element stores; 8192 is past its register
    // rows.
    for (const Case c : {Case{1, 3, 6}, Case{77, 79, 82}, Case{768, 770, 773}, Case{2049, 2051, 2054},
                         Case{768, 768, 768}, Case{64, 68, 65}, Case{2048, 2048, 2052},
                         Case{2560, 2560, 2561}, Case{4096, 4096, 4096}, Case{8192, 8192, 8192}}) {
        const int64_t T = 37, D = c.D, ldx = c.ldx, ldo = c.ldo;
        const auto x = randn(T * ldx, rng, 3.0f), w = randn(D, rng);
        std::vector<float> want(T * ldo, 0.0f);
        kc::rmsnorm(T, D, x.data(), ldx, w.data(), 1e-5f, want.data(), ldo);
        Dev<float> dx(x), dw(w), dout(T * ldo);
        kg::rmsnorm(T, D, dx.p, ldx, dw.p, 1e-5f, dout.p, ldo, nullptr);
        EXPECT_LE(rel_err(cols_of(dout.download(), T, D, ldo), cols_of(want, T, D, ldo)), kTol) << "D=" << D;
        kg::rmsnorm(T, D, dx.p, ldx, dw.p, 1e-5f, dx.p, ldx, nullptr);  // in place
        EXPECT_LE(rel_err(cols_of(dx.download(), T, D, ldx), cols_of(want, T, D, ldo)), kTol)
            << "in place D=" << D << " ldx=" << ldx;
    }
}

TEST(CudaRmsNorm, GatedGroupedMatchesCpu) {
    REQUIRE_GPU();
    std::mt19937 rng(42);
    struct Case {
        int64_t T, E, G;
    };
    for (const Case c : {Case{29, 1536, 1}, Case{5, 4096, 8}, Case{17, 90, 3}}) {
        const int64_t ldy = c.E + 3, ldz = c.E + 7;
        const auto y = randn(c.T * ldy, rng), z = randn(c.T * ldz, rng, 2.0f), w = randn(c.E, rng);
        std::vector<float> want = y;
        kc::gated_rmsnorm(c.T, c.E, c.G, want.data(), ldy, z.data(), ldz, w.data(), 1e-5f);
        Dev<float> dy(y), dz(z), dw(w);
        kg::gated_rmsnorm(c.T, c.E, c.G, dy.p, ldy, dz.p, ldz, dw.p, 1e-5f, nullptr);
        EXPECT_LE(rel_err(cols_of(dy.download(), c.T, c.E, ldy), cols_of(want, c.T, c.E, ldy)), kTol)
            << "E=" << c.E << " G=" << c.G;
    }
}

// ---- bf16 outputs (the inputs of bf16 projections, written by the producing kernel) -----------------------

std::vector<float> bf16_to_float(const std::vector<__nv_bfloat16>& v) {
    std::vector<float> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
    return out;
}
std::vector<float> round_bf16(const std::vector<float>& v) {
    std::vector<float> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(__float2bfloat16_rn(v[i]));
    return out;
}
// bf16 keeps 8 significant bits: round-to-nearest error ≤ half an ulp = 2^-8 of the value's binade.
constexpr double kTolBf16Round = 1.0 / 256;

TEST(CudaBf16Outputs, NormConvAndScanWriteTheRoundedFloat32Result) {
    REQUIRE_GPU();
    std::mt19937 rng(61);
    // RMSNorm → bf16 equals the float32 kernel's output rounded to bf16 (same arithmetic, one rounding), for
    // the block-per-row kernel (777) and the warp-per-row one (768, vector and element stores).
    for (const int64_t D : {int64_t{777}, int64_t{768}, int64_t{1024}}) {
        const int64_t T = 19, ldx = D % 4 ? D + 2 : D, ldo = D == 1024 ? D + 3 : D;
        const auto x = randn(T * ldx, rng, 3.0f), w = randn(D, rng);
        Dev<float> dx(x), dw(w), d32(T * ldo);
        Dev<__nv_bfloat16> d16(T * ldo);
        kg::rmsnorm(T, D, dx.p, ldx, dw.p, 1e-5f, d32.p, ldo, nullptr);
        kg::rmsnorm_bf16(T, D, dx.p, ldx, dw.p, 1e-5f, d16.p, ldo, nullptr);
        const auto want = cols_of(round_bf16(d32.download()), T, D, ldo);
        EXPECT_EQ(cols_of(bf16_to_float(d16.download()), T, D, ldo), want);
        std::vector<float> cpu(T * ldo, 0.0f);
        kc::rmsnorm(T, D, x.data(), ldx, w.data(), 1e-5f, cpu.data(), ldo);
        EXPECT_LE(rel_err(cols_of(bf16_to_float(d16.download()), T, D, ldo), cols_of(cpu, T, D, ldo)),
                  kTolBf16Round);
    }
    // Gated grouped norm → bf16, y left untouched.
    {
        const int64_t T = 7, E = 512, G = 4, ldy = E + 1, ldz = E + 5;
        const auto y = randn(T * ldy, rng), z = randn(T * ldz, rng, 2.0f), w = randn(E, rng);
        std::vector<float> want = y;
        kc::gated_rmsnorm(T, E, G, want.data(), ldy, z.data(), ldz, w.data(), 1e-5f);
        Dev<float> dy(y), dz(z), dw(w);
        Dev<__nv_bfloat16> d16(T * E);
        kg::gated_rmsnorm_bf16(T, E, G, dy.p, ldy, dz.p, ldz, dw.p, 1e-5f, d16.p, E, nullptr);
        EXPECT_LE(rel_err(bf16_to_float(d16.download()), cols_of(want, T, E, ldy)), kTolBf16Round);
        EXPECT_EQ(dy.download(), y);
    }
    // conv1d + SiLU: the bf16 copy is the float32 output rounded, and the float32 output is unchanged.
    {
        const int64_t T = 90, Cn = 300, K = 4, ldi = Cn + 3, ldo = Cn + 1;
        const auto in = randn(T * ldi, rng), w = randn(Cn * K, rng, 0.5f), bias = randn(Cn, rng);
        const auto st = randn((K - 1) * Cn, rng);
        Dev<float> din(in), dw(w), db(bias), s1(st), s2(st), o1(T * ldo), o2(T * ldo);
        Dev<__nv_bfloat16> o16(T * Cn);
        kg::conv1d_silu(T, Cn, K, din.p, ldi, dw.p, db.p, s1.p, o1.p, ldo, nullptr);
        kg::conv1d_silu(T, Cn, K, din.p, ldi, dw.p, db.p, s2.p, o2.p, ldo, nullptr, o16.p, Cn);
        const auto f32 = cols_of(o1.download(), T, Cn, ldo);  // padding columns stay NaN-poisoned
        EXPECT_EQ(cols_of(o2.download(), T, Cn, ldo), f32);
        EXPECT_EQ(bf16_to_float(o16.download()), round_bf16(f32));
    }
    // Mamba-1 scan with y16: y rounded to bf16, state identical.
    {
        const M1Data d = make_m1(300, 200, rng);
        for (const int64_t chunk : {int64_t{0}, int64_t{64}}) {
            M1Case c{d.T, d.E, chunk, true, false, true};
            const M1Result ref = run_m1_gpu(d, c, {});
            Dev<float> x(d.x), raw(d.dt_raw), bias(d.bias), A(d.A), B(d.B), C(d.C), D(d.D), z(d.z), h(d.h0);
            Dev<__nv_bfloat16> y16(d.T * d.ldy);
            kg::Mamba1ScanArgs a;
            a.T = d.T, a.E = d.E, a.N = 16;
            a.x = x.p, a.ldx = d.ldx, a.delta = raw.p, a.ldd = d.ldd, a.delta_bias = bias.p;
            a.delta_softplus = true;
            a.A = A.p, a.B = B.p, a.ldb = d.ldb, a.C = C.p, a.ldc = d.ldc, a.Dskip = D.p;
            a.z = z.p, a.ldz = d.ldz, a.h = h.p, a.y16 = y16.p, a.ldy = d.ldy, a.chunk_len = chunk;
            kg::scan_mamba1(a, nullptr, 0, nullptr);
            EXPECT_EQ(cols_of(bf16_to_float(y16.download()), d.T, d.E, d.ldy), round_bf16(ref.y))
                << "chunk " << chunk;
            EXPECT_EQ(h.download(), ref.h);
        }
    }
}

// ---- bf16 inputs (the bf16 Mamba-1 chain: x, Δ, z, B, C in bf16; state and arithmetic float32) ------------

std::vector<__nv_bfloat16> to_bf16_host(const std::vector<float>& v) {
    std::vector<__nv_bfloat16> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16_rn(v[i]);
    return out;
}

// The whole-scan error of bf16 inputs and a bf16 y against the float32 scan of the unrounded inputs. Each
// input carries ≤ 2^-9 relative rounding; Δ's pre-activation error (≤ 2^-9·|dt|, |dt| ≤ 5.5 here) moves Δ by
// ≤ 1% and the state integrates it over the channel's memory. The measured value is printed; the bound has ≈
// 4× margin over it (measured 3.7e-3 to 6.6e-3 on the CPU emulation; the H200 value is in the test log).
constexpr double kTolBf16Scan = 3e-2;

// M1Data with every input that the bf16 scan reads rounded to bf16 (so the float32 scan of the rounded data
// is the exact reference of the bf16-input scan).
M1Data round_m1_inputs(M1Data d) {
    d.x = round_bf16(d.x), d.dt_raw = round_bf16(d.dt_raw), d.B = round_bf16(d.B), d.C = round_bf16(d.C);
    d.z = round_bf16(d.z);
    return d;
}

// The bf16-input scan of d (inputs converted on the host, exact when d is already rounded); y in float32,
// or in bf16 (y16) when asked.
M1Result run_m1_gpu_bf16(const M1Data& d, const M1Case& c, const std::vector<float>& thr,
                         kg::ScanProbes probes = {}, bool y_bf16 = false, bool* ring = nullptr,
                         bool fast_exp = false, Dev<unsigned char>* workspace = nullptr) {
    Dev<__nv_bfloat16> x(to_bf16_host(d.x)), raw(to_bf16_host(c.softplus ? d.dt_raw : m1_delta(d, false))),
        B(to_bf16_host(d.B)), C(to_bf16_host(d.C)), z(to_bf16_host(d.z)), y16(d.T * d.ldy);
    Dev<float> bias(d.bias), A(d.A), D(d.D), th(thr.empty() ? std::vector<float>(1) : thr), h(d.h0),
        y(d.T * d.ldy), dout(d.T * d.ldd);
    kg::Mamba1ScanArgs a;
    a.T = d.T, a.E = d.E, a.N = 16;
    a.x16 = x.p, a.ldx = d.ldx, a.delta16 = raw.p, a.ldd = d.ldd;
    a.delta_bias = c.softplus ? bias.p : nullptr, a.delta_softplus = c.softplus;
    a.A = A.p, a.B16 = B.p, a.ldb = d.ldb, a.C16 = C.p, a.ldc = d.ldc, a.Dskip = D.p;
    a.z16 = c.gate ? z.p : nullptr, a.ldz = d.ldz, a.thr = c.filter ? th.p : nullptr;
    a.h = h.p, a.ldy = d.ldy, a.delta_out = dout.p, a.ldo = d.ldd;
    if (y_bf16)
        a.y16 = y16.p;
    else
        a.y = y.p;
    a.probes = probes, a.chunk_len = c.chunk_len, a.fast_exp = fast_exp;
    if (ring) *ring = kg::scan_mamba1_ring(a);
    kg::scan_mamba1(a, workspace ? workspace->p : nullptr, workspace ? workspace->n : 0, nullptr);
    M1Result r;
    r.y = cols_of(y_bf16 ? bf16_to_float(y16.download()) : y.download(), d.T, d.E, d.ldy);
    r.h = h.download();
    r.delta_used = cols_of(dout.download(), d.T, d.E, d.ldd);
    return r;
}

TEST(CudaScanMamba1Bf16, MatchesCpuOnBf16RoundedInputsAllChunkings) {
    REQUIRE_GPU();
    std::mt19937 rng(71);
    const M1Case cases[] = {
        // softplus fused in every case: a bf16 Δ given directly would be rounded after the reference's
        // softplus
        {1, 1, 0, true, false, false},         {7, 33, 0, true, false, true},
        {1000, 130, 64, true, true, true},     {2051, 257, 136, true, true, true},
        {2051, 257, 100000, true, true, true},  // one pass
    };
    for (const auto& c : cases) {
        const M1Data d = round_m1_inputs(make_m1(c.T, c.E, rng));
        const std::vector<float> thr =
            c.filter ? safe_thresholds(m1_delta(d, c.softplus), d.T, d.E, d.ldd) : std::vector<float>{};
        const auto want = run_m1_cpu(d, c, thr);
        const auto got = run_m1_gpu_bf16(d, c, thr);
        SCOPED_TRACE("T=" + std::to_string(c.T) + " E=" + std::to_string(c.E));
        EXPECT_LE(rel_err(got.y, want.y), kTol);
        EXPECT_LE(rel_err(got.h, want.h), kTol);
        EXPECT_LE(rel_err(got.delta_used, want.delta_used), kTol);
    }
}

TEST(CudaScanMamba1Bf16, Bf16InputsAndOutputStayWithinTheirBoundOfTheFloat32Scan) {
    REQUIRE_GPU();
    std::mt19937 rng(72);
    for (const int64_t chunk : {int64_t{0}, int64_t{64}}) {
        const M1Case c{1500, 96, chunk, true, false, true};
        const M1Data d = make_m1(c.T, c.E, rng);
        const auto f32 = run_m1_gpu(d, c, {});  // unrounded float32 inputs, float32 y
        const auto b16 = run_m1_gpu_bf16(d, c, {}, {}, true);
        const double ey = rel_err(b16.y, f32.y), eh = rel_err(b16.h, f32.h);
        std::printf("  Mamba-1 bf16 scan vs float32 scan (chunk %lld): y %.2e, final h %.2e\n",
                    static_cast<long long>(chunk), ey, eh);
        EXPECT_LE(ey, kTolBf16Scan);
        EXPECT_LE(eh, kTolBf16Scan);
        EXPECT_GT(ey, 0.0);  // the inputs really were rounded
    }
}

TEST(CudaScanMamba1Bf16, ProbesEqualTheFloat32ScanOfTheRoundedInputs) {
    REQUIRE_GPU();
    std::mt19937 rng(73);
    const M1Case c{999, 45, 64, true, true, true};
    const M1Data d = round_m1_inputs(make_m1(c.T, c.E, rng));
    const std::vector<float> thr = safe_thresholds(m1_delta(d, true), d.T, d.E, d.ldd);
    Dev<double> ds32(d.E), ld32(d.E), ds16(d.E), ld16(d.E);
    Dev<int64_t> k32(d.E), k16(d.E);
    for (auto* b : {&ds32, &ld32, &ds16, &ld16}) b->zero();
    k32.zero(), k16.zero();
    run_m1_gpu(d, c, thr, kg::ScanProbes{ds32.p, k32.p, ld32.p});
    run_m1_gpu_bf16(d, c, thr, kg::ScanProbes{ds16.p, k16.p, ld16.p});
    EXPECT_LE(rel_err(ds16.download(), ds32.download()), kTol);
    EXPECT_LE(rel_err(ld16.download(), ld32.download()), kTol);
    const auto kept = k16.download();
    EXPECT_EQ(kept, k32.download());
    EXPECT_LT(*std::min_element(kept.begin(), kept.end()), d.T);  // the filter removed tokens
}

// The cp.async ring (scan_mamba1.cu, M1Ring) is taken when every input row is on a 16-byte boundary, for bf16
// inputs (8 channels per copy) and float32 ones (4; since the seventeenth stop). It does the same arithmetic
// on the same values as the per-thread loads (MAMBASCOPE_M1_RING=0), so y, the state and Δ' are equal bit for
// bit, and the probes' kept counts too: in one pass and chunked, T not a multiple of the 8-token tile, E past
// a block of 128 channels and E = 4 (one float32 copy per row), with and without the gate; and it matches the
// CPU scan.
TEST(CudaScanMamba1, TheCpAsyncRingEqualsThePerThreadLoadsBitForBit) {
    REQUIRE_GPU();
    std::mt19937 rng(74);
    const M1Case cases[] = {
        {1000, 136, 64, true, true, true},  {2051, 256, 136, true, true, false},
        {77, 8, 100000, true, false, true}, {5, 16, 0, true, true, true},
        {300, 4, 64, true, true, true},
    };
    for (const bool bf16 : {true, false})
        for (const auto& c : cases) {
            if (bf16 && c.E % 8 != 0) continue;  // bf16 copies are 8 channels wide
            SCOPED_TRACE("T=" + std::to_string(c.T) + " E=" + std::to_string(c.E) +
                         (bf16 ? " bf16" : " float32"));
            const M1Data raw = make_m1(c.T, c.E, rng, /*aligned=*/true);
            const M1Data d = bf16 ? round_m1_inputs(raw) : raw;
            const std::vector<float> thr =
                c.filter ? safe_thresholds(m1_delta(d, c.softplus), d.T, d.E, d.ldd) : std::vector<float>{};
            Dev<double> ds_ring(d.E), ld_ring(d.E), ds_loads(d.E), ld_loads(d.E);
            Dev<int64_t> k_ring(d.E), k_loads(d.E);
            for (auto* b : {&ds_ring, &ld_ring, &ds_loads, &ld_loads}) b->zero();
            k_ring.zero(), k_loads.zero();
            bool took_ring = false, took_ring_off = true;
            // This test sets the switch itself (a run of the suite under MAMBASCOPE_M1_RING=0 gets it back
            // after).
            M1Result ring, loads;
            {
                ScopedEnv on("MAMBASCOPE_M1_RING", nullptr);
                const kg::ScanProbes pr{ds_ring.p, k_ring.p, ld_ring.p};
                ring = bf16 ? run_m1_gpu_bf16(d, c, thr, pr, false, &took_ring)
                            : run_m1_gpu(d, c, thr, pr, false, nullptr, &took_ring);
            }
            {
                ScopedEnv off("MAMBASCOPE_M1_RING", "0");
                const kg::ScanProbes pr{ds_loads.p, k_loads.p, ld_loads.p};
                loads = bf16 ? run_m1_gpu_bf16(d, c, thr, pr, false, &took_ring_off)
                             : run_m1_gpu(d, c, thr, pr, false, nullptr, &took_ring_off);
            }
            ASSERT_TRUE(took_ring);
            ASSERT_FALSE(took_ring_off);
            EXPECT_EQ(ring.y, loads.y);
            EXPECT_EQ(ring.h, loads.h);
            EXPECT_EQ(ring.delta_used, loads.delta_used);
            EXPECT_EQ(k_ring.download(), k_loads.download());
            // Sums over chunks arrive by atomicAdd in any order: equal to double rounding.
            EXPECT_LE(rel_err(ds_ring.download(), ds_loads.download()), 1e-12);
            EXPECT_LE(rel_err(ld_ring.download(), ld_loads.download()), 1e-12);
            const auto want = run_m1_cpu(d, c, thr);
            EXPECT_LE(rel_err(ring.y, want.y), kTol);
            EXPECT_LE(rel_err(ring.h, want.h), kTol);
        }
}

// ---- the time-parallel bf16 scan (scan_mamba1_tp.cuh; docs/cuda.md, "The time-parallel scan") -------------

// The time-parallel scan of d's bf16-rounded inputs (bf16 x, Δ, B, C, z in, bf16 y out, fast exp), with d's
// initial state carried in and the final state out.
M1Result run_m1_tp(const M1Data& d, const M1Case& c, const std::vector<float>& thr, kg::Mamba1TpShape shape) {
    Dev<__nv_bfloat16> x(to_bf16_host(d.x)), raw(to_bf16_host(d.dt_raw)), B(to_bf16_host(d.B)),
        C(to_bf16_host(d.C)), z(to_bf16_host(d.z)), y16(d.T * d.ldy);
    Dev<float> bias(d.bias), A(d.A), D(d.D), th(thr.empty() ? std::vector<float>(1) : thr), h(d.h0);
    kg::Mamba1ScanArgs a;
    a.T = d.T, a.E = d.E, a.N = 16;
    a.x16 = x.p, a.ldx = d.ldx, a.delta16 = raw.p, a.ldd = d.ldd;
    a.delta_bias = bias.p, a.delta_softplus = true;
    a.A = A.p, a.B16 = B.p, a.ldb = d.ldb, a.C16 = C.p, a.ldc = d.ldc, a.Dskip = D.p;
    a.z16 = c.gate ? z.p : nullptr, a.ldz = d.ldz, a.thr = c.filter ? th.p : nullptr;
    a.h = h.p, a.y16 = y16.p, a.ldy = d.ldy, a.fast_exp = true;
    kg::scan_mamba1_tp(a, nullptr, shape);
    M1Result r;
    r.y = cols_of(bf16_to_float(y16.download()), d.T, d.E, d.ldy);
    r.h = h.download();
    return r;
}

// Every built shape (channels per block × tokens per lane) against the CPU scan of the same bf16-rounded
// inputs: lengths inside one tile, across tiles and ending mid-lane, with the softplus, the filter, the gate
// on and off and a carried initial state. y is rounded to bf16 by the kernel, so it may differ from the
// rounded reference by one bf16 step (2^-8 of the largest |y|) plus fast exp's error; the final state is
// float32 and within fast exp's bound. A state carried through two calls equals one call's.
TEST(CudaScanMamba1Tp, MatchesTheCpuScanOfTheBf16InputsForEveryShape) {
    REQUIRE_GPU();
    std::mt19937 rng(91);
    const double tol_y = std::ldexp(1.0, -8) + kTolFastExp;
    for (const char* pipe : {"1", "0"})
        for (const kg::Mamba1TpShape shape : {kg::Mamba1TpShape{4, 8}, kg::Mamba1TpShape{4, 16},
                                              kg::Mamba1TpShape{8, 8}, kg::Mamba1TpShape{8, 16}}) {
            ScopedEnv env("MAMBASCOPE_M1_TP_PIPE", pipe);
            const M1Case cases[] = {
                {1, 8, 0, true, false, true},
                {37, 8, 0, true, true, false},
                {32 * shape.items * 2 + 45, 16, 0, true, true,
                 true},  // two whole tiles, then part of a lane's run
            };
            for (const auto& c : cases) {
                SCOPED_TRACE("shape " + std::to_string(shape.channels) + "x" + std::to_string(shape.items) +
                             " T=" + std::to_string(c.T) + " E=" + std::to_string(c.E) + " pipe " + pipe);
                M1Data d = round_m1_inputs(make_m1(c.T, c.E, rng, /*aligned=*/true));
                d.ldy = d.E + 8;
                const std::vector<float> thr =
                    c.filter ? safe_thresholds(m1_delta(d, true), d.T, d.E, d.ldd) : std::vector<float>{};
                const auto want = run_m1_cpu(d, c, thr);
                const auto got = run_m1_tp(d, c, thr, shape);
                const double ey = rel_err(got.y, round_bf16(want.y)), eh = rel_err(got.h, want.h);
                EXPECT_LE(ey, tol_y);
                EXPECT_LE(eh, kTolFastExp);
                if (c.T > 100) {
                    std::printf("  time-parallel scan %dx%d (pipe %s), T=%lld: y %.2e, final h %.2e\n",
                                shape.channels, shape.items, pipe, static_cast<long long>(c.T), ey, eh);
                    // the first 200 tokens, then the rest from the state they leave
                    M1Data d1 = d, d2 = d;
                    d1.T = 200, d2.T = d.T - 200;
                    auto tail = [](std::vector<float> v, int64_t ld) {
                        v.erase(v.begin(), v.begin() + 200 * ld);
                        return v;
                    };
                    d2.x = tail(d.x, d.ldx), d2.dt_raw = tail(d.dt_raw, d.ldd), d2.z = tail(d.z, d.ldz);
                    d2.B = tail(d.B, d.ldb), d2.C = tail(d.C, d.ldc);
                    const auto first = run_m1_tp(d1, c, thr, shape);
                    d2.h0 = first.h;
                    const auto second = run_m1_tp(d2, c, thr, shape);
                    EXPECT_LE(rel_err(second.h, got.h), 1e-5);
                }
            }
        }
}

// MAMBASCOPE_M1_TP: 0 never, 1 the default shape, "CxK" a built shape; anything else is an error naming it.
TEST(CudaScanMamba1Tp, TheSwitchNamesAShapeOrIsAnError) {
    kg::Mamba1TpShape s;
    {
        ScopedEnv e("MAMBASCOPE_M1_TP", "0");
        EXPECT_FALSE(kg::scan_mamba1_tp_chosen(&s));
    }
    {
        ScopedEnv e("MAMBASCOPE_M1_TP", "1");
        EXPECT_TRUE(kg::scan_mamba1_tp_chosen(&s));
        EXPECT_EQ(kg::scan_mamba1_tp_unsupported(kg::Mamba1ScanArgs{}, s).find("not built"),
                  std::string::npos);
    }
    {
        ScopedEnv e("MAMBASCOPE_M1_TP", "8x8");
        EXPECT_TRUE(kg::scan_mamba1_tp_chosen(&s));
        EXPECT_EQ(s.channels, 8);
        EXPECT_EQ(s.items, 8);
    }
    for (const char* bad : {"4x12", "yes", "4x16x", "2"}) {
        ScopedEnv e("MAMBASCOPE_M1_TP", bad);
        expect_error_naming("MAMBASCOPE_M1_TP", [&] { (void)kg::scan_mamba1_tp_chosen(&s); });
    }
    ScopedEnv e("MAMBASCOPE_M1_TP_PIPE", "2");
    kg::Mamba1ScanArgs a;  // a call it takes, so that only the switch can refuse it
    a.T = 0, a.E = 8, a.ldx = a.ldd = a.ldy = 8, a.ldb = a.ldc = 32, a.fast_exp = true;
    auto at = [](uintptr_t v) { return reinterpret_cast<__nv_bfloat16*>(v); };
    a.x16 = at(0x1000), a.delta16 = at(0x2000), a.B16 = at(0x3000), a.C16 = at(0x4000), a.y16 = at(0x5000);
    a.A = reinterpret_cast<const float*>(0x6000);
    expect_error_naming("MAMBASCOPE_M1_TP_PIPE", [&] { kg::scan_mamba1_tp(a, nullptr, {4, 8}); });
}

// What the time-parallel scan does not take is an error naming the reason, before any launch.
TEST(CudaScanMamba1Tp, RefusesWhatItDoesNotTakeWithTheReason) {
    kg::Mamba1ScanArgs a;
    a.T = 10, a.E = 12, a.N = 16, a.ldx = a.ldd = a.ldy = 16, a.ldb = a.ldc = 32, a.fast_exp = true;
    // aligned fake device addresses: the checks never dereference
    auto at = [](uintptr_t v) { return reinterpret_cast<__nv_bfloat16*>(v); };
    a.x16 = at(0x1000), a.delta16 = at(0x2000), a.B16 = at(0x3000), a.C16 = at(0x4000), a.y16 = at(0x5000);
    a.A = reinterpret_cast<const float*>(0x6000);
    EXPECT_EQ(kg::scan_mamba1_tp_unsupported(a, {4, 8}), "");
    auto refused = [&](kg::Mamba1ScanArgs b, kg::Mamba1TpShape s, const std::string& part) {
        const std::string why = kg::scan_mamba1_tp_unsupported(b, s);
        EXPECT_NE(why.find(part), std::string::npos) << why;
        try {
            kg::scan_mamba1_tp(b, nullptr, s);
            ADD_FAILURE() << "accepted: " << part;
        } catch (const mambascope::Error& e) {
            EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
        }
    };
    refused(a, {8, 8}, "multiple of 8");  // E = 12
    refused(a, {4, 12}, "not built");
    auto b = a;
    b.fast_exp = false;
    refused(b, {4, 8}, "fast exp");
    b = a, b.N = 8;
    refused(b, {4, 8}, "d_state");
    b = a, b.x = reinterpret_cast<const float*>(0x7000);
    refused(b, {4, 8}, "float32");
    b = a, b.ldx = 13;
    refused(b, {4, 8}, "aligned");
    b = a, b.ldb = 20;
    refused(b, {4, 8}, "B and C");
    b = a, b.probes.kept = reinterpret_cast<int64_t*>(0x8000);
    refused(b, {4, 8}, "probes");
}

// One Mamba-1 scan of d (float32 inputs, or bf16 inputs through the bf16 kernels) with fresh probe buffers,
// under var=value for the call (value null: unset): the result and the probes. The A/B tests of scan settings
// below compare such runs.
struct M1ProbedRun {
    M1Result r;
    std::vector<double> dsum, logd;
    std::vector<int64_t> kept;
};
M1ProbedRun run_m1_probed(const M1Data& d, const M1Case& c, const std::vector<float>& thr, bool bf16,
                          bool fast_exp, const char* var, const char* value,
                          Dev<unsigned char>* workspace = nullptr) {
    ScopedEnv env(var, value);
    Dev<double> ds(d.E), ld(d.E);
    Dev<int64_t> kept(d.E);
    ds.zero(), ld.zero(), kept.zero();
    const kg::ScanProbes pr{ds.p, kept.p, ld.p};
    M1ProbedRun out;
    out.r = bf16 ? run_m1_gpu_bf16(d, c, thr, pr, false, nullptr, fast_exp, workspace)
                 : run_m1_gpu(d, c, thr, pr, fast_exp, workspace);
    out.dsum = ds.download(), out.logd = ld.download(), out.kept = kept.download();
    return out;
}

// One fast- or default-exp scan under VAR=value (null: unset): with probes as run_m1_probed, without them y
// in float32 or (y_bf16, bf16 inputs) bf16. For the tests that compare a switch's two settings bit for bit.
M1ProbedRun run_m1_under(const char* var, const char* value, const M1Data& d, const M1Case& c,
                         const std::vector<float>& thr, bool bf16, bool fast_exp, bool probes,
                         bool y_bf16 = false) {
    if (probes) return run_m1_probed(d, c, thr, bf16, fast_exp, var, value);
    ScopedEnv env(var, value);
    M1ProbedRun out;
    out.r = bf16 ? run_m1_gpu_bf16(d, c, thr, {}, y_bf16, nullptr, fast_exp)
                 : run_m1_gpu(d, c, thr, {}, fast_exp);
    return out;
}

// A chunked scan takes its probes in pass 1 (which then scans the last chunk too) and runs pass 3 without
// them; MAMBASCOPE_M1_PROBES_PASS=3 keeps them in pass 3. Both orders take each chunk's sums in the same
// order, so the probes agree to the double rounding of the atomicAdds across chunks (the kept counts
// exactly), and y, Δ' and the final state are equal bit for bit: on float32 and bf16 inputs, default and fast
// exp, several chunkings, with the log-sum-exp fallback in channels 0 and 1.
TEST(CudaScanMamba1, ProbesTakenInPass1EqualThoseTakenInPass3) {
    REQUIRE_GPU();
    std::mt19937 rng(19);
    const M1Case cases[] = {
        {999, 136, 64, true, true, true},     // softplus, filter, gate; 16 chunks, the last one short
        {1024, 64, 128, false, true, false},  // the last chunk full
        {300, 40, 0, true, true, true},       // the automatic plan
    };
    for (const auto& c : cases)
        for (int variant = 0; variant < 3; ++variant) {
            const bool bf16 = variant == 2, fast = variant != 0;
            SCOPED_TRACE("T=" + std::to_string(c.T) + " E=" + std::to_string(c.E) + " variant " +
                         std::to_string(variant));
            M1Data d = make_m1(c.T, c.E, rng, /*aligned=*/true);
            for (int64_t t = 0; t < d.T; ++t) d.dt_raw[t * d.ldd + 0] = d.dt_raw[t * d.ldd + 1] = 3.5f;
            for (int n = 0; n < 16; ++n) d.A[0 * 16 + n] = d.A[1 * 16 + n] = -30.0f - 2.0f * n;
            if (bf16) d = round_m1_inputs(d);
            std::vector<float> thr = safe_thresholds(m1_delta(d, c.softplus), d.T, d.E, d.ldd);
            thr[0] = -INFINITY;
            auto run = [&](const char* pass) {
                return run_m1_probed(d, c, thr, bf16, fast, "MAMBASCOPE_M1_PROBES_PASS", pass);
            };
            const M1ProbedRun p1 = run(nullptr), p3 = run("3");
            EXPECT_EQ(p1.kept, p3.kept);
            EXPECT_LE(rel_err(p1.dsum, p3.dsum), 1e-12);
            EXPECT_LE(rel_err(p1.logd, p3.logd), 1e-12);
            EXPECT_EQ(p1.r.y, p3.r.y);
            EXPECT_EQ(p1.r.h, p3.r.h);
            EXPECT_EQ(p1.r.delta_used, p3.r.delta_used);
            int64_t n_tokens = 0;
            for (int64_t v : p1.kept) n_tokens += v;
            EXPECT_GT(n_tokens, 0);
            EXPECT_EQ(p1.kept[0], d.T);  // unfiltered channel: every token, the last chunk's included
        }
    // any other value of the switch is a clear error, not a silent default
    std::mt19937 rng2(20);
    const M1Data d = make_m1(200, 32, rng2);
    ScopedEnv bad("MAMBASCOPE_M1_PROBES_PASS", "2");
    expect_error_naming("MAMBASCOPE_M1_PROBES_PASS", [&] {
        run_m1_gpu(d, M1Case{200, 32, 64, false, false, false}, {}, {}, true);
    });
}

#ifdef MAMBASCOPE_CUDA_EMULATED
// exp2_soft, the FMA-pipe 2^x of the soft exp (device_math.cuh; docs/cuda.md, "Soft exp"), its arithmetic run
// on the host as the emulation runs every kernel (the GPU's instructions are tested through the scan below):
// within 1 ulp of 2^x over 4 million points of [−125, 10] (ex2.approx's bound is 2 ulp), exactly 1 at 0, and
// at and beyond the clamps a tiny normal or a large finite value, never a wrapped exponent.
TEST(CudaDeviceMath, SoftExp2IsWithinOneUlpAndClampsWithoutWrapping) {
    namespace dm = mambascope::kernels::cuda::detail;
    double worst = 0.0, worst_x = 0.0;
    for (int i = 0; i <= 4'000'000; ++i) {
        const float x = -125.0f + 135.0f * static_cast<float>(i) / 4e6f;
        const double want = std::exp2(static_cast<double>(x));
        const double ulp = std::ldexp(1.0, std::ilogb(want) - 23);
        const double err = std::fabs(static_cast<double>(dm::exp2_soft(x)) - want) / ulp;
        if (err > worst) worst = err, worst_x = x;
    }
    std::printf("  exp2_soft: worst %.3f ulp at x = %g\n", worst, worst_x);
    EXPECT_LE(worst, 1.0);
    EXPECT_EQ(dm::exp2_soft(0.0f), 1.0f);
    EXPECT_EQ(dm::exp2_soft(-3.0f), 0.125f);
    for (const float x : {-125.5f, -126.0f, -300.0f, -1e30f, -INFINITY}) {
        const float e = dm::exp2_soft(x);
        EXPECT_GE(e, std::numeric_limits<float>::min()) << x;
        EXPECT_LE(e, std::ldexp(1.0f, -124)) << x;
    }
    for (const float x : {127.4f, 300.0f, INFINITY}) {
        const float e = dm::exp2_soft(x);
        EXPECT_TRUE(std::isfinite(e)) << x;
        EXPECT_GE(e, std::ldexp(1.0f, 126)) << x;
    }
}
#endif

// The soft exp (docs/cuda.md, "Soft exp"): MAMBASCOPE_M1_SOFT_EXP sends a token's first k state exps of pass
// 1 to exp2_soft instead of the MUFU. Chunked float32 scans (fast exp), channels 0 and 1 decaying past the
// clamp (Δ·A·log2 e down to ≈ −560): each setting takes effect (y differs from the MUFU-only run in some
// bit), y stays within twice the MUFU-only run's error of the float64 reference (memories up to ≈ 3000
// tokens, where a biased exp would accumulate), the final state within float32 rounding of it. Then bf16
// inputs with filter, gate and probes in pass 1: y and the log-decay probe agree with the MUFU-only run to
// float32 rounding. A value outside the built set, or the switch together with MAMBASCOPE_M1_BLOCKS_PER_SM,
// is a clear error.
TEST(CudaScanMamba1, SoftExpTakesEffectAndAgreesWithTheFloat64Reference) {
    REQUIRE_GPU();
    std::mt19937 rng(81);
    const M1Case c{3000, 64, 256, false, false, false};  // Δ given, no filter, no gate: m1_float64_y's scan
    M1Data d = make_m1(c.T, c.E, rng, /*aligned=*/true);
    for (int n = 0; n < 16; ++n) d.A[0 * 16 + n] = d.A[1 * 16 + n] = -400.0f + n;
    const std::vector<double> y64 = m1_float64_y(d);
    const M1Result base = run_m1_gpu(d, c, {}, {}, true);
    const double e_base = rel_err(base.y, y64);
    for (const char* soft : {"2", "4"}) {
        ScopedEnv env("MAMBASCOPE_M1_SOFT_EXP", soft);
        const M1Result got = run_m1_gpu(d, c, {}, {}, true);
        const double e = rel_err(got.y, y64);
        std::printf("  soft exp %s: y vs float64 %.2e (MUFU only %.2e)\n", soft, e, e_base);
        EXPECT_NE(got.y, base.y);
        EXPECT_LE(e, std::max(2.0 * e_base, kTol));
        EXPECT_LE(rel_err(got.h, base.h), 1e-4);
    }

    const M1Case cb{1500, 136, 128, true, true, true};  // softplus, filter, gate
    const M1Data db = round_m1_inputs(make_m1(cb.T, cb.E, rng, /*aligned=*/true));
    const std::vector<float> thr = safe_thresholds(m1_delta(db, cb.softplus), db.T, db.E, db.ldd);
    auto run_bf16 = [&](const char* soft) {
        ScopedEnv env("MAMBASCOPE_M1_SOFT_EXP", soft);
        Dev<double> ds(db.E), ld(db.E);
        Dev<int64_t> kept(db.E);
        ds.zero(), ld.zero(), kept.zero();
        const M1Result r = run_m1_gpu_bf16(db, cb, thr, {ds.p, kept.p, ld.p}, false, nullptr, true);
        return std::make_pair(r, ld.download());
    };
    const auto mufu = run_bf16(nullptr), soft = run_bf16("4");
    EXPECT_NE(soft.first.y, mufu.first.y);
    EXPECT_LE(rel_err(soft.first.y, mufu.first.y), 1e-4);
    EXPECT_LE(rel_err(soft.second, mufu.second), 1e-5);

    {
        ScopedEnv bad("MAMBASCOPE_M1_SOFT_EXP", "3");  // built for 0, 2 and 4 only
        expect_error_naming("MAMBASCOPE_M1_SOFT_EXP", [&] { run_m1_gpu(d, c, {}, {}, true); });
    }
    ScopedEnv both("MAMBASCOPE_M1_SOFT_EXP", "2"), blocks("MAMBASCOPE_M1_BLOCKS_PER_SM", "5");
    expect_error_naming("MAMBASCOPE_M1_BLOCKS_PER_SM", [&] { run_m1_gpu(d, c, {}, {}, true); });
}

// MAMBASCOPE_M1_BLOCKS_PER_SM (docs/cuda.md, "Resident blocks"): both fast-exp passes compiled for 5 or 6
// resident blocks per SM (96 / 80 registers, a few spills) and the plan's chunks for that wave. The same
// arithmetic with another register allocation: y, Δ' and the final state equal the default kernels' to
// float32 rounding (bit for bit where ptxas keeps the same contractions; printed), the probes' kept counts
// exactly, their sums to rounding; float32 and bf16 inputs, filter, gate and probes, the automatic plan and a
// forced chunking. On a GPU the automatic plan of a long input takes at least as many chunks as the
// default's.
TEST(CudaScanMamba1, BlocksPerSmVariantsAgreeWithTheDefaultKernels) {
    REQUIRE_GPU();
    std::mt19937 rng(82);
    for (const int64_t chunk : {int64_t{0}, int64_t{96}})
        for (const bool bf16 : {false, true}) {
            const M1Case c{2000, 200, chunk, true, true, true};
            const M1Data d0 = make_m1(c.T, c.E, rng, /*aligned=*/true);
            const M1Data d = bf16 ? round_m1_inputs(d0) : d0;
            const std::vector<float> thr = safe_thresholds(m1_delta(d, c.softplus), d.T, d.E, d.ldd);
            auto run = [&](const char* blocks) {
                return run_m1_probed(d, c, thr, bf16, true, "MAMBASCOPE_M1_BLOCKS_PER_SM", blocks);
            };
            const M1ProbedRun base = run(nullptr);
            for (const char* blocks : {"5", "6"}) {
                SCOPED_TRACE(std::string("blocks ") + blocks + (bf16 ? " bf16" : " float32") + " chunk " +
                             std::to_string(chunk));
                const M1ProbedRun got = run(blocks);
                std::printf("  %s blocks/SM, %s, chunk %lld: y %s the default's\n", blocks,
                            bf16 ? "bf16" : "float32", static_cast<long long>(chunk),
                            got.r.y == base.r.y ? "bit for bit" : "within rounding of");
                EXPECT_LE(rel_err(got.r.y, base.r.y), 1e-6);
                EXPECT_LE(rel_err(got.r.h, base.r.h), 1e-6);
                EXPECT_EQ(got.r.delta_used, base.r.delta_used);
                EXPECT_EQ(got.kept, base.kept);
                EXPECT_LE(rel_err(got.dsum, base.dsum), 1e-9);
                EXPECT_LE(rel_err(got.logd, base.logd), 1e-6);
            }
        }
#ifndef MAMBASCOPE_CUDA_EMULATED  // the emulation's occupancy does not follow launch bounds
    const int64_t chunks4 = kg::scan_mamba1_plan(131072, 4096, 0).chunks;
    ScopedEnv five("MAMBASCOPE_M1_BLOCKS_PER_SM", "5");
    const int64_t chunks5 = kg::scan_mamba1_plan(131072, 4096, 0).chunks;
    std::printf("  plan at 4096 x 128k: %lld chunks (default), %lld (5 blocks/SM)\n",
                static_cast<long long>(chunks4), static_cast<long long>(chunks5));
    EXPECT_GE(chunks5, chunks4);
#endif
    ScopedEnv bad("MAMBASCOPE_M1_BLOCKS_PER_SM", "7");
    std::mt19937 rng2(83);
    const M1Data d = make_m1(300, 32, rng2);
    expect_error_naming("MAMBASCOPE_M1_BLOCKS_PER_SM", [&] {
        run_m1_gpu(d, M1Case{300, 32, 64, false, false, false}, {}, {}, true);
    });
}

// Δ' once (docs/cuda.md, "Δ' once"): pass 1 of a chunked scan writes each token's Δ' (bias, softplus, filter)
// to the workspace and pass 3 reads it back instead of computing it again. The same float32 values go into
// the same arithmetic, so y, the final state and Δ' equal MAMBASCOPE_M1_DT_ONCE=0's (Δ' in both passes) bit
// for bit, the probes (taken in pass 1) too: float32 and bf16 inputs, default and fast exp, the cp.async ring
// and the per-thread loads (unaligned rows), a short last chunk and the automatic plan. The setting takes
// effect: the workspace grows by T·E floats exactly when the scan is chunked, and a workspace sized for the
// switch off is refused with it on, and after a call the workspace's last T·E floats hold every token's Δ'.
// On a GPU, pass 3 (launched with a programmatic edge from pass 2) reads Δ' only after its wait: a
// NaN-poisoned workspace gives the same y three times over. A value other than 0 or 1 is a clear error.
TEST(CudaScanMamba1, DeltaOnceEqualsDeltaInBothPassesBitForBit) {
    REQUIRE_GPU();
    std::mt19937 rng(84);
    struct Case {
        M1Case c;
        bool aligned, probes;
    };
    const Case cases[] = {
        {{999, 136, 64, true, true, true}, true, false},     // 16 chunks, the last one short; the ring
        {{999, 136, 64, true, true, true}, true, true},      // probes in pass 1
        {{777, 40, 48, true, true, true}, false, false},     // per-thread loads (rows off 16 bytes)
        {{1500, 256, 0, true, false, true}, true, false},    // the automatic plan
        {{1024, 64, 128, false, false, false}, true, true},  // Δ given (no softplus), the last chunk full
    };
    for (const auto& k : cases)
        for (int variant = 0; variant < 3; ++variant) {
            const M1Case& c = k.c;
            const bool bf16 = variant == 2, fast = variant != 0;
            if (bf16 && !k.aligned) continue;  // the bf16 scan takes the same paths on these rows
            SCOPED_TRACE("T=" + std::to_string(c.T) + " E=" + std::to_string(c.E) + " chunk " +
                         std::to_string(c.chunk_len) + " variant " + std::to_string(variant) +
                         (k.probes ? " probes" : ""));
            M1Data d = make_m1(c.T, c.E, rng, k.aligned);
            if (bf16) d = round_m1_inputs(d);
            const std::vector<float> thr =
                c.filter ? safe_thresholds(m1_delta(d, c.softplus), d.T, d.E, d.ldd) : std::vector<float>{};
            auto run = [&](const char* once) {
                return run_m1_under("MAMBASCOPE_M1_DT_ONCE", once, d, c, thr, bf16, fast, k.probes);
            };
            const M1ProbedRun once = run(nullptr), twice = run("0");
            EXPECT_EQ(once.r.y, twice.r.y);
            EXPECT_EQ(once.r.h, twice.r.h);
            EXPECT_EQ(once.r.delta_used, twice.r.delta_used);
            EXPECT_EQ(once.kept, twice.kept);
            EXPECT_EQ(once.dsum, twice.dsum);
            EXPECT_EQ(once.logd, twice.logd);
            if (c.chunk_len > 0) EXPECT_GT(kg::scan_mamba1_plan(c.T, c.E, c.chunk_len).chunks, 1);
        }

    // The workspace: T·E floats more when chunked, none for a single pass; too small a one is refused.
    for (const auto& [T, E, chunk] :
         {std::tuple<int64_t, int64_t, int64_t>{999, 136, 64}, {500, 64, 0}, {200, 64, 100000}}) {
        const size_t on = kg::scan_mamba1_workspace_bytes(T, E, 16, chunk);
        size_t off = 0;
        {
            ScopedEnv env("MAMBASCOPE_M1_DT_ONCE", "0");
            off = kg::scan_mamba1_workspace_bytes(T, E, 16, chunk);
        }
        const size_t dp = (static_cast<size_t>(T) * E * sizeof(float) + 255) / 256 * 256;
        EXPECT_EQ(on, off + (kg::scan_mamba1_plan(T, E, chunk).chunks > 1 ? dp : 0)) << T << " x " << E;
    }
    std::mt19937 rng2(85);
    const M1Case cw{999, 136, 64, true, true, true};
    const M1Data dw = make_m1(cw.T, cw.E, rng2, /*aligned=*/true);
    const std::vector<float> thrw = safe_thresholds(m1_delta(dw, cw.softplus), dw.T, dw.E, dw.ldd);
    size_t off_bytes = 0;
    {
        ScopedEnv env("MAMBASCOPE_M1_DT_ONCE", "0");
        off_bytes = kg::scan_mamba1_workspace_bytes(cw.T, cw.E, 16, cw.chunk_len);
    }
    Dev<unsigned char> small(off_bytes);
    expect_error_naming("workspace too small", [&] { run_m1_gpu(dw, cw, thrw, {}, true, &small); });
    // Pass 3 reads Δ' after its wait for pass 2 (and so pass 1): a poisoned workspace changes nothing.
    Dev<unsigned char> ws(kg::scan_mamba1_workspace_bytes(cw.T, cw.E, 16, cw.chunk_len));
    const M1Result plain = run_m1_gpu(dw, cw, thrw, {}, true);
#ifndef MAMBASCOPE_CUDA_EMULATED
    const int reps = 3;
#else
    const int reps = 1;
#endif
    for (int rep = 0; rep < reps; ++rep) {
        ws.poison();
        const M1Result got = run_m1_gpu(dw, cw, thrw, {}, true, &ws);
        EXPECT_EQ(got.y, plain.y) << "rep " << rep;
        EXPECT_EQ(got.delta_used, plain.delta_used) << "rep " << rep;
        // pass 1 wrote every token's Δ' (T, E) at the end of the workspace, where pass 3 read it
        const std::vector<unsigned char> bytes = ws.download();
        const size_t dp_bytes = static_cast<size_t>(cw.T) * cw.E * sizeof(float);
        const size_t at = bytes.size() - (dp_bytes + 255) / 256 * 256;
        std::vector<float> dp(static_cast<size_t>(cw.T) * cw.E);
        std::memcpy(dp.data(), bytes.data() + at, dp_bytes);
        EXPECT_EQ(cols_of(dp, cw.T, cw.E, cw.E), plain.delta_used) << "rep " << rep;
    }
    ScopedEnv bad("MAMBASCOPE_M1_DT_ONCE", "2");
    expect_error_naming("MAMBASCOPE_M1_DT_ONCE", [&] { run_m1_gpu(dw, cw, thrw, {}, true); });
}

// Lean tiles (docs/cuda.md, "Lean tiles"; the default where built, MAMBASCOPE_M1_LEAN=0 the register tiles):
// the fast-exp passes read x, Δ (Δ') and z from the ring per token instead of holding a tile of them in
// registers, count a tile's tokens once and step the addresses of y and of pass 1's Δ' by one row per token.
// The same arithmetic in the same order: y, the final state and Δ' equal the register tiles' bit for bit (the
// probes to the order of their atomic adds), on float32 and bf16 inputs (y in float32, and in bf16 without
// probes), through the cp.async ring and the per-thread loads (unaligned rows, which stage into the ring's
// first stage), with and without probes, a short last chunk, the automatic plan, a single pass, and 5 blocks
// per SM. A value other than 0 or 1 is a clear error, and so is 1 with the soft exp (built with the register
// tiles only, which it takes by default).
TEST(CudaScanMamba1, LeanTilesEqualTheDefaultTilesBitForBit) {
    REQUIRE_GPU();
    std::mt19937 rng(88);
    const M1Case cases[] = {
        {999, 136, 64, true, true, true},    // 16 chunks, the last one short
        {700, 64, 0, true, true, false},     // the automatic plan, no gate
        {90, 40, 100000, true, true, true},  // one pass (pass 3 keeps its default tiles)
    };
    int compared = 0;
    for (const auto& c : cases)
        for (const bool bf16 : {false, true})
            for (const bool aligned : {true, false})
                for (const bool probes : {false, true})
                    for (const char* blocks : {static_cast<const char*>(nullptr), "5"}) {
                        if (blocks && &c != &cases[0]) continue;
                        SCOPED_TRACE("T=" + std::to_string(c.T) + " E=" + std::to_string(c.E) +
                                     (bf16 ? " bf16" : " float32") + (aligned ? " ring" : " loads") +
                                     (probes ? " probes" : "") + (blocks ? " 5 blocks" : ""));
                        M1Data d = make_m1(c.T, c.E, rng, aligned);
                        if (bf16) d = round_m1_inputs(d);
                        const std::vector<float> thr =
                            safe_thresholds(m1_delta(d, c.softplus), d.T, d.E, d.ldd);
                        ScopedEnv b("MAMBASCOPE_M1_BLOCKS_PER_SM", blocks);
                        auto run = [&](const char* lean) {
                            return run_m1_under("MAMBASCOPE_M1_LEAN", lean, d, c, thr, bf16, true, probes,
                                                /*y_bf16=*/true);
                        };
                        const M1ProbedRun base = run("0"), lean = run(nullptr);
                        EXPECT_EQ(lean.r.y, base.r.y);
                        EXPECT_EQ(lean.r.h, base.r.h);
                        EXPECT_EQ(lean.r.delta_used, base.r.delta_used);
                        // the probes' double sums meet in atomicAdds across chunks, in any order
                        EXPECT_LE(rel_err(lean.dsum, base.dsum), 1e-12);
                        EXPECT_LE(rel_err(lean.logd, base.logd), 1e-12);
                        EXPECT_EQ(lean.kept, base.kept);
                        ++compared;
                    }
    EXPECT_EQ(compared, 32);
    std::mt19937 rng2(89);
    const M1Data d = make_m1(300, 32, rng2);
    const M1Case small{300, 32, 64, false, false, false};
    {
        ScopedEnv bad("MAMBASCOPE_M1_LEAN", "2");
        expect_error_naming("MAMBASCOPE_M1_LEAN", [&] { run_m1_gpu(d, small, {}, {}, true); });
    }
    ScopedEnv soft("MAMBASCOPE_M1_SOFT_EXP", "2");
    EXPECT_NO_THROW(run_m1_gpu(d, small, {}, {}, true));  // the default takes the register tiles
    ScopedEnv both("MAMBASCOPE_M1_LEAN", "1");
    expect_error_naming("MAMBASCOPE_M1_SOFT_EXP", [&] { run_m1_gpu(d, small, {}, {}, true); });
}

// A chunked scan launches pass 2 and pass 3 with a programmatic edge from the pass before (PDL: each may
// start while the pass before runs and waits for it in grid_dependency_wait); MAMBASCOPE_M1_SCAN_PDL=0
// launches them plainly. The workspace (pass 1's end states and sums, pass 2's start states) is poisoned with
// NaN before every run, so on a GPU a pass that read its predecessor's output before its wait would read NaN
// or a stale value. y, the final state and Δ' equal the plain launches' bit for bit, the probes' kept counts
// exactly and their sums to the rounding of the atomics across chunks: float32 and bf16 inputs (the cp.async
// ring), probes in pass 1 and in pass 3, three programmatic runs each on a GPU. (The CPU emulation launches
// plainly either way: there one small case checks the plumbing and the switch.)
TEST(CudaScanMamba1, ProgrammaticPassLaunchesEqualPlainLaunchesBitForBit) {
    REQUIRE_GPU();
    std::mt19937 rng(23);
    std::vector<M1Case> cases = {{999, 136, 64, true, true, true}};  // 16 chunks, the last one short
    int reps = 1;
#ifndef MAMBASCOPE_CUDA_EMULATED  // the emulation's time: both launches are plain there
    cases.push_back(
        {2048, 1536, 0, true, true, true});  // the automatic plan at 2k × 1536: 32 chunks × 12 blocks
    cases.push_back({4096, 256, 128, true, false, false});
    reps = 3;
#endif
    for (const auto& c : cases)
        for (int variant = 0; variant < 4; ++variant) {
            const bool bf16 = variant >= 2, probes_pass3 = variant % 2 == 1;
            SCOPED_TRACE("T=" + std::to_string(c.T) + " E=" + std::to_string(c.E) + " variant " +
                         std::to_string(variant));
            M1Data d = make_m1(c.T, c.E, rng, /*aligned=*/true);
            if (bf16) d = round_m1_inputs(d);
            const std::vector<float> thr =
                c.filter ? safe_thresholds(m1_delta(d, c.softplus), d.T, d.E, d.ldd) : std::vector<float>{};
            ScopedEnv pass("MAMBASCOPE_M1_PROBES_PASS", probes_pass3 ? "3" : nullptr);
            Dev<unsigned char> ws(kg::scan_mamba1_workspace_bytes(c.T, c.E, 16, c.chunk_len));
            auto run = [&](const char* pdl) {
                ws.poison();
                return run_m1_probed(d, c, thr, bf16, true, "MAMBASCOPE_M1_SCAN_PDL", pdl, &ws);
            };
            const M1ProbedRun plain = run("0");
            for (const double v : plain.dsum) ASSERT_TRUE(std::isfinite(v));
            for (int rep = 0; rep < reps; ++rep) {
                const M1ProbedRun pdl = run(nullptr);
                EXPECT_EQ(pdl.r.y, plain.r.y);
                EXPECT_EQ(pdl.r.h, plain.r.h);
                EXPECT_EQ(pdl.r.delta_used, plain.r.delta_used);
                EXPECT_EQ(pdl.kept, plain.kept);
                EXPECT_LE(rel_err(pdl.dsum, plain.dsum), 1e-12);
            }
        }
    std::mt19937 rng2(24);
    const M1Data d = make_m1(200, 32, rng2);
    ScopedEnv bad("MAMBASCOPE_M1_SCAN_PDL", "yes");
    expect_error_naming("MAMBASCOPE_M1_SCAN_PDL", [&] {
        run_m1_gpu(d, M1Case{200, 32, 64, false, false, false}, {}, {}, true);
    });
}

TEST(CudaScanMamba1Bf16, RejectsMixedFloat32AndBf16Inputs) {
    // Runs without a GPU: the argument check comes before any CUDA call.
    kg::Mamba1ScanArgs a;
    a.T = 4, a.E = 4, a.N = 16;
    float f = 0.0f;
    __nv_bfloat16 b{};
    a.x16 = &b, a.delta16 = &b, a.B16 = &b, a.C16 = &b, a.x = &f;  // x given twice
    a.A = &f, a.y = &f, a.ldx = a.ldd = a.ldy = 4, a.ldb = a.ldc = 16;
    EXPECT_THROW(kg::scan_mamba1(a, nullptr, 0, nullptr), mambascope::Error);
}

// dt_proj fused into the scan (decode steps): Δ = softplus(low·dt_projᵀ + bias) computed in the kernel equals
// the CPU's dt_proj product followed by the CPU scan, with float32 and bf16 low-rank inputs, filter and gate.
TEST(CudaScanMamba1, LowRankDeltaFusedEqualsDtProjThenScan) {
    REQUIRE_GPU();
    std::mt19937 rng(76);
    for (const bool in16 : {false, true})
        for (const int64_t T : {int64_t{1}, int64_t{13}}) {
            const int64_t E = 150, R = 7,
                          ldl = R + 2 * 16 + 3;  // low rows as x_proj's output (R_dt + 2N, padded)
            M1Data d = make_m1(T, E, rng);
            if (in16) d = round_m1_inputs(d);
            auto low = randn(T * ldl, rng, 0.5f);
            if (in16) low = round_bf16(low);
            const auto W = randn(E * R, rng, 0.7f);
            // CPU: raw dt = low·Wᵀ (in double, rounded once), then the reference (softplus(dt + bias)
            // inside).
            M1Data ref = d;
            for (int64_t t = 0; t < T; ++t)
                for (int64_t e = 0; e < E; ++e) {
                    double acc = 0.0;
                    for (int64_t r = 0; r < R; ++r) acc += double(low[t * ldl + r]) * W[e * R + r];
                    ref.dt_raw[t * d.ldd + e] = static_cast<float>(acc);
                }
            const M1Case c{T, E, 0, true, true, true};
            const std::vector<float> thr = safe_thresholds(m1_delta(ref, true), T, E, d.ldd);
            const auto want = run_m1_cpu(ref, c, thr);

            Dev<float> x(d.x), bias(d.bias), A(d.A), B(d.B), C(d.C), D(d.D), z(d.z), th(thr), h(d.h0),
                y(T * d.ldy), w(W), low32(low);
            Dev<__nv_bfloat16> x16(to_bf16_host(d.x)), B16(to_bf16_host(d.B)), C16(to_bf16_host(d.C)),
                z16(to_bf16_host(d.z)), low16(to_bf16_host(low));
            kg::Mamba1ScanArgs a;
            a.T = T, a.E = E, a.N = 16;
            if (in16)
                a.x16 = x16.p, a.delta16 = low16.p, a.B16 = B16.p, a.C16 = C16.p, a.z16 = z16.p;
            else
                a.x = x.p, a.delta = low32.p, a.B = B.p, a.C = C.p, a.z = z.p;
            a.ldx = d.ldx, a.ldd = ldl, a.ldb = d.ldb, a.ldc = d.ldc, a.ldz = d.ldz;
            a.dt_proj_w = w.p, a.dt_rank = R, a.delta_bias = bias.p, a.delta_softplus = true;
            a.A = A.p, a.Dskip = D.p, a.thr = th.p, a.h = h.p, a.y = y.p, a.ldy = d.ldy;
            kg::scan_mamba1(a, nullptr, 0, nullptr);
            SCOPED_TRACE(std::string(in16 ? "bf16" : "fp32") + " T=" + std::to_string(T));
            EXPECT_LE(rel_err(cols_of(y.download(), T, E, d.ldy), want.y), kTol);
            EXPECT_LE(rel_err(h.download(), want.h), kTol);
        }
}

// Decode steps (T = 1, dt_proj fused) take m1_step, a one-token kernel (kernels/cuda/scan_mamba1.cu) with
// m1_scan's per-channel arithmetic in the same order: y (float32 or bf16), Δ' and the carried state equal
// m1_scan's one-token run (MAMBASCOPE_M1_STEP=0) bit for bit over three steps, with the block's dt_proj and A
// rows staged in shared memory (MAMBASCOPE_M1_STEP_STAGE=1: R = 48, 12, 188; by default R = 188) and read
// from global memory (=0; R = 7 and 200 always), with the token's low-rank input, B and C staged in shared
// memory or read from global memory (MAMBASCOPE_M1_STEP_ACT), on the 16-byte dt_proj path and
// the scalar one (R = 7), float32 and bf16 inputs, gated or not, with a filter, E not a multiple of the
// block; and they match the CPU reference. A bad value of a switch is an error.
TEST(CudaScanMamba1, DecodeStepKernelEqualsTheTiledScanOfOneToken) {
    REQUIRE_GPU();
    std::mt19937 rng(81);
    for (const bool in16 : {false, true})
        // R 48: staged rows padded to 52 floats; 12: unpadded; 188: 53 KB of shared memory (opt-in above 48);
        // 7 and 200: read from global memory
        for (const int64_t R : {int64_t{48}, int64_t{7}, int64_t{12}, int64_t{188}, int64_t{200}})
            for (const bool gate : {true, false}) {
                if (R >= 188 && !gate) continue;
                SCOPED_TRACE(std::string(in16 ? "bf16" : "fp32") + " R=" + std::to_string(R) +
                             (gate ? " gated" : " no gate"));
                const int64_t E = 200, ldl = R + 2 * 16 + 4;
                M1Data d = make_m1(3, E, rng);
                if (in16) d = round_m1_inputs(d);
                auto low = randn(3 * ldl, rng, 0.5f);
                if (in16) low = round_bf16(low);
                const auto W = randn(E * R, rng, 0.7f);
                std::vector<float> thr(E, -INFINITY);
                for (int64_t e = 0; e < E; e += 3) thr[e] = 0.3f;  // a filter on a third of the channels
                Dev<float> x(d.x), bias(d.bias), A(d.A), B(d.B), C(d.C), D(d.D), z(d.z), th(thr), w(W),
                    low32(low);
                Dev<__nv_bfloat16> x16(to_bf16_host(d.x)), B16(to_bf16_host(d.B)), C16(to_bf16_host(d.C)),
                    z16(to_bf16_host(d.z)), low16(to_bf16_host(low));
                constexpr int kPaths = 8;
                std::vector<std::vector<float> > ys[kPaths], hs[kPaths], dts[kPaths];
                // 0: m1_scan; m1_step with 1: rows staged wherever they fit (MAMBASCOPE_M1_STEP_STAGE=1), 2:
                // rows from global memory (=0; R = 12 and 48 held in registers), 3: the default (staged from
                // dt_rank 96 up); 4 and 5: 2 and 1 with everything loaded after the PDL wait
                // (MAMBASCOPE_M1_STEP_PRELOAD=0); the token's low-rank input, B and C staged in shared memory
                // where the rows are (the default), and 6: 1 with them read from global memory
                // (MAMBASCOPE_M1_STEP_ACT=0), 7: 2 with them staged (=1)
                const char* stage_env[kPaths] = {nullptr, "1", "0", nullptr, "0", "1", "1", "0"};
                const char* preload_env[kPaths] = {nullptr, nullptr, nullptr, nullptr,
                                                   "0",     "0",     nullptr, nullptr};
                const char* act_env[kPaths] = {nullptr, nullptr, nullptr, nullptr,
                                               nullptr, nullptr, "0",     "1"};
                const bool fits = R % 4 == 0 && R <= 188;
                const bool staged[kPaths] = {false, fits, false, fits && R >= 96, false, fits, fits, false};
                for (int path = 0; path < kPaths; ++path) {
                    Dev<float> h(d.h0), y(E), dto(E);
                    Dev<__nv_bfloat16> y16(E);
                    for (int64_t t = 0; t < 3; ++t) {
                        kg::Mamba1ScanArgs a;
                        a.T = 1, a.E = E, a.N = 16;
                        if (in16) {
                            a.x16 = x16.p + t * d.ldx, a.delta16 = low16.p + t * ldl,
                            a.B16 = B16.p + t * d.ldb;
                            a.C16 = C16.p + t * d.ldc, a.z16 = gate ? z16.p + t * d.ldz : nullptr,
                            a.y16 = y16.p;
                        } else {
                            a.x = x.p + t * d.ldx, a.delta = low32.p + t * ldl, a.B = B.p + t * d.ldb;
                            a.C = C.p + t * d.ldc, a.z = gate ? z.p + t * d.ldz : nullptr, a.y = y.p;
                        }
                        a.ldx = d.ldx, a.ldd = ldl, a.ldb = d.ldb, a.ldc = d.ldc, a.ldz = d.ldz, a.ldy = E;
                        a.dt_proj_w = w.p, a.dt_rank = R, a.delta_bias = bias.p, a.delta_softplus = true;
                        a.A = A.p, a.Dskip = D.p, a.thr = th.p, a.h = h.p, a.delta_out = dto.p, a.ldo = E;
                        a.fast_exp = true;
                        ScopedEnv step("MAMBASCOPE_M1_STEP", path == 0 ? "0" : nullptr);
                        ScopedEnv stage("MAMBASCOPE_M1_STEP_STAGE", stage_env[path]);
                        ScopedEnv preload("MAMBASCOPE_M1_STEP_PRELOAD", preload_env[path]);
                        ScopedEnv act("MAMBASCOPE_M1_STEP_ACT", act_env[path]);
                        EXPECT_EQ(kg::scan_mamba1_step_staged(a), staged[path]) << path;
                        kg::scan_mamba1(a, nullptr, 0, nullptr);
                        ys[path].push_back(in16 ? bf16_to_float(y16.download()) : y.download());
                        hs[path].push_back(h.download());
                        dts[path].push_back(dto.download());
                    }
                }
                for (int path = 1; path < kPaths; ++path)
                    for (int t = 0; t < 3; ++t) {
                        EXPECT_EQ(ys[path][size_t(t)], ys[0][size_t(t)]) << path << " " << t;
                        EXPECT_EQ(hs[path][size_t(t)], hs[0][size_t(t)]) << path << " " << t;
                        EXPECT_EQ(dts[path][size_t(t)], dts[0][size_t(t)]) << path << " " << t;
                    }
                // and against the CPU: the state after three steps from the same inputs, Δ' from dt = low·Wᵀ
                M1Data ref = d;
                for (int64_t t = 0; t < 3; ++t)
                    for (int64_t e = 0; e < E; ++e) {
                        double acc = 0.0;
                        for (int64_t r = 0; r < R; ++r) acc += double(low[t * ldl + r]) * W[e * R + r];
                        ref.dt_raw[t * d.ldd + e] = static_cast<float>(acc);
                    }
                const auto want = run_m1_cpu(ref, M1Case{3, E, 0, true, true, gate}, thr);
                EXPECT_LE(rel_err(hs[1][2], want.h), 1e-4);
            }
    ScopedEnv bad("MAMBASCOPE_M1_STEP_STAGE", "yes");
    kg::Mamba1ScanArgs a;
    a.T = 1, a.E = 64, a.N = 16, a.dt_rank = 128;
    expect_error_naming("MAMBASCOPE_M1_STEP_STAGE", [&] { (void)kg::scan_mamba1_step_staged(a); });
    ScopedEnv bad_preload("MAMBASCOPE_M1_STEP_PRELOAD", "2");
    ScopedEnv no_stage("MAMBASCOPE_M1_STEP_STAGE", nullptr);
    Dev<float> one(std::vector<float>(64 * 128, 0.0f));
    a.dt_proj_w = one.p, a.x = one.p, a.delta = one.p, a.B = one.p, a.C = one.p, a.A = one.p, a.y = one.p;
    a.ldx = a.ldb = a.ldc = a.ldy = 64, a.ldd = 128;
    expect_error_naming("MAMBASCOPE_M1_STEP_PRELOAD", [&] { kg::scan_mamba1(a, nullptr, 0, nullptr); });
    ScopedEnv good_preload("MAMBASCOPE_M1_STEP_PRELOAD", nullptr);
    ScopedEnv bad_act("MAMBASCOPE_M1_STEP_ACT", "on");
    expect_error_naming("MAMBASCOPE_M1_STEP_ACT", [&] { kg::scan_mamba1(a, nullptr, 0, nullptr); });
}

// The persistent decode step (decode_mamba1.cuh) against the step graph's kernels run one by one: the
// embedding row, per layer gemv_rmsnorm (in_proj), conv1d_silu, gemv (x_proj), scan_mamba1 (m1_step, dt_proj
// fused), gemv (out_proj + residual), then gemv_rmsnorm (head). Three steps of a 2-layer model with a filter
// on a third of layer 1's channels: the logits, the residual stream, the SSM states and the conv states
// equal bit for bit. The grid is 3 blocks (48 warps for 256 in_proj rows and 128 channels: warps loop), and
// on a GPU also the default grid (every SM). The emulation runs one phase per launch (no grid barrier); the
// GPU runs the whole step as one cooperative launch, so a missing barrier or fence shows up there.
// The ring kernel (a.ring) the same way, with each consumer warp's ring as large as it gets (3 slots) and
// with 2 and 1 (the producer waits for each slot to be read before it refills it). E = 2056 makes x_proj's
// and out_proj's rows 4,112 bytes: two slots each, the second holding 16 bytes (the ring kernel only, with 3
// slots per warp and with 1).
void persistent_step_equals_the_step_kernels(int64_t E, bool plain_too) {
    std::mt19937 rng(93);
    const int64_t D = 64, N = 16, R = 8, K = 4, NB = R + 2 * N, V = 72, vocab = 40, L = 2;
    const float eps = 1e-5f;
    auto bf = [&](int64_t n, float scale) { return to_bf16_host(randn(size_t(n), rng, scale)); };
    auto add1 = [](std::vector<float> v) {
        for (auto& x : v) x += 1.0f;
        return v;
    };
    struct HostLayer {
        std::vector<float> norm, conv_w, conv_b, dt_w, dt_b, A, Dskip, thr, h, cst;
        std::vector<__nv_bfloat16> in_proj, x_proj, out_proj;
    };
    std::vector<HostLayer> hl(L);
    for (int64_t l = 0; l < L; ++l) {
        HostLayer& h = hl[size_t(l)];
        h.norm = add1(randn(D, rng, 0.1f));
        h.in_proj = bf(2 * E * D, 1.0f / std::sqrt(float(D)));
        h.conv_w = randn(E * K, rng, 0.5f), h.conv_b = randn(E, rng, 0.1f);
        h.x_proj = bf(NB * E, 1.0f / std::sqrt(float(E)));
        h.dt_w = randn(E * R, rng, 0.3f), h.dt_b = uniform(E, rng, -4.0f, -1.0f);
        h.A = uniform(E * N, rng, -8.0f, -0.5f), h.Dskip = randn(E, rng);
        h.out_proj = bf(D * E, 1.0f / std::sqrt(float(E)));
        h.h = randn(E * N, rng, 0.3f), h.cst = randn((K - 1) * E, rng, 0.5f);
        h.thr.assign(size_t(E), -INFINITY);
        if (l == 1)
            for (int64_t e = 0; e < E; e += 3) h.thr[size_t(e)] = 0.05f;
    }
    const auto emb = randn(vocab * D, rng), norm_f = add1(randn(D, rng, 0.1f));
    const auto head = bf(V * D, 1.0f / std::sqrt(float(D)));
    const int32_t tokens[3] = {7, 31, 2};

    struct Run {
        std::vector<std::vector<float> > logits, x, h, cst;
    };
    // path 0: the step graph's kernels; path 1: the persistent kernel on `blocks` blocks; path 2: the ring
    // kernel with `slots` slots per consumer warp (0: as many as fit)
    auto run = [&](int path, int blocks, int slots) {
        struct DevLayer {
            Dev<float> norm, conv_w, conv_b, dt_w, dt_b, A, Dskip, thr, h, cst;
            Dev<__nv_bfloat16> in_proj, x_proj, out_proj;
            explicit DevLayer(const HostLayer& s)
                : norm(s.norm),
                  conv_w(s.conv_w),
                  conv_b(s.conv_b),
                  dt_w(s.dt_w),
                  dt_b(s.dt_b),
                  A(s.A),
                  Dskip(s.Dskip),
                  thr(s.thr),
                  h(s.h),
                  cst(s.cst),
                  in_proj(s.in_proj),
                  x_proj(s.x_proj),
                  out_proj(s.out_proj) {}
        };
        std::vector<std::unique_ptr<DevLayer> > dl;
        for (const HostLayer& s : hl) dl.push_back(std::make_unique<DevLayer>(s));
        Dev<float> demb(emb), dnorm_f(norm_f), x(D), logits(V);
        Dev<__nv_bfloat16> dhead(head), proj16(2 * E), conv16(E), dbc16(NB), y16(E);
        Dev<int32_t> id(1);
        Dev<unsigned> barrier(1);
        std::vector<kg::Mamba1DecodeLayer> layers;
        for (int64_t l = 0; l < L; ++l) {
            const DevLayer& d = *dl[size_t(l)];
            kg::Mamba1DecodeLayer m;
            m.norm = d.norm.p, m.in_proj = d.in_proj.p, m.conv_w = d.conv_w.p, m.conv_b = d.conv_b.p;
            m.x_proj = d.x_proj.p, m.dt_proj_w = d.dt_w.p, m.dt_proj_b = d.dt_b.p, m.A = d.A.p;
            m.Dskip = d.Dskip.p, m.out_proj = d.out_proj.p, m.thr = l == 1 ? d.thr.p : nullptr;
            m.h = d.h.p, m.conv_state = d.cst.p;
            layers.push_back(m);
        }
        Dev<kg::Mamba1DecodeLayer> dlayers(layers);
        kg::Mamba1DecodeArgs a;
        a.D = D, a.E = E, a.R = R, a.N = N, a.K = K, a.n_layer = L, a.V = V, a.eps = eps, a.fast_exp = true;
        a.layers = dlayers.p, a.id = id.p, a.embedding = demb.p, a.norm_f = dnorm_f.p, a.head = dhead.p;
        a.x = x.p, a.proj16 = proj16.p, a.conv16 = conv16.p, a.dbc16 = dbc16.p, a.y16 = y16.p;
        a.logits = logits.p, a.barrier = barrier.p;
        a.ring = path == 2, a.ring_slots = slots;
        EXPECT_EQ(kg::decode_mamba1_unsupported(a, layers), "");
        Run r;
        for (const int32_t tok : tokens) {
            id.upload({tok});
            if (path >= 1) {
                kg::decode_mamba1_step(a, nullptr, blocks);
            } else {
                CUDA_CHECK(cudaMemcpy(x.p, demb.p + tok * D, D * sizeof(float), cudaMemcpyDeviceToDevice));
                for (int64_t l = 0; l < L; ++l) {
                    const kg::Mamba1DecodeLayer& m = layers[size_t(l)];
                    kg::gemv_rmsnorm(2 * E, D, m.in_proj, D, x.p, m.norm, eps, proj16.p, nullptr);
                    kg::conv1d_silu(1, E, K, proj16.p, 2 * E, m.conv_w, m.conv_b, m.conv_state, nullptr, 0,
                                    nullptr, conv16.p, E);
                    kg::gemv(NB, E, m.x_proj, E, conv16.p, dbc16.p, nullptr);
                    kg::Mamba1ScanArgs s;
                    s.T = 1, s.E = E, s.N = N;
                    s.x16 = conv16.p, s.ldx = E, s.delta16 = dbc16.p, s.ldd = NB;
                    s.dt_proj_w = m.dt_proj_w, s.dt_rank = R, s.delta_bias = m.dt_proj_b,
                    s.delta_softplus = true;
                    s.A = m.A, s.B16 = dbc16.p + R, s.ldb = NB, s.C16 = dbc16.p + R + N, s.ldc = NB;
                    s.Dskip = m.Dskip, s.z16 = proj16.p + E, s.ldz = 2 * E, s.thr = m.thr, s.h = m.h;
                    s.y16 = y16.p, s.ldy = E, s.fast_exp = true;
                    kg::scan_mamba1(s, nullptr, 0, nullptr);
                    kg::gemv(D, E, m.out_proj, E, y16.p, x.p, 1.0f, nullptr);
                }
                kg::gemv_rmsnorm(V, D, dhead.p, D, x.p, dnorm_f.p, eps, logits.p, 0.0f, nullptr);
            }
            r.logits.push_back(logits.download());
            r.x.push_back(x.download());
            std::vector<float> hs, cs;
            for (const auto& d : dl) {
                const auto h = d->h.download(), c = d->cst.download();
                hs.insert(hs.end(), h.begin(), h.end());
                cs.insert(cs.end(), c.begin(), c.end());
            }
            r.h.push_back(hs);
            r.cst.push_back(cs);
        }
        return r;
    };
    const Run want = run(0, 0, 0);
    for (size_t t = 0; t < want.logits.size(); ++t) {  // a real computation: finite, not constant
        for (float v : want.logits[t]) ASSERT_TRUE(std::isfinite(v));
        EXPECT_NE(*std::min_element(want.logits[t].begin(), want.logits[t].end()),
                  *std::max_element(want.logits[t].begin(), want.logits[t].end()));
    }
    std::vector<int> grids = {3};
#ifndef MAMBASCOPE_CUDA_EMULATED
    grids.push_back(0);  // every SM (the emulation would start 512 threads per block, one block at a time)
#endif
    struct Variant {
        int path, slots;
    };
    for (const int blocks : grids)
        for (const Variant v : {Variant{1, 0}, Variant{2, 0}, Variant{2, 2}, Variant{2, 1}}) {
            if (v.path == 1 && !plain_too) continue;
            if (v.slots == 2 && !plain_too) continue;  // the emulation takes minutes for these rows
            SCOPED_TRACE("blocks=" + std::to_string(blocks) + (v.path == 2 ? " ring" : " plain") +
                         " slots=" + std::to_string(v.slots));
            const Run got = run(v.path, blocks, v.slots);
            for (size_t t = 0; t < want.logits.size(); ++t) {
                EXPECT_EQ(got.logits[t], want.logits[t]) << "step " << t;
                EXPECT_EQ(got.x[t], want.x[t]) << "step " << t;
                EXPECT_EQ(got.h[t], want.h[t]) << "step " << t;
                EXPECT_EQ(got.cst[t], want.cst[t]) << "step " << t;
            }
        }
}

TEST(CudaDecodeMamba1, PersistentStepEqualsTheStepKernelsBitForBit) {
    REQUIRE_GPU();
    persistent_step_equals_the_step_kernels(128, true);
}

TEST(CudaDecodeMamba1, RingStepWithRowsOfTwoSlotsEqualsTheStepKernelsBitForBit) {
    REQUIRE_GPU();
    persistent_step_equals_the_step_kernels(2056, false);
}

// Shapes the persistent step does not take are named (the decoder then keeps the step graph).
TEST(CudaDecodeMamba1, UnsupportedShapesAreNamed) {
    kg::Mamba1DecodeArgs a;
    a.D = 64, a.E = 128, a.R = 8, a.N = 16, a.K = 4, a.n_layer = 1, a.V = 8;
    std::vector<kg::Mamba1DecodeLayer> layers(1);
    a.N = 8;
    EXPECT_NE(kg::decode_mamba1_unsupported(a, layers).find("d_state"), std::string::npos);
    a.N = 16, a.K = 3;
    EXPECT_NE(kg::decode_mamba1_unsupported(a, layers).find("d_conv"), std::string::npos);
    a.K = 4, a.D = 68;
    EXPECT_NE(kg::decode_mamba1_unsupported(a, layers).find("multiple of 8"), std::string::npos);
    a.D = 8192;
    EXPECT_NE(kg::decode_mamba1_unsupported(a, layers).find("4096"), std::string::npos);
    a.D = 64, a.E = 16392, a.ring = true;  // the ring kernel's shared copy of the input vector
    EXPECT_NE(kg::decode_mamba1_unsupported(a, layers).find("16384"), std::string::npos);
    a.ring = false;  // the plain kernel has no such bound
    EXPECT_EQ(kg::decode_mamba1_unsupported(a, layers).find("16384"), std::string::npos);
    a.E = 128;  // shapes fine, but no buffers
    EXPECT_NE(kg::decode_mamba1_unsupported(a, layers).find("layers"), std::string::npos);
}

// One-row projections (decode steps): the float64 product, for float32 and bf16 weights, the 16-byte path
// (K, ldw multiples of 8) and the scalar one (odd K, padded rows), β = 0 and 1, float32 and bf16 outputs.
TEST(CudaGemv, MatchesFloat64ProductOnVectorAndScalarPaths) {
    REQUIRE_GPU();
    std::mt19937 rng(77);
    struct Case {
        int64_t N, K, ldw;
    };
    for (const Case c : {Case{37, 96, 96}, Case{203, 77, 80}, Case{9, 768, 776}, Case{1, 5, 5}}) {
        SCOPED_TRACE("N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) +
                     " ldw=" + std::to_string(c.ldw));
        const auto W = round_bf16(randn(c.N * c.ldw, rng)), a = round_bf16(randn(c.K, rng)),
                   y0 = randn(c.N, rng);
        std::vector<double> prod(c.N);
        for (int64_t n = 0; n < c.N; ++n) {
            double acc = 0.0;
            for (int64_t k = 0; k < c.K; ++k) acc += double(W[n * c.ldw + k]) * a[k];
            prod[n] = acc;
        }
        std::vector<double> plus_y(c.N);
        for (int64_t n = 0; n < c.N; ++n) plus_y[n] = prod[n] + y0[n];
        Dev<float> dW(W), da(a), y(c.N), yb(y0);
        Dev<__nv_bfloat16> dW16(to_bf16_host(W)), da16(to_bf16_host(a)), y16(c.N);
        kg::gemv(c.N, c.K, dW.p, c.ldw, da.p, y.p, 0.0f,
                 nullptr);  // float32; y poisoned: β = 0 never reads it
        EXPECT_LE(rel_err(y.download(), prod), kTol);
        kg::gemv(c.N, c.K, dW.p, c.ldw, da.p, yb.p, 1.0f, nullptr);  // y += W·a
        EXPECT_LE(rel_err(yb.download(), plus_y), kTol);
        y.poison();
        kg::gemv(c.N, c.K, dW16.p, c.ldw, da16.p, y.p, 0.0f, nullptr);  // bf16 in, float32 out: exact inputs
        EXPECT_LE(rel_err(y.download(), prod), kTol);
        kg::gemv(c.N, c.K, dW16.p, c.ldw, da16.p, y16.p, nullptr);  // bf16 out: one rounding
        EXPECT_LE(rel_err(bf16_to_float(y16.download()), prod), kTolBf16Round);
    }
}

// The decode steps' fused RMSNorm + projection equals rmsnorm_bf16 followed by gemv bit for bit (same sum
// order, same roundings), on the vector path (K % 8 == 0) and the scalar one, with float (β = 0 and 1) and
// bf16 outputs; K = 768 and 2048 take RMSNorm's warp-per-row order, K = 77 its block order. (An order that
// differs moves the norm by an ulp or so, which the bf16 rounding of the normalised row almost always hides:
// summing in the other order passed this test too. The shared order is by construction, sumsq4.) Both with
// the norm's loads in a loop and batched (MAMBASCOPE_GEMV_NORM: 1, 2 and 3 float4s per thread at K = 768,
// 2048 and 3072; K = 4096 keeps the loop).
TEST(CudaGemv, RmsnormFusedEqualsRmsnormBf16ThenGemvBitForBit) {
    REQUIRE_GPU();
    ScopedEnv one_warp("MAMBASCOPE_GEMV_SPLIT", "1");  // gemv_rmsnorm's order is one warp per row's
    std::mt19937 rng(78);
    struct Case {
        int64_t N, K, ldw;
        const char* norm;  // MAMBASCOPE_GEMV_NORM
    };
    for (const Case c :
         {Case{37, 768, 768, "loop"}, Case{203, 77, 80, "loop"}, Case{9, 2048, 2056, "loop"},
          Case{37, 768, 768, "batched"}, Case{203, 77, 80, "batched"}, Case{9, 2048, 2056, "batched"},
          Case{5, 3072, 3072, "batched"}, Case{5, 4096, 4096, "batched"}}) {
        SCOPED_TRACE("N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) + " " + c.norm);
        ScopedEnv norm("MAMBASCOPE_GEMV_NORM", c.norm);
        const auto W = round_bf16(randn(c.N * c.ldw, rng)), x = randn(c.K, rng, 3.0f),
                   wn = uniform(c.K, rng, 0.5f, 1.5f), y0 = randn(c.N, rng);
        Dev<__nv_bfloat16> dW(to_bf16_host(W)), u16(c.K), ya16(c.N), yb16(c.N);
        Dev<float> dx(x), dwn(wn), ya(c.N), yb(c.N), yc(y0), yd(y0);
        const float eps = 1e-5f;
        kg::rmsnorm_bf16(1, c.K, dx.p, c.K, dwn.p, eps, u16.p, c.K, nullptr);
        kg::gemv(c.N, c.K, dW.p, c.ldw, u16.p, ya.p, 0.0f, nullptr);
        kg::gemv_rmsnorm(c.N, c.K, dW.p, c.ldw, dx.p, dwn.p, eps, yb.p, 0.0f, nullptr);
        EXPECT_EQ(ya.download(), yb.download());
        kg::gemv(c.N, c.K, dW.p, c.ldw, u16.p, yc.p, 1.0f, nullptr);
        kg::gemv_rmsnorm(c.N, c.K, dW.p, c.ldw, dx.p, dwn.p, eps, yd.p, 1.0f, nullptr);
        EXPECT_EQ(yc.download(), yd.download());
        kg::gemv(c.N, c.K, dW.p, c.ldw, u16.p, ya16.p, nullptr);
        kg::gemv_rmsnorm(c.N, c.K, dW.p, c.ldw, dx.p, dwn.p, eps, yb16.p, nullptr);
        EXPECT_EQ(bf16_to_float(ya16.download()), bf16_to_float(yb16.download()));
        // and it is a real projection of the normalised input (not, say, of x itself)
        double ss = 0.0;
        for (float v : x) ss += double(v) * v;
        const double inv = 1.0 / std::sqrt(ss / c.K + eps);
        std::vector<double> want(c.N);
        for (int64_t n = 0; n < c.N; ++n)
            for (int64_t k = 0; k < c.K; ++k) want[n] += double(W[n * c.ldw + k]) * x[k] * inv * wn[k];
        EXPECT_LE(rel_err(yb.download(), want), 1e-2);
    }
    try {
        kg::gemv_rmsnorm(1, kg::kGemvNormMaxK + 1, static_cast<const __nv_bfloat16*>(nullptr), 0, nullptr,
                         nullptr, 1e-5f, static_cast<float*>(nullptr), 0.0f, nullptr);
        FAIL() << "K above kGemvNormMaxK was accepted";
    } catch (const mambascope::Error& e) {
        EXPECT_NE(std::string(e.what()).find("gemv_rmsnorm"), std::string::npos);
    }
}

// One (N, K) product through the gemv variants the gemv tests compare across settings: float32 weights; bf16
// weights and input with β = 0, with β = 1 onto y0, and into a bf16 output; and, when x and its norm weights
// are given, gemv_rmsnorm. The float32 outputs written from scratch are poisoned first, so a row left
// unwritten shows.
struct GemvOuts {
    std::vector<float> f32, b16_in, plus, b16_out, norm;
};
struct GemvOperands {
    int64_t N, K, ldw;
    const float *W, *a;
    const __nv_bfloat16 *W16, *a16;
    const std::vector<float>& y0;
    const float* x = nullptr;   // gemv_rmsnorm's input (K), or null: no norm run
    const float* wn = nullptr;  // its norm weights (K)
};
GemvOuts run_gemv_variants(const GemvOperands& c) {
    Dev<float> y(c.N), yp(c.y0), yn(c.N);
    Dev<__nv_bfloat16> y16(c.N);
    GemvOuts o;
    y.poison();
    kg::gemv(c.N, c.K, c.W, c.ldw, c.a, y.p, 0.0f, nullptr);
    o.f32 = y.download();
    y.poison();
    kg::gemv(c.N, c.K, c.W16, c.ldw, c.a16, y.p, 0.0f, nullptr);
    o.b16_in = y.download();
    kg::gemv(c.N, c.K, c.W16, c.ldw, c.a16, yp.p, 1.0f, nullptr);
    o.plus = yp.download();
    kg::gemv(c.N, c.K, c.W16, c.ldw, c.a16, y16.p, nullptr);
    o.b16_out = bf16_to_float(y16.download());
    if (c.x) {
        yn.poison();
        kg::gemv_rmsnorm(c.N, c.K, c.W16, c.ldw, c.x, c.wn, 1e-5f, yn.p, 0.0f, nullptr);
        o.norm = yn.download();
    }
    return o;
}

// Every output of b equals a's bit for bit.
void expect_same_outs(const GemvOuts& a, const GemvOuts& b) {
    EXPECT_EQ(b.f32, a.f32);
    EXPECT_EQ(b.b16_in, a.b16_in);
    EXPECT_EQ(b.plus, a.plus);
    EXPECT_EQ(b.b16_out, a.b16_out);
    EXPECT_EQ(b.norm, a.norm);
}

// Random operands of one (N, K, ldw) product for run_gemv_variants: bf16-rounded weights and input (so that
// the float32 and bf16 paths read the same values), a norm input and weights, y0; on the host and the device.
struct GemvProblem {
    int64_t N, K, ldw;
    std::vector<float> W, x, wn, y0, a;
    Dev<float> dW, da, dx, dwn;
    Dev<__nv_bfloat16> dW16, da16;
    GemvProblem(int64_t N_, int64_t K_, int64_t ldw_, std::mt19937& rng)
        : N(N_),
          K(K_),
          ldw(ldw_),
          W(round_bf16(randn(N * ldw, rng))),
          x(randn(K, rng, 2.0f)),
          wn(uniform(K, rng, 0.5f, 1.5f)),
          y0(randn(N, rng)),
          a(round_bf16(randn(K, rng))),
          dW(W),
          da(a),
          dx(x),
          dwn(wn),
          dW16(to_bf16_host(W)),
          da16(to_bf16_host(a)) {}
    GemvOuts run() const {
        return run_gemv_variants({N, K, ldw, dW.p, da.p, dW16.p, da16.p, y0, dx.p, dwn.p});
    }
    // the float64 product W·a
    std::vector<double> product() const {
        std::vector<double> want(N);
        for (int64_t n = 0; n < N; ++n)
            for (int64_t k = 0; k < K; ++k) want[n] += double(W[n * ldw + k]) * a[k];
        return want;
    }
};

// The one-row projections' grid is capped (gemv.cu, "Rows per grid"): warps loop over rows, two at a time on
// the vector path. Every row equals the uncapped grid's (MAMBASCOPE_GEMV_GRID=0, one row per warp)
// bit for bit, for gemv (float32 and bf16 weights, β = 0 and 1, bf16 output) and gemv_rmsnorm, with a grid
// of 3 blocks (24 warps: 4 to 9 rows each, odd and even counts) and the default; a bad value is an error.
// One row per warp of at least 2,048 elements runs 8 load steps at a time (kGemvDeepUnroll) unless
// MAMBASCOPE_GEMV_DEEP=0: the reference is the uncapped grid with 4, and the uncapped and default grids with
// 8 equal it bit for bit, on rows of 2,048 (one group of 8 steps) and 4,104 (16 full steps and a tail step
// that only some lanes take).
TEST(CudaGemv, RowsPerGridCapEqualsOneRowPerWarpBitForBit) {
    REQUIRE_GPU();
    ScopedEnv one_warp("MAMBASCOPE_GEMV_SPLIT",
                       "1");  // the grids of one warp per row (split rows: their own test)
    std::mt19937 rng(79);
    struct Case {
        int64_t N, K, ldw;
    };
    for (const Case c : {Case{203, 256, 264}, Case{91, 77, 80}, Case{24, 2048, 2048}, Case{40, 4104, 4112}}) {
        SCOPED_TRACE("N=" + std::to_string(c.N) + " K=" + std::to_string(c.K));
        const GemvProblem g(c.N, c.K, c.ldw, rng);
        auto run = [&](const char* grid, const char* deep) {
            ScopedEnv env("MAMBASCOPE_GEMV_GRID", grid);
            ScopedEnv env_deep("MAMBASCOPE_GEMV_DEEP", deep);
            return g.run();
        };
        const GemvOuts ref = run("0", "0");
        const char* unset = nullptr;
        for (const auto& [grid, deep] :
             {std::pair{"0", unset}, std::pair{"3", unset}, std::pair{unset, unset}, std::pair{unset, "0"}}) {
            SCOPED_TRACE(std::string("grid ") + (grid ? grid : "default") + ", deep " +
                         (deep ? deep : "default"));
            expect_same_outs(ref, run(grid, deep));
        }
        // and the rows are the product (not, say, a row computed twice and another skipped)
        EXPECT_LE(rel_err(ref.b16_in, g.product()), kTol);
    }
    Dev<float> W1(std::vector<float>(8, 1.0f)), a1(std::vector<float>(8, 1.0f)), y1(1);
    {
        ScopedEnv bad("MAMBASCOPE_GEMV_GRID", "eight");
        expect_error_naming("MAMBASCOPE_GEMV_GRID",
                            [&] { kg::gemv(1, 8, W1.p, 8, a1.p, y1.p, 0.0f, nullptr); });
    }
    ScopedEnv bad("MAMBASCOPE_GEMV_DEEP", "yes");
    expect_error_naming("MAMBASCOPE_GEMV_DEEP=yes",
                        [&] { kg::gemv(1, 8, W1.p, 8, a1.p, y1.p, 0.0f, nullptr); });
}

// The trigger after the PDL wait (MAMBASCOPE_GEMV_TRIGGER = wait, norm, plain; gemv.cu, docs/cuda.md "The
// early launch") lets the kernel behind a projection launch early; it must not change
// what the projection computes. Every gemv variant (one warp per row, two rows per warp, the deep rows, split
// rows, gemv_rmsnorm with the norm batched and in a loop) gives the same outputs bit for bit with and without
// it, and they are the product; a bad value is an error naming the variable. (On a GPU a graph of such
// kernels with the trigger is compared step by step in CudaForwardDevice.GemvTriggerKeepsTheSteps.)
TEST(CudaGemv, TriggerAfterTheWaitKeepsEveryVariantsOutputs) {
    REQUIRE_GPU();
    std::mt19937 rng(88);
    struct Case {
        int64_t N, K, ldw;
        const char* split;
    };
    const char* unset = nullptr;
    for (const Case c : {Case{203, 256, 264, "1"}, Case{24, 2048, 2048, "1"}, Case{80, 1536, 1536, unset},
                         Case{9, 768, 768, unset}}) {
        for (const char* norm : {"batched", "loop"}) {
            SCOPED_TRACE("N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) + " split " +
                         (c.split ? c.split : "default") + " norm " + norm);
            ScopedEnv split("MAMBASCOPE_GEMV_SPLIT", c.split);
            ScopedEnv norm_env("MAMBASCOPE_GEMV_NORM", norm);
            const GemvProblem g(c.N, c.K, c.ldw, rng);
            auto run = [&](const char* trigger) {
                ScopedEnv env("MAMBASCOPE_GEMV_TRIGGER", trigger);
                return g.run();
            };
            const GemvOuts ref = run(unset);
            for (const char* t : {"wait", "norm", "plain", "0"}) {
                SCOPED_TRACE(t);
                expect_same_outs(ref, run(t));
            }
            EXPECT_LE(rel_err(ref.b16_in, g.product()), kTol);
        }
    }
    Dev<float> W1(std::vector<float>(8, 1.0f)), a1(std::vector<float>(8, 1.0f)), y1(1);
    ScopedEnv bad("MAMBASCOPE_GEMV_TRIGGER", "1");
    expect_error_naming("MAMBASCOPE_GEMV_TRIGGER=1",
                        [&] { kg::gemv(1, 8, W1.p, 8, a1.p, y1.p, 0.0f, nullptr); });
}

// Split rows (MAMBASCOPE_GEMV_SPLIT; gemv.cuh, docs/cuda.md "Split rows"): up to 2, 4 or 8 warps share a row
// of a short projection, each adding a segment of whole 16-byte load steps, the partial sums added in order.
// The decision must halve the setting until the segments are whole steps (≥ 2 of them) and take no split for
// unaligned rows, many rows or a bad value; the outputs must be the float64 product and one warp per row's to
// float32 rounding (another order) for float32 and bf16 weights, β = 0 and 1, float32 and bf16 outputs:
// mamba-1.4b's x_proj (160 × 4096: 16 steps), mamba-130m's (80 × 1536: 6 steps, odd halves), padded rows
// (37 × 3072 in rows of 3080: segments of 3 steps, a partial batch of loads), 24 × 2048 (8 halved to 4).
TEST(CudaGemv, SplitRowsAgreeWithOneWarpPerRow) {
    REQUIRE_GPU();
    std::mt19937 rng(86);
    struct Case {
        int64_t N, K, ldw;
    };
    // the split the rule gives: the setting halved until K is whole segments of ≥ 2 steps of 32·8 elements
    const auto expected = [](int setting, int64_t K) {
        int s = setting;
        while (s > 1 && (K % (s * 256) != 0 || K / (s * 256) < 2)) s /= 2;
        return s;
    };
#ifdef MAMBASCOPE_CUDA_EMULATED  // the emulation's time: smaller rows there
    const std::vector<Case> cases = {{37, 3072, 3080}, {24, 2048, 2048}};
#else
    const std::vector<Case> cases = {{160, 4096, 4096}, {80, 1536, 1536}, {37, 3072, 3080}, {24, 2048, 2048}};
#endif
    for (const Case c : cases) {
        const auto W = round_bf16(randn(c.N * c.ldw, rng)), a = round_bf16(randn(c.K, rng)),
                   y0 = randn(c.N, rng);
        std::vector<double> prod(c.N), plus(c.N);
        for (int64_t n = 0; n < c.N; ++n) {
            for (int64_t k = 0; k < c.K; ++k) prod[n] += double(W[n * c.ldw + k]) * a[k];
            plus[n] = prod[n] + y0[n];
        }
        Dev<float> dW(W), da(a);
        Dev<__nv_bfloat16> dW16(to_bf16_host(W)), da16(to_bf16_host(a));
        auto run = [&](const char* split) {
            ScopedEnv env("MAMBASCOPE_GEMV_SPLIT", split);
            return run_gemv_variants({c.N, c.K, c.ldw, dW.p, da.p, dW16.p, da16.p, y0});
        };
        const GemvOuts one = run("1");
        for (const char* split : {"2", "4", "8"}) {
            SCOPED_TRACE("N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) + " split " + split);
            {
                ScopedEnv env("MAMBASCOPE_GEMV_SPLIT", split);
                EXPECT_EQ(kg::gemv_split_rows(c.N, c.K, true), expected(std::atoi(split), c.K));
                EXPECT_EQ(kg::gemv_split_rows(c.N, c.K, false), 1);  // unaligned rows: one warp each
            }
            const GemvOuts o = run(split);
            EXPECT_LE(rel_err(o.f32, prod), kTol);
            EXPECT_LE(rel_err(o.b16_in, prod), kTol);
            EXPECT_LE(rel_err(o.plus, plus), kTol);
            EXPECT_LE(rel_err(o.b16_out, prod), kTolBf16Round);
            EXPECT_LE(rel_err(o.f32, one.f32), 1e-6);
            EXPECT_LE(rel_err(o.b16_in, one.b16_in), 1e-6);
            EXPECT_LE(rel_err(o.plus, one.plus), 1e-6);
        }
    }
    {
        ScopedEnv env("MAMBASCOPE_GEMV_SPLIT", "4");
        EXPECT_EQ(kg::gemv_split_rows(1 << 20, 4096, true), 1);  // rows enough for the GPU
        EXPECT_EQ(kg::gemv_split_rows(160, 4104, true), 1);      // no whole segments
        EXPECT_EQ(kg::gemv_split_rows(160, 512, true), 1);       // segments of one step
    }
    EXPECT_EQ(kg::gemv_split_rows(160, 4096, true), 2);  // the default: two warps per row
    {
        ScopedEnv env("MAMBASCOPE_GEMV_SPLIT_ROWS", "16");  // 2048 rows split below 16 per SM, not below 8
        EXPECT_EQ(kg::gemv_split_rows(2048, 4096, true), 2);
    }
    EXPECT_EQ(kg::gemv_split_rows(2048, 4096, true), 1);
    Dev<float> W1(std::vector<float>(8, 1.0f)), a1(std::vector<float>(8, 1.0f)), y1(1);
    {
        ScopedEnv bad("MAMBASCOPE_GEMV_SPLIT_ROWS", "12");
        expect_error_naming("MAMBASCOPE_GEMV_SPLIT_ROWS=12",
                            [&] { kg::gemv(1, 8, W1.p, 8, a1.p, y1.p, 0.0f, nullptr); });
    }
    ScopedEnv bad("MAMBASCOPE_GEMV_SPLIT", "3");
    expect_error_naming("MAMBASCOPE_GEMV_SPLIT=3",
                        [&] { kg::gemv(1, 8, W1.p, 8, a1.p, y1.p, 0.0f, nullptr); });
}

// L2 ahead (gemv.cuh, docs/cuda.md "L2 ahead"): a bf16 gemv that also starts another buffer on its way into
// L2 gives the same outputs bit for bit, on the deep path (24 rows of 2048) and with warps that have no row
// (203 rows: the last block's spare warps now wait and prefetch instead of returning), with a region several
// rounds of the grid's threads long, a misaligned one (skipped) and an empty one.
TEST(CudaGemv, L2AheadLeavesTheProductUnchanged) {
    REQUIRE_GPU();
    ScopedEnv one_warp("MAMBASCOPE_GEMV_SPLIT", "1");  // a launch with L2 ahead takes one warp per row
    std::mt19937 rng(83);
    const int64_t region = int64_t{16} << 20;  // 16 MB: ≥ 2 rounds of 8 KB pieces for these grids
    Dev<unsigned char> other(static_cast<size_t>(region));
    struct Case {
        int64_t N, K;
    };
    for (const Case c : {Case{203, 256}, Case{24, 2048}}) {
        SCOPED_TRACE("N=" + std::to_string(c.N) + " K=" + std::to_string(c.K));
        const auto W = round_bf16(randn(c.N * c.K, rng)), a = round_bf16(randn(c.K, rng)),
                   y0 = randn(c.N, rng);
        Dev<__nv_bfloat16> dW(to_bf16_host(W)), da(to_bf16_host(a));
        auto run = [&](kg::L2Ahead ahead) {
            Dev<float> yp(y0);
            Dev<__nv_bfloat16> y16(c.N);
            kg::gemv(c.N, c.K, dW.p, c.K, da.p, yp.p, 1.0f, nullptr, ahead);
            kg::gemv(c.N, c.K, dW.p, c.K, da.p, y16.p, nullptr, ahead);
            std::vector<float> out = yp.download();
            for (float v : bf16_to_float(y16.download())) out.push_back(v);
            return out;
        };
        const std::vector<float> ref = run({});
        EXPECT_EQ(run({other.p, region}), ref);
        EXPECT_EQ(run({other.p + 1, 4096}), ref);  // misaligned: no prefetch
        EXPECT_EQ(run({other.p, 0}), ref);
        EXPECT_EQ(run({other.p, 100}), ref);  // rounded down to 96 bytes
        std::vector<double> want(c.N);
        for (int64_t n = 0; n < c.N; ++n) {
            want[n] = y0[n];
            for (int64_t k = 0; k < c.K; ++k) want[n] += double(W[n * c.K + k]) * a[k];
        }
        EXPECT_LE(rel_err(std::vector<float>(ref.begin(), ref.begin() + c.N), want), kTol);
    }
}

// The L2 prefetch budget (gemv.cuh): a matrix that fits kGemvPrefetchL2Share of the L2 is prefetched
// whole; a larger one r rows per warp, the largest r whose rows fit the share (mamba-130m's LM head on one
// wave of 528 blocks: 4 rows per warp; mamba-1.4b's 206 MB head: 1); a share smaller than one row per warp:
// none. Bad sizes and a bad MAMBASCOPE_GEMV_PREFETCH value are errors.
TEST(CudaGemv, PrefetchBudgetKeepsEachLaunchWithinItsShareOfL2) {
    const int64_t l2 = 50 << 20, warps = 528 * 8;
    const double share = kg::kGemvPrefetchL2Share * double(l2);
    EXPECT_EQ(kg::gemv_prefetch_rows_per_warp(3072, 1536, warps, l2), 3072);  // mamba-130m in_proj, 4.7 MB
    struct Case {
        int64_t N, row_bytes;
    };
    for (const Case c : {Case{50280, 1536}, Case{50280, 4096}, Case{8192, 4096}, Case{1 << 20, 64}}) {
        const int64_t r = kg::gemv_prefetch_rows_per_warp(c.N, c.row_bytes, warps, l2);
        SCOPED_TRACE("N=" + std::to_string(c.N) + " row_bytes=" + std::to_string(c.row_bytes));
        EXPECT_GT(double(c.N) * double(c.row_bytes), share);  // the case is over budget
        EXPECT_LE(double(r * warps * c.row_bytes), share);
        EXPECT_GT(double((r + 1) * warps * c.row_bytes), share);  // and r is the largest that fits
    }
    EXPECT_EQ(kg::gemv_prefetch_rows_per_warp(50280, 1536, warps, l2), 4);
    EXPECT_EQ(kg::gemv_prefetch_rows_per_warp(50280, 4096, warps, l2), 1);
    EXPECT_EQ(kg::gemv_prefetch_rows_per_warp(50280, 1536, warps, 1 << 20), 0);
    EXPECT_THROW(kg::gemv_prefetch_rows_per_warp(10, 0, warps, l2), mambascope::Error);
    EXPECT_THROW(kg::gemv_prefetch_rows_per_warp(10, 16, 0, l2), mambascope::Error);
    REQUIRE_GPU();
    Dev<float> W1(std::vector<float>(8, 1.0f)), a1(std::vector<float>(8, 1.0f)), y1(1);
    for (const char* ok : {"l2", "all", "0", static_cast<const char*>(nullptr)}) {
        ScopedEnv env("MAMBASCOPE_GEMV_PREFETCH", ok);
        y1.poison();
        kg::gemv(1, 8, W1.p, 8, a1.p, y1.p, 0.0f, nullptr);
        EXPECT_EQ(y1.download()[0], 8.0f) << (ok ? ok : "unset");
    }
    ScopedEnv bad("MAMBASCOPE_GEMV_PREFETCH", "1");
    expect_error_naming("MAMBASCOPE_GEMV_PREFETCH=1",
                        [&] { kg::gemv(1, 8, W1.p, 8, a1.p, y1.p, 0.0f, nullptr); });
}

// The L2 branch's ranges (l2_prefetch.cuh, docs/cuda.md "The L2 branch"): in the order asked, each trimmed to
// whole 16-byte units inside it (a misaligned start moves up to the next boundary), the running total capped
// at the budget (the range crossing it cut, later ones dropped), null, empty and too-short ranges skipped, at
// most kL2RangesMax of them.
TEST(CudaL2Prefetch, BudgetTakesRangesInOrderTrimmedToWholeSixteenByteUnits) {
    const auto at = [](uintptr_t a) { return reinterpret_cast<const void*>(a); };
    const uintptr_t A = 0x100000, B = 0x200000, C = 0x300000;
    kg::L2Ranges r = kg::l2_budget_ranges({{at(A), 100}, {at(B), 1000}}, int64_t{1} << 20);
    ASSERT_EQ(r.n, 2);
    EXPECT_EQ(r.r[0].p, at(A));
    EXPECT_EQ(r.r[0].bytes, 96);
    EXPECT_EQ(r.r[1].p, at(B));
    EXPECT_EQ(r.r[1].bytes, 992);
    EXPECT_EQ(r.total(), 1088);
    // a budget of 500 bytes: 496 usable, 96 + 400
    r = kg::l2_budget_ranges({{at(A), 100}, {at(B), 1000}, {at(C), 4096}}, 500);
    ASSERT_EQ(r.n, 2);
    EXPECT_EQ(r.r[1].bytes, 400);
    EXPECT_EQ(r.total(), 496);
    // misaligned starts: A+1 with 40 bytes keeps [A+16, A+32); A+1 with 10 bytes has no whole unit
    r = kg::l2_budget_ranges({{at(A + 1), 10}, {at(A + 1), 40}, {nullptr, 4096}, {at(B), 0}, {at(C), -16}},
                             4096);
    ASSERT_EQ(r.n, 1);
    EXPECT_EQ(r.r[0].p, at(A + 16));
    EXPECT_EQ(r.r[0].bytes, 16);
    EXPECT_EQ(kg::l2_budget_ranges({{at(A), 4096}}, 0).n, 0);
    EXPECT_EQ(kg::l2_budget_ranges({{at(A), 4096}}, 15).n, 0);
    EXPECT_EQ(kg::l2_budget_ranges({{at(A), 4096}}, -64).n, 0);
    // more ranges than a launch takes
    r = kg::l2_budget_ranges({{at(A), 32},
                              {at(A + 64), 32},
                              {at(A + 128), 32},
                              {at(A + 192), 32},
                              {at(A + 256), 32},
                              {at(A + 320), 32},
                              {at(A + 384), 32},
                              {at(A + 448), 32}},
                             int64_t{1} << 20);
    EXPECT_EQ(r.n, kg::kL2RangesMax);
    EXPECT_EQ(r.r[kg::kL2RangesMax - 1].p, at(A + 64 * (kg::kL2RangesMax - 1)));
}

// The L2 branch's kernel is a hint: over ranges that end inside a piece, start past a buffer's first bytes
// and cross many rounds of pieces, it faults on nothing (a bad bulk prefetch is a launch error on sm_90) and
// writes nothing.
TEST(CudaL2Prefetch, LaunchFaultsOnNothingAndWritesNothing) {
    REQUIRE_GPU();
    const int64_t bytes = (int64_t{6} << 20) + 3 * 1000;
    std::vector<unsigned char> pattern(static_cast<size_t>(bytes));
    for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<unsigned char>(i * 131 + 7);
    Dev<unsigned char> buf(pattern);
    const kg::L2Ranges r = kg::l2_budget_ranges(
        {{buf.p + 17, bytes - 17}, {buf.p, 8192 + 48}, {buf.p + (int64_t{1} << 20), 100}}, int64_t{1} << 30);
    ASSERT_EQ(r.n, 3);
    kg::prefetch_l2_ranges(r, nullptr);
    kg::prefetch_l2_ranges(kg::l2_budget_ranges({{buf.p, 4096}}, 0), nullptr);  // nothing to launch
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaGetLastError());
    EXPECT_TRUE(buf.download() == pattern);
}

// A bf16 Mamba-1 decode step's in_proj with the conv folded in (gemv_rmsnorm_conv, docs/cuda.md "The conv
// inside in_proj") equals gemv_rmsnorm followed by the conv's one-token kernel bit for bit: the projection
// (x and z rows), the conv's bf16 output and the carried state, over two steps (the second reads the state
// the first wrote); on the vector path with RMSNorm's warp order (D = 768), the scalar one (D = 77), with and
// without a conv bias, one row per warp and (a grid of 3 blocks) warps looping over rows, where only a warp's
// first row has its conv taps loaded before the wait. The x half alone (x_only, "z on a branch") gives the
// same x rows, conv output and state. And the conv output is the CPU's conv of the stored rows (not, say, of
// the unrounded sums).
TEST(CudaGemv, ConvFoldedIntoInProjEqualsGemvRmsnormThenConvBitForBit) {
    REQUIRE_GPU();
    std::mt19937 rng(80);
    struct Case {
        int64_t E, D, ldw;
        bool bias;
    };
    constexpr int64_t K = kg::kGemvConvK;
    for (const Case c : {Case{40, 768, 768, true}, Case{101, 77, 80, false}, Case{203, 256, 264, true}}) {
        SCOPED_TRACE("E=" + std::to_string(c.E) + " D=" + std::to_string(c.D));
        const int64_t P = 2 * c.E;
        const auto W = round_bf16(randn(P * c.ldw, rng)), wn = uniform(c.D, rng, 0.5f, 1.5f);
        const auto x1 = randn(c.D, rng, 2.0f), x2 = randn(c.D, rng, 2.0f);
        const auto cw = randn(c.E * K, rng, 0.5f), cb = randn(c.E, rng), state0 = randn((K - 1) * c.E, rng);
        Dev<__nv_bfloat16> dW(to_bf16_host(W));
        Dev<float> dx1(x1), dx2(x2), dwn(wn), dcw(cw), dcb(cb);
        const float* bias = c.bias ? dcb.p : nullptr;
        struct Out {
            std::vector<float> y, conv, state;
        };
        // two steps; fused: gemv_rmsnorm_conv (x_only: its x half alone, E rows), else gemv_rmsnorm then
        // conv1d_silu (T = 1, bf16 in, bf16 out)
        auto run = [&](bool fused, const char* grid, bool x_only = false) {
            ScopedEnv env("MAMBASCOPE_GEMV_GRID", grid);
            Dev<float> st(state0);
            Dev<__nv_bfloat16> y16(x_only ? c.E : P), conv16(c.E);
            Out o;
            for (const float* x : {dx1.p, dx2.p}) {
                if (fused) {
                    kg::gemv_rmsnorm_conv(c.E, c.D, dW.p, c.ldw, x, dwn.p, 1e-5f, y16.p, dcw.p, bias, st.p,
                                          conv16.p, nullptr, x_only);
                } else {
                    kg::gemv_rmsnorm(P, c.D, dW.p, c.ldw, x, dwn.p, 1e-5f, y16.p, nullptr);
                    kg::conv1d_silu(1, c.E, K, y16.p, P, dcw.p, bias, st.p, nullptr, 0, nullptr, conv16.p,
                                    c.E);
                }
                const auto y = bf16_to_float(y16.download()), cv = bf16_to_float(conv16.download());
                o.y.insert(o.y.end(), y.begin(), y.end());
                o.conv.insert(o.conv.end(), cv.begin(), cv.end());
            }
            o.state = st.download();
            return o;
        };
        const Out ref = run(false, nullptr);
        for (const char* grid : {static_cast<const char*>(nullptr), "3"}) {
            SCOPED_TRACE(grid ? grid : "default grid");
            const Out o = run(true, grid);
            EXPECT_EQ(o.y, ref.y);
            EXPECT_EQ(o.conv, ref.conv);
            EXPECT_EQ(o.state, ref.state);
            // the x half alone: each step's first E rows, the same conv and state
            const Out h = run(true, grid, true);
            std::vector<float> ref_x;
            for (int step = 0; step < 2; ++step)
                ref_x.insert(ref_x.end(), ref.y.begin() + step * P, ref.y.begin() + step * P + c.E);
            EXPECT_EQ(h.y, ref_x);
            EXPECT_EQ(h.conv, ref.conv);
            EXPECT_EQ(h.state, ref.state);
        }
        // the CPU's conv of the stored x rows, carried over both steps
        std::vector<float> st = state0, want(2 * c.E), in(c.E);
        for (int step = 0; step < 2; ++step) {
            for (int64_t d = 0; d < c.E; ++d) in[size_t(d)] = ref.y[size_t(step * P + d)];
            kc::conv1d_silu(1, c.E, K, in.data(), c.E, cw.data(), c.bias ? cb.data() : nullptr, st.data(),
                            want.data() + step * c.E, c.E);
        }
        EXPECT_LE(rel_err(ref.conv, want), kTolBf16Round);
        EXPECT_EQ(ref.state, st);
    }
}

// x_proj folded into in_proj with the conv (gemv_rmsnorm_conv_xproj, docs/cuda.md "x_proj inside in_proj"):
// the projection, the conv's output and its state are gemv_rmsnorm_conv's bit for bit, and dbc16 is the CPU's
// Σ_d conv16[d]·x_proj[j, d] (over the stored bf16 conv output, in double) to within its bf16 rounding, over
// two steps (every ticket is left at 0 for the next call): R = 80, 96 and 160 (mamba-130m, -370m, -1.4b), E
// not a multiple of 8, the default grid (a row per warp; E = 300: 38 blocks with channels, so three groups
// and the second level of the sum), a grid of 3 blocks (warps looping over their rows: x_projT's rows after
// the first read after the wait, and every block holding channels; one group) and no cap. Also within one
// bf16 step of the unfused gemv of x_proj. R not a multiple of 8, or over 256, is an error.
TEST(CudaGemv, XprojFoldedIntoInProjIsTheConvOutputTimesXproj) {
    REQUIRE_GPU();
    std::mt19937 rng(81);
    struct Case {
        int64_t E, D, R;
    };
    constexpr int64_t K = kg::kGemvConvK;
    for (const Case c : {Case{48, 96, 80}, Case{101, 64, 96}, Case{64, 77, 160}, Case{300, 64, 160}}) {
        SCOPED_TRACE("E=" + std::to_string(c.E) + " R=" + std::to_string(c.R));
        const int64_t P = 2 * c.E;
        const auto W = round_bf16(randn(P * c.D, rng)), wn = uniform(c.D, rng, 0.5f, 1.5f);
        const auto x1 = randn(c.D, rng, 2.0f), x2 = randn(c.D, rng, 2.0f);
        const auto cw = randn(c.E * K, rng, 0.5f), cb = randn(c.E, rng), state0 = randn((K - 1) * c.E, rng);
        const auto xp = round_bf16(randn(c.R * c.E, rng, 0.2f));  // x_proj (R × E), as stored
        std::vector<float> xpT(size_t(c.E * c.R));
        for (int64_t j = 0; j < c.R; ++j)
            for (int64_t d = 0; d < c.E; ++d) xpT[size_t(d * c.R + j)] = xp[size_t(j * c.E + d)];
        Dev<__nv_bfloat16> dW(to_bf16_host(W)), dxp(to_bf16_host(xp)), dxpT(to_bf16_host(xpT));
        Dev<float> dx1(x1), dx2(x2), dwn(wn), dcw(cw), dcb(cb);
        struct Out {
            std::vector<float> y, conv, state, dbc, gemv_dbc;
        };
        auto run = [&](bool fused, const char* grid) {
            ScopedEnv env("MAMBASCOPE_GEMV_GRID", grid);
            Dev<float> st(state0), parts(size_t(kg::gemv_xproj_parts(c.E) * c.R));
            Dev<unsigned> count(std::vector<unsigned>(size_t(kg::gemv_xproj_counters(c.E)), 0u));
            Dev<__nv_bfloat16> y16(P), conv16(c.E), dbc16(c.R);
            Out o;
            for (const float* x : {dx1.p, dx2.p}) {
                if (fused)
                    kg::gemv_rmsnorm_conv_xproj(c.E, c.D, dW.p, c.D, x, dwn.p, 1e-5f, y16.p, dcw.p, dcb.p,
                                                st.p, conv16.p, dxpT.p, c.R, parts.p, count.p, dbc16.p,
                                                nullptr);
                else
                    kg::gemv_rmsnorm_conv(c.E, c.D, dW.p, c.D, x, dwn.p, 1e-5f, y16.p, dcw.p, dcb.p, st.p,
                                          conv16.p, nullptr);
                const auto y = bf16_to_float(y16.download()), cv = bf16_to_float(conv16.download());
                o.y.insert(o.y.end(), y.begin(), y.end());
                o.conv.insert(o.conv.end(), cv.begin(), cv.end());
                if (fused) {
                    const auto b = bf16_to_float(dbc16.download());
                    o.dbc.insert(o.dbc.end(), b.begin(), b.end());
                    for (unsigned k : count.download())
                        EXPECT_EQ(k, 0u) << "the tickets are left for the next call";
                }
                kg::gemv(c.R, c.E, dxp.p, c.E, conv16.p, dbc16.p, nullptr);  // the unfused x_proj
                const auto g = bf16_to_float(dbc16.download());
                o.gemv_dbc.insert(o.gemv_dbc.end(), g.begin(), g.end());
            }
            o.state = st.download();
            return o;
        };
        const Out ref = run(false, nullptr);
        for (const char* grid : {static_cast<const char*>(nullptr), "3", "0"}) {
            SCOPED_TRACE(grid ? grid : "default grid");
            const Out o = run(true, grid);
            EXPECT_EQ(o.y, ref.y);
            EXPECT_EQ(o.conv, ref.conv);
            EXPECT_EQ(o.state, ref.state);
            // the CPU's x_proj of each step's stored conv output
            for (int step = 0; step < 2; ++step)
                for (int64_t j = 0; j < c.R; ++j) {
                    double want = 0.0, mag = 0.0;
                    for (int64_t d = 0; d < c.E; ++d) {
                        const double t = double(o.conv[size_t(step * c.E + d)]) * xp[size_t(j * c.E + d)];
                        want += t, mag += std::abs(t);
                    }
                    const double got = o.dbc[size_t(step * c.R + j)];
                    EXPECT_LE(std::abs(got - want), std::abs(want) / 256 + 1e-5 * mag)
                        << "step " << step << " j " << j;
                    // and the unfused gemv's bf16 output, within one bf16 step of it
                    const double g = ref.gemv_dbc[size_t(step * c.R + j)];
                    EXPECT_LE(std::abs(got - g), std::abs(g) / 128 + 1e-5 * mag)
                        << "step " << step << " j " << j;
                }
        }
    }
    // shapes it does not take
    Dev<__nv_bfloat16> W1(16 * 8), y1(16), c1(8), xT(8 * 264), o1(264);
    Dev<float> x1(8), wn1(8), cw1(8 * K), st1(3 * 8), parts1(264);
    Dev<unsigned> count1(std::vector<unsigned>{0u});
    for (const int64_t R : {12, 264}) {
        try {
            kg::gemv_rmsnorm_conv_xproj(8, 8, W1.p, 8, x1.p, wn1.p, 1e-5f, y1.p, cw1.p, nullptr, st1.p, c1.p,
                                        xT.p, R, parts1.p, count1.p, o1.p, nullptr);
            ADD_FAILURE() << "R = " << R << " was accepted";
        } catch (const mambascope::Error& e) {
            EXPECT_NE(std::string(e.what()).find("multiple of 8"), std::string::npos) << e.what();
        }
    }
}

// Shapes: element path (odd strides), the vector paths of the bf16 chain (Cn and strides multiples of 8, T
// over one tile, K = 4 and 2; bf16 output only) in each of their variants (MAMBASCOPE_CONV_BF16: channels ×
// tokens per thread; 2x32-seq one row load in flight, the others batches of 8 and a shorter rest per tile),
// and one tile (the state written by the conv kernel).
TEST(CudaConv1d, Bf16InputEqualsFloat32ConvOfTheRoundedInput) {
    REQUIRE_GPU();
    std::mt19937 rng(74);
    struct Case {
        int64_t T, Cn, K, padi, pado;
    };
    for (const char* variant : {"1", "2x32", "2x32-seq", "4x16"})
        for (const Case& c : {Case{77, 260, 4, 5, 0}, Case{77, 264, 4, 8, 0}, Case{130, 4352, 4, 24, 8},
                              Case{45, 64, 2, 0, 16}, Case{20, 264, 4, 8, 0}, Case{50, 262, 4, 2, 2}}) {
            setenv("MAMBASCOPE_CONV_BF16", variant, 1);
            SCOPED_TRACE(std::string("variant ") + variant + " T=" + std::to_string(c.T) +
                         " Cn=" + std::to_string(c.Cn) + " K=" + std::to_string(c.K));
            const int64_t T = c.T, Cn = c.Cn, K = c.K, ldi = Cn + c.padi, ldo = Cn + c.pado;
            const auto in = round_bf16(randn(T * ldi, rng)), w = randn(Cn * K, rng, 0.5f),
                       bias = randn(Cn, rng);
            const auto st = randn((K - 1) * Cn, rng);
            Dev<float> din(in), dw(w), db(bias), s32(st), s16(st), o32(T * ldo);
            Dev<__nv_bfloat16> din16(to_bf16_host(in)), o16(T * ldo), o16b(T * ldo);
            kg::conv1d_silu(T, Cn, K, din.p, ldi, dw.p, db.p, s32.p, o32.p, ldo, nullptr, o16.p, ldo);
            kg::conv1d_silu(T, Cn, K, din16.p, ldi, dw.p, db.p, s16.p, nullptr, 0, nullptr, o16b.p, ldo);
            const auto got = cols_of(bf16_to_float(o16b.download()), T, Cn, ldo);
            EXPECT_EQ(got, cols_of(bf16_to_float(o16.download()), T, Cn, ldo));
            EXPECT_EQ(s16.download(),
                      s32.download());  // carried state: the last K-1 (exactly converted) inputs
            // and against the CPU reference within one bf16 rounding
            std::vector<float> cpu(T * Cn), cst = st;
            kc::conv1d_silu(T, Cn, K, in.data(), ldi, w.data(), bias.data(), cst.data(), cpu.data(), Cn);
            EXPECT_LE(rel_err(got, cpu), kTolBf16Round);
        }
    // a variant that is not built is an error (env_switch.h), not the default under another name; the same
    // call runs with the switch unset
    {
        Dev<__nv_bfloat16> in16(to_bf16_host(randn(8 * 64, rng))), o16(8 * 64);
        Dev<float> dw(randn(64 * 4, rng)), s16(randn(3 * 64, rng));
        const auto conv = [&] {
            kg::conv1d_silu(8, 64, 4, in16.p, 64, dw.p, nullptr, s16.p, nullptr, 0, nullptr, o16.p, 64);
        };
        {
            ScopedEnv unset("MAMBASCOPE_CONV_BF16", nullptr);
            EXPECT_NO_THROW(conv());
        }
        ScopedEnv bad("MAMBASCOPE_CONV_BF16", "2x16");
        expect_error_naming("MAMBASCOPE_CONV_BF16=2x16", conv);
    }
    unsetenv("MAMBASCOPE_CONV_BF16");
}

// ---- the bf16 Mamba-2 chain: SSD scan with bf16 x, Δ, B, C and y; gated norm with bf16 y and z ----------

// d with every input the bf16 SSD scan reads rounded to bf16 and its rows re-laid at new strides (row width
// plus padx / padd / padb / padc / pady), so that the vector (16-byte) and element paths both run.
M2Data relayout_rounded_m2(const M2Data& d, int64_t padx, int64_t padd, int64_t padb, int64_t padc,
                           int64_t pady) {
    M2Data o = d;
    o.ldx = d.H * d.P + padx, o.ldd = d.H + padd, o.ldb = d.G * d.N + padb, o.ldc = d.G * d.N + padc;
    o.ldy = d.H * d.P + pady;
    auto move = [&](const std::vector<float>& v, int64_t ld, int64_t cols, int64_t new_ld) {
        std::vector<float> out(d.T * new_ld, 0.0f);
        for (int64_t t = 0; t < d.T; ++t)
            for (int64_t k = 0; k < cols; ++k) out[t * new_ld + k] = v[t * ld + k];
        return round_bf16(out);
    };
    o.x = move(d.x, d.ldx, d.H * d.P, o.ldx);
    o.dt_raw = move(d.dt_raw, d.ldd, d.H, o.ldd);
    o.B = move(d.B, d.ldb, d.G * d.N, o.ldb);
    o.C = move(d.C, d.ldc, d.G * d.N, o.ldc);
    return o;
}

// The bf16-input SSD scan of d (inputs converted on the host: exact when d is already rounded); y in float32,
// or in bf16 when y_bf16.
M2Result run_ssd_gpu_bf16(const M2Data& d, const M2Case& c, const std::vector<float>& thr, bool y_bf16) {
    Dev<__nv_bfloat16> x(to_bf16_host(d.x)), raw(to_bf16_host(d.dt_raw)), B(to_bf16_host(d.B)),
        C(to_bf16_host(d.C)), y16(d.T * d.ldy);
    Dev<float> bias(d.bias), A(d.A), D(d.D), th(thr.empty() ? std::vector<float>(1) : thr), s(d.s0),
        y(d.T * d.ldy), dout(d.T * d.ldd);
    kg::Mamba2ScanArgs a;
    a.T = d.T, a.H = d.H, a.P = d.P, a.G = d.G, a.N = d.N;
    a.x16 = x.p, a.ldx = d.ldx, a.delta16 = raw.p, a.ldd = d.ldd;
    a.delta_bias = c.softplus ? bias.p : nullptr, a.delta_softplus = c.softplus;
    a.A = A.p, a.B16 = B.p, a.ldb = d.ldb, a.C16 = C.p, a.ldc = d.ldc, a.Dskip = D.p;
    a.thr = c.filter ? th.p : nullptr, a.s = s.p, a.ldy = d.ldy, a.delta_out = dout.p, a.ldo = d.ldd;
    if (y_bf16)
        a.y16 = y16.p;
    else
        a.y = y.p;
    kg::scan_mamba2_ssd(a, nullptr, 0, nullptr);
    M2Result r;
    r.y = cols_of(y_bf16 ? bf16_to_float(y16.download()) : y.download(), d.T, d.H * d.P, d.ldy);
    r.s = s.download();
    r.delta_used = cols_of(dout.download(), d.T, d.H, d.ldd);
    return r;
}

// bf16 inputs change nothing but where the values come from: on bf16-rounded data the scan is bit for bit
// the float32-input scan (same staging, the same roundings of already-rounded values), and y16 is its y
// rounded to bf16. Strides: every row 16-byte capable (the forward's layout), make_m2's mixed strides, and
// none (odd strides: the element paths). The softplus is fused in every case (a bf16 Δ given directly would
// be rounded after the softplus).
TEST(CudaScanMamba2SsdBf16, Bf16InputsEqualTheFloat32InputScanOfTheRoundedData) {
    REQUIRE_GPU();
    std::mt19937 rng(81);
    struct Layout {
        int64_t padx, padd, padb, padc, pady;
    };
    for (const Layout& l : {Layout{8, 8, 8, 8, 8}, Layout{4, 3, 5, 8, 4}, Layout{1, 1, 3, 5, 3}})
        for (const M2Case& c : std::vector<M2Case>{
                 {1, 2, 16, 1, 16, 0, true, false},
                 {65, 4, 64, 2, 64, 0, true, true},
                 {300, 2, 64, 1, 128, 0, true, true},
                 {200, 2, 32, 2, 256, 0, true, false},
             }) {
            const M2Data d = relayout_rounded_m2(make_m2(c, rng), l.padx, l.padd, l.padb, l.padc, l.pady);
            const std::vector<float> thr = safe_thresholds(m2_delta(d, c.softplus), d.T, d.H, d.ldd);
            SCOPED_TRACE("T=" + std::to_string(c.T) + " P=" + std::to_string(c.P) + " N=" +
                         std::to_string(c.N) + " G=" + std::to_string(c.G) + " ldx=" + std::to_string(d.ldx) +
                         " ldb=" + std::to_string(d.ldb) + " ldy=" + std::to_string(d.ldy));
            const M2Result f32 = run_ssd_gpu(d, c, thr);
            const M2Result in16 = run_ssd_gpu_bf16(d, c, thr, false);
            const M2Result out16 = run_ssd_gpu_bf16(d, c, thr, true);
            EXPECT_EQ(in16.y, f32.y);
            EXPECT_EQ(in16.s, f32.s);
            EXPECT_EQ(in16.delta_used, f32.delta_used);
            EXPECT_EQ(out16.y, round_bf16(f32.y));
            EXPECT_EQ(out16.s, f32.s);
        }
}

TEST(CudaScanMamba2SsdBf16, MixedInputsAndTheRecurrentScanAreRefused) {
    // Runs without a GPU: the argument checks come before any CUDA call.
    float f = 0.0f;
    __nv_bfloat16 b{};
    kg::Mamba2ScanArgs a;
    a.T = 4, a.H = 1, a.P = 16, a.G = 1, a.N = 16, a.ldx = a.ldy = 16, a.ldd = 1, a.ldb = a.ldc = 16;
    a.A = &f, a.y = &f;
    a.x16 = &b, a.delta16 = &b, a.B16 = &b, a.C = &f;  // C in float32, the others bf16
    EXPECT_THROW(kg::scan_mamba2_ssd(a, nullptr, 0, nullptr), mambascope::Error);
    a.C = nullptr, a.C16 = &b, a.y16 = &b;  // y given twice
    EXPECT_THROW(kg::scan_mamba2_ssd(a, nullptr, 0, nullptr), mambascope::Error);
    kg::Mamba2ScanArgs r;  // the recurrent scan takes float32 only
    r.T = 4, r.H = 1, r.P = 16, r.G = 1, r.N = 16, r.ldx = r.ldy = 16, r.ldd = 1, r.ldb = r.ldc = 16;
    r.x = r.delta = r.A = r.B = r.C = &f, r.y = &f, r.y16 = &b;
    try {
        kg::scan_mamba2(r, nullptr, 0, nullptr);
        FAIL() << "bf16 y accepted by the recurrent scan";
    } catch (const mambascope::Error& e) {
        EXPECT_NE(std::string(e.what()).find("scan_mamba2_ssd"), std::string::npos) << e.what();
    }
}

// The gated norm of bf16 y and z: the CPU's float32 norm of the rounded inputs, rounded to bf16 (the sum of
// squares is added in another order, so a value may land on the neighbouring bf16: one rounding's bound). The
// shapes take the register kernel with 1, 2 and 4 loads per thread, and the two-read kernel (a group over
// 8192 columns; strides that are not multiples of 8; a group that is not).
TEST(CudaGatedNormBf16, BadShapesAreErrorsBeforeAnyLaunch) {
    // Runs without a GPU: the argument checks come before any CUDA call.
    __nv_bfloat16 b{};
    float w = 1.0f;
    EXPECT_THROW(kg::gated_rmsnorm_bf16(2, 10, 3, &b, 10, &b, 10, &w, 1e-5f, &b, 10, nullptr),
                 mambascope::Error);  // 3 groups do not divide 10 columns
    EXPECT_THROW(kg::gated_rmsnorm_bf16(2, 16, 1, &b, 8, &b, 16, &w, 1e-5f, &b, 16, nullptr),
                 mambascope::Error);  // y's stride is shorter than a row
    EXPECT_NO_THROW(kg::gated_rmsnorm_bf16(0, 16, 1, &b, 16, &b, 16, &w, 1e-5f, &b, 16, nullptr));  // nothing
}

TEST(CudaGatedNormBf16, Bf16InputsMatchTheFloat32NormOfTheRoundedInputs) {
    REQUIRE_GPU();
    std::mt19937 rng(82);
    struct Case {
        int64_t T, E, G, pad;
    };
    for (const Case& c : {Case{5, 1536, 1, 8}, Case{3, 4096, 1, 0}, Case{4, 1536, 3, 8}, Case{2, 8192, 1, 8},
                          Case{2, 10240, 1, 8}, Case{6, 96, 4, 3}, Case{3, 60, 5, 4}, Case{7, 256, 2, 8},
                          Case{3, 2048, 2, 8}, Case{9, 2048, 1, 0}}) {
        const int64_t ldy = c.E + c.pad, ldz = 2 * c.E + c.pad;  // z as a slice of a wider row
        const auto y = round_bf16(randn(c.T * ldy, rng)), z = round_bf16(randn(c.T * ldz, rng, 2.0f));
        const auto w = randn(c.E, rng);
        std::vector<float> want = y;
        kc::gated_rmsnorm(c.T, c.E, c.G, want.data(), ldy, z.data(), ldz, w.data(), 1e-5f);
        Dev<__nv_bfloat16> dy(to_bf16_host(y)), dz(to_bf16_host(z)), d16(c.T * ldy);
        Dev<float> dw(w);
        kg::gated_rmsnorm_bf16(c.T, c.E, c.G, dy.p, ldy, dz.p, ldz, dw.p, 1e-5f, d16.p, ldy, nullptr);
        EXPECT_LE(
            rel_err(cols_of(bf16_to_float(d16.download()), c.T, c.E, ldy), cols_of(want, c.T, c.E, ldy)),
            kTolBf16Round)
            << "E=" << c.E << " G=" << c.G << " pad=" << c.pad;
    }
}

// ---- GEMM -------------------------------------------------------------------------------------------------

// to_bf16 is the host-side rounding (round to nearest even), for a flat run longer than one block's share
// (how weights are converted: one row of n floats) and for strided rows; the padding of dst stays untouched.
TEST(CudaGemm, ToBf16FlatAndStridedRowsRoundLikeTheHost) {
    REQUIRE_GPU();
    std::mt19937 rng(31);
    {
        const int64_t n = 3 * 4096 * 256 + 77;  // past kConvertMaxBlocks × threads: the grid-stride loop runs
        const std::vector<float> src = randn(n, rng, 3.0f);
        Dev<float> s(src);
        Dev<__nv_bfloat16> d(n);
        kg::to_bf16(1, n, s.p, n, d.p, n, nullptr);
        EXPECT_EQ(bf16_to_float(d.download()), round_bf16(src));
    }
    {
        const int64_t rows = 37, cols = 1000, lds = 1003, ldd = 1001;
        const std::vector<float> src = randn(rows * lds, rng, 3.0f);
        Dev<float> s(src);
        Dev<__nv_bfloat16> d(rows * ldd);  // poisoned: 0xffff (a NaN) where nothing is written
        kg::to_bf16(rows, cols, s.p, lds, d.p, ldd, nullptr);
        const auto got = d.download();
        std::vector<__nv_bfloat16> logical(rows * cols);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) logical[r * cols + c] = got[r * ldd + c];
        EXPECT_EQ(bf16_to_float(logical), round_bf16(cols_of(src, rows, cols, lds)));
        for (int64_t r = 0; r < rows; ++r)
            EXPECT_TRUE(std::isnan(__bfloat162float(got[r * ldd + cols]))) << "padding of row " << r;
    }
}

TEST(CudaGemm, RowMajorAWtMatchesCpuInFp32AndTf32) {
    REQUIRE_GPU();
    std::mt19937 rng(51);
    const int64_t M = 37, N = 50, K = 70, lda = K + 2, ldw = K + 1, ldc = N + 3;
    const auto A = randn(M * lda, rng), W = randn(N * ldw, rng), C0 = randn(M * ldc, rng);
    std::vector<double> want(M * N), want_acc(M * N);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
            double acc = 0.0;
            for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(A[m * lda + k]) * W[n * ldw + k];
            want[m * N + n] = acc;
            want_acc[m * N + n] = acc + 0.5 * C0[m * ldc + n];
        }
    kg::CublasHandle handle;
    Dev<float> dA(A), dW(W), dC(M * ldc);
    kg::gemm_rowmajor(handle.get(), nullptr, M, N, K, dA.p, lda, dW.p, ldw, dC.p, ldc, false);
    EXPECT_LE(rel_err(cols_of(dC.download(), M, N, ldc), want), kTol);
    dC.poison();
    kg::gemm_rowmajor(handle.get(), nullptr, M, N, K, dA.p, lda, dW.p, ldw, dC.p, ldc, true);
    EXPECT_LE(rel_err(cols_of(dC.download(), M, N, ldc), want), kTolTf32);
    dC.upload(C0);
    kg::gemm_rowmajor(handle.get(), nullptr, M, N, K, dA.p, lda, dW.p, ldw, dC.p, ldc, false, 0.5f);
    EXPECT_LE(rel_err(cols_of(dC.download(), M, N, ldc), want_acc), kTol);
}

// The bf16-output GEMM (in_proj / x_proj / dt_proj of the bf16 chain): the float64 product of the bf16
// inputs, rounded once (≤ 2^-8 of the output's scale, plus float32 accumulation).
TEST(CudaGemm, Bf16OutputIsTheRoundedProductOfTheBf16Inputs) {
    REQUIRE_GPU();
    std::mt19937 rng(75);
    const int64_t M = 37, N = 203, K = 96, lda = K + 8, ldc = N + 3;
    const auto A = round_bf16(randn(M * lda, rng)), W = round_bf16(randn(N * K, rng));
    Dev<__nv_bfloat16> dA(to_bf16_host(A)), dW(to_bf16_host(W)), dC(M * ldc);
    kg::CublasHandle handle;
    kg::gemm_rowmajor_bf16_out(handle.get(), nullptr, M, N, K, dA.p, lda, dW.p, K, dC.p, ldc);
    std::vector<double> want(M * N);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
            double acc = 0.0;
            for (int64_t k = 0; k < K; ++k) acc += double(A[m * lda + k]) * W[n * K + k];
            want[m * N + n] = acc;
        }
    EXPECT_LE(rel_err(cols_of(bf16_to_float(dC.download()), M, N, ldc), want), kTolBf16Round);
}

}  // namespace

// The greedy argmax on the device (argmax.cuh) gives std::max_element's index on rows of the decode sizes and
// on the edge cases: the maximum at the first and last index, ties (the first wins, also across threads and
// warps), -inf everywhere but one, NaNs skipped, a NaN at x[0] (std::max_element then says 0), all NaN, n =
// 1, and n shorter than the buffer (the padded vocabulary rows are not candidates); each row also starts 1
// and 3 floats past a 16-byte boundary, behind larger values that are not part of it.
TEST(CudaArgmax, EqualsStdMaxElement) {
    REQUIRE_GPU();
    std::mt19937 rng(5);
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    std::vector<std::vector<float> > rows;
    for (const int64_t n : {1, 7, 1024, 1025, 50277}) rows.push_back(randn(size_t(n), rng));
    auto base = randn(5000, rng);
    auto with = [&](std::initializer_list<std::pair<int64_t, float> > set) {
        auto r = base;
        for (const auto& [i, v] : set) r[size_t(i)] = v;
        return r;
    };
    rows.push_back(with({{0, 50.0f}}));                                   // the first index
    rows.push_back(with({{4999, 50.0f}}));                                // the last
    rows.push_back(with({{3000, 50.0f}, {1000, 50.0f}, {2047, 50.0f}}));  // ties: 1000
    rows.push_back(with({{33, 50.0f}, {1, 50.0f}}));                      // ties in one warp's slice: 1
    rows.push_back(with({{0, 50.0f}, {17, 50.0f}}));                      // a tie with x[0]: 0
    rows.push_back(with({{0, nan}, {10, 50.0f}}));                        // NaN first: 0
    rows.push_back(with({{10, nan}, {11, inf}, {12, nan}}));              // NaNs skipped, +inf wins
    rows.push_back(std::vector<float>(3000, -inf));                       // all -inf: 0
    rows.back()[2999] = -1e30f;
    rows.push_back(std::vector<float>(300, nan));  // all NaN: 0
    rows.push_back(randn(5003, rng));              // the maximum in the scalar tail after the float4s
    rows.back()[5002] = 50.0f;
    Dev<int32_t> out(1);
    for (size_t r = 0; r < rows.size(); ++r) {
        const auto& x = rows[r];
        for (const int64_t n : {int64_t(x.size()), std::max<int64_t>(1, int64_t(x.size()) - 3)}) {
            const int32_t want = int32_t(std::max_element(x.begin(), x.begin() + n) - x.begin());
            // the row at 0 to 3 floats past a 16-byte boundary: the scalar head, the float4s, the tail; and
            // the loop before them (MAMBASCOPE_ARGMAX=scalar) at a boundary
            for (const char* variant : {"", "scalar"})
                for (const int64_t off : {0, 1, 3}) {
                    if (*variant && off != 0) continue;
                    std::vector<float> padded(size_t(off), 99.0f);  // larger than any entry: must not be read
                    padded.insert(padded.end(), x.begin(), x.end());
                    Dev<float> dx(padded);
                    {
                        ScopedEnv env("MAMBASCOPE_ARGMAX", *variant ? variant : nullptr);
                        kg::argmax(n, dx.p + off, out.p, nullptr);
                    }
                    EXPECT_EQ(out.download()[0], want)
                        << "row " << r << " n " << n << " offset " << off << " variant " << variant;
                }
        }
    }
    EXPECT_THROW(
        kg::argmax(0, out.p == nullptr ? nullptr : reinterpret_cast<const float*>(out.p), out.p, nullptr),
        mambascope::Error);
    Dev<float> one(std::vector<float>{1.0f});
    ScopedEnv bad("MAMBASCOPE_ARGMAX", "scalars");
    expect_error_naming("MAMBASCOPE_ARGMAX=scalars", [&] { kg::argmax(1, one.p, out.p, nullptr); });
}

// A greedy run's embedding (greedy_run.cuh): it decodes the key the previous step's head left (the largest
// argmax_key of a logits row: std::max_element's index) or the host's first id, copies that embedding row
// (D > the block's threads), records the id at pos, advances pos and resets the key; an id outside [0, V) or
// pos at the cap marks the run bad, records -1 where it can and copies nothing.
TEST(CudaGreedyRun, EmbedDecodesTheKeyRecordsTheIdAndResetsTheKey) {
    REQUIRE_GPU();
    std::mt19937 rng(8);
    const int64_t V = 37, D = 300, cap = 6;
    const auto table = randn(size_t(V * D), rng);
    Dev<float> dt(table), out{size_t(D)};
    Dev<int32_t> ids(std::vector<int32_t>(size_t(cap), 777));
    Dev<kg::GreedyRun> run(1);
    auto row = [&](int64_t id) {
        return std::vector<float>(table.begin() + id * D, table.begin() + (id + 1) * D);
    };
    auto logits = randn(size_t(V), rng);
    logits[5] = logits[29] = 9.0f;  // a tie: the first index, 5
    uint64_t head_key = 0;
    for (int64_t i = 0; i < V; ++i) head_key = std::max(head_key, kg::argmax_key(logits[size_t(i)], i));
    // the host's first id, then a head's key
    run.upload({kg::GreedyRun{kg::argmax_key(0.0f, 21), 0, 0}});
    kg::embed_greedy_run(D, V, dt.p, run.p, ids.p, cap, out.p, nullptr);
    EXPECT_EQ(out.download(), row(21));
    auto r = run.download()[0];
    EXPECT_EQ(r.pos, 1);
    EXPECT_EQ(r.key, 0u);
    EXPECT_EQ(r.bad, 0);
    r.key = head_key;
    run.upload({r});
    kg::embed_greedy_run(D, V, dt.p, run.p, ids.p, cap, out.p, nullptr);
    EXPECT_EQ(out.download(), row(5));
    EXPECT_EQ(ids.download(), (std::vector<int32_t>{21, 5, 777, 777, 777, 777}));
    r = run.download()[0];
    EXPECT_EQ(r.pos, 2);
    EXPECT_EQ(r.key, 0u);
    EXPECT_EQ(r.bad, 0);
    // an id out of range (V): bad, -1 recorded, the row left alone
    out.poison();
    run.upload({kg::GreedyRun{kg::argmax_key(1.0f, V), 2, 0}});
    kg::embed_greedy_run(D, V, dt.p, run.p, ids.p, cap, out.p, nullptr);
    r = run.download()[0];
    EXPECT_EQ(r.bad, 1);
    EXPECT_EQ(r.pos, 3);
    EXPECT_EQ(r.key, 0u);
    EXPECT_EQ(ids.download()[2], -1);
    const auto untouched = out.download();
    EXPECT_TRUE(std::all_of(untouched.begin(), untouched.end(), [](float v) { return std::isnan(v); }));
    // pos at the cap: bad, nothing recorded past the buffer
    run.upload({kg::GreedyRun{kg::argmax_key(0.0f, 3), int32_t(cap), 0}});
    kg::embed_greedy_run(D, V, dt.p, run.p, ids.p, cap, out.p, nullptr);
    r = run.download()[0];
    EXPECT_EQ(r.bad, 1);
    EXPECT_EQ(r.pos, cap + 1);
    EXPECT_EQ(ids.download(), (std::vector<int32_t>{21, 5, -1, 777, 777, 777}));
    EXPECT_THROW(kg::embed_greedy_run(D, V, dt.p, run.p, ids.p, 0, out.p, nullptr), mambascope::Error);
}

// The folded argmax's 64-bit key (argmax.cuh): the largest argmax_key(x[i], i) over i < n stands for
// std::max_element's index, on rows with ties (first index), ±0 ties (equal for std::max_element, so the
// first), NaNs (skipped, except at x[0]: index 0), ±inf, subnormals and negatives only; host code, no GPU.
TEST(ArgmaxKey, ItsMaximumIsStdMaxElementsIndex) {
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    const float sub = std::numeric_limits<float>::denorm_min();
    std::vector<std::vector<float> > rows = {
        {1.0f},
        {nan},
        {-0.0f, 0.0f, -1.0f},          // -0 first, +0 later: equal, so 0
        {-1.0f, 0.0f, -0.0f},          // +0 first: 1
        {-1.0f, -0.0f, 0.0f},          // -0 first among the zeros: 1
        {-3.0f, -2.0f, -2.0f, -5.0f},  // negatives, a tie: 1
        {nan, 5.0f, inf},              // NaN at x[0]: 0
        {1.0f, nan, 2.0f, nan},        // NaNs skipped: 2
        {-inf, -inf, -inf},            // 0
        {-inf, nan, -inf},             // 0
        {sub, 2 * sub, -sub, 0.0f},    // subnormals ordered: 1
        {-sub, -0.0f, 0.0f},           // 1
        {inf, inf, 1.0f},              // 0
        {-1e30f, -inf, -1e-30f},       // 2
    };
    std::mt19937 rng(6);
    const float pool[] = {nan, inf, -inf, 0.0f, -0.0f, sub, -sub, 1.0f, -1.0f, 2.0f, 1e-38f, -1e38f, 3.5f};
    for (int r = 0; r < 2000; ++r) {  // random rows over a small pool of values: ties everywhere
        std::vector<float> x(1 + rng() % 9);
        for (float& v : x) v = pool[rng() % std::size(pool)];
        rows.push_back(x);
    }
    for (size_t r = 0; r < rows.size(); ++r) {
        const auto& x = rows[r];
        uint64_t best = 0;
        for (size_t i = 0; i < x.size(); ++i) best = std::max(best, kg::argmax_key(x[i], int64_t(i)));
        ASSERT_NE(best, 0u) << "row " << r;
        EXPECT_EQ(kg::argmax_key_index(best), int32_t(std::max_element(x.begin(), x.end()) - x.begin()))
            << "row " << r;
    }
    EXPECT_EQ(kg::argmax_key_index(kg::argmax_key(7.0f, 2147483647)), 2147483647);
}

// The greedy head with the argmax folded in (gemv_rmsnorm_argmax, docs/cuda.md "Greedy steps"): its logits
// equal gemv_rmsnorm's bit for bit, and the key's index is std::max_element's over logits [0, n): a random
// head; planted ties between rows (the first wins) in different blocks; a NaN logit at row 0 (index 0);
// NaNs elsewhere skipped behind a +inf; the maximum in a row ≥ n (not taken). Every case with warps looping
// over rows (a grid of 3 blocks: rows meet in a warp, in a block and across blocks); the random head also
// with one row per warp (MAMBASCOPE_GEMV_GRID=0) and the default grid. Each call starts from a zero key, as
// the contract asks.
TEST(CudaArgmax, FoldedIntoTheHeadIsStdMaxElementOfItsLogits) {
    REQUIRE_GPU();
    std::mt19937 rng(7);
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    const int64_t N = 1203, K = 64;
    // x > 0 and w_norm > 0, so the normalised input is positive: a row (v, 0, …, 0) gives the logit v·a[0]
    // (an inf weight +inf, never NaN)
    const auto wn = uniform(K, rng, 0.5f, 1.5f), xpos = uniform(K, rng, 0.1f, 2.0f);
    const auto base = round_bf16(randn(N * K, rng));
    auto row_set = [&](std::vector<float>& W, int64_t n, float v) {  // row n: v at k = 0, zeros elsewhere
        std::fill(W.begin() + n * K, W.begin() + (n + 1) * K, 0.0f);
        W[size_t(n * K)] = v;
    };
    auto row_copy = [&](std::vector<float>& W, int64_t to, int64_t from) {
        std::copy(W.begin() + from * K, W.begin() + (from + 1) * K, W.begin() + to * K);
    };
    std::vector<std::vector<float> > heads;
    std::vector<int64_t> planted;  // the index std::max_element must give over all N rows (-1: random)
    heads.push_back(base), planted.push_back(-1);  // random
    heads.push_back(base), planted.push_back(17);  // ties: rows 900, 17 and 600 equal and the largest (×8)
    for (int64_t k = 0; k < K; ++k)
        heads.back()[size_t(17 * K + k)] = 8.0f * std::fabs(base[size_t(17 * K + k)]);
    row_copy(heads.back(), 900, 17), row_copy(heads.back(), 600, 17);
    heads.push_back(base), planted.push_back(0);  // NaN at row 0, a larger value later
    row_set(heads.back(), 0, nan), row_set(heads.back(), 5, 1e30f);
    heads.push_back(base), planted.push_back(11);  // NaNs skipped, +inf at 11 wins
    row_set(heads.back(), 10, nan), row_set(heads.back(), 11, inf), row_set(heads.back(), 12, nan);
    heads.push_back(base), planted.push_back(N - 1);  // the largest in row N - 1, excluded when n = N - 3
    row_set(heads.back(), N - 1, 1e30f);
    Dev<float> dx(xpos), dwn(wn), y(N), yref(N);
    Dev<unsigned long long> key(1);
    for (size_t h = 0; h < heads.size(); ++h) {
        Dev<__nv_bfloat16> dW(to_bf16_host(heads[h]));
        {
            ScopedEnv grid("MAMBASCOPE_GEMV_GRID", "3");  // any grid gives the same bits (RowsPerGridCap…)
            kg::gemv_rmsnorm(N, K, dW.p, K, dx.p, dwn.p, 1e-5f, yref.p, 0.0f, nullptr);
        }
        const auto ref = yref.download();
        const auto want_all = std::max_element(ref.begin(), ref.end()) - ref.begin();
        if (planted[h] >= 0) EXPECT_EQ(want_all, planted[h]) << "head " << h << ": the plant did not land";
        for (const int64_t n : {N, N - 3})
            for (const char* grid : {"3", "0", static_cast<const char*>(nullptr)}) {
                if (h > 0 && (!grid || std::strcmp(grid, "3") != 0))
                    continue;  // the emulation's time: grids on one head
                ScopedEnv env("MAMBASCOPE_GEMV_GRID", grid);
                key.upload(std::vector<unsigned long long>{0});
                y.poison();
                kg::gemv_rmsnorm_argmax(N, K, dW.p, K, dx.p, dwn.p, 1e-5f, y.p, n, key.p, nullptr);
                const auto got = y.download();
                SCOPED_TRACE("head " + std::to_string(h) + " n " + std::to_string(n) + " grid " +
                             (grid ? grid : "default"));
                EXPECT_EQ(std::memcmp(got.data(), ref.data(), got.size() * sizeof(float)), 0);  // NaNs too
                EXPECT_EQ(kg::argmax_key_index(key.download()[0]),
                          int32_t(std::max_element(ref.begin(), ref.begin() + n) - ref.begin()));
            }
    }
    EXPECT_THROW(kg::gemv_rmsnorm_argmax(N, K, nullptr, K, dx.p, dwn.p, 1e-5f, y.p, N + 1, key.p, nullptr),
                 mambascope::Error);
    EXPECT_THROW(kg::gemv_rmsnorm_argmax(N, K, nullptr, K, dx.p, dwn.p, 1e-5f, y.p, N, nullptr, nullptr),
                 mambascope::Error);
}
