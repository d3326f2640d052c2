// Mamba-2 chunked SSD scan on tensor cores; see scan_mamba2_ssd.cuh for the design, method doc §9.2 for the
// derivation. Per head h (scalar A), chunk c of Q tokens, positions i, j inside it:
//   Δ'_j   = Δ_j > thr ? Δ_j : 0                  l_i = Σ_{k≤i} Δ'_k·A            (within the chunk)
//   Y_i    = Σ_{j≤i} (C_i·B_j)·exp(l_i − l_j)·Δ'_j·x_j + exp(l_i)·C_i·S_c + D·x_i
//   ΔS_c   = Σ_j exp(l_last − l_j)·Δ'_j·x_j B_jᵀ     S_{c+1} = exp(l_last)·S_c + ΔS_c
// Rounding (mirrored by kernels/cpu/scan_ssd.cpp): X, B, C, the weighted w·X, the masked L∘CB and S_c are
// rounded to bf16 as they are staged (B and C once per group, S_c by the chain, which writes it in bf16);
// every product accumulates in fp32; Δ', l, the chain of states, the exp(l) row scale of C·S_cᵀ and the D·x
// skip stay fp32.
//
// Cost per (chunk, head), Q = 64, P = 64, N = 128 (mamba2-130m / 1.3b): L·X 2·Q²·P = 0.5 MFLOP, C·Sᵀ 2·Q·N·P
// = 1.0 M, Xᵀ·B 2·Q·P·N = 1.0 M, plus C·Bᵀ 2·Q²·N = 1.0 M per (chunk, group) (lower triangle of 16×16 tiles:
// 10 of 16), shared by the H/G heads of the group. Memory: the entering states, bf16, written by the chain
// and read by the output kernel (4·P·N bytes per (chunk, head): 4·P·N/Q = 0.5 KB per (token, head) at Q =
// 64), the dominant HBM traffic; the fp32 chain itself stays in the tensor-core accumulators.
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "cuda/cuda_check.cuh"
#include "cuda/device_math.cuh"
#include "cuda/scan_mamba2_ssd.cuh"

namespace mambascope::kernels::cuda {
namespace {

using namespace detail;
namespace wmma = nvcuda::wmma;

constexpr int kQ = static_cast<int>(kSsdChunk);
constexpr int kSsdThreads = 256;  // 8 warps per block (group and output kernels)
constexpr int kPadBf16 = 8;       // row padding of bf16 tiles (16 B: ldmatrix rows on distinct banks)
// Row padding of fp32 tiles written by store_matrix_sync (P and 16 are multiples of 16, so row strides are
// ≡ 8 words mod 16): the 4 row groups of each half-warp's 8-byte accumulator stores fall on distinct banks.
constexpr int kPadF32 = 8;
constexpr int64_t kSsdMaxP = 128;
constexpr int64_t kSsdMaxN = 256;

using bf16 = __nv_bfloat16;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragAt = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBt = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragAcc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

struct Params {
    int64_t T, H, P, G, N, chunks, Tpad;
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
    float* dtp;      // Δ' (H, Tpad)
    float* lcum;     // l (H, Tpad): within-chunk inclusive cumulative Σ Δ'·A
    float* cb;       // (chunks, G, Q, Q): C·Bᵀ per group, fp32, from the group kernel
    bf16* b16;       // (Tpad, G, N): B rounded to bf16 (padding rows zero), from the group kernel
    bf16* c16;       // (Tpad, G, N): C rounded to bf16, likewise
    bf16* states16;  // (chunks, H, P, N): the state entering chunk c, bf16, from the chain
    // bf16 activations instead of x / Δ / B / C / y (the forward's bf16 chain): all four inputs or none.
    const bf16* x16;
    const bf16* delta16;
    const bf16* B16;
    const bf16* C16;
    bf16* y16;
    // Vector access: vec_x / vec_y: rows of x / y take 4-element accesses (fp32: float4, 16-byte base; bf16:
    // 8 bytes, 8-byte base; stride % 4 == 0); vec_b / vec_c: the staging's 16-byte loads (fp32: 4 values;
    // bf16: 8 values, stride % 8 == 0); vec8_x: bf16 x rows take 16-byte copies (8 values).
    bool vec_x, vec_b, vec_c, vec_y, vec8_x;
};

// bf16 fragment loads from shared memory. wmma::load_matrix_sync emits the generic-address form of
// wmma.load for bf16 operands (the fp32 accumulator loads and stores do get .shared), which the H200 SASS
// showed as generic 64-bit LDs plus MOVM transposes; the .shared form below takes a 32-bit shared address.
// The fragment is the PTX instruction's 4 × b32 registers (8 bf16 per lane for every 16×16×16 bf16 operand).
// The CPU emulation (tests/cuda/emu) defines MAMBASCOPE_EMU and uses load_matrix_sync.
#define SSD_LOAD_SHARED(FRAG, ABC, LAYOUT)                                                \
    __device__ __forceinline__ void load_shared(FRAG& f, const bf16* p, unsigned ld) {    \
        unsigned* r = reinterpret_cast<unsigned*>(&f.x[0]);                               \
        asm volatile("wmma.load." ABC ".sync.aligned." LAYOUT                             \
                     ".m16n16k16.shared.bf16 {%0, %1, %2, %3}, [%4], %5;"                 \
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])                     \
                     : "r"(static_cast<unsigned>(__cvta_generic_to_shared(p))), "r"(ld)); \
    }
#if defined(MAMBASCOPE_EMU)
template <class F>
void load_shared(F& f, const bf16* p, unsigned ld) {
    wmma::load_matrix_sync(f, p, ld);
}
#else
static_assert(sizeof(FragA) == 16 && sizeof(FragAt) == 16 && sizeof(FragB) == 16 && sizeof(FragBt) == 16,
              "a bf16 16x16x16 operand fragment is 4 registers per lane");
SSD_LOAD_SHARED(FragA, "a", "row")
SSD_LOAD_SHARED(FragAt, "a", "col")
SSD_LOAD_SHARED(FragB, "b", "row")
SSD_LOAD_SHARED(FragBt, "b", "col")
#endif
#undef SSD_LOAD_SHARED

__host__ __device__ constexpr size_t align128(size_t b) {
    return (b + 127) / 128 * 128;
}

// ---- 1. Δ', l and probes: grid (H, chunks), kQ threads
// -----------------------------------------------------
__global__ void __launch_bounds__(kQ) ssd_dt(Params p, ScanProbes probes) {
    __shared__ float sdt[kQ];
    __shared__ float sl[kQ];
    __shared__ int skept[kQ];
    const int64_t h = blockIdx.x, c = blockIdx.y;
    const int i = threadIdx.x;
    const int64_t t = c * kQ + i;
    const bool valid = t < p.T;
    const float thr = p.thr ? p.thr[h] : -INFINITY;
    const float raw = !valid      ? 0.0f
                      : p.delta16 ? bf16_to_f32(p.delta16 + t * p.ldd + h)
                                  : p.delta[t * p.ldd + h];
    float dt = raw + (p.delta_bias ? p.delta_bias[h] : 0.0f);
    if (p.softplus) dt = softplus(dt);
    const bool kept = valid && dt > thr;
    dt = kept ? dt : 0.0f;
    sdt[i] = dt;
    skept[i] = kept ? 1 : 0;
    p.dtp[h * p.Tpad + t] = dt;
    if (valid && p.delta_out) p.delta_out[t * p.ldo + h] = dt;
    __syncthreads();
    // One thread: the cumulative sum in token order (the CPU twin's order), into shared memory; the block
    // then writes it with one coalesced store per thread (64 dependent global stores from one thread cost
    // more than the sum: call 10 measured 1.7 ms of ssd_dt per mamba2-1.3b prefill of 16k tokens).
    if (i == 0) {
        const float a = p.A[h];
        float l = 0.0f;
        for (int k = 0; k < kQ; ++k) {
            l += sdt[k] * a;
            sl[k] = l;
        }
    }
    __syncthreads();
    p.lcum[h * p.Tpad + t] = sl[i];
    // The probes' sums (only when asked for), in double, token order.
    if (i != 0 || !(probes.delta_sum || probes.log_decay || probes.kept)) return;
    const float a = p.A[h];
    double dsum = 0.0, ldec = 0.0;
    long long nkept = 0;
    for (int k = 0; k < kQ; ++k) {
        dsum += sdt[k];
        ldec += static_cast<double>(sdt[k]) * a;
        nkept += skept[k];
    }
    if (probes.delta_sum) atomicAdd(probes.delta_sum + h, dsum);
    if (probes.log_decay) atomicAdd(probes.log_decay + h, ldec);
    if (probes.kept)
        atomicAdd(reinterpret_cast<unsigned long long*>(probes.kept + h),
                  static_cast<unsigned long long>(nkept));
}

// exp(x) for x ≤ 0 with rounding-level error near 0 (decays close to 1 multiply many inputs).
__device__ __forceinline__ float exp_decay(float x) {
    return exp2_accurate(x * kLog2e);
}

// Rows [0, kQ) of a row-major fp32 matrix (row r at src + r·ld, `cols` columns) into bf16 shared memory (row
// stride lds), rows ≥ valid as zeros. vec: cols % 4
// == 0 and every row 16-byte aligned: kSsdLoadsAhead float4 loads per thread are issued before any is used
// (the staging is bound by load latency, not arithmetic). Otherwise one scalar load per element.
constexpr int kSsdLoadsAhead = 4;

// Two fp32 values rounded to bf16 (nearest even) and packed, a in the low half (the lower address): one
// cvt.rn.bf16x2.f32. The staging is issue-bound (the second H200 profile: 70% of issue slots in the output
// kernel), and the integer rounding of f32_to_bf16_rn costs ≈ 6 instructions per value.
__device__ __forceinline__ unsigned pack_bf16x2(float a, float b) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<const unsigned*>(&v);
}

__device__ __forceinline__ void stage_bf16(const float* __restrict__ src, int64_t ld, int valid, int cols,
                                           bf16* dst, int lds, bool vec) {
    if (vec) {
        const int nq = cols / 4, total = kQ * nq;
        for (int base = threadIdx.x; base < total; base += kSsdThreads * kSsdLoadsAhead) {
            float4 v[kSsdLoadsAhead];
#pragma unroll
            for (int u = 0; u < kSsdLoadsAhead; ++u) {
                const int k = base + u * kSsdThreads, r = k / nq, q = k % nq;
                v[u] = k < total && r < valid ? *reinterpret_cast<const float4*>(src + r * ld + 4 * q)
                                              : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
#pragma unroll
            for (int u = 0; u < kSsdLoadsAhead; ++u) {
                const int k = base + u * kSsdThreads, r = k / nq, q = k % nq;
                if (k >= total) break;
                // 4 bf16 in one 8-byte store (2-byte stores at an 8-byte stride conflict on the banks)
                *reinterpret_cast<uint2*>(dst + r * lds + 4 * q) =
                    make_uint2(pack_bf16x2(v[u].x, v[u].y), pack_bf16x2(v[u].z, v[u].w));
            }
        }
    } else {
        for (int k = threadIdx.x; k < kQ * cols; k += kSsdThreads) {
            const int r = k / cols, n = k % cols;
            dst[r * lds + n] = f32_to_bf16_rn(r < valid ? src[r * ld + n] : 0.0f);
        }
    }
}

// The same for a bf16 source (the forward's bf16 chain): a copy. vec (cols % 8 == 0, rows 16-byte aligned):
// 16-byte cp.async copies, complete after the caller's cp_async_commit + wait and a barrier; otherwise
// element copies, visible after the barrier.
__device__ __forceinline__ void stage_copy_bf16(const bf16* __restrict__ src, int64_t ld, int valid, int cols,
                                                bf16* dst, int lds, bool vec) {
    if (vec) {
        const int nq = cols / 8, total = kQ * nq;
        for (int k = threadIdx.x; k < total; k += kSsdThreads) {
            const int r = k / nq, q = k % nq;
            cp_async_16(dst + r * lds + 8 * q, r < valid ? src + r * ld + 8 * q : src, r < valid);
        }
    } else {
        for (int k = threadIdx.x; k < kQ * cols; k += kSsdThreads) {
            const int r = k / cols, n = k % cols;
            dst[r * lds + n] = r < valid ? src[r * ld + n] : f32_to_bf16_rn(0.0f);
        }
    }
}

// Four values from 4 bf16 (8 bytes, the lower address first), and back (round to nearest even).
__device__ __forceinline__ float4 unpack_bf16x4(uint2 u) {
    return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u),
                       __uint_as_float(u.y << 16), __uint_as_float(u.y & 0xffff0000u));
}
__device__ __forceinline__ uint2 pack_bf16x4(float4 v) {
    return make_uint2(pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w));
}

// ---- 2. per group: C·Bᵀ and the bf16 copies of B and C: grid (G, chunks), kSsdThreads
// ---------------------- B and C are shared by the H/G heads of a group (mamba2-1.3b: 64 heads, one group),
// so their bf16 rounding and the Q×Q product C·Bᵀ are done once per (group, chunk) here instead of once per
// head in the state and output kernels. Writes cb (chunks, G, Q, Q) fp32 (the 10 lower-triangle 16×16 tiles;
// the output kernel reads no other) and b16, c16 (Tpad, G, N) bf16 (padding rows zero).
__global__ void __launch_bounds__(kSsdThreads) ssd_cb(Params p) {
    extern __shared__ __align__(16) float smem[];
    const int N = static_cast<int>(p.N), ldN = N + kPadBf16;
    bf16* sC = reinterpret_cast<bf16*>(smem);                                                    // (Q, ldN)
    bf16* sB = reinterpret_cast<bf16*>(reinterpret_cast<char*>(smem) + align128(kQ * ldN * 2));  // (Q, ldN)
    const int64_t g = blockIdx.x, c = blockIdx.y, t0 = c * kQ;
    const int tid = threadIdx.x, warp = tid / 32, nwarps = kSsdThreads / 32;
    const int valid = static_cast<int>(p.T - t0 < kQ ? p.T - t0 : kQ);
    if (p.C16) {  // bf16 inputs: copies
        stage_copy_bf16(p.C16 + t0 * p.ldc + g * p.N, p.ldc, valid, N, sC, ldN, p.vec_c);
        stage_copy_bf16(p.B16 + t0 * p.ldb + g * p.N, p.ldb, valid, N, sB, ldN, p.vec_b);
        cp_async_commit();
        cp_async_wait_all();
    } else {
        stage_bf16(p.C + t0 * p.ldc + g * p.N, p.ldc, valid, N, sC, ldN, p.vec_c);
        stage_bf16(p.B + t0 * p.ldb + g * p.N, p.ldb, valid, N, sB, ldN, p.vec_b);
    }
    __syncthreads();
    // The staged rows, 8 bf16 (16 bytes) per copy: N is a multiple of 16, so rows stay 16-byte aligned.
    const int nq = N / 8;
    const int64_t ldg = p.G * p.N;
    for (int k = tid; k < kQ * nq; k += kSsdThreads) {
        const int r = k / nq, q = k % nq;
        const int64_t o = (t0 + r) * ldg + g * p.N + 8 * q;
        *reinterpret_cast<uint4*>(p.c16 + o) = *reinterpret_cast<const uint4*>(sC + r * ldN + 8 * q);
        *reinterpret_cast<uint4*>(p.b16 + o) = *reinterpret_cast<const uint4*>(sB + r * ldN + 8 * q);
    }
    // C·Bᵀ on the lower triangle of 16×16 tiles (qj ≤ qi); K = N.
    constexpr int tq = kQ / 16;
    float* out = p.cb + (c * p.G + g) * kQ * kQ;
    for (int tile = warp; tile < tq * (tq + 1) / 2; tile += nwarps) {
        int qi = 0, rest = tile;
        while (rest > qi) rest -= ++qi;
        const int qj = rest;
        FragAcc acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int kk = 0; kk < N / 16; ++kk) {
            FragA a;   // C (Q×N) row-major
            FragBt b;  // Bᵀ (N×Q): element (n, j) = sB[j][n], column-major with ld = ldN
            load_shared(a, sC + qi * 16 * ldN + kk * 16, ldN);
            load_shared(b, sB + qj * 16 * ldN + kk * 16, ldN);
            wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(out + qi * 16 * kQ + qj * 16, acc, kQ, wmma::mem_row_major);
    }
}

// ---- 3. chunk states and the chain, fused: grid (H, P/16, ⌈N/kChainCols⌉), kChainThreads
// -------------------- Each warp owns one 16×16 tile of one head's state (rows p0.., columns n0..) and keeps
// it in its fp32 accumulator fragment for the whole sequence. Per chunk c: ΔS_c = (diag(w)·X)ᵀ·B on the
// tensor cores (K = Q) into a second fragment, write S_c (bf16, the output kernel's operand), then S_{c+1} =
// exp(l_last)·S_c + ΔS_c elementwise (one scalar decay per head and chunk; fragments of one type share their
// layout, so elementwise work needs no knowledge of it). No chunk state goes through memory in fp32 (the
// unfused pair wrote ΔS_c and read it back: 8·P·N bytes per chunk and head, the dominant traffic of the first
// H200 profile).
// The chain is sequential in c and a block has only 4 warps (mamba2-1.3b has 2048 state tiles in all, ≈ 16
// warps per SM), so its time is the latency of one chunk's step: the operands (x rows, B's columns, l and Δ')
// come through a kChainStages-deep ring of cp.async copies, issued two chunks ahead; a step only waits for
// its own, converts w·x to bf16 and multiplies.
constexpr int kChainWarps = 4;  // state column tiles per block
constexpr int kChainThreads = 32 * kChainWarps;
constexpr int kChainCols = 16 * kChainWarps;      // state columns per block
constexpr int kChainStages = 3;                   // ring depth: loads in flight for the next 2 chunks
constexpr int kChainLdX = 16 + kPadBf16;          // w·X tile (Q, 16 channels) bf16
constexpr int kChainLdB = kChainCols + kPadBf16;  // B slice (Q, kChainCols) bf16
constexpr int kChainLdT = 16 + kPadF32;           // a warp's fp32 tile
// x rows come as fp32 (4 per 16-byte piece) or, in the forward's bf16 chain, as bf16 (8 per piece).
template <bool kX16>
constexpr int kChainXPer = kX16 ? 8 : 4;
template <bool kX16>
constexpr int kChainXPieces = kQ * 16 / kChainXPer<kX16> / kChainThreads;  // 16-byte pieces of x per thread
constexpr int kChainBPieces = kQ * kChainCols / 8 / kChainThreads;  // 16-byte pieces of B per thread (4)
static_assert(kChainXPieces<false> * 4 * kChainThreads == kQ * 16 && kChainXPieces<true> == 1 &&
              kChainBPieces * 8 * kChainThreads == kQ * kChainCols && kChainThreads >= kQ / 2);
// One ring stage: x rows (Q, 16) fp32 or bf16, B bf16 (Q, kChainLdB), l and Δ' fp32 (Q each).
template <bool kX16>
constexpr size_t kChainStageX = size_t(kQ) * 16 * (kX16 ? 2 : 4);
constexpr size_t kChainStageB = size_t(kQ) * kChainLdB * 2;
template <bool kX16>
constexpr size_t kChainStageBytes = kChainStageX<kX16> + kChainStageB + 2 * size_t(kQ) * 4;
constexpr size_t kChainXwBytes = size_t(kQ) * kChainLdX * 2;
// ≈ 50 KB (fp32 x; ≈ 44 KB bf16): 4 blocks (16 warps) per SM.
template <bool kX16>
constexpr size_t kChainSmem = kChainStages* kChainStageBytes<kX16> + kChainXwBytes +
                              size_t(kChainWarps) * 16 * kChainLdT * 4;

// A warp's 16×16 fp32 tile, lane r/2 holding row r/2, columns 8·(r%2)..+8: the lane's part of a tile stored
// with store_matrix_sync at ld kChainLdT.
__device__ __forceinline__ uint4 tile_row8_bf16(const float* t, int lane) {
    const float4* v = reinterpret_cast<const float4*>(t + (lane / 2) * kChainLdT + (lane % 2) * 8);
    const float4 a = v[0], b = v[1];
    return make_uint4(pack_bf16x2(a.x, a.y), pack_bf16x2(a.z, a.w), pack_bf16x2(b.x, b.y),
                      pack_bf16x2(b.z, b.w));
}

// kX16: x comes in bf16 (p.x16).
template <bool kX16>
__global__ void __launch_bounds__(kChainThreads) ssd_state_chain(Params p, float* s) {
    extern __shared__ __align__(16) float smem[];
    using XT = std::conditional_t<kX16, bf16, float>;
    constexpr int kXPer = kChainXPer<kX16>, kXPieces = kChainXPieces<kX16>, kXRowPieces = 16 / kXPer;
    constexpr size_t kStage = kChainStageBytes<kX16>, kStageX = kChainStageX<kX16>;
    char* base = reinterpret_cast<char*>(smem);
    auto sx = [&](int st) { return reinterpret_cast<XT*>(base + st * kStage); };
    auto sb = [&](int st) { return reinterpret_cast<bf16*>(base + st * kStage + kStageX); };
    auto sl = [&](int st) { return reinterpret_cast<float*>(base + st * kStage + kStageX + kChainStageB); };
    auto sd = [&](int st) { return sl(st) + kQ; };
    bf16* sXw = reinterpret_cast<bf16*>(base + kChainStages * kStage);  // w·X (Q, kChainLdX)
    const int64_t h = blockIdx.x, g = h / (p.H / p.G), PN = p.P * p.N, ldg = p.G * p.N;
    const int N = static_cast<int>(p.N), p0 = 16 * static_cast<int>(blockIdx.y);
    const int nb = kChainCols * static_cast<int>(blockIdx.z);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int n0 = nb + 16 * warp;
    const bool active = n0 < N;  // N is a multiple of 16; the last block's spare warps only stage and sync
    float* tw =
        reinterpret_cast<float*>(base + kChainStages * kStage + kChainXwBytes) + warp * 16 * kChainLdT;

    // Chunk c's operands into ring stage st (zeros past the end; a group is committed either way, so that
    // cp_async_wait_group counts chunks). Each thread's source addresses for chunk 0 are fixed here; chunk c
    // adds c rows of kQ (the loop runs once per chunk in a latency-bound kernel: no 64-bit index products in
    // it).
    const XT* xbase;
    if constexpr (kX16)
        xbase = p.x16;
    else
        xbase = p.x;
    const bool vec_x = kX16 ? p.vec8_x : p.vec_x;
    const XT* xsrc[kXPieces];
    const bf16* bsrc[kChainBPieces];
#pragma unroll
    for (int v = 0; v < kXPieces; ++v) {
        const int k = tid + v * kChainThreads, j = k / kXRowPieces, q = k % kXRowPieces;
        xsrc[v] = xbase + j * p.ldx + h * p.P + p0 + kXPer * q;
    }
#pragma unroll
    for (int v = 0; v < kChainBPieces; ++v) {
        const int k = tid + v * kChainThreads, r = k / (kChainCols / 8), q = k % (kChainCols / 8);
        bsrc[v] = p.b16 + r * ldg + g * p.N + nb + 8 * q;
    }
    const bool is_l = tid < kQ / 4;  // threads < kQ/2 copy l (first half) and Δ' (second half), 4 per piece
    const int li4 = 4 * (is_l ? tid : tid - kQ / 4);
    const float* lsrc = (is_l ? p.lcum : p.dtp) + h * p.Tpad + li4;
    auto issue = [&](int64_t c, int st) {
        if (c < p.chunks) {
            const int64_t t0 = c * kQ, xo = t0 * p.ldx, bo = t0 * ldg;
#pragma unroll
            for (int v = 0; v < kXPieces; ++v) {
                const int k = tid + v * kChainThreads, j = k / kXRowPieces, q = k % kXRowPieces;
                const bool ok = t0 + j < p.T;
                XT* dst = sx(st) + j * 16 + kXPer * q;
                if (vec_x) {
                    cp_async_16(dst, ok ? xsrc[v] + xo : xbase, ok);
                } else if constexpr (kX16) {
                    // No 4-byte cp.async for 2-byte values: plain copies. This stage was last read by step
                    // c − 1, which every thread has finished (the barrier before issue), and it is read at
                    // step c + 2, after two more barriers.
                    for (int e = 0; e < kXPer; ++e) dst[e] = ok ? xsrc[v][xo + e] : f32_to_bf16_rn(0.0f);
                } else {
                    for (int e = 0; e < kXPer; ++e) cp_async_f32(dst + e, ok ? xsrc[v] + xo + e : xbase, ok);
                }
            }
#pragma unroll
            for (int v = 0; v < kChainBPieces; ++v) {
                const int k = tid + v * kChainThreads, r = k / (kChainCols / 8), q = k % (kChainCols / 8);
                const bool ok = nb + 8 * q < N;
                cp_async_16(sb(st) + r * kChainLdB + 8 * q, ok ? bsrc[v] + bo : p.b16, ok);
            }
            if (tid < kQ / 2) cp_async_16((is_l ? sl(st) : sd(st)) + li4, lsrc + t0, true);
        }
        cp_async_commit();
    };

    // The carried state in (fp32), through the warp's tile (no alignment demand on s beyond 4 bytes).
    const int64_t so = h * PN + static_cast<int64_t>(p0 + lane / 2) * N + n0 + (lane % 2) * 8;
    FragAcc acc;
    if (s && active) {
        for (int e = 0; e < 8; ++e) tw[(lane / 2) * kChainLdT + (lane % 2) * 8 + e] = s[so + e];
        __syncwarp();
        wmma::load_matrix_sync(acc, tw, kChainLdT, wmma::mem_row_major);
        __syncwarp();
    } else {
        wmma::fill_fragment(acc, 0.0f);
    }

    for (int k = 0; k < kChainStages - 1; ++k) issue(k, k);
    for (int64_t c = 0; c < p.chunks; ++c) {
        const int st = static_cast<int>(c % kChainStages);
        cp_async_wait_group<kChainStages - 2>();  // chunk c's copies are done; c + 1's may still fly
        __syncthreads();  // everyone's copies visible; step c − 1 is finished everywhere (its stage is free)
        issue(c + kChainStages - 1, static_cast<int>((c + kChainStages - 1) % kChainStages));
        const float* l = sl(st);
        const float* dt = sd(st);
        const float l_last = l[kQ - 1];
#pragma unroll
        for (int v = 0; v < kXPieces; ++v) {  // w_j·x_j in bf16; w's MUFU exp (2 ulp) is far below bf16
            const int k = tid + v * kChainThreads, j = k / kXRowPieces, q = k % kXRowPieces;
            const float w = ex2_approx((l_last - l[j]) * kLog2e) * dt[j];
            if constexpr (kX16) {  // 8 bf16 in, 8 out (16 bytes each)
                const uint4 u = *reinterpret_cast<const uint4*>(sx(st) + j * 16 + 8 * q);
                const float4 a = unpack_bf16x4(make_uint2(u.x, u.y)), b = unpack_bf16x4(make_uint2(u.z, u.w));
                const uint2 lo = pack_bf16x4(make_float4(a.x * w, a.y * w, a.z * w, a.w * w));
                const uint2 hi = pack_bf16x4(make_float4(b.x * w, b.y * w, b.z * w, b.w * w));
                *reinterpret_cast<uint4*>(sXw + j * kChainLdX + 8 * q) = make_uint4(lo.x, lo.y, hi.x, hi.y);
            } else {
                const float4 x = *reinterpret_cast<const float4*>(sx(st) + j * 16 + 4 * q);
                *reinterpret_cast<uint2*>(sXw + j * kChainLdX + 4 * q) =
                    make_uint2(pack_bf16x2(x.x * w, x.y * w), pack_bf16x2(x.z * w, x.w * w));
            }
        }
        __syncthreads();
        if (active) {
            FragAcc ds;  // ΔS_c
            wmma::fill_fragment(ds, 0.0f);
            for (int kk = 0; kk < kQ / 16; ++kk) {
                FragAt a;  // (w·X)ᵀ (16 channels × Q): element (p, j) = sXw[j][p], column-major
                FragB b;   // B (Q × 16 states), row-major
                load_shared(a, sXw + kk * 16 * kChainLdX, kChainLdX);
                load_shared(b, sb(st) + kk * 16 * kChainLdB + 16 * warp, kChainLdB);
                wmma::mma_sync(ds, a, b, ds);
            }
            // S_c, the state entering chunk c, in bf16 for the output kernel.
            wmma::store_matrix_sync(tw, acc, kChainLdT, wmma::mem_row_major);
            __syncwarp();
            *reinterpret_cast<uint4*>(p.states16 + c * p.H * PN + so) = tile_row8_bf16(tw, lane);
            __syncwarp();
            const float decay = exp_decay(l_last);  // S_{c+1} = exp(l_last)·S_c + ΔS_c
            for (int e = 0; e < acc.num_elements; ++e) acc.x[e] = decay * acc.x[e] + ds.x[e];
        }
    }
    cp_async_wait_all();  // nothing may be in flight into shared memory when the block exits
    if (s && active) {    // the final state out, fp32
        wmma::store_matrix_sync(tw, acc, kChainLdT, wmma::mem_row_major);
        __syncwarp();
        for (int e = 0; e < 8; ++e) s[so + e] = tw[(lane / 2) * kChainLdT + (lane % 2) * 8 + e];
    }
}

// ---- 4. outputs: grid (H, chunks), kSsdThreads
// ---------------------------------------------------------------- The shared memory holds C and S_c (bf16,
// copied by cp.async as the block starts), X (bf16), M = L∘C·Bᵀ (bf16) and exp(l). Y's fp32 tiles reuse C's
// space once every warp has its C·S_cᵀ products in registers: ≈ 53 KB at P = 64, N = 128, four blocks per SM.
struct OutLayout {
    int ldN, ldP, ldQ, ldF;
    size_t oC, oS, oX, oM, oel, bytes;
};

__host__ __device__ OutLayout out_layout(int P, int N) {
    OutLayout o{};
    o.ldN = N + kPadBf16, o.ldP = P + kPadBf16, o.ldQ = kQ + kPadBf16, o.ldF = P + kPadF32;
    size_t at = 0;
    o.oC = at;  // C (Q, ldN) bf16; later Y (Q, ldF) fp32
    at += align128(max(size_t(kQ) * o.ldN * 2, size_t(kQ) * o.ldF * 4));
    o.oS = at, at += align128(size_t(P) * o.ldN * 2);   // S_c (P, ldN) bf16
    o.oX = at, at += align128(size_t(kQ) * o.ldP * 2);  // X (Q, ldP) bf16
    o.oM = at, at += align128(size_t(kQ) * o.ldQ * 2);  // L∘CB (Q, ldQ) bf16
    o.oel = at, at += align128(kQ * 4);                 // exp(l)
    o.bytes = at;
    return o;
}

// kP, kN: the head and state sizes as compile-time constants (0: taken from p at run time). Every staging
// loop divides by them (row = k / cols); with constants those are shifts instead of ≈ 20-instruction integer
// divisions, in a kernel bound by its issue slots (the H200 profiles). Instantiated for the shape of the
// released Mamba-2 models (headdim 64, d_state 128) and generically. kX16: x comes in bf16 (p.x16).
template <int kP, int kN, bool kX16>
__global__ void __launch_bounds__(kSsdThreads) ssd_chunk_out(Params p) {
    extern __shared__ __align__(16) float smem[];
    const int P = kP ? kP : static_cast<int>(p.P), N = kN ? kN : static_cast<int>(p.N);
    const OutLayout o = out_layout(P, N);
    char* base = reinterpret_cast<char*>(smem);
    bf16* sC = reinterpret_cast<bf16*>(base + o.oC);
    float* sF = reinterpret_cast<float*>(base + o.oC);  // after the C·S_cᵀ products
    bf16* sS = reinterpret_cast<bf16*>(base + o.oS);
    bf16* sX = reinterpret_cast<bf16*>(base + o.oX);
    bf16* sM = reinterpret_cast<bf16*>(base + o.oM);
    float* sel = reinterpret_cast<float*>(base + o.oel);
    const int64_t h = blockIdx.x, c = blockIdx.y, g = h / (p.H / p.G), ldg = p.G * N;
    const int64_t t0 = c * kQ;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, nwarps = kSsdThreads / 32;
    constexpr int tq = kQ / 16;
    const float* lh = p.lcum + h * p.Tpad + t0;
    const float* dh = p.dtp + h * p.Tpad + t0;

    // C (bf16, from the group kernel) and S_c (bf16, from the chain): 16-byte asynchronous copies, in flight
    // while X is staged and M computed (N % 16 == 0: 8 bf16 per copy, rows 16-byte aligned).
    const int nq = N / 8;
    for (int k = tid; k < kQ * nq; k += kSsdThreads) {
        const int r = k / nq, q = k % nq;
        cp_async_16(sC + r * o.ldN + 8 * q, p.c16 + (t0 + r) * ldg + g * N + 8 * q, true);
    }
    const bf16* S = p.states16 + (c * p.H + h) * P * N;
    for (int k = tid; k < P * nq; k += kSsdThreads) {
        const int r = k / nq, q = k % nq;
        cp_async_16(sS + r * o.ldN + 8 * q, S + 8 * k, true);
    }
    const int valid = static_cast<int>(p.T - t0 < kQ ? p.T - t0 : kQ);
    if constexpr (kX16) stage_copy_bf16(p.x16 + t0 * p.ldx + h * P, p.ldx, valid, P, sX, o.ldP, p.vec8_x);
    cp_async_commit();
    if (tid < kQ) sel[tid] = exp_decay(lh[tid]);
    if constexpr (!kX16) stage_bf16(p.x + t0 * p.ldx + h * P, p.ldx, valid, P, sX, o.ldP, p.vec_x);

    // M = L ∘ C·Bᵀ (causal; L_ij = exp(l_i − l_j)·Δ'_j), C·Bᵀ from the group kernel, l and Δ' read directly
    // (every load of the loop is issued before the first use). Lane jp of every warp owns the columns
    // j = 2·jp, j + 1 (one 8-byte load, one cvt per row), the warps split the rows. (i, j + 1) with j + 1 > i
    // lies in a diagonal tile, which the group kernel wrote. The L mask goes through the MUFU ex2 (2 ulp),
    // since M is rounded to bf16 right after.
    static_assert(kQ == 64, "one warp spans a row of M in pairs");
    {
        constexpr int kRows = kQ / (kSsdThreads / 32);
        const float* cb = p.cb + (c * p.G + g) * kQ * kQ;
        const int j = 2 * lane;
        const float lj0 = lh[j] * kLog2e, lj1 = lh[j + 1] * kLog2e, d0 = dh[j], d1 = dh[j + 1];
        float2 v[kRows];
        float li[kRows];
#pragma unroll
        for (int u = 0; u < kRows; ++u) {
            const int i = warp + u * nwarps;
            v[u] = j <= i ? *reinterpret_cast<const float2*>(cb + i * kQ + j) : make_float2(0.0f, 0.0f);
            li[u] = lh[i] * kLog2e;
        }
#pragma unroll
        for (int u = 0; u < kRows; ++u) {
            const int i = warp + u * nwarps;
            const float m0 = j <= i ? v[u].x * ex2_approx(li[u] - lj0) * d0 : 0.0f;
            const float m1 = j + 1 <= i ? v[u].y * ex2_approx(li[u] - lj1) * d1 : 0.0f;
            *reinterpret_cast<unsigned*>(sM + i * o.ldQ + j) = pack_bf16x2(m0, m1);
        }
    }
    cp_async_wait_all();
    __syncthreads();

    // Y = diag(exp(l))·(C·S_cᵀ) (K = N) + M·X (K = the causal part), tiles (qi, pi) over the warps. First
    // every warp's C·S_cᵀ tiles into registers, so that C's space can then take Y's fp32 tiles; the row scale
    // exp(l_i) is applied to the stored tile (the fragment's layout is opaque), then M·X accumulates on top.
    const int tp = P / 16;
    constexpr int kTiles = (tq * (kP ? kP : int(kSsdMaxP)) / 16 + kSsdThreads / 32 - 1) / (kSsdThreads / 32);
    FragAcc acc[kTiles];
#pragma unroll
    for (int u = 0; u < kTiles; ++u) {
        const int tile = warp + u * nwarps;
        if (tile >= tq * tp) break;
        const int qi = tile / tp, pi = tile % tp;
        wmma::fill_fragment(acc[u], 0.0f);
        for (int kk = 0; kk < N / 16; ++kk) {
            FragA a;   // C (Q×N) row-major
            FragBt b;  // Sᵀ (N×P): element (n, p) = sS[p][n], column-major with ld = ldN
            load_shared(a, sC + qi * 16 * o.ldN + kk * 16, o.ldN);
            load_shared(b, sS + pi * 16 * o.ldN + kk * 16, o.ldN);
            wmma::mma_sync(acc[u], a, b, acc[u]);
        }
    }
    __syncthreads();  // C is no longer read: its space takes Y
#pragma unroll
    for (int u = 0; u < kTiles; ++u) {
        const int tile = warp + u * nwarps;
        if (tile >= tq * tp) break;
        const int qi = tile / tp, pi = tile % tp;
        float* tF = sF + qi * 16 * o.ldF + pi * 16;
        wmma::store_matrix_sync(tF, acc[u], o.ldF, wmma::mem_row_major);
        __syncwarp();
#pragma unroll
        for (int half = 0; half < 2; ++half) {  // rows lane/4 and lane/4 + 8, four columns each (float4)
            const int r = lane / 4 + 8 * half;
            const float e = sel[qi * 16 + r];
            float4* q = reinterpret_cast<float4*>(tF + r * o.ldF + 4 * (lane % 4));
            float4 f = *q;
            f.x *= e, f.y *= e, f.z *= e, f.w *= e;
            *q = f;
        }
        __syncwarp();
        wmma::load_matrix_sync(acc[u], tF, o.ldF, wmma::mem_row_major);
        for (int kk = 0; kk <= qi; ++kk) {
            FragA a;  // M (Q×Q) row-major
            FragB b;  // X (Q×P) row-major
            load_shared(a, sM + qi * 16 * o.ldQ + kk * 16, o.ldQ);
            load_shared(b, sX + kk * 16 * o.ldP + pi * 16, o.ldP);
            wmma::mma_sync(acc[u], a, b, acc[u]);
        }
        __syncwarp();  // every lane has read the scaled tile before it is overwritten
        wmma::store_matrix_sync(tF, acc[u], o.ldF, wmma::mem_row_major);
    }
    __syncthreads();

    // y = Y + D·x, four columns per thread when the rows of x and y allow it (P is a multiple of 16); x and
    // y in fp32 or bf16.
    const float dskip = p.Dskip ? p.Dskip[h] : 0.0f;
    if (p.vec_x && p.vec_y) {
        const int pq = P / 4;
        for (int k = tid; k < valid * pq; k += kSsdThreads) {
            const int r = k / pq, q = k % pq;
            const int64_t t = t0 + r, xo = t * p.ldx + h * P + 4 * q, yo = t * p.ldy + h * P + 4 * q;
            const float4 f = *reinterpret_cast<const float4*>(sF + r * o.ldF + 4 * q);
            float4 xv;
            if constexpr (kX16)
                xv = unpack_bf16x4(*reinterpret_cast<const uint2*>(p.x16 + xo));
            else
                xv = *reinterpret_cast<const float4*>(p.x + xo);
            const float4 v =
                make_float4(f.x + dskip * xv.x, f.y + dskip * xv.y, f.z + dskip * xv.z, f.w + dskip * xv.w);
            if (p.y16)
                *reinterpret_cast<uint2*>(p.y16 + yo) = pack_bf16x4(v);
            else
                *reinterpret_cast<float4*>(p.y + yo) = v;
        }
    } else {
        for (int k = tid; k < valid * P; k += kSsdThreads) {
            const int r = k / P, pp = k % P;
            const int64_t t = t0 + r, xo = t * p.ldx + h * P + pp, yo = t * p.ldy + h * P + pp;
            float xv;
            if constexpr (kX16)
                xv = bf16_to_f32(p.x16 + xo);
            else
                xv = p.x[xo];
            const float v = sF[r * o.ldF + pp] + dskip * xv;
            if (p.y16)
                p.y16[yo] = f32_to_bf16_rn(v);
            else
                p.y[yo] = v;
        }
    }
}

size_t cb_smem_bytes(int64_t N) {
    return 2 * align128(size_t(kQ) * (N + kPadBf16) * 2);
}

struct Workspace {
    float* dtp;
    float* lcum;
    float* cb;
    bf16* b16;
    bf16* c16;
    bf16* states16;
};

size_t ws_bytes(int64_t T, int64_t H, int64_t P, int64_t G, int64_t N, Workspace* w, void* base) {
    const int64_t chunks = (T + kQ - 1) / kQ, Tpad = chunks * kQ;
    const size_t a = align128(size_t(H) * Tpad * 4), cbb = align128(size_t(chunks) * G * kQ * kQ * 4);
    const size_t bc = align128(size_t(Tpad) * G * N * 2), s16 = align128(size_t(chunks) * H * P * N * 2);
    if (w) {
        char* b = static_cast<char*>(base);
        w->dtp = reinterpret_cast<float*>(b);
        w->lcum = reinterpret_cast<float*>(b + a);
        w->cb = reinterpret_cast<float*>(b + 2 * a);
        w->b16 = reinterpret_cast<bf16*>(b + 2 * a + cbb);
        w->c16 = reinterpret_cast<bf16*>(b + 2 * a + cbb + bc);
        w->states16 = reinterpret_cast<bf16*>(b + 2 * a + cbb + 2 * bc);
    }
    return 2 * a + cbb + 2 * bc + s16;
}

}  // namespace

bool scan_mamba2_ssd_supports(int64_t P, int64_t N) {
    return P > 0 && N > 0 && P % 16 == 0 && N % 16 == 0 && P <= kSsdMaxP && N <= kSsdMaxN;
}

size_t scan_mamba2_ssd_workspace_bytes(int64_t T, int64_t H, int64_t P, int64_t G, int64_t N) {
    return T > 0 && H > 0 ? ws_bytes(T, H, P, G, N, nullptr, nullptr) : 0;
}

void scan_mamba2_ssd(const Mamba2ScanArgs& a, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
    MS_CHECK(a.T >= 0 && a.H >= 0 && a.P > 0 && a.G > 0 && a.N > 0, "scan_mamba2_ssd: bad sizes");
    if (a.T == 0 || a.H == 0) return;
    if (!scan_mamba2_ssd_supports(a.P, a.N))
        throw Error(
            "scan_mamba2_ssd (CUDA): headdim " + std::to_string(a.P) + " / d_state " + std::to_string(a.N) +
                " is not supported",
            "the chunked scan needs headdim and d_state multiples of 16 (headdim ≤ 128, d_state ≤ 256); "
            "the recurrent scan_mamba2 takes any shape");
    MS_CHECK(a.H % a.G == 0, "scan_mamba2_ssd: groups G must divide heads H");
    const bool in16 = a.x16 || a.delta16 || a.B16 || a.C16;
    MS_CHECK(
        in16 ? (a.x16 && a.delta16 && a.B16 && a.C16 && !a.x && !a.delta && !a.B && !a.C)
             : (a.x && a.delta && a.B && a.C),
        "scan_mamba2_ssd: x, delta, B and C are required, all float32 or all bf16 (x16, delta16, B16, C16)");
    MS_CHECK(a.A && (a.y != nullptr) != (a.y16 != nullptr),
             "scan_mamba2_ssd: A and one of y (float32) or y16 (bf16) are required");
    MS_CHECK(a.ldx >= a.H * a.P && a.ldy >= a.H * a.P, "scan_mamba2_ssd: x/y row stride is smaller than H·P");
    MS_CHECK(a.ldd >= a.H && (!a.delta_out || a.ldo >= a.H),
             "scan_mamba2_ssd: delta row stride is smaller than H");
    MS_CHECK(a.ldb >= a.G * a.N && a.ldc >= a.G * a.N, "scan_mamba2_ssd: B/C row stride is smaller than G·N");
    MS_CHECK(a.H <= 65535, "scan_mamba2_ssd: too many heads");
    const int64_t chunks = (a.T + kQ - 1) / kQ;
    MS_CHECK(chunks <= 65535,
             "scan_mamba2_ssd: more than 65535 chunks of 64 tokens in one call (the forward "
             "calls it per prefill chunk)");

    const size_t need = ws_bytes(a.T, a.H, a.P, a.G, a.N, nullptr, nullptr);
    void* owned = nullptr;
    if (!workspace) {
        CUDA_CHECK(cudaMallocAsync(&owned, need, stream));
        workspace = owned;
    } else {
        MS_CHECK(workspace_bytes >= need, "scan_mamba2_ssd: workspace too small");
    }
    Workspace w{};
    ws_bytes(a.T, a.H, a.P, a.G, a.N, &w, workspace);

    Params p{};
    p.T = a.T, p.H = a.H, p.P = a.P, p.G = a.G, p.N = a.N, p.chunks = chunks, p.Tpad = chunks * kQ;
    p.x = a.x, p.ldx = a.ldx, p.delta = a.delta, p.ldd = a.ldd;
    p.delta_bias = a.delta_bias, p.softplus = a.delta_softplus ? 1 : 0;
    p.A = a.A, p.B = a.B, p.ldb = a.ldb, p.C = a.C, p.ldc = a.ldc, p.Dskip = a.Dskip, p.thr = a.thr;
    p.y = a.y, p.ldy = a.ldy, p.delta_out = a.delta_out, p.ldo = a.ldo;
    p.x16 = a.x16, p.delta16 = a.delta16, p.B16 = a.B16, p.C16 = a.C16, p.y16 = a.y16;
    p.dtp = w.dtp, p.lcum = w.lcum, p.cb = w.cb, p.b16 = w.b16, p.c16 = w.c16, p.states16 = w.states16;
    // Rows of `per` elements of `bytes` each, starting on a `per`·`bytes` boundary.
    const auto rows = [](const void* base, int64_t ld, int per, int bytes) {
        return base && ld % per == 0 && reinterpret_cast<uintptr_t>(base) % (size_t(per) * bytes) == 0;
    };
    if (in16) {
        p.vec_x = rows(a.x16, a.ldx, 4, 2), p.vec8_x = rows(a.x16, a.ldx, 8, 2);
        p.vec_b = rows(a.B16, a.ldb, 8, 2), p.vec_c = rows(a.C16, a.ldc, 8, 2);
    } else {
        p.vec_x = rows(a.x, a.ldx, 4, 4), p.vec8_x = false;
        p.vec_b = rows(a.B, a.ldb, 4, 4), p.vec_c = rows(a.C, a.ldc, 4, 4);
    }
    p.vec_y = a.y16 ? rows(a.y16, a.ldy, 4, 2) : rows(a.y, a.ldy, 4, 4);

    // Heads fastest: the blocks resident together read the same chunk's B and C (shared by the heads of a
    // group), so those reads hit in L1/L2.
    const dim3 grid(static_cast<unsigned>(a.H), static_cast<unsigned>(chunks));
    ssd_dt<<<grid, kQ, 0, stream>>>(p, a.probes);
    CUDA_CHECK(cudaGetLastError());

    const size_t smem_cb = cb_smem_bytes(a.N);
    const size_t smem_out = out_layout(static_cast<int>(a.P), static_cast<int>(a.N)).bytes;
    // Up to ≈ 170 KB at P = 128, N = 256: opt in above the default 48 KiB.
    auto allow = [](const void* fn, size_t bytes) {
        if (bytes > 48 * 1024)
            CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(bytes)));
    };
    allow(reinterpret_cast<const void*>(ssd_cb), smem_cb);
    // The released Mamba-2 models' shape gets the kernel with constant sizes (see ssd_chunk_out).
    const bool fixed = a.P == 64 && a.N == 128;
    const void* out_fn = fixed ? (in16 ? reinterpret_cast<const void*>(ssd_chunk_out<64, 128, true>)
                                       : reinterpret_cast<const void*>(ssd_chunk_out<64, 128, false>))
                               : (in16 ? reinterpret_cast<const void*>(ssd_chunk_out<0, 0, true>)
                                       : reinterpret_cast<const void*>(ssd_chunk_out<0, 0, false>));
    allow(out_fn, smem_out);
    ssd_cb<<<dim3(static_cast<unsigned>(a.G), static_cast<unsigned>(chunks)), kSsdThreads, smem_cb, stream>>>(
        p);
    CUDA_CHECK(cudaGetLastError());
    const dim3 grid_chain(static_cast<unsigned>(a.H), static_cast<unsigned>(a.P / 16),
                          static_cast<unsigned>((a.N + kChainCols - 1) / kChainCols));
    if (in16) {
        allow(reinterpret_cast<const void*>(ssd_state_chain<true>), kChainSmem<true>);
        ssd_state_chain<true><<<grid_chain, kChainThreads, kChainSmem<true>, stream>>>(p, a.s);
    } else {
        allow(reinterpret_cast<const void*>(ssd_state_chain<false>), kChainSmem<false>);
        ssd_state_chain<false><<<grid_chain, kChainThreads, kChainSmem<false>, stream>>>(p, a.s);
    }
    CUDA_CHECK(cudaGetLastError());
    if (fixed && in16)
        ssd_chunk_out<64, 128, true><<<grid, kSsdThreads, smem_out, stream>>>(p);
    else if (fixed)
        ssd_chunk_out<64, 128, false><<<grid, kSsdThreads, smem_out, stream>>>(p);
    else if (in16)
        ssd_chunk_out<0, 0, true><<<grid, kSsdThreads, smem_out, stream>>>(p);
    else
        ssd_chunk_out<0, 0, false><<<grid, kSsdThreads, smem_out, stream>>>(p);
    CUDA_CHECK(cudaGetLastError());
    if (owned) CUDA_CHECK(cudaFreeAsync(owned, stream));
}

}  // namespace mambascope::kernels::cuda
