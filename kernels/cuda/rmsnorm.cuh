// rmsnorm.cuh: RMSNorm and Mamba-2's gated, grouped RMSNorm on the GPU (method doc §1.1, §1.3).
// Reference: kernels/cpu/norm.h (same arguments, device pointers).
//
// Design decision: RMSNorm rows that are a multiple of 4 wide (up to 4096) on 16-byte boundaries, as every
// released model's are, take one warp per row with the row in registers (one read, one warp reduction, no
// block barrier); other rows take one block per row, read twice (second read from L1/L2), which keeps any
// width. The gated norm takes one block per (row, group), bf16 rows held in registers (see below). Sums of
// squares are reduced in float through warp shuffles.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace mambascope::kernels::cuda {

// out[t,:] = x[t,:] / sqrt(mean(x[t,:]²) + eps) ⊙ w.   x, out (T×D, strides ldx/ldo; may alias).
void rmsnorm(int64_t T, int64_t D, const float* x, int64_t ldx, const float* w, float eps, float* out,
             int64_t ldo, cudaStream_t stream);

// g = y ⊙ silu(z); each group of E/G columns is RMS-normalised, then ⊙ w (norm_before_gate = False).
// y (T×E, ldy, overwritten with the result), z (T×E, ldz), w (E).
void gated_rmsnorm(int64_t T, int64_t E, int64_t G, float* y, int64_t ldy, const float* z, int64_t ldz,
                   const float* w, float eps, cudaStream_t stream);

// The same, writing the result as bf16 (the input of a bf16 projection) instead of float32: no separate
// conversion pass. rmsnorm_bf16: out (T×D, ldo). gated_rmsnorm_bf16: y is read only, out (T×E, ldo).
void rmsnorm_bf16(int64_t T, int64_t D, const float* x, int64_t ldx, const float* w, float eps,
                  __nv_bfloat16* out, int64_t ldo, cudaStream_t stream);
void gated_rmsnorm_bf16(int64_t T, int64_t E, int64_t G, const float* y, int64_t ldy, const float* z,
                        int64_t ldz, const float* w, float eps, __nv_bfloat16* out, int64_t ldo,
                        cudaStream_t stream);
// The gated norm of the bf16 Mamba-2 chain: y (the SSD scan's bf16 output) and z (in_proj's bf16 output) in
// bf16; the arithmetic is float32, the result bf16. Rows whose groups are multiples of 8 columns on 16-byte
// boundaries are read once, 8 values per load, and kept in registers (groups up to 8192 columns); other
// shapes take the two-read kernel above. (A warp per (row, group) was tried for groups up to 2048
// columns: 1.34 against 1.19 ms per mamba2-130m prefill of 16k tokens, H200; its 64 registers of values per
// lane cut the warps in flight.)
void gated_rmsnorm_bf16(int64_t T, int64_t E, int64_t G, const __nv_bfloat16* y, int64_t ldy,
                        const __nv_bfloat16* z, int64_t ldz, const float* w, float eps, __nv_bfloat16* out,
                        int64_t ldo, cudaStream_t stream);

namespace detail {
// Whether rmsnorm / rmsnorm_bf16 take the warp-per-row kernel for rows of width D at x (stride ldx) with
// weights w: gemv_rmsnorm then sums squares in the same order (sumsq4), so that the two agree bit for bit.
bool rmsnorm_takes_warp_rows(int64_t D, const float* x, int64_t ldx, const float* w);
}  // namespace detail

}  // namespace mambascope::kernels::cuda
