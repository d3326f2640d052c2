// Depthwise causal conv1d + SiLU with carried state; see conv1d_silu.cuh.
#include "cuda/conv1d_silu.cuh"
#include "cuda/cuda_check.cuh"
#include "cuda/device_math.cuh"

namespace mambascope::kernels::cuda {
namespace {

using namespace detail;

constexpr int kConvThreads = 128;  // channels per block
constexpr int kConvTileT = 32;     // tokens per thread: the window slides over them

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
    const dim3 grid(static_cast<unsigned>((Cn + kConvThreads - 1) / kConvThreads),
                    static_cast<unsigned>((T + kConvTileT - 1) / kConvTileT));
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
