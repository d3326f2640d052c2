// gemm.cuh: the projections' matrix product on the GPU through cuBLAS: C = A·Wᵀ (+ β·C), row-major float32,
// as stored by PyTorch's Linear (W is out_features × in_features).
//
// Design decision: row-major C = A·Wᵀ is computed as the column-major product Cᵀ = W·Aᵀ (no copies, no
// transposes); TF32 tensor cores are an explicit per-call option (≈ 6× faster, relative error ≈ 1e-3), never
// a global mode.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace mambascope::kernels::cuda {

// Owns one cuBLAS handle (create once per thread/stream user; creation is slow).
class CublasHandle {
  public:
    CublasHandle();
    ~CublasHandle();
    CublasHandle(const CublasHandle&) = delete;
    CublasHandle& operator=(const CublasHandle&) = delete;
    cublasHandle_t get() const { return handle_; }

  private:
    cublasHandle_t handle_ = nullptr;
};

// C (M×N, row stride ldc) = A (M×K, lda) · Wᵀ, W (N×K, ldw), + beta·C. Device pointers; asynchronous on
// `stream`. tf32: use TF32 tensor cores (inputs rounded to 10-bit mantissas, float32 accumulation).
void gemm_rowmajor(cublasHandle_t handle, cudaStream_t stream, int64_t M, int64_t N, int64_t K,
                   const float* A, int64_t lda, const float* W, int64_t ldw, float* C, int64_t ldc,
                   bool tf32 = false, float beta = 0.0f);

// dst (rows × cols, ldd) = bf16(src (rows × cols, lds)). Device pointers.
void to_bf16(int64_t rows, int64_t cols, const float* src, int64_t lds, __nv_bfloat16* dst, int64_t ldd,
             cudaStream_t stream);

// C (M×N, ldc, float32) = A (M×K, bf16) · Wᵀ (W: N×K, bf16) + beta·C, float32 accumulation.
void gemm_rowmajor_bf16(cublasHandle_t handle, cudaStream_t stream, int64_t M, int64_t N, int64_t K,
                        const __nv_bfloat16* A, int64_t lda, const __nv_bfloat16* W, int64_t ldw, float* C,
                        int64_t ldc, float beta = 0.0f);

// C16 (M×N, ldc, bf16) = A (M×K, bf16) · Wᵀ (W: N×K, bf16), float32 accumulation, one rounding of the result:
// a projection whose output only feeds bf16 consumers (the bf16 Mamba-1 scan, the conv) writes half the
// bytes.
void gemm_rowmajor_bf16_out(cublasHandle_t handle, cudaStream_t stream, int64_t M, int64_t N, int64_t K,
                            const __nv_bfloat16* A, int64_t lda, const __nv_bfloat16* W, int64_t ldw,
                            __nv_bfloat16* C, int64_t ldc);

}  // namespace mambascope::kernels::cuda
