// emu.h: CPU emulation of the CUDA execution model for tests/cuda/emu/run.sh (a checking tool, not a
// backend).
//
// Design decision: every CUDA thread of a block is a std::thread (blocks run one after another),
// __syncthreads is a std::barrier, a warp shuffle is an exchange through memory between two per-warp
// barriers, and __shared__ variables become function statics (shared by the running block). Slow, but it runs
// the kernels exactly as written, so indexing, chunking and barrier bugs show up on a machine without a GPU.
#pragma once
#include <cuda_runtime.h>  // types only (dim3, float4, cudaError_t)
#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
using std::max;
using std::min;

inline thread_local dim3 emu_threadIdx, emu_blockIdx, emu_blockDim, emu_gridDim;
#define threadIdx emu_threadIdx
#define blockIdx emu_blockIdx
#define blockDim emu_blockDim
#define gridDim emu_gridDim
#undef __global__
#undef __device__
#undef __forceinline__
#undef __launch_bounds__
#undef __shared__
#undef __align__
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct EmuBlock {
    std::unique_ptr<std::barrier<>> block;
    std::unique_ptr<std::barrier<>> named[16];  // bar.sync id, count: made by the first thread to arrive
    std::mutex named_mu;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    double slots[1024];
};
inline EmuBlock* emu_cur = nullptr;

// The SM cycle counter: a host clock (the decode kernel's optional phase stamps; tests do not read them).
inline long long clock64() {
    return static_cast<long long>(std::chrono::steady_clock::now().time_since_epoch().count());
}

inline void __syncthreads() {
    emu_cur->block->arrive_and_wait();
}

// Named barrier `id` over `count` threads of the block (bar.sync id, count): the first arrival makes it.
inline void emu_bar_sync(int id, int count) {
    std::barrier<>* b;
    {
        std::lock_guard<std::mutex> g(emu_cur->named_mu);
        auto& p = emu_cur->named[id];
        if (!p) p = std::make_unique<std::barrier<>>(count);
        b = p.get();
    }
    b->arrive_and_wait();
}

// mbarriers (the ring decode kernel): the 64-bit word holds the expected arrivals (bits 0-15), the pending
// ones (16-31), the transaction bytes outstanding (32-62) and the phase's parity (63). Changes take one
// mutex, store the word atomically and wake its waiters; a wait blocks on the word (std::atomic_ref::wait, a
// futex) instead of polling it: hundreds of emulated threads wait at once, and the one that will complete the
// phase must still get the CPU.
inline std::mutex emu_mbar_mu;
inline void emu_mbar_store(unsigned long long* b, unsigned long long v) {
    std::atomic_ref<unsigned long long> r(*b);
    r.store(v, std::memory_order_release);
    r.notify_all();
}
inline void emu_mbar_init(unsigned long long* b, unsigned count) {
    std::lock_guard<std::mutex> g(emu_mbar_mu);
    emu_mbar_store(b,
                   static_cast<unsigned long long>(count) | (static_cast<unsigned long long>(count) << 16));
}
// The phase completes when no arrival and no byte is pending: flip the parity, re-arm the arrivals.
inline unsigned long long emu_mbar_settled(unsigned long long v) {
    const unsigned long long expected = v & 0xffffu, pending = (v >> 16) & 0xffffu,
                             tx = (v >> 32) & 0x7fffffffu;
    return pending == 0 && tx == 0 ? expected | (expected << 16) | ((~v) & (1ull << 63)) : v;
}
// One arrival, after announcing `tx` transaction bytes (mbarrier.arrive.expect_tx; 0: a plain arrive).
inline void emu_mbar_arrive(unsigned long long* b, unsigned tx) {
    std::lock_guard<std::mutex> g(emu_mbar_mu);
    const unsigned long long v = *b;
    const unsigned long long pending = (v >> 16) & 0xffffu, out = ((v >> 32) & 0x7fffffffu) + tx;
    if (pending == 0) std::abort();  // more arrivals than the phase expects: a bug in the kernel
    emu_mbar_store(b, emu_mbar_settled((v & ~(0xffffull << 16) & ~(0x7fffffffull << 32)) |
                                       ((pending - 1) << 16) | (out << 32)));
}
inline void emu_mbar_complete_tx(unsigned long long* b, unsigned bytes) {
    std::lock_guard<std::mutex> g(emu_mbar_mu);
    const unsigned long long v = *b, out = (v >> 32) & 0x7fffffffu;
    if (out < bytes) std::abort();  // bytes landed that nobody announced: a bug in the kernel
    emu_mbar_store(b, emu_mbar_settled((v & ~(0x7fffffffull << 32)) | ((out - bytes) << 32)));
}
// True once the phase of this parity has completed; otherwise blocks until the word changes and says false
// (the caller asks again, as it loops on mbarrier.try_wait).
inline bool emu_mbar_try_wait(unsigned long long* b, unsigned parity) {
    std::atomic_ref<unsigned long long> r(*b);
    const unsigned long long v = r.load(std::memory_order_acquire);
    if (((v >> 63) & 1u) != (parity & 1u)) return true;
    r.wait(v, std::memory_order_acquire);
    return false;
}

// All lanes of the calling thread's warp (kernels call it warp-uniformly, as CUDA requires).
inline void __syncwarp(unsigned = 0xffffffffu) {
    emu_cur->warps[threadIdx.x / 32]->arrive_and_wait();
}

template <class T>
T __shfl_xor_sync(unsigned, T v, int o) {
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    emu_cur->slots[threadIdx.x] = static_cast<double>(v);
    emu_cur->warps[w]->arrive_and_wait();
    T r = static_cast<T>(emu_cur->slots[w * 32 + (lane ^ o)]);
    emu_cur->warps[w]->arrive_and_wait();
    return r;
}

template <class T>
T __shfl_down_sync(unsigned, T v, unsigned delta) {
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    const int n =
        std::min<int>(32, static_cast<int>(blockDim.x) - 32 * w);  // lanes of this (maybe partial) warp
    emu_cur->slots[threadIdx.x] = static_cast<double>(v);
    emu_cur->warps[w]->arrive_and_wait();
    const int src = lane + static_cast<int>(delta);
    T r = src < n ? static_cast<T>(emu_cur->slots[w * 32 + src]) : v;
    emu_cur->warps[w]->arrive_and_wait();
    return r;
}

template <class T>
T emu_shfl_up_sync(unsigned, T v, unsigned delta) {
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    emu_cur->slots[threadIdx.x] = static_cast<double>(v);
    emu_cur->warps[w]->arrive_and_wait();
    const int src = lane - static_cast<int>(delta);
    T r = src >= 0 ? static_cast<T>(emu_cur->slots[w * 32 + src]) : v;
    emu_cur->warps[w]->arrive_and_wait();
    return r;
}

template <class T>
T emu_shfl_sync(unsigned, T v, int src_lane) {
    const int w = threadIdx.x / 32;
    emu_cur->slots[threadIdx.x] = static_cast<double>(v);
    emu_cur->warps[w]->arrive_and_wait();
    T r = static_cast<T>(emu_cur->slots[w * 32 + (src_lane & 31)]);
    emu_cur->warps[w]->arrive_and_wait();
    return r;
}

// CUDA's headers declare float and int overloads of these two (sm_30_intrinsics.h) with empty host bodies;
// a non-template exact match would win overload resolution against a template, so the kernels' calls are
// renamed to the emulation's rather than relying on it.
#define __shfl_up_sync emu_shfl_up_sync
#define __shfl_sync emu_shfl_sync

inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

inline float __fdividef(float x, float y) {
    return x / y;
}

// Round-to-nearest float ops that the GPU compiler never contracts into an FMA; the emulation (C++17, no FP
// contraction) rounds each one anyway.
inline float __fmul_rn(float x, float y) {
    return x * y;
}
inline float __fadd_rn(float x, float y) {
    return x + y;
}
inline float __fsub_rn(float x, float y) {
    return x - y;
}

inline std::mutex emu_atomic_mu;
inline double atomicAdd(double* p, double v) {
    std::lock_guard<std::mutex> g(emu_atomic_mu);
    double o = *p;
    *p += v;
    return o;
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    std::lock_guard<std::mutex> g(emu_atomic_mu);
    auto o = *p;
    *p += v;
    return o;
}

inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v) {
    std::lock_guard<std::mutex> g(emu_atomic_mu);
    const auto o = *p;
    *p = std::max(o, v);
    return o;
}

inline unsigned atomicAdd(unsigned* p, unsigned v) {
    std::lock_guard<std::mutex> g(emu_atomic_mu);
    const unsigned o = *p;
    *p += v;
    return o;
}
// Blocks run one after another, each joined before the next starts: memory is ordered without a fence, and
// there is no L1 to bypass.
inline void __threadfence() {}
template <class T>
T __ldcg(const T* p) {
    return *p;
}

struct EmuCfg {
    dim3 grid, block;
};
inline EmuCfg emu_cfg(dim3 g, dim3 b, size_t = 0, cudaStream_t = nullptr) {
    return {g, b};
}
inline int emu_sms = 132;
inline void emu_launch(EmuCfg c, const std::function<void()>& body) {
    for (unsigned bz = 0; bz < c.grid.z; ++bz)
        for (unsigned by = 0; by < c.grid.y; ++by)
            for (unsigned bx = 0; bx < c.grid.x; ++bx) {
                EmuBlock blk;
                const unsigned n = c.block.x;
                blk.block = std::make_unique<std::barrier<>>(n);
                for (unsigned w = 0; w < (n + 31) / 32; ++w)
                    blk.warps.push_back(std::make_unique<std::barrier<>>(std::min(32u, n - 32 * w)));
                emu_cur = &blk;
                std::vector<std::thread> th;
                for (unsigned t = 0; t < n; ++t)
                    th.emplace_back([&, t] {
                        emu_threadIdx = dim3(t, 0, 0);
                        emu_blockIdx = dim3(bx, by, bz);
                        emu_blockDim = c.block;
                        emu_gridDim = c.grid;
                        body();
                    });
                for (auto& x : th) x.join();
            }
}
inline float emu_smem[1 << 16] __attribute__((aligned(16)));
inline float rsqrtf(float x) {
    return 1.0f / std::sqrt(x);
}
