#include "activations.h"

#include <omp.h>

#include <cstring>

namespace mambascope::kernels {

namespace {

// Values below which one thread does it all (as in the other CPU kernels).
constexpr int64_t kParallelMin = 65536;

// x[i0, i1) = softplus(x), 16 lanes at a time (i1 − i0 a multiple of 16).
void softplus_blocks(float* x, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i += 16) {
        vf16 v;
        std::memcpy(&v, x + i, sizeof v);
        v = vsoftplus16(v);
        std::memcpy(x + i, &v, sizeof v);
    }
}

}  // namespace

void softplus_bias_inplace(int64_t rows, int64_t cols, float* x, const float* bias) {
    if (rows <= 0 || cols <= 0) return;
    const int64_t n = rows * cols, blocks = n / 16;
    // Each thread takes a run of whole 16-value blocks of the flat array (the last one also the tail), so the
    // values and their rounding do not depend on the thread count.
#pragma omp parallel if (n >= kParallelMin)
    {
        const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
        const int64_t i0 = blocks * id / nt * 16, i1 = blocks * (id + 1) / nt * 16;
        const int64_t end = id == nt - 1 ? n : i1;
        if (bias) {
            int64_t col = i0 % cols;
            for (int64_t i = i0; i < end; ++i) {
                x[i] += bias[col];
                if (++col == cols) col = 0;
            }
        }
        softplus_blocks(x, i0, i1);
        for (int64_t i = i1; i < end; ++i) x[i] = softplus(x[i]);
    }
}

void softplus_inplace(int64_t n, float* x) {
    softplus_bias_inplace(1, n, x, nullptr);
}

void silu_inplace(int64_t n, float* x) {
    mul_silu_rows(1, n, nullptr, 0, x, 0);
}

void mul_silu_rows(int64_t rows, int64_t cols, float* y, int64_t ldy, const float* z, int64_t ldz) {
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r) mul_silu_span(cols, y ? y + r * ldy : nullptr, z + r * ldz);
}

}  // namespace mambascope::kernels
