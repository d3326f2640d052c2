// RMSNorm and gated grouped RMSNorm; see rmsnorm.cuh.
#include "cuda/cuda_check.cuh"
#include "cuda/device_math.cuh"
#include "cuda/rmsnorm.cuh"

namespace mambascope::kernels::cuda {
namespace {

using namespace detail;

constexpr int kNormThreads = 256;  // threads per row (or row group)

// Sum over the block; every thread gets the result.
__device__ float block_sum(float v) {
    __shared__ float partial[kNormThreads / 32];
    v = warp_sum(v);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // `partial` may still be read from a previous call
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    float total = 0.0f;
#pragma unroll
    for (int i = 0; i < kNormThreads / 32; ++i) total += partial[i];
    return total;
}

__device__ __forceinline__ void store(float* p, float v) {
    *p = v;
}
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) {
    *p = __float2bfloat16_rn(v);
}

template <class Out>
__global__ void __launch_bounds__(kNormThreads)
    rmsnorm_kernel(int64_t D, const float* x, int64_t ldx, const float* __restrict__ w, float eps, Out* out,
                   int64_t ldo) {
    const float* xr = x + static_cast<int64_t>(blockIdx.x) * ldx;
    Out* o = out + static_cast<int64_t>(blockIdx.x) * ldo;
    float ss = 0.0f;
    for (int64_t d = threadIdx.x; d < D; d += kNormThreads) ss += xr[d] * xr[d];
    const float inv = rsqrtf(block_sum(ss) / static_cast<float>(D) + eps);
    for (int64_t d = threadIdx.x; d < D; d += kNormThreads) store(o + d, xr[d] * inv * w[d]);
}

// grid (T, G): block (t, g) gates and normalises columns [g·E/G, (g+1)·E/G) of row t.
template <class Out>
__global__ void __launch_bounds__(kNormThreads)
    gated_rmsnorm_kernel(int64_t group, const float* y, int64_t ldy, const float* __restrict__ z, int64_t ldz,
                         const float* __restrict__ w, float eps, Out* out, int64_t ldo) {
    const int64_t t = blockIdx.x, c0 = static_cast<int64_t>(blockIdx.y) * group;
    const float* yr = y + t * ldy + c0;
    Out* orow = out + t * ldo + c0;
    const float* zr = z + t * ldz + c0;
    float ss = 0.0f;
    for (int64_t e = threadIdx.x; e < group; e += kNormThreads) {
        const float g = yr[e] * silu(zr[e]);
        ss += g * g;
    }
    const float inv = rsqrtf(block_sum(ss) / static_cast<float>(group) + eps);
    // out may alias y (float32 in place): each element is read before it is written, by the same thread.
    for (int64_t e = threadIdx.x; e < group; e += kNormThreads)
        store(orow + e, yr[e] * silu(zr[e]) * inv * w[c0 + e]);
}

}  // namespace

void rmsnorm(int64_t T, int64_t D, const float* x, int64_t ldx, const float* w, float eps, float* out,
             int64_t ldo, cudaStream_t stream) {
    MS_CHECK(T >= 0 && D >= 0, "rmsnorm: negative size");
    if (T == 0 || D == 0) return;
    MS_CHECK(x && w && out && ldx >= D && ldo >= D, "rmsnorm: bad pointers or strides");
    MS_CHECK(T <= 0x7fffffff, "rmsnorm: too many rows");
    rmsnorm_kernel<float><<<static_cast<unsigned>(T), kNormThreads, 0, stream>>>(D, x, ldx, w, eps, out, ldo);
    CUDA_CHECK(cudaGetLastError());
}

void rmsnorm_bf16(int64_t T, int64_t D, const float* x, int64_t ldx, const float* w, float eps,
                  __nv_bfloat16* out, int64_t ldo, cudaStream_t stream) {
    MS_CHECK(T >= 0 && D >= 0, "rmsnorm_bf16: negative size");
    if (T == 0 || D == 0) return;
    MS_CHECK(x && w && out && ldx >= D && ldo >= D, "rmsnorm_bf16: bad pointers or strides");
    MS_CHECK(T <= 0x7fffffff, "rmsnorm_bf16: too many rows");
    rmsnorm_kernel<__nv_bfloat16>
        <<<static_cast<unsigned>(T), kNormThreads, 0, stream>>>(D, x, ldx, w, eps, out, ldo);
    CUDA_CHECK(cudaGetLastError());
}

void gated_rmsnorm(int64_t T, int64_t E, int64_t G, float* y, int64_t ldy, const float* z, int64_t ldz,
                   const float* w, float eps, cudaStream_t stream) {
    MS_CHECK(T >= 0 && E >= 0 && G >= 1, "gated_rmsnorm: bad sizes");
    if (T == 0 || E == 0) return;
    MS_CHECK(E % G == 0, "gated_rmsnorm: groups must divide E");
    MS_CHECK(y && z && w && ldy >= E && ldz >= E, "gated_rmsnorm: bad pointers or strides");
    MS_CHECK(T <= 0x7fffffff && G <= 65535, "gated_rmsnorm: too many rows or groups");
    gated_rmsnorm_kernel<float>
        <<<dim3(static_cast<unsigned>(T), static_cast<unsigned>(G)), kNormThreads, 0, stream>>>(
            E / G, y, ldy, z, ldz, w, eps, y, ldy);
    CUDA_CHECK(cudaGetLastError());
}

void gated_rmsnorm_bf16(int64_t T, int64_t E, int64_t G, const float* y, int64_t ldy, const float* z,
                        int64_t ldz, const float* w, float eps, __nv_bfloat16* out, int64_t ldo,
                        cudaStream_t stream) {
    MS_CHECK(T >= 0 && E >= 0 && G >= 1, "gated_rmsnorm_bf16: bad sizes");
    if (T == 0 || E == 0) return;
    MS_CHECK(E % G == 0, "gated_rmsnorm_bf16: groups must divide E");
    MS_CHECK(y && z && w && out && ldy >= E && ldz >= E && ldo >= E,
             "gated_rmsnorm_bf16: bad pointers or strides");
    MS_CHECK(T <= 0x7fffffff && G <= 65535, "gated_rmsnorm_bf16: too many rows or groups");
    gated_rmsnorm_kernel<__nv_bfloat16>
        <<<dim3(static_cast<unsigned>(T), static_cast<unsigned>(G)), kNormThreads, 0, stream>>>(
            E / G, y, ldy, z, ldz, w, eps, out, ldo);
    CUDA_CHECK(cudaGetLastError());
}

}  // namespace mambascope::kernels::cuda
