// SGEMM backends; see gemm.h.
#include "cpu/gemm.h"

#include <Eigen/Core>
#include <stdexcept>
#include <string>

#if defined(MAMBASCOPE_BLAS_OPENBLAS) || defined(MAMBASCOPE_BLAS_BLIS)
// The CBLAS entry point (the same ABI in OpenBLAS and BLIS; declared here so no particular cblas.h is
// needed).
extern "C" void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                            const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc);
#else
#include <malloc.h>
#include <mutex>
#endif

namespace mambascope::kernels {
namespace {

#if defined(MAMBASCOPE_BLAS_OPENBLAS) || defined(MAMBASCOPE_BLAS_BLIS)
constexpr int kCblasRowMajor = 101, kCblasNoTrans = 111, kCblasTrans = 112;
#else
// Eigen allocates its packing buffers on every product (several MB for the LM head); above glibc's mmap
// threshold each one is a fresh mapping, i.e. page faults on every call. Keeping blocks up to this size on
// the heap (and the heap from being trimmed) makes them reused memory.
constexpr int kEigenMmapThresholdBytes = 256 << 20;
#endif

}  // namespace

void sgemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
              float beta, float* C, int64_t ldc) {
    if (M < 0 || N < 0 || K < 0 || lda < K || ldb < K || ldc < N)
        throw std::invalid_argument("sgemm_nt: bad shape M=" + std::to_string(M) + " N=" + std::to_string(N) +
                                    " K=" + std::to_string(K));
    if (M == 0 || N == 0) return;
    if (K == 0) {  // C = beta·C (BLAS needs lda ≥ 1, so this case never reaches it)
        for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return;
    }
#if defined(MAMBASCOPE_BLAS_OPENBLAS) || defined(MAMBASCOPE_BLAS_BLIS)
    cblas_sgemm(kCblasRowMajor, kCblasNoTrans, kCblasTrans, int(M), int(N), int(K), 1.0f, A, int(lda), B,
                int(ldb), beta, C, int(ldc));
#else
    static std::once_flag malloc_tuned;
    std::call_once(malloc_tuned, [] {
        mallopt(M_MMAP_THRESHOLD, kEigenMmapThresholdBytes);
        mallopt(M_TRIM_THRESHOLD, 2 * kEigenMmapThresholdBytes);
    });
    using MatRM = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Stride = Eigen::OuterStride<>;
    Eigen::Map<const MatRM, 0, Stride> a(A, M, K, Stride(lda)), b(B, N, K, Stride(ldb));
    Eigen::Map<MatRM, 0, Stride> c(C, M, N, Stride(ldc));
    if (beta == 0.0f)
        c.noalias() = a * b.transpose();
    else if (beta == 1.0f)
        c.noalias() += a * b.transpose();
    else {
        c *= beta;
        c.noalias() += a * b.transpose();
    }
#endif
}

const char* sgemm_backend() {
#if defined(MAMBASCOPE_BLAS_OPENBLAS)
    return "openblas";
#elif defined(MAMBASCOPE_BLAS_BLIS)
    return "blis";
#else
    return "eigen";
#endif
}

}  // namespace mambascope::kernels
