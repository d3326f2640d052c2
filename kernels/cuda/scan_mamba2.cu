// Mamba-2 recurrent scan with LongMamba filter and probes; see scan_mamba2.cuh for the design.
//
//   Δ'[t,h]   = Δ[t,h] > thr[h] ? Δ[t,h] : 0
//   s[h,p,n]  = exp(Δ'·A[h])·s[h,p,n] + Δ'·x[t,h,p]·B[t,g,n]      (method doc §1.3)
//   y[t,h,p]  = Σ_n C[t,g,n]·s[h,p,n] + D[h]·x[t,h,p]
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "cuda/cuda_check.cuh"
#include "cuda/device_math.cuh"
#include "cuda/pdl.cuh"
#include "cuda/scan_mamba2.cuh"
#include "mambascope/env_switch.h"

namespace mambascope::kernels::cuda {
namespace {

using namespace detail;

// Constants shared with the legacy kernels (MAMBASCOPE_M2_SCAN=legacy): kM2Tile also sets the granularity of
// a caller's chunk_len, kM2MaxThreads the launch bound of every scan kernel.
constexpr int kM2Lanes = 4;          // lanes per channel p; each holds N/4 states (N/16 float4 groups)
constexpr int kM2Tile = 16;          // tokens staged in shared memory at a time (B, C, x, Δ', exp(Δ'·A))
constexpr int64_t kM2MinChunk = 64;  // shortest time chunk worth a pass-1/pass-2 round trip
constexpr int64_t kM2MaxP =
    128;  // 4·P threads per block ≤ kM2MaxThreads (every Mamba-2 checkpoint has P = 64)
constexpr int kM2MaxThreads = 512;  // launch bound: leaves 128 registers per thread for N = 128
constexpr int kM2CombineThreads = 256;

struct Params {
    int64_t T, H, P, G, N, chunk_len, chunks;
    const float* x;
    int64_t ldx;
    const float* delta;
    int64_t ldd;
    const float* delta_bias;
    int softplus;
    const float* A;
    const float* B;
    int64_t ldb;
    const float* C;
    int64_t ldc;
    const float* Dskip;
    const float* thr;
    float* y;
    int64_t ldy;
    float* delta_out;
    int64_t ldo;
};

int block_threads(int64_t P) {
    return static_cast<int>((P * kM2Lanes + 31) / 32 * 32);
}

size_t smem_bytes(int64_t P, int64_t N) {
    // sB, sC (tile, N) + sx (tile, P) + sdt, sdA (tile)
    return static_cast<size_t>(2 * kM2Tile * N + kM2Tile * P + 2 * kM2Tile) * sizeof(float);
}

// Per-block tile staging. Threads < kM2Tile also compute Δ' and exp(Δ'·A) for one token each and keep the
// probe partial sums of the tokens they handled.
struct TileProbe {
    double dsum = 0.0, logdecay = 0.0;
    long long kept = 0;
};

template <int kN, bool kWithC>
__device__ __forceinline__ void stage_tile(const Params& p, int64_t hd, int64_t g, int64_t t0, int64_t te,
                                           float a, float bias, float thr, float* sB, float* sC, float* sx,
                                           float* sdt, float* sdA, bool write_delta, TileProbe& pr,
                                           bool probes) {
    const int tid = threadIdx.x, nthr = blockDim.x;
    for (int k = tid; k < kM2Tile * kN; k += nthr) {
        const int i = k / kN, n = k % kN;
        const bool ok = t0 + i < te;
        sB[k] = ok ? p.B[(t0 + i) * p.ldb + g * kN + n] : 0.0f;
        if constexpr (kWithC) sC[k] = ok ? p.C[(t0 + i) * p.ldc + g * kN + n] : 0.0f;
    }
    const int tileP = kM2Tile * static_cast<int>(p.P);
    for (int k = tid; k < tileP; k += nthr) {
        const int i = k / static_cast<int>(p.P), pp = k % static_cast<int>(p.P);
        sx[k] = t0 + i < te ? p.x[(t0 + i) * p.ldx + hd * p.P + pp] : 0.0f;
    }
    if (tid < kM2Tile) {
        const int64_t t = t0 + tid;
        const bool valid = t < te;
        float dt = (valid ? p.delta[t * p.ldd + hd] : 0.0f) + bias;
        if (p.softplus) dt = softplus(dt);
        const bool kept = valid && dt > thr;
        dt = kept ? dt : 0.0f;
        sdt[tid] = dt;
        sdA[tid] = exp2_accurate(dt * a * kLog2e);
        if (valid) {
            if (write_delta && p.delta_out) p.delta_out[t * p.ldo + hd] = dt;
            if (probes) {
                pr.dsum += dt;
                pr.kept += kept ? 1 : 0;
                pr.logdecay += static_cast<double>(dt) * a;  // ln exp(Δ'·A) = Δ'·A
            }
        }
    }
}

// Pass 1: chunks 0..S-2 from a zero state: end state (S, H, P, N) and Σ Δ' (S, H). grid (H, S-1).
template <int kN>
__global__ void __launch_bounds__(kM2MaxThreads)
    m2_chunk_states(Params p, float* __restrict__ local_end, float* __restrict__ dsum_out) {
    extern __shared__ __align__(16) float smem[];
    float* sB = smem;
    float* sx = sB + 2 * kM2Tile * kN;
    float* sdt = sx + kM2Tile * p.P;
    float* sdA = sdt + kM2Tile;
    constexpr int kGroups = kN / 16;  // float4 groups per lane
    const int64_t hd = blockIdx.x, c = blockIdx.y;
    const int64_t g = hd / (p.H / p.G);
    const int64_t tb = c * p.chunk_len, te = min(p.T, tb + p.chunk_len);
    const int pch = threadIdx.x / kM2Lanes, q = threadIdx.x % kM2Lanes;
    const bool active = pch < p.P;
    const float a = p.A[hd];
    const float bias = p.delta_bias ? p.delta_bias[hd] : 0.0f;
    const float thr = p.thr ? p.thr[hd] : -INFINITY;

    float s[4 * kGroups];
#pragma unroll
    for (int k = 0; k < 4 * kGroups; ++k) s[k] = 0.0f;
    TileProbe pr;
    for (int64_t t0 = tb; t0 < te; t0 += kM2Tile) {
        __syncthreads();
        stage_tile<kN, false>(p, hd, g, t0, te, a, bias, thr, sB, nullptr, sx, sdt, sdA, false, pr, true);
        __syncthreads();
#pragma unroll 4
        for (int i = 0; i < kM2Tile; ++i) {
            const float dA = sdA[i];
            const float dtx = active ? sdt[i] * sx[i * p.P + pch] : 0.0f;
            const float4* b4 = reinterpret_cast<const float4*>(sB + i * kN);
#pragma unroll
            for (int j = 0; j < kGroups; ++j) {
                const float4 b = b4[4 * j + q];
                s[4 * j + 0] = dA * s[4 * j + 0] + dtx * b.x;
                s[4 * j + 1] = dA * s[4 * j + 1] + dtx * b.y;
                s[4 * j + 2] = dA * s[4 * j + 2] + dtx * b.z;
                s[4 * j + 3] = dA * s[4 * j + 3] + dtx * b.w;
            }
        }
    }
    if (threadIdx.x < 32) {
        const double total = warp_sum(pr.dsum);
        if (threadIdx.x == 0) dsum_out[c * p.H + hd] = static_cast<float>(total);
    }
    if (!active) return;
    float* out = local_end + ((c * p.H + hd) * p.P + pch) * kN;
#pragma unroll
    for (int j = 0; j < kGroups; ++j)
        reinterpret_cast<float4*>(out + 16 * j + 4 * q)[0] =
            make_float4(s[4 * j], s[4 * j + 1], s[4 * j + 2], s[4 * j + 3]);
}

// Pass 2: one thread per (h, p, n): h_start[0] = s_in, h_start[c+1] = exp(A·ΣΔ'_c)·h_start[c] + end_c.
__global__ void __launch_bounds__(kM2CombineThreads)
    m2_combine(int64_t H, int64_t PN, int64_t chunks, const float* __restrict__ A,
               const float* __restrict__ s_in, const float* __restrict__ local_end,
               const float* __restrict__ dsum, float* __restrict__ h_start) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * kM2CombineThreads + threadIdx.x;  // (h·P + p)·N + n
    if (i >= H * PN) return;
    const int64_t hd = i / PN;
    const float a2 = A[hd] * kLog2e;
    float v = s_in ? s_in[i] : 0.0f;
    for (int64_t c = 0; c < chunks; ++c) {
        h_start[c * H * PN + i] = v;
        if (c + 1 < chunks) v = exp2_accurate(a2 * dsum[c * H + hd]) * v + local_end[c * H * PN + i];
    }
}

// Pass 3 (or the only pass): from the true chunk start state, write y, Δ', the final state and probes.
template <int kN, bool kProbes>
__global__ void __launch_bounds__(kM2MaxThreads)
    m2_scan(Params p, const float* h_start, float* s_final,  // may alias (1 pass)
            ScanProbes probes) {
    extern __shared__ __align__(16) float smem[];
    float* sB = smem;
    float* sC = sB + kM2Tile * kN;
    float* sx = sC + kM2Tile * kN;
    float* sdt = sx + kM2Tile * p.P;
    float* sdA = sdt + kM2Tile;
    constexpr int kGroups = kN / 16;
    const int64_t hd = blockIdx.x, c = blockIdx.y;
    const int64_t g = hd / (p.H / p.G);
    const int64_t tb = c * p.chunk_len, te = min(p.T, tb + p.chunk_len);
    const int pch = threadIdx.x / kM2Lanes, q = threadIdx.x % kM2Lanes;
    const bool active = pch < p.P;
    const float a = p.A[hd];
    const float bias = p.delta_bias ? p.delta_bias[hd] : 0.0f;
    const float thr = p.thr ? p.thr[hd] : -INFINITY;
    const float dskip = p.Dskip ? p.Dskip[hd] : 0.0f;
    grid_dependency_wait();  // PDL (pdl.cuh): A, bias, thr, D above are weights; the rest comes from earlier
                             // kernels

    float s[4 * kGroups];
    if (active && h_start) {
        const float* src = h_start + ((c * p.H + hd) * p.P + pch) * kN;
#pragma unroll
        for (int j = 0; j < kGroups; ++j) {
            const float4 v = reinterpret_cast<const float4*>(src + 16 * j + 4 * q)[0];
            s[4 * j] = v.x, s[4 * j + 1] = v.y, s[4 * j + 2] = v.z, s[4 * j + 3] = v.w;
        }
    } else {
#pragma unroll
        for (int k = 0; k < 4 * kGroups; ++k) s[k] = 0.0f;
    }
    TileProbe pr;
    for (int64_t t0 = tb; t0 < te; t0 += kM2Tile) {
        __syncthreads();
        stage_tile<kN, true>(p, hd, g, t0, te, a, bias, thr, sB, sC, sx, sdt, sdA, true, pr, kProbes);
        __syncthreads();
#pragma unroll 4
        for (int i = 0; i < kM2Tile; ++i) {
            const float dA = sdA[i];
            const float xv = active ? sx[i * p.P + pch] : 0.0f;
            const float dtx = sdt[i] * xv;
            const float4* b4 = reinterpret_cast<const float4*>(sB + i * kN);
            const float4* c4 = reinterpret_cast<const float4*>(sC + i * kN);
            float y = 0.0f;
#pragma unroll
            for (int j = 0; j < kGroups; ++j) {
                const float4 b = b4[4 * j + q], cc = c4[4 * j + q];
                s[4 * j + 0] = dA * s[4 * j + 0] + dtx * b.x;
                s[4 * j + 1] = dA * s[4 * j + 1] + dtx * b.y;
                s[4 * j + 2] = dA * s[4 * j + 2] + dtx * b.z;
                s[4 * j + 3] = dA * s[4 * j + 3] + dtx * b.w;
                y += cc.x * s[4 * j + 0];
                y += cc.y * s[4 * j + 1];
                y += cc.z * s[4 * j + 2];
                y += cc.w * s[4 * j + 3];
            }
            y += __shfl_xor_sync(0xffffffffu, y, 1);
            y += __shfl_xor_sync(0xffffffffu, y, 2);
            if (q == 0 && active && t0 + i < te) p.y[(t0 + i) * p.ldy + hd * p.P + pch] = y + dskip * xv;
        }
    }
    if constexpr (kProbes) {
        if (threadIdx.x < 32) {
            const double dsum = warp_sum(pr.dsum), ld = warp_sum(pr.logdecay);
            double kept = static_cast<double>(pr.kept);
            kept = warp_sum(kept);
            if (threadIdx.x == 0) {
                if (probes.delta_sum) atomicAdd(probes.delta_sum + hd, dsum);
                if (probes.log_decay) atomicAdd(probes.log_decay + hd, ld);
                if (probes.kept)
                    atomicAdd(reinterpret_cast<unsigned long long*>(probes.kept + hd),
                              static_cast<unsigned long long>(kept + 0.5));
            }
        }
    }
    if (!active || !s_final || c + 1 != p.chunks) return;
    float* dst = s_final + (hd * p.P + pch) * kN;
#pragma unroll
    for (int j = 0; j < kGroups; ++j)
        reinterpret_cast<float4*>(dst + 16 * j + 4 * q)[0] =
            make_float4(s[4 * j], s[4 * j + 1], s[4 * j + 2], s[4 * j + 3]);
}

// ---- Register-tiled kernels (default)
// ----------------------------------------------------------------------
//
// Cost per token and head (P channels, N states), fp32:
//   FLOP: the state update s = dA·s + (Δ'x)·B is 3 FLOP (mul + fma), y += C·s is 2: 5·P·N (the bench's
//         "5·T·E·N"). Issued as 3 FP32 instructions per state (FMUL + 2 FFMA) in pass 3 and as 1 FFMA per
//         state (+ 1 FMUL per state per 32-token tile) in the tiled pass 1 (legacy pass 1: FMUL + FFMA).
//   bytes (minimum, HBM): read x (4P) + Δ (4) + B, C (8N, shared by the H/G heads of a group) + write y (4P).
//         mamba2-1.3b (H = 64, P = 64, N = 128, G = 1), per token: 64·(4·64 + 4 + 4·64) + 8·128 ≈ 34 KB for
//         64·5·64·128 = 2.6 MFLOP: ~77 FLOP/B, far above the H200's ~14 FLOP/B (67 TFLOP/s fp32 / 4.8 TB/s),
//         so the scan is compute bound (the chain pass adds 2·chunks·H·P·N·4 B of state traffic, small).
//   Limit: 132 SMs × 128 FP32 lanes × ~1.98 GHz ≈ 33.4 T instr/s. Pass 3: 3·P·N FP32 instructions per (token,
//         head) → 16k tokens × 64 heads ≈ 0.77 ms; with the per-token overheads (Δ'x, 5 shuffles, selects,
//         6 shared loads per thread) ≈ 1.0 ms. Pass 1 (3 of 4 chunks, ~1.1 instr per state) ≈ 0.3 ms.
//         Expected ≈ 1.3–1.8 ms at 16k tokens against the legacy 5.07 ms (≈ 8.5 TFLOP/s), i.e. 25–35 TFLOP/s
//         by the 5·T·E·N count; the FP32 ceiling of this formulation is 5/3 · 33.4 ≈ 56 TFLOP/s.
//
// Layout: a thread owns a tile of kM2PT = 4 channels × kM2NT = 8 states (32 floats of state in registers).
// The L = N / 8 threads that share the same 4 channels are adjacent lanes of one warp (L ∈ {2, 4, 8, 16}
// divides 32); lane r of such a group owns states n = 4·(r + L·j) + e (j < 2, e < 4), so each float4 read of
// B or C by the group is a contiguous, bank-conflict-free run. Per token, a thread reads 2 float4 of B, 2 of
// C, one float4 of x (its 4 channels) and a float2 (exp(Δ'A), Δ') from shared memory and does 96 FP32
// instructions: each B/C value read is used for 4 channels (legacy: for 1). The 4 y partial sums are
// reduce-scattered across the L lanes (L = 16: 2 + 1 + 2 shuffles), after which lanes r ≡ 0 mod L/4 hold
// the full sums of one channel each and write y. Pass 1 needs no per-token state: within a staged tile of
// kM2TT tokens, s_end = exp(A·ΣΔ')·s + Σ_i w_i·x_i·B_i with w_i = Δ'_i·exp(A·Σ_{k>i} Δ'_k), 1 FFMA per state
// and token. Staging is double-buffered with cp.async (tile k+1 copied while tile k is computed); warp 0
// turns the raw Δ of a tile into Δ' (one token per lane) between the two barriers of an iteration.
constexpr int kM2PT = 4;   // channels per thread
constexpr int kM2NT = 8;   // states per thread
constexpr int kM2TT = 32;  // tokens per staged tile (one per lane of warp 0 for Δ')

int m2t_lanes_rt(int64_t N) {
    return static_cast<int>(N / kM2NT);
}

int m2t_block_threads(int64_t P, int64_t N) {
    const int64_t groups = (P + kM2PT - 1) / kM2PT;
    return static_cast<int>((groups * m2t_lanes_rt(N) + 31) / 32 * 32);
}

// x row stride in shared memory: 4 × (channel groups in the block, active or not), zero-padded.
int m2t_xstride(int64_t P, int64_t N) {
    return kM2PT * (m2t_block_threads(P, N) / m2t_lanes_rt(N));
}

// One staging buffer (floats): B, C (tile, N; no C in pass 1), x (tile, xs), raw Δ (tile). Two of them
// (double buffering), then sdd float2 (tile), sw (tile), sdec (4). Every part is a multiple of 4 floats, so
// float4 alignment holds throughout.
__host__ __device__ constexpr int m2t_buf_floats(int N, int xs, bool with_c) {
    return (with_c ? 2 : 1) * kM2TT * N + kM2TT * xs + kM2TT;
}

size_t m2t_smem_bytes(int64_t P, int64_t N, bool with_c) {
    const int buf = m2t_buf_floats(static_cast<int>(N), m2t_xstride(P, N), with_c);
    return static_cast<size_t>(2 * buf + 3 * kM2TT + 4) * sizeof(float);
}

struct M2TBuf {
    float *B, *C, *x, *raw;
};

template <bool kWithC>
__device__ __forceinline__ M2TBuf m2t_buf(float* smem, int N, int xs, int which) {
    constexpr int nbc = kWithC ? 2 : 1;
    float* b = smem + which * m2t_buf_floats(N, xs, kWithC);
    return {b, kWithC ? b + kM2TT * N : nullptr, b + nbc * kM2TT * N, b + nbc * kM2TT * N + kM2TT * xs};
}

// Issues the asynchronous copies of B (and C), x (zero-padded to xs channels) and raw Δ for tokens
// [t0, min(t0 + kM2TT, te)) into `buf`, as one cp.async group; rows past te are zero-filled.
template <int kN, bool kWithC>
__device__ __forceinline__ void m2t_issue(const Params& p, int64_t hd, int64_t g, int64_t t0, int64_t te,
                                          int xs, const M2TBuf& buf) {
    const int tid = threadIdx.x, nthr = blockDim.x;
    const float* Bg = p.B + g * kN;
    const float* Cg = p.C + g * kN;
    for (int k = tid; k < kM2TT * kN; k += nthr) {
        const int i = k / kN, n = k % kN;
        const int64_t t = t0 + i;
        const bool ok = t < te;
        const int64_t ts = ok ? t : t0;  // a mapped address even when nothing is read
        cp_async_f32(buf.B + k, Bg + ts * p.ldb + n, ok);
        if constexpr (kWithC) cp_async_f32(buf.C + k, Cg + ts * p.ldc + n, ok);
    }
    const int P = static_cast<int>(p.P);
    const float* xg = p.x + hd * p.P;
    for (int k = tid; k < kM2TT * xs; k += nthr) {
        const int i = k / xs, pp = k % xs;
        const int64_t t = t0 + i;
        const bool ok = t < te && pp < P;
        cp_async_f32(buf.x + k, ok ? xg + t * p.ldx + pp : xg + t0 * p.ldx, ok);
    }
    if (tid < kM2TT) {
        const int64_t t = t0 + tid;
        const bool ok = t < te;
        cp_async_f32(buf.raw + tid, p.delta + (ok ? t : t0) * p.ldd + hd, ok);
    }
    cp_async_commit();
}

// Warp 0 (whole warp, blockDim ≥ 32), one token per lane, after the tile's copies are visible: Δ' from the
// raw Δ. kWeights (pass 1): sw[i] = Δ'_i·exp(A·Σ_{k>i} Δ'_k), sdec[0] = exp(A·Σ Δ'); otherwise
// sdd[i] = (exp(Δ'_i·A), Δ'_i). Tokens past te get Δ' = 0 (no decay, no input).
template <bool kWeights>
__device__ __forceinline__ void m2t_delta(const Params& p, int64_t hd, int64_t t0, int64_t te, float a,
                                          float bias, float thr, const float* raw, float2* sdd, float* sw,
                                          float* sdec, bool write_delta, TileProbe& pr, bool probes) {
    const int lane = threadIdx.x;
    const int64_t t = t0 + lane;
    const bool valid = t < te;
    float dt = raw[lane] + bias;
    if (p.softplus) dt = softplus(dt);
    const bool kept = valid && dt > thr;
    dt = kept ? dt : 0.0f;
    if constexpr (kWeights) {
        // Inclusive suffix sum of Δ' over the tile's 32 lanes, then the exclusive one (Σ_{k>i}).
        float suf = dt;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const float v = __shfl_down_sync(0xffffffffu, suf, o);
            if (lane + o < 32) suf += v;
        }
        float after = __shfl_down_sync(0xffffffffu, suf, 1);
        if (lane == 31) after = 0.0f;
        const float a2 = a * kLog2e;
        sw[lane] = dt * exp2_accurate(a2 * after);
        if (lane == 0) sdec[0] = exp2_accurate(a2 * suf);
    } else {
        sdd[lane] = make_float2(exp2_accurate(dt * a * kLog2e), dt);
    }
    if (valid) {
        if (write_delta && p.delta_out) p.delta_out[t * p.ldo + hd] = dt;
        if (probes) {
            pr.dsum += dt;
            pr.kept += kept ? 1 : 0;
            pr.logdecay += static_cast<double>(dt) * a;  // ln exp(Δ'·A) = Δ'·A
        }
    }
}

// Pass 1 (tiled): chunks 0..S-2 from a zero state: end state (S, H, P, N) and Σ Δ' (S, H). grid (H, S-1).
template <int kN>
__global__ void __launch_bounds__(kM2MaxThreads)
    m2t_chunk_states(Params p, int xs, float* __restrict__ local_end, float* __restrict__ dsum_out) {
    constexpr int L = kN / kM2NT;  // lanes per channel group
    constexpr int kJ = kM2NT / 4;  // float4 groups per thread
    extern __shared__ __align__(16) float smem[];
    float2* sdd = reinterpret_cast<float2*>(smem + 2 * m2t_buf_floats(kN, xs, false));
    float* sw = reinterpret_cast<float*>(sdd + kM2TT);
    float* sdec = sw + kM2TT;
    const int64_t hd = blockIdx.x, c = blockIdx.y;
    const int64_t g = hd / (p.H / p.G);
    const int64_t tb = c * p.chunk_len, te = min(p.T, tb + p.chunk_len);
    const int r = threadIdx.x % L, cg = threadIdx.x / L, p0 = cg * kM2PT;
    const float a = p.A[hd];
    const float bias = p.delta_bias ? p.delta_bias[hd] : 0.0f;
    const float thr = p.thr ? p.thr[hd] : -INFINITY;

    float s[kM2PT][kM2NT];
#pragma unroll
    for (int k = 0; k < kM2PT; ++k)
#pragma unroll
        for (int n = 0; n < kM2NT; ++n) s[k][n] = 0.0f;
    TileProbe pr;
    // Double-buffered: tile k+1 is copied (cp.async) while tile k is computed. Barrier A: tile k is visible
    // and every thread is done with tile k-1 (its buffer, sw, sdec); barrier B: warp 0's Δ' weights are
    // visible.
    if (tb < te) m2t_issue<kN, false>(p, hd, g, tb, te, xs, m2t_buf<false>(smem, kN, xs, 0));
    int which = 0;
    for (int64_t t0 = tb; t0 < te; t0 += kM2TT, which ^= 1) {
        cp_async_wait_all();
        __syncthreads();  // A
        if (t0 + kM2TT < te)
            m2t_issue<kN, false>(p, hd, g, t0 + kM2TT, te, xs, m2t_buf<false>(smem, kN, xs, which ^ 1));
        const M2TBuf buf = m2t_buf<false>(smem, kN, xs, which);
        if (threadIdx.x < 32)
            m2t_delta<true>(p, hd, t0, te, a, bias, thr, buf.raw, sdd, sw, sdec, false, pr, true);
        __syncthreads();  // B
        const float4* sB4 = reinterpret_cast<const float4*>(buf.B);
        const float4* sx4 = reinterpret_cast<const float4*>(buf.x);
        const float dec = sdec[0];
#pragma unroll
        for (int k = 0; k < kM2PT; ++k)
#pragma unroll
            for (int n = 0; n < kM2NT; ++n) s[k][n] *= dec;
#pragma unroll 4
        for (int i = 0; i < kM2TT; ++i) {
            const float w = sw[i];
            const float4 xv = sx4[i * (xs / 4) + cg];
            const float u[kM2PT] = {w * xv.x, w * xv.y, w * xv.z, w * xv.w};
#pragma unroll
            for (int j = 0; j < kJ; ++j) {
                const float4 b = sB4[i * (kN / 4) + r + L * j];
#pragma unroll
                for (int k = 0; k < kM2PT; ++k) {
                    s[k][4 * j + 0] = fmaf(u[k], b.x, s[k][4 * j + 0]);
                    s[k][4 * j + 1] = fmaf(u[k], b.y, s[k][4 * j + 1]);
                    s[k][4 * j + 2] = fmaf(u[k], b.z, s[k][4 * j + 2]);
                    s[k][4 * j + 3] = fmaf(u[k], b.w, s[k][4 * j + 3]);
                }
            }
        }
    }
    if (threadIdx.x < 32) {
        const double total = warp_sum(pr.dsum);
        if (threadIdx.x == 0) dsum_out[c * p.H + hd] = static_cast<float>(total);
    }
#pragma unroll
    for (int k = 0; k < kM2PT; ++k) {
        if (p0 + k >= p.P) break;
        float* out = local_end + ((c * p.H + hd) * p.P + p0 + k) * kN;
#pragma unroll
        for (int j = 0; j < kJ; ++j)
            reinterpret_cast<float4*>(out)[r + L * j] =
                make_float4(s[k][4 * j], s[k][4 * j + 1], s[k][4 * j + 2], s[k][4 * j + 3]);
    }
}

// Pass 3 (tiled, or the only pass): from the true chunk start state, write y, Δ', the final state and probes.
template <int kN, bool kProbes>
__global__ void __launch_bounds__(kM2MaxThreads)
    m2t_scan(Params p, int xs, const float* h_start, float* s_final,  // may alias (1 pass)
             ScanProbes probes) {
    constexpr int L = kN / kM2NT;  // lanes per channel group
    constexpr int kJ = kM2NT / 4;
    extern __shared__ __align__(16) float smem[];
    float2* sdd = reinterpret_cast<float2*>(smem + 2 * m2t_buf_floats(kN, xs, true));
    float* sw = reinterpret_cast<float*>(sdd + kM2TT);
    float* sdec = sw + kM2TT;
    const int64_t hd = blockIdx.x, c = blockIdx.y;
    const int64_t g = hd / (p.H / p.G);
    const int64_t tb = c * p.chunk_len, te = min(p.T, tb + p.chunk_len);
    const int r = threadIdx.x % L, cg = threadIdx.x / L, p0 = cg * kM2PT;
    const float a = p.A[hd];
    const float bias = p.delta_bias ? p.delta_bias[hd] : 0.0f;
    const float thr = p.thr ? p.thr[hd] : -INFINITY;
    const float dskip = p.Dskip ? p.Dskip[hd] : 0.0f;
    grid_dependency_wait();  // PDL (pdl.cuh): A, bias, thr, D above are weights; the rest comes from earlier
                             // kernels

    float s[kM2PT][kM2NT];
#pragma unroll
    for (int k = 0; k < kM2PT; ++k) {
        const bool load = h_start && p0 + k < p.P;
        const float4* src =
            load ? reinterpret_cast<const float4*>(h_start + ((c * p.H + hd) * p.P + p0 + k) * kN) : nullptr;
#pragma unroll
        for (int j = 0; j < kJ; ++j) {
            const float4 v = load ? src[r + L * j] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            s[k][4 * j] = v.x, s[k][4 * j + 1] = v.y, s[k][4 * j + 2] = v.z, s[k][4 * j + 3] = v.w;
        }
    }
    // After the reduce-scatter lane r holds channel kk (L ≥ 4) or channels 2·kk2, 2·kk2 + 1 (L = 2).
    const bool hi1 = (r & (L / 2)) != 0;
    const bool hi2 = L >= 4 && (r & (L >= 4 ? L / 4 : 1)) != 0;
    const int kk = (hi1 ? 2 : 0) + (hi2 ? 1 : 0);
    const bool writer = L >= 4 ? (r % (L >= 4 ? L / 4 : 1)) == 0 : true;
    float* yrow = p.y + hd * p.P;
    TileProbe pr;
    // Double-buffered like pass 1; barrier B publishes warp 0's (exp(Δ'A), Δ') per token.
    if (tb < te) m2t_issue<kN, true>(p, hd, g, tb, te, xs, m2t_buf<true>(smem, kN, xs, 0));
    int which = 0;
    for (int64_t t0 = tb; t0 < te; t0 += kM2TT, which ^= 1) {
        cp_async_wait_all();
        __syncthreads();  // A
        if (t0 + kM2TT < te)
            m2t_issue<kN, true>(p, hd, g, t0 + kM2TT, te, xs, m2t_buf<true>(smem, kN, xs, which ^ 1));
        const M2TBuf buf = m2t_buf<true>(smem, kN, xs, which);
        if (threadIdx.x < 32)
            m2t_delta<false>(p, hd, t0, te, a, bias, thr, buf.raw, sdd, sw, sdec, true, pr, kProbes);
        __syncthreads();  // B
        const float4* sB4 = reinterpret_cast<const float4*>(buf.B);
        const float4* sC4 = reinterpret_cast<const float4*>(buf.C);
        const float4* sx4 = reinterpret_cast<const float4*>(buf.x);
        const int nt = static_cast<int>(min(static_cast<int64_t>(kM2TT), te - t0));
#pragma unroll 2
        for (int i = 0; i < kM2TT; ++i) {
            const float2 dd = sdd[i];
            const float dA = dd.x;
            const float4 xv = sx4[i * (xs / 4) + cg];
            const float dtx[kM2PT] = {dd.y * xv.x, dd.y * xv.y, dd.y * xv.z, dd.y * xv.w};
            float y[kM2PT] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int j = 0; j < kJ; ++j) {
                const float4 b = sB4[i * (kN / 4) + r + L * j];
                const float4 cc = sC4[i * (kN / 4) + r + L * j];
#pragma unroll
                for (int k = 0; k < kM2PT; ++k) {
                    s[k][4 * j + 0] = dA * s[k][4 * j + 0] + dtx[k] * b.x;
                    s[k][4 * j + 1] = dA * s[k][4 * j + 1] + dtx[k] * b.y;
                    s[k][4 * j + 2] = dA * s[k][4 * j + 2] + dtx[k] * b.z;
                    s[k][4 * j + 3] = dA * s[k][4 * j + 3] + dtx[k] * b.w;
                    y[k] = fmaf(cc.x, s[k][4 * j + 0], y[k]);
                    y[k] = fmaf(cc.y, s[k][4 * j + 1], y[k]);
                    y[k] = fmaf(cc.z, s[k][4 * j + 2], y[k]);
                    y[k] = fmaf(cc.w, s[k][4 * j + 3], y[k]);
                }
            }
            // Reduce-scatter the 4 partial sums over the L lanes of the channel group.
            float k0 = hi1 ? y[2] : y[0], k1 = hi1 ? y[3] : y[1];
            const float o0 = hi1 ? y[0] : y[2], o1 = hi1 ? y[1] : y[3];
            k0 += __shfl_xor_sync(0xffffffffu, o0, L / 2);
            k1 += __shfl_xor_sync(0xffffffffu, o1, L / 2);
            const bool tok = i < nt;
            if constexpr (L >= 4) {
                float v = hi2 ? k1 : k0;
                v += __shfl_xor_sync(0xffffffffu, hi2 ? k0 : k1, L / 4);
#pragma unroll
                for (int o = L / 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
                const float xk = hi1 ? (hi2 ? xv.w : xv.z) : (hi2 ? xv.y : xv.x);
                if (writer && tok && p0 + kk < p.P) yrow[(t0 + i) * p.ldy + p0 + kk] = v + dskip * xk;
            } else {
                const int pa = p0 + (hi1 ? 2 : 0);
                float* yt = yrow + (t0 + i) * p.ldy;
                if (tok && pa < p.P) yt[pa] = k0 + dskip * (hi1 ? xv.z : xv.x);
                if (tok && pa + 1 < p.P) yt[pa + 1] = k1 + dskip * (hi1 ? xv.w : xv.y);
            }
        }
    }
    if constexpr (kProbes) {
        if (threadIdx.x < 32) {
            const double dsum = warp_sum(pr.dsum), ld = warp_sum(pr.logdecay);
            double kept = static_cast<double>(pr.kept);
            kept = warp_sum(kept);
            if (threadIdx.x == 0) {
                if (probes.delta_sum) atomicAdd(probes.delta_sum + hd, dsum);
                if (probes.log_decay) atomicAdd(probes.log_decay + hd, ld);
                if (probes.kept)
                    atomicAdd(reinterpret_cast<unsigned long long*>(probes.kept + hd),
                              static_cast<unsigned long long>(kept + 0.5));
            }
        }
    }
    if (!s_final || c + 1 != p.chunks) return;
#pragma unroll
    for (int k = 0; k < kM2PT; ++k) {
        if (p0 + k >= p.P) break;
        float4* dst = reinterpret_cast<float4*>(s_final + (hd * p.P + p0 + k) * kN);
#pragma unroll
        for (int j = 0; j < kJ; ++j)
            dst[r + L * j] = make_float4(s[k][4 * j], s[k][4 * j + 1], s[k][4 * j + 2], s[k][4 * j + 3]);
    }
}

// Kernel pointers for one d_state.
struct M2Kernels {
    void (*pass1)(Params, float*, float*);
    void (*pass3_plain)(Params, const float*, float*, ScanProbes);
    void (*pass3_probes)(Params, const float*, float*, ScanProbes);
};

template <int kN>
M2Kernels kernels_for() {
    return {m2_chunk_states<kN>, m2_scan<kN, false>, m2_scan<kN, true>};
}

M2Kernels pick_kernels(int64_t N) {
    switch (N) {
        case 16:
            return kernels_for<16>();
        case 32:
            return kernels_for<32>();
        case 64:
            return kernels_for<64>();
        case 128:
            return kernels_for<128>();
        default:
            throw Error("scan_mamba2 (CUDA): d_state " + std::to_string(N) + " is not supported",
                        "d_state 16, 32, 64 or 128 are built; use the CPU backend for this model");
    }
}

// Tiled kernel pointers for one d_state.
struct M2TKernels {
    void (*pass1)(Params, int, float*, float*);
    void (*pass3_plain)(Params, int, const float*, float*, ScanProbes);
    void (*pass3_probes)(Params, int, const float*, float*, ScanProbes);
};

template <int kN>
M2TKernels tiled_kernels_for() {
    return {m2t_chunk_states<kN>, m2t_scan<kN, false>, m2t_scan<kN, true>};
}

M2TKernels pick_tiled_kernels(int64_t N) {
    switch (N) {
        case 16:
            return tiled_kernels_for<16>();
        case 32:
            return tiled_kernels_for<32>();
        case 64:
            return tiled_kernels_for<64>();
        case 128:
            return tiled_kernels_for<128>();
        default:
            throw Error("scan_mamba2 (CUDA): d_state " + std::to_string(N) + " is not supported",
                        "d_state 16, 32, 64 or 128 are built; use the CPU backend for this model");
    }
}

// MAMBASCOPE_M2_SCAN=legacy selects the pre-tiling kernels (4 lanes per channel), for A/B runs.
bool use_legacy() {
    return env_choice("MAMBASCOPE_M2_SCAN", {"", "legacy"},
                      "it selects the pre-tiling recurrent Mamba-2 kernels (docs/cuda.md, \"The Mamba-2 "
                      "scan\")") == "legacy";
}

// Launch shape of the selected variant; opts the tiled kernels into > 48 KiB of dynamic shared memory
// (N = 128 with P > 96).
struct M2Launch {
    bool legacy = false;
    M2Kernels k{};
    M2TKernels t{};
    int threads = 0, xs = 0, tile = kM2Tile;
    size_t smem = 0, smem1 = 0;  // pass 3, pass 1
};

M2Launch m2_launch(int64_t P, int64_t N) {
    M2Launch l;
    l.legacy = use_legacy();
    if (l.legacy) {
        l.k = pick_kernels(N);
        l.threads = block_threads(P);
        l.smem = l.smem1 = smem_bytes(P, N);
        return l;
    }
    l.t = pick_tiled_kernels(N);
    l.threads = m2t_block_threads(P, N);
    l.xs = m2t_xstride(P, N);
    l.tile = kM2TT;
    l.smem = m2t_smem_bytes(P, N, true);
    l.smem1 = m2t_smem_bytes(P, N, false);
    // Double buffering needs up to 99 KB (pass 3, N = 128, P = 128): opt in above the default 48 KiB.
    auto allow = [](const void* fn, size_t bytes) {
        if (bytes > 48 * 1024)
            CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(bytes)));
    };
    allow(reinterpret_cast<const void*>(l.t.pass1), l.smem1);
    allow(reinterpret_cast<const void*>(l.t.pass3_plain), l.smem);
    allow(reinterpret_cast<const void*>(l.t.pass3_probes), l.smem);
    return l;
}

size_t workspace_for(const ScanPlan& plan, int64_t H, int64_t P, int64_t N) {
    if (plan.chunks <= 1) return 0;
    auto round = [](size_t b) { return (b + 255) / 256 * 256; };
    const size_t states = static_cast<size_t>(plan.chunks) * H * P * N * sizeof(float);
    return 2 * round(states) + round(static_cast<size_t>(plan.chunks) * H * sizeof(float));
}

}  // namespace

ScanPlan scan_mamba2_plan(int64_t T, int64_t H, int64_t P, int64_t N, int64_t chunk_len) {
    ScanPlan plan;
    if (T <= 0 || H <= 0) return plan;
    int64_t len = chunk_len;
    if (len <= 0) {
        // Enough (head, chunk) blocks for one full wave.
        int dev = 0, sms = 0, per_sm = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        const M2Launch l = m2_launch(P, N);
        if (l.legacy)
            CUDA_CHECK(
                cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, l.k.pass3_probes, l.threads, l.smem));
        else
            CUDA_CHECK(
                cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, l.t.pass3_probes, l.threads, l.smem));
        const int64_t resident = static_cast<int64_t>(sms) * std::max(1, per_sm);
        const int64_t want_chunks = std::max<int64_t>(1, resident / H);
        len = std::max<int64_t>(kM2MinChunk, (T + want_chunks - 1) / want_chunks);
        len = (len + l.tile - 1) / l.tile * l.tile;
    }
    // A given chunk_len is rounded to 16 tokens only (the tiled kernels handle a partial last tile per
    // chunk).
    len = (len + kM2Tile - 1) / kM2Tile * kM2Tile;
    if (len >= T) len = T;
    plan.chunk_len = len;
    plan.chunks = (T + len - 1) / len;
    return plan;
}

size_t scan_mamba2_workspace_bytes(int64_t T, int64_t H, int64_t P, int64_t N, int64_t chunk_len) {
    return workspace_for(scan_mamba2_plan(T, H, P, N, chunk_len), H, P, N);
}

void scan_mamba2(const Mamba2ScanArgs& a, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
    MS_CHECK(a.T >= 0 && a.H >= 0 && a.P > 0 && a.G > 0 && a.N > 0, "scan_mamba2: bad sizes");
    if (a.T == 0 || a.H == 0) return;
    const M2Launch l = m2_launch(a.P, a.N);  // throws on an unsupported d_state
    MS_CHECK(a.P <= kM2MaxP, "scan_mamba2: headdim P > 128 is not supported");
    MS_CHECK(a.H % a.G == 0, "scan_mamba2: groups G must divide heads H");
    MS_CHECK(a.x && a.delta && a.A && a.B && a.C && a.y, "scan_mamba2: x, delta, A, B, C and y are required");
    MS_CHECK(!a.x16 && !a.delta16 && !a.B16 && !a.C16 && !a.y16,
             "scan_mamba2: bf16 inputs and outputs are taken by the chunked scan (scan_mamba2_ssd) only");
    MS_CHECK(a.ldx >= a.H * a.P && a.ldy >= a.H * a.P, "scan_mamba2: x/y row stride is smaller than H·P");
    MS_CHECK(a.ldd >= a.H && (!a.delta_out || a.ldo >= a.H),
             "scan_mamba2: delta row stride is smaller than H");
    MS_CHECK(a.ldb >= a.G * a.N && a.ldc >= a.G * a.N, "scan_mamba2: B/C row stride is smaller than G·N");
    MS_CHECK(a.H <= 65535, "scan_mamba2: too many heads");
    MS_CHECK(reinterpret_cast<uintptr_t>(a.s) % 16 == 0, "scan_mamba2: s must be 16-byte aligned");

    const ScanPlan plan = scan_mamba2_plan(a.T, a.H, a.P, a.N, a.chunk_len);
    MS_CHECK(plan.chunks <= 65535, "scan_mamba2: too many time chunks (raise chunk_len)");
    Params p{};
    p.T = a.T, p.H = a.H, p.P = a.P, p.G = a.G, p.N = a.N, p.chunk_len = plan.chunk_len,
    p.chunks = plan.chunks;
    p.x = a.x, p.ldx = a.ldx, p.delta = a.delta, p.ldd = a.ldd;
    p.delta_bias = a.delta_bias, p.softplus = a.delta_softplus ? 1 : 0;
    p.A = a.A, p.B = a.B, p.ldb = a.ldb, p.C = a.C, p.ldc = a.ldc, p.Dskip = a.Dskip, p.thr = a.thr;
    p.y = a.y, p.ldy = a.ldy, p.delta_out = a.delta_out, p.ldo = a.ldo;

    const int threads = l.threads;
    const size_t smem = l.smem;
    const float* h_start = a.s;
    void* owned = nullptr;
    if (plan.chunks > 1) {
        const size_t need = workspace_for(plan, a.H, a.P, a.N);
        if (!workspace) {
            CUDA_CHECK(cudaMallocAsync(&owned, need, stream));
            workspace = owned;
        } else {
            MS_CHECK(workspace_bytes >= need, "scan_mamba2: workspace too small");
        }
        auto round = [](size_t b) { return (b + 255) / 256 * 256; };
        const size_t states = round(static_cast<size_t>(plan.chunks) * a.H * a.P * a.N * sizeof(float));
        float* local_end = static_cast<float*>(workspace);
        float* hs = reinterpret_cast<float*>(static_cast<char*>(workspace) + states);
        float* dsum = reinterpret_cast<float*>(static_cast<char*>(workspace) + 2 * states);
        const dim3 grid1(static_cast<unsigned>(a.H), static_cast<unsigned>(plan.chunks - 1));
        if (l.legacy)
            l.k.pass1<<<grid1, threads, smem, stream>>>(p, local_end, dsum);
        else
            l.t.pass1<<<grid1, threads, l.smem1, stream>>>(p, l.xs, local_end, dsum);
        CUDA_CHECK(cudaGetLastError());
        const int64_t PN = a.P * a.N;
        m2_combine<<<static_cast<unsigned>((a.H * PN + kM2CombineThreads - 1) / kM2CombineThreads),
                     kM2CombineThreads, 0, stream>>>(a.H, PN, plan.chunks, a.A, a.s, local_end, dsum, hs);
        CUDA_CHECK(cudaGetLastError());
        h_start = hs;
    }
    const dim3 grid(static_cast<unsigned>(a.H), static_cast<unsigned>(plan.chunks));
    if (l.legacy) {
        const auto pass3 = a.probes.any() ? l.k.pass3_probes : l.k.pass3_plain;
        pdl_register(pass3);
        pass3<<<grid, threads, smem, stream>>>(p, h_start, a.s, a.probes);
    } else {
        const auto pass3 = a.probes.any() ? l.t.pass3_probes : l.t.pass3_plain;
        pdl_register(pass3);
        pass3<<<grid, threads, smem, stream>>>(p, l.xs, h_start, a.s, a.probes);
    }
    CUDA_CHECK(cudaGetLastError());
    if (owned) CUDA_CHECK(cudaFreeAsync(owned, stream));
}

}  // namespace mambascope::kernels::cuda
