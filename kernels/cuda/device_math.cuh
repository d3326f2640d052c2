// device_math.cuh: the few device-side math helpers the CUDA kernels share (include from .cu files only).
//
// Design decision: exp goes through base 2 (callers pre-scale A by log2(e) once). Two flavours: ex2_approx
// (one MUFU op, ≈ 2 ulp) and exp2_accurate, which replaces the MUFU result near 2^0 by a Taylor polynomial: a
// scan multiplies thousands of decays a ≈ 1 into its state, so any systematic error of a near 1 accumulates
// with the channel's memory (≈ 1/(Δ·|A|) tokens); the polynomial's error there is rounding only. softplus
// keeps log1pf (accurate for tiny Δ, where lg2.approx(1+e^x) would lose the relative precision).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace mambascope::kernels::cuda::detail {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kSoftplusLinear = 20.0f;  // softplus(x) = x above this (PyTorch's threshold)

// 2^x, flushing denormal results to 0.
__device__ __forceinline__ float ex2_approx(float x) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

// log2(x) for x > 0.
__device__ __forceinline__ float lg2_approx(float x) {
    float r;
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

// Above this |x|, 2^x is ≤ 0.84 or ≥ 1.19: the state forgets within a few tokens, MUFU's 2 ulp do not
// accumulate.
constexpr float kExp2TaylorRange = 0.25f;

// ln2^k / k!, k = 0 … 7: the Taylor coefficients of 2^x = e^(x·ln2) (exp2_accurate takes 7 of them,
// exp2_soft 8).
__host__ __device__ constexpr float exp2_taylor_coef(int k) {
    constexpr float c[8] = {1.0f,
                            0.69314718055994531f,
                            0.24022650695910071f,
                            5.5504108664821576e-2f,
                            9.6181291076284772e-3f,
                            1.3333558146428441e-3f,
                            1.5403530393381606e-4f,
                            1.5252733804059841e-5f};
    return c[k];
}

// The Taylor polynomial of 2^x to degree kDegree by Horner's rule: kDegree fused multiply-adds, highest
// coefficient first.
template <int kDegree>
__device__ __forceinline__ float exp2_taylor(float x) {
    static_assert(kDegree >= 1 && kDegree <= 7);
    float p = exp2_taylor_coef(kDegree);
#pragma unroll
    for (int k = kDegree - 1; k >= 0; --k) p = fmaf(p, x, exp2_taylor_coef(k));
    return p;
}

// 2^x with rounding-level error for |x| ≤ 0.25 (the Taylor series to degree 6, truncation < 1e-9), the MUFU
// ex2.approx elsewhere. Both are evaluated (no divergent branch).
__device__ __forceinline__ float exp2_accurate(float x) {
    const float p = exp2_taylor<6>(x);
    return fabsf(x) <= kExp2TaylorRange ? p : ex2_approx(x);
}

// 2^x without the special-function pipe: FMA and integer instructions only (≈ 14 issue slots against the MUFU
// op's one, but on pipes a MUFU-bound kernel leaves idle; docs/cuda.md, "Soft exp"). x = j + f with j =
// round(x) (adding 1.5·2^23 leaves j in the low mantissa bits), 2^f by the Taylor series of e^(f·ln2) to
// degree 7 (|f| ≤ 0.5: truncation < 6e-9 relative, so the error is Horner's rounding, ≈ 1 ulp), 2^j added to
// the exponent bits. x is clamped to [−125, 127] so that the exponent stays normal: below −125 the result is
// 2^−125 ≈ 2.4e-38 where ex2.approx.ftz flushes to 0 (x < −126), a difference of h·2.4e-38 in any state; NaN
// becomes 2^−125 too (the scan's NaN still reaches h through Δ·x).
__device__ __forceinline__ float exp2_soft(float x) {
    constexpr float kShift = 12582912.0f;  // 1.5·2^23
    x = fminf(fmaxf(x, -125.0f), 127.0f);
    const float t = x + kShift;        // round(x) + 1.5·2^23, exact: j in the low bits
    const float f = x - (t - kShift);  // [−0.5, 0.5], exact
    const float p = exp2_taylor<7>(f);
    // t's bits shifted left by 23 keep its low 9 bits, j mod 512, in the exponent field: j << 23 mod 2^32.
    return __uint_as_float(__float_as_uint(p) + (__float_as_uint(t) << 23));
}

template <bool kFast>
__device__ __forceinline__ float exp2_scan(float x) {
    if constexpr (kFast)
        return ex2_approx(x);
    else
        return exp2_accurate(x);
}

// ln(x) for x > 0 (normal), with rounding-level absolute error near 1 (where lg2.approx's 2^-22 absolute
// error would dominate a small log): series in u = x − 1 (exact subtraction) for |u| < 1/16, truncation <
// 1e-9.
__device__ __forceinline__ float ln_near1(float x) {
    const float u = x - 1.0f;
    float p = -1.0f / 6.0f;
    p = fmaf(p, u, 1.0f / 5.0f);
    p = fmaf(p, u, -1.0f / 4.0f);
    p = fmaf(p, u, 1.0f / 3.0f);
    p = fmaf(p, u, -0.5f);
    p = fmaf(p, u, 1.0f);
    return fabsf(u) < 0.0625f ? p * u : lg2_approx(x) * kLn2;
}

// softplus(x) = max(x, 0) + ln(1 + u), u = e^{-|x|} ∈ (0, 1] (the CPU's form, kernels/cpu/activations.h).
// ln(1 + u): a series for u < 1/16 (truncation < u^7/7 < 6e-10 relative; trained Δ ≤ 0.06 always takes it),
// the MUFU lg2 otherwise (result ≥ 0.06, absolute error 2^-22·ln 2). ~12 instructions instead of log1pf's
// ~30: the scans evaluate softplus on every (token, channel) in both passes.
__device__ __forceinline__ float softplus(float x) {
    const float u = ex2_approx(-fabsf(x) * kLog2e);
    float p = -1.0f / 6.0f;
    p = fmaf(p, u, 0.2f);
    p = fmaf(p, u, -0.25f);
    p = fmaf(p, u, 1.0f / 3.0f);
    p = fmaf(p, u, -0.5f);
    p = fmaf(p, u, 1.0f);
    const float l = u < 0.0625f ? p * u : lg2_approx(1.0f + u) * kLn2;
    return x > kSoftplusLinear ? x : fmaxf(x, 0.0f) + l;
}

// x·sigmoid(x) with the fast reciprocal (2 ulp); for x → −∞ the denominator overflows and the result is −0.
__device__ __forceinline__ float silu(float x) {
    return __fdividef(x, 1.0f + ex2_approx(-x * kLog2e));
}

// Asynchronous 4-byte global → shared copy (sm_80+, bypasses registers); valid = false writes 0 and reads
// nothing (src must still be a mapped address). Completes at cp_async_wait_all(); visible to other threads
// after a __syncthreads() that follows the wait.
__device__ __forceinline__ void cp_async_f32(float* dst_smem, const float* src, bool valid) {
    const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(dst_smem));
    const int bytes = valid ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
                 : "memory");
}

// Asynchronous 16-byte global → shared copy (both addresses 16-byte aligned; L2 only, .cg); valid = false
// writes zeros and reads nothing (src must still be a mapped address). Completes as cp_async_f32 does.
__device__ __forceinline__ void cp_async_16(void* dst_smem, const void* src, bool valid) {
    const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(dst_smem));
    const int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
                 : "memory");
}

// Asynchronous 8-byte global → shared copy (both addresses 8-byte aligned; .ca); valid = false writes zeros
// and reads nothing (src must still be a mapped address). Completes as cp_async_f32 does.
__device__ __forceinline__ void cp_async_8(void* dst_smem, const void* src, bool valid) {
    const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(dst_smem));
    const int bytes = valid ? 8 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
                 : "memory");
}

// Programmatic dependent launch (PDL, sm_90+; docs/cuda.md, "Decoding on the GPU"). In the decode step's
// graph a kernel whose incoming edge is programmatic (pdl.cuh) starts while the kernel before it is still
// running. Before this wait returns it may only read weights: no activation, state or output of an earlier
// kernel, and no write at all. It returns once the earlier grid has completed and its writes are visible (and
// so every grid before it, each of which waited the same way). Without a programmatic dependency it returns
// at once.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// A pointer to data that an earlier kernel wrote, for reading after grid_dependency_wait (docs/cuda.md,
// "Reads after a programmatic wait"). A `const T* __restrict__` parameter tells the compiler that its memory
// does not change while the kernel runs, so it may read it with non-coherent `ld.global.nc` loads, which are
// invariant and may be scheduled before the wait: correct for weights, a race for an activation that the
// kernel in front is still writing (the thirtieth stop's pass 2 read pass 1's end states that way). The
// empty inline assembly hides where the pointer came from, so loads through the result are ordinary coherent
// loads, and it is ordered after the wait (both are volatile), which orders every load through the result
// after it.
template <typename T>
__device__ __forceinline__ const T* after_wait(const T* p) {
#if defined(__CUDA_ARCH__)
    asm volatile("" : "+l"(p));
    __builtin_assume(__isGlobal(p));  // so that the loads stay ld.global, not generic loads
#endif
    return p;
}

// The other half of PDL: once every block of this grid has issued it (or exited), a kernel launched after
// this one with a programmatic edge may start, and waits for this grid's completion in its own
// grid_dependency_wait. Without such a dependent kernel it does nothing.
__device__ __forceinline__ void grid_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Starts moving [p, p + bytes) into L2 (sm_90 bulk prefetch: p 16-byte aligned, bytes a multiple of 16; no
// registers, nothing to wait for). For weights, before grid_dependency_wait: their DRAM latency then overlaps
// the previous kernel.
__device__ __forceinline__ void prefetch_l2(const void* p, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile(
        "{\n .reg .u64 g;\n cvta.to.global.u64 g, %0;\n cp.async.bulk.prefetch.L2.global [g], %1;\n}\n" ::"l"(
            p),
        "r"(bytes)
        : "memory");
#endif
}

// Named barrier `id` (1-15; 0 is __syncthreads) over `threads` threads of the block (a multiple of 32): the
// threads that call it wait for each other, the others run on. The ring decode kernel's consumer warps
// synchronise with it while its producer warp keeps streaming weights (decode_mamba1.cu).
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Shared-memory mbarriers and the bulk copy that completes on one: the ring decode kernel's producer/consumer
// handshake (sm_90; older GPUs trap, and the host takes the ring kernel on compute capability 9.0 and up
// only). An mbarrier's phase completes when `count` arrivals have been made and every
// byte announced with mbar_arrive_expect_tx has landed; mbar_wait(bar, parity) returns once the phase of
// that parity has completed (the phase before the current one when parity differs from the current one's).
__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(unsigned long long* bar, unsigned count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
#else
    __trap();
#endif
}
// After the inits and before any other thread uses the barriers (then a __syncthreads).
__device__ __forceinline__ void mbar_init_fence() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#else
    __trap();
#endif
}
__device__ __forceinline__ void mbar_arrive(unsigned long long* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
#else
    __trap();
#endif
}
__device__ __forceinline__ void mbar_arrive_expect_tx(unsigned long long* bar, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
                 : "memory");
#else
    __trap();
#endif
}
__device__ __forceinline__ bool mbar_try_wait(unsigned long long* bar, unsigned parity) {
    unsigned done = 1;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, "
        "p;\n}\n"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
#else
    __trap();
#endif
    return done != 0;
}
__device__ __forceinline__ void mbar_wait(unsigned long long* bar, unsigned parity) {
    while (!mbar_try_wait(bar, parity)) {
    }
}
// Copies [src, src + bytes) (global, 16-byte aligned, bytes a multiple of 16) to dst (shared, 16-byte
// aligned) asynchronously; the bytes count against `bar`'s transaction count (announce them first with
// mbar_arrive_expect_tx).
__device__ __forceinline__ void bulk_copy_to_shared(void* dst, const void* src, unsigned bytes,
                                                    unsigned long long* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile(
        "{\n .reg .u64 g;\n cvta.to.global.u64 g, %1;\n"
        " cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [g], %2, [%3];\n}\n" ::"r"(
            smem_addr(dst)),
        "l"(src), "r"(bytes), "r"(smem_addr(bar))
        : "memory");
#else
    __trap();
#endif
}

// Every thread of this (one-dimensional) grid starts its share of [p, p + bytes) on its way into L2, one
// kL2AheadPiece-byte piece per thread and round (p 16-byte aligned, bytes a multiple of 16; nothing when
// bytes is 0). For a later kernel's weights, after grid_dependency_wait: "L2 ahead" in docs/cuda.md.
constexpr int64_t kL2AheadPiece = 8192;
__device__ __forceinline__ void prefetch_l2_spread(const char* p, int64_t bytes) {
    const int64_t threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i * kL2AheadPiece < bytes;
         i += threads) {
        const int64_t off = i * kL2AheadPiece;
        prefetch_l2(p + off, static_cast<unsigned>(min(kL2AheadPiece, bytes - off)));
    }
}

__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

__device__ __forceinline__ void cp_async_wait_all() {
    asm volatile("cp.async.wait_all;\n" ::: "memory");
}

// Waits until at most `kPending` of this thread's committed cp.async groups are still in flight (the oldest
// complete first): the pipelined form of cp_async_wait_all.
template <int kPending>
__device__ __forceinline__ void cp_async_wait_group() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// bf16 ↔ float32 with integer operations. The cvt instructions behind __bfloat162float / __float2bfloat16_rn
// are not plain ALU ops, and the scans are bound by the MUFU pipe and issue slots (docs/cuda.md): a shift
// (exact) and an add-and-shift (round to nearest even, NaN kept a NaN) give the same results.
__device__ __forceinline__ float bf16_to_f32(const __nv_bfloat16* p) {
    const unsigned bits = static_cast<__nv_bfloat16_raw>(*p).x;
    return __uint_as_float(bits << 16);
}
__device__ __forceinline__ __nv_bfloat16 f32_to_bf16_rn(float v) {
    const unsigned u = __float_as_uint(v);
    __nv_bfloat16_raw r;
    r.x = static_cast<unsigned short>(
        (u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : (u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return __nv_bfloat16(r);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Δ' for one (t, d): softplus (optional), filter, and 0 for padding tokens past the chunk end.
__device__ __forceinline__ float used_delta(float raw, float bias, int softplus_on, float thr, bool valid,
                                            bool& kept) {
    float dt = raw + bias;
    if (softplus_on) dt = softplus(dt);
    kept = valid && dt > thr;
    return kept ? dt : 0.0f;
}

// x² + y² + z² + w², in one fixed order: RMSNorm's warp-per-row kernel and gemv_rmsnorm both sum squares with
// it (lane l: float4s l, l + 32, …; then warp_sum), so their norms agree bit for bit.
__device__ __forceinline__ float sumsq4(float4 v) {
    return v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

}  // namespace mambascope::kernels::cuda::detail
