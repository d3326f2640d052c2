// pdl.cuh: which kernels may take a programmatic (PDL) edge in the decode step's CUDA graph (host side).
//
// Design decision (docs/cuda.md, "Decoding on the GPU"): the decoder captures its step as a graph and then
// turns kernel → kernel edges into programmatic ones, so that a kernel launches before the one in front of it
// has finished (once that one's blocks have all started or all exited, per MAMBASCOPE_DECODE_PDL), prefetches
// its weights and waits in grid_dependency_wait (device_math.cuh) instead of being launched after the
// previous kernel ends. That is only correct for kernels that call the wait before touching any activation or
// state. Their launchers say so here, with the kernel pointer they launch; an edge into any other kernel
// stays a full dependency. The set is filled by the launches themselves (the capture records every launch of
// the step), so a kernel that is never launched is never asked about.
#pragma once

#include <mutex>
#include <unordered_set>
#include <vector>

namespace mambascope::kernels::cuda {

namespace detail {
struct PdlRegistry {
    std::mutex mu;
    std::unordered_set<const void*> kernels;
};
inline PdlRegistry& pdl_registry() {
    static PdlRegistry r;
    return r;
}
}  // namespace detail

// `kernel` (the host pointer passed to <<<>>>) calls grid_dependency_wait() before it reads or writes
// anything but its weights.
template <typename Kernel>
inline void pdl_register(Kernel* kernel) {
    auto& r = detail::pdl_registry();
    std::lock_guard<std::mutex> lock(r.mu);
    r.kernels.insert(reinterpret_cast<const void*>(kernel));
}

inline std::vector<const void*> pdl_registered_kernels() {
    auto& r = detail::pdl_registry();
    std::lock_guard<std::mutex> lock(r.mu);
    return std::vector<const void*>(r.kernels.begin(), r.kernels.end());
}

inline bool pdl_registered(const void* kernel) {
    auto& r = detail::pdl_registry();
    std::lock_guard<std::mutex> lock(r.mu);
    return r.kernels.count(kernel) != 0;
}

}  // namespace mambascope::kernels::cuda
