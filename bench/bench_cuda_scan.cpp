// bench_cuda_scan: speed of the CUDA scans against the mamba_ssm anchors (docs/cuda.md, docs/benchmarks.md).
//
// Mamba-1: d_inner ∈ {1536, 4096, 5120} × T ∈ {2k, 16k, 128k}, fp32, N = 16, batch 1, softplus + z + D fused
// (the configuration of mamba_ssm's selective_scan_fwd anchors), plain vs LongMamba filter + all probes,
// accurate (default) vs fast exp. Mamba-2 at the mamba2-130m / 1.3b shapes. Ceilings: HBM copy, cuBLAS SGEMM
// / TF32 at 16k × 768 × 3072. Times: cudaEvent, median of kRuns after kWarmup, inputs rotated over several
// sets so that short inputs do not run from L2. Prints tables; asserts nothing.
#ifdef MAMBASCOPE_HAVE_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_check.cuh"
#include "cuda/gemm.cuh"
#include "cuda/scan_mamba1.cuh"
#include "cuda/scan_mamba1_tp.cuh"
#include "cuda/scan_mamba2.cuh"
#include "cuda/scan_mamba2_ssd.cuh"
#include "mambascope/error.h"

namespace {

namespace kg = mambascope::kernels::cuda;

constexpr int kWarmup = 3;
constexpr int kRuns = 20;
constexpr size_t kRotateBytes = size_t(256) << 20;  // inputs rotated until they span this much (L2 = 50 MB)
constexpr size_t kSeedFloats = size_t(1) << 24;     // random floats uploaded once, tiled into every tensor

// mamba_ssm selective_scan_fwd, fp32, batch 1, d_state 16, z/D/softplus fused, one H200
// (performance-anchors.md, measured 2026-11-28). Milliseconds; 0 = not measured.
struct Anchor {
    int64_t E, T;
    double ms;
};
constexpr Anchor kMambaSsmFp32[] = {
    {1536, 2048, 0.133}, {1536, 16384, 1.006}, {1536, 131072, 7.80},
    {4096, 16384, 2.75}, {4096, 131072, 21.7}, {5120, 16384, 3.24},
};

double anchor_ms(int64_t E, int64_t T) {
    for (const auto& a : kMambaSsmFp32)
        if (a.E == E && a.T == T) return a.ms;
    return 0.0;
}

// A device buffer of `sets` copies of n floats, filled from the random seed at varying offsets.
struct DevSet {
    float* p = nullptr;
    size_t n = 0;
    int sets = 1;
    DevSet(size_t count, int nsets, const float* seed, size_t salt) : n(count), sets(nsets) {
        const size_t total = n * sets;
        CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(total, 1) * sizeof(float)));
        for (size_t off = 0; off < total;) {
            const size_t start = (salt * 7919 + off * 31) % (kSeedFloats / 2);
            const size_t len = std::min(total - off, kSeedFloats - start);
            CUDA_CHECK(cudaMemcpy(p + off, seed + start, len * sizeof(float), cudaMemcpyDeviceToDevice));
            off += len;
        }
    }
    ~DevSet() { cudaFree(p); }
    DevSet(const DevSet&) = delete;
    DevSet& operator=(const DevSet&) = delete;
    float* at(int s) const { return p + n * static_cast<size_t>(s % sets); }
};

// A bf16 copy of every set of a DevSet (converted on the device).
struct Bf16Set {
    __nv_bfloat16* p = nullptr;
    size_t n = 0;
    int sets = 1;
    explicit Bf16Set(const DevSet& f) : n(f.n), sets(f.sets) {
        const size_t total = n * sets;
        CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(total, 1) * sizeof(__nv_bfloat16)));
        kg::to_bf16(1, static_cast<int64_t>(total), f.p, static_cast<int64_t>(total), p,
                    static_cast<int64_t>(total), nullptr);
        CUDA_CHECK(cudaDeviceSynchronize());
    }
    ~Bf16Set() { cudaFree(p); }
    Bf16Set(const Bf16Set&) = delete;
    Bf16Set& operator=(const Bf16Set&) = delete;
    __nv_bfloat16* at(int s) const { return p + n * static_cast<size_t>(s % sets); }
};

// Median milliseconds of fn(run_index) over kRuns after kWarmup.
double time_ms(cudaStream_t stream, const std::function<void(int)>& fn) {
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    for (int i = 0; i < kWarmup; ++i) fn(i);
    std::vector<double> ms;
    for (int i = 0; i < kRuns; ++i) {
        CUDA_CHECK(cudaEventRecord(a, stream));
        fn(kWarmup + i);
        CUDA_CHECK(cudaEventRecord(b, stream));
        CUDA_CHECK(cudaEventSynchronize(b));
        float t = 0.0f;
        CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
        ms.push_back(t);
    }
    CUDA_CHECK(cudaEventDestroy(a));
    CUDA_CHECK(cudaEventDestroy(b));
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

int sets_for(size_t bytes_per_set) {
    return static_cast<int>(std::clamp<size_t>((kRotateBytes + bytes_per_set - 1) / bytes_per_set, 1, 16));
}

void bench_mamba1(const float* seed, cudaStream_t stream) {
    std::printf("\nMamba-1 fused scan, fp32, N=16, batch 1, softplus(dt+bias), z gate, D (median of %d)\n",
                kRuns);
    std::printf("min bytes = read x, dt, z (3·T·E·4) + B, C (2·T·N·4) + write y (T·E·4); exps = T·E·N\n");
    std::printf("%-7s %-7s %-22s %-9s %9s %9s %8s %8s %11s %9s\n", "d_inner", "tokens", "variant", "chunks",
                "ms", "Mtok/s", "GB/s", "Gexp/s", "mamba_ssm", "speedup");
    const int64_t N = 16;
    std::mt19937 rng(7);
    for (const int64_t E : {int64_t{1536}, int64_t{4096}, int64_t{5120}}) {
        for (const int64_t T : {int64_t{2048}, int64_t{16384}, int64_t{131072}}) {
            const size_t te = static_cast<size_t>(T * E);
            const int sets = sets_for(4 * te * sizeof(float));
            const int64_t ldbc = 2 * N;  // B and C interleaved in one (T, 2N) buffer, like x_proj's output
            DevSet x(te, sets, seed, 1), dt(te, sets, seed, 2), z(te, sets, seed, 3), y(te, sets, seed, 4),
                bc(static_cast<size_t>(T * ldbc), sets, seed, 5);
            // Parameters: dt_bias ≈ softplus⁻¹(0.01..0.1)-ish, A = -(n+1)·U(0.5, 1.5), D random.
            std::vector<float> hA(E * N), hbias(E), hD(E), hthr(E);
            std::uniform_real_distribution<float> u(0.5f, 1.5f), ub(-4.0f, -2.0f), ut(0.01f, 0.05f);
            for (int64_t e = 0; e < E; ++e) {
                for (int64_t n = 0; n < N; ++n) hA[e * N + n] = -static_cast<float>(n + 1) * u(rng);
                hbias[e] = ub(rng);
                hD[e] = u(rng);
                hthr[e] = e % 2 ? ut(rng) : -INFINITY;  // half the channels filtered (global)
            }
            float *A, *bias, *D, *thr, *h;
            double *dsum, *logd;
            int64_t* kept;
            CUDA_CHECK(cudaMalloc(&A, hA.size() * 4));
            CUDA_CHECK(cudaMalloc(&bias, E * 4));
            CUDA_CHECK(cudaMalloc(&D, E * 4));
            CUDA_CHECK(cudaMalloc(&thr, E * 4));
            CUDA_CHECK(cudaMalloc(&h, E * N * 4));
            CUDA_CHECK(cudaMalloc(&dsum, E * 8));
            CUDA_CHECK(cudaMalloc(&logd, E * 8));
            CUDA_CHECK(cudaMalloc(&kept, E * 8));
            CUDA_CHECK(cudaMemcpy(A, hA.data(), hA.size() * 4, cudaMemcpyHostToDevice));
            CUDA_CHECK(cudaMemcpy(bias, hbias.data(), E * 4, cudaMemcpyHostToDevice));
            CUDA_CHECK(cudaMemcpy(D, hD.data(), E * 4, cudaMemcpyHostToDevice));
            CUDA_CHECK(cudaMemcpy(thr, hthr.data(), E * 4, cudaMemcpyHostToDevice));
            CUDA_CHECK(cudaMemset(h, 0, E * N * 4));
            CUDA_CHECK(cudaMemset(dsum, 0, E * 8));
            CUDA_CHECK(cudaMemset(logd, 0, E * 8));
            CUDA_CHECK(cudaMemset(kept, 0, E * 8));
            const kg::ScanPlan plan = kg::scan_mamba1_plan(T, E);
            const size_t ws_bytes = kg::scan_mamba1_workspace_bytes(T, E, N);
            void* ws = nullptr;
            if (ws_bytes) CUDA_CHECK(cudaMalloc(&ws, ws_bytes));

            const double bytes = 3.0 * te * 4 + 2.0 * T * N * 4 + 1.0 * te * 4;
            const double exps = static_cast<double>(te) * N;
            const double anchor = anchor_ms(E, T);
            double plain_ms[2] = {0, 0};
            for (int fast = 0; fast < 2; ++fast)
                for (int filtered = 0; filtered < 2; ++filtered) {
                    auto run = [&](int i) {
                        kg::Mamba1ScanArgs a;
                        a.T = T, a.E = E, a.N = N;
                        a.x = x.at(i), a.ldx = E, a.delta = dt.at(i), a.ldd = E;
                        a.delta_bias = bias, a.delta_softplus = true, a.A = A;
                        a.B = bc.at(i), a.ldb = ldbc, a.C = bc.at(i) + N, a.ldc = ldbc, a.Dskip = D;
                        a.z = z.at(i), a.ldz = E, a.h = h, a.y = y.at(i), a.ldy = E;
                        a.fast_exp = fast != 0;
                        if (filtered) a.thr = thr, a.probes = kg::ScanProbes{dsum, kept, logd};
                        kg::scan_mamba1(a, ws, ws_bytes, stream);
                    };
                    const double ms = time_ms(stream, run);
                    if (!filtered) plain_ms[fast] = ms;
                    const std::string variant =
                        std::string(filtered ? "filter+probes" : "plain") + (fast ? " fast-exp" : "");
                    char chunks[32], anc[32], sp[64];
                    std::snprintf(chunks, sizeof chunks, "%lldx%lld", static_cast<long long>(plan.chunks),
                                  static_cast<long long>(plan.chunk_len));
                    std::snprintf(anc, sizeof anc, anchor > 0 ? "%.3f ms" : "-", anchor);
                    if (filtered)
                        std::snprintf(sp, sizeof sp, "%+.1f%% vs plain", 100.0 * (ms / plain_ms[fast] - 1.0));
                    else if (anchor > 0)
                        std::snprintf(sp, sizeof sp, "%.2fx", anchor / ms);
                    else
                        std::snprintf(sp, sizeof sp, "-");
                    std::printf("%-7lld %-7lld %-22s %-9s %9.3f %9.1f %8.0f %8.0f %11s %9s\n",
                                static_cast<long long>(E), static_cast<long long>(T), variant.c_str(), chunks,
                                ms, T / ms / 1e3, bytes / ms / 1e6, exps / ms / 1e6, anc, sp);
                    std::fflush(stdout);
                }
            // bf16 inputs and output (x, dt, z, B, C, y in bf16; state and arithmetic float32), fast exp: the
            // configuration of the bf16 forward and of mamba_ssm's bf16 selective_scan_fwd.
            {
                Bf16Set x16(x), dt16(dt), z16(z), y16(y), bc16(bc);
                const double bytes16 = bytes / 2;
                double plain16 = 0.0;
                for (int filtered = 0; filtered < 2; ++filtered) {
                    auto run = [&](int i) {
                        kg::Mamba1ScanArgs a;
                        a.T = T, a.E = E, a.N = N;
                        a.x16 = x16.at(i), a.ldx = E, a.delta16 = dt16.at(i), a.ldd = E;
                        a.delta_bias = bias, a.delta_softplus = true, a.A = A;
                        a.B16 = bc16.at(i), a.ldb = ldbc, a.C16 = bc16.at(i) + N, a.ldc = ldbc, a.Dskip = D;
                        a.z16 = z16.at(i), a.ldz = E, a.h = h, a.y16 = y16.at(i), a.ldy = E;
                        a.fast_exp = true;
                        if (filtered) a.thr = thr, a.probes = kg::ScanProbes{dsum, kept, logd};
                        kg::scan_mamba1(a, ws, ws_bytes, stream);
                    };
                    const double ms = time_ms(stream, run);
                    if (!filtered) plain16 = ms;
                    char chunks[32], sp[64];
                    std::snprintf(chunks, sizeof chunks, "%lldx%lld", static_cast<long long>(plan.chunks),
                                  static_cast<long long>(plan.chunk_len));
                    if (filtered)
                        std::snprintf(sp, sizeof sp, "%+.1f%% vs plain", 100.0 * (ms / plain16 - 1.0));
                    else
                        std::snprintf(sp, sizeof sp, "%.2fx fp32", plain_ms[1] / ms);
                    std::printf("%-7lld %-7lld %-22s %-9s %9.3f %9.1f %8.0f %8.0f %11s %9s\n",
                                static_cast<long long>(E), static_cast<long long>(T),
                                filtered ? "bf16 filter+probes fast" : "bf16 plain fast", chunks, ms,
                                T / ms / 1e3, bytes16 / ms / 1e6, exps / ms / 1e6, "-", sp);
                    std::fflush(stdout);
                }
                // The time-parallel scan (scan_mamba1_tp.cuh; docs/cuda.md, "The time-parallel scan"): plain,
                // and filtered (no probes: it takes none), for every built shape; the last column is its
                // speed-up over the chunked bf16 scan above.
                if (!std::getenv("BENCH_SCAN_NO_TP"))
                    for (const kg::Mamba1TpShape shape : {kg::Mamba1TpShape{4, 8}, kg::Mamba1TpShape{4, 16},
                                                          kg::Mamba1TpShape{8, 8}, kg::Mamba1TpShape{8, 16}})
                        for (int pipe = 1; pipe >= 0; --pipe) {
                            setenv("MAMBASCOPE_M1_TP_PIPE", pipe ? "1" : "0", 1);
                            auto run = [&](int i) {
                                kg::Mamba1ScanArgs a;
                                a.T = T, a.E = E, a.N = N;
                                a.x16 = x16.at(i), a.ldx = E, a.delta16 = dt16.at(i), a.ldd = E;
                                a.delta_bias = bias, a.delta_softplus = true, a.A = A;
                                a.B16 = bc16.at(i), a.ldb = ldbc, a.C16 = bc16.at(i) + N, a.ldc = ldbc;
                                a.Dskip = D, a.z16 = z16.at(i), a.ldz = E, a.h = h, a.y16 = y16.at(i),
                                a.ldy = E;
                                a.fast_exp = true;
                                kg::scan_mamba1_tp(a, stream, shape);
                            };
                            const double ms = time_ms(stream, run);
                            char variant[48], sp[64], one[32];
                            std::snprintf(one, sizeof one, "1x%lld", static_cast<long long>(T));
                            std::snprintf(variant, sizeof variant, "bf16 tp %dx%d%s fast", shape.channels,
                                          shape.items, pipe ? "" : " nopipe");
                            std::snprintf(sp, sizeof sp, "%.2fx bf16", plain16 / ms);
                            std::printf("%-7lld %-7lld %-22s %-9s %9.3f %9.1f %8.0f %8.0f %11s %9s\n",
                                        static_cast<long long>(E), static_cast<long long>(T), variant, "1",
                                        ms, T / ms / 1e3, bytes16 / ms / 1e6, exps / ms / 1e6, "-", sp);
                            std::fflush(stdout);
                            unsetenv("MAMBASCOPE_M1_TP_PIPE");
                        }
            }
            if (ws) CUDA_CHECK(cudaFree(ws));
            for (void* p : {static_cast<void*>(A), static_cast<void*>(bias), static_cast<void*>(D),
                            static_cast<void*>(thr), static_cast<void*>(h), static_cast<void*>(dsum),
                            static_cast<void*>(logd), static_cast<void*>(kept)})
                CUDA_CHECK(cudaFree(p));
        }
    }
}

void bench_mamba2(const float* seed, cudaStream_t stream) {
    std::printf(
        "\nMamba-2 scan, P=64, N=128, G=1, batch 1, softplus(dt+dt_bias), D (median of %d): the fp32 "
        "recurrent\n"
        "scan (register-tiled; legacy with BENCH_M2_LEGACY=1) and the chunked SSD scan on tensor cores "
        "(bf16\n"
        "operands, fp32 accumulation, %lld-token chunks)\n",
        kRuns, static_cast<long long>(kg::kSsdChunk));
    std::printf(
        "min bytes = read x (T·E·4) + dt (T·H·4) + B, C (2·T·N·4) + write y (T·E·4); FLOP = 5·T·E·N (the\n"
        "recurrent form's count for every variant, so the column compares times); last column: time of the\n"
        "tiled recurrent scan / this variant's\n");
    std::printf("%-12s %-7s %-22s %-9s %9s %9s %8s %9s %14s\n", "model", "tokens", "variant", "chunks", "ms",
                "Mtok/s", "GB/s", "TFLOP/s", "vs tiled");
    struct Shape {
        const char* name;
        int64_t H;
    };
    const int64_t P = 64, N = 128;
    std::mt19937 rng(9);
    for (const Shape sh : {Shape{"mamba2-130m", 24}, Shape{"mamba2-1.3b", 64}}) {
        const int64_t H = sh.H, E = H * P;
        for (const int64_t T : {int64_t{2048}, int64_t{16384}, int64_t{131072}}) {
            const size_t te = static_cast<size_t>(T * E);
            const int sets = sets_for(2 * te * sizeof(float));
            DevSet x(te, sets, seed, 11), y(te, sets, seed, 12),
                dt(static_cast<size_t>(T * H), sets, seed, 13),
                bc(static_cast<size_t>(T * 2 * N), sets, seed, 14);
            std::vector<float> hA(H), hbias(H), hD(H), hthr(H);
            std::uniform_real_distribution<float> ua(-8.0f, -1.0f), ub(-4.0f, -2.0f), ut(0.01f, 0.05f);
            for (int64_t h = 0; h < H; ++h) {
                hA[h] = ua(rng);
                hbias[h] = ub(rng);
                hD[h] = 1.0f;
                hthr[h] = h % 2 ? ut(rng) : -INFINITY;  // half the heads filtered (global)
            }
            float *A, *bias, *D, *thr, *s;
            double *dsum, *logd;
            int64_t* kept;
            CUDA_CHECK(cudaMalloc(&A, H * 4));
            CUDA_CHECK(cudaMalloc(&bias, H * 4));
            CUDA_CHECK(cudaMalloc(&D, H * 4));
            CUDA_CHECK(cudaMalloc(&thr, H * 4));
            CUDA_CHECK(cudaMalloc(&s, H * P * N * 4));
            CUDA_CHECK(cudaMalloc(&dsum, H * 8));
            CUDA_CHECK(cudaMalloc(&logd, H * 8));
            CUDA_CHECK(cudaMalloc(&kept, H * 8));
            CUDA_CHECK(cudaMemcpy(A, hA.data(), H * 4, cudaMemcpyHostToDevice));
            CUDA_CHECK(cudaMemcpy(bias, hbias.data(), H * 4, cudaMemcpyHostToDevice));
            CUDA_CHECK(cudaMemcpy(D, hD.data(), H * 4, cudaMemcpyHostToDevice));
            CUDA_CHECK(cudaMemcpy(thr, hthr.data(), H * 4, cudaMemcpyHostToDevice));
            CUDA_CHECK(cudaMemset(s, 0, H * P * N * 4));
            CUDA_CHECK(cudaMemset(dsum, 0, H * 8));
            CUDA_CHECK(cudaMemset(logd, 0, H * 8));
            CUDA_CHECK(cudaMemset(kept, 0, H * 8));
            const double bytes = 2.0 * te * 4 + 1.0 * T * H * 4 + 2.0 * T * N * 4;
            const double flop = 5.0 * te * N;
            double tiled_ms[2] = {0, 0};
            // The register-tiled kernels (default), the chunked SSD scan, and (BENCH_M2_LEGACY=1)
            // MAMBASCOPE_M2_SCAN=legacy.
            const bool with_legacy = std::getenv("BENCH_M2_LEGACY") != nullptr;
            for (const int variant_id : {0, 1, 2}) {
                const bool legacy = variant_id == 2, ssd = variant_id == 1;
                if (legacy && !with_legacy) continue;
                if (legacy)
                    setenv("MAMBASCOPE_M2_SCAN", "legacy", 1);
                else
                    unsetenv("MAMBASCOPE_M2_SCAN");
                kg::ScanPlan plan = kg::scan_mamba2_plan(T, H, P, N);
                if (ssd)
                    plan.chunk_len = kg::kSsdChunk, plan.chunks = (T + kg::kSsdChunk - 1) / kg::kSsdChunk;
                const size_t ws_bytes = ssd ? kg::scan_mamba2_ssd_workspace_bytes(T, H, P, 1, N)
                                            : kg::scan_mamba2_workspace_bytes(T, H, P, N);
                void* ws = nullptr;
                if (ws_bytes) CUDA_CHECK(cudaMalloc(&ws, ws_bytes));
                for (int filtered = 0; filtered < 2; ++filtered) {
                    auto run = [&](int i) {
                        kg::Mamba2ScanArgs a;
                        a.T = T, a.H = H, a.P = P, a.G = 1, a.N = N;
                        a.x = x.at(i), a.ldx = E, a.delta = dt.at(i), a.ldd = H;
                        a.delta_bias = bias, a.delta_softplus = true, a.A = A;
                        a.B = bc.at(i), a.ldb = 2 * N, a.C = bc.at(i) + N, a.ldc = 2 * N, a.Dskip = D;
                        a.s = s, a.y = y.at(i), a.ldy = E;
                        if (filtered) a.thr = thr, a.probes = kg::ScanProbes{dsum, kept, logd};
                        if (ssd)
                            kg::scan_mamba2_ssd(a, ws, ws_bytes, stream);
                        else
                            kg::scan_mamba2(a, ws, ws_bytes, stream);
                    };
                    const double ms = time_ms(stream, run);
                    char chunks[32];
                    std::snprintf(chunks, sizeof chunks, "%lldx%lld", static_cast<long long>(plan.chunks),
                                  static_cast<long long>(plan.chunk_len));
                    const std::string variant = std::string(legacy ? "legacy "
                                                            : ssd  ? "ssd bf16 "
                                                                   : "tiled ") +
                                                (filtered ? "filter+probes" : "plain");
                    char sp[32] = "-";
                    if (variant_id != 0)
                        std::snprintf(sp, sizeof sp, "%.2fx", tiled_ms[filtered] / ms);
                    else
                        tiled_ms[filtered] = ms;
                    std::printf("%-12s %-7lld %-22s %-9s %9.3f %9.1f %8.0f %9.1f %14s\n", sh.name,
                                static_cast<long long>(T), variant.c_str(), chunks, ms, T / ms / 1e3,
                                bytes / ms / 1e6, flop / ms / 1e9, sp);
                    std::fflush(stdout);
                }
                if (ws) CUDA_CHECK(cudaFree(ws));
            }
            unsetenv("MAMBASCOPE_M2_SCAN");
            for (void* p : {static_cast<void*>(A), static_cast<void*>(bias), static_cast<void*>(D),
                            static_cast<void*>(thr), static_cast<void*>(s), static_cast<void*>(dsum),
                            static_cast<void*>(logd), static_cast<void*>(kept)})
                CUDA_CHECK(cudaFree(p));
        }
    }
}

// One fast-exp filter + probes scan of (E, T), as in bench_mamba1, run twice (the second is the one to read);
// plain16: the "bf16 plain fast" row's configuration instead (bf16 x, Δ, z, B, C, y; no filter, no probes).
void profile_mamba1(const float* seed, cudaStream_t stream, int64_t E, int64_t T, bool plain16) {
    const int64_t N = 16;
    const size_t te = static_cast<size_t>(T * E);
    DevSet x(te, 1, seed, 1), dt(te, 1, seed, 2), z(te, 1, seed, 3), y(te, 1, seed, 4),
        bc(static_cast<size_t>(T * 2 * N), 1, seed, 5);
    std::vector<float> hA(static_cast<size_t>(E * N)), hbias(E, -3.0f), hD(E, 1.0f), hthr(E);
    for (size_t i = 0; i < hA.size(); ++i) hA[i] = -static_cast<float>(i % N + 1);
    for (int64_t e = 0; e < E; ++e) hthr[e] = e % 2 ? 0.03f : -INFINITY;
    DevSet A(hA.size(), 1, seed, 6), bias(E, 1, seed, 7), D(E, 1, seed, 8), thr(E, 1, seed, 9),
        h(static_cast<size_t>(E * N), 1, seed, 10), dsum(2 * E, 1, seed, 11), logd(2 * E, 1, seed, 12),
        kept(2 * E, 1, seed, 13);
    CUDA_CHECK(cudaMemcpy(A.p, hA.data(), hA.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(bias.p, hbias.data(), E * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(D.p, hD.data(), E * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(thr.p, hthr.data(), E * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemset(h.p, 0, E * N * 4));
    for (DevSet* p : {&dsum, &logd, &kept}) CUDA_CHECK(cudaMemset(p->p, 0, 2 * E * 4));
    const size_t ws_bytes = kg::scan_mamba1_workspace_bytes(T, E, N);
    void* ws = nullptr;
    if (ws_bytes) CUDA_CHECK(cudaMalloc(&ws, ws_bytes));
    // the bf16 copies only for plain16 (their conversion kernels run before the scans a profiler filters for)
    std::unique_ptr<Bf16Set> x16, dt16, z16, y16, bc16;
    if (plain16) {
        x16 = std::make_unique<Bf16Set>(x), dt16 = std::make_unique<Bf16Set>(dt);
        z16 = std::make_unique<Bf16Set>(z), y16 = std::make_unique<Bf16Set>(y),
        bc16 = std::make_unique<Bf16Set>(bc);
    }
    for (int rep = 0; rep < 2; ++rep) {
        kg::Mamba1ScanArgs a;
        a.T = T, a.E = E, a.N = N;
        if (plain16) {
            a.x16 = x16->p, a.ldx = E, a.delta16 = dt16->p, a.ldd = E, a.delta_bias = bias.p;
            a.delta_softplus = true, a.A = A.p, a.B16 = bc16->p, a.ldb = 2 * N, a.C16 = bc16->p + N;
            a.ldc = 2 * N, a.Dskip = D.p, a.z16 = z16->p, a.ldz = E, a.h = h.p, a.y16 = y16->p, a.ldy = E;
            a.fast_exp = true;
            kg::scan_mamba1(a, ws, ws_bytes, stream);
            continue;
        }
        a.x = x.p, a.ldx = E, a.delta = dt.p, a.ldd = E, a.delta_bias = bias.p, a.delta_softplus = true;
        a.A = A.p, a.B = bc.p, a.ldb = 2 * N, a.C = bc.p + N, a.ldc = 2 * N, a.Dskip = D.p;
        a.z = z.p, a.ldz = E, a.h = h.p, a.y = y.p, a.ldy = E, a.fast_exp = true, a.thr = thr.p;
        a.probes = kg::ScanProbes{reinterpret_cast<double*>(dsum.p), reinterpret_cast<int64_t*>(kept.p),
                                  reinterpret_cast<double*>(logd.p)};
        kg::scan_mamba1(a, ws, ws_bytes, stream);
    }
    CUDA_CHECK(cudaStreamSynchronize(stream));
    if (ws) CUDA_CHECK(cudaFree(ws));
    const kg::ScanPlan plan = kg::scan_mamba1_plan(T, E);
    std::printf("profiled Mamba-1 scan (%s) E=%lld T=%lld, %lld chunks of %lld\n",
                plain16 ? "bf16 plain fast" : "float32 filter+probes fast", static_cast<long long>(E),
                static_cast<long long>(T), static_cast<long long>(plan.chunks),
                static_cast<long long>(plan.chunk_len));
}

// One plain bf16 time-parallel scan per built shape at (E, T), nothing else: for a profiler
// (BENCH_SCAN_TP_PROFILE, scripts/device/gpu_tp_scan.sh).
void profile_mamba1_tp(const float* seed, cudaStream_t stream, int64_t E, int64_t T) {
    const int64_t N = 16;
    const size_t te = static_cast<size_t>(T * E);
    DevSet x(te, 1, seed, 1), dt(te, 1, seed, 2), z(te, 1, seed, 3), y(te, 1, seed, 4),
        bc(static_cast<size_t>(T * 2 * N), 1, seed, 5);
    Bf16Set x16(x), dt16(dt), z16(z), y16(y), bc16(bc);
    std::vector<float> hA(static_cast<size_t>(E * N)), hbias(E, -3.0f), hD(E, 1.0f);
    for (size_t i = 0; i < hA.size(); ++i) hA[i] = -static_cast<float>(i % N + 1);
    DevSet A(hA.size(), 1, seed, 6), bias(E, 1, seed, 7), D(E, 1, seed, 8),
        h(static_cast<size_t>(E * N), 1, seed, 10);
    CUDA_CHECK(cudaMemcpy(A.p, hA.data(), hA.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(bias.p, hbias.data(), E * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(D.p, hD.data(), E * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemset(h.p, 0, E * N * 4));
    for (const kg::Mamba1TpShape shape : {kg::Mamba1TpShape{4, 8}, kg::Mamba1TpShape{4, 16},
                                          kg::Mamba1TpShape{8, 8}, kg::Mamba1TpShape{8, 16}}) {
        kg::Mamba1ScanArgs a;
        a.T = T, a.E = E, a.N = N;
        a.x16 = x16.p, a.ldx = E, a.delta16 = dt16.p, a.ldd = E, a.delta_bias = bias.p,
        a.delta_softplus = true;
        a.A = A.p, a.B16 = bc16.p, a.ldb = 2 * N, a.C16 = bc16.p + N, a.ldc = 2 * N, a.Dskip = D.p;
        a.z16 = z16.p, a.ldz = E, a.h = h.p, a.y16 = y16.p, a.ldy = E, a.fast_exp = true;
        kg::scan_mamba1_tp(a, stream, shape);
    }
    CUDA_CHECK(cudaStreamSynchronize(stream));
    std::printf("profiled the time-parallel Mamba-1 scan E=%lld T=%lld, shapes 4x8 4x16 8x8 8x16\n",
                static_cast<long long>(E), static_cast<long long>(T));
}

// Short inputs: the chunk plan decides the parallelism/pass-1 trade-off. Times the fast plain scan over
// explicit chunk lengths at 2k tokens (the auto plan is marked), to see where the latency goes.
void bench_mamba1_chunk_sweep(const float* seed, cudaStream_t stream) {
    std::printf("\nMamba-1 scan at short inputs: chunk length sweep (fast exp, plain, median of %d)\n",
                kRuns);
    std::printf("%-7s %-7s %-10s %-9s %9s %9s\n", "d_inner", "tokens", "chunk_len", "chunks", "fp32 ms",
                "bf16 ms");
    const int64_t N = 16;
    for (const int64_t E : {int64_t{1536}, int64_t{4096}}) {
        const int64_t T = 2048;
        const size_t te = static_cast<size_t>(T * E);
        const int sets = sets_for(4 * te * sizeof(float));
        DevSet x(te, sets, seed, 1), dt(te, sets, seed, 2), z(te, sets, seed, 3), y(te, sets, seed, 4),
            bc(static_cast<size_t>(T * 2 * N), sets, seed, 5), A(static_cast<size_t>(E * N), 1, seed, 6),
            bias(static_cast<size_t>(E), 1, seed, 7);
        // A must be negative: -(|seed| + 0.5)
        std::vector<float> hA(static_cast<size_t>(E * N));
        for (size_t i = 0; i < hA.size(); ++i) hA[i] = -(0.5f + static_cast<float>(i % 16));
        CUDA_CHECK(cudaMemcpy(A.p, hA.data(), hA.size() * 4, cudaMemcpyHostToDevice));
        float* h = nullptr;
        CUDA_CHECK(cudaMalloc(&h, E * N * 4));
        CUDA_CHECK(cudaMemset(h, 0, E * N * 4));
        Bf16Set x16(x), dt16(dt), z16(z), y16(y), bc16(bc);
        const int64_t auto_len = kg::scan_mamba1_plan(T, E).chunk_len;
        for (const int64_t len : {int64_t{16}, int64_t{32}, int64_t{40}, int64_t{48}, int64_t{56},
                                  int64_t{64}, int64_t{128}, int64_t{256}, int64_t{512}, T}) {
            const kg::ScanPlan plan = kg::scan_mamba1_plan(T, E, len);
            const size_t ws_bytes = kg::scan_mamba1_workspace_bytes(T, E, N, len);
            void* ws = nullptr;
            if (ws_bytes) CUDA_CHECK(cudaMalloc(&ws, ws_bytes));
            // float32, then bf16 inputs and output (the bf16 forward's configuration); the rest shared
            const auto run = [&](int i, bool bf16) {
                kg::Mamba1ScanArgs a;
                a.T = T, a.E = E, a.N = N, a.ldx = E, a.ldd = E, a.ldb = 2 * N, a.ldc = 2 * N, a.ldz = E;
                a.ldy = E, a.delta_bias = bias.p, a.delta_softplus = true, a.A = A.p, a.h = h;
                a.fast_exp = true, a.chunk_len = len;
                if (bf16)
                    a.x16 = x16.at(i), a.delta16 = dt16.at(i), a.B16 = bc16.at(i), a.C16 = bc16.at(i) + N,
                    a.z16 = z16.at(i), a.y16 = y16.at(i);
                else
                    a.x = x.at(i), a.delta = dt.at(i), a.B = bc.at(i), a.C = bc.at(i) + N, a.z = z.at(i),
                    a.y = y.at(i);
                kg::scan_mamba1(a, ws, ws_bytes, stream);
            };
            const double ms = time_ms(stream, [&](int i) { run(i, false); });
            const double ms16 = time_ms(stream, [&](int i) { run(i, true); });
            std::printf("%-7lld %-7lld %-10lld %-9lld %9.4f %9.4f%s\n", static_cast<long long>(E),
                        static_cast<long long>(T), static_cast<long long>(plan.chunk_len),
                        static_cast<long long>(plan.chunks), ms, ms16,
                        plan.chunk_len == auto_len ? "   (auto plan)" : "");
            if (ws) CUDA_CHECK(cudaFree(ws));
        }
        CUDA_CHECK(cudaFree(h));
    }
}

void bench_ceilings(const float* seed, cudaStream_t stream) {
    std::printf("\nCeilings\n");
    {
        const size_t n = size_t(1) << 29;  // 2 GiB per buffer
        DevSet a(n, 1, seed, 21), b(n, 1, seed, 22);
        const double ms = time_ms(stream, [&](int) {
            CUDA_CHECK(cudaMemcpyAsync(b.p, a.p, n * sizeof(float), cudaMemcpyDeviceToDevice, stream));
        });
        std::printf("HBM device-to-device copy, 2 GiB: %.3f ms, %.0f GB/s (read + write)\n", ms,
                    2.0 * n * sizeof(float) / ms / 1e6);
    }
    const int64_t M = 16384, K = 768, Nn = 3072;  // 16k tokens × d_model 768 × 2·d_inner (mamba-130m in_proj)
    DevSet A(static_cast<size_t>(M * K), 1, seed, 23), W(static_cast<size_t>(Nn * K), 1, seed, 24),
        C(static_cast<size_t>(M * Nn), 1, seed, 25);
    kg::CublasHandle handle;
    for (const bool tf32 : {false, true}) {
        const double ms = time_ms(stream, [&](int) {
            kg::gemm_rowmajor(handle.get(), stream, M, Nn, K, A.p, K, W.p, K, C.p, Nn, tf32);
        });
        std::printf("cuBLAS %-5s C = A·Wᵀ, %lld × %lld × %lld: %.3f ms, %.1f TFLOP/s\n",
                    tf32 ? "TF32" : "SGEMM", static_cast<long long>(M), static_cast<long long>(Nn),
                    static_cast<long long>(K), ms, 2.0 * M * Nn * K / ms / 1e9);
    }
}

}  // namespace

int main() {
    try {
        int n = 0;
        if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
            std::printf("bench_cuda_scan: no CUDA device\n");
            return 0;
        }
        cudaDeviceProp prop{};
        CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
        std::printf("bench_cuda_scan on %s (%d SMs, %.0f MB L2)\n", prop.name, prop.multiProcessorCount,
                    prop.l2CacheSize / 1048576.0);
        std::vector<float> host(kSeedFloats);
        std::mt19937 rng(1234);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        for (auto& v : host) v = nd(rng);
        float* seed = nullptr;
        CUDA_CHECK(cudaMalloc(&seed, kSeedFloats * sizeof(float)));
        CUDA_CHECK(cudaMemcpy(seed, host.data(), kSeedFloats * sizeof(float), cudaMemcpyHostToDevice));
        cudaStream_t stream;
        CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
        // BENCH_SCAN_PROFILE="E,T": one fast-exp filter + probes Mamba-1 scan of that shape, nothing else
        // (for a profiler: scripts/device/profile_scan_and_forward.sh); with BENCH_SCAN_PROFILE_PLAIN16=1 the
        // plain bf16 scan instead (scripts/device/gpu_m1_sass.sh, NCU_SHAPE).
        if (const char* prof = std::getenv("BENCH_SCAN_PROFILE")) {
            long long E = 0, T = 0;
            if (std::sscanf(prof, "%lld,%lld", &E, &T) != 2 || E <= 0 || T <= 0)
                throw mambascope::Error("BENCH_SCAN_PROFILE must be \"E,T\", got \"" + std::string(prof) +
                                        "\"");
            profile_mamba1(seed, stream, E, T, std::getenv("BENCH_SCAN_PROFILE_PLAIN16") != nullptr);
            CUDA_CHECK(cudaStreamDestroy(stream));
            CUDA_CHECK(cudaFree(seed));
            return 0;
        }
        // BENCH_SCAN_TP_PROFILE="E,T": one plain bf16 time-parallel scan per built shape at that size,
        // nothing else (for a profiler: scripts/device/gpu_tp_scan.sh).
        if (const char* prof = std::getenv("BENCH_SCAN_TP_PROFILE")) {
            long long E = 0, T = 0;
            if (std::sscanf(prof, "%lld,%lld", &E, &T) != 2 || E <= 0 || T <= 0)
                throw mambascope::Error("BENCH_SCAN_TP_PROFILE must be \"E,T\", got \"" + std::string(prof) +
                                        "\"");
            profile_mamba1_tp(seed, stream, E, T);
            CUDA_CHECK(cudaStreamDestroy(stream));
            CUDA_CHECK(cudaFree(seed));
            return 0;
        }
        // BENCH_SCAN_SWEEP_ONLY=1: the chunk sweep only; BENCH_SCAN_M1_ONLY=1: the Mamba-1 table only;
        // BENCH_SCAN_M2_ONLY=1: the ceilings and the Mamba-2 table only (short A/B runs of a kernel change,
        // as in commits 1edf662 and b4cfc28).
        const bool m1_only = std::getenv("BENCH_SCAN_M1_ONLY") != nullptr;
        if (std::getenv("BENCH_SCAN_M2_ONLY")) {
            bench_ceilings(seed, stream);
            bench_mamba2(seed, stream);
            CUDA_CHECK(cudaStreamDestroy(stream));
            CUDA_CHECK(cudaFree(seed));
            return 0;
        }
        if (!m1_only) bench_ceilings(seed, stream);
        if (!std::getenv("BENCH_SCAN_SWEEP_ONLY")) bench_mamba1(seed, stream);
        if (!m1_only) bench_mamba1_chunk_sweep(seed, stream);
        if (std::getenv("BENCH_SCAN_SWEEP_ONLY") || m1_only) {
            CUDA_CHECK(cudaStreamDestroy(stream));
            CUDA_CHECK(cudaFree(seed));
            return 0;
        }
        bench_mamba2(seed, stream);
        CUDA_CHECK(cudaStreamDestroy(stream));
        CUDA_CHECK(cudaFree(seed));
    } catch (const mambascope::Error& e) {
        std::fprintf(stderr, "bench_cuda_scan: %s\n", mambascope::describe(e).c_str());
        return 1;
    }
    return 0;
}

#else

#include <cstdio>

int main() {
    std::printf("CUDA not built\n");
    return 0;
}

#endif
