// wmma_emu.h: nvcuda::wmma for the CPU emulation (tests/cuda/emu/gen.py swaps it in for <mma.h>).
//
// Design decision: a fragment's layout across the 32 lanes is opaque in CUDA, so kernels touch its elements
// only uniformly (every element scaled by one value); here every lane holds the whole 16×16 tile (x[r·16 + c]
// is element (r, c); num_elements = 256, so a uniform loop over x scales the whole tile in every lane) and
// computes the whole product, in fp32 from the bf16 operands, as the tensor cores do. Only lane 0 of a warp
// stores (the kernel must synchronise before another thread reads the stored tile, as on a GPU). Only
// 16×16×16 is emulated.
#pragma once
#include <cuda_bf16.h>

#include <type_traits>

#include "emu.h"

namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "only 16x16x16 fragments are emulated");
    static constexpr int num_elements = 16 * 16;
    float x[16 * 16];
};

template <class Use, class T, class Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, float x) {
    for (float& e : f.x) e = x;
}

template <class Use, class T, class Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ld) {
    static_assert(std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>);
    for (unsigned r = 0; r < 16; ++r)
        for (unsigned c = 0; c < 16; ++c)
            f.x[r * 16 + c] =
                static_cast<float>(std::is_same_v<Layout, row_major> ? p[r * ld + c] : p[c * ld + r]);
}

template <class LA, class LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
              const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA>& a,
              const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB>& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
    float out[16 * 16];
    for (int r = 0; r < 16; ++r)
        for (int col = 0; col < 16; ++col) {
            float s = c.x[r * 16 + col];
            for (int k = 0; k < 16; ++k) s += a.x[r * 16 + k] * b.x[k * 16 + col];
            out[r * 16 + col] = s;
        }
    for (int i = 0; i < 256; ++i) d.x[i] = out[i];
}

// An accumulator from memory (every lane reads the whole tile).
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ld,
                             layout_t l) {
    for (unsigned r = 0; r < 16; ++r)
        for (unsigned c = 0; c < 16; ++c)
            f.x[r * 16 + c] = l == mem_row_major ? p[r * ld + c] : p[c * ld + r];
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ld,
                              layout_t l) {
    if (threadIdx.x % 32 != 0) return;
    for (unsigned r = 0; r < 16; ++r)
        for (unsigned c = 0; c < 16; ++c)
            (l == mem_row_major ? p[r * ld + c] : p[c * ld + r]) = f.x[r * 16 + c];
}
}  // namespace nvcuda::wmma
