// Glue kernels of the GPU forward; see forward_ops.cuh.
#include "cuda/cuda_check.cuh"
#include "cuda/forward_ops.cuh"

namespace mambascope::kernels::cuda {
namespace {

constexpr int kCopyThreads = 256;  // threads per row copy
constexpr int kNllThreads = 512;   // threads per logits row (V ≈ 50k: ~100 elements per thread)

__global__ void embed_kernel(int64_t D, const int32_t* ids, const float* table, float* out) {
    const int64_t r = blockIdx.x;
    const float* src = table + static_cast<int64_t>(ids[r]) * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) out[r * D + d] = src[d];
}

__global__ void gather_kernel(int64_t cols, const int64_t* rows, const float* src, int64_t lds, float* out,
                              int64_t ldo) {
    const int64_t r = blockIdx.x;
    const float* s = src + rows[r] * lds;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) out[r * ldo + c] = s[c];
}

__device__ float block_reduce(float v, float* shared, bool is_max) {
    for (int o = 16; o > 0; o >>= 1) {
        const float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, w) : v + w;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    const int warps = blockDim.x >> 5;
    v = threadIdx.x < warps ? shared[threadIdx.x] : (is_max ? -INFINITY : 0.0f);
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) {
            const float w = __shfl_xor_sync(0xffffffffu, v, o);
            v = is_max ? fmaxf(v, w) : v + w;
        }
    __syncthreads();
    if (threadIdx.x == 0) shared[0] = v;
    __syncthreads();
    const float out = shared[0];
    __syncthreads();
    return out;
}

__global__ void nll_kernel(int64_t V, const float* logits, int64_t ldl, const int32_t* target, float* nll) {
    __shared__ float shared[32];
    const float* row = logits + static_cast<int64_t>(blockIdx.x) * ldl;
    float mx = -INFINITY;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, row[v]);
    mx = block_reduce(mx, shared, true);
    float se = 0.0f;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) se += expf(row[v] - mx);
    se = block_reduce(se, shared, false);
    if (threadIdx.x == 0) nll[blockIdx.x] = logf(se) + mx - row[target[blockIdx.x]];
}

}  // namespace

void embed_rows(int64_t R, int64_t D, const int32_t* ids, const float* table, float* out,
                cudaStream_t stream) {
    if (R <= 0) return;
    embed_kernel<<<static_cast<unsigned>(R), kCopyThreads, 0, stream>>>(D, ids, table, out);
    CUDA_CHECK(cudaGetLastError());
}

void gather_rows(int64_t R, int64_t cols, const int64_t* rows, const float* src, int64_t lds, float* out,
                 int64_t ldo, cudaStream_t stream) {
    if (R <= 0) return;
    gather_kernel<<<static_cast<unsigned>(R), kCopyThreads, 0, stream>>>(cols, rows, src, lds, out, ldo);
    CUDA_CHECK(cudaGetLastError());
}

void nll_rows(int64_t R, int64_t V, const float* logits, int64_t ldl, const int32_t* target, float* nll,
              cudaStream_t stream) {
    if (R <= 0) return;
    nll_kernel<<<static_cast<unsigned>(R), kNllThreads, 0, stream>>>(V, logits, ldl, target, nll);
    CUDA_CHECK(cudaGetLastError());
}

}  // namespace mambascope::kernels::cuda
