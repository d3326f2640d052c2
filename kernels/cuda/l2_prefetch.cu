// The L2 branch's prefetch kernel; see l2_prefetch.cuh.
#include <algorithm>

#include "cuda/cuda_check.cuh"
#include "cuda/device_math.cuh"
#include "cuda/l2_prefetch.cuh"

namespace mambascope::kernels::cuda {
namespace {

// Each range in turn, in the order the step reads them, spread over the grid's threads one kL2AheadPiece
// (8 KB) piece per thread and round (device_math.cuh's prefetch_l2_spread, as L2 ahead uses it).
__global__ void l2_prefetch_kernel(L2Ranges ranges) {
    for (int i = 0; i < ranges.n; ++i)
        detail::prefetch_l2_spread(static_cast<const char*>(ranges.r[i].p), ranges.r[i].bytes);
}

}  // namespace

L2Ranges l2_budget_ranges(std::initializer_list<L2Range> want, int64_t budget) {
    L2Ranges out;
    int64_t left = std::max<int64_t>(budget, 0) / 16 * 16;
    for (const L2Range& w : want) {
        if (out.n == kL2RangesMax || left == 0) break;
        if (!w.p || w.bytes <= 0) continue;
        const auto a = reinterpret_cast<uintptr_t>(w.p);
        const int64_t skip = static_cast<int64_t>((16 - a % 16) % 16);  // to the first 16-byte boundary
        const int64_t bytes = std::min((w.bytes - std::min(skip, w.bytes)) / 16 * 16, left);
        if (bytes == 0) continue;
        out.r[out.n++] = L2Range{static_cast<const char*>(w.p) + skip, bytes};
        left -= bytes;
    }
    return out;
}

void prefetch_l2_ranges(const L2Ranges& ranges, cudaStream_t stream) {
    if (ranges.n == 0) return;
    int dev = 0, sms = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    // no more blocks than a round of pieces needs
    const int64_t pieces = (ranges.total() + detail::kL2AheadPiece - 1) / detail::kL2AheadPiece;
    const int blocks = static_cast<int>(
        std::max<int64_t>(1, std::min<int64_t>(sms, (pieces + kL2PrefetchThreads - 1) / kL2PrefetchThreads)));
    l2_prefetch_kernel<<<blocks, kL2PrefetchThreads, 0, stream>>>(ranges);
    CUDA_CHECK(cudaGetLastError());
}

}  // namespace mambascope::kernels::cuda
