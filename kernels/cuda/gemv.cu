// One-row projections y = W·a (+ β·y) for decode steps; see gemv.cuh.
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <string>

#include "cuda/argmax.cuh"
#include "cuda/conv_step.cuh"
#include "cuda/cuda_check.cuh"
#include "cuda/device_math.cuh"
#include "cuda/gemv.cuh"
#include "cuda/gemv_row.cuh"
#include "cuda/pdl.cuh"
#include "cuda/rmsnorm.cuh"
#include "mambascope/env_switch.h"

namespace mambascope::kernels::cuda {
namespace {

using namespace detail;

constexpr int kGemvWarps = 8;  // output rows per block (one warp each)
// The L2 prefetch of weight rows before the PDL wait (docs/cuda.md, "Decoding on the GPU"), read at each
// launch: MAMBASCOPE_GEMV_PREFETCH=l2 (the default since 2026-12-05, fifteenth stop) prefetches at most
// kGemvPrefetchL2Share of the L2 per launch (gemv_prefetch_rows_per_warp), =all every row (before), =0 none.
enum class Prefetch { L2, All, Off };
Prefetch prefetch_mode() {
    return env_enum<Prefetch>("MAMBASCOPE_GEMV_PREFETCH",
                              {{"l2", Prefetch::L2}, {"all", Prefetch::All}, {"0", Prefetch::Off}},
                              "it sets how much of its weight rows a one-row projection prefetches into "
                              "L2 before the PDL wait: up to a share of the L2, all, or none "
                              "(docs/cuda.md, \"Decoding on the GPU\")");
}

// The trigger (twenty-seventh stop; docs/cuda.md, "The early launch"). A one-row
// projection does not call griddepcontrol.launch_dependents by default, so a kernel behind it on a
// programmatic ("exit") edge launches as its blocks exit. With the trigger every block calls it right after
// its PDL wait, so the next kernel becomes resident while this one streams its rows and starts its own
// weights into L2 before its wait. Results are the same (the dependent still waits for this grid's completion
// in its own grid_dependency_wait). MAMBASCOPE_GEMV_TRIGGER: 0 none, wait every projection, norm the ones
// with the RMSNorm (gemv_rmsnorm: in_proj, the head), plain the others (gemv: out_proj, x_proj). Read at each
// launch.
// Unset: GemvTriggerDefault's choice on this thread (gemv.cuh), none outside one.
enum class Trigger { None, All, Norm, Plain };
thread_local bool t_trigger_default = false;
bool gemv_trigger(bool norm_kernel) {
    const Trigger t =
        env_enum<Trigger>("MAMBASCOPE_GEMV_TRIGGER",
                          {{"", t_trigger_default ? Trigger::All : Trigger::None},
                           {"0", Trigger::None},
                           {"wait", Trigger::All},
                           {"norm", Trigger::Norm},
                           {"plain", Trigger::Plain}},
                          "it sets which one-row projections let the kernel behind them launch once "
                          "their blocks are past their PDL wait (docs/cuda.md, \"The early launch\")");
    return t == Trigger::All || t == (norm_kernel ? Trigger::Norm : Trigger::Plain);
}

// Rows each warp of a `blocks`-block grid prefetches for an N-row matrix of row_bytes-byte rows (0 when
// the rows are not on the vector path: the bulk prefetch needs 16-byte rows).
int64_t prefetch_count(int64_t N, int64_t row_bytes, unsigned blocks, bool vec) {
    if (!vec) return 0;
    const Prefetch mode = prefetch_mode();
    if (mode == Prefetch::Off) return 0;
    if (mode == Prefetch::All) return N;
    static const int64_t l2 = [] {
        int dev = 0, bytes = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrL2CacheSize, dev));
        return static_cast<int64_t>(bytes);
    }();
    return gemv_prefetch_rows_per_warp(N, row_bytes, static_cast<int64_t>(blocks) * kGemvWarps, l2);
}

// Rows per grid (since 2026-12-04, tenth stop). A grid of one block per 8 rows gave the LM head (50,280 rows)
// 6,285 short-lived blocks, each recomputing the norm (gemv_rmsnorm) before its 8 rows: ≈ 2 TB/s for its 77
// MB on mamba-130m (ncu, one kernel at a time). The grid is capped at one wave; warp w of the grid takes rows
// w, w + W, w + 2W, … (W warps in the grid), two at a time (row_dot2, each row in row_dot's order) when vec,
// so every row's sum is the same bit for bit. MAMBASCOPE_GEMV_GRID=n caps the grid at n blocks instead (0: no
// cap, one row per warp; A/B runs, the tests); read at each launch.
//
// One wave (since 2026-12-05, eleventh stop) is the kernel's resident blocks per SM from the occupancy
// calculator × the SMs. The tenth stop assumed 8 blocks of 256 threads per SM (2,048 threads), but ptxas
// gives these kernels 40–52 registers, so 4–5 blocks fit: mamba-1.4b's in_proj (1,024 blocks) ran as
// ≈ 1.6–1.9 waves, each block of the second wave recomputing the norm. Not yet measured on a GPU; the
// tenth stop's cap on an H200 is MAMBASCOPE_GEMV_GRID=1056 (8 × 132 SMs).

// The grid cap from MAMBASCOPE_GEMV_GRID: -1 when unset (one wave), 0 for none, else n blocks.
int64_t gemv_grid_override() {
    const char* e = std::getenv("MAMBASCOPE_GEMV_GRID");
    if (!e || !*e) return -1;
    char* end = nullptr;
    const long long v = std::strtoll(e, &end, 10);
    if (*end != '\0' || v < 0 || v > INT_MAX)
        throw Error(
            "MAMBASCOPE_GEMV_GRID=" + std::string(e) + " is not a block count",
            "it caps the one-row projections' grid (docs/cuda.md, \"Rows per grid\"; 0: no cap); unset "
            "it for the default, one wave of resident blocks");
    return v;
}

// Blocks for N rows: one per kGemvWarps rows, at most one wave of `kernel` (launched with smem bytes of
// dynamic shared memory): its resident blocks per SM × the device's SMs; or the override.
template <typename Kernel>
unsigned gemv_blocks(int64_t N, Kernel kernel, size_t smem) {
    int64_t cap = gemv_grid_override();
    if (cap < 0) {
        int dev = 0, sms = 0, per_sm = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, 32 * kGemvWarps, smem));
        cap = static_cast<int64_t>(std::max(1, per_sm)) * std::max(1, sms);
    }
    int64_t blocks = (N + kGemvWarps - 1) / kGemvWarps;
    if (cap > 0) blocks = std::min(blocks, cap);
    return static_cast<unsigned>(blocks);
}

// This warp's first `count` rows n = first, first + stride, … < N start on their way into L2 (prefetch_row).
template <typename TW>
__device__ __forceinline__ void prefetch_rows(const TW* W, int64_t N, int64_t K, int64_t ldw, int64_t first,
                                              int64_t stride, int lane, int64_t count) {
    for (int64_t n = first, r = 0; n < N && r < count; n += stride, ++r)
        prefetch_row(W + n * ldw, K, lane, true);
}

// This warp's rows n = first, first + stride, … < N: acc = W[n]·a (row_dot's order), then emit(n, acc) (in
// every lane). Two rows per pass on the vec path (row_dot2), the last odd one alone.
template <typename TW, typename TA, typename Emit>
__device__ __forceinline__ void gemv_rows(int64_t N, int64_t K, const TW* __restrict__ W, int64_t ldw,
                                          const TA* a, int64_t first, int64_t stride, int lane, bool vec,
                                          Emit&& emit) {
    int64_t n = first;
    if (vec)
        for (; n + stride < N; n += 2 * stride) {
            float acc0, acc1;
            row_dot2(W + n * ldw, W + (n + stride) * ldw, a, K, lane, acc0, acc1);
            emit(n, acc0);
            emit(n + stride, acc1);
        }
    for (; n < N; n += stride) emit(n, row_dot(W + n * ldw, a, K, lane, vec));
}

// One row per warp, loads deeper in flight (since 2026-12-05, sixteenth stop). Where the grid gives every
// warp at most one row (x_proj, out_proj: N ≤ the grid's warps), row_dot2's second row never comes and a warp
// reads its row four 16-byte load steps per lane at a time: a 4096-long bf16 row (mamba-1.4b's x_proj and
// out_proj) is 16 steps, four dependent L2 round trips after the PDL wait. kGemvDeepUnroll steps at a time
// halve that; the sum's order is row_dot's, so every output is the same bit for bit. Only rows of at least
// kGemvDeepUnroll steps per lane take it: measured on an H100 (docs/benchmarks.md, sixteenth stop), it made
// mamba-1.4b's greedy step 2% faster (rows of 16 steps) and mamba-130m's 6% slower (rows of 1536, 6 steps,
// which an unroll by 8 leaves wholly to the loop's remainder: the likely cause, not profiled).
// MAMBASCOPE_GEMV_DEEP=0 keeps four (A/B runs, the tests); read at each launch.
constexpr int kGemvDeepUnroll = 8;
constexpr int64_t kGemvDeepMinK = int64_t{kGemvDeepUnroll} * 32 * kGemvVec;  // 2048 elements
bool gemv_deep_enabled() {
    return env_flag("MAMBASCOPE_GEMV_DEEP", true,
                    "it sets whether a one-row projection with at most one row per warp and rows of at "
                    "least 2048 elements issues 8 of its 16-byte loads per lane at a time rather than 4 "
                    "(docs/cuda.md, \"Deeper loads for one row per warp\")");
}

// grid gemv_blocks(N, …), block 32·kGemvWarps. vec: W rows and a may be read 8 elements at a time (K % 8 ==
// 0, ldw % 8 == 0, pointers aligned); otherwise one element per lane and step. kDeep: every warp has at most
// one row (the launcher's choice), read kGemvDeepUnroll load steps at a time.
template <typename TW, typename TA, typename TY, bool kDeep = false>
__global__ void __launch_bounds__(32 * kGemvWarps)
    gemv_kernel(int64_t N, int64_t K, const TW* __restrict__ W, int64_t ldw, const TA* __restrict__ a,
                TY* __restrict__ y, float beta, bool vec, int64_t prefetch, const char* ahead,
                int64_t ahead_bytes, bool trigger) {
    const int lane = threadIdx.x % 32;
    const int64_t first = static_cast<int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / 32;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * kGemvWarps;
    if (first >= N && ahead_bytes == 0) return;
    if (first < N) prefetch_rows(W, N, K, ldw, first, stride, lane, prefetch);
    grid_dependency_wait();  // a (and y, with beta) come from earlier kernels
    a = after_wait(a);       // coherent loads of a (device_math.cuh)
    if (trigger) grid_launch_dependents();
    // a later kernel's weights (L2Ahead, gemv.cuh): once the kernels in front are done, DRAM is free for them
    prefetch_l2_spread(ahead, ahead_bytes);
    if (first >= N) return;
    if constexpr (kDeep) {
        const float acc = row_dot<kGemvDeepUnroll>(W + first * ldw, a, K, lane, vec);
        if (lane == 0) store(y + first, acc, beta);
        return;
    }
    gemv_rows(N, K, W, ldw, a, first, stride, lane, vec, [&](int64_t n, float acc) {
        if (lane == 0) store(y + n, acc, beta);
    });
}

// Split rows (since 2026-12-06, twentieth stop; docs/cuda.md, "Split rows"). A short-and-wide projection (a
// Mamba-1 decode step's x_proj: 160 rows of 4,096 for mamba-1.4b) gives one warp per row and still leaves
// most of the GPU idle: 160 warps for 132 SMs, each row 16 load steps per lane, two dependent round trips at
// 8 in flight (ncu: 7.7 µs for 1.3 MB, docs/benchmarks.md, sixteenth stop). Here kS warps of a block share a
// row: warp s adds columns [s·K/kS, (s+1)·K/kS) in row_dot's order over its segment (its load steps in flight
// four at a time), and the row's first warp adds the kS partial sums in order s = 0, 1, …. Not row_dot's
// order: the sums may differ from gemv_kernel's in the last bits. gemv_split_rows decides kS; a launch with
// L2 ahead keeps one warp per row. Measured: docs/benchmarks.md, twentieth stop.
constexpr int kGemvSplitBatch = 4;  // load steps per lane in flight at once
template <typename TW, typename TA, typename TY, int kS>
__global__ void __launch_bounds__(32 * kGemvWarps)
    gemv_split_kernel(int64_t N, int64_t K, const TW* __restrict__ W, int64_t ldw, const TA* __restrict__ a,
                      TY* __restrict__ y, float beta, bool prefetch, bool trigger) {
    static_assert(kGemvWarps % kS == 0, "a block holds whole rows");
    __shared__ float part[kGemvWarps];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, s = warp % kS;
    const int64_t n = static_cast<int64_t>(blockIdx.x) * (kGemvWarps / kS) + warp / kS;
    const int64_t seg = K / kS;
    const TW* w = W + n * ldw + s * seg;
    if (n < N) prefetch_row(w, seg, lane, prefetch);
    grid_dependency_wait();  // a (and y, with beta) come from earlier kernels
    a = after_wait(a);       // coherent loads of a (device_math.cuh)
    if (trigger) grid_launch_dependents();
    // row_dot's order over the segment, its load steps issued kGemvSplitBatch at a time whatever their count
    // (a `#pragma unroll` loop would leave a short segment's steps to its one-at-a-time remainder)
    float acc = 0.0f;
    if (n < N) {
        const TA* as = a + s * seg;
        const int64_t steps = seg / (32 * kGemvVec);
        for (int64_t g = 0; g < steps; g += kGemvSplitBatch) {
            float wv[kGemvSplitBatch][kGemvVec], av[kGemvSplitBatch][kGemvVec];
#pragma unroll
            for (int j = 0; j < kGemvSplitBatch; ++j)
                if (g + j < steps) {
                    const int64_t k = (g + j) * 32 * kGemvVec + lane * kGemvVec;
                    load8(w + k, wv[j]);
                    load8(as + k, av[j]);
                }
#pragma unroll
            for (int j = 0; j < kGemvSplitBatch; ++j)
                if (g + j < steps)
#pragma unroll
                    for (int i = 0; i < kGemvVec; ++i) acc = fmaf(wv[j][i], av[j][i], acc);
        }
        acc = warp_sum(acc);
    }
    if (lane == 0) part[warp] = acc;
    __syncthreads();
    if (n < N && s == 0 && lane == 0) {
        float total = part[warp];
#pragma unroll
        for (int j = 1; j < kS; ++j) total += part[warp + j];
        store(y + n, total, beta);
    }
}

// MAMBASCOPE_GEMV_SPLIT: the warps per row the split kernel may take (1: never), default kGemvSplit: measured
// on an H100 (docs/benchmarks.md, twentieth stop), greedy bf16 decode, 1 / 2 / 4 / 8 warps per row:
// mamba-130m 0.353 / 0.326 / 0.326 / 0.326 ms per token (its rows of 1,536 split in 2 at most),
// mamba-1.4b 1.664 / 1.587 / 1.604 / 1.669. Read at each launch.
constexpr int kGemvSplit = 2;
int gemv_split_setting() {
    return env_enum<int>(
        "MAMBASCOPE_GEMV_SPLIT", {{"", kGemvSplit}, {"1", 1}, {"2", 2}, {"4", 4}, {"8", 8}},
        "it sets how many warps may share a row of a short one-row projection (docs/cuda.md, "
        "\"Split rows\"; 1: one warp per row)");
}
// MAMBASCOPE_GEMV_SPLIT_ROWS: the rows per SM below which a projection splits its rows, default
// kGemvSplitRowsPerSm (gemv.cuh); read at each launch (A/B runs).
int64_t gemv_split_rows_per_sm() {
    return env_enum<int64_t>(
        "MAMBASCOPE_GEMV_SPLIT_ROWS", {{"", kGemvSplitRowsPerSm}, {"8", 8}, {"16", 16}, {"32", 32}},
        "it sets the rows per SM below which a one-row projection lets several warps share "
        "a row (docs/cuda.md, \"Split rows\")");
}

template <typename TW, typename TA, typename TY>
void launch_gemv(int64_t N, int64_t K, const TW* W, int64_t ldw, const TA* a, TY* y, float beta,
                 cudaStream_t stream, L2Ahead ahead = {}) {
    MS_CHECK(N >= 0 && K >= 0, "gemv: negative size");
    if (N == 0) return;
    MS_CHECK(W && a && y && ldw >= K, "gemv: null pointer or ldw < K");
    MS_CHECK((N + kGemvWarps - 1) / kGemvWarps <= INT_MAX, "gemv: N too large");
    const auto aligned = [](const void* p, size_t b) { return reinterpret_cast<uintptr_t>(p) % b == 0; };
    // 8 elements per load step: 16-byte loads (one uint4 of bf16, or two float4 of float32) at offsets k·size
    // that are multiples of 16 bytes when K, ldw are multiples of 8 and the bases are 16-byte aligned.
    const bool vec = K % kGemvVec == 0 && ldw % kGemvVec == 0 && aligned(W, 16) && aligned(a, 16);
    const int split = ahead.p ? 1 : gemv_split_rows(N, K, vec);
    if (split > 1) {
        const auto kernel = split == 2   ? gemv_split_kernel<TW, TA, TY, 2>
                            : split == 4 ? gemv_split_kernel<TW, TA, TY, 4>
                                         : gemv_split_kernel<TW, TA, TY, 8>;
        pdl_register(kernel);
        const int64_t rows_per_block = kGemvWarps / split;
        const unsigned blocks = static_cast<unsigned>((N + rows_per_block - 1) / rows_per_block);
        const bool prefetch = prefetch_count(N, K * static_cast<int64_t>(sizeof(TW)), blocks, vec) > 0;
        const bool trigger = gemv_trigger(false);
        kernel<<<blocks, 32 * kGemvWarps, 0, stream>>>(N, K, W, ldw, a, y, beta, prefetch, trigger);
        CUDA_CHECK(cudaGetLastError());
        return;
    }
    // one row per warp with the deeper loads when that grid fits one wave of that kernel (or the override)
    // (the occupancy query only where the rows are long enough to take it)
    const bool long_rows = gemv_deep_enabled() && vec && K >= kGemvDeepMinK;
    const unsigned deep_blocks = long_rows ? gemv_blocks(N, gemv_kernel<TW, TA, TY, true>, 0) : 0;
    const bool deep = long_rows && static_cast<int64_t>(deep_blocks) * kGemvWarps >= N;
    const auto kernel = deep ? gemv_kernel<TW, TA, TY, true> : gemv_kernel<TW, TA, TY, false>;
    const unsigned blocks = deep ? deep_blocks : gemv_blocks(N, gemv_kernel<TW, TA, TY, false>, 0);
    pdl_register(kernel);
    // computed here, not in the launch's arguments (the CPU emulation evaluates those in every thread)
    const int64_t prefetch = prefetch_count(N, K * static_cast<int64_t>(sizeof(TW)), blocks, vec);
    // the ahead region rounded to what the bulk prefetch takes (16-byte aligned start, 16-byte multiple)
    const char* ahead_p = static_cast<const char*>(ahead.p);
    const int64_t ahead_bytes =
        ahead_p && aligned(ahead_p, 16) && ahead.bytes > 0 ? ahead.bytes / 16 * 16 : 0;
    const bool trigger = gemv_trigger(false);
    kernel<<<blocks, 32 * kGemvWarps, 0, stream>>>(N, K, W, ldw, a, y, beta, vec, prefetch, ahead_p,
                                                   ahead_bytes, trigger);
    CUDA_CHECK(cudaGetLastError());
}

// The one-row RMSNorm in front of gemv_kernel's loop; block 32·kGemvWarps = 256 threads. The sum of squares
// is added in the order of the RMSNorm kernel that rmsnorm_bf16 takes for the same row: warp_rows (rows a
// multiple of 4 wide on 16-byte boundaries, rmsnorm_takes_warp_rows), warp 0 alone as rmsnorm_warp_kernel
// does (sumsq4 of float4s lane, lane + 32, …, then warp_sum); otherwise as rmsnorm_kernel (strided partial
// sums, warp sums, warps in order). So `a` equals rmsnorm_bf16's output bit for bit. Dynamic shared memory: K
// bf16.
constexpr int kNormThreadsForGemv = 32 * kGemvWarps;
static_assert(kNormThreadsForGemv == 256, "the sum order must be rmsnorm_kernel's (kNormThreads = 256)");

// Batched norm loads (twenty-fourth stop; docs/cuda.md, "The step in the graph, kernel by kernel"). In the
// warp_rows order the norm is a chain of dependent loads after the PDL wait: warp 0's sum of squares (a row
// of K floats is K/128 float4 loads per lane, issued as the compiler unrolls the loop), then every thread's x
// and w_norm for the bf16 row. Batched: each thread loads its w_norm float4s before the wait (weights), and
// after it its x float4s for the row, while warp 0 loads its sum's float4s kGemvNormSumBatch at a time; the
// sum is added in the same order and each a[d] is the same expression, so the bits are the same. Rows up to
// kGemvNormRowLoads float4s per thread (K ≤ 3072) take it; wider ones keep the loop.
// MAMBASCOPE_GEMV_NORM=loop keeps the loop (A/B runs, the tests); read at each launch.
constexpr int kGemvNormSumBatch = 8;
constexpr int kGemvNormRowLoads = 3;
// Batched since the twenty-seventh stop (docs/benchmarks.md): greedy bf16 runs on an H100, ms/token, loop →
// batched: mamba-130m 0.330 → 0.309, mamba-1.4b 1.653 → 1.605.
constexpr bool kGemvNormBatchedDefault = true;
bool gemv_norm_batched() {
    return env_enum<bool>("MAMBASCOPE_GEMV_NORM",
                          {{"", kGemvNormBatchedDefault}, {"batched", true}, {"loop", false}},
                          "it sets whether the RMSNorm inside a one-row projection issues its loads in "
                          "batches (docs/cuda.md, \"The step in the graph, kernel by kernel\")");
}

// The Mamba-1 conv folded into in_proj (gemv_rmsnorm_conv): rows [0, E) are the channels' x.
struct ConvFold {
    const float* w = nullptr;        // (E × kGemvConvK)
    const float* bias = nullptr;     // (E) or null
    float* state = nullptr;          // ((kGemvConvK − 1) × E), carried
    __nv_bfloat16* out16 = nullptr;  // (E)
    int64_t E = 0;
};

// The Mamba-1 x_proj folded in as well (gemv_rmsnorm_conv_xproj): dbc16 = conv16 · x_projT, split over the
// blocks (gemv.cuh).
struct XprojFold {
    const __nv_bfloat16* wT = nullptr;  // (E × R) x_projᵀ
    int64_t R = 0;                      // R % 8 == 0, R ≤ kGemvXprojMaxR
    float* parts = nullptr;             // (gemv_xproj_parts(E) × R): the blocks' sums, then the groups'
    unsigned* count = nullptr;          // (gemv_xproj_counters(E)): tickets; 0 between calls
    __nv_bfloat16* out16 = nullptr;     // (R)
};

// Greedy's argmax folded into the LM head (gemv_rmsnorm_argmax): *key = the largest argmax_key(y[i], i) over
// rows i < n; *key is 0 before the call.
struct ArgmaxFold {
    unsigned long long* key = nullptr;
    int64_t n = 0;
};

// 8 bf16 (one 16-byte word) as float32, exact.
__device__ __forceinline__ void unpack8(uint4 u, float (&v)[kGemvVec]) {
    v[0] = bf16_lo(u.x), v[1] = bf16_hi(u.x), v[2] = bf16_lo(u.y), v[3] = bf16_hi(u.y);
    v[4] = bf16_lo(u.z), v[5] = bf16_hi(u.z), v[6] = bf16_lo(u.w), v[7] = bf16_hi(u.w);
}

// Rows [0, n) of src (R floats each, 16-byte aligned) added column by column in a fixed order: per 4 columns,
// G = threads / (R/4) thread groups, group g adding the rows ≡ g (mod G) in order (several 16-byte L2 loads
// in flight per thread), then the G groups in order. Into dst (float32) or, when dst is null, out16 (bf16).
// Every thread of the block calls it (barriers); part: ≥ 4·threads floats of shared memory.
__device__ __forceinline__ void xproj_sum_rows(const float* src, int64_t n, int R, float* dst,
                                               __nv_bfloat16* out16, float* part) {
    const int threads = static_cast<int>(blockDim.x);
    const int Q = R / 4, G = threads / Q, q = threadIdx.x % Q, g = threadIdx.x / Q;
    float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (g < G) {
        const float4* p4 = reinterpret_cast<const float4*>(src) + q;
#pragma unroll 4  // several rows in flight (the sum's order is unchanged)
        for (int64_t b = g; b < n; b += G) {
            const float4 v = __ldcg(p4 + b * Q);  // from L2: other blocks wrote it
            s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
        }
    }
    __syncthreads();  // part[] may still be read by the caller's last use
    if (g < G) reinterpret_cast<float4*>(part)[g * Q + q] = s;
    __syncthreads();
    for (int t = threadIdx.x; t < R; t += threads) {
        float total = part[t];
        for (int h = 1; h < G; ++h) total += part[h * R + t];
        if (dst)
            dst[t] = total;
        else
            out16[t] = f32_to_bf16_rn(total);
    }
}

// x_proj's split sum, after every warp of the block has added its channels (docs/cuda.md, "x_proj inside
// in_proj"). acc: this lane's 8 running sums, columns 8·lane … 8·lane + 7 (lanes < R/8; zeros in warps
// without a channel). The nparts blocks that hold channels each add their warps' sums (warps in order) into
// row b of xp.parts. Then two levels of tickets: blocks come in groups of kGemvXprojFanIn (block b in group
// b / kGemvXprojFanIn); the last block of a group to finish adds the group's rows (xproj_sum_rows) into group
// row nparts + g; the last group to finish adds the group rows and writes dbc16. (One group: its last block
// writes dbc16 directly.) Each level reads at most 16 rows per pass of its thread groups, so a 4096-channel
// model (512 rows) does not leave one block reading them all. Block-uniform control flow throughout.
__device__ __forceinline__ void xproj_reduce(const XprojFold& xp, int64_t E, int lane, int warp,
                                             const float (&acc)[kGemvVec]) {
    __shared__ __align__(16) float part[kGemvWarps * kGemvXprojMaxR];
    __shared__ bool last;
    const int R = static_cast<int>(xp.R), threads = static_cast<int>(blockDim.x);
    if (lane < R / kGemvVec) {
#pragma unroll
        for (int i = 0; i < kGemvVec; ++i) part[warp * R + kGemvVec * lane + i] = acc[i];
    }
    __syncthreads();
    const int64_t nparts = min(static_cast<int64_t>(gridDim.x), (E + kGemvWarps - 1) / kGemvWarps);
    const int64_t b = blockIdx.x;
    if (b >= nparts) return;  // no channel in this block
    for (int t = threadIdx.x; t < R; t += threads) {
        float sum = part[t];
#pragma unroll
        for (int w = 1; w < kGemvWarps; ++w) sum += part[w * R + t];
        xp.parts[b * R + t] = sum;
    }
    const int64_t ngroups = (nparts + kGemvXprojFanIn - 1) / kGemvXprojFanIn, g = b / kGemvXprojFanIn;
    const int64_t g0 = g * kGemvXprojFanIn, grows = min(static_cast<int64_t>(kGemvXprojFanIn), nparts - g0);
    __threadfence();  // this block's row before its ticket
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(xp.count + 1 + g, 1u) == static_cast<unsigned>(grows - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();  // the group's rows after the tickets
    if (ngroups == 1) {
        xproj_sum_rows(xp.parts + g0 * R, grows, R, nullptr, xp.out16, part);
        if (threadIdx.x == 0) xp.count[1 + g] = 0;  // for the next call (the kernel's completion orders it)
        return;
    }
    xproj_sum_rows(xp.parts + g0 * R, grows, R, xp.parts + (nparts + g) * R, nullptr, part);
    __threadfence();  // the group's row before the group's ticket
    __syncthreads();
    if (threadIdx.x == 0) {
        xp.count[1 + g] = 0;
        last = atomicAdd(xp.count, 1u) == static_cast<unsigned>(ngroups - 1);
    }
    __syncthreads();
    if (!last) return;
    __threadfence();  // every group's row after the tickets
    xproj_sum_rows(xp.parts + nparts * R, ngroups, R, nullptr, xp.out16, part);
    if (threadIdx.x == 0) xp.count[0] = 0;
}

// kConv (bf16 output only): the warp that computes row n < E also runs channel n's conv for the token on the
// row as stored (conv_step.cuh), after its lane 0 has stored the row. kXproj (with kConv): and adds the conv
// output times x_projT's row n to its lanes' running sums, which xproj_reduce combines. kArgmax (float
// output, beta 0): lane 0 of each warp keeps the largest argmax_key of its rows n < am.n, the block takes the
// largest of its warps' and one thread folds it into *am.key with atomicMax, so the row's argmax costs one
// atomic per block instead of a kernel that reads the row back once the head has finished.
template <typename TY, bool kConv, bool kXproj = false, bool kArgmax = false>
__global__ void __launch_bounds__(32 * kGemvWarps)
    gemv_rmsnorm_kernel(int64_t N, int64_t K, const __nv_bfloat16* __restrict__ W, int64_t ldw,
                        const float* __restrict__ x, const float* __restrict__ wn, float eps,
                        TY* __restrict__ y, float beta, bool vec, bool warp_rows, bool norm_batched,
                        int64_t prefetch, ConvFold conv, XprojFold xp, ArgmaxFold am, bool trigger) {
    static_assert(!kConv || sizeof(TY) == 2, "the conv is folded into the bf16 in_proj only");
    static_assert(!kArgmax || (sizeof(TY) == 4 && !kConv), "the argmax is folded into the float32 head only");
    static_assert(!kXproj || kConv, "x_proj folds in with the conv only");
    extern __shared__ __align__(16) float smem[];
    __nv_bfloat16* a = reinterpret_cast<__nv_bfloat16*>(smem);
    __shared__ float partial[kGemvWarps];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t first = static_cast<int64_t>(blockIdx.x) * kGemvWarps + warp;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * kGemvWarps;
    prefetch_rows(W, N, K, ldw, first, stride, lane, prefetch);
    // The conv's taps and carried rows of this warp's first row (a decode step's only row per warp) are
    // loaded before the wait: they are weights and this layer's conv state, which no kernel of the step but
    // this one touches (gemv.cuh).
    ConvChannel<kGemvConvK> pre{};
    const bool preloaded = kConv && lane == 0 && first < conv.E;
    if (preloaded) pre = conv_step_load<kGemvConvK>(first, conv.E, conv.w, conv.bias, conv.state);
    // and x_projT's row of that channel (weights), 16 bytes per lane, copied into shared memory (no registers
    // held across the wait)
    const int xlanes = kXproj ? static_cast<int>(xp.R / kGemvVec) : 0;
    __shared__ __align__(16) uint4 xw_first[kXproj ? kGemvWarps * 32 : 1];
    if constexpr (kXproj) {
        if (first < conv.E && lane < xlanes)
            cp_async_16(&xw_first[warp * 32 + lane], xp.wT + first * xp.R + kGemvVec * lane, true);
        cp_async_commit();
    }
    float xacc[kGemvVec] = {};
    // norm_batched (warp_rows, K ≤ kGemvNormRowLoads·4·256): this thread's w_norm float4s, before the wait
    const int64_t K4 = K / 4;
    float4 wr[kGemvNormRowLoads];
    if (norm_batched) {
#pragma unroll
        for (int j = 0; j < kGemvNormRowLoads; ++j) {
            const int64_t i = threadIdx.x + int64_t{kNormThreadsForGemv} * j;
            wr[j] = i < K4 ? reinterpret_cast<const float4*>(wn)[i] : make_float4(0.f, 0.f, 0.f, 0.f);
        }
    }
    grid_dependency_wait();  // x (and y, with beta) come from earlier kernels
    x = after_wait(x);       // coherent loads of x (device_math.cuh)
    if (trigger) grid_launch_dependents();
    if constexpr (kXproj) cp_async_wait_all();  // this lane's own copy: no barrier needed
    float total = 0.0f;
    if (norm_batched) {
        const float4* x4 = reinterpret_cast<const float4*>(x);
        float4 xr[kGemvNormRowLoads];  // this thread's x float4s for the bf16 row
#pragma unroll
        for (int j = 0; j < kGemvNormRowLoads; ++j) {
            const int64_t i = threadIdx.x + int64_t{kNormThreadsForGemv} * j;
            xr[j] = i < K4 ? x4[i] : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        if (warp == 0) {  // the sum in the warp_rows order: lane l adds float4s l, l + 32, … in turn
            float ss = 0.0f;
            for (int64_t base = lane; base < K4; base += 32 * kGemvNormSumBatch) {
                float4 v[kGemvNormSumBatch];
#pragma unroll
                for (int j = 0; j < kGemvNormSumBatch; ++j)
                    v[j] = base + 32 * j < K4 ? x4[base + 32 * j] : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
                for (int j = 0; j < kGemvNormSumBatch; ++j)
                    if (base + 32 * j < K4) ss += sumsq4(v[j]);
            }
            ss = warp_sum(ss);
            if (lane == 0) partial[0] = ss;
        }
        __syncthreads();
        total = partial[0];
        const float inv = rsqrtf(total / static_cast<float>(K) + eps);
#pragma unroll
        for (int j = 0; j < kGemvNormRowLoads; ++j) {
            const int64_t i = threadIdx.x + int64_t{kNormThreadsForGemv} * j;
            if (i < K4) {
                a[4 * i + 0] = __float2bfloat16_rn(xr[j].x * inv * wr[j].x);
                a[4 * i + 1] = __float2bfloat16_rn(xr[j].y * inv * wr[j].y);
                a[4 * i + 2] = __float2bfloat16_rn(xr[j].z * inv * wr[j].z);
                a[4 * i + 3] = __float2bfloat16_rn(xr[j].w * inv * wr[j].w);
            }
        }
    } else if (warp_rows) {
        if (warp == 0) {
            const float4* x4 = reinterpret_cast<const float4*>(x);
            float ss = 0.0f;
            for (int64_t i = lane; i < K / 4; i += 32) ss += sumsq4(x4[i]);
            ss = warp_sum(ss);
            if (lane == 0) partial[0] = ss;
        }
        __syncthreads();
        total = partial[0];
    } else {
        float ss = 0.0f;
        for (int64_t d = threadIdx.x; d < K; d += kNormThreadsForGemv) ss += x[d] * x[d];
        ss = warp_sum(ss);
        if (lane == 0) partial[warp] = ss;
        __syncthreads();
#pragma unroll
        for (int i = 0; i < kGemvWarps; ++i) total += partial[i];
    }
    if (!norm_batched) {
        const float inv = rsqrtf(total / static_cast<float>(K) + eps);
        for (int64_t d = threadIdx.x; d < K; d += kNormThreadsForGemv)
            a[d] = __float2bfloat16_rn(x[d] * inv * wn[d]);
    }
    __syncthreads();
    unsigned long long best = 0;  // kArgmax: lane 0's largest key (0: none)
    gemv_rows(N, K, W, ldw, a, first, stride, lane, vec, [&](int64_t n, float acc) {
        float conv_out = 0.0f;  // lane 0's
        if (lane == 0) {
            store(y + n, acc, beta);
            if constexpr (kArgmax) {
                if (n < am.n) best = max(best, static_cast<unsigned long long>(argmax_key(acc, n)));
            }
            if constexpr (kConv) {
                if (n < conv.E) {
                    const float in_d = __bfloat162float(__float2bfloat16_rn(acc));  // y[n] as stored
                    const ConvChannel<kGemvConvK> c =
                        n == first && preloaded
                            ? pre
                            : conv_step_load<kGemvConvK>(n, conv.E, conv.w, conv.bias, conv.state);
                    conv_out = conv_step_finish<kGemvConvK>(n, conv.E, in_d, c, conv.state, conv.out16);
                }
            }
        }
        if constexpr (kXproj) {
            if (n < conv.E) {  // n is the same in every lane
                conv_out = __shfl_sync(0xffffffffu, conv_out, 0);
                if (lane < xlanes) {
                    float wv[kGemvVec];
                    unpack8(n == first ? xw_first[warp * 32 + lane]
                                       : reinterpret_cast<const uint4*>(xp.wT + n * xp.R)[lane],
                            wv);
#pragma unroll
                    for (int i = 0; i < kGemvVec; ++i) xacc[i] = fmaf(conv_out, wv[i], xacc[i]);
                }
            }
        }
    });
    if constexpr (kXproj) xproj_reduce(xp, conv.E, lane, warp, xacc);
    if constexpr (kArgmax) {
        __shared__ unsigned long long warp_best[kGemvWarps];
        if (lane == 0) warp_best[warp] = best;
        __syncthreads();
        if (threadIdx.x == 0) {
#pragma unroll
            for (int i = 1; i < kGemvWarps; ++i) best = max(best, warp_best[i]);
            if (best != 0) atomicMax(am.key, best);
        }
    }
}

template <typename TY, bool kConv = false, bool kXproj = false, bool kArgmax = false>
void launch_gemv_rmsnorm(int64_t N, int64_t K, const __nv_bfloat16* W, int64_t ldw, const float* x,
                         const float* wn, float eps, TY* y, float beta, cudaStream_t stream,
                         ConvFold conv = {}, XprojFold xp = {}, ArgmaxFold am = {}) {
    MS_CHECK(N >= 0 && K > 0 && K <= kGemvNormMaxK, "gemv_rmsnorm: K must be in [1, 16384]");
    if (N == 0) return;
    MS_CHECK(W && x && wn && y && ldw >= K, "gemv_rmsnorm: null pointer or ldw < K");
    MS_CHECK((N + kGemvWarps - 1) / kGemvWarps <= INT_MAX, "gemv_rmsnorm: N too large");
    const bool vec = K % kGemvVec == 0 && ldw % kGemvVec == 0 && reinterpret_cast<uintptr_t>(W) % 16 == 0;
    const size_t smem = static_cast<size_t>(K) * sizeof(__nv_bfloat16);
    if (smem > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(
            reinterpret_cast<const void*>(gemv_rmsnorm_kernel<TY, kConv, kXproj, kArgmax>),
            cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    const unsigned blocks = gemv_blocks(N, gemv_rmsnorm_kernel<TY, kConv, kXproj, kArgmax>, smem);
    const int64_t prefetch = prefetch_count(N, K * static_cast<int64_t>(sizeof(__nv_bfloat16)), blocks, vec);
    const bool warp_rows = detail::rmsnorm_takes_warp_rows(K, x, K, wn);
    const bool norm_batched =
        gemv_norm_batched() && warp_rows && K / 4 <= int64_t{kGemvNormRowLoads} * kNormThreadsForGemv;
    const bool trigger = gemv_trigger(true);
    pdl_register(gemv_rmsnorm_kernel<TY, kConv, kXproj, kArgmax>);
    gemv_rmsnorm_kernel<TY, kConv, kXproj, kArgmax><<<blocks, 32 * kGemvWarps, smem, stream>>>(
        N, K, W, ldw, x, wn, eps, y, beta, vec, warp_rows, norm_batched, prefetch, conv, xp, am, trigger);
    CUDA_CHECK(cudaGetLastError());
}

}  // namespace

GemvTriggerDefault::GemvTriggerDefault(bool trigger) : previous_(t_trigger_default) {
    t_trigger_default = trigger;
}
GemvTriggerDefault::~GemvTriggerDefault() {
    t_trigger_default = previous_;
}

void gemv_rmsnorm(int64_t N, int64_t K, const __nv_bfloat16* W, int64_t ldw, const float* x,
                  const float* w_norm, float eps, float* y, float beta, cudaStream_t stream) {
    launch_gemv_rmsnorm(N, K, W, ldw, x, w_norm, eps, y, beta, stream);
}

void gemv_rmsnorm(int64_t N, int64_t K, const __nv_bfloat16* W, int64_t ldw, const float* x,
                  const float* w_norm, float eps, __nv_bfloat16* y, cudaStream_t stream) {
    launch_gemv_rmsnorm(N, K, W, ldw, x, w_norm, eps, y, 0.0f, stream);
}

int64_t gemv_prefetch_rows_per_warp(int64_t N, int64_t row_bytes, int64_t warps, int64_t l2_bytes) {
    MS_CHECK(N >= 0 && row_bytes > 0 && warps > 0 && l2_bytes >= 0, "gemv_prefetch_rows_per_warp: bad sizes");
    const double budget = kGemvPrefetchL2Share * static_cast<double>(l2_bytes);
    if (static_cast<double>(N) * static_cast<double>(row_bytes) <= budget) return N;  // all of it
    return static_cast<int64_t>(budget / (static_cast<double>(warps) * static_cast<double>(row_bytes)));
}

void gemv_rmsnorm_argmax(int64_t N, int64_t K, const __nv_bfloat16* W, int64_t ldw, const float* x,
                         const float* w_norm, float eps, float* y, int64_t n, unsigned long long* key,
                         cudaStream_t stream) {
    MS_CHECK(n >= 1 && n <= N && n <= INT32_MAX,
             "gemv_rmsnorm_argmax: the argmax's rows must be 1 to N (and below 2^31)");
    MS_CHECK(key, "gemv_rmsnorm_argmax: the key is required");
    ArgmaxFold am;
    am.key = key, am.n = n;
    launch_gemv_rmsnorm<float, false, false, true>(N, K, W, ldw, x, w_norm, eps, y, 0.0f, stream, {}, {}, am);
}

void gemv_rmsnorm_conv(int64_t E, int64_t K, const __nv_bfloat16* W, int64_t ldw, const float* x,
                       const float* w_norm, float eps, __nv_bfloat16* y, const float* conv_w,
                       const float* conv_b, float* conv_state, __nv_bfloat16* conv16, cudaStream_t stream,
                       bool x_only) {
    MS_CHECK(E > 0, "gemv_rmsnorm_conv: E must be positive");
    MS_CHECK(conv_w && conv_state && conv16,
             "gemv_rmsnorm_conv: the conv's weights, state and output are required");
    MS_CHECK(conv16 != y && static_cast<const void*>(conv16) != static_cast<const void*>(x),
             "gemv_rmsnorm_conv: the conv's output must not alias the projection's input or output");
    ConvFold conv;
    conv.w = conv_w, conv.bias = conv_b, conv.state = conv_state, conv.out16 = conv16, conv.E = E;
    launch_gemv_rmsnorm<__nv_bfloat16, true>((x_only ? 1 : 2) * E, K, W, ldw, x, w_norm, eps, y, 0.0f, stream,
                                             conv);
}

// Rows of the blocks' partial sums (one per block that holds channels, at most one per kGemvWarps channels)
// and of the groups' (one per kGemvXprojFanIn blocks); one counter per group and one for the groups.
int64_t gemv_xproj_parts(int64_t E) {
    const int64_t blocks = (E + kGemvWarps - 1) / kGemvWarps;
    return blocks + (blocks + kGemvXprojFanIn - 1) / kGemvXprojFanIn;
}

int64_t gemv_xproj_counters(int64_t E) {
    const int64_t blocks = (E + kGemvWarps - 1) / kGemvWarps;
    return 1 + (blocks + kGemvXprojFanIn - 1) / kGemvXprojFanIn;
}

void gemv_rmsnorm_conv_xproj(int64_t E, int64_t K, const __nv_bfloat16* W, int64_t ldw, const float* x,
                             const float* w_norm, float eps, __nv_bfloat16* y, const float* conv_w,
                             const float* conv_b, float* conv_state, __nv_bfloat16* conv16,
                             const __nv_bfloat16* x_projT, int64_t R, float* parts, unsigned* count,
                             __nv_bfloat16* dbc16, cudaStream_t stream) {
    MS_CHECK(E > 0, "gemv_rmsnorm_conv_xproj: E must be positive");
    MS_CHECK(conv_w && conv_state && conv16 && x_projT && parts && count && dbc16,
             "gemv_rmsnorm_conv_xproj: the conv's weights, state and output, x_projT, the partial sums, the "
             "tickets and the output are required");
    MS_CHECK(R > 0 && R % kGemvVec == 0 && R <= kGemvXprojMaxR,
             "gemv_rmsnorm_conv_xproj: x_proj's rows must be a multiple of 8, at most 256");
    MS_CHECK(reinterpret_cast<uintptr_t>(x_projT) % 16 == 0 && reinterpret_cast<uintptr_t>(parts) % 16 == 0,
             "gemv_rmsnorm_conv_xproj: x_projT and the partial sums must be 16-byte aligned");
    MS_CHECK(conv16 != y && static_cast<const void*>(conv16) != static_cast<const void*>(x),
             "gemv_rmsnorm_conv_xproj: the conv's output must not alias the projection's input or output");
    ConvFold conv;
    conv.w = conv_w, conv.bias = conv_b, conv.state = conv_state, conv.out16 = conv16, conv.E = E;
    XprojFold xp;
    xp.wT = x_projT, xp.R = R, xp.parts = parts, xp.count = count, xp.out16 = dbc16;
    launch_gemv_rmsnorm<__nv_bfloat16, true, true>(2 * E, K, W, ldw, x, w_norm, eps, y, 0.0f, stream, conv,
                                                   xp);
}

int gemv_split_rows(int64_t N, int64_t K, bool vec) {
    int split = gemv_split_setting();  // read first: bad values are errors at any call
    const int64_t rows_per_sm = gemv_split_rows_per_sm();
    if (!vec || split == 1) return 1;
    static const int64_t sms = [] {
        int dev = 0, count = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev));
        return static_cast<int64_t>(count);
    }();
    // rows too few for the GPU: fewer than rows_per_sm warps per SM at one row per warp
    if (N >= rows_per_sm * sms) return 1;
    // whole 16-byte load steps per lane in every segment, at least kGemvSplitMinSteps of them
    while (split > 1 &&
           (K % (split * kGemvVec * 32) != 0 || K / (split * kGemvVec * 32) < kGemvSplitMinSteps))
        split /= 2;
    return split;
}

void gemv(int64_t N, int64_t K, const float* W, int64_t ldw, const float* a, float* y, float beta,
          cudaStream_t stream) {
    launch_gemv(N, K, W, ldw, a, y, beta, stream);
}

void gemv(int64_t N, int64_t K, const __nv_bfloat16* W, int64_t ldw, const __nv_bfloat16* a, float* y,
          float beta, cudaStream_t stream, L2Ahead ahead) {
    launch_gemv(N, K, W, ldw, a, y, beta, stream, ahead);
}

void gemv(int64_t N, int64_t K, const __nv_bfloat16* W, int64_t ldw, const __nv_bfloat16* a, __nv_bfloat16* y,
          cudaStream_t stream, L2Ahead ahead) {
    launch_gemv(N, K, W, ldw, a, y, 0.0f, stream, ahead);
}

}  // namespace mambascope::kernels::cuda
