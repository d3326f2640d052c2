// scan.h: the selective scans of Mamba-1 (S6) and Mamba-2 (SSD, recurrent form) on the CPU, with LongMamba's
// Δ filter applied inside the scan (method doc §1.2, §1.3, §8.5).
//
// Design decision: the scan consumes Δ already through softplus (and, for Mamba-2, the dt limit clamp) and
// applies the filter as one compare per (token, channel): Δ' = Δ > threshold[c] ? Δ : 0, threshold = -inf for
// channels that are not filtered. The Δ actually used is written back into `delta` (in place) so that probes
// see what the scan saw. The recurrent state is carried in and out, so a long input can be scanned chunk by
// chunk with identical results. These functions are the reference for kernels/cuda/scan_*.cu.
#pragma once

#include <cstdint>

namespace mambascope::kernels {

// Mamba-1, T tokens, E channels, N states:
//   Δ'[t,d]  = Δ[t,d] > thr[d] ? Δ[t,d] : 0                    (thr may be null: no filter)
//   h[d,n]   = exp(Δ'[t,d]·A[d,n])·h[d,n] + Δ'[t,d]·B[t,n]·x[t,d]
//   y[t,d]   = Σ_n C[t,n]·h[d,n] + Dskip[d]·x[t,d]
// x (T×E, row stride ldx), delta (T×E, stride ldd, in: Δ, out: Δ'), A (E×N), B/C (T×N, strides ldb/ldc),
// Dskip (E), h (E×N, in/out), y (T×E, stride ldy).
void scan_mamba1(int64_t T, int64_t E, int64_t N, const float* x, int64_t ldx, float* delta, int64_t ldd,
                 const float* A, const float* B, int64_t ldb, const float* C, int64_t ldc, const float* Dskip,
                 const float* thr, float* h, float* y, int64_t ldy);

// Mamba-2, T tokens, H heads of P channels, G groups, N states; head h uses group g = h / (H/G):
//   Δ'[t,h]    = Δ[t,h] > thr[h] ? Δ[t,h] : 0
//   s[h,p,n]   = exp(Δ'[t,h]·A[h])·s[h,p,n] + Δ'[t,h]·x[t,h,p]·B[t,g,n]
//   y[t,h,p]   = Σ_n C[t,g,n]·s[h,p,n] + Dskip[h]·x[t,h,p]
// x (T×H·P, stride ldx), delta (T×H, stride ldd, in/out), A (H), B/C (T×G·N, strides ldb/ldc), Dskip (H),
// s (H×P×N, in/out), y (T×H·P, stride ldy).
void scan_mamba2(int64_t T, int64_t H, int64_t P, int64_t G, int64_t N, const float* x, int64_t ldx,
                 float* delta, int64_t ldd, const float* A, const float* B, int64_t ldb, const float* C,
                 int64_t ldc, const float* Dskip, const float* thr, float* s, float* y, int64_t ldy);

}  // namespace mambascope::kernels
