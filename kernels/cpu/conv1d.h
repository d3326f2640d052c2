// conv1d.h: depthwise causal conv1d + SiLU over a chunk, with the last K-1 inputs carried as state (method
// doc §1.2).
#pragma once

#include <cstdint>

namespace mambascope::kernels {

// out[t,c] = silu( bias[c] + Σ_{k=0..K-1} w[c,k] · in[t-(K-1)+k, c] ), where rows before the chunk come from
// `state` ((K-1)×Cn, oldest first). in (T×Cn, stride ldi), w (Cn×K), bias (Cn, may be null), out (T×Cn,
// stride ldo; may alias nothing). On return `state` holds the last K-1 input rows (the chunk's tail).
void conv1d_silu(int64_t T, int64_t Cn, int64_t K, const float* in, int64_t ldi, const float* w,
                 const float* bias, float* state, float* out, int64_t ldo);

}  // namespace mambascope::kernels
