// norm.h: RMSNorm and Mamba-2's gated, grouped RMSNorm (method doc §1.1, §1.3).
#pragma once

#include <cstdint>

namespace mambascope::kernels {

// out[t,:] = x[t,:] / sqrt(mean(x[t,:]²) + eps) ⊙ w.   x, out (T×D, strides ldx/ldo; may alias).
void rmsnorm(int64_t T, int64_t D, const float* x, int64_t ldx, const float* w, float eps, float* out,
             int64_t ldo);

// Mamba-2 gate then norm (norm_before_gate = False): g = y ⊙ silu(z); each group of E/G columns is
// RMS-normalised, then ⊙ w.  y (T×E, ldy, overwritten with the result), z (T×E, ldz), w (E).
void gated_rmsnorm(int64_t T, int64_t E, int64_t G, float* y, int64_t ldy, const float* z, int64_t ldz,
                   const float* w, float eps);

}  // namespace mambascope::kernels
