// The persistent bf16 Mamba-1 decode step; see decode_mamba1.cuh.
//
// Phases of one step (G blocks of kDecThreads, all resident; a grid barrier between consecutive phases):
//   0                 x = embedding[id]
//   1 + 4l + 0        a = bf16(rmsnorm(x)·norm_l) (each block, into shared memory); proj = in_proj_l·a (2E);
//                     the warp that computes row d < E (channel d's x) runs channel d's conv right away:
//                     conv state window + proj[d] → conv[d] (bf16), the state shifted                   (E)
//   1 + 4l + 1        dbc = x_proj_l·conv                                                              (R+2N)
//   1 + 4l + 2        per channel: Δ, the filter, h ← exp(Δ'A)·h + Δ'·x·B, y = (C·h + D·x)·silu(z)   (E)
//   1 + 4l + 3        x += out_proj_l·y                                                                 (D)
//   1 + 4L            a = bf16(rmsnorm(x)·norm_f); logits = head·a                                     (V)
// Rows and channels are dealt to warps round robin over the blocks (warp w of block b is warp w·G + b), so a
// phase with fewer rows than warps still spreads over every SM. Each phase starts the next phases' weights
// and the per-channel vectors (the state, A, the conv's) into L2, so that DRAM streams across barriers.
//
// The ring kernel (kRing; MAMBASCOPE_DECODE_PERSISTENT=ring) has 15 consumer warps and a producer warp. The
// producer streams the block's weight rows of every projection phase (in_proj, x_proj, out_proj, the head:
// rows b, b + G, … of each) in phase order into shared-memory slots with bulk copies, independent of the grid
// barriers: only full slots stop it. The consumer warps run the phases as above (their grid barrier and block
// syncs are a named barrier that leaves the producer out) and read each row from its slots instead of global
// memory, the phase's input vector copied into shared memory first. Each consumer warp has a ring of its own
// (spw slots): row i of a phase belongs to warp i mod 15, as in the plain kernel, and the warp's j-th chunk
// (rows of ⌈2K / kRingChunk⌉ chunks) goes to its slot j mod spw in round j / spw. Slot s has two mbarriers:
// full[s] (the producer announces the bytes, the copy completes them) and empty[s] (the warp arrives when it
// has read the slot). One producer and one consumer per slot, each in order, so the parity of the round says
// which phase to wait for; both sides count each warp's chunks the same way, so no index is exchanged.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "cuda/conv_step.cuh"
#include "cuda/cuda_check.cuh"
#include "cuda/decode_mamba1.cuh"
#include "cuda/device_math.cuh"
#include "cuda/gemv_row.cuh"
#include "cuda/m1_step.cuh"
#include "cuda/rmsnorm.cuh"
#include "mambascope/env_switch.h"

namespace mambascope::kernels::cuda {
namespace {

using namespace detail;

constexpr int kDecWarps = 16;  // warps per block
constexpr int kDecThreads = 32 * kDecWarps;
constexpr int kDecodeBlocksPerSm =
    1;                         // resident blocks per SM (2 caps the registers at 64 and spills: slower)
constexpr int kDecConvK = 4;   // d_conv of every Mamba-1 checkpoint
constexpr int kRowsAhead = 4;  // a warp's weight rows on their way into L2 ahead of the one it reads
constexpr int kPhasesPerLayer = 4;
constexpr int64_t kDecMaxD = 4096;   // rmsnorm_bf16's warp-per-row order (gemv_rmsnorm's) holds up to here
constexpr int kConsumerBarrier = 1;  // the named barrier of the threads that run the phases (kWarps warps)
// The ring kernel: a producer warp after kRingConsumerWarps consumer warps; each slot one bulk copy of up to
// kRingChunk bytes (a whole row up to K = 2,048; longer rows take several slots in a row); as many slots per
// consumer warp as the shared memory holds beside the input vector, at most kRingSlotsPerWarpMax.
constexpr int kRingConsumerWarps = 15;   // with the producer 16 warps: 128 registers (17 took 96 and spilled)
constexpr int kRingSlotsPerWarpMax = 3;  // 45 slots, 180 KB
constexpr int kRingThreads = 32 * (kRingConsumerWarps + 1);
constexpr int64_t kRingChunk = 4096;
constexpr int64_t kRingChunkElems = kRingChunk / static_cast<int64_t>(sizeof(__nv_bfloat16));
constexpr int64_t kRingMaxVector = 16384;  // max(D, E): the input vector's shared copy (32 KB)
static_assert(kRingChunkElems % (32 * kGemvVec) == 0, "a lane's loads of a row must not straddle two slots");

// This warp's place in the grid: warp w of block b is warp w·G + b of nw = G·kWarps (the warps that run the
// phases: kDecWarps, or kRingConsumerWarps in the ring kernel).
struct Warp {
    int64_t gw, nw;
    int lane;
};

template <int kWarps>
__device__ __forceinline__ Warp this_warp() {
    Warp w;
    w.lane = threadIdx.x % 32;
    w.gw = static_cast<int64_t>(threadIdx.x / 32) * gridDim.x + blockIdx.x;
    w.nw = static_cast<int64_t>(gridDim.x) * kWarps;
    return w;
}

// The threads that run the phases (every thread of the plain kernel; the consumer warps of the ring kernel)
// wait for each other.
template <int kWarps>
__device__ __forceinline__ void consumers_sync() {
    named_barrier_sync(kConsumerBarrier, 32 * kWarps);
}

// Every block waits here until all G blocks have arrived `target / G` times (the counter starts at 0 each
// step). Thread 0 of each block arrives with a release add (the block's writes, ordered before it by
// __syncthreads, become visible at gpu scope) and spins on an acquire load, as cooperative groups' grid sync
// does. Not compiled for the CPU emulation, which runs one phase per launch.
template <int kWarps>
__device__ __forceinline__ void grid_barrier(unsigned* counter, unsigned target, long long* end_clock) {
#ifndef MAMBASCOPE_EMU
    consumers_sync<kWarps>();
    if (threadIdx.x == 0) {
        if (end_clock && blockIdx.x == 0) *end_clock = clock64();
        asm volatile("red.release.gpu.global.add.u32 [%0], %1;\n" ::"l"(counter), "r"(1u) : "memory");
        unsigned seen;
        do {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(seen) : "l"(counter) : "memory");
        } while (seen < target);
    }
    consumers_sync<kWarps>();
#else
    (void)counter, (void)target, (void)end_clock;
#endif
}

// Lane 0 starts `count` floats at p + first (16-byte aligned p, first % 4 == 0) into L2; nothing for null p.
__device__ __forceinline__ void prefetch_floats(const float* p, int64_t first, int64_t count) {
    if (p && count > 0 && reinterpret_cast<uintptr_t>(p + first) % 16 == 0)
        prefetch_l2(p + first, static_cast<unsigned>(count * static_cast<int64_t>(sizeof(float))));
}

// The warp's first kRowsAhead rows of W (N × K bf16), lane j starting row gw + j·nw, into L2 (a phase ahead
// of rows_loop, which keeps kRowsAhead rows ahead from there on).
__device__ __forceinline__ void prefetch_rows(const __nv_bfloat16* W, int64_t N, int64_t K, const Warp& w) {
    if (w.lane >= kRowsAhead) return;
    const int64_t n = w.gw + static_cast<int64_t>(w.lane) * w.nw;
    if (n < N) prefetch_l2(W + n * K, static_cast<unsigned>(K * static_cast<int64_t>(sizeof(__nv_bfloat16))));
}

// For this warp's rows n = gw, gw + nw, … of W (N × K bf16): acc = W[n]·a, then emit(n, acc) (every lane has
// acc). Two rows per pass (row_dot2), the last odd one alone; row i + kRowsAhead of the warp is started into
// L2 before row i is read (the first kRowsAhead were started a phase earlier by prefetch_rows).
template <typename TA, typename Emit>
__device__ __forceinline__ void rows_loop(int64_t N, int64_t K, const __nv_bfloat16* W, const TA* a,
                                          const Warp& w, Emit&& emit) {
    const unsigned bytes = static_cast<unsigned>(K * static_cast<int64_t>(sizeof(__nv_bfloat16)));
    int64_t n = w.gw;
    for (; n + w.nw < N; n += 2 * w.nw) {
        if (w.lane < 2) {
            const int64_t ahead = n + (kRowsAhead + w.lane) * w.nw;
            if (ahead < N) prefetch_l2(W + ahead * K, bytes);
        }
        float acc0, acc1;
        row_dot2(W + n * K, W + (n + w.nw) * K, a, K, w.lane, acc0, acc1);
        emit(n, acc0);
        emit(n + w.nw, acc1);
    }
    if (n < N) {
        const int64_t ahead = n + kRowsAhead * w.nw;
        if (w.lane == 0 && ahead < N) prefetch_l2(W + ahead * K, bytes);
        emit(n, row_dot(W + n * K, a, K, w.lane, true));
    }
}

// y[n] = W[n]·a (+ beta·y[n]) for this warp's rows: gemv_kernel's row (row_dot, vec).
template <typename TA, typename TY>
__device__ __forceinline__ void rows_phase(int64_t N, int64_t K, const __nv_bfloat16* W, const TA* a, TY* y,
                                           float beta, const Warp& w) {
    rows_loop(N, K, W, a, w, [&](int64_t n, float acc) {
        if (w.lane == 0) store(y + n, acc, beta);
    });
}

// a = bf16(x·rsqrt(Σx²/D + eps)·wn) into shared memory, the sum of squares in gemv_rmsnorm's warp-rows order
// (warp 0: sumsq4 of float4s lane, lane + 32, …; warp_sum), so a equals rmsnorm_bf16's row bit for bit.
template <int kWarps>
__device__ __forceinline__ void norm_to_shared(const float* x, const float* wn, float eps, int64_t D,
                                               __nv_bfloat16* a, float* total) {
    const int lane = threadIdx.x % 32;
    if (threadIdx.x < 32) {
        const float4* x4 = reinterpret_cast<const float4*>(x);
        float ss = 0.0f;
        for (int64_t i = lane; i < D / 4; i += 32) ss += sumsq4(x4[i]);
        ss = warp_sum(ss);
        if (lane == 0) *total = ss;
    }
    consumers_sync<kWarps>();
    const float inv = rsqrtf(*total / static_cast<float>(D) + eps);
    for (int64_t d = threadIdx.x; d < D; d += 32 * kWarps) a[d] = __float2bfloat16_rn(x[d] * inv * wn[d]);
    consumers_sync<kWarps>();
}

// Channel d of the depthwise conv for one token (conv_step.cuh: conv_kernel's T = 1 case, in its order), with
// in_d the channel's input as the bf16 chain stores it (in_proj's output rounded to bf16).
__device__ __forceinline__ void conv_channel(int64_t d, int64_t E, float in_d, const float* w,
                                             const float* bias, float* state, __nv_bfloat16* out16) {
    conv_step_finish<kDecConvK>(d, E, in_d, conv_step_load<kDecConvK>(d, E, w, bias, state), state, out16);
}

// The conv's weights, bias and state of this warp's 32 channels (c0 = gw·32) on their way into L2, a phase
// before the in_proj phase reads them.
__device__ __forceinline__ void prefetch_conv(const Mamba1DecodeLayer& L, int64_t E, const Warp& w) {
    const int64_t c0 = w.gw * 32;
    if (w.lane != 0 || c0 >= E) return;
    const int64_t rows = E - c0 < 32 ? E - c0 : 32;
    prefetch_floats(L.conv_w, c0 * kDecConvK, rows * kDecConvK);
    prefetch_floats(L.conv_b, c0, rows);
    for (int k = 0; k < kDecConvK - 1; ++k) prefetch_floats(L.conv_state, k * E + c0, rows);
}

// Row n of in_proj with the conv folded in (one thread): the row rounded to bf16 as the chain stores it, and
// for n < E channel n's conv on it, so the conv needs no phase (and no grid barrier) of its own.
__device__ __forceinline__ void in_proj_conv_emit(const Mamba1DecodeArgs& a, const Mamba1DecodeLayer& L,
                                                  int64_t n, float acc) {
    const __nv_bfloat16 p16 = __float2bfloat16_rn(acc);  // store(): the row as the bf16 chain keeps it
    a.proj16[n] = p16;
    if (n < a.E) conv_channel(n, a.E, __bfloat162float(p16), L.conv_w, L.conv_b, L.conv_state, a.conv16);
}

// in_proj (2E rows) with the conv folded in (in_proj_conv_emit by the row's lane 0).
__device__ __forceinline__ void in_proj_conv_phase(const Mamba1DecodeArgs& a, const Mamba1DecodeLayer& L,
                                                   const __nv_bfloat16* an, const Warp& w) {
    rows_loop(2 * a.E, a.D, L.in_proj, an, w, [&](int64_t n, float acc) {
        if (w.lane == 0) in_proj_conv_emit(a, L, n, acc);
    });
}

// The rings of the ring kernel (shared memory): spw slots of kRingChunk bytes per consumer warp (warp w's are
// w·spw … w·spw + spw − 1) and their two mbarriers each.
struct Ring {
    char* slots = nullptr;
    unsigned long long* full = nullptr;
    unsigned long long* empty = nullptr;
    unsigned spw = 1;
};

// The weight rows phase ph reads (none for the embedding and the scan step).
struct PhaseRows {
    const __nv_bfloat16* W = nullptr;
    int64_t N = 0, K = 0;
};
__device__ __forceinline__ PhaseRows phase_rows(const Mamba1DecodeArgs& a, int ph) {
    const int head_phase = 1 + static_cast<int>(a.n_layer) * kPhasesPerLayer;
    if (ph == head_phase) return {a.head, a.V, a.D};
    if (ph <= 0 || ph > head_phase) return {};
    const Mamba1DecodeLayer& L = a.layers[(ph - 1) / kPhasesPerLayer];
    switch ((ph - 1) % kPhasesPerLayer) {
        case 0:
            return {L.in_proj, 2 * a.E, a.D};
        case 1:
            return {L.x_proj, a.R + 2 * a.N, a.E};
        case 3:
            return {L.out_proj, a.D, a.E};
        default:
            return {};
    }
}
// This block's rows of N (rows b, b + G, …) and a row's chunks.
__device__ __forceinline__ int64_t block_rows(int64_t N) {
    const int64_t b = blockIdx.x, G = gridDim.x;
    return N > b ? (N - b + G - 1) / G : 0;
}
__device__ __forceinline__ int64_t row_chunks(int64_t K) {
    return (K * static_cast<int64_t>(sizeof(__nv_bfloat16)) + kRingChunk - 1) / kRingChunk;
}

// The producer (one thread): every chunk of this block's rows of phases [pb, pe), in order, into the slots
// of the row's warp (row i of a phase: warp i mod kWarps). Before refilling a slot it waits for the slot's
// previous chunk to have been read (empty, that round's parity); it announces the chunk's bytes on full and
// starts the copy, which completes them. made[w]: warp w's chunks so far.
template <int kWarps>
__device__ void ring_produce(const Mamba1DecodeArgs& a, int pb, int pe, const Ring& r) {
    uint32_t made[kWarps] = {};
    for (int ph = pb; ph < pe; ++ph) {
        const PhaseRows m = phase_rows(a, ph);
        if (!m.W) continue;
        const int64_t rows = block_rows(m.N), nch = row_chunks(m.K);
        const int64_t row_bytes = m.K * static_cast<int64_t>(sizeof(__nv_bfloat16));
        for (int64_t i = 0; i < rows; ++i) {
            const char* src = reinterpret_cast<const char*>(m.W + (blockIdx.x + i * gridDim.x) * m.K);
            const int w = static_cast<int>(i % kWarps);
            for (int64_t j = 0; j < nch; ++j) {
                const uint32_t c = made[w]++;
                const unsigned s = w * r.spw + c % r.spw;
                const uint32_t round = c / r.spw;
                if (round > 0) mbar_wait(&r.empty[s], (round - 1) & 1);
                const int64_t off = j * kRingChunk;
                const unsigned bytes = static_cast<unsigned>(min(kRingChunk, row_bytes - off));
                mbar_arrive_expect_tx(&r.full[s], bytes);
                bulk_copy_to_shared(r.slots + s * kRingChunk, src + off, bytes, &r.full[s]);
            }
        }
    }
}

// A consumer warp's rows of a projection phase from its slots: for this block's rows i = warp, warp + kWarps,
// … (row n = b + i·G, as the plain kernel deals them) acc = W[n]·act in row_dot's order (lane l adds elements
// 8l … 8l + 7, then 8l + 256 …; a slot holds a whole number of a lane's steps), then emit(n, acc) in every
// lane. used: this warp's chunks so far (the same in its every lane), advanced here.
template <int kWarps, typename Emit>
__device__ __forceinline__ void ring_rows(int64_t N, int64_t K, const __nv_bfloat16* act, const Ring& r,
                                          uint32_t& used, Emit&& emit) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t rows = block_rows(N), nch = row_chunks(K);
    for (int64_t i = warp; i < rows; i += kWarps) {
        float acc = 0.0f;
        for (int64_t j = 0; j < nch; ++j, ++used) {
            const unsigned s = warp * r.spw + used % r.spw;
            mbar_wait(&r.full[s], (used / r.spw) & 1);
            const __nv_bfloat16* w = reinterpret_cast<const __nv_bfloat16*>(r.slots + s * kRingChunk);
            const __nv_bfloat16* av = act + j * kRingChunkElems;
            acc = row_dot_steps(w, av, min(kRingChunkElems, K - j * kRingChunkElems), lane, acc);
            __syncwarp();
            if (lane == 0) mbar_arrive(&r.empty[s]);
        }
        acc = warp_sum(acc);
        emit(static_cast<int64_t>(blockIdx.x) + i * gridDim.x, acc);
    }
}

// dst[0, n) = src[0, n) (bf16, n % 8 == 0, both 16-byte aligned) by the consumer threads, read through L2
// (src was written by other blocks this step), then a consumer sync.
template <int kWarps>
__device__ __forceinline__ void vector_to_shared(const __nv_bfloat16* src, int64_t n, __nv_bfloat16* dst) {
    for (int64_t i = threadIdx.x; i < n / 8; i += 32 * kWarps)
        reinterpret_cast<uint4*>(dst)[i] = __ldcg(reinterpret_cast<const uint4*>(src) + i);
    consumers_sync<kWarps>();
}

// A projection phase of the ring kernel: y[n] = W[n]·act (+ beta·y[n]) for this block's rows of N, W's rows
// from the ring; the input vector first copied from src into act (src null: act already holds it).
template <int kWarps, typename TY>
__device__ __forceinline__ void ring_phase(const __nv_bfloat16* src, int64_t N, int64_t K, __nv_bfloat16* act,
                                           const Ring& r, uint32_t& used, TY* y, float beta) {
    if (src) vector_to_shared<kWarps>(src, K, act);
    ring_rows<kWarps>(N, K, act, r, used, [&](int64_t n, float acc) {
        if (threadIdx.x % 32 == 0) store(y + n, acc, beta);
    });
}

// Phases [phase_begin, phase_end) of one step (the GPU runs all of them in one launch; the CPU emulation one
// per launch). Dynamic shared memory: D bf16 (plain); the ring's a.ring_slots slots, then max(D, E) bf16
// (kRing).
// kMinBlocks: blocks per SM the registers must allow (__launch_bounds__), 1 or 2
// (MAMBASCOPE_DECODE_BLOCKS_PER_SM). kRing: the ring kernel (a producer warp; kRingThreads threads).
template <bool kFastExp, int kMinBlocks, bool kRing>
__global__ void __launch_bounds__(kRing ? kRingThreads : kDecThreads, kMinBlocks)
    decode_mamba1_kernel(Mamba1DecodeArgs a, int phase_begin, int phase_end) {
    extern __shared__ __align__(16) float smem[];
    constexpr int kWarps = kRing ? kRingConsumerWarps : kDecWarps;  // the warps that run the phases
    __shared__ float norm_total;
    constexpr int kSlotsMax = kRing ? kRingConsumerWarps * kRingSlotsPerWarpMax : 1;
    __shared__ unsigned long long ring_full[kSlotsMax], ring_empty[kSlotsMax];
    Ring ring;
    __nv_bfloat16* an = reinterpret_cast<__nv_bfloat16*>(smem);  // the normalised row (D) / input vector
    if constexpr (kRing) {
        ring.spw = static_cast<unsigned>(a.ring_slots);
        ring.slots = reinterpret_cast<char*>(smem);
        ring.full = ring_full, ring.empty = ring_empty;
        const unsigned ns = ring.spw * kWarps;
        an = reinterpret_cast<__nv_bfloat16*>(ring.slots + ns * kRingChunk);
        if (threadIdx.x == 0) {
            for (unsigned i = 0; i < ns; ++i) mbar_init(&ring_full[i], 1), mbar_init(&ring_empty[i], 1);
            mbar_init_fence();
        }
        __syncthreads();  // the last barrier of the whole block: the producer warp leaves here
        if (threadIdx.x >= 32 * kWarps) {
            if (threadIdx.x == 32 * kWarps) ring_produce<kWarps>(a, phase_begin, phase_end, ring);
            return;
        }
    }
    uint32_t used = 0;  // kRing: this warp's chunks so far
    const Warp w = this_warp<kWarps>();
    const int64_t D = a.D, E = a.E, R = a.R, NB = a.R + 2 * a.N;
    const int head_phase = 1 + static_cast<int>(a.n_layer) * kPhasesPerLayer;
    unsigned target = 0;
    for (int ph = phase_begin; ph < phase_end; ++ph) {
        if (ph > phase_begin)
            grid_barrier<kWarps>(a.barrier, target += gridDim.x,
                                 a.phase_clock ? a.phase_clock + 2 * ph - 1 : nullptr);
        if (a.phase_clock && blockIdx.x == 0 && threadIdx.x == 0) a.phase_clock[2 * ph] = clock64();
        if (ph == 0) {  // the embedding; the first layer's in_proj rows on their way
            const int64_t id = *a.id;
            for (int64_t d = w.gw * 32 + w.lane; d < D; d += w.nw * 32) a.x[d] = a.embedding[id * D + d];
            if (!kRing) prefetch_rows(a.layers[0].in_proj, 2 * E, D, w);
            prefetch_conv(a.layers[0], E, w);
            continue;
        }
        if (ph == head_phase) {
            norm_to_shared<kWarps>(a.x, a.norm_f, a.eps, D, an, &norm_total);
            if constexpr (kRing)
                ring_phase<kWarps>(nullptr, a.V, D, an, ring, used, a.logits, 0.0f);
            else
                rows_phase(a.V, D, a.head, an, a.logits, 0.0f, w);
            continue;
        }
        const int64_t l = (ph - 1) / kPhasesPerLayer;
        const Mamba1DecodeLayer& L = a.layers[l];
        switch ((ph - 1) % kPhasesPerLayer) {
            case 0: {  // RMSNorm + in_proj + the conv; x_proj's and out_proj's rows and this warp's channels'
                       // per-channel vectors on their way (read two and three phases on)
                if (!kRing) {
                    prefetch_rows(L.x_proj, NB, E, w);
                    prefetch_rows(L.out_proj, D, E, w);
                }
                const int64_t c0 = w.gw * 32;
                if (w.lane == 0 && c0 < E) {
                    const int64_t rows = E - c0 < 32 ? E - c0 : 32;
                    if (R % 4 == 0) prefetch_floats(L.dt_proj_w, c0 * R, rows * R);
                    prefetch_floats(L.A, c0 * kStepN, rows * kStepN);
                    prefetch_floats(L.h, c0 * kStepN, rows * kStepN);
                    prefetch_floats(L.Dskip, c0, rows);
                    prefetch_floats(L.dt_proj_b, c0, rows);
                    prefetch_floats(L.thr, c0, rows);
                }
                norm_to_shared<kWarps>(a.x, L.norm, a.eps, D, an, &norm_total);
                if constexpr (kRing)
                    ring_rows<kWarps>(2 * E, D, an, ring, used, [&](int64_t n, float acc) {
                        if (w.lane == 0) in_proj_conv_emit(a, L, n, acc);
                    });
                else
                    in_proj_conv_phase(a, L, an, w);
                break;
            }
            case 1:  // x_proj: dt's low-rank input, B, C
                if constexpr (kRing) {
                    ring_phase<kWarps>(a.conv16, NB, E, an, ring, used, a.dbc16, 0.0f);
                } else {
                    rows_phase(NB, E, L.x_proj, a.conv16, a.dbc16, 0.0f, w);
                }
                break;
            case 2: {  // the scan step, dt_proj fused (m1_step's arithmetic)
                M1StepIn<__nv_bfloat16> s;
                s.x = a.conv16, s.z = a.proj16 + E, s.low = a.dbc16, s.B = a.dbc16 + R,
                s.C = a.dbc16 + R + a.N;
                s.dt_w = L.dt_proj_w, s.R = R, s.A = L.A, s.bias = L.dt_proj_b, s.softplus = 1, s.thr = L.thr;
                s.Dskip = L.Dskip, s.y16 = a.y16;
                for (int64_t d = w.gw * 32 + w.lane; d < E; d += w.nw * 32)
                    m1_step_channel<kFastExp>(s, d, L.h);
                break;
            }
            default:  // out_proj + the residual; the next layer's (or the head's) first rows on their way
                if constexpr (kRing) {
                    ring_phase<kWarps>(a.y16, D, E, an, ring, used, a.x, 1.0f);
                } else {
                    rows_phase(D, E, L.out_proj, a.y16, a.x, 1.0f, w);
                }
                if (l + 1 < a.n_layer) {
                    if (!kRing) prefetch_rows(a.layers[l + 1].in_proj, 2 * E, D, w);
                    prefetch_conv(a.layers[l + 1], E, w);
                } else if (!kRing) {
                    prefetch_rows(a.head, a.V, D, w);
                }
                break;
        }
    }
    if (a.phase_clock) {  // the last phase's end
        consumers_sync<kWarps>();
        if (blockIdx.x == 0 && threadIdx.x == 0) a.phase_clock[2 * phase_end - 1] = clock64();
    }
}

// The ring's slots per consumer warp (a.ring_slots, or as many as the block's shared memory holds beside the
// input vector and the kernel's static shared memory, at most kRingSlotsPerWarpMax) and the input vector's
// bytes.
size_t ring_vector_bytes(const Mamba1DecodeArgs& a) {
    return static_cast<size_t>(std::max(a.D, a.E)) * sizeof(__nv_bfloat16);
}
template <bool kFastExp>
int ring_slots_for(const Mamba1DecodeArgs& a) {
    if (a.ring_slots > 0) return std::min(a.ring_slots, kRingSlotsPerWarpMax);
#ifdef MAMBASCOPE_EMU
    return kRingSlotsPerWarpMax;
#else
    int dev = 0, optin = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    cudaFuncAttributes attr{};
    CUDA_CHECK(cudaFuncGetAttributes(&attr, decode_mamba1_kernel<kFastExp, 1, true>));
    const int64_t room = int64_t{optin} - static_cast<int64_t>(attr.sharedSizeBytes) -
                         static_cast<int64_t>(ring_vector_bytes(a));
    return static_cast<int>(
        std::min<int64_t>(kRingSlotsPerWarpMax, room / (kRingChunk * kRingConsumerWarps)));
#endif
}

size_t smem_of(const Mamba1DecodeArgs& a, bool ring) {
    if (ring)
        return static_cast<size_t>(a.ring_slots) * kRingConsumerWarps * kRingChunk + ring_vector_bytes(a);
    return static_cast<size_t>(a.D) * sizeof(__nv_bfloat16);
}

// MAMBASCOPE_DECODE_BLOCKS_PER_SM=n (1-4): blocks per SM for A/B runs, still capped by the occupancy.
int blocks_per_sm_asked() {
    const std::string v = env_choice("MAMBASCOPE_DECODE_BLOCKS_PER_SM", {"", "1", "2", "3", "4"},
                                     "it sets the persistent decode kernel's blocks per SM (docs/cuda.md, "
                                     "\"The persistent decode kernel\")");
    return v.empty() ? kDecodeBlocksPerSm : std::stoi(v);
}

// `a` with ring_slots resolved (kRing).
template <bool kFastExp, int kMinBlocks, bool kRing>
void launch(Mamba1DecodeArgs a, cudaStream_t stream, int blocks) {
    const int phases = decode_mamba1_phases(a.n_layer);
    if (kRing) {
        a.ring_slots = ring_slots_for<kFastExp>(a);
        MS_CHECK(a.ring_slots >= 1, "decode_mamba1_step: no room for the ring in shared memory");
    }
    const size_t smem = smem_of(a, kRing);
    const int threads = kRing ? kRingThreads : kDecThreads;
#ifdef MAMBASCOPE_EMU
    // the CPU emulation runs blocks one after another, so a grid barrier cannot work: one launch per phase
    // (a launch boundary is the barrier) checks every phase's indexing and arithmetic
    for (int ph = 0; ph < phases; ++ph)
        decode_mamba1_kernel<kFastExp, kMinBlocks, kRing><<<blocks, threads, smem, stream>>>(a, ph, ph + 1);
#else
    if (kRing)
        CUDA_CHECK(cudaFuncSetAttribute(decode_mamba1_kernel<kFastExp, kMinBlocks, kRing>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    CUDA_CHECK(cudaMemsetAsync(a.barrier, 0, sizeof(unsigned), stream));
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(static_cast<unsigned>(blocks));
    cfg.blockDim = dim3(static_cast<unsigned>(threads));
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeCooperative;  // every block resident at once, or the launch fails
    attr[0].val.cooperative = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    CUDA_CHECK(cudaLaunchKernelEx(&cfg, decode_mamba1_kernel<kFastExp, kMinBlocks, kRing>, a, 0, phases));
#endif
    CUDA_CHECK(cudaGetLastError());
}

}  // namespace

std::string decode_mamba1_unsupported(const Mamba1DecodeArgs& a,
                                      const std::vector<Mamba1DecodeLayer>& layers) {
    const auto a16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    if (a.N != kStepN) return "d_state is not 16";
    if (a.K != kDecConvK) return "d_conv is not 4";
    if (a.D % 8 || a.E % 8 || (a.R + 2 * a.N) % 8)
        return "d_model, d_inner or dt_rank + 2·d_state not a multiple of 8";
    if (a.D > kDecMaxD) return "d_model above 4096";
    if (a.ring) {
        if (std::max(a.D, a.E) > kRingMaxVector) return "the ring kernel: max(d_model, d_inner) above 16384";
#ifndef MAMBASCOPE_EMU
        int dev = 0, major = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
        if (major < 9) return "the ring kernel needs compute capability 9.0 (bulk copies, mbarriers)";
#endif
    }
    if (a.R < 1 || a.V < 1) return "no dt_rank or no head rows";
    if (a.n_layer < 1 || static_cast<int64_t>(layers.size()) != a.n_layer || !a.layers) return "no layers";
    if (!a16(a.x) || !a16(a.proj16) || !a16(a.conv16) || !a16(a.dbc16) || !a16(a.y16) || !a16(a.head) ||
        !a.id || !a.embedding || !a.logits || !a.barrier)
        return "a buffer is missing or not on a 16-byte boundary";
    // the step graph's norms take rmsnorm_bf16's warp-rows order for these rows (else its block order)
    if (!detail::rmsnorm_takes_warp_rows(a.D, a.x, a.D, a.norm_f))
        return "the final norm takes the block order";
    for (const Mamba1DecodeLayer& L : layers) {
        if (!a16(L.in_proj) || !a16(L.x_proj) || !a16(L.out_proj))
            return "a bf16 weight not on a 16-byte boundary";
        if (!L.conv_w || !L.dt_proj_w || !L.A || !L.h || !L.conv_state || !L.norm)
            return "a layer pointer is missing";
        if (!detail::rmsnorm_takes_warp_rows(a.D, a.x, a.D, L.norm))
            return "a layer norm takes the block order";
    }
    return "";
}

namespace {
// Resident blocks per SM of the instantiation a grid of `asked` blocks per SM runs (the smaller of the
// fast-exp and exact-exp kernels', with the most dynamic shared memory a supported shape takes).
template <int kMinBlocks>
int resident_per_sm() {
    int fast = 0, exact = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &fast, decode_mamba1_kernel<true, kMinBlocks, false>, kDecThreads, kDecMaxD * sizeof(__nv_bfloat16)));
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&exact,
                                                             decode_mamba1_kernel<false, kMinBlocks, false>,
                                                             kDecThreads, kDecMaxD * sizeof(__nv_bfloat16)));
    return std::min(fast, exact);
}
}  // namespace

int decode_mamba1_phases(int64_t n_layer) {
    return 2 + static_cast<int>(n_layer) * kPhasesPerLayer;
}

int decode_mamba1_blocks(bool ring) {
    int dev = 0, sms = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    if (ring) return sms;  // one block per SM: the ring takes the shared memory (launch checks it fits)
    const int asked = blocks_per_sm_asked();
    const int per_sm = asked >= 2 ? resident_per_sm<2>() : resident_per_sm<1>();
    MS_CHECK(per_sm >= 1, "the persistent decode kernel does not fit on an SM");
    return sms * std::min(per_sm, asked);
}

void decode_mamba1_step(const Mamba1DecodeArgs& a, cudaStream_t stream, int blocks) {
    MS_CHECK(a.layers && a.n_layer >= 1 && a.D > 0 && a.D <= kDecMaxD && a.E > 0 && a.N == kStepN &&
                 a.K == kDecConvK,
             "decode_mamba1_step: unsupported shape (decode_mamba1_unsupported says why)");
    MS_CHECK(blocks >= 0, "decode_mamba1_step: negative grid");
    if (blocks == 0) blocks = decode_mamba1_blocks(a.ring);
    if (a.ring) {
        a.fast_exp ? launch<true, 1, true>(a, stream, blocks) : launch<false, 1, true>(a, stream, blocks);
        return;
    }
    // the kernel compiled for as many blocks per SM as asked (its registers capped to fit them)
    const bool two = blocks_per_sm_asked() >= 2;
    if (a.fast_exp)
        two ? launch<true, 2, false>(a, stream, blocks) : launch<true, 1, false>(a, stream, blocks);
    else
        two ? launch<false, 2, false>(a, stream, blocks) : launch<false, 1, false>(a, stream, blocks);
}

}  // namespace mambascope::kernels::cuda
