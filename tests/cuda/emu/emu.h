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
