// scan_probes.cuh: per-channel probes that the CUDA scans accumulate while they run (method doc §8.2, §8.6).
//
// Design decision: probes are ADDED to the caller's buffers (in double precision, with atomics across time
// chunks), never overwritten, so that a long input scanned chunk by chunk accumulates over the whole input;
// the caller zeroes them once at the start. Every pointer may be null (that probe is skipped); all null = no
// probe work at all.
#pragma once

#include <cstdint>

namespace mambascope::kernels::cuda {

struct ScanProbes {
    double* delta_sum = nullptr;  // (channels) += Σ_t Δ'[t,c]            (the Δ actually used by the scan)
    int64_t* kept = nullptr;      // (channels) += #{t : Δ[t,c] > thr[c]} (all tokens when thr is null)
    double* log_decay = nullptr;  // (channels) += Σ_t ln(mean_n exp(Δ'[t,c]·A[c,n]))  (Mamba-2: Σ_t Δ'·A[h])

    bool any() const { return delta_sum || kept || log_decay; }
};

}  // namespace mambascope::kernels::cuda
