// hidden_attention.h: the implicit attention matrix of one Mamba channel over a window (method doc §5, §8.9).
//
//   Mamba-1, channel d:  α_{i,j} = Σ_n C_{i,n} · exp(A_{d,n} · Σ_{k=j+1..i} Δ_k) · Δ_j · B_{j,n}     (j ≤ i,
//   else 0) Mamba-2, head h:     α_{i,j} = (C_i · B_j) · exp(A_h · Σ_{k=j+1..i} Δ_k) · Δ_j so that y_i = Σ_j
//   α_{i,j} x_j + D x_i reproduces the scan started from a zero state at the window's start.
//
// Design decision: one function for both architectures: A has n_a = N entries (Mamba-1) or 1 entry (Mamba-2,
// the same A for every state, which factors out as C_i·B_j). Decay sums use prefix sums in double
// (Σ_{k=j+1..i} Δ_k = cum_i − cum_j), O(W²·N). The window is capped (kHiddenAttentionMaxWindow) because the
// result is W² values. Normalisation for display is an explicit, recorded parameter, never implicit.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "mambascope/analysis.h"

namespace mambascope {

// Largest window W for which a hidden-attention matrix is computed (W² doubles = 32 MiB at 2048).
constexpr int64_t kHiddenAttentionMaxWindow = 2048;

// α (W × W, row-major, i = query/output position, j = source position; zero above the diagonal).
// delta (W) = the Δ the scan used for this channel; A (n_a): N values (Mamba-1 row A[d,:]) or 1 (Mamba-2
// A_h); B, C (W × N, row strides ldb, ldc) of the channel's group. Window positions are relative to its
// start.
std::vector<double> hidden_attention(int64_t W, int64_t N, std::span<const float> delta,
                                     std::span<const float> A, const float* B, int64_t ldb, const float* C,
                                     int64_t ldc);

// AttentionNorm (none, |α| max, |α| min-max (HA v2, issue #6), log10 with a floor (DM notebook)) is the enum
// of analysis.h, shared with the result structs.
struct AttentionNormParams {
    AttentionNorm kind = AttentionNorm::None;
    double floor = 1e-3;  // Log10Floor only; in (0, 1)
};
// "none", "absmax", "absminmax", "log10" (also "log10floor"); Error otherwise.
AttentionNorm parse_attention_norm(const std::string& s);

// Normalises a W × W hidden-attention matrix in place. Statistics (max, min) are taken over the causal
// entries (j ≤ i) only; entries above the diagonal are set to 0 (None/AbsMax/AbsMinMax) or log10(floor)
// (Log10Floor). An all-zero matrix stays 0 (or log10(floor)).
void normalise_attention(std::vector<double>& alpha, int64_t W, const AttentionNormParams& p);

}  // namespace mambascope
