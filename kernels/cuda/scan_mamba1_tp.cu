// The time-parallel Mamba-1 scan for bf16 inputs; see scan_mamba1_tp.cuh for the design and docs/cuda.md,
// "The time-parallel scan", for the layout and what it measured.
//
//   per state n, lane ℓ of channel d's warp, its tokens t = t0 + K·ℓ + i (i < K):
//     a_t = 2^(Δ'_t·A2[n]),  b_t = Δ'_t·x_t·B_t[n]                     (A2 = A·log2 e)
//     (α_ℓ, β_ℓ) = the lane's K pairs composed            h ↦ α_ℓ·h + β_ℓ
//     inclusive shuffle scan over lanes, then h_end_ℓ = α·h_tile + β,  h_start_ℓ = h_end_{ℓ−1}
//     replay: h = a_t·h + b_t,  y_t += C_t[n]·h;  the next tile starts from h_end_31
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cuda/cuda_check.cuh"
#include "cuda/device_math.cuh"
#include "cuda/scan_mamba1_tp.cuh"
#include "mambascope/env_switch.h"

namespace mambascope::kernels::cuda {
namespace {

using namespace detail;

constexpr int kTpN = 16;         // d_state: a lane holds its tile's carried state of 16 states
constexpr int kTpPadEvery = 64;  // bf16 tile rows get 8 bf16 (16 bytes) of padding after every 64 tokens,
constexpr int kTpPad = 8;        // so a quarter warp's 16-byte reads of its lanes' runs hit distinct banks
constexpr unsigned kFull = 0xffffffffu;
// What MAMBASCOPE_M1_TP unset means: whether the prefill chain takes the time-parallel scan, and its shape
// (docs/cuda.md, "The time-parallel scan"): off, since on the H200 its best shape, 8x8, is at most even with
// the chunked scan and 40-47% slower at d_inner 1536.
constexpr bool kTpDefaultOn = false;
constexpr Mamba1TpShape kTpDefaultShape{8, 8};  // the fastest measured shape

// Position of tile token r in a padded shared-memory row (bf16 elements).
__host__ __device__ constexpr int tp_pos(int r) {
    return r + kTpPad * (r / kTpPadEvery);
}

template <int CH, int K>
struct TpTile {
    static constexpr int kL = 32 * K;                // tokens per tile
    static constexpr int kRow = tp_pos(kL);          // padded row length, bf16
    static constexpr int kRows = 3 * CH + 2 * kTpN;  // x, Δ, z per channel; B, C per state
    static constexpr size_t kBytes = static_cast<size_t>(kRows) * kRow * 2;
    // the pipelined staging's raw copy of the next tile, as the global rows are: x, Δ, z (3, L, CH) and B|C
    // (L, 32), bf16
    static constexpr size_t kRawBytes =
        (3 * static_cast<size_t>(kL) * CH + static_cast<size_t>(kL) * 2 * kTpN) * 2;
    static_assert(K % 8 == 0 && kTpPadEvery % K == 0, "a lane's run is whole 16-byte pieces of one group");
};

struct TpParams {
    int64_t T, E;
    const __nv_bfloat16 *x, *dt, *z, *B, *C;
    int64_t ldx, ldd, ldz, ldb, ldc;
    const float *bias, *A, *D, *thr;
    int softplus;
    float* h;
    __nv_bfloat16* y;
    int64_t ldy;
};

// CH consecutive bf16 of a row: 8 or 16 bytes (the caller checked the alignment); element c of a piece is
// the (c % 2)-th half of its 32-bit word c / 2 (little-endian), taken with shifts, not through a pointer.
template <int CH>
struct Piece;
template <>
struct Piece<4> {
    using V = uint2;
    __device__ static unsigned word(const V& v, int i) { return i == 0 ? v.x : v.y; }
    __device__ static V make(const unsigned (&u)[2]) { return make_uint2(u[0], u[1]); }
};
template <>
struct Piece<8> {
    using V = uint4;
    __device__ static unsigned word(const V& v, int i) {
        return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
    }
    __device__ static V make(const unsigned (&u)[4]) { return make_uint4(u[0], u[1], u[2], u[3]); }
};
template <int CH>
__device__ __forceinline__ unsigned short piece_elem(const typename Piece<CH>::V& v, int c) {
    return static_cast<unsigned short>(Piece<CH>::word(v, c / 2) >> (16 * (c % 2)));
}

// K consecutive bf16 from shared memory (16-byte aligned) to float32 (exact: the bf16 bits are the high
// half).
template <int K>
__device__ __forceinline__ void load_run(const unsigned short* src, float (&out)[K]) {
    const uint4* s = reinterpret_cast<const uint4*>(src);
#pragma unroll
    for (int q = 0; q < K / 8; ++q) {
        const uint4 v = s[q];
        const unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            out[8 * q + 2 * j] = __uint_as_float(w[j] << 16);
            out[8 * q + 2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
        }
    }
}

// Stages rows t0 … t0 + L − 1 of one (T, E) input's CH channels into dst[c·kRow + tp_pos(r)] (zeros past T).
template <int CH, int K>
__device__ __forceinline__ void stage_channels(unsigned short* dst, const __nv_bfloat16* src, int64_t ld,
                                               int64_t d0, int64_t t0, int64_t T) {
    using V = typename Piece<CH>::V;
    using Tile = TpTile<CH, K>;
    for (int r = threadIdx.x; r < Tile::kL; r += 32 * CH) {
        V v{};
        if (t0 + r < T) v = *reinterpret_cast<const V*>(src + (t0 + r) * ld + d0);
#pragma unroll
        for (int c = 0; c < CH; ++c) dst[c * Tile::kRow + tp_pos(r)] = piece_elem<CH>(v, c);
    }
}

// The pipelined staging (kPipe): cp.async copies of tile t0's rows into the raw buffer, as they are in global
// memory (zeros past T; a row past T reads nothing but still names a mapped address, row 0).
template <int CH, int K>
__device__ __forceinline__ void issue_tile(unsigned short* raw, const TpParams& p, int64_t d0, int64_t t0,
                                           bool gate) {
    using Tile = TpTile<CH, K>;
    constexpr int L = Tile::kL;
    for (int r = threadIdx.x; r < L; r += 32 * CH) {
        const bool ok = t0 + r < p.T;
        const int64_t t = ok ? t0 + r : 0;
        unsigned short* dst = raw + r * CH;
        if constexpr (CH == 4) {
            cp_async_8(dst, p.x + t * p.ldx + d0, ok);
            cp_async_8(dst + L * CH, p.dt + t * p.ldd + d0, ok);
            if (gate) cp_async_8(dst + 2 * L * CH, p.z + t * p.ldz + d0, ok);
        } else {
            cp_async_16(dst, p.x + t * p.ldx + d0, ok);
            cp_async_16(dst + L * CH, p.dt + t * p.ldd + d0, ok);
            if (gate) cp_async_16(dst + 2 * L * CH, p.z + t * p.ldz + d0, ok);
        }
    }
    unsigned short* bc = raw + 3 * L * CH;  // (L, 32): B 0–15, C 0–15
    for (int k = threadIdx.x; k < 4 * L; k += 32 * CH) {
        const int q = k / L, r = k % L;
        const bool ok = t0 + r < p.T;
        const int64_t t = ok ? t0 + r : 0;
        const __nv_bfloat16* src = (q < 2 ? p.B + t * p.ldb : p.C + t * p.ldc) + 8 * (q & 1);
        cp_async_16(bc + r * 2 * kTpN + 8 * q, src, ok);
    }
    cp_async_commit();
}

// The raw tile into the per-channel and per-state rows the lanes read (the same layout as the direct
// staging).
template <int CH, int K>
__device__ __forceinline__ void transpose_tile(const unsigned short* raw, unsigned short* sx,
                                               unsigned short* sd, unsigned short* sz, unsigned short* sB,
                                               unsigned short* sC, bool gate) {
    using Tile = TpTile<CH, K>;
    using V = typename Piece<CH>::V;
    constexpr int L = Tile::kL, R = Tile::kRow;
    for (int r = threadIdx.x; r < L; r += 32 * CH) {
        const V vx = *reinterpret_cast<const V*>(raw + r * CH);
        const V vd = *reinterpret_cast<const V*>(raw + (L + r) * CH);
#pragma unroll
        for (int c = 0; c < CH; ++c) {
            sx[c * R + tp_pos(r)] = piece_elem<CH>(vx, c);
            sd[c * R + tp_pos(r)] = piece_elem<CH>(vd, c);
        }
        if (gate) {
            const V vz = *reinterpret_cast<const V*>(raw + (2 * L + r) * CH);
#pragma unroll
            for (int c = 0; c < CH; ++c) sz[c * R + tp_pos(r)] = piece_elem<CH>(vz, c);
        }
    }
    const unsigned short* bc = raw + 3 * L * CH;
    for (int k = threadIdx.x; k < 4 * L; k += 32 * CH) {
        const int q = k / L, r = k % L;
        const uint4 v = *reinterpret_cast<const uint4*>(bc + r * 2 * kTpN + 8 * q);
        unsigned short* dst = (q < 2 ? sB : sC) + 8 * (q & 1) * R + tp_pos(r);
#pragma unroll
        for (int j = 0; j < 8; ++j) dst[j * R] = piece_elem<8>(v, j);
    }
}

template <int CH, int K, bool kPipe>
__global__ void __launch_bounds__(32 * CH, (K == 16 ? 3 : 4) * 4 / CH) m1_scan_tp(TpParams p) {
    using Tile = TpTile<CH, K>;
    constexpr int L = Tile::kL, R = Tile::kRow;
    extern __shared__ __align__(16) float smem[];
    unsigned short* sx = reinterpret_cast<unsigned short*>(smem);  // (CH, R)
    unsigned short* sd = sx + CH * R;                              // (CH, R)
    unsigned short* sz = sd + CH * R;                              // (CH, R)
    unsigned short* sB = sz + CH * R;                              // (16, R)
    unsigned short* sC = sB + kTpN * R;                            // (16, R)
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t d0 = static_cast<int64_t>(blockIdx.x) * CH, d = d0 + w;
    const bool gate = p.z != nullptr;

    float A2[kTpN], h[kTpN];  // A·log2 e and the state at the tile's start (the same in every lane)
#pragma unroll
    for (int n = 0; n < kTpN; ++n) {
        A2[n] = p.A[d * kTpN + n] * kLog2e;
        h[n] = p.h ? p.h[d * kTpN + n] : 0.0f;
    }
    const float bias = p.bias ? p.bias[d] : 0.0f, dskip = p.D ? p.D[d] : 0.0f;
    const float thr = p.thr ? p.thr[d] : -INFINITY;
    const int run = K * lane;  // the lane's first token in the tile
    const int at = tp_pos(run);
    unsigned short* raw = sC + kTpN * R;  // kPipe: the next tile's rows, (Tile::kRawBytes)
    if constexpr (kPipe) issue_tile<CH, K>(raw, p, d0, 0, gate);

    for (int64_t t0 = 0; t0 < p.T; t0 += L) {
        if constexpr (kPipe) {
            // the tile's copies have landed (every thread's, after the barrier) and the previous tile's y is
            // stored; then the raw rows are rearranged, and once every thread is past that the next tile's
            // copies start, to overlap this tile's scan
            cp_async_wait_all();
            __syncthreads();
            transpose_tile<CH, K>(raw, sx, sd, sz, sB, sC, gate);
            __syncthreads();
            if (t0 + L < p.T) issue_tile<CH, K>(raw, p, d0, t0 + L, gate);
        } else {
            __syncthreads();  // the previous tile's y is stored (it was staged in sx)
            stage_channels<CH, K>(sx, p.x, p.ldx, d0, t0, p.T);
            stage_channels<CH, K>(sd, p.dt, p.ldd, d0, t0, p.T);
            if (gate) stage_channels<CH, K>(sz, p.z, p.ldz, d0, t0, p.T);
            // B and C: 16-byte pieces (row r, piece q: B 0–7, B 8–15, C 0–7, C 8–15); a warp takes 32 rows of
            // one piece, so each of its 2-byte stores is one conflict-free row segment.
            for (int k = threadIdx.x; k < 4 * L; k += 32 * CH) {
                const int q = k / L, r = k % L;
                uint4 v{};
                if (t0 + r < p.T) {
                    const __nv_bfloat16* s = q < 2 ? p.B + (t0 + r) * p.ldb : p.C + (t0 + r) * p.ldc;
                    v = *reinterpret_cast<const uint4*>(s + 8 * (q & 1));
                }
                unsigned short* dst = (q < 2 ? sB : sC) + 8 * (q & 1) * R + tp_pos(r);
#pragma unroll
                for (int j = 0; j < 8; ++j) dst[j * R] = piece_elem<8>(v, j);
            }
            __syncthreads();
        }

        float dl[K], du[K], y[K];  // Δ', Δ'·x, y of the lane's tokens
        {
            float xv[K], dv[K];
            load_run<K>(sx + w * R + at, xv);
            load_run<K>(sd + w * R + at, dv);
#pragma unroll
            for (int i = 0; i < K; ++i) {
                bool kept;
                dl[i] = used_delta(dv[i], bias, p.softplus, thr, t0 + run + i < p.T, kept);
                du[i] = dl[i] * xv[i];
                y[i] = dskip * xv[i];
            }
        }
#pragma unroll
        for (int n = 0; n < kTpN; ++n) {
            float a[K], b[K];
            {
                float bv[K];
                load_run<K>(sB + n * R + at, bv);
#pragma unroll
                for (int i = 0; i < K; ++i) {
                    a[i] = ex2_approx(dl[i] * A2[n]);
                    b[i] = du[i] * bv[i];
                }
            }
            float ca = a[0], cb = b[0];  // the lane's tokens composed: h ↦ ca·h + cb
#pragma unroll
            for (int i = 1; i < K; ++i) {
                cb = fmaf(a[i], cb, b[i]);
                ca *= a[i];
            }
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {  // inclusive scan over the lanes (earlier lanes on the right)
                const float pa = __shfl_up_sync(kFull, ca, o), pb = __shfl_up_sync(kFull, cb, o);
                if (lane >= o) {
                    cb = fmaf(ca, pb, cb);
                    ca *= pa;
                }
            }
            const float hend = fmaf(ca, h[n], cb);  // the state after the lane's last token
            float hs = __shfl_up_sync(kFull, hend, 1);
            if (lane == 0) hs = h[n];
            h[n] = __shfl_sync(kFull, hend, 31);
            float cv[K];
            load_run<K>(sC + n * R + at, cv);
#pragma unroll
            for (int i = 0; i < K; ++i) {
                hs = fmaf(a[i], hs, b[i]);
                y[i] = fmaf(cv[i], hs, y[i]);
            }
        }
        if (gate) {
            float zv[K];
            load_run<K>(sz + w * R + at, zv);
#pragma unroll
            for (int i = 0; i < K; ++i) y[i] *= silu(zv[i]);
        }
        // y (bf16) into the lane's own slots of sx (only this lane read them), then whole rows out
        {
            uint4* o = reinterpret_cast<uint4*>(sx + w * R + at);
#pragma unroll
            for (int q = 0; q < K / 8; ++q) {
                unsigned u[4];
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const __nv_bfloat16 lo = f32_to_bf16_rn(y[8 * q + 2 * j]);
                    const __nv_bfloat16 hi = f32_to_bf16_rn(y[8 * q + 2 * j + 1]);
                    u[j] = static_cast<unsigned>(static_cast<__nv_bfloat16_raw>(lo).x) |
                           (static_cast<unsigned>(static_cast<__nv_bfloat16_raw>(hi).x) << 16);
                }
                o[q] = make_uint4(u[0], u[1], u[2], u[3]);
            }
        }
        __syncthreads();
        using V = typename Piece<CH>::V;
        for (int r = threadIdx.x; r < L && t0 + r < p.T; r += 32 * CH) {
            unsigned u[CH / 2];
#pragma unroll
            for (int c = 0; c < CH; c += 2)
                u[c / 2] = sx[c * R + tp_pos(r)] | (static_cast<unsigned>(sx[(c + 1) * R + tp_pos(r)]) << 16);
            *reinterpret_cast<V*>(p.y + (t0 + r) * p.ldy + d0) = Piece<CH>::make(u);
        }
    }
    if (p.h && lane == 0)
#pragma unroll
        for (int n = 0; n < kTpN; ++n) p.h[d * kTpN + n] = h[n];
}

bool aligned(const void* ptr, int64_t ld, int bytes) {
    return ptr == nullptr || (reinterpret_cast<uintptr_t>(ptr) % bytes == 0 && (ld * 2) % bytes == 0);
}

template <int CH, int K>
void launch_tp(const TpParams& p, cudaStream_t stream, bool pipe) {
    using Tile = TpTile<CH, K>;
    const auto kernel = pipe ? m1_scan_tp<CH, K, true> : m1_scan_tp<CH, K, false>;
    const size_t bytes = Tile::kBytes + (pipe ? Tile::kRawBytes : 0);
    CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    kernel<<<static_cast<unsigned>(p.E / CH), 32 * CH, bytes, stream>>>(p);
    CUDA_CHECK(cudaGetLastError());
}

// MAMBASCOPE_M1_TP_PIPE: 1 or unset, the tile's rows are copied with cp.async one tile ahead (issue_tile,
// transpose_tile); 0, loaded and rearranged at the tile's start (A/B runs, the tests). Read per call.
bool tp_pipe_enabled() {
    return env_flag("MAMBASCOPE_M1_TP_PIPE", true,
                    "it sets whether the time-parallel scan copies the next tile while it scans this one "
                    "(docs/cuda.md, \"The time-parallel scan\")");
}

}  // namespace

std::string scan_mamba1_tp_unsupported(const Mamba1ScanArgs& a, Mamba1TpShape s) {
    const int ch = s.channels;
    if (!((ch == 4 || ch == 8) && (s.items == 8 || s.items == 16)))
        return "shape " + std::to_string(ch) + "x" + std::to_string(s.items) +
               " is not built (channels 4 or 8 × items 8 or 16)";
    if (a.N != kTpN) return "d_state must be 16";
    if (!a.x16 || !a.delta16 || !a.B16 || !a.C16 || !a.y16)
        return "it reads bf16 x, Δ, B, C (z optional) and writes a bf16 y";
    if (a.x || a.delta || a.B || a.C || a.z || a.y) return "float32 inputs or output are not read";
    if (!a.A) return "A is null";
    if (!a.fast_exp) return "only fast exp (MUFU ex2.approx) is built";
    if (a.probes.any() || a.delta_out) return "no probes and no Δ' output";
    if (a.dt_proj_w) return "no fused dt_proj";
    if (a.chunk_len != 0) return "no forced chunk length";
    if (a.T < 0 || a.E <= 0 || a.E % ch != 0) return "E must be a positive multiple of " + std::to_string(ch);
    const int piece = 2 * ch;
    if (!aligned(a.x16, a.ldx, piece) || !aligned(a.delta16, a.ldd, piece) || !aligned(a.z16, a.ldz, piece) ||
        !aligned(a.y16, a.ldy, piece))
        return "x, Δ, z and y rows must be " + std::to_string(piece) + "-byte aligned (pointer and stride)";
    if (!aligned(a.B16, a.ldb, 16) || !aligned(a.C16, a.ldc, 16))
        return "B and C rows must be 16-byte aligned (pointer and stride)";
    return {};
}

bool scan_mamba1_tp_chosen(Mamba1TpShape* shape) {
    const char* e = std::getenv("MAMBASCOPE_M1_TP");
    const std::string v = e ? e : "";
    *shape = kTpDefaultShape;
    if (v.empty()) return kTpDefaultOn;
    if (v == "0") return false;
    if (v == "1") return true;
    int c = 0, k = 0;
    char tail = 0;
    const bool parsed = std::sscanf(v.c_str(), "%dx%d%c", &c, &k, &tail) == 2;
    const Mamba1TpShape s{c, k};
    if (!parsed || scan_mamba1_tp_unsupported(Mamba1ScanArgs{}, s).find("not built") != std::string::npos)
        throw Error("MAMBASCOPE_M1_TP=" + v + " is not 0, 1 or a built shape (4x8, 4x16, 8x8, 8x16)",
                    "it sets whether the bf16 Mamba-1 prefill takes the time-parallel scan and with which "
                    "channels x tokens per lane (docs/cuda.md, \"The time-parallel scan\"); unset it for the "
                    "default");
    *shape = s;
    return true;
}

void scan_mamba1_tp(const Mamba1ScanArgs& a, cudaStream_t stream, Mamba1TpShape s) {
    const std::string why = scan_mamba1_tp_unsupported(a, s);
    MS_CHECK(why.empty(), "scan_mamba1_tp: " + why);
    const bool pipe = tp_pipe_enabled();  // read first: a bad value is an error at any call
    if (a.T == 0) return;
    TpParams p{};
    p.T = a.T, p.E = a.E;
    p.x = a.x16, p.dt = a.delta16, p.z = a.z16, p.B = a.B16, p.C = a.C16;
    p.ldx = a.ldx, p.ldd = a.ldd, p.ldz = a.ldz, p.ldb = a.ldb, p.ldc = a.ldc;
    p.bias = a.delta_bias, p.A = a.A, p.D = a.Dskip, p.thr = a.thr, p.softplus = a.delta_softplus ? 1 : 0;
    p.h = a.h, p.y = a.y16, p.ldy = a.ldy;
    if (s.channels == 4 && s.items == 8) launch_tp<4, 8>(p, stream, pipe);
    if (s.channels == 4 && s.items == 16) launch_tp<4, 16>(p, stream, pipe);
    if (s.channels == 8 && s.items == 8) launch_tp<8, 8>(p, stream, pipe);
    if (s.channels == 8 && s.items == 16) launch_tp<8, 16>(p, stream, pipe);
}

}  // namespace mambascope::kernels::cuda
