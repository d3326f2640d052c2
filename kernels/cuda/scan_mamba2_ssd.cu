// Mamba-2 chunked SSD scan on tensor cores; see scan_mamba2_ssd.cuh for the design, method doc §9.2 for the
// derivation. Per head h (scalar A), chunk c of Q tokens, positions i, j inside it:
//   Δ'_j   = Δ_j > thr ? Δ_j : 0                  l_i = Σ_{k≤i} Δ'_k·A            (within the chunk)
//   Y_i    = Σ_{j≤i} (C_i·B_j)·exp(l_i − l_j)·Δ'_j·x_j + exp(l_i)·C_i·S_c + D·x_i
//   ΔS_c   = Σ_j exp(l_last − l_j)·Δ'_j·x_j B_jᵀ     S_{c+1} = exp(l_last)·S_c + ΔS_c
// Rounding (mirrored by kernels/cpu/scan_ssd.cpp): X, B, C, the masked L∘CB, the scaled exp(l)·C, the
// weighted w·B and S_c are rounded to bf16 as they are staged (S_c by the chain, which stores it in bf16);
// every product accumulates in fp32; Δ', l, the chain of states and the D·x skip stay fp32.
//
// Cost per (chunk, head), Q = 64, P = 64, N = 128 (mamba2-130m / 1.3b): C·Bᵀ 2·Q²·N = 1.0 MFLOP (lower
// triangle of 16×16 tiles: 10 of 16), L·X 2·Q²·P = 0.5 M, C·Sᵀ 2·Q·N·P = 1.0 M, Xᵀ·B 2·Q·P·N = 1.0 M:
// ≈ 50 kFLOP per (token, head) on tensor cores, against 5·P·N = 41 kFLOP of FP32 work in the recurrent form.
// Memory: the chunk states: ΔS_c fp32 written by the state kernel and read by the chain (8·P·N bytes per
// (chunk, head)), the entering states bf16 written by the chain and read by the output kernel (4·P·N):
// 12·P·N/Q = 1.5 KB per (token, head) at Q = 64, the dominant HBM traffic.
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "cuda/cuda_check.cuh"
#include "cuda/device_math.cuh"
#include "cuda/scan_mamba2_ssd.cuh"

namespace mambascope::kernels::cuda {
namespace {

using namespace detail;
namespace wmma = nvcuda::wmma;

constexpr int kQ = static_cast<int>(kSsdChunk);
constexpr int kSsdThreads = 256;      // 8 warps per block (state and output kernels)
constexpr int kSsdPassThreads = 256;  // the chain over chunks: one state element per thread
constexpr int kPadBf16 = 8;           // row padding of bf16 tiles (16 B: ldmatrix rows on distinct banks)
constexpr int kPadF32 = 4;            // row padding of fp32 tiles
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
    float* dtp;                // Δ' (H, Tpad)
    float* lcum;               // l (H, Tpad): within-chunk inclusive cumulative Σ Δ'·A
    float* states;             // (chunks, H, P, N): ΔS_c, fp32, from the state kernel
    bf16* states16;            // (chunks, H, P, N): the state entering chunk c, bf16, from the chain
    bool vec_x, vec_b, vec_c;  // rows of x / B / C can be read as float4 (stride % 4 == 0, 16-byte base)
};

__host__ __device__ constexpr size_t align128(size_t b) {
    return (b + 127) / 128 * 128;
}

// ---- 1. Δ', l and probes: grid (H, chunks), kQ threads
// -----------------------------------------------------
__global__ void __launch_bounds__(kQ) ssd_dt(Params p, ScanProbes probes) {
    __shared__ float sdt[kQ];
    __shared__ int skept[kQ];
    const int64_t h = blockIdx.x, c = blockIdx.y;
    const int i = threadIdx.x;
    const int64_t t = c * kQ + i;
    const bool valid = t < p.T;
    const float thr = p.thr ? p.thr[h] : -INFINITY;
    float dt = (valid ? p.delta[t * p.ldd + h] : 0.0f) + (p.delta_bias ? p.delta_bias[h] : 0.0f);
    if (p.softplus) dt = softplus(dt);
    const bool kept = valid && dt > thr;
    dt = kept ? dt : 0.0f;
    sdt[i] = dt;
    skept[i] = kept ? 1 : 0;
    p.dtp[h * p.Tpad + t] = dt;
    if (valid && p.delta_out) p.delta_out[t * p.ldo + h] = dt;
    __syncthreads();
    if (i != 0) return;
    // One thread: the cumulative sum in token order (the CPU twin's order) and the probe sums.
    const float a = p.A[h];
    float l = 0.0f;
    double dsum = 0.0, ldec = 0.0;
    long long nkept = 0;
    for (int k = 0; k < kQ; ++k) {
        l += sdt[k] * a;
        p.lcum[h * p.Tpad + c * kQ + k] = l;
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
// stride lds), each row times scale[r] (scale may be null; ×1 is exact), rows ≥ valid as zeros. vec: cols % 4
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
                                           bf16* dst, int lds, const float* scale, bool vec) {
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
                const float sc = scale ? scale[r] : 1.0f;
                // 4 bf16 in one 8-byte store (2-byte stores at an 8-byte stride conflict on the banks)
                *reinterpret_cast<uint2*>(dst + r * lds + 4 * q) =
                    make_uint2(pack_bf16x2(v[u].x * sc, v[u].y * sc), pack_bf16x2(v[u].z * sc, v[u].w * sc));
            }
        }
    } else {
        for (int k = threadIdx.x; k < kQ * cols; k += kSsdThreads) {
            const int r = k / cols, n = k % cols;
            dst[r * lds + n] = f32_to_bf16_rn(r < valid ? src[r * ld + n] * (scale ? scale[r] : 1.0f) : 0.0f);
        }
    }
}

// ---- 2. chunk states ΔS_c = Xᵀ·diag(w)·B: grid (H, chunks), kSsdThreads
// --------------------------------------
__global__ void __launch_bounds__(kSsdThreads) ssd_chunk_state(Params p) {
    extern __shared__ __align__(16) float smem[];
    const int P = static_cast<int>(p.P), N = static_cast<int>(p.N);
    const int ldP = P + kPadBf16, ldN = N + kPadBf16;
    bf16* sX = reinterpret_cast<bf16*>(smem);                                                     // (Q, ldP)
    bf16* sBw = reinterpret_cast<bf16*>(reinterpret_cast<char*>(smem) + align128(kQ * ldP * 2));  // (Q, ldN)
    float* sw = reinterpret_cast<float*>(reinterpret_cast<char*>(sBw) + align128(kQ * ldN * 2));  // (Q)
    const int64_t h = blockIdx.x, c = blockIdx.y, g = h / (p.H / p.G);
    const int64_t t0 = c * kQ;
    const int tid = threadIdx.x;
    if (tid < kQ) {
        const float* l = p.lcum + h * p.Tpad + t0;
        sw[tid] = exp_decay(l[kQ - 1] - l[tid]) * p.dtp[h * p.Tpad + t0 + tid];
    }
    const int valid = static_cast<int>(p.T - t0 < kQ ? p.T - t0 : kQ);
    stage_bf16(p.x + t0 * p.ldx + h * p.P, p.ldx, valid, P, sX, ldP, nullptr, p.vec_x);
    __syncthreads();
    stage_bf16(p.B + t0 * p.ldb + g * p.N, p.ldb, valid, N, sBw, ldN, sw, p.vec_b);  // w_j·B_j
    __syncthreads();
    // (P/16)·(N/16) output tiles over the 8 warps; K = Q.
    const int warp = tid / 32, tp = P / 16, tn = N / 16;
    float* out = p.states + (c * p.H + h) * p.P * p.N;
    for (int tile = warp; tile < tp * tn; tile += kSsdThreads / 32) {
        const int pi = tile / tn, ni = tile % tn;
        FragAcc acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int kk = 0; kk < kQ / 16; ++kk) {
            FragAt a;  // Xᵀ (P×Q): element (p, j) = sX[j][p], i.e. column-major with ld = ldP
            FragB b;   // w·B (Q×N), row-major
            wmma::load_matrix_sync(a, sX + kk * 16 * ldP + pi * 16, ldP);
            wmma::load_matrix_sync(b, sBw + kk * 16 * ldN + ni * 16, ldN);
            wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(out + pi * 16 * p.N + ni * 16, acc, N, wmma::mem_row_major);
    }
}

// ---- 3. chain over chunks: grid (⌈P·N/256⌉, H)
// -------------------------------------------------------------- Reads ΔS_c (fp32) and writes the state
// entering chunk c, rounded to bf16 (the output kernel's tensor-core operand; half the bytes of fp32 on the
// dominant traffic); s (if given) is the carried state in and the final state out, fp32. The chain is
// sequential in c, so kSsdPassAhead chunks' loads are issued together (one DRAM latency per kSsdPassAhead
// chunks instead of one per chunk).
constexpr int kSsdPassAhead = 8;

__global__ void __launch_bounds__(kSsdPassThreads) ssd_state_pass(Params p, float* s) {
    const int64_t PN = p.P * p.N;
    const int64_t e = static_cast<int64_t>(blockIdx.x) * kSsdPassThreads + threadIdx.x, h = blockIdx.y;
    if (e >= PN) return;
    float run = s ? s[h * PN + e] : 0.0f;
    for (int64_t c0 = 0; c0 < p.chunks; c0 += kSsdPassAhead) {
        float d[kSsdPassAhead], decay[kSsdPassAhead];
#pragma unroll
        for (int k = 0; k < kSsdPassAhead; ++k) {
            const int64_t c = c0 + k;
            const bool ok = c < p.chunks;
            d[k] = ok ? p.states[(c * p.H + h) * PN + e] : 0.0f;
            decay[k] = ok ? p.lcum[h * p.Tpad + c * kQ + kQ - 1] : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < kSsdPassAhead; ++k) {
            const int64_t c = c0 + k;
            if (c >= p.chunks) break;
            p.states16[(c * p.H + h) * PN + e] = f32_to_bf16_rn(run);
            run = exp_decay(decay[k]) * run + d[k];
        }
    }
    if (s) s[h * PN + e] = run;
}

// ---- 4. outputs: grid (H, chunks), kSsdThreads
// ----------------------------------------------------------------
struct OutLayout {
    int ldN, ldP, ldQ, ldF;
    size_t oC, oB, oX, oM, oF, ol, odt, oel, bytes;
};

__host__ __device__ OutLayout out_layout(int P, int N) {
    OutLayout o{};
    o.ldN = N + kPadBf16, o.ldP = P + kPadBf16, o.ldQ = kQ + kPadBf16, o.ldF = max(kQ, P) + kPadF32;
    size_t at = 0;
    o.oC = at, at += align128(size_t(kQ) * o.ldN * 2);          // C, then exp(l)·C (Q, ldN) bf16
    o.oB = at, at += align128(size_t(max(kQ, P)) * o.ldN * 2);  // B (Q, ldN), then S_c (P, ldN), bf16
    o.oX = at, at += align128(size_t(kQ) * o.ldP * 2);          // X (Q, ldP) bf16
    o.oM = at, at += align128(size_t(kQ) * o.ldQ * 2);          // L∘CB (Q, ldQ) bf16
    o.oF = at, at += align128(size_t(kQ) * o.ldF * 4);          // C·Bᵀ (Q, Q), then Y (Q, P), fp32
    o.ol = at, at += align128(kQ * 4);                          // l
    o.odt = at, at += align128(kQ * 4);                         // Δ'
    o.oel = at, at += align128(kQ * 4);                         // exp(l)
    o.bytes = at;
    return o;
}

__global__ void __launch_bounds__(kSsdThreads) ssd_chunk_out(Params p) {
    extern __shared__ __align__(16) float smem[];
    const int P = static_cast<int>(p.P), N = static_cast<int>(p.N);
    const OutLayout o = out_layout(P, N);
    char* base = reinterpret_cast<char*>(smem);
    bf16* sC = reinterpret_cast<bf16*>(base + o.oC);
    bf16* sB = reinterpret_cast<bf16*>(base + o.oB);
    bf16* sS =
        sB;  // S_c takes B's place once C·Bᵀ is done (≈ 70 KB in all at P = 64, N = 128: 3 blocks per SM)
    bf16* sX = reinterpret_cast<bf16*>(base + o.oX);
    bf16* sM = reinterpret_cast<bf16*>(base + o.oM);
    float* sF = reinterpret_cast<float*>(base + o.oF);
    float* sl = reinterpret_cast<float*>(base + o.ol);
    float* sdt = reinterpret_cast<float*>(base + o.odt);
    float* sel = reinterpret_cast<float*>(base + o.oel);
    const int64_t h = blockIdx.x, c = blockIdx.y, g = h / (p.H / p.G);
    const int64_t t0 = c * kQ;
    const int tid = threadIdx.x, warp = tid / 32, nwarps = kSsdThreads / 32;
    constexpr int tq = kQ / 16;

    if (tid < kQ) {
        const float l = p.lcum[h * p.Tpad + t0 + tid];
        sl[tid] = l;
        sel[tid] = exp_decay(l);
        sdt[tid] = p.dtp[h * p.Tpad + t0 + tid];
    }
    const int valid = static_cast<int>(p.T - t0 < kQ ? p.T - t0 : kQ);
    const float* Cc = p.C + t0 * p.ldc + g * p.N;
    stage_bf16(Cc, p.ldc, valid, N, sC, o.ldN, nullptr, p.vec_c);
    stage_bf16(p.B + t0 * p.ldb + g * p.N, p.ldb, valid, N, sB, o.ldN, nullptr, p.vec_b);
    stage_bf16(p.x + t0 * p.ldx + h * p.P, p.ldx, valid, P, sX, o.ldP, nullptr, p.vec_x);
    __syncthreads();

    // C·Bᵀ on the lower triangle of 16×16 tiles (qj ≤ qi); K = N.
    for (int tile = warp; tile < tq * (tq + 1) / 2; tile += nwarps) {
        int qi = 0, rest = tile;
        while (rest > qi) rest -= ++qi;
        const int qj = rest;
        FragAcc acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int kk = 0; kk < N / 16; ++kk) {
            FragA a;   // C (Q×N) row-major
            FragBt b;  // Bᵀ (N×Q): element (n, j) = sB[j][n], column-major with ld = ldN
            wmma::load_matrix_sync(a, sC + qi * 16 * o.ldN + kk * 16, o.ldN);
            wmma::load_matrix_sync(b, sB + qj * 16 * o.ldN + kk * 16, o.ldN);
            wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(sF + qi * 16 * o.ldF + qj * 16, acc, o.ldF, wmma::mem_row_major);
    }
    __syncthreads();

    // M = L ∘ C·Bᵀ (causal; L_ij = exp(l_i − l_j)·Δ'_j), and C ← exp(l_i)·C_i re-read in fp32 (one rounding).
    for (int k = tid; k < kQ * kQ / 2; k += kSsdThreads) {  // two neighbours j, j + 1 per thread: one cvt
        const int i = k / (kQ / 2), j = 2 * (k % (kQ / 2));
        const float m0 = j <= i ? sF[i * o.ldF + j] * exp_decay(sl[i] - sl[j]) * sdt[j] : 0.0f;
        const float m1 =
            j + 1 <= i ? sF[i * o.ldF + j + 1] * exp_decay(sl[i] - sl[j + 1]) * sdt[j + 1] : 0.0f;
        *reinterpret_cast<unsigned*>(sM + i * o.ldQ + j) = pack_bf16x2(m0, m1);
    }
    stage_bf16(Cc, p.ldc, valid, N, sC, o.ldN, sel, p.vec_c);  // exp(l_i)·C_i
    // S_c (P×N bf16) into B's place, in 16-byte pieces (N is a multiple of 16: 8 bf16 per piece, rows
    // aligned).
    const uint4* S = reinterpret_cast<const uint4*>(p.states16 + (c * p.H + h) * p.P * p.N);
    for (int k = tid; k < P * N / 8; k += kSsdThreads) {
        const int r = (k * 8) / N, n = (k * 8) % N;
        *reinterpret_cast<uint4*>(sS + r * o.ldN + n) = S[k];
    }
    __syncthreads();

    // Y = M·X (K = the causal part of the chunk) + (exp(l)·C)·Sᵀ (K = N), into sF (Q, P) fp32.
    const int tp = P / 16;
    for (int tile = warp; tile < tq * tp; tile += nwarps) {
        const int qi = tile / tp, pi = tile % tp;
        FragAcc acc;
        wmma::fill_fragment(acc, 0.0f);
        for (int kk = 0; kk <= qi; ++kk) {
            FragA a;  // M (Q×Q) row-major
            FragB b;  // X (Q×P) row-major
            wmma::load_matrix_sync(a, sM + qi * 16 * o.ldQ + kk * 16, o.ldQ);
            wmma::load_matrix_sync(b, sX + kk * 16 * o.ldP + pi * 16, o.ldP);
            wmma::mma_sync(acc, a, b, acc);
        }
        for (int kk = 0; kk < N / 16; ++kk) {
            FragA a;   // exp(l)·C (Q×N) row-major
            FragBt b;  // Sᵀ (N×P): element (n, p) = sS[p][n], column-major with ld = ldN
            wmma::load_matrix_sync(a, sC + qi * 16 * o.ldN + kk * 16, o.ldN);
            wmma::load_matrix_sync(b, sS + pi * 16 * o.ldN + kk * 16, o.ldN);
            wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(sF + qi * 16 * o.ldF + pi * 16, acc, o.ldF, wmma::mem_row_major);
    }
    __syncthreads();

    const float dskip = p.Dskip ? p.Dskip[h] : 0.0f;
    for (int k = tid; k < kQ * P; k += kSsdThreads) {
        const int r = k / P, pp = k % P;
        const int64_t t = t0 + r;
        if (t >= p.T) continue;
        p.y[t * p.ldy + h * p.P + pp] = sF[r * o.ldF + pp] + dskip * p.x[t * p.ldx + h * p.P + pp];
    }
}

size_t state_smem_bytes(int64_t P, int64_t N) {
    return align128(size_t(kQ) * (P + kPadBf16) * 2) + align128(size_t(kQ) * (N + kPadBf16) * 2) +
           align128(kQ * 4);
}

struct Workspace {
    float* dtp;
    float* lcum;
    float* states;
    bf16* states16;
};

size_t ws_bytes(int64_t T, int64_t H, int64_t P, int64_t N, Workspace* w, void* base) {
    const int64_t chunks = (T + kQ - 1) / kQ, Tpad = chunks * kQ;
    const size_t a = align128(size_t(H) * Tpad * 4), s = align128(size_t(chunks) * H * P * N * 4);
    if (w) {
        char* b = static_cast<char*>(base);
        w->dtp = reinterpret_cast<float*>(b);
        w->lcum = reinterpret_cast<float*>(b + a);
        w->states = reinterpret_cast<float*>(b + 2 * a);
        w->states16 = reinterpret_cast<bf16*>(b + 2 * a + s);
    }
    return 2 * a + s + s / 2;
}

}  // namespace

bool scan_mamba2_ssd_supports(int64_t P, int64_t N) {
    return P > 0 && N > 0 && P % 16 == 0 && N % 16 == 0 && P <= kSsdMaxP && N <= kSsdMaxN;
}

size_t scan_mamba2_ssd_workspace_bytes(int64_t T, int64_t H, int64_t P, int64_t N) {
    return T > 0 && H > 0 ? ws_bytes(T, H, P, N, nullptr, nullptr) : 0;
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
    MS_CHECK(a.x && a.delta && a.A && a.B && a.C && a.y,
             "scan_mamba2_ssd: x, delta, A, B, C and y are required");
    MS_CHECK(a.ldx >= a.H * a.P && a.ldy >= a.H * a.P, "scan_mamba2_ssd: x/y row stride is smaller than H·P");
    MS_CHECK(a.ldd >= a.H && (!a.delta_out || a.ldo >= a.H),
             "scan_mamba2_ssd: delta row stride is smaller than H");
    MS_CHECK(a.ldb >= a.G * a.N && a.ldc >= a.G * a.N, "scan_mamba2_ssd: B/C row stride is smaller than G·N");
    MS_CHECK(a.H <= 65535, "scan_mamba2_ssd: too many heads");
    const int64_t chunks = (a.T + kQ - 1) / kQ;
    MS_CHECK(chunks <= 65535,
             "scan_mamba2_ssd: more than 65535 chunks of 64 tokens in one call (the forward "
             "calls it per prefill chunk)");

    const size_t need = ws_bytes(a.T, a.H, a.P, a.N, nullptr, nullptr);
    void* owned = nullptr;
    if (!workspace) {
        CUDA_CHECK(cudaMallocAsync(&owned, need, stream));
        workspace = owned;
    } else {
        MS_CHECK(workspace_bytes >= need, "scan_mamba2_ssd: workspace too small");
    }
    Workspace w{};
    ws_bytes(a.T, a.H, a.P, a.N, &w, workspace);

    Params p{};
    p.T = a.T, p.H = a.H, p.P = a.P, p.G = a.G, p.N = a.N, p.chunks = chunks, p.Tpad = chunks * kQ;
    p.x = a.x, p.ldx = a.ldx, p.delta = a.delta, p.ldd = a.ldd;
    p.delta_bias = a.delta_bias, p.softplus = a.delta_softplus ? 1 : 0;
    p.A = a.A, p.B = a.B, p.ldb = a.ldb, p.C = a.C, p.ldc = a.ldc, p.Dskip = a.Dskip, p.thr = a.thr;
    p.y = a.y, p.ldy = a.ldy, p.delta_out = a.delta_out, p.ldo = a.ldo;
    p.dtp = w.dtp, p.lcum = w.lcum, p.states = w.states, p.states16 = w.states16;
    const auto rows16 = [](const float* base, int64_t ld) {
        return ld % 4 == 0 && reinterpret_cast<uintptr_t>(base) % 16 == 0;
    };
    p.vec_x = rows16(a.x, a.ldx), p.vec_b = rows16(a.B, a.ldb), p.vec_c = rows16(a.C, a.ldc);

    // Heads fastest: the blocks resident together read the same chunk's B and C (shared by the heads of a
    // group), so those reads hit in L1/L2.
    const dim3 grid(static_cast<unsigned>(a.H), static_cast<unsigned>(chunks));
    ssd_dt<<<grid, kQ, 0, stream>>>(p, a.probes);
    CUDA_CHECK(cudaGetLastError());

    const size_t smem_state = state_smem_bytes(a.P, a.N);
    const size_t smem_out = out_layout(static_cast<int>(a.P), static_cast<int>(a.N)).bytes;
    // Up to ≈ 170 KB at P = 128, N = 256: opt in above the default 48 KiB.
    auto allow = [](const void* fn, size_t bytes) {
        if (bytes > 48 * 1024)
            CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(bytes)));
    };
    allow(reinterpret_cast<const void*>(ssd_chunk_state), smem_state);
    allow(reinterpret_cast<const void*>(ssd_chunk_out), smem_out);
    ssd_chunk_state<<<grid, kSsdThreads, smem_state, stream>>>(p);
    CUDA_CHECK(cudaGetLastError());
    const int64_t PN = a.P * a.N;
    const dim3 grid_pass(static_cast<unsigned>((PN + kSsdPassThreads - 1) / kSsdPassThreads),
                         static_cast<unsigned>(a.H));
    ssd_state_pass<<<grid_pass, kSsdPassThreads, 0, stream>>>(p, a.s);
    CUDA_CHECK(cudaGetLastError());
    ssd_chunk_out<<<grid, kSsdThreads, smem_out, stream>>>(p);
    CUDA_CHECK(cudaGetLastError());
    if (owned) CUDA_CHECK(cudaFreeAsync(owned, stream));
}

}  // namespace mambascope::kernels::cuda
