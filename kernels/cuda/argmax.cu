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
#include "cuda/argmax.cuh"
#include "cuda/cuda_check.cuh"
#include "cuda/device_math.cuh"
#include "cuda/pdl.cuh"
#include "mambascope/error.h"

namespace mambascope::kernels::cuda {
namespace {

constexpr int kArgmaxThreads = 1024;

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

__global__ void __launch_bounds__(kArgmaxThreads) argmax_kernel(int64_t n, const float* x, int32_t* out) {
    __shared__ float sv[kArgmaxThreads / 32];
    __shared__ int64_t si[kArgmaxThreads / 32];
    detail::grid_dependency_wait();  // the row comes from the kernel before (the LM head)
    Best b{0.0f, -1};
    for (int64_t i = threadIdx.x; i < n; i += kArgmaxThreads) {
        const float v = x[i];
        if (v == v) b = better(b, Best{v, i});  // NaNs skipped
    }
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

void argmax(int64_t n, const float* x, int32_t* out, cudaStream_t stream) {
    MS_CHECK(n >= 1 && n <= INT32_MAX, "argmax: the row must have 1 to 2^31 - 1 elements");
    pdl_register(argmax_kernel);
    argmax_kernel<<<1, kArgmaxThreads, 0, stream>>>(n, x, out);
    CUDA_CHECK(cudaGetLastError());
}

}  // namespace mambascope::kernels::cuda
