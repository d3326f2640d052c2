// Depthwise causal conv1d + SiLU with carried state; see conv1d_silu.cuh.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "cuda/conv1d_silu.cuh"
#include "cuda/cuda_check.cuh"
#include "cuda/device_math.cuh"
#include "cuda/pdl.cuh"
#include "mambascope/env_switch.h"

namespace mambascope::kernels::cuda {
namespace {

using namespace detail;

constexpr int kConvThreads = 128;  // channels per block
constexpr int kConvTileT = 32;     // tokens per thread: the window slides over them
constexpr int kConvBatch = 8;      // bf16 vector conv: token rows loaded ahead of their arithmetic

__device__ __forceinline__ float in_f32(const float* p) {
    return *p;
}
__device__ __forceinline__ float in_f32(const __nv_bfloat16* p) {
    return bf16_to_f32(p);
}

// In = float or __nv_bfloat16 (the bf16 in_proj output); the window, the state and the sum are float32.
template <int kK, typename In>
__global__ void __launch_bounds__(kConvThreads)
    conv_kernel(int64_t T, int64_t Cn, const In* __restrict__ in, int64_t ldi, const float* __restrict__ w,
                const float* __restrict__ bias, float* state, float* __restrict__ out, int64_t ldo,
                __nv_bfloat16* __restrict__ out16, int64_t ldo16, bool write_state) {
    grid_dependency_wait();  // PDL (pdl.cuh): the input and the state come from earlier kernels
    in = after_wait(in);     // coherent loads of the input (device_math.cuh)
    const int64_t c = static_cast<int64_t>(blockIdx.x) * kConvThreads + threadIdx.x;
    if (c >= Cn) return;
    const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kConvTileT;
    const int64_t t1 = min(T, t0 + kConvTileT);
    float wk[kK], win[kK];
#pragma unroll
    for (int k = 0; k < kK; ++k) wk[k] = w[c * kK + k];
        // win[1..K-1] = the K-1 rows before t0 of the virtual input [state; in] (row r < 0 is state row
        // (K-1)+r).
#pragma unroll
    for (int k = 0; k < kK - 1; ++k) {
        const int64_t r = t0 - (kK - 1) + k;
        win[k + 1] = r < 0 ? state[(kK - 1 + r) * Cn + c] : in_f32(in + r * ldi + c);
    }
    const float b = bias ? bias[c] : 0.0f;
    for (int64_t t = t0; t < t1; ++t) {
#pragma unroll
        for (int k = 0; k < kK - 1; ++k) win[k] = win[k + 1];
        win[kK - 1] = in_f32(in + t * ldi + c);
        float acc = b;
#pragma unroll
        for (int k = 0; k < kK; ++k) acc += wk[k] * win[k];
        const float v = silu(acc);
        if (out) out[t * ldo + c] = v;
        if (out16) out16[t * ldo16 + c] = f32_to_bf16_rn(v);
    }
    // One time tile (T ≤ kConvTileT, e.g. a decode step): this thread alone read channel c's state, and its
    // window now holds the last K-1 rows of [state; in], so it writes the new state itself (no second
    // kernel).
    if (write_state) {
#pragma unroll
        for (int k = 0; k < kK - 1; ++k) state[k * Cn + c] = win[k + 1];
    }
}

// bf16 in, bf16 out only, kV channels per thread (kV = 2 or 4: 4- or 8-byte loads and stores) over kTile
// tokens: the conv of the bf16 Mamba-2 chain (xBC, a slice of in_proj's bf16 output). Measured side by side
// on the H200 (call 12 of docs/benchmarks.md, mamba2-1.3b × 16k tokens, 48 launches): one channel per thread
// (conv_kernel) 5.83 ms, 2 × 32 tokens 4.87 ms, 4 × 16 5.51 ms, 8 × 32 9.03 ms, 8 × 8 11.46 ms (16-byte
// accesses leave too few threads in flight; the 8-channel variants were dropped). Same arithmetic per
// channel, in the same order, as conv_kernel. The state is written by conv_state_kernel (used for T >
// kConvTileT only).
template <int kV>
struct BfVec;  // kV bf16 values as one load
template <>
struct BfVec<2> {
    using type = unsigned;
};
template <>
struct BfVec<4> {
    using type = uint2;
};

template <int kK, int kV, int kTile, int kBatch>
__global__ void __launch_bounds__(kConvThreads)
    conv_vec_kernel(int64_t T, int64_t Cn, const __nv_bfloat16* __restrict__ in, int64_t ldi,
                    const float* __restrict__ w, const float* __restrict__ bias,
                    const float* __restrict__ state, __nv_bfloat16* __restrict__ out16, int64_t ldo16) {
    using V = typename BfVec<kV>::type;
    const int64_t cv = (static_cast<int64_t>(blockIdx.x) * kConvThreads + threadIdx.x) * kV;
    if (cv >= Cn) return;
    const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTile;
    const int64_t t1 = min(T, t0 + kTile);
    const auto row = [&](int64_t r, float* v) {  // input row r (state row (K-1)+r when r < 0), kV channels
        if (r < 0) {
#pragma unroll
            for (int j = 0; j < kV; ++j) v[j] = state[(kK - 1 + r) * Cn + cv + j];
        } else {
            const V u = *reinterpret_cast<const V*>(in + r * ldi + cv);
            const unsigned* q = reinterpret_cast<const unsigned*>(&u);
#pragma unroll
            for (int j = 0; j < kV / 2; ++j) {
                v[2 * j] = __uint_as_float(q[j] << 16);
                v[2 * j + 1] = __uint_as_float(q[j] & 0xffff0000u);
            }
        }
    };
    float wk[kV][kK], win[kK][kV], b[kV];
#pragma unroll
    for (int j = 0; j < kV; ++j) {
        b[j] = bias ? bias[cv + j] : 0.0f;
#pragma unroll
        for (int k = 0; k < kK; ++k) wk[j][k] = w[(cv + j) * kK + k];
    }
#pragma unroll
    for (int k = 0; k < kK - 1; ++k) row(t0 - (kK - 1) + k, win[k + 1]);
    // One output row from the window after sliding in `next` (kV channels, float32).
    const auto step = [&](int64_t t, const float* next) {
#pragma unroll
        for (int k = 0; k < kK - 1; ++k)
#pragma unroll
            for (int j = 0; j < kV; ++j) win[k][j] = win[k + 1][j];
#pragma unroll
        for (int j = 0; j < kV; ++j) win[kK - 1][j] = next[j];
        V o;
        unsigned* q = reinterpret_cast<unsigned*>(&o);
#pragma unroll
        for (int j = 0; j < kV / 2; ++j) {
            float acc0 = b[2 * j], acc1 = b[2 * j + 1];
#pragma unroll
            for (int k = 0; k < kK; ++k) acc0 += wk[2 * j][k] * win[k][2 * j];
#pragma unroll
            for (int k = 0; k < kK; ++k) acc1 += wk[2 * j + 1][k] * win[k][2 * j + 1];
            const __nv_bfloat16 lo = f32_to_bf16_rn(silu(acc0)), hi = f32_to_bf16_rn(silu(acc1));
            q[j] = static_cast<unsigned>(static_cast<__nv_bfloat16_raw>(lo).x) |
                   (static_cast<unsigned>(static_cast<__nv_bfloat16_raw>(hi).x) << 16);
        }
        *reinterpret_cast<V*>(out16 + t * ldo16 + cv) = o;
    };
    // Rows in batches of kBatch loaded before any is used: kBatch loads in flight per thread instead of one
    // (each token's load waited for the one before's arithmetic; twenty-second stop).
    int64_t t = t0;
    for (; t + kBatch <= t1; t += kBatch) {
        float next[kBatch][kV];
#pragma unroll
        for (int i = 0; i < kBatch; ++i) row(t + i, next[i]);
#pragma unroll
        for (int i = 0; i < kBatch; ++i) step(t + i, next[i]);
    }
    for (; t < t1; ++t) {
        float next[kV];
        row(t, next);
        step(t, next);
    }
}

// Which bf16 → bf16 conv: MAMBASCOPE_CONV_BF16 = "1" (conv_kernel, one channel per thread), "4x16" (4
// channels × 16 tokens per thread), default "2x32" (the fastest, above), "2x32-seq" (2x32 with one row load
// in flight per thread, the kernel before the twenty-second stop). Read per call (A/B runs, the tests).
enum class ConvBf16 { k2x32, k2x32Seq, k4x16, kScalar };
ConvBf16 conv_bf16_variant() {
    return env_enum<ConvBf16>("MAMBASCOPE_CONV_BF16",
                              {{"", ConvBf16::k2x32},
                               {"2x32", ConvBf16::k2x32},
                               {"2x32-seq", ConvBf16::k2x32Seq},
                               {"4x16", ConvBf16::k4x16},
                               {"1", ConvBf16::kScalar}},
                              "it sets the bf16 conv's channels x tokens per thread (docs/cuda.md, "
                              "\"Switches for A/B runs\")");
}

template <int kK, int kV, int kTile, int kBatch>
void launch_vec(int64_t T, int64_t Cn, const __nv_bfloat16* in, int64_t ldi, const float* w,
                const float* bias, const float* state, __nv_bfloat16* out16, int64_t ldo16,
                cudaStream_t stream) {
    const int64_t groups = Cn / kV;
    const dim3 grid(static_cast<unsigned>((groups + kConvThreads - 1) / kConvThreads),
                    static_cast<unsigned>((T + kTile - 1) / kTile));
    conv_vec_kernel<kK, kV, kTile, kBatch>
        <<<grid, kConvThreads, 0, stream>>>(T, Cn, in, ldi, w, bias, state, out16, ldo16);
}

// New state = the last K-1 rows of [state; in]; rows are taken in increasing order, so an in-place shift of
// `state` (T < K-1) reads every row before overwriting it.
template <typename In>
__global__ void conv_state_kernel(int64_t T, int64_t Cn, int64_t K, const In* __restrict__ in, int64_t ldi,
                                  float* state) {
    const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= Cn) return;
    for (int64_t r = 0; r < K - 1; ++r) {
        const int64_t src = T - (K - 1) + r;
        state[r * Cn + c] = src < 0 ? state[(K - 1 + src) * Cn + c] : in_f32(in + src * ldi + c);
    }
}

template <int kK, typename In>
void launch(int64_t T, int64_t Cn, const In* in, int64_t ldi, const float* w, const float* bias, float* state,
            float* out, int64_t ldo, __nv_bfloat16* out16, int64_t ldo16, bool write_state,
            cudaStream_t stream) {
    if constexpr (std::is_same_v<In, __nv_bfloat16>) {
        // bf16 → bf16 only, rows of whole vectors, state by the separate kernel: several channels per thread.
        const ConvBf16 variant = conv_bf16_variant();
        const int vv = variant == ConvBf16::k4x16 ? 4 : 2, tile = variant == ConvBf16::k4x16 ? 16 : 32;
        const auto rows = [&](const void* p, int64_t ld) {
            return ld % vv == 0 && reinterpret_cast<uintptr_t>(p) % (2 * vv) == 0;
        };
        if (variant != ConvBf16::kScalar && !out && !write_state && Cn % vv == 0 && rows(in, ldi) &&
            rows(out16, ldo16) && (T + tile - 1) / tile <= 65535) {
            switch (variant) {
                case ConvBf16::k4x16:
                    launch_vec<kK, 4, 16, kConvBatch>(T, Cn, in, ldi, w, bias, state, out16, ldo16, stream);
                    break;
                case ConvBf16::k2x32Seq:
                    launch_vec<kK, 2, 32, 1>(T, Cn, in, ldi, w, bias, state, out16, ldo16, stream);
                    break;
                default:
                    launch_vec<kK, 2, 32, kConvBatch>(T, Cn, in, ldi, w, bias, state, out16, ldo16, stream);
                    break;
            }
            return;
        }
    }
    const dim3 grid(static_cast<unsigned>((Cn + kConvThreads - 1) / kConvThreads),
                    static_cast<unsigned>((T + kConvTileT - 1) / kConvTileT));
    pdl_register(conv_kernel<kK, In>);
    conv_kernel<kK, In><<<grid, kConvThreads, 0, stream>>>(T, Cn, in, ldi, w, bias, state, out, ldo, out16,
                                                           ldo16, write_state);
}

}  // namespace

namespace {

template <typename In>
void conv1d_silu_any(int64_t T, int64_t Cn, int64_t K, const In* in, int64_t ldi, const float* w,
                     const float* bias, float* state, float* out, int64_t ldo, cudaStream_t stream,
                     __nv_bfloat16* out16, int64_t ldo16) {
    MS_CHECK(T >= 0 && Cn >= 0, "conv1d_silu: negative size");
    if (T == 0 || Cn == 0) return;
    MS_CHECK(K >= 1 && K <= kConvMaxK, "conv1d_silu: kernel width must be 1..8");
    MS_CHECK(in && w && (out || out16) && (K == 1 || state),
             "conv1d_silu: in, w, out (or out16) and (K > 1) state are required");
    MS_CHECK(ldi >= Cn && (!out || ldo >= Cn) && (!out16 || ldo16 >= Cn),
             "conv1d_silu: a row stride is smaller than Cn");
    MS_CHECK((T + kConvTileT - 1) / kConvTileT <= 65535, "conv1d_silu: T too large for one call");
    // A single time tile updates the state inside the conv kernel (win holds it); longer inputs use the
    // sequential state kernel below, after every tile has read its rows.
    const bool fused_state = K > 1 && T <= kConvTileT;
    switch (K) {
        case 1:
            launch<1, In>(T, Cn, in, ldi, w, bias, state, out, ldo, out16, ldo16, fused_state, stream);
            break;
        case 2:
            launch<2, In>(T, Cn, in, ldi, w, bias, state, out, ldo, out16, ldo16, fused_state, stream);
            break;
        case 3:
            launch<3, In>(T, Cn, in, ldi, w, bias, state, out, ldo, out16, ldo16, fused_state, stream);
            break;
        case 4:
            launch<4, In>(T, Cn, in, ldi, w, bias, state, out, ldo, out16, ldo16, fused_state, stream);
            break;
        case 5:
            launch<5, In>(T, Cn, in, ldi, w, bias, state, out, ldo, out16, ldo16, fused_state, stream);
            break;
        case 6:
            launch<6, In>(T, Cn, in, ldi, w, bias, state, out, ldo, out16, ldo16, fused_state, stream);
            break;
        case 7:
            launch<7, In>(T, Cn, in, ldi, w, bias, state, out, ldo, out16, ldo16, fused_state, stream);
            break;
        default:
            launch<8, In>(T, Cn, in, ldi, w, bias, state, out, ldo, out16, ldo16, fused_state, stream);
            break;
    }
    CUDA_CHECK(cudaGetLastError());
    if (K > 1 && !fused_state) {
        conv_state_kernel<In>
            <<<static_cast<unsigned>((Cn + 255) / 256), 256, 0, stream>>>(T, Cn, K, in, ldi, state);
        CUDA_CHECK(cudaGetLastError());
    }
}

}  // namespace

void conv1d_silu(int64_t T, int64_t Cn, int64_t K, const float* in, int64_t ldi, const float* w,
                 const float* bias, float* state, float* out, int64_t ldo, cudaStream_t stream,
                 __nv_bfloat16* out16, int64_t ldo16) {
    conv1d_silu_any(T, Cn, K, in, ldi, w, bias, state, out, ldo, stream, out16, ldo16);
}

void conv1d_silu(int64_t T, int64_t Cn, int64_t K, const __nv_bfloat16* in, int64_t ldi, const float* w,
                 const float* bias, float* state, float* out, int64_t ldo, cudaStream_t stream,
                 __nv_bfloat16* out16, int64_t ldo16) {
    conv1d_silu_any(T, Cn, K, in, ldi, w, bias, state, out, ldo, stream, out16, ldo16);
}

}  // namespace mambascope::kernels::cuda
