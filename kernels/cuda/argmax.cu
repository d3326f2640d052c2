// Greedy argmax over one logits row; see argmax.cuh.
//
// std::max_element keeps `best` (from x[0]) and replaces it by x[i] only when best < x[i]: that is "the
// largest non-NaN value, first index" unless x[0] is NaN (then nothing is ever larger: 0). Each thread scans
// a strided slice keeping (value, index) with the same rule, then the block reduces pairs: larger value wins,
// equal values take the smaller index; NaNs never enter a pair.
//
// PDL-aware (since 2026-12-05, eleventh stop): the kernel waits in grid_dependency_wait before it reads the
// row, so the greedy step graph's edge from the LM head into it becomes programmatic like every other kernel
// edge of the step (docs/cuda.md, "Decoding on the GPU"), and its launch overlaps the head.
//
// Loads in flight (since 2026-12-05, fourteenth stop): each thread issues kArgmaxUnroll 16-byte loads before
// it compares any (scan_row); before, its loop made one dependent scalar load per 1024 elements, 49 L2 round
// trips in a row on a 50k vocabulary (Nsight Compute: 27.4 µs, the longest kernel of mamba-130m's step).
// MAMBASCOPE_ARGMAX=scalar runs the old loop (A/B runs, the tests); read per call.
//
// Since the fifteenth stop the greedy graph folds the argmax into the LM head where it can (argmax_key,
// gemv_rmsnorm_argmax); this kernel remains for the other heads and MAMBASCOPE_ARGMAX=vec|scalar.
#include <string>

#include "cuda/argmax.cuh"
#include "cuda/cuda_check.cuh"
#include "cuda/device_math.cuh"
#include "cuda/pdl.cuh"
#include "mambascope/env_switch.h"
#include "mambascope/error.h"

namespace mambascope::kernels::cuda {
namespace {

constexpr int kArgmaxThreads = 1024;
// float4s a thread loads before it compares any: with 1024 threads, a 50k-entry vocabulary row is two
// rounds of loads (each thread had 49 dependent scalar loads before: 27 µs of mamba-130m's step on the H100)
constexpr int kArgmaxUnroll = 8;

struct Best {
    float v;
    int64_t i;  // -1: nothing seen
};

__device__ __forceinline__ Best better(Best a, Best b) {
    if (b.i < 0) return a;
    if (a.i < 0) return b;
    if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
    return a;
}

__device__ __forceinline__ void take(Best& b, float v, int64_t i) {
    if (v == v) b = better(b, Best{v, i});  // NaNs skipped
}

// Elements [0, n) of x: a scalar head up to x's first 16-byte boundary, then float4s, kArgmaxUnroll of them
// per thread loaded before any is compared (one L2 round trip per kArgmaxUnroll · 4 · kArgmaxThreads
// elements), then a scalar tail. `better` is a total order on (value, -index), so the order in which a
// thread meets its elements does not change the pair it keeps.
__device__ __forceinline__ Best scan_row(int64_t n, const float* x) {
    Best b{0.0f, -1};
    const int64_t head = min(n, static_cast<int64_t>((16 - reinterpret_cast<uintptr_t>(x) % 16) % 16 / 4));
    if (threadIdx.x < head) take(b, x[threadIdx.x], threadIdx.x);
    const float4* x4 = reinterpret_cast<const float4*>(x + head);
    const int64_t n4 = (n - head) / 4;
    for (int64_t base = 0; base < n4; base += static_cast<int64_t>(kArgmaxUnroll) * kArgmaxThreads) {
        float4 v[kArgmaxUnroll];
#pragma unroll
        for (int u = 0; u < kArgmaxUnroll; ++u) {
            const int64_t q = base + static_cast<int64_t>(u) * kArgmaxThreads + threadIdx.x;
            if (q < n4) v[u] = x4[q];
        }
#pragma unroll
        for (int u = 0; u < kArgmaxUnroll; ++u) {
            const int64_t q = base + static_cast<int64_t>(u) * kArgmaxThreads + threadIdx.x;
            if (q >= n4) break;  // q grows with u
            const int64_t i = head + 4 * q;
            take(b, v[u].x, i), take(b, v[u].y, i + 1), take(b, v[u].z, i + 2), take(b, v[u].w, i + 3);
        }
    }
    const int64_t tail = head + 4 * n4 + threadIdx.x;
    if (tail < n) take(b, x[tail], tail);  // fewer than 4 elements
    return b;
}

// The loop before the fourteenth stop, one scalar load per step (MAMBASCOPE_ARGMAX=scalar: A/B runs, the
// tests).
__device__ __forceinline__ Best scan_row_scalar(int64_t n, const float* x) {
    Best b{0.0f, -1};
    for (int64_t i = threadIdx.x; i < n; i += kArgmaxThreads) take(b, x[i], i);
    return b;
}

template <bool kVec>
__global__ void __launch_bounds__(kArgmaxThreads) argmax_kernel(int64_t n, const float* x, int32_t* out) {
    __shared__ float sv[kArgmaxThreads / 32];
    __shared__ int64_t si[kArgmaxThreads / 32];
    detail::grid_dependency_wait();  // the row comes from the kernel before (the LM head)
    Best b = kVec ? scan_row(n, x) : scan_row_scalar(n, x);
    for (int o = 16; o > 0; o /= 2) {
        Best other;
        other.v = __shfl_xor_sync(0xffffffffu, b.v, o);
        other.i = __shfl_xor_sync(0xffffffffu, b.i, o);
        b = better(b, other);
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) sv[warp] = b.v, si[warp] = b.i;
    __syncthreads();
    if (warp == 0) {
        b = lane < kArgmaxThreads / 32 ? Best{sv[lane], si[lane]} : Best{0.0f, -1};
        for (int o = 16; o > 0; o /= 2) {
            Best other;
            other.v = __shfl_xor_sync(0xffffffffu, b.v, o);
            other.i = __shfl_xor_sync(0xffffffffu, b.i, o);
            b = better(b, other);
        }
        if (lane == 0) {
            // std::max_element: x[0] NaN → 0; every element NaN → 0; else the pair (x[0] is one of its
            // candidates, so a tie with x[0] gives 0)
            const float x0 = x[0];
            out[0] = x0 != x0 || b.i < 0 ? 0 : static_cast<int32_t>(b.i);
        }
    }
}

}  // namespace

ArgmaxMode argmax_mode() {
    return env_enum<ArgmaxMode>(
        "MAMBASCOPE_ARGMAX",
        {{"head", ArgmaxMode::Head}, {"vec", ArgmaxMode::Vec}, {"scalar", ArgmaxMode::Scalar}},
        "it sets where the greedy step takes its argmax: in the LM head's kernel, "
        "or in a kernel of its own with several loads in flight per thread, or "
        "with one (docs/cuda.md, \"Greedy steps\")");
}

void argmax(int64_t n, const float* x, int32_t* out, cudaStream_t stream) {
    MS_CHECK(n >= 1 && n <= INT32_MAX, "argmax: the row must have 1 to 2^31 - 1 elements");
    const bool vec = argmax_mode() != ArgmaxMode::Scalar;  // Head: the caller's head could not take it
    const auto kernel = vec ? argmax_kernel<true> : argmax_kernel<false>;
    pdl_register(kernel);
    kernel<<<1, kArgmaxThreads, 0, stream>>>(n, x, out);
    CUDA_CHECK(cudaGetLastError());
}

}  // namespace mambascope::kernels::cuda
