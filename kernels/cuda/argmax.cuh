// argmax.cuh: greedy decoding's next id on the GPU, so that a greedy decode step moves 4 bytes to the host
// instead of the logits row (mamba-130m: 201 KB, whose copy and host argmax took ≈ 85 µs of a 0.5 ms step on
// the H200; docs/benchmarks.md, "Eighth stop").
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mambascope::kernels::cuda {

// out[0] = the index of the largest of x[0..n), n ≥ 1, with std::max_element's semantics (the CPU reference):
// the first index among equal maxima; a NaN is never larger than anything, so a NaN at x[0] gives 0 and NaNs
// elsewhere are skipped. One block (the rows a decode step reads are ≤ a few 100k). Device pointers;
// asynchronous on `stream`.
void argmax(int64_t n, const float* x, int32_t* out, cudaStream_t stream);

}  // namespace mambascope::kernels::cuda
