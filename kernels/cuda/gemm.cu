// cuBLAS wrapper for C = A·Wᵀ in row-major float32; see gemm.cuh.
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
