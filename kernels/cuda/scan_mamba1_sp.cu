// The state-parallel Mamba-1 scan for bf16 inputs; see scan_mamba1_sp.cuh for the design and docs/cuda.md,
// "The state-parallel scan", for the layout and what it measured.
//
//   block  = 128 threads = CB = 128/L channels d0 … d0 + CB − 1; thread = (channel cb, lane group g < L)
//   lane (cb, g) holds states n = g·S … g·S + S − 1 (S = 16/L) of channel d0 + cb through all T tokens:
//     a = 2^(Δ'_t·A2[n]),  h[n] = a·h[n] + (Δ'_t·x_t)·B_t[n],  part_t += C_t[n]·h[n]      (A2 = A·log2 e)
//   per tile of K tokens: the L lanes' part_t added by a transposing xor-shuffle reduction; lane g then
//   owns tokens g·K/L … g·K/L + K/L − 1:  y_t = (part_t + D·x_t)·silu(z_t), rounded to bf16
//
// Tiles of x, Δ, z (CB bf16 per token) and B|C (32 bf16 per token) arrive through a 3-stage cp.async ring,
// two tiles ahead; once a tile has landed, the block turns it into float32 Δ' and Δ'·x per (token, channel)
// (the softplus and the filter, once per (token, channel)) and float32 B and C per token, which the lanes
// read as broadcasts. y goes back through the tile's x slots and out as 16-byte pieces of the rows.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "cuda/cuda_check.cuh"
#include "cuda/device_math.cuh"
#include "cuda/scan_mamba1_sp.cuh"
#include "mambascope/error.h"

namespace mambascope::kernels::cuda {
namespace {

using namespace detail;

constexpr int kSpN = 16;         // d_state
constexpr int kSpK = 32;         // tokens per tile
constexpr int kSpThreads = 128;  // threads per block (4 warps)
constexpr int kSpStages = 3;     // the ring: the tile being scanned and two in flight
constexpr unsigned kFull = 0xffffffffu;
// What MAMBASCOPE_M1_SP unset means: whether the bf16 prefill chain takes the state-parallel scan
// (docs/cuda.md, "The state-parallel scan"): off until it is measured faster than the chunked scan.
constexpr bool kSpDefaultOn = false;
// The default rule: the fewest lanes per channel (the least reduction work) that give at least
// kSpMinWarpsPerScheduler warps per SM sub-partition (4 per SM), else 16.
constexpr double kSpMinWarpsPerScheduler = 1.5;

template <int L>
struct SpTile {
    static constexpr int kCB = kSpThreads / L;  // channels per block
    static constexpr int kS = kSpN / L;         // states per lane
    static constexpr int kPer = kSpK / L;       // tokens per lane after the reduction
    // one ring stage, bf16: x, Δ, z (K, CB) then B|C (K, 32)
    static constexpr int kStageElems = kSpK * (3 * kCB + 2 * kSpN);
    static constexpr size_t kBytes = kSpStages * static_cast<size_t>(kStageElems) * 2  // the ring
                                     + static_cast<size_t>(kSpK) * kCB * 8             // Δ', Δ'·x (K, CB)
                                     + static_cast<size_t>(kSpK) * 2 * kSpN * 4;       // B|C float (K, 32)
    static_assert(kCB % 8 == 0, "a block's row of channels is whole 16-byte pieces");
};

struct SpParams {
    int64_t T, E;
    const __nv_bfloat16 *x, *dt, *z, *B, *C;
    int64_t ldx, ldd, ldz, ldb, ldc;
    const float *bias, *A, *D, *thr;
    int softplus;
    float* h;
    __nv_bfloat16* y;
    int64_t ldy;
};

// Tile t0's rows into ring stage `st` (zeros past T; a row past T reads nothing but names a mapped address,
// row 0), then commits the group (an empty group when the tile is past the end, to keep the count).
template <int L>
__device__ __forceinline__ void sp_issue(unsigned short* st, const SpParams& p, int64_t d0, int64_t t0,
                                         bool gate) {
    using Tile = SpTile<L>;
    constexpr int CB = Tile::kCB, P = CB / 8;  // 16-byte pieces per row
    if (t0 < p.T) {
        for (int k = threadIdx.x; k < kSpK * P; k += kSpThreads) {
            const int r = k / P, c = 8 * (k % P);
            const bool ok = t0 + r < p.T;
            const int64_t t = ok ? t0 + r : 0;
            cp_async_16(st + r * CB + c, p.x + t * p.ldx + d0 + c, ok);
            cp_async_16(st + (kSpK + r) * CB + c, p.dt + t * p.ldd + d0 + c, ok);
            if (gate) cp_async_16(st + (2 * kSpK + r) * CB + c, p.z + t * p.ldz + d0 + c, ok);
        }
        unsigned short* bc = st + 3 * kSpK * CB;
        for (int k = threadIdx.x; k < kSpK * 4; k += kSpThreads) {
            const int r = k / 4, q = k % 4;
            const bool ok = t0 + r < p.T;
            const int64_t t = ok ? t0 + r : 0;
            const __nv_bfloat16* src = (q < 2 ? p.B + t * p.ldb : p.C + t * p.ldc) + 8 * (q & 1);
            cp_async_16(bc + r * 2 * kSpN + 8 * q, src, ok);
        }
    }
    cp_async_commit();
}

__device__ __forceinline__ float bf16_bits(unsigned short u) {
    return __uint_as_float(static_cast<unsigned>(u) << 16);
}

// One xor step of the transposing reduction of the L lanes' partial sums, then the next: the lane whose bit O
// is set keeps the upper M of its 2·M tokens (the other the lower), sends the other half to its partner and
// adds the partner's share of the half it keeps. After the steps O = L/2 … 1, lane g holds tokens g·K/L + j.
template <int O, int M, int K>
__device__ __forceinline__ void sp_reduce(float (&part)[K], int g) {
    const bool up = (g & O) != 0;
#pragma unroll
    for (int j = 0; j < M; ++j) {
        const float send = up ? part[j] : part[j + M];
        const float keep = up ? part[j + M] : part[j];
        part[j] = keep + __shfl_xor_sync(kFull, send, O);
    }
    if constexpr (O > 1) sp_reduce<O / 2, M / 2>(part, g);
}

template <int L>
__global__ void __launch_bounds__(kSpThreads) m1_scan_sp(SpParams p) {
    using Tile = SpTile<L>;
    constexpr int CB = Tile::kCB, S = Tile::kS, PER = Tile::kPer, K = kSpK;
    extern __shared__ __align__(16) float smem[];
    unsigned short* ring = reinterpret_cast<unsigned short*>(smem);                 // kSpStages × stage
    float2* sdu = reinterpret_cast<float2*>(ring + kSpStages * Tile::kStageElems);  // (K, CB): Δ', Δ'·x
    float* sbc = reinterpret_cast<float*>(sdu + K * CB);  // (K, 32): B 0–15, C 0–15

    const int tid = threadIdx.x;
    const int cb = tid / L, g = tid % L;  // this lane's channel in the block and its group of states
    const int64_t d0 = static_cast<int64_t>(blockIdx.x) * CB, d = d0 + cb;
    const bool gate = p.z != nullptr;

    float A2[S], h[S];  // A·log2 e and the carried state of this lane's states
#pragma unroll
    for (int s = 0; s < S; ++s) {
        A2[s] = p.A[d * kSpN + g * S + s] * kLog2e;
        h[s] = p.h ? p.h[d * kSpN + g * S + s] : 0.0f;
    }
    const float dskip = p.D ? p.D[d] : 0.0f;
    // the prologue's channel (fixed per thread: kSpThreads is a multiple of CB)
    const int pc = tid % CB;
    const float pbias = p.bias ? p.bias[d0 + pc] : 0.0f;
    const float pthr = p.thr ? p.thr[d0 + pc] : -INFINITY;

    const int64_t tiles = (p.T + K - 1) / K;
    sp_issue<L>(ring, p, d0, 0, gate);
    sp_issue<L>(ring + Tile::kStageElems, p, d0, K, gate);

    for (int64_t i = 0; i < tiles; ++i) {
        const int64_t t0 = i * K;
        unsigned short* st = ring + (i % kSpStages) * Tile::kStageElems;
        cp_async_wait_group<1>();  // tile i has landed (tile i + 1 may still be in flight)
        __syncthreads();  // … for every thread's copies; the last tile's lanes are done with sdu/sbc
        if (i > 0) {      // the previous tile's y, staged in its x slots, out as 16-byte pieces
            const unsigned short* prev = ring + ((i - 1) % kSpStages) * Tile::kStageElems;
            constexpr int P = CB / 8;
            for (int k = tid; k < K * P; k += kSpThreads) {
                const int r = k / P, c = 8 * (k % P);
                if (t0 - K + r < p.T)
                    *reinterpret_cast<uint4*>(p.y + (t0 - K + r) * p.ldy + d0 + c) =
                        *reinterpret_cast<const uint4*>(prev + r * CB + c);
            }
        }
        // the tile's Δ' and Δ'·x per (token, channel), once each
        for (int r = tid / CB; r < K; r += kSpThreads / CB) {
            bool kept;
            const float dl =
                used_delta(bf16_bits(st[(K + r) * CB + pc]), pbias, p.softplus, pthr, t0 + r < p.T, kept);
            sdu[r * CB + pc] = make_float2(dl, dl * bf16_bits(st[r * CB + pc]));
        }
        // B and C to float32, one 16-byte piece per thread (K·4 = 128 pieces)
        {
            const int r = tid / 4, q = tid % 4;
            const uint4 v = *reinterpret_cast<const uint4*>(st + 3 * K * CB + r * 2 * kSpN + 8 * q);
            float4* o = reinterpret_cast<float4*>(sbc + r * 2 * kSpN + 8 * q);
            o[0] = make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u),
                               __uint_as_float(v.y << 16), __uint_as_float(v.y & 0xffff0000u));
            o[1] = make_float4(__uint_as_float(v.z << 16), __uint_as_float(v.z & 0xffff0000u),
                               __uint_as_float(v.w << 16), __uint_as_float(v.w & 0xffff0000u));
        }
        __syncthreads();  // sdu/sbc ready; the previous tile's y is out, so its stage takes tile i + 2
        sp_issue<L>(ring + ((i + 2) % kSpStages) * Tile::kStageElems, p, d0, t0 + 2 * K, gate);

        // the scan: this lane's S states through the tile's K tokens, with its share of Σ_n C·h per token
        float part[K];
#pragma unroll
        for (int j = 0; j < K; ++j) {
            const float2 du = sdu[j * CB + cb];
            const float* bc = sbc + j * 2 * kSpN + g * S;
            float b[S], c[S];
#pragma unroll
            for (int s = 0; s < S; ++s) b[s] = bc[s], c[s] = bc[kSpN + s];
            float acc = 0.0f;
#pragma unroll
            for (int s = 0; s < S; ++s) {
                const float a = ex2_approx(du.x * A2[s]);
                h[s] = a * h[s] + du.y * b[s];
                acc += c[s] * h[s];
            }
            part[j] = acc;
        }
        // the L lanes' partial sums: each xor step halves the tokens a lane keeps (the upper half in the
        // lane whose bit o is set) and adds its partner's share of them; lane g ends with tokens g·PER + j
        sp_reduce<L / 2, K / 2>(part, g);
        // y of this lane's tokens, into their x slots (only this lane reads them from now on)
#pragma unroll
        for (int j = 0; j < PER; ++j) {
            const int r = g * PER + j;
            const float xv = bf16_bits(st[r * CB + cb]);
            float y = part[j] + dskip * xv;
            if (gate) y *= silu(bf16_bits(st[(2 * K + r) * CB + cb]));
            st[r * CB + cb] = static_cast<__nv_bfloat16_raw>(f32_to_bf16_rn(y)).x;
        }
    }
    __syncthreads();  // the last tile's y
    if (tiles > 0) {
        const int64_t t0 = (tiles - 1) * K;
        const unsigned short* last = ring + ((tiles - 1) % kSpStages) * Tile::kStageElems;
        constexpr int P = CB / 8;
        for (int k = tid; k < K * P; k += kSpThreads) {
            const int r = k / P, c = 8 * (k % P);
            if (t0 + r < p.T)
                *reinterpret_cast<uint4*>(p.y + (t0 + r) * p.ldy + d0 + c) =
                    *reinterpret_cast<const uint4*>(last + r * CB + c);
        }
    }
    cp_async_wait_all();  // nothing left in flight at exit (the empty groups)
    if (p.h)
#pragma unroll
        for (int s = 0; s < S; ++s) p.h[d * kSpN + g * S + s] = h[s];
}

bool aligned16(const void* ptr, int64_t ld) {
    return ptr == nullptr || (reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && (ld * 2) % 16 == 0);
}

template <int L>
void launch_sp(const SpParams& p, cudaStream_t stream) {
    using Tile = SpTile<L>;
    const auto kernel = m1_scan_sp<L>;
    CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(Tile::kBytes)));
    kernel<<<static_cast<unsigned>(p.E / Tile::kCB), kSpThreads, Tile::kBytes, stream>>>(p);
    CUDA_CHECK(cudaGetLastError());
}

int sm_count() {
    static const int n = [] {
        int dev = 0, sms = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        return sms;
    }();
    return n;
}

}  // namespace

std::string scan_mamba1_sp_unsupported(const Mamba1ScanArgs& a, int lanes) {
    if (lanes != 4 && lanes != 8 && lanes != 16)
        return std::to_string(lanes) + " lanes per channel are not built (4, 8 or 16)";
    if (a.N != kSpN) return "d_state must be 16";
    if (!a.x16 || !a.delta16 || !a.B16 || !a.C16 || !a.y16)
        return "it reads bf16 x, Δ, B, C (z optional) and writes a bf16 y";
    if (a.x || a.delta || a.B || a.C || a.z || a.y) return "float32 inputs or output are not read";
    if (!a.A) return "A is null";
    if (!a.fast_exp) return "only fast exp (MUFU ex2.approx) is built";
    if (a.probes.any() || a.delta_out) return "no probes and no Δ' output";
    if (a.dt_proj_w) return "no fused dt_proj";
    if (a.chunk_len != 0) return "no forced chunk length";
    const int cb = kSpThreads / lanes;
    if (a.T < 0 || a.E <= 0 || a.E % cb != 0)
        return "E must be a positive multiple of " + std::to_string(cb) + " (the block's channels)";
    if (!aligned16(a.x16, a.ldx) || !aligned16(a.delta16, a.ldd) || !aligned16(a.z16, a.ldz) ||
        !aligned16(a.y16, a.ldy) || !aligned16(a.B16, a.ldb) || !aligned16(a.C16, a.ldc))
        return "x, Δ, z, y, B and C rows must be 16-byte aligned (pointer and stride)";
    return {};
}

int scan_mamba1_sp_default_lanes(int64_t E) {
    const double schedulers = 4.0 * sm_count();
    for (int lanes : {4, 8})
        if (static_cast<double>(E) * lanes / 32.0 >= kSpMinWarpsPerScheduler * schedulers) return lanes;
    return 16;
}

bool scan_mamba1_sp_chosen(int* lanes) {
    const char* e = std::getenv("MAMBASCOPE_M1_SP");
    const std::string v = e ? e : "";
    *lanes = 0;
    if (v.empty()) return kSpDefaultOn;
    if (v == "0") return false;
    if (v == "1") return true;
    if (v == "4" || v == "8" || v == "16") {
        *lanes = std::stoi(v);
        return true;
    }
    throw Error(
        "MAMBASCOPE_M1_SP=" + v + " is not 0, 1, 4, 8 or 16",
        "it sets whether the bf16 Mamba-1 prefill takes the state-parallel scan and with how many lanes "
        "per channel (docs/cuda.md, \"The state-parallel scan\"); unset it for the default");
}

void scan_mamba1_sp(const Mamba1ScanArgs& a, cudaStream_t stream, int lanes) {
    if (lanes == 0) lanes = a.E > 0 ? scan_mamba1_sp_default_lanes(a.E) : 16;
    const std::string why = scan_mamba1_sp_unsupported(a, lanes);
    MS_CHECK(why.empty(), "scan_mamba1_sp: " + why);
    if (a.T == 0) return;
    SpParams p{};
    p.T = a.T, p.E = a.E;
    p.x = a.x16, p.dt = a.delta16, p.z = a.z16, p.B = a.B16, p.C = a.C16;
    p.ldx = a.ldx, p.ldd = a.ldd, p.ldz = a.ldz, p.ldb = a.ldb, p.ldc = a.ldc;
    p.bias = a.delta_bias, p.A = a.A, p.D = a.Dskip, p.thr = a.thr, p.softplus = a.delta_softplus ? 1 : 0;
    p.h = a.h, p.y = a.y16, p.ldy = a.ldy;
    if (lanes == 4) launch_sp<4>(p, stream);
    if (lanes == 8) launch_sp<8>(p, stream);
    if (lanes == 16) launch_sp<16>(p, stream);
}

}  // namespace mambascope::kernels::cuda
