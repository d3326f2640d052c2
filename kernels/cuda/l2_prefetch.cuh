// l2_prefetch.cuh: a kernel that only starts weights on their way into L2, for a parallel branch of the
// decode step's graph ("The L2 branch" in docs/cuda.md).
//
// Design decision: the decode step of a large model (mamba-1.4b) streams 54 MB of bf16 weights per layer, 50
// of them in in_proj and out_proj, while between those two the conv, x_proj and the scan step read 1–3 MB
// each and leave DRAM nearly idle (docs/benchmarks.md, sixteenth stop). Each projection's kernel can prefetch
// its own rows only from its launch, which PDL places at most one kernel early; a prefetch issued by a kernel
// of the step's chain for a later kernel (MAMBASCOPE_DECODE_L2_AHEAD=1|2) measured 16–34% slower, likely
// because a grid is not complete until its bulk prefetches have landed, which put them on the chain's
// critical path (eighteenth stop). This kernel is launched on a branch of the graph that no kernel of the
// chain waits on: it depends on the layer's in_proj (so it does not compete with in_proj's own stream) and is
// joined back only at the end of the step. Measured slower all the same (2–13% on mamba-1.4b's step, more
// the more it prefetches; docs/benchmarks.md, twenty-third stop): the step is bound by its chain's latencies,
// not by DRAM bandwidth. Opt-in (MAMBASCOPE_DECODE_L2_AHEAD=branch).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>

namespace mambascope::kernels::cuda {

// One byte range to prefetch; the kernel takes at most kL2RangesMax of them per launch.
struct L2Range {
    const void* p = nullptr;
    int64_t bytes = 0;
};
constexpr int kL2RangesMax = 6;
struct L2Ranges {
    L2Range r[kL2RangesMax];
    int n = 0;
    int64_t total() const {
        int64_t t = 0;
        for (int i = 0; i < n; ++i) t += r[i].bytes;
        return t;
    }
};

// The ranges a launch prefetches: `want` in order, each trimmed to whole 16-byte units inside it (the bulk
// prefetch needs a 16-byte aligned start and a multiple of 16 bytes), the running total capped at `budget`
// bytes (the range that crosses it is cut, later ones dropped), empty and null ranges skipped, at most
// kL2RangesMax ranges (later ones dropped). Host side; tested in CudaL2Prefetch.*.
L2Ranges l2_budget_ranges(std::initializer_list<L2Range> want, int64_t budget);

// Threads per block of prefetch_l2_ranges: one warp per block and one block per SM, so that a launch takes a
// sliver of each SM's registers and threads next to the chain's one-wave gemv grids (5 blocks of 256 threads
// per SM on mamba-1.4b) instead of taking whole SMs.
constexpr int kL2PrefetchThreads = 32;

// Starts every range of `ranges` on its way into L2 (cp.async.bulk.prefetch.L2, sm_90; a hint: nothing is
// written, and older GPUs do nothing), 8 KB (kL2AheadPiece) per thread and round, spread over one block per
// SM. Asynchronous on `stream`; a launch with no ranges launches nothing.
void prefetch_l2_ranges(const L2Ranges& ranges, cudaStream_t stream);

}  // namespace mambascope::kernels::cuda
