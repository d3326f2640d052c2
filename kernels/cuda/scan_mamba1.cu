// Fused Mamba-1 selective scan with LongMamba filter and probes; see scan_mamba1.cuh for the design.
//
//   Δ'[t,d] = Δ[t,d] > thr[d] ? Δ[t,d] : 0                       (Δ = softplus(dt + bias) when fused)
//   h[d,n]  = exp(Δ'·A[d,n])·h[d,n] + Δ'·B[t,n]·x[t,d]           (method doc §1.2)
//   y[t,d]  = (Σ_n C[t,n]·h[d,n] + D[d]·x[t,d]) · silu(z[t,d])
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "cuda/cuda_check.cuh"
#include "cuda/device_math.cuh"
#include "cuda/m1_step.cuh"
#include "cuda/pdl.cuh"
#include "cuda/scan_mamba1.cuh"
#include "mambascope/env_switch.h"

namespace mambascope::kernels::cuda {
namespace {

using namespace detail;

constexpr int kM1N = 16;         // d_state of every Mamba-1 checkpoint; the states live in registers
constexpr int kM1Threads = 128;  // channels per block: one thread per channel of one time chunk
constexpr int kM1Tile = 8;       // tokens whose B/C rows are staged in shared memory at a time
// Shortest time chunk of the automatic plan. 48 since the eighteenth stop (docs/benchmarks.md): at 1536 × 2k
// tokens 43 chunks of 48 fill one wave where 32 of 64 left a quarter of it idle; the H100 sweep measured
// 0.0635 / 0.0615 ms (float32 / bf16) at 48 against 0.0696 / 0.0679 at 64, 0.0705 / 0.0647 at 32.
constexpr int64_t kM1MinChunk = 48;
// States per token whose exp pass 1 (fast exp) takes on the FMA pipe (exp2_soft) instead of the MUFU. 0: the
// H200 measured 2 within the spread (median +0.7%), 3 and 4 slower at every shape (medians +2.5%, +5.3%),
// nineteenth stop (docs/cuda.md, "Soft exp"); MAMBASCOPE_M1_SOFT_EXP sets 2 or 4 per call for A/B runs.
constexpr int kM1SoftExp = 0;
constexpr int kM1MinBlocksPass1 = 4;  // resident blocks per SM asked of the register allocator (≤ 128 regs)
constexpr int kM1MinBlocksPass3 = 4;  // pass 3 holds C and z too: 128 regs, no spills
constexpr int kCombineThreads = 256;
constexpr int64_t kM1LowRankDtMaxT =
    64;  // the fused dt_proj (a single pass, R MACs per token) is for short inputs

// In = float, or __nv_bfloat16 for the bf16-input scan (x, Δ, z, B, C; everything else float32).
template <typename In>
struct Params {
    int64_t T, E, chunk_len, chunks;
    const In* x;
    int64_t ldx;
    const In* delta;
    int64_t ldd;
    const float* delta_bias;
    int softplus;
    const float* A;
    const In* B;
    int64_t ldb;
    const In* C;
    int64_t ldc;
    const float* Dskip;
    const In* z;
    int64_t ldz;
    const float* thr;
    float* y;
    __nv_bfloat16* y16;
    int64_t ldy;
    int64_t y_row_bytes;  // ldy · sizeof(element of y or y16): the step of m1_scan's output address per token
    float* delta_out;
    int64_t ldo;
    const float* dt_w;  // dt_proj weight (E, dt_rank) when Δ is computed from its low-rank input, else null
    int64_t dt_rank;
    float* dp;  // Δ' once (T, E), stride ldp, or null: pass 1 writes Δ' there, pass 3 reads it (kDtIn)
    int64_t ldp;
    bool ring;  // inputs through the cp.async ring (M1Ring; scan_mamba1_ring decides)
};

// One input element as float32 (bf16 → float32 is exact).
__device__ __forceinline__ float load_f32(const float* p) {
    return *p;
}
__device__ __forceinline__ float load_f32(const __nv_bfloat16* p) {
    return bf16_to_f32(p);
}

// Raw dt[t,d] = Σ_r low[t,r]·W[d,r] (dt_proj fused, decode steps): low = p.delta (T, R) with stride ldd.
template <typename In>
__device__ __forceinline__ float lowrank_dt(const Params<In>& p, int64_t t, int64_t d) {
    const In* low = p.delta + t * p.ldd;
    const float* w = p.dt_w + d * p.dt_rank;
    float acc = 0.0f;
    for (int64_t r = 0; r < p.dt_rank; ++r) acc = fmaf(load_f32(low + r), w[r], acc);
    return acc;
}

// ---- inputs through a cp.async ring ----
// With per-thread loads, each 8-token tile began with 2-byte global loads of x, Δ and z and a staging of B
// and C that the tile then waited for: on the H200 the passes issued an instruction on 52-56% of cycles, with
// waits on L1TEX the largest stall (36% of m1_scan's; ncu, mamba-130m bf16 prefill, sixth stop). With inputs
// whose rows allow 16-byte copies, a tile's x, Δ, z, B and C are copied kM1Stages − 1 tiles ahead into a
// shared-memory ring with cp.async; a tile then reads them from shared memory. Per thread and tile: 16-byte
// copies of x, Δ, z (8 bf16 or 4 float32 channels of one token row each: one per thread for bf16, two for
// float32), and for the first threads one of B or C. The arithmetic is unchanged (the same values, the same
// order). bf16 since the sixth stop; float32 since 2026-12-05 (seventeenth stop), where the per-thread 4-byte
// loads waited the same way (docs/benchmarks.md).
constexpr int kM1Stages = 3;
// Dt: the type of the staged Δ: In (raw Δ or dt), or float for Δ' written by pass 1 (pass 3 with kDtIn).
template <typename T, typename Dt = T>
struct M1Ring {
    static constexpr int kElems = 16 / static_cast<int>(sizeof(T));       // elements per 16-byte copy: 8 or 4
    static constexpr int kRowPieces = kM1Threads / kElems;                // copies per token row of the block
    static constexpr int kPerThread = kM1Tile * kRowPieces / kM1Threads;  // x (Δ, z) copies per thread
    static constexpr int kBCPieces = kM1Tile * (kM1N / kElems);           // copies per tile of B (or C)
    static constexpr int kDtElems = 16 / static_cast<int>(sizeof(Dt));
    static constexpr int kDtRowPieces = kM1Threads / kDtElems;
    static constexpr int kDtPerThread = kM1Tile * kDtRowPieces / kM1Threads;
    static_assert(kPerThread * kM1Threads == kM1Tile * kRowPieces && 2 * kBCPieces <= kM1Threads);
    static_assert(kDtPerThread * kM1Threads == kM1Tile * kDtRowPieces);
    T x[kM1Stages][kM1Tile][kM1Threads];
    Dt dt[kM1Stages][kM1Tile][kM1Threads];
    T z[kM1Stages][kM1Tile][kM1Threads];
    T b[kM1Stages][kM1Tile][kM1N];
    T c[kM1Stages][kM1Tile][kM1N];
};  // 19.5 KB (bf16), 39 KB (float32); bf16 with float32 Δ' 25.5 KB
struct M1NoRing {};
template <typename In, bool kDtIn>
using M1RingFor = M1Ring<In, std::conditional_t<kDtIn, float, In>>;

// Which copies one m1_ring_issue makes: all of the tile's, committed as one group; all but Δ' (uncommitted:
// pass 3 with Δ' once issues these before its programmatic wait); Δ' alone, then the commit (after the wait).
enum class RingPart { kAll, kNoDt, kDtOnly };

// Copies tile [t0, t0 + kM1Tile) of the block's channels d0.. into ring stage st (zeros past te or E) and
// commits one cp.async group (also when there is nothing to copy: the waits count groups). kZC: z and C too
// (pass 3). kDtIn: Δ' (float32) from p.dp instead of Δ from p.delta. kPart: see RingPart; a kNoDt issue of a
// stage is followed by its kDtOnly issue before any wait, so that each stage's copies complete in or before
// its own group (the first group then holds the later stages' x, z, B, C too).
template <bool kZC, bool kDtIn = false, RingPart kPart = RingPart::kAll, typename In>
__device__ __forceinline__ void m1_ring_issue(const Params<In>& p, M1RingFor<In, kDtIn>& r, int st,
                                              int64_t t0, int64_t te, int64_t d0) {
    using R = M1RingFor<In, kDtIn>;
    static_assert(kDtIn || kPart == RingPart::kAll, "only Δ' (pass 1's output) is issued apart");
    if (t0 < te && kDtIn && kPart != RingPart::kNoDt) {  // Δ' from pass 1 (kAll or kDtOnly)
        const int tid = threadIdx.x;
#pragma unroll
        for (int j = 0; j < R::kDtPerThread; ++j) {
            const int piece = tid + j * kM1Threads, i = piece / R::kDtRowPieces, q = piece % R::kDtRowPieces;
            const int64_t t = t0 + i, dc = d0 + R::kDtElems * q;
            const bool ok = t < te && dc < p.E;
            cp_async_16(&r.dt[st][i][R::kDtElems * q], ok ? p.dp + t * p.ldp + dc : p.dp, ok);
        }
    }
    if (t0 < te && kPart != RingPart::kDtOnly) {
        const int tid = threadIdx.x;
#pragma unroll
        for (int j = 0; j < R::kPerThread; ++j) {
            const int piece = tid + j * kM1Threads, i = piece / R::kRowPieces, q = piece % R::kRowPieces;
            const int64_t t = t0 + i, dc = d0 + R::kElems * q;
            const bool ok = t < te && dc < p.E;
            cp_async_16(&r.x[st][i][R::kElems * q], ok ? p.x + t * p.ldx + dc : p.x, ok);
            if constexpr (!kDtIn)
                cp_async_16(&r.dt[st][i][R::kElems * q], ok ? p.delta + t * p.ldd + dc : p.delta, ok);
            if (kZC && p.z) cp_async_16(&r.z[st][i][R::kElems * q], ok ? p.z + t * p.ldz + dc : p.z, ok);
        }
        constexpr int kRowBC = kM1N / R::kElems;  // copies per row of B (or C)
        if (tid < R::kBCPieces) {
            const int bi = tid / kRowBC, bq = tid % kRowBC;
            const bool okb = t0 + bi < te;
            cp_async_16(&r.b[st][bi][R::kElems * bq], okb ? p.B + (t0 + bi) * p.ldb + R::kElems * bq : p.B,
                        okb);
        } else if (kZC && tid < 2 * R::kBCPieces) {
            const int ci = (tid - R::kBCPieces) / kRowBC, cq = (tid - R::kBCPieces) % kRowBC;
            const bool okc = t0 + ci < te;
            cp_async_16(&r.c[st][ci][R::kElems * cq], okc ? p.C + (t0 + ci) * p.ldc + R::kElems * cq : p.C,
                        okc);
        }
    }
    if constexpr (kPart != RingPart::kNoDt) cp_async_commit();
}

// Tile k (tokens from t0) out of ring stage st = k % kM1Stages (the caller's counter: a 64-bit remainder
// by 3 costs about 20 instructions per tile), for both passes: the tile's B (and, kZC, C) into
// shared memory as float32, and (kRegs, the register tiles) x and Δ (and, kZC, z) of this thread's channel
// into registers; lean tiles leave them in the stage, read per token by the caller (docs/cuda.md, "Lean
// tiles"). First it waits for the stage's copies and for every thread to be done with tile k − 1 (its sB,
// sC and ring stage), then issues tile k + kM1Stages − 1 into that freed stage.
template <bool kZC, bool kDtIn = false, bool kRegs = true, typename In>
__device__ __forceinline__ void m1_ring_take(const Params<In>& p, M1RingFor<In, kDtIn>& r, int st, int64_t t0,
                                             int64_t te, int64_t d0, float (*sB)[kM1N], float (*sC)[kM1N],
                                             float* xr = nullptr, float* dr = nullptr, float* zr = nullptr,
                                             bool gate = false) {
    static_assert(kM1Stages == 3, "the stage arithmetic below");
    cp_async_wait_group<kM1Stages - 2>();
    __syncthreads();
    m1_ring_issue<kZC, kDtIn>(p, r, st == 0 ? kM1Stages - 1 : st - 1, t0 + (kM1Stages - 1) * kM1Tile, te, d0);
    if constexpr (kRegs) {
#pragma unroll
        for (int i = 0; i < kM1Tile; ++i) {
            xr[i] = load_f32(&r.x[st][i][threadIdx.x]);
            dr[i] = load_f32(&r.dt[st][i][threadIdx.x]);
            if constexpr (kZC) zr[i] = gate ? load_f32(&r.z[st][i][threadIdx.x]) : 0.0f;
        }
    }
    // One B (and C) value per thread and tile: no loop (a strided loop over threadIdx.x compiled to a 4-way
    // unrolled loop with its remainder, ≈ 30 instructions per tile for one iteration). Flat indices: with
    // [e / kM1N][e % kM1N] ptxas spilled 8 bytes in the float32 lean pass 3 (docs/benchmarks.md, 29th stop).
    static_assert(kM1Tile * kM1N == kM1Threads, "the tile's B and C have one value per thread");
    const int e = threadIdx.x;  // element e of the tile's [kM1Tile][kM1N] rows, row-major
    (&sB[0][0])[e] = load_f32(&r.b[st][0][0] + e);
    if constexpr (kZC) (&sC[0][0])[e] = load_f32(&r.c[st][0][0] + e);
}

// One channel's probes over one chunk (scan_probes.cuh), in the order both passes take them: per token
// token() after the state update (esum = Σ_n 2^(Δ'·A2_n), summed as (e0 + e1) + (e2 + e3) per group of 4),
// end_tile() after each tile, add_to() once at the end. So pass 1 and pass 3 give the same sums bit for bit.
// The log-decay probe multiplies each token's mean decay into `prod` and takes one log per tile (or when the
// product gets small), instead of one log per token: same float rounding per token, a fraction of the MUFU
// and FMA work.
struct M1Probes {
    double dsum = 0.0, logdecay = 0.0;
    long long kept = 0;
    float tile_dsum = 0.0f, prod = 1.0f;
    // prod ≥ this before a multiply by a mean > 1e-30 stays normal.
    static constexpr float kProdFlush = 1e-7f;

    __device__ __forceinline__ void token(float dt, bool kept_token, float esum, const float (&A2)[kM1N],
                                          float a2max) {
        tile_dsum += dt;
        kept += kept_token ? 1 : 0;
        // ln(mean_n 2^(Δ'·A2_n)); when every term underflows, shift by the slowest state first.
        const float mean = esum * (1.0f / kM1N);
        if (mean > 1e-30f) {
            if (prod < kProdFlush) {
                logdecay += static_cast<double>(ln_near1(prod));
                prod = 1.0f;
            }
            prod *= mean;
        } else {
            // Each op rounded on its own (__f*_rn: never contracted into an FMA), so that both passes'
            // kernels, compiled around different code, give the same sums bit for bit. The only products of
            // the probes that feed an add are here; with plain ops, pass 1 (Δ' once) and pass 3 gave
            // log-decay sums 1e-7 apart on an H100 in the channels that take this branch (twenty-second
            // stop).
            const float shift = __fmul_rn(dt, a2max);
            float s = 0.0f;
#pragma unroll
            for (int n = 0; n < kM1N; ++n)
                s = __fadd_rn(s, ex2_approx(__fsub_rn(__fmul_rn(dt, A2[n]), shift)));
            logdecay +=
                static_cast<double>(__fmul_rn(__fadd_rn(shift, lg2_approx(__fmul_rn(s, 1.0f / kM1N))), kLn2));
        }
    }
    __device__ __forceinline__ void end_tile() {
        dsum += tile_dsum;
        tile_dsum = 0.0f;
        if (prod != 1.0f) {
            logdecay += static_cast<double>(ln_near1(prod));
            prod = 1.0f;
        }
    }
    __device__ __forceinline__ void add_to(const ScanProbes& probes, int64_t d) const {
        if (probes.delta_sum) atomicAdd(probes.delta_sum + d, dsum);
        if (probes.kept)
            atomicAdd(reinterpret_cast<unsigned long long*>(probes.kept + d),
                      static_cast<unsigned long long>(kept));
        if (probes.log_decay) atomicAdd(probes.log_decay + d, logdecay);
    }
};

// The slowest state's A2 (the log-sum-exp shift of the log-decay probe).
__device__ __forceinline__ float max_a2(const float (&A2)[kM1N]) {
    float m = A2[0];
#pragma unroll
    for (int n = 1; n < kM1N; ++n) m = fmaxf(m, A2[n]);
    return m;
}

// Pass 1: every chunk but the last, from a zero state: the chunk's end state and Σ Δ'. kProbes (a scan with
// probes and more than one chunk): every chunk, the last included, and the probes too, so that pass 3 runs
// without them (docs/cuda.md, "Probes in pass 1"). With p.dp (Δ' once; docs/cuda.md, "Δ' once"): every chunk
// too, and each token's Δ' is written to p.dp for pass 3.
// grid (ceil(E/128), chunks − 1; chunks with kProbes). local_end (chunks, E, N), dsum (chunks, E).
// kSoft: states n < kSoft take the FMA-pipe exp (fast exp only; m1_update_group). kMinBlocks: the resident
// blocks per SM asked of the register allocator (MAMBASCOPE_M1_BLOCKS_PER_SM).
template <bool kFastExp, typename In, bool kProbes = false, int kSoft = 0, int kMinBlocks = kM1MinBlocksPass1,
          bool kLean = false>
__global__ void __launch_bounds__(kM1Threads, kMinBlocks)
    m1_chunk_states(Params<In> p, float* __restrict__ local_end, float* __restrict__ dsum_out,
                    ScanProbes probes) {
    __shared__ __align__(16) float sB[kM1Tile][kM1N];
    __shared__ __align__(16) M1Ring<In> ring;
    grid_launch_dependents();  // pass 2 may launch now (m1_scan_pdl: it waits for this grid to finish)
    const int64_t d = static_cast<int64_t>(blockIdx.x) * kM1Threads + threadIdx.x;
    const bool active = d < p.E;
    const int64_t c = blockIdx.y;
    const int64_t tb = c * p.chunk_len, te = min(p.T, tb + p.chunk_len);

    float A2[kM1N], h[kM1N];
#pragma unroll
    for (int n = 0; n < kM1N; ++n) {
        A2[n] = active ? p.A[d * kM1N + n] * kLog2e : 0.0f;  // exp(Δ·A) = 2^(Δ·A·log2 e)
        h[n] = 0.0f;
    }
    const float bias = (active && p.delta_bias) ? p.delta_bias[d] : 0.0f;
    const float thr = (active && p.thr) ? p.thr[d] : -INFINITY;
    double dsum = 0.0;  // a chunk may hold thousands of tokens; its decay is exp(A·ΣΔ')
    M1Probes pr;
    const float a2max = kProbes ? max_a2(A2) : 0.0f;
    const int64_t d0 = static_cast<int64_t>(blockIdx.x) * kM1Threads;
    if (p.ring)
        for (int k = 0; k < kM1Stages - 1; ++k) m1_ring_issue<false>(p, ring, k, tb + k * kM1Tile, te, d0);
    // Δ' once, lean tiles: this thread's Δ' column, one row further per token (as pass 3's y)
    const bool dp_on = p.dp != nullptr;
    float* dpp = (kLean && dp_on) ? p.dp + tb * p.ldp + (active ? d : 0) : nullptr;

    int ks = 0;  // the ring stage of the tile: its index mod kM1Stages
    for (int64_t t0 = tb; t0 < te; t0 += kM1Tile, ks = ks == kM1Stages - 1 ? 0 : ks + 1) {
        const int nv = active ? static_cast<int>(min(static_cast<int64_t>(kM1Tile), te - t0)) : 0;
        float xr[kM1Tile], dr[kM1Tile];  // the register tiles' x and Δ
        int st = 0;  // lean tiles: the ring stage holding this tile's x and Δ (0 for the per-thread loads)
        if (p.ring) {
            st = ks;
            m1_ring_take<false, false, !kLean>(p, ring, ks, t0, te, d0, sB, nullptr, xr, dr);
        } else {
#pragma unroll
            for (int i = 0; i < kM1Tile; ++i) {
                const bool ok = active && t0 + i < te;
                if constexpr (kLean) {
                    ring.x[0][i][threadIdx.x] = ok ? p.x[(t0 + i) * p.ldx + d] : In{};
                    ring.dt[0][i][threadIdx.x] = ok ? p.delta[(t0 + i) * p.ldd + d] : In{};
                } else {
                    xr[i] = ok ? load_f32(p.x + (t0 + i) * p.ldx + d) : 0.0f;
                    dr[i] = ok ? load_f32(p.delta + (t0 + i) * p.ldd + d) : 0.0f;
                }
            }
            __syncthreads();  // the previous tile's B is no longer read
            for (int k = threadIdx.x; k < kM1Tile * kM1N; k += kM1Threads) {
                const int i = k / kM1N, n = k % kM1N;
                sB[i][n] = t0 + i < te ? load_f32(p.B + (t0 + i) * p.ldb + n) : 0.0f;
            }
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < kM1Tile; ++i) {
            const bool valid = kLean ? i < nv : active && t0 + i < te;
            bool kept;
            const float xi = kLean ? load_f32(&ring.x[st][i][threadIdx.x]) : xr[i];
            const float di = kLean ? load_f32(&ring.dt[st][i][threadIdx.x]) : dr[i];
            const float dt = used_delta(di, bias, p.softplus, thr, valid, kept);
            if (dp_on) {
                if constexpr (kLean) {
                    if (valid) *dpp = dt;
                    dpp += p.ldp;
                } else if (valid) {
                    p.dp[(t0 + i) * p.ldp + d] = dt;
                }
                // Δ' once: the caller's Δ' output is written here, where the issue slots have room (pass 3
                // would test for it on every token)
                if (valid && p.delta_out) p.delta_out[(t0 + i) * p.ldo + d] = dt;
            }
            dsum += dt;
            const float dtx = dt * xi;
            const float4* b4 = reinterpret_cast<const float4*>(sB[i]);
            float esum = 0.0f;
#pragma unroll
            for (int q = 0; q < kM1N / 4; ++q) {
                const float4 e = m1_update_group<kFastExp, kSoft>(h, A2, q, dt, dtx, b4[q]);
                if constexpr (kProbes) esum += (e.x + e.y) + (e.z + e.w);
            }
            if constexpr (kProbes)
                if (valid) pr.token(dt, kept, esum, A2, a2max);
        }
        if constexpr (kProbes) pr.end_tile();
    }
    if (p.ring) cp_async_wait_all();  // nothing in flight into shared memory when the block exits
    if (!active) return;
    float4* out = reinterpret_cast<float4*>(local_end + (c * p.E + d) * kM1N);
#pragma unroll
    for (int q = 0; q < kM1N / 4; ++q)
        out[q] = make_float4(h[4 * q], h[4 * q + 1], h[4 * q + 2], h[4 * q + 3]);
    dsum_out[c * p.E + d] = static_cast<float>(dsum);
    if constexpr (kProbes) pr.add_to(probes, d);
}

// Pass 2: chain the chunks. One thread per (d, n): h_start[0] = h_in, h_start[c+1] = exp(A·ΣΔ'_c)·h_start[c]
// + end_c. Launched with a programmatic edge from pass 1 (m1_scan_pdl): A and h_in (the caller's state,
// written before pass 1 began) are read before the wait, pass 1's end states and sums after it.
__global__ void __launch_bounds__(kCombineThreads)
    m1_combine(int64_t E, int64_t chunks, const float* __restrict__ A, const float* __restrict__ h_in,
               const float* local_end, const float* dsum, float* __restrict__ h_start) {
    grid_launch_dependents();  // pass 3 may launch now (it waits for this grid to finish)
    const int64_t i = static_cast<int64_t>(blockIdx.x) * kCombineThreads + threadIdx.x;  // d·N + n
    if (i >= E * kM1N) return;
    const int64_t d = i / kM1N;
    const float a2 = A[i] * kLog2e;
    float h = h_in ? h_in[i] : 0.0f;
    grid_dependency_wait();  // local_end and dsum come from pass 1: coherent loads after the wait
    local_end = after_wait(local_end);
    dsum = after_wait(dsum);
    // The chain is sequential, its inputs are not: load kCombineBatch chunks' inputs at once so that a short
    // input's 30-odd chunks cost a few memory round trips, not one each (the same arithmetic in the same
    // order).
    constexpr int kCombineBatch = 8;
    for (int64_t c0 = 0; c0 < chunks; c0 += kCombineBatch) {
        float ds[kCombineBatch], le[kCombineBatch];
#pragma unroll
        for (int k = 0; k < kCombineBatch; ++k) {
            const int64_t c = c0 + k;
            const bool ok = c + 1 < chunks;
            ds[k] = ok ? dsum[c * E + d] : 0.0f;
            le[k] = ok ? local_end[c * E * kM1N + i] : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < kCombineBatch; ++k) {
            const int64_t c = c0 + k;
            if (c >= chunks) break;
            h_start[c * E * kM1N + i] = h;
            if (c + 1 < chunks) h = exp2_accurate(a2 * ds[k]) * h + le[k];
        }
    }
}

// Pass 3 (or the only pass): rescan each chunk from its true start state, write y, Δ', the final state,
// probes. grid (ceil(E/128), chunks). h_start (chunks, E, N); h_final (E, N) or null.
// kLowRankDt: Δ's pre-activation from dt_proj's low-rank input (single pass only; see
// Mamba1ScanArgs::dt_proj_w). kMinBlocks as in pass 1. kDtIn (Δ' once, chunked scans without probes in this
// pass): Δ' as pass 1 wrote it to p.dp (float32), no bias, softplus or filter here.
template <bool kProbes, bool kFastExp, typename In, bool kLowRankDt = false,
          int kMinBlocks = kM1MinBlocksPass3, bool kDtIn = false, bool kLean = false>
__global__ void __launch_bounds__(kM1Threads, kMinBlocks)
    m1_scan(Params<In> p, const float* h_start, float* h_final, ScanProbes probes) {  // may alias (1 pass)
    static_assert(!(kDtIn && (kProbes || kLowRankDt)), "Δ' once: a chunked scan's pass 3 without probes");
    __shared__ __align__(16) float sB[kM1Tile][kM1N];
    __shared__ __align__(16) float sC[kM1Tile][kM1N];
    // decode steps (kLowRankDt: one pass over a few tokens, Δ from dt_proj) take the per-thread loads
    constexpr bool kRing = !kLowRankDt;
    static_assert(!(kLean && kLowRankDt), "lean tiles read x, Δ and z from the ring's shared memory");
    __shared__ __align__(16) std::conditional_t<kRing, M1RingFor<In, kDtIn>, M1NoRing> ring;
    const int64_t d = static_cast<int64_t>(blockIdx.x) * kM1Threads + threadIdx.x;
    const bool active = d < p.E;
    const int64_t c = blockIdx.y;
    const int64_t tb = c * p.chunk_len, te = min(p.T, tb + p.chunk_len);

    float A2[kM1N], h[kM1N];
#pragma unroll
    for (int n = 0; n < kM1N; ++n) A2[n] = active ? p.A[d * kM1N + n] * kLog2e : 0.0f;
    // Decode steps (kLowRankDt) may take a programmatic edge in the step's graph (pdl.cuh): A above is a
    // weight; the state and x, Δ, z, B, C come from earlier kernels.
    if constexpr (kLowRankDt) grid_dependency_wait();
    const int64_t d0 = static_cast<int64_t>(blockIdx.x) * kM1Threads;
    // Pass 3 of a chunked scan is launched with a programmatic edge from pass 2 (m1_scan_pdl): x, Δ, z, B and
    // C were written before pass 1 began (the ring's first tiles are issued before the wait), only the
    // chunk's start state comes from pass 2. Δ' once: Δ' comes from pass 1, so its copies wait.
    if constexpr (kRing)
        if (p.ring)
            for (int k = 0; k < kM1Stages - 1; ++k)
                m1_ring_issue<true, kDtIn, kDtIn ? RingPart::kNoDt : RingPart::kAll>(
                    p, ring, k, tb + k * kM1Tile, te, d0);
    if constexpr (!kLowRankDt) grid_dependency_wait();
    if constexpr (kRing && kDtIn)
        if (p.ring)
            for (int k = 0; k < kM1Stages - 1; ++k)
                m1_ring_issue<true, true, RingPart::kDtOnly>(p, ring, k, tb + k * kM1Tile, te, d0);
    if (active && h_start) {
        const float4* hs = reinterpret_cast<const float4*>(h_start + (c * p.E + d) * kM1N);
#pragma unroll
        for (int q = 0; q < kM1N / 4; ++q) {
            const float4 v = hs[q];
            h[4 * q] = v.x, h[4 * q + 1] = v.y, h[4 * q + 2] = v.z, h[4 * q + 3] = v.w;
        }
    } else {
#pragma unroll
        for (int n = 0; n < kM1N; ++n) h[n] = 0.0f;
    }
    const float a2max = kProbes ? max_a2(A2) : 0.0f;
    const float bias = (active && p.delta_bias) ? p.delta_bias[d] : 0.0f;
    const float thr = (active && p.thr) ? p.thr[d] : -INFINITY;
    const float dskip = (active && p.Dskip) ? p.Dskip[d] : 0.0f;
    const bool gate = p.z != nullptr;
    M1Probes pr;
    // Lean tiles: y's address advances by one row per token (docs/cuda.md, "Lean tiles"), one 64-bit add of a
    // kernel parameter where (t0 + i)·ldy + d takes a 64-bit multiply, a shift and two adds.
    const bool out16 = p.y16 != nullptr;
    char* yp = !kLean  ? nullptr
               : out16 ? reinterpret_cast<char*>(p.y16 + tb * p.ldy + (active ? d : 0))
                       : reinterpret_cast<char*>(p.y + tb * p.ldy + (active ? d : 0));

    int ks = 0;  // the ring stage of the tile: its index mod kM1Stages
    for (int64_t t0 = tb; t0 < te; t0 += kM1Tile, ks = ks == kM1Stages - 1 ? 0 : ks + 1) {
        // lean tiles: the tokens of this tile that this thread scans are i < nv (none past E)
        const int nv = active ? static_cast<int>(min(static_cast<int64_t>(kM1Tile), te - t0)) : 0;
        // x, Δ (Δ') and z: the register tiles hold them in registers; lean tiles leave them in the ring's
        // shared memory until their token (the per-thread loads put them in stage 0)
        float xr[kM1Tile], dr[kM1Tile], zr[kM1Tile];
        int st = 0;
        bool staged = false;
        if constexpr (kRing) {
            if (p.ring) {
                st = ks;
                m1_ring_take<true, kDtIn, !kLean>(p, ring, ks, t0, te, d0, sB, sC, xr, dr, zr, gate);
                staged = true;
            }
        }
        if (!staged) {
#pragma unroll
            for (int i = 0; i < kM1Tile; ++i) {
                const bool ok = active && t0 + i < te;
                if constexpr (kLean) {
                    const int64_t t = t0 + i;
                    ring.x[0][i][threadIdx.x] = ok ? p.x[t * p.ldx + d] : In{};
                    if constexpr (kDtIn)
                        ring.dt[0][i][threadIdx.x] = ok ? p.dp[t * p.ldp + d] : 0.0f;
                    else
                        ring.dt[0][i][threadIdx.x] = ok ? p.delta[t * p.ldd + d] : In{};
                    ring.z[0][i][threadIdx.x] = (ok && gate) ? p.z[t * p.ldz + d] : In{};
                } else {
                    xr[i] = ok ? load_f32(p.x + (t0 + i) * p.ldx + d) : 0.0f;
                    if constexpr (kLowRankDt)
                        dr[i] = ok ? lowrank_dt(p, t0 + i, d) : 0.0f;
                    else if constexpr (kDtIn)
                        dr[i] = ok ? p.dp[(t0 + i) * p.ldp + d] : 0.0f;
                    else
                        dr[i] = ok ? load_f32(p.delta + (t0 + i) * p.ldd + d) : 0.0f;
                    zr[i] = (ok && gate) ? load_f32(p.z + (t0 + i) * p.ldz + d) : 0.0f;
                }
            }
            __syncthreads();
            for (int k = threadIdx.x; k < kM1Tile * kM1N; k += kM1Threads) {
                const int i = k / kM1N, n = k % kM1N;
                const bool ok = t0 + i < te;
                sB[i][n] = ok ? load_f32(p.B + (t0 + i) * p.ldb + n) : 0.0f;
                sC[i][n] = ok ? load_f32(p.C + (t0 + i) * p.ldc + n) : 0.0f;
            }
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < kM1Tile; ++i) {
            const bool valid = kLean ? i < nv : active && t0 + i < te;
            float xi, di, zi = 0.0f;
            if constexpr (kLean) {
                xi = load_f32(&ring.x[st][i][threadIdx.x]);
                di = load_f32(&ring.dt[st][i][threadIdx.x]);
                if (gate) zi = load_f32(&ring.z[st][i][threadIdx.x]);
            } else {
                xi = xr[i], di = dr[i], zi = zr[i];
            }
            bool kept = valid;  // kDtIn: pass 3 takes no probes, so the filter's count is not needed here
            const float dt = kDtIn ? (valid ? di : 0.0f) : used_delta(di, bias, p.softplus, thr, valid, kept);
            const float dtx = dt * xi;
            const float4* b4 = reinterpret_cast<const float4*>(sB[i]);
            const float4* c4 = reinterpret_cast<const float4*>(sC[i]);
            float y = dskip * xi;
            float esum = 0.0f;
#pragma unroll
            for (int q = 0; q < kM1N / 4; ++q) {
                const float4 cc = c4[q];
                const float4 e = m1_update_group<kFastExp>(h, A2, q, dt, dtx, b4[q]);
                y += cc.x * h[4 * q + 0];
                y += cc.y * h[4 * q + 1];
                y += cc.z * h[4 * q + 2];
                y += cc.w * h[4 * q + 3];
                if constexpr (kProbes) esum += (e.x + e.y) + (e.z + e.w);
            }
            if (gate) y *= silu(zi);
            if (valid) {
                if constexpr (kLean) {
                    if (out16)
                        *reinterpret_cast<__nv_bfloat16*>(yp) = f32_to_bf16_rn(y);
                    else
                        *reinterpret_cast<float*>(yp) = y;
                } else {
                    const int64_t t = t0 + i;
                    if (out16)
                        p.y16[t * p.ldy + d] = f32_to_bf16_rn(y);
                    else
                        p.y[t * p.ldy + d] = y;
                }
                if (!kDtIn && p.delta_out) p.delta_out[(t0 + i) * p.ldo + d] = dt;  // kDtIn: pass 1 wrote it
                if constexpr (kProbes) pr.token(dt, kept, esum, A2, a2max);
            }
            if constexpr (kLean) yp += p.y_row_bytes;
        }
        if constexpr (kProbes) pr.end_tile();
    }
    if constexpr (kRing)
        if (p.ring) cp_async_wait_all();  // nothing in flight into shared memory when the block exits
    if (!active) return;
    if (h_final && c + 1 == p.chunks) {
        float4* out = reinterpret_cast<float4*>(h_final + d * kM1N);
#pragma unroll
        for (int q = 0; q < kM1N / 4; ++q)
            out[q] = make_float4(h[4 * q], h[4 * q + 1], h[4 * q + 2], h[4 * q + 3]);
    }
    if constexpr (kProbes) pr.add_to(probes, d);
}

// ---- decode steps: one token, dt_proj fused ----
// m1_scan ran a one-token step through its 8-token tile machinery on E/128 blocks, reading dt_proj's row 4
// bytes at a time: 12.6 µs per layer, 36% of a mamba-130m bf16 step's kernel time and the step's largest
// kernel (ncu, one kernel at a time, 2026-12-04). Here one thread per channel, kM1StepThreads channels per
// block (more blocks), dt_proj's row in 16-byte loads, and the block's dt_proj and A rows started into L2
// before the PDL wait (pdl.cuh). Per channel the parts of m1_step.cuh (shared with the persistent decode
// kernel's m1_step_channel): the same operations as m1_scan's, in the same order: Δ's pre-activation Σ_r
// low[r]·W[d,r] with r ascending (lowrank_dt), used_delta, then per state group h ← 2^(Δ'·A2)·h + Δ'x·B and y
// += C·h, the gate, the store.
constexpr int kM1StepThreads = 64;
//
// Staged rows (since 2026-12-04, tenth stop): a lane reading its own dt_proj row issues its loads four at a
// time, each load touching 32 lines for the warp, and waits for each group: 8 dependent L2 round trips for
// mamba-1.4b's 128-float rows. Staged, the block copies its rows of dt_proj and A into shared memory with
// cp.async before the PDL wait (weights only; a warp copies whole rows, 512 contiguous bytes per load), and
// each lane then reads its row from there, in the same order: the same products, the same sums, bit for bit.
// Row strides are padded so that a quarter warp's 16-byte reads of 8 rows fall in 8 different bank groups.
// Measured (H200, bf16 greedy step graph, always against never staged, docs/benchmarks.md "tenth stop"):
// mamba-1.4b (R = 128) 1.732 against 1.848 ms/token, mamba-2.8b (R = 160) 3.017 against 3.198, but mamba-130m
// (R = 48) 0.454 against 0.416 and mamba-370m (R = 64) 0.944 against 0.905, so rows are staged from
// kM1StepStageMinRank up. MAMBASCOPE_M1_STEP_STAGE=0 never stages (the rows from global memory, as before),
// =1 stages whatever the rank (A/B runs, the tests); any other value is an error.
constexpr int kM1StepMaxRowStride = 192;     // floats per staged dt_proj row: ≤ 53 KB with the A rows
constexpr int64_t kM1StepStageMinRank = 96;  // dt_rank from which staging pays (between 64 and 128: above)
constexpr int kM1StepARowStride = kM1N + 4;  // 20 floats: 5 float4s, odd
int m1_step_row_stride(int64_t R) {          // R % 4 == 0
    return (R / 4) % 2 == 1 ? static_cast<int>(R) : static_cast<int>(R) + 4;
}
//
// Loads before the wait (since 2026-12-05, eleventh stop): a channel's A row, dt bias, threshold, D and
// carried state h are not written by any earlier kernel of a decode step (each layer's state is its step
// kernel's alone), so each thread loads them into registers before the PDL wait, and, when the rows are not
// staged and R ≤ 4·kM1StepRegQ, its whole dt_proj row too; after the wait only the activations (x, z, the
// low-rank input, B, C) are read. The same values in the same order (m1_step.cuh: m1_step_load_vectors,
// m1_step_dt_raw, m1_step_finish), bit for bit. MAMBASCOPE_M1_STEP_PRELOAD=0 loads everything after the
// wait, as before (A/B runs, the tests); any value but 0 or 1 is an error.
constexpr int kM1StepRegQ = 16;  // float4s of a dt_proj row held in registers: rows of up to 64 floats
//
// Staged activations (since 2026-12-05, seventeenth stop): every thread reads the same low-rank input (R
// values), B and C (16 each). Read from global memory by each thread, in m1_step_dt_raw's groups of 4 and
// then per state group, they are several dependent round trips after the wait (the first group from L2, the
// rest from L1, B and C once Δ is known). Staged, the block copies them into shared memory as float32 right
// after the wait (one load per thread, all in flight at once, the bf16 → float32 conversion exact) and each
// thread reads them from there: the same values, the same order, bit for bit. It needs a barrier after the
// copy; a block whose dt_proj rows are staged has one there anyway, so by default the activations are staged
// exactly when the rows are. Measured on an H100 (docs/benchmarks.md, seventeenth stop), always on against
// off: mamba-1.4b (R = 128, rows staged) 1.664 against 1.687 ms/token, mamba-130m (R = 48, rows in
// registers, no barrier otherwise) 0.348 against 0.345. MAMBASCOPE_M1_STEP_ACT=1 stages them whatever the
// rows (up to kM1StepMaxActRank), =0 never (A/B runs, the tests); any other value is an error.
constexpr int64_t kM1StepMaxActRank = 1024;  // larger (hypothetical) ranks read from global memory
bool m1_step_act(bool rows_staged, int64_t R) {
    const std::string v =
        env_choice("MAMBASCOPE_M1_STEP_ACT", {"", "0", "1"},
                   "it sets whether a decode step copies the token's low-rank input, B and C "
                   "into shared memory before its channels read them (docs/cuda.md, \"Staged "
                   "rows\"; unset: when the dt_proj rows are staged)");
    return R <= kM1StepMaxActRank && (v == "1" || (v.empty() && rows_staged));
}

template <bool kFastExp, typename In>
__global__ void __launch_bounds__(kM1StepThreads)
    m1_step(Params<In> p, float* __restrict__ h_state, int Rp, bool preload, bool act) {
    // Rp > 0: staged rows, dt_proj's (64 × Rp floats) then A's (64 × 20); then, act: the token's low-rank
    // input, B and C (R + 32 floats)
    extern __shared__ __align__(16) float smem[];
    const bool stage = Rp > 0;
    const int64_t d0 = static_cast<int64_t>(blockIdx.x) * kM1StepThreads, d = d0 + threadIdx.x;
    const int64_t R = p.dt_rank;
    const int64_t rows = min(static_cast<int64_t>(kM1StepThreads), p.E - d0);
    float* sW = smem;
    float* sA = smem + kM1StepThreads * Rp;
    float* sLow = sA + (stage ? kM1StepThreads * kM1StepARowStride : 0);
    float* sB = sLow + R;
    float* sC = sB + kM1N;
    // weights only before the wait
    if (stage) {
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
        const int64_t q4 = R / 4;  // 16-byte pieces per row
        for (int64_t r = warp; r < rows; r += kM1StepThreads / 32) {
            for (int64_t k = lane; k < q4; k += 32)
                cp_async_16(sW + r * Rp + 4 * k, p.dt_w + (d0 + r) * R + 4 * k, true);
            if (lane < kM1N / 4)
                cp_async_16(sA + r * kM1StepARowStride + 4 * lane, p.A + (d0 + r) * kM1N + 4 * lane, true);
        }
        cp_async_commit();
    }
    const bool vec_rows = R % 4 == 0 && reinterpret_cast<uintptr_t>(p.dt_w) % 16 == 0;
    const bool rows_in_regs = preload && !stage && vec_rows && R <= 4 * kM1StepRegQ;
    if (!stage && threadIdx.x == 0) {  // rows the threads do not load themselves before the wait: into L2
        if (vec_rows && !rows_in_regs)
            prefetch_l2(p.dt_w + d0 * R, static_cast<unsigned>(rows * R * sizeof(float)));
        if (!preload && reinterpret_cast<uintptr_t>(p.A) % 16 == 0)
            prefetch_l2(p.A + d0 * kM1N, static_cast<unsigned>(rows * kM1N * sizeof(float)));
    }
    M1StepIn<In> s;
    s.x = p.x, s.z = p.z, s.low = p.delta, s.B = p.B, s.C = p.C, s.dt_w = p.dt_w, s.R = R, s.A = p.A;
    s.bias = p.delta_bias, s.softplus = p.softplus, s.thr = p.thr, s.Dskip = p.Dskip;
    s.y = p.y, s.y16 = p.y16, s.delta_out = p.delta_out;
    // this channel's vectors, state and (short rows from global memory) dt_proj row: not written in a step
    const bool pre = preload && d < p.E;
    const bool row_in_regs = pre && rows_in_regs;
    M1StepChannel c;
    float4 wv[kM1StepRegQ];
    if (pre) {
        m1_step_load_vectors(s, d, h_state, c);
        if (!stage) m1_step_load_A(p.A + d * kStepN, c);
        if (row_in_regs) {
            const float4* w4 = reinterpret_cast<const float4*>(p.dt_w + d * R);
#pragma unroll
            for (int q = 0; q < kM1StepRegQ; ++q)
                if (4 * q < R) wv[q] = w4[q];
        }
    }
    grid_dependency_wait();  // x, z, B, C and dt_proj's low-rank input come from earlier kernels
    if (act)
        for (int64_t k = threadIdx.x; k < R + 2 * kM1N; k += kM1StepThreads)
            sLow[k] = k < R          ? step_in(p.delta + k)
                      : k < R + kM1N ? step_in(p.B + (k - R))
                                     : step_in(p.C + (k - R - kM1N));
    if (stage) cp_async_wait_all();
    if (stage || act) __syncthreads();
    if (d >= p.E) return;  // no barrier below: a thread per channel
    // what was not loaded before the wait (m1_step_channel's loads, in parts)
    if (!pre) m1_step_load_vectors(s, d, h_state, c);
    if (stage || !pre) m1_step_load_A(stage ? sA + threadIdx.x * kM1StepARowStride : p.A + d * kStepN, c);
    const float* w = stage ? sW + threadIdx.x * Rp : p.dt_w + d * R;
    float raw;
    if (act)
        raw = row_in_regs ? m1_step_dt_raw(static_cast<const float*>(sLow), wv, R)
                          : m1_step_dt_raw(static_cast<const float*>(sLow), w, R);
    else
        raw = row_in_regs ? m1_step_dt_raw(s.low, wv, R) : m1_step_dt_raw(s.low, w, R);
    if (act)
        m1_step_finish<kFastExp>(s, d, h_state, c, raw, static_cast<const float*>(sB),
                                 static_cast<const float*>(sC));
    else
        m1_step_finish<kFastExp>(s, d, h_state, c, raw, s.B, s.C);
}

// MAMBASCOPE_M1_STEP_STAGE: -1 unset (stage from kM1StepStageMinRank up), 0 never, 1 whenever the rows fit
// (A/B runs, the tests); read at each call.
int m1_step_stage_setting() {
    const std::string v = env_choice("MAMBASCOPE_M1_STEP_STAGE", {"", "0", "1"},
                                     "it sets whether a decode step copies its dt_proj rows into shared "
                                     "memory (docs/cuda.md, \"Staged rows\")");
    return v.empty() ? -1 : v == "1" ? 1 : 0;
}

// MAMBASCOPE_M1_STEP_PRELOAD: 1 or unset, a decode step's channel vectors, state and short dt_proj rows are
// loaded before the PDL wait; 0, after it (A/B runs, the tests). Read at each call.
bool m1_step_preload_enabled() {
    return env_flag("MAMBASCOPE_M1_STEP_PRELOAD", true,
                    "it sets whether a decode step loads its weights and state before waiting for the kernel "
                    "ahead of it (docs/cuda.md, \"Loads before the wait\")");
}

// MAMBASCOPE_M1_STEP=0: decode steps take m1_scan as before (A/B runs, the tests); read at each call.
bool m1_step_enabled() {
    return env_flag("MAMBASCOPE_M1_STEP", true,
                    "it sets whether decode steps take m1_step rather than m1_scan (docs/cuda.md, \"The "
                    "Mamba-1 scan\")");
}

// MAMBASCOPE_M1_PROBES_PASS=3: a chunked scan's probes stay in pass 3 (as before the probes moved to pass 1;
// A/B runs, the tests); 1 or unset: pass 1. Read at each call.
bool m1_probes_in_pass1_enabled() {
    return env_choice("MAMBASCOPE_M1_PROBES_PASS", {"1", "3"},
                      "it sets which pass of a chunked Mamba-1 scan takes the probes (docs/cuda.md, \"Probes "
                      "in pass 1\")") == "1";
}

// Programmatic launches between a chunked scan's passes (since 2026-12-05, seventeenth stop; docs/cuda.md,
// "The Mamba-1 scan"). Pass 2 and pass 3 are launched with a programmatic edge from the pass before them
// (PDL, as the decode graph's kernels are), and passes 1 and 2 let them launch from their first instruction:
// a pass's launch and its blocks' start then overlap the pass before it, and pass 3's blocks load A and fill
// the cp.async ring's first tiles before they wait for their start state. Short inputs pay most for the two
// launch gaps (three kernels against mamba_ssm's one). MAMBASCOPE_M1_SCAN_PDL=0 launches them plainly (A/B
// runs, the tests); read at each call.
bool m1_scan_pdl_enabled() {
    return env_flag("MAMBASCOPE_M1_SCAN_PDL", true,
                    "it sets whether a chunked Mamba-1 scan launches passes 2 and 3 with a programmatic edge "
                    "from the pass before (docs/cuda.md, \"The Mamba-1 scan\")");
}

// Launches kernel(args…) on grid × block in stream (no dynamic shared memory), with a programmatic edge from
// the kernel before it in the stream when `programmatic` (the kernel waits in grid_dependency_wait before it
// reads what that kernel wrote). The CPU emulation runs one kernel at a time: a plain launch.
template <typename... P, typename... Args>
void launch_scan_pass(bool programmatic, void (*kernel)(P...), dim3 grid, dim3 block, cudaStream_t stream,
                      Args... args) {
#ifdef MAMBASCOPE_EMU
    (void)programmatic;
    kernel<<<grid, block, 0, stream>>>(args...);
#else
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = 0;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = programmatic ? 1 : 0;
    CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, args...));
#endif
    CUDA_CHECK(cudaGetLastError());
}

// Both passes' resident blocks per SM asked of the register allocator (fast exp), 0 for the default kernels
// (docs/cuda.md, "Resident blocks").
int m1_blocks_per_sm() {
    return env_enum<int>(
        "MAMBASCOPE_M1_BLOCKS_PER_SM", {{"", 0}, {"4", 0}, {"5", 5}, {"6", 6}},
        "it sets how many blocks per SM the fast-exp Mamba-1 scan kernels are compiled to keep "
        "resident (docs/cuda.md, \"Resident blocks\")");
}

// Blocks of the pass-3 kernel that fit on the whole GPU at once (one wave).
int64_t resident_blocks() {
    static thread_local int cached_device = -1, cached_setting = -1;
    static thread_local int64_t cached = 0;
    const int setting = m1_blocks_per_sm();
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    if (dev != cached_device || setting != cached_setting) {
        int sms = 0, per_sm = 0;
        CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        // The float32 pass 3 (the largest ring) of the kernels the setting picks; bf16 scans plan alike, so
        // that the workspace size does not depend on the input type.
        if (setting == 5)
            CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                &per_sm, m1_scan<true, true, float, false, 5>, kM1Threads, 0));
        else if (setting == 6)
            CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                &per_sm, m1_scan<true, true, float, false, 6>, kM1Threads, 0));
        else
            CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, m1_scan<true, false, float>,
                                                                     kM1Threads, 0));
        cached = static_cast<int64_t>(sms) * std::max(1, per_sm);
        cached_device = dev, cached_setting = setting;
    }
    return cached;
}

// Δ' once (docs/cuda.md, "Δ' once"; since 2026-12-06, twenty-second stop): pass 1 of a chunked scan writes
// each token's Δ' (bias, softplus, filter applied) to the workspace as float32, and pass 3 reads it instead
// of computing them again: one softplus (an ex2 and a lg2 on the MUFU, ≈ 12 instructions) per (t, d) instead
// of two, for T·E·4 bytes of workspace and its traffic. Not with probes taken in pass 3 (they need the
// filter's count) nor with MAMBASCOPE_M1_BLOCKS_PER_SM (its kernels are built without it).
// MAMBASCOPE_M1_DT_ONCE=0 computes Δ' in both passes (A/B runs, the tests); read at each call.
bool m1_dt_once_enabled() {
    return env_flag(
        "MAMBASCOPE_M1_DT_ONCE", true,
        "it sets whether pass 1 of a chunked Mamba-1 scan hands Δ' to pass 3 through the workspace "
        "(docs/cuda.md, \"Δ' once\")");
}

// Lean tiles (since the twenty-ninth stop the default where they are built: the fast-exp pass 1 and, with Δ'
// once, pass 3, at 4 or 5 blocks per SM): unset or "" takes them there (not with the soft exp, which only the
// register tiles are built with), 1 asks for them (an error with the soft exp), 0 takes the register tiles.
int m1_lean_setting() {
    return env_enum<int>("MAMBASCOPE_M1_LEAN", {{"", -1}, {"0", 0}, {"1", 1}},
                         "it sets whether the fast-exp Mamba-1 scan passes take lean tiles (docs/cuda.md, "
                         "\"Lean tiles\")");
}

// The pieces of a chunked scan's workspace, each 256-byte aligned: local_end (S, E, N), h_start (S, E, N),
// dsum (S, E), and with Δ' once dp (T, E).
struct M1Workspace {
    size_t states = 0, dsum = 0, dp = 0;
    size_t bytes() const { return 2 * states + dsum + dp; }
};
M1Workspace workspace_layout(const ScanPlan& plan, int64_t T, int64_t E, bool dt_once) {
    M1Workspace w;
    if (plan.chunks <= 1) return w;
    auto round = [](size_t b) { return (b + 255) / 256 * 256; };
    w.states = round(static_cast<size_t>(plan.chunks) * E * kM1N * sizeof(float));
    w.dsum = round(static_cast<size_t>(plan.chunks) * E * sizeof(float));
    w.dp = dt_once ? round(static_cast<size_t>(T) * E * sizeof(float)) : 0;
    return w;
}

// The shortest chunk the automatic plan takes: kM1MinChunk, or MAMBASCOPE_M1_MIN_CHUNK for A/B runs (read per
// call; the workspace size and the scan read it alike, so both see the same plan within a call).
int64_t m1_min_chunk() {
    return env_enum<int64_t>("MAMBASCOPE_M1_MIN_CHUNK",
                             {{"", kM1MinChunk},
                              {"16", 16},
                              {"24", 24},
                              {"32", 32},
                              {"40", 40},
                              {"48", 48},
                              {"56", 56},
                              {"64", 64},
                              {"96", 96},
                              {"128", 128}},
                             "it sets the shortest time chunk of the chunked Mamba-1 scan's automatic plan "
                             "(docs/cuda.md, \"The Mamba-1 scan\")");
}

// Pass 1's states per token on the FMA-pipe exp (docs/cuda.md, "Soft exp").
int m1_soft_exp() {
    return env_enum<int>(
        "MAMBASCOPE_M1_SOFT_EXP", {{"", kM1SoftExp}, {"0", 0}, {"2", 2}, {"4", 4}},
        "it sets how many of a token's 16 state exps pass 1 of the Mamba-1 scan computes on the "
        "FMA pipe instead of the MUFU (docs/cuda.md, \"Soft exp\")");
}

// Pass 1 for the settings above (fast exp only: the accurate exp runs the register-tile kernel).
template <bool kFastExp, typename In, bool kProbes>
auto pass1_kernel(int soft, int blocks, int lean) {
    if constexpr (kFastExp) {
        if (soft && blocks)
            throw Error("scan_mamba1: MAMBASCOPE_M1_SOFT_EXP and MAMBASCOPE_M1_BLOCKS_PER_SM are both set",
                        "the two are built one at a time; unset one of them");
        if (lean == 1 && soft)
            throw Error("scan_mamba1: MAMBASCOPE_M1_LEAN and MAMBASCOPE_M1_SOFT_EXP are both set",
                        "lean tiles are built without the soft exp; unset one of them");
        if (lean != 0 && !soft && blocks == 5) return m1_chunk_states<kFastExp, In, kProbes, 0, 5, true>;
        if (lean != 0 && !soft && blocks == 0)
            return m1_chunk_states<kFastExp, In, kProbes, 0, kM1MinBlocksPass1, true>;
        if (soft == 2) return m1_chunk_states<kFastExp, In, kProbes, 2>;
        if (soft == 4) return m1_chunk_states<kFastExp, In, kProbes, 4>;
        if (blocks == 5) return m1_chunk_states<kFastExp, In, kProbes, 0, 5>;
        if (blocks == 6) return m1_chunk_states<kFastExp, In, kProbes, 0, 6>;
    }
    return m1_chunk_states<kFastExp, In, kProbes>;
}

// Pass 3 without the fused dt_proj for a blocks-per-SM setting, as pass1_kernel.
template <bool kProbes, bool kFastExp, typename In>
auto pass3_kernel(int blocks) {
    if constexpr (kFastExp) {
        if (blocks == 5) return m1_scan<kProbes, kFastExp, In, false, 5>;
        if (blocks == 6) return m1_scan<kProbes, kFastExp, In, false, 6>;
    }
    return m1_scan<kProbes, kFastExp, In, false>;
}
}  // namespace

ScanPlan scan_mamba1_plan(int64_t T, int64_t E, int64_t chunk_len) {
    ScanPlan plan;
    if (T <= 0 || E <= 0) return plan;
    int64_t len = chunk_len;
    if (len <= 0) {
        // As many chunks as keep one full wave of blocks busy; E alone filling the GPU gives one pass.
        const int64_t blocks_per_chunk = (E + kM1Threads - 1) / kM1Threads;
        const int64_t want_chunks = std::max<int64_t>(1, resident_blocks() / blocks_per_chunk);
        len = std::max<int64_t>(m1_min_chunk(), (T + want_chunks - 1) / want_chunks);
    }
    len = (len + kM1Tile - 1) / kM1Tile * kM1Tile;
    if (len >= T) len = T;
    plan.chunk_len = len;
    plan.chunks = (T + len - 1) / len;
    return plan;
}

size_t scan_mamba1_workspace_bytes(int64_t T, int64_t E, int64_t N, int64_t chunk_len) {
    (void)N;  // only d_state 16 is built; the argument keeps the signature honest for later instantiations
    // Sized for Δ' once whenever it is switched on (a call with probes in pass 3 leaves that part unused).
    const bool dt_once = m1_dt_once_enabled() && m1_blocks_per_sm() != 6;
    return workspace_layout(scan_mamba1_plan(T, E, chunk_len), T, E, dt_once).bytes();
}

namespace {

// The three passes for one input type (p filled by the caller; a for the workspace, state and probes).
template <typename In>
void launch_scan(const Mamba1ScanArgs& a, const ScanPlan& plan, Params<In>& p, void* workspace,
                 size_t workspace_bytes, cudaStream_t stream) {
    p.T = a.T, p.E = a.E, p.chunk_len = plan.chunk_len, p.chunks = plan.chunks;
    p.delta_bias = a.delta_bias, p.softplus = a.delta_softplus ? 1 : 0;
    p.A = a.A, p.ldx = a.ldx, p.ldd = a.ldd, p.ldb = a.ldb, p.ldc = a.ldc, p.Dskip = a.Dskip, p.ldz = a.ldz;
    p.thr = a.thr, p.y = a.y, p.y16 = a.y16, p.ldy = a.ldy, p.delta_out = a.delta_out, p.ldo = a.ldo;
    p.y_row_bytes = a.ldy * static_cast<int64_t>(a.y16 ? sizeof(__nv_bfloat16) : sizeof(float));
    p.dt_w = a.dt_proj_w, p.dt_rank = a.dt_rank;
    if (a.dt_proj_w && a.T == 1 && m1_step_enabled()) {  // a decode step
        const auto step = a.fast_exp ? m1_step<true, In> : m1_step<false, In>;
        const bool preload = m1_step_preload_enabled();
        pdl_register(step);
        const bool stage = scan_mamba1_step_staged(a);
        const bool act = m1_step_act(stage, a.dt_rank);
        const size_t smem =
            (stage ? static_cast<size_t>(kM1StepThreads) * (m1_step_row_stride(a.dt_rank) + kM1StepARowStride)
                   : 0) *
                sizeof(float) +
            (act ? static_cast<size_t>(a.dt_rank + 2 * kM1N) * sizeof(float) : 0);
        if (smem > 48 * 1024)
            CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(step),
                                            cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(smem)));
        step<<<static_cast<unsigned>((a.E + kM1StepThreads - 1) / kM1StepThreads), kM1StepThreads, smem,
               stream>>>(p, a.h, stage ? m1_step_row_stride(a.dt_rank) : 0, preload, act);
        CUDA_CHECK(cudaGetLastError());
        return;
    }
    // A chunked scan's probes are taken in pass 1, where the special-function pipe, not issue, is the limit
    // (docs/cuda.md, "Probes in pass 1"); a single pass takes them in pass 3.
    const bool pass1_switch =
        m1_probes_in_pass1_enabled();  // read first: a bad value is an error at any call
    const bool probes_in_pass1 = a.probes.any() && plan.chunks > 1 && pass1_switch;
    const int soft = m1_soft_exp(), blocks = m1_blocks_per_sm();
    const int lean = m1_lean_setting();  // -1: where built (pass1_kernel; pass 3 below), 0 off, 1 on
    const bool pdl = m1_scan_pdl_enabled() && plan.chunks > 1;  // a single pass has no pass before it
    // Δ' once is built for 4 and 5 resident blocks (the 6-block kernels spill without it already)
    const bool dt_once_switch = m1_dt_once_enabled() && blocks != 6;
    const bool dt_once =
        dt_once_switch && plan.chunks > 1 && !a.dt_proj_w && (!a.probes.any() || probes_in_pass1);
    const dim3 block(kM1Threads);
    const unsigned cblocks = static_cast<unsigned>((a.E + kM1Threads - 1) / kM1Threads);

    const float* h_start = a.h;  // single pass: chunk 0 starts from the caller's state
    void* owned = nullptr;
    if (plan.chunks > 1) {
        const M1Workspace lay = workspace_layout(plan, a.T, a.E, dt_once_switch);
        const size_t need = lay.bytes();
        if (!workspace) {
            CUDA_CHECK(cudaMallocAsync(&owned, need, stream));
            workspace = owned;
        } else {
            if (workspace_bytes < need)
                throw Error("scan_mamba1: workspace too small (" + std::to_string(workspace_bytes) +
                                " bytes, " + std::to_string(need) + " needed)",
                            "size it with scan_mamba1_workspace_bytes(T, E, N, chunk_len) under the same "
                            "MAMBASCOPE_M1_* settings as the scan (MAMBASCOPE_M1_DT_ONCE adds T·E floats)");
        }
        char* base = static_cast<char*>(workspace);
        float* local_end = reinterpret_cast<float*>(base);
        float* hs = reinterpret_cast<float*>(base + lay.states);
        float* dsum = reinterpret_cast<float*>(base + 2 * lay.states);
        if (dt_once) p.dp = reinterpret_cast<float*>(base + 2 * lay.states + lay.dsum), p.ldp = a.E;

        // With probes pass 1 scans the last chunk too (its end state goes unused) and takes the probes; with
        // Δ' once it scans it for the last chunk's Δ' (the same wave of blocks: it fits in the pass's time).
        const bool all_chunks = probes_in_pass1 || dt_once;
        const dim3 grid1(cblocks, static_cast<unsigned>(all_chunks ? plan.chunks : plan.chunks - 1));
        const auto pass1 = probes_in_pass1
                               ? (a.fast_exp ? pass1_kernel<true, In, true>(soft, blocks, lean)
                                             : pass1_kernel<false, In, true>(soft, blocks, lean))
                               : (a.fast_exp ? pass1_kernel<true, In, false>(soft, blocks, lean)
                                             : pass1_kernel<false, In, false>(soft, blocks, lean));
        pass1<<<grid1, block, 0, stream>>>(p, local_end, dsum, a.probes);
        CUDA_CHECK(cudaGetLastError());
        const int64_t n_states = a.E * kM1N;
        launch_scan_pass(pdl, m1_combine,
                         dim3(static_cast<unsigned>((n_states + kCombineThreads - 1) / kCombineThreads)),
                         dim3(kCombineThreads), stream, a.E, plan.chunks, a.A, a.h, local_end, dsum, hs);
        h_start = hs;
    }
    const dim3 grid(cblocks, static_cast<unsigned>(plan.chunks));
    // The fused dt_proj (decode steps, one short pass) keeps the default register budget.
    auto pass3 =
        a.dt_proj_w ? (a.fast_exp ? m1_scan<false, true, In, true> : m1_scan<false, false, In, true>)
        : dt_once && a.fast_exp && lean != 0
            ? (blocks == 5 ? m1_scan<false, true, In, false, 5, true, true>
                           : m1_scan<false, true, In, false, kM1MinBlocksPass3, true, true>)
        : dt_once && blocks == 5 ? (a.fast_exp ? m1_scan<false, true, In, false, 5, true>
                                               : m1_scan<false, false, In, false, 5, true>)
        : dt_once                ? (a.fast_exp ? m1_scan<false, true, In, false, kM1MinBlocksPass3, true>
                                               : m1_scan<false, false, In, false, kM1MinBlocksPass3, true>)
        : a.probes.any() && !probes_in_pass1
            ? (a.fast_exp ? pass3_kernel<true, true, In>(blocks) : pass3_kernel<true, false, In>(blocks))
            : (a.fast_exp ? pass3_kernel<false, true, In>(blocks) : pass3_kernel<false, false, In>(blocks));
    if (a.dt_proj_w) pdl_register(pass3);
    launch_scan_pass(pdl, pass3, grid, block, stream, p, h_start, a.h, a.probes);
    if (owned) CUDA_CHECK(cudaFreeAsync(owned, stream));
}

}  // namespace

bool scan_mamba1_step_staged(const Mamba1ScanArgs& a) {
    const auto aligned16 = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
    const int setting = m1_step_stage_setting();  // read first: a bad value is an error at any call
    const bool fits = a.dt_proj_w && a.T == 1 && m1_step_enabled() && a.dt_rank > 0 && a.dt_rank % 4 == 0 &&
                      m1_step_row_stride(a.dt_rank) <= kM1StepMaxRowStride && aligned16(a.dt_proj_w) &&
                      aligned16(a.A);
    return fits && (setting == 1 || (setting < 0 && a.dt_rank >= kM1StepStageMinRank));
}

bool scan_mamba1_ring(const Mamba1ScanArgs& a) {
    const bool ring = env_flag("MAMBASCOPE_M1_RING", true,
                               "it sets whether the Mamba-1 scan copies its inputs through the cp.async ring "
                               "(docs/cuda.md, \"The Mamba-1 scan\")");
    if (!ring || a.dt_proj_w) return false;
    // every copy is 16 bytes of one row: rows on 16-byte boundaries, E a whole number of copies
    const int64_t k = a.x16 ? 8 : 4;  // elements per copy
    const auto rows16 = [k](const void* ptr, int64_t ld) {
        return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && ld % k == 0;
    };
    if (a.E % k != 0) return false;
    if (a.x16)
        return rows16(a.x16, a.ldx) && rows16(a.delta16, a.ldd) && (!a.z16 || rows16(a.z16, a.ldz)) &&
               rows16(a.B16, a.ldb) && rows16(a.C16, a.ldc);
    return rows16(a.x, a.ldx) && rows16(a.delta, a.ldd) && (!a.z || rows16(a.z, a.ldz)) &&
           rows16(a.B, a.ldb) && rows16(a.C, a.ldc);
}

void scan_mamba1(const Mamba1ScanArgs& a, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
    MS_CHECK(a.T >= 0 && a.E >= 0, "scan_mamba1: negative size");
    if (a.T == 0 || a.E == 0) return;
    if (a.N != kM1N)
        throw Error(
            "scan_mamba1 (CUDA): d_state " + std::to_string(a.N) + " is not supported",
            "only d_state 16 (every Mamba-1 checkpoint) is built; use the CPU backend for this model");
    const bool in16 = a.x16 != nullptr;
    if (in16)
        MS_CHECK(a.delta16 && a.B16 && a.C16 && !a.x && !a.delta && !a.B && !a.C && !a.z,
                 "scan_mamba1: bf16 inputs are all-or-nothing: set x16, delta16, B16, C16 (and z16) and "
                 "leave x, delta, B, C, z null");
    else
        MS_CHECK(a.x && a.delta && a.B && a.C && !a.z16, "scan_mamba1: x, delta, B and C are required");
    MS_CHECK(a.A && (a.y || a.y16), "scan_mamba1: A and y (or y16) are required");
    const bool gated = in16 ? a.z16 != nullptr : a.z != nullptr;
    MS_CHECK(a.ldx >= a.E && a.ldy >= a.E, "scan_mamba1: a row stride is smaller than E");
    if (a.dt_proj_w) {
        MS_CHECK(a.dt_rank >= 1 && a.ldd >= a.dt_rank, "scan_mamba1: dt_rank < 1 or ldd < dt_rank");
        MS_CHECK(a.T <= kM1LowRankDtMaxT && !a.probes.any() && a.chunk_len == 0,
                 "scan_mamba1: the fused dt_proj is for decode steps (T ≤ 64, one pass, no probes)");
    } else {
        MS_CHECK(a.ldd >= a.E, "scan_mamba1: a row stride is smaller than E");
    }
    MS_CHECK(a.ldb >= a.N && a.ldc >= a.N, "scan_mamba1: B/C row stride is smaller than N");
    MS_CHECK(!gated || a.ldz >= a.E, "scan_mamba1: z row stride is smaller than E");
    MS_CHECK(!a.delta_out || a.ldo >= a.E, "scan_mamba1: delta_out row stride is smaller than E");
    MS_CHECK(a.E <= static_cast<int64_t>(65535) * kM1Threads, "scan_mamba1: E too large");
    // float4 access to the state arrays needs 16-byte alignment.
    MS_CHECK(reinterpret_cast<uintptr_t>(a.h) % 16 == 0, "scan_mamba1: h must be 16-byte aligned");

    // The fused dt_proj runs in the final pass only: one pass over the (short) input.
    const ScanPlan plan = a.dt_proj_w ? ScanPlan{1, a.T} : scan_mamba1_plan(a.T, a.E, a.chunk_len);
    MS_CHECK(plan.chunks <= 65535, "scan_mamba1: too many time chunks (raise chunk_len)");
    if (in16) {
        Params<__nv_bfloat16> p{};
        p.x = a.x16, p.delta = a.delta16, p.B = a.B16, p.C = a.C16, p.z = a.z16;
        p.ring = scan_mamba1_ring(a);
        launch_scan(a, plan, p, workspace, workspace_bytes, stream);
    } else {
        Params<float> p{};
        p.x = a.x, p.delta = a.delta, p.B = a.B, p.C = a.C, p.z = a.z;
        p.ring = scan_mamba1_ring(a);
        launch_scan(a, plan, p, workspace, workspace_bytes, stream);
    }
}

}  // namespace mambascope::kernels::cuda
