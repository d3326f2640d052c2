// scan_ssd.h: Mamba-2 scan in its chunked state-space-duality (SSD) form (method doc §9.2), the CPU twin of
// kernels/cuda/scan_mamba2_ssd.cu: same chunks, same order of the four steps, same rounding points.
//
// Design decision: a reference, not a CPU fast path (the CPU forward keeps the recurrent scan_mamba2 of
// scan.h, which is exact and as fast on a CPU). With bf16_operands = false every quantity is fp32 and the
// result equals the recurrent scan up to fp32 rounding, which is what pins the chunked form (and its masked
// Δ) to the recurrence; with bf16_operands = true the matrix operands are rounded to bf16 exactly where the
// GPU kernels stage them for the tensor cores, so the GPU must agree with it to fp32 accumulation-order
// error.
#pragma once

#include <cstdint>

namespace mambascope::kernels {

// Rounds an fp32 value to the nearest bf16 (ties to even; NaN stays NaN), returned as fp32.
float round_bf16(float v);

// Same arguments and results as scan_mamba2 (scan.h): delta is Δ (after softplus), in/out (the filtered Δ' is
// written back when thr is given); s (H×P×N) is the state in/out. Q = tokens per chunk (the GPU's
// kSsdChunk = 64).
void scan_mamba2_chunked(int64_t T, int64_t H, int64_t P, int64_t G, int64_t N, const float* x, int64_t ldx,
                         float* delta, int64_t ldd, const float* A, const float* B, int64_t ldb,
                         const float* C, int64_t ldc, const float* Dskip, const float* thr, float* s,
                         float* y, int64_t ldy, int64_t Q, bool bf16_operands);

}  // namespace mambascope::kernels
