// cuBLAS wrapper for C = A·Wᵀ in row-major float32; see gemm.cuh.
#include <algorithm>
#include <climits>

#include "cuda/cuda_check.cuh"
#include "cuda/gemm.cuh"

namespace mambascope::kernels::cuda {

CublasHandle::CublasHandle() {
    CUBLAS_CHECK(cublasCreate(&handle_));
}

CublasHandle::~CublasHandle() {
    if (handle_) cublasDestroy(handle_);
}

void gemm_rowmajor(cublasHandle_t handle, cudaStream_t stream, int64_t M, int64_t N, int64_t K,
                   const float* A, int64_t lda, const float* W, int64_t ldw, float* C, int64_t ldc, bool tf32,
                   float beta) {
    MS_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size");
    if (M == 0 || N == 0) return;
    MS_CHECK(handle && A && W && C, "gemm: null handle or pointer");
    MS_CHECK(lda >= K && ldw >= K && ldc >= N, "gemm: a row stride is smaller than the row");
    MS_CHECK(
        M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && lda <= INT_MAX && ldw <= INT_MAX && ldc <= INT_MAX,
        "gemm: size exceeds cuBLAS's 32-bit limits");
    CUBLAS_CHECK(cublasSetStream(handle, stream));
    const float alpha = 1.0f;
    // Column-major view: Cᵀ (N×M, ldc) = op(W) (N×K) · Aᵀ (K×M), where W's storage is column-major K×N (ld =
    // ldw).
    CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
                              static_cast<int>(K), &alpha, W, CUDA_R_32F, static_cast<int>(ldw), A,
                              CUDA_R_32F, static_cast<int>(lda), &beta, C, CUDA_R_32F, static_cast<int>(ldc),
                              tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace mambascope::kernels::cuda

namespace mambascope::kernels::cuda {
namespace {

constexpr int kConvertThreads = 256;
constexpr int64_t kConvertMaxBlocks = 4096;  // enough to fill the GPU; threads stride past that

// Contiguous src/dst (a weight as one run of n floats): grid-stride over the elements, so that one long row
// spreads over the whole GPU. (One block per row, below, converted a 1 × 16M weight with a single block: 7.5
// ms per weight, ≈ 1.8 s for mamba-1.4b's bf16 copies; this runs at memory speed.)
__global__ void to_bf16_flat_kernel(int64_t n, const float* __restrict__ src,
                                    __nv_bfloat16* __restrict__ dst) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
        dst[i] = __float2bfloat16(src[i]);
}

// Strided rows (activations): one block per row.
__global__ void to_bf16_rows_kernel(int64_t cols, const float* src, int64_t lds, __nv_bfloat16* dst,
                                    int64_t ldd) {
    const int64_t r = blockIdx.x;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
        dst[r * ldd + c] = __float2bfloat16(src[r * lds + c]);
}

}  // namespace

void to_bf16(int64_t rows, int64_t cols, const float* src, int64_t lds, __nv_bfloat16* dst, int64_t ldd,
             cudaStream_t stream) {
    if (rows <= 0 || cols <= 0) return;
    MS_CHECK(lds >= cols && ldd >= cols, "to_bf16: a row stride is smaller than the row");
    if ((lds == cols && ldd == cols) || rows == 1) {
        const int64_t n = rows * cols;
        const int64_t blocks = std::min(kConvertMaxBlocks, (n + kConvertThreads - 1) / kConvertThreads);
        to_bf16_flat_kernel<<<static_cast<unsigned>(blocks), kConvertThreads, 0, stream>>>(n, src, dst);
    } else {
        MS_CHECK(rows <= INT_MAX, "to_bf16: too many rows");
        to_bf16_rows_kernel<<<static_cast<unsigned>(rows), kConvertThreads, 0, stream>>>(cols, src, lds, dst,
                                                                                         ldd);
    }
    CUDA_CHECK(cudaGetLastError());
}

void gemm_rowmajor_bf16(cublasHandle_t handle, cudaStream_t stream, int64_t M, int64_t N, int64_t K,
                        const __nv_bfloat16* A, int64_t lda, const __nv_bfloat16* W, int64_t ldw, float* C,
                        int64_t ldc, float beta) {
    MS_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size");
    if (M == 0 || N == 0) return;
    MS_CHECK(handle && A && W && C, "gemm: null handle or pointer");
    MS_CHECK(lda >= K && ldw >= K && ldc >= N, "gemm: a row stride is smaller than the row");
    MS_CHECK(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX, "gemm: size exceeds cuBLAS's 32-bit limits");
    CUBLAS_CHECK(cublasSetStream(handle, stream));
    const float alpha = 1.0f;
    CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
                              static_cast<int>(K), &alpha, W, CUDA_R_16BF, static_cast<int>(ldw), A,
                              CUDA_R_16BF, static_cast<int>(lda), &beta, C, CUDA_R_32F, static_cast<int>(ldc),
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void gemm_rowmajor_bf16_out(cublasHandle_t handle, cudaStream_t stream, int64_t M, int64_t N, int64_t K,
                            const __nv_bfloat16* A, int64_t lda, const __nv_bfloat16* W, int64_t ldw,
                            __nv_bfloat16* C, int64_t ldc) {
    MS_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size");
    if (M == 0 || N == 0) return;
    MS_CHECK(handle && A && W && C, "gemm: null handle or pointer");
    MS_CHECK(lda >= K && ldw >= K && ldc >= N, "gemm: a row stride is smaller than the row");
    MS_CHECK(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX, "gemm: size exceeds cuBLAS's 32-bit limits");
    CUBLAS_CHECK(cublasSetStream(handle, stream));
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
                              static_cast<int>(K), &alpha, W, CUDA_R_16BF, static_cast<int>(ldw), A,
                              CUDA_R_16BF, static_cast<int>(lda), &beta, C, CUDA_R_16BF,
                              static_cast<int>(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace mambascope::kernels::cuda
