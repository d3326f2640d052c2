// RMSNorm and gated grouped RMSNorm; see rmsnorm.cuh.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "cuda/cuda_check.cuh"
#include "cuda/device_math.cuh"
#include "cuda/pdl.cuh"
#include "cuda/rmsnorm.cuh"
#include "mambascope/env_switch.h"

namespace mambascope::kernels::cuda {
namespace {

using namespace detail;

constexpr int kNormThreads = 256;  // threads per row (or row group)

// Sum over the block; every thread gets the result.
__device__ float block_sum(float v) {
    __shared__ float partial[kNormThreads / 32];
    v = warp_sum(v);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // `partial` may still be read from a previous call
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    float total = 0.0f;
#pragma unroll
    for (int i = 0; i < kNormThreads / 32; ++i) total += partial[i];
    return total;
}

__device__ __forceinline__ void store(float* p, float v) {
    *p = v;
}
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) {
    *p = __float2bfloat16_rn(v);
}

template <class Out>
__global__ void __launch_bounds__(kNormThreads)
    rmsnorm_kernel(int64_t D, const float* x, int64_t ldx, const float* __restrict__ w, float eps, Out* out,
                   int64_t ldo) {
    grid_dependency_wait();  // PDL (pdl.cuh): x comes from earlier kernels
    const float* xr = x + static_cast<int64_t>(blockIdx.x) * ldx;
    Out* o = out + static_cast<int64_t>(blockIdx.x) * ldo;
    float ss = 0.0f;
    for (int64_t d = threadIdx.x; d < D; d += kNormThreads) ss += xr[d] * xr[d];
    const float inv = rsqrtf(block_sum(ss) / static_cast<float>(D) + eps);
    for (int64_t d = threadIdx.x; d < D; d += kNormThreads) store(o + d, xr[d] * inv * w[d]);
}

// One warp per row, the row kept in registers: kVec float4 loads per lane (D % 4 == 0, D ≤ 128·kVec, x rows
// and w on 16-byte boundaries), one warp reduction, no block barrier. Rows of the released models are 768 to
// 4096 wide: the block-per-row kernel above spent its time in two block barriers for 3 values per thread
// (H200 profile, mamba2-130m × 16k tokens: 1.1 ms of 16.7). float and bf16 outputs share this kernel, so the
// bf16 result is the float one rounded. out may alias x: every value is read (all of the row, before the
// reduction) by the lane that writes it. vec_out: out rows take one 16-byte (float) or 8-byte (bf16) store
// per 4 values.
constexpr int kNormRowsPerBlock = kNormThreads / 32;

__device__ __forceinline__ void store4(float* p, float4 v, bool vec) {
    if (vec) {
        *reinterpret_cast<float4*>(p) = v;
    } else {
        p[0] = v.x, p[1] = v.y, p[2] = v.z, p[3] = v.w;
    }
}
__device__ __forceinline__ void store4(__nv_bfloat16* p, float4 v, bool vec) {
    if (vec) {
        const auto bits = [](float f) {
            return static_cast<unsigned>(static_cast<__nv_bfloat16_raw>(__float2bfloat16_rn(f)).x);
        };
        *reinterpret_cast<uint2*>(p) =
            make_uint2(bits(v.x) | (bits(v.y) << 16), bits(v.z) | (bits(v.w) << 16));
    } else {
        p[0] = __float2bfloat16_rn(v.x), p[1] = __float2bfloat16_rn(v.y);
        p[2] = __float2bfloat16_rn(v.z), p[3] = __float2bfloat16_rn(v.w);
    }
}

template <class Out, int kVec>
__global__ void __launch_bounds__(kNormThreads)
    rmsnorm_warp_kernel(int64_t T, int64_t D, const float* x, int64_t ldx, const float* __restrict__ w,
                        float eps, Out* out, int64_t ldo, bool vec_out) {
    grid_dependency_wait();  // PDL (pdl.cuh): x comes from earlier kernels
    const int64_t t = static_cast<int64_t>(blockIdx.x) * kNormRowsPerBlock + threadIdx.x / 32;
    if (t >= T) return;  // whole warps leave: the reduction below is per warp
    const int lane = threadIdx.x % 32, nv = static_cast<int>(D / 4);
    const float4* xr = reinterpret_cast<const float4*>(x + t * ldx);
    float4 v[kVec];
    float ss = 0.0f;
#pragma unroll
    for (int u = 0; u < kVec; ++u) {
        const int i = lane + 32 * u;
        v[u] = i < nv ? xr[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        ss += sumsq4(v[u]);  // past the row: + 0, which leaves ss as it is
    }
    const float inv = rsqrtf(warp_sum(ss) / static_cast<float>(D) + eps);
    const float4* w4 = reinterpret_cast<const float4*>(w);
    Out* o = out + t * ldo;
#pragma unroll
    for (int u = 0; u < kVec; ++u) {
        const int i = lane + 32 * u;
        if (i < nv) {
            const float4 g = w4[i];
            store4(
                o + 4 * i,
                make_float4(v[u].x * inv * g.x, v[u].y * inv * g.y, v[u].z * inv * g.z, v[u].w * inv * g.w),
                vec_out);
        }
    }
}

template <class Out, int kVec>
void launch_rmsnorm_warp(int64_t T, int64_t D, const float* x, int64_t ldx, const float* w, float eps,
                         Out* out, int64_t ldo, bool vec_out, cudaStream_t stream) {
    const unsigned blocks = static_cast<unsigned>((T + kNormRowsPerBlock - 1) / kNormRowsPerBlock);
    pdl_register(rmsnorm_warp_kernel<Out, kVec>);
    rmsnorm_warp_kernel<Out, kVec>
        <<<blocks, kNormThreads, 0, stream>>>(T, D, x, ldx, w, eps, out, ldo, vec_out);
}

// Launches the warp-per-row kernel when the shape allows it (see rmsnorm_warp_kernel); false: it does not.
template <class Out>
bool rmsnorm_rows_in_registers(int64_t T, int64_t D, const float* x, int64_t ldx, const float* w, float eps,
                               Out* out, int64_t ldo, cudaStream_t stream) {
    if (!detail::rmsnorm_takes_warp_rows(D, x, ldx, w)) return false;
    const bool vec_out = ldo % 4 == 0 && reinterpret_cast<uintptr_t>(out) % (4 * sizeof(Out)) == 0;
    const int64_t per_lane = (D / 4 + 31) / 32;  // float4 loads per lane
    if (per_lane <= 2)
        launch_rmsnorm_warp<Out, 2>(T, D, x, ldx, w, eps, out, ldo, vec_out, stream);
    else if (per_lane <= 4)
        launch_rmsnorm_warp<Out, 4>(T, D, x, ldx, w, eps, out, ldo, vec_out, stream);
    else if (per_lane <= 8)
        launch_rmsnorm_warp<Out, 8>(T, D, x, ldx, w, eps, out, ldo, vec_out, stream);
    else if (per_lane <= 16)
        launch_rmsnorm_warp<Out, 16>(T, D, x, ldx, w, eps, out, ldo, vec_out, stream);
    else
        launch_rmsnorm_warp<Out, 32>(T, D, x, ldx, w, eps, out, ldo, vec_out, stream);
    return true;
}

__device__ __forceinline__ float load(const float* p) {
    return *p;
}
__device__ __forceinline__ float load(const __nv_bfloat16* p) {
    return bf16_to_f32(p);
}

// grid (T, G): block (t, g) gates and normalises columns [g·E/G, (g+1)·E/G) of row t. In: float or bf16.
template <class In, class Out>
__global__ void __launch_bounds__(kNormThreads)
    gated_rmsnorm_kernel(int64_t group, const In* y, int64_t ldy, const In* __restrict__ z, int64_t ldz,
                         const float* __restrict__ w, float eps, Out* out, int64_t ldo) {
    grid_dependency_wait();  // PDL (pdl.cuh): y and z come from earlier kernels
    z = after_wait(z);       // coherent loads of z (device_math.cuh)
    const int64_t t = blockIdx.x, c0 = static_cast<int64_t>(blockIdx.y) * group;
    const In* yr = y + t * ldy + c0;
    Out* orow = out + t * ldo + c0;
    const In* zr = z + t * ldz + c0;
    float ss = 0.0f;
    for (int64_t e = threadIdx.x; e < group; e += kNormThreads) {
        const float g = load(yr + e) * silu(load(zr + e));
        ss += g * g;
    }
    const float inv = rsqrtf(block_sum(ss) / static_cast<float>(group) + eps);
    // out may alias y (float32 in place): each element is read before it is written, by the same thread.
    for (int64_t e = threadIdx.x; e < group; e += kNormThreads)
        store(orow + e, load(yr + e) * silu(load(zr + e)) * inv * w[c0 + e]);
}

// bf16 y and z, 8 columns per 16-byte load, kVec loads per thread kept in registers (group ≤ kVec·8·256):
// one read of each input instead of two. Same arithmetic per element as gated_rmsnorm_kernel.
template <int kVec>
__global__ void __launch_bounds__(kNormThreads)
    gated_rmsnorm_x8_kernel(int64_t group, const __nv_bfloat16* y, int64_t ldy, const __nv_bfloat16* z,
                            int64_t ldz, const float* __restrict__ w, float eps, __nv_bfloat16* out,
                            int64_t ldo) {
    const int64_t t = blockIdx.x, c0 = static_cast<int64_t>(blockIdx.y) * group;
    const uint4* yr = reinterpret_cast<const uint4*>(y + t * ldy + c0);
    const uint4* zr = reinterpret_cast<const uint4*>(z + t * ldz + c0);
    uint4* orow = reinterpret_cast<uint4*>(out + t * ldo + c0);
    const int nv = static_cast<int>(group / 8);
    const auto lo = [](unsigned u) { return __uint_as_float(u << 16); };
    const auto hi = [](unsigned u) { return __uint_as_float(u & 0xffff0000u); };
    float g[kVec][8];
    float ss = 0.0f;
#pragma unroll
    for (int u = 0; u < kVec; ++u) {
        const int i = threadIdx.x + u * kNormThreads;
        if (i >= nv) break;
        const uint4 a = yr[i], b = zr[i];
        const unsigned av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            g[u][2 * k] = lo(av[k]) * silu(lo(bv[k]));
            g[u][2 * k + 1] = hi(av[k]) * silu(hi(bv[k]));
            ss += g[u][2 * k] * g[u][2 * k] + g[u][2 * k + 1] * g[u][2 * k + 1];
        }
    }
    const float inv = rsqrtf(block_sum(ss) / static_cast<float>(group) + eps);
#pragma unroll
    for (int u = 0; u < kVec; ++u) {
        const int i = threadIdx.x + u * kNormThreads;
        if (i >= nv) break;
        const float* wr = w + c0 + 8 * i;
        unsigned o[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const __nv_bfloat16 a = f32_to_bf16_rn(g[u][2 * k] * inv * wr[2 * k]);
            const __nv_bfloat16 b = f32_to_bf16_rn(g[u][2 * k + 1] * inv * wr[2 * k + 1]);
            o[k] = static_cast<unsigned>(static_cast<__nv_bfloat16_raw>(a).x) |
                   (static_cast<unsigned>(static_cast<__nv_bfloat16_raw>(b).x) << 16);
        }
        orow[i] = make_uint4(o[0], o[1], o[2], o[3]);
    }
}

// The argument checks of both gated_rmsnorm_bf16 overloads; false: nothing to do (T or E is 0).
bool check_gated_bf16(int64_t T, int64_t E, int64_t G, const void* y, int64_t ldy, const void* z, int64_t ldz,
                      const float* w, const void* out, int64_t ldo) {
    MS_CHECK(T >= 0 && E >= 0 && G >= 1, "gated_rmsnorm_bf16: bad sizes");
    if (T == 0 || E == 0) return false;
    MS_CHECK(E % G == 0, "gated_rmsnorm_bf16: groups must divide E");
    MS_CHECK(y && z && w && out && ldy >= E && ldz >= E && ldo >= E,
             "gated_rmsnorm_bf16: bad pointers or strides");
    MS_CHECK(T <= 0x7fffffff && G <= 65535, "gated_rmsnorm_bf16: too many rows or groups");
    return true;
}

}  // namespace

bool detail::rmsnorm_takes_warp_rows(int64_t D, const float* x, int64_t ldx, const float* w) {
    const auto a16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    // MAMBASCOPE_RMSNORM=block: the block-per-row kernel for every shape (A/B runs). Read per call.
    if (env_choice("MAMBASCOPE_RMSNORM", {"", "block"},
                   "it selects the block-per-row RMSNorm for every shape (docs/cuda.md, \"Switches for A/B "
                   "runs\")") == "block")
        return false;
    return D % 4 == 0 && ldx % 4 == 0 && a16(x) && a16(w) && D <= 128 * 32;
}

void rmsnorm(int64_t T, int64_t D, const float* x, int64_t ldx, const float* w, float eps, float* out,
             int64_t ldo, cudaStream_t stream) {
    MS_CHECK(T >= 0 && D >= 0, "rmsnorm: negative size");
    if (T == 0 || D == 0) return;
    MS_CHECK(x && w && out && ldx >= D && ldo >= D, "rmsnorm: bad pointers or strides");
    MS_CHECK(T <= 0x7fffffff, "rmsnorm: too many rows");
    if (rmsnorm_rows_in_registers(T, D, x, ldx, w, eps, out, ldo, stream)) {
        CUDA_CHECK(cudaGetLastError());
        return;
    }
    pdl_register(rmsnorm_kernel<float>);
    rmsnorm_kernel<float><<<static_cast<unsigned>(T), kNormThreads, 0, stream>>>(D, x, ldx, w, eps, out, ldo);
    CUDA_CHECK(cudaGetLastError());
}

void rmsnorm_bf16(int64_t T, int64_t D, const float* x, int64_t ldx, const float* w, float eps,
                  __nv_bfloat16* out, int64_t ldo, cudaStream_t stream) {
    MS_CHECK(T >= 0 && D >= 0, "rmsnorm_bf16: negative size");
    if (T == 0 || D == 0) return;
    MS_CHECK(x && w && out && ldx >= D && ldo >= D, "rmsnorm_bf16: bad pointers or strides");
    MS_CHECK(T <= 0x7fffffff, "rmsnorm_bf16: too many rows");
    if (rmsnorm_rows_in_registers(T, D, x, ldx, w, eps, out, ldo, stream)) {
        CUDA_CHECK(cudaGetLastError());
        return;
    }
    pdl_register(rmsnorm_kernel<__nv_bfloat16>);
    rmsnorm_kernel<__nv_bfloat16>
        <<<static_cast<unsigned>(T), kNormThreads, 0, stream>>>(D, x, ldx, w, eps, out, ldo);
    CUDA_CHECK(cudaGetLastError());
}

void gated_rmsnorm(int64_t T, int64_t E, int64_t G, float* y, int64_t ldy, const float* z, int64_t ldz,
                   const float* w, float eps, cudaStream_t stream) {
    MS_CHECK(T >= 0 && E >= 0 && G >= 1, "gated_rmsnorm: bad sizes");
    if (T == 0 || E == 0) return;
    MS_CHECK(E % G == 0, "gated_rmsnorm: groups must divide E");
    MS_CHECK(y && z && w && ldy >= E && ldz >= E, "gated_rmsnorm: bad pointers or strides");
    MS_CHECK(T <= 0x7fffffff && G <= 65535, "gated_rmsnorm: too many rows or groups");
    pdl_register(gated_rmsnorm_kernel<float, float>);
    gated_rmsnorm_kernel<float, float>
        <<<dim3(static_cast<unsigned>(T), static_cast<unsigned>(G)), kNormThreads, 0, stream>>>(
            E / G, y, ldy, z, ldz, w, eps, y, ldy);
    CUDA_CHECK(cudaGetLastError());
}

void gated_rmsnorm_bf16(int64_t T, int64_t E, int64_t G, const float* y, int64_t ldy, const float* z,
                        int64_t ldz, const float* w, float eps, __nv_bfloat16* out, int64_t ldo,
                        cudaStream_t stream) {
    if (!check_gated_bf16(T, E, G, y, ldy, z, ldz, w, out, ldo)) return;
    pdl_register(gated_rmsnorm_kernel<float, __nv_bfloat16>);
    gated_rmsnorm_kernel<float, __nv_bfloat16>
        <<<dim3(static_cast<unsigned>(T), static_cast<unsigned>(G)), kNormThreads, 0, stream>>>(
            E / G, y, ldy, z, ldz, w, eps, out, ldo);
    CUDA_CHECK(cudaGetLastError());
}

void gated_rmsnorm_bf16(int64_t T, int64_t E, int64_t G, const __nv_bfloat16* y, int64_t ldy,
                        const __nv_bfloat16* z, int64_t ldz, const float* w, float eps, __nv_bfloat16* out,
                        int64_t ldo, cudaStream_t stream) {
    if (!check_gated_bf16(T, E, G, y, ldy, z, ldz, w, out, ldo)) return;
    const int64_t group = E / G;
    const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>(G));
    const auto rows16 = [](const void* p, int64_t ld) {
        return ld % 8 == 0 && reinterpret_cast<uintptr_t>(p) % 16 == 0;
    };
    const bool vec = group % 8 == 0 && rows16(y, ldy) && rows16(z, ldz) && rows16(out, ldo);
    const int64_t per_pass = int64_t{8} * kNormThreads;  // columns one load per thread covers
    if (vec && group <= per_pass)
        gated_rmsnorm_x8_kernel<1>
            <<<grid, kNormThreads, 0, stream>>>(group, y, ldy, z, ldz, w, eps, out, ldo);
    else if (vec && group <= 2 * per_pass)
        gated_rmsnorm_x8_kernel<2>
            <<<grid, kNormThreads, 0, stream>>>(group, y, ldy, z, ldz, w, eps, out, ldo);
    else if (vec && group <= 4 * per_pass)
        gated_rmsnorm_x8_kernel<4>
            <<<grid, kNormThreads, 0, stream>>>(group, y, ldy, z, ldz, w, eps, out, ldo);
    else
        gated_rmsnorm_kernel<__nv_bfloat16, __nv_bfloat16>
            <<<grid, kNormThreads, 0, stream>>>(group, y, ldy, z, ldz, w, eps, out, ldo);
    CUDA_CHECK(cudaGetLastError());
}

}  // namespace mambascope::kernels::cuda
