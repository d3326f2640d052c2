// gemm.h: the one SGEMM the CPU forward calls, C = A·Bᵀ + β·C on row-major matrices (a linear layer: A holds
// activations, one token per row; B a weight matrix, one output feature per row, as PyTorch stores it).
//
// Design decision: the library is chosen at configure time (CMake MAMBASCOPE_BLAS = openblas | blis | eigen,
// AUTO picks the first found in that order; docs/benchmarks.md "CPU round 2" says why). OpenBLAS and
// BLIS are linked in their OpenMP builds, so their threads are the program's OpenMP threads (one pool, no two
// pools spinning against each other on a small machine). Every backend is compared with a double-precision
// reference in tests (CpuGemm.*).
#pragma once

#include <cstdint>

namespace mambascope::kernels {

// C (M, N) = A (M, K) · Bᵀ + beta · C, with B (N, K); row strides lda, ldb, ldc (in floats).
// beta = 0 overwrites C (never reads it, so C may hold garbage or NaN); beta = 1 accumulates (a residual).
void sgemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
              float beta, float* C, int64_t ldc);

// "openblas", "blis" or "eigen": the library this build calls.
const char* sgemm_backend();

}  // namespace mambascope::kernels
