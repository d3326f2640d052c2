// argmax.cuh: greedy decoding's next id on the GPU, so that a greedy decode step moves 4 bytes to the host
// instead of the logits row (mamba-130m: 201 KB, whose copy and host argmax took ≈ 85 µs of a 0.5 ms step on
// the H200; docs/benchmarks.md, "Eighth stop").
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

namespace mambascope::kernels::cuda {

// out[0] = the index of the largest of x[0..n), n ≥ 1, with std::max_element's semantics (the CPU reference):
// the first index among equal maxima; a NaN is never larger than anything, so a NaN at x[0] gives 0 and NaNs
// elsewhere are skipped. One block (the rows a decode step reads are ≤ a few 100k). Device pointers;
// asynchronous on `stream`.
void argmax(int64_t n, const float* x, int32_t* out, cudaStream_t stream);

// Where the greedy step graph takes its argmax (MAMBASCOPE_ARGMAX, read per call): Head folds it into the LM
// head's gemv (gemv_rmsnorm_argmax, gemv.cuh; the default since 2026-12-05, fifteenth stop) where the head
// is that kernel, else the argmax kernel; Vec always runs the argmax kernel; Scalar runs it with the loop
// from before the fourteenth stop (one dependent scalar load per step). A bad value is an Error.
enum class ArgmaxMode { Head, Vec, Scalar };
ArgmaxMode argmax_mode();

// The argmax as one 64-bit maximum (the folded argmax's atomicMax): key(v, i) > key(w, j) exactly when
// std::max_element over a row holding both would prefer v at i to w at j. High word: v's bits mapped to an
// unsigned order (negatives flipped, positives with the sign bit set; −0 taken as +0, since std::max_element
// sees them equal); low word: 0xFFFFFFFF − i, so that among equal values the first index wins. NaN: key 0
// (never taken; every other key is ≥ 0x007FFFFF_00000000), except at i = 0, where it is the largest key of
// all: std::max_element compares later elements against x[0] and a NaN is never smaller, so index 0 wins.
// The maximum over i < n (n ≥ 1) is never 0, because x[0]'s key is not. 0 ≤ i < 2^31.
__host__ __device__ inline uint64_t argmax_key(float v, int64_t i) {
    if (v != v) return i == 0 ? ~uint64_t{0} : 0;
    if (v == 0.0f) v = 0.0f;  // −0 → +0
    uint32_t u;
#ifdef __CUDA_ARCH__
    u = __float_as_uint(v);
#else
    std::memcpy(&u, &v, sizeof u);
#endif
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return (static_cast<uint64_t>(u) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(i));
}

// The index a maximum over argmax_key(x[i], i), i < n, stands for.
__host__ __device__ inline int32_t argmax_key_index(uint64_t key) {
    return static_cast<int32_t>(0xFFFFFFFFu - static_cast<uint32_t>(key));
}

}  // namespace mambascope::kernels::cuda
