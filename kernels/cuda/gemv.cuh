// gemv.cuh: one-row projections on the GPU, y = W·a (+ β·y), for decode steps (M = 1), W row-major (N × K) as
// stored by PyTorch's Linear, float32 accumulation.
//
// Design decision: cuBLAS's GEMM kernels for one row tile the N outputs in blocks of 128–256 rows, so a
// mamba-130m in_proj (3072 outputs) runs on 12–24 CTAs and reads its 4.7 MB weight at a fraction of the HBM
// rate (measured: ≈ 5.7 µs per projection and step). Here one warp owns one output row and streams it with
// 16-byte loads, kGemvWarps rows per block, so every projection spreads over the whole GPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace mambascope::kernels::cuda {

// y[n] = Σ_k W[n,k]·a[k] + beta·y[n], n < N. W (N × K, row stride ldw), a (K), y (N); float32 accumulation.
// Weight and input types: float or bf16 (any combination); output float32 (with beta) or bf16 (beta must be
// 0). Device pointers; asynchronous on `stream`.
//
// L2 ahead (docs/cuda.md, "L2 ahead"): `ahead` names a later kernel's weights (bytes from p); once this
// kernel's PDL wait returns, its threads start them on their way into L2 (bulk prefetches, a hint: the result
// is the same with or without). Only the bf16 overloads take it (the decode step's x_proj and out_proj,
// opt-in: measured slower, docs/benchmarks.md, eighteenth stop).
struct L2Ahead {
    const void* p = nullptr;
    int64_t bytes = 0;
};
void gemv(int64_t N, int64_t K, const float* W, int64_t ldw, const float* a, float* y, float beta,
          cudaStream_t stream);
void gemv(int64_t N, int64_t K, const __nv_bfloat16* W, int64_t ldw, const __nv_bfloat16* a, float* y,
          float beta, cudaStream_t stream, L2Ahead ahead = {});
void gemv(int64_t N, int64_t K, const __nv_bfloat16* W, int64_t ldw, const __nv_bfloat16* a, __nv_bfloat16* y,
          cudaStream_t stream, L2Ahead ahead = {});

// Split rows (docs/cuda.md, "Split rows"; MAMBASCOPE_GEMV_SPLIT = 1, 2, 4 or 8, default 2): the warps per
// row a plain gemv launch takes for these sizes: up to the setting, for vec rows (K % 8 == 0, ldw % 8 == 0,
// W and a 16-byte aligned) of projections with fewer than kGemvSplitRowsPerSm rows per SM
// (MAMBASCOPE_GEMV_SPLIT_ROWS = 8, 16 or 32 for A/B runs), halved until every warp's segment is whole
// 16-byte load steps per lane and at least kGemvSplitMinSteps of them; 1 otherwise (one warp per row, gemv's
// order). With k > 1 a row's k segments are summed apart and added in order, so the result may differ from
// one warp's in the last bits. Throws when a setting has a bad value.
constexpr int64_t kGemvSplitRowsPerSm = 8;
constexpr int64_t kGemvSplitMinSteps = 2;
int gemv_split_rows(int64_t N, int64_t K, bool vec);

// The L2 prefetch budget (docs/cuda.md, "Decoding on the GPU"; since 2026-12-05, fifteenth stop). Before its
// PDL wait each warp of a projection starts its first rows on their way into L2. A matrix larger than the L2
// (mamba-1.4b's 206 MB LM head and 33.5 MB in_proj against the H100's 50 MB) evicted its own first rows
// before they were read: prefetching off was 2.5% faster on mamba-1.4b (docs/benchmarks.md, fifteenth stop).
// So a launch prefetches every row when the matrix fits kGemvPrefetchL2Share of the L2, and otherwise the
// same number r of rows in each of its `warps` warps, r·warps·row_bytes ≤ that share (r may be 0). Measured
// against prefetching every row: mamba-1.4b's greedy step 3% faster, mamba-130m's level (H100).
// MAMBASCOPE_GEMV_PREFETCH=all prefetches every row, =0 none (A/B runs).
constexpr double kGemvPrefetchL2Share = 0.5;
int64_t gemv_prefetch_rows_per_warp(int64_t N, int64_t row_bytes, int64_t warps, int64_t l2_bytes);

// The projections' trigger after their PDL wait (docs/cuda.md, "The early launch";
// gemv.cu): MAMBASCOPE_GEMV_TRIGGER chooses it per launch; where that is unset, every projection launched on
// this thread while a GemvTriggerDefault(true) lives triggers (a decoder with the early launch holds one
// around its graph captures). Scopes nest; the previous default comes back when one ends.
class GemvTriggerDefault {
  public:
    explicit GemvTriggerDefault(bool trigger);
    ~GemvTriggerDefault();
    GemvTriggerDefault(const GemvTriggerDefault&) = delete;
    GemvTriggerDefault& operator=(const GemvTriggerDefault&) = delete;

  private:
    bool previous_;
};

// The one-row RMSNorm fused in front of a bf16 projection (decode steps: one graph node instead of two):
// y[n] = Σ_k W[n,k]·a[k] (+ beta·y[n], float output only), a = bf16(x[k]·inv·w_norm[k]),
// inv = rsqrt(Σ_k x[k]² / K + eps). Each block normalises x itself (K floats, from L2) in the same order as
// rmsnorm_bf16 (rmsnorm.cuh), so the result equals rmsnorm_bf16 followed by gemv bit for bit. K ≤
// kGemvNormMaxK.
constexpr int64_t kGemvNormMaxK = 16384;
void gemv_rmsnorm(int64_t N, int64_t K, const __nv_bfloat16* W, int64_t ldw, const float* x,
                  const float* w_norm, float eps, float* y, float beta, cudaStream_t stream);
void gemv_rmsnorm(int64_t N, int64_t K, const __nv_bfloat16* W, int64_t ldw, const float* x,
                  const float* w_norm, float eps, __nv_bfloat16* y, cudaStream_t stream);

// The greedy step's LM head with its argmax folded in (docs/cuda.md, "Greedy steps"): y = gemv_rmsnorm's
// float32 logits (beta 0), bit for bit, and *key = the largest argmax_key(y[i], i) over i < n (argmax.cuh),
// so argmax_key_index(*key) is std::max_element's index over y[0, n). *key must be 0 before the call (an
// atomicMax per block folds into it). 1 ≤ n ≤ N.
void gemv_rmsnorm_argmax(int64_t N, int64_t K, const __nv_bfloat16* W, int64_t ldw, const float* x,
                         const float* w_norm, float eps, float* y, int64_t n, unsigned long long* key,
                         cudaStream_t stream);

// A bf16 Mamba-1 decode step's in_proj with the conv folded in (one graph node instead of two; docs/cuda.md,
// "The conv inside in_proj"): y (2E rows: x, then z) = gemv_rmsnorm's bf16 output, and the warp that computes
// row d < E also runs channel d's conv for this token on the stored row (conv_step.cuh):
// conv16[d] = bf16(silu(conv_b[d] + Σ_k conv_w[d,k]·win[k])), win = the K−1 rows of conv_state ((K−1) × E,
// oldest first) and y[d]; conv_state then holds the last K−1 rows. Bit for bit gemv_rmsnorm followed by
// conv1d_silu(1, E, kGemvConvK, y, 2E, conv_w, conv_b, conv_state, nullptr, 0, stream, conv16, E).
// d_conv = kGemvConvK only (every Mamba-1 checkpoint). conv_b may be null. The kernel reads conv_state before
// grid_dependency_wait (pdl.cuh): no kernel ahead of it in a PDL chain may write conv_state (in a decode step
// none does: each layer's conv state is this kernel's alone). x_only: only the x half, y's E rows (W's first
// E rows; "z on a branch" computes the z half beside it with gemv_rmsnorm), the same rows bit for bit.
constexpr int kGemvConvK = 4;
void gemv_rmsnorm_conv(int64_t E, int64_t K, const __nv_bfloat16* W, int64_t ldw, const float* x,
                       const float* w_norm, float eps, __nv_bfloat16* y, const float* conv_w,
                       const float* conv_b, float* conv_state, __nv_bfloat16* conv16, cudaStream_t stream,
                       bool x_only = false);

// The same with the Mamba-1 x_proj folded in as well (one graph node fewer again; docs/cuda.md, "x_proj
// inside in_proj"): dbc16[j] = bf16(Σ_d conv16[d]·x_projT[d, j]), j < R, the product of the conv's bf16
// output and x_proj (R × E, stored transposed: x_projT is E × R, bf16), split over the grid's blocks. The
// warp that convolves channel d adds conv16[d]·x_projT[d, :] to its running sums; each block adds its warps'
// sums (warps in order) into a row of `parts`; blocks come in groups of kGemvXprojFanIn, the last block of a
// group to finish (a ticket from `count`) adds the group's rows, and the last group to finish adds the
// groups' rows and writes dbc16. The order depends on the grid (one wave of blocks on this GPU), not on
// timing: the same GPU gives the same bits every run. It is not gemv's order, so dbc16 may differ from
// gemv(R, E, x_proj, …)'s in the last bit before the bf16 rounding. R % 8 == 0, R ≤ kGemvXprojMaxR, x_projT
// and parts 16-byte aligned; parts holds gemv_xproj_parts(E) × R floats; count holds gemv_xproj_counters(E)
// zeros before the first call, and each call leaves them zero. y, conv16 and conv_state equal
// gemv_rmsnorm_conv's bit for bit. The decoder takes it only when asked (MAMBASCOPE_DECODE_XPROJ_FUSED=1):
// measured 13-24% slower per step than the separate x_proj on an H100 (docs/benchmarks.md, fourteenth stop).
constexpr int64_t kGemvXprojMaxR = 256;
constexpr int kGemvXprojFanIn = 16;  // block rows per group of the two-level sum
int64_t gemv_xproj_parts(int64_t E);
int64_t gemv_xproj_counters(int64_t E);
void gemv_rmsnorm_conv_xproj(int64_t E, int64_t K, const __nv_bfloat16* W, int64_t ldw, const float* x,
                             const float* w_norm, float eps, __nv_bfloat16* y, const float* conv_w,
                             const float* conv_b, float* conv_state, __nv_bfloat16* conv16,
                             const __nv_bfloat16* x_projT, int64_t R, float* parts, unsigned* count,
                             __nv_bfloat16* dbc16, cudaStream_t stream);

}  // namespace mambascope::kernels::cuda
