// m1_step.cuh: one Mamba-1 decode step of one channel (device code). Shared by the m1_step kernel
// (scan_mamba1.cu) and the persistent decode kernel (decode_mamba1.cu), so that both compute the same values
// bit for bit. Per channel d, with the token's x, z, the low-rank dt input `low` (R), B and C (16 each):
//
//   Δ  = softplus(Σ_r low[r]·W[d,r] + bias[d]),  Δ' = Δ > thr[d] ? Δ : 0        (method doc §1.2, §8.2)
//   h  ← 2^(Δ'·A[d,n]·log2 e)·h + Δ'·x·B[n]
//   y  = (Σ_n C[n]·h[n] + D[d]·x) · silu(z)
//
// in m1_scan's order (lowrank_dt's r ascending, used_delta, state groups of 4).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#ifndef MAMBASCOPE_EMU  // the CPU emulation (tests/cuda/emu) includes its own device_math first
#include "cuda/device_math.cuh"
#endif

namespace mambascope::kernels::cuda::detail {

constexpr int kStepN = 16;  // d_state of every Mamba-1 checkpoint

// One token's inputs. In = float or __nv_bfloat16 (x, z, low, B, C); the rest float32. Pointers are to the
// token's row: x[d], z[d] (z may be null: no gate), low[0, R), B[0, 16), C[0, 16).
template <typename In>
struct M1StepIn {
    const In* x = nullptr;
    const In* z = nullptr;
    const In* low = nullptr;
    const In* B = nullptr;
    const In* C = nullptr;
    const float* dt_w = nullptr;  // dt_proj weight (E, R)
    int64_t R = 0;
    const float* A = nullptr;     // (E, 16), negative
    const float* bias = nullptr;  // (E) or null
    int softplus = 1;
    const float* thr = nullptr;    // (E) or null (no filter)
    const float* Dskip = nullptr;  // (E) or null
    float* y = nullptr;            // y[d] (float32), or
    __nv_bfloat16* y16 = nullptr;  // y[d] (bf16)
    float* delta_out = nullptr;    // (E) or null: Δ'
};

__device__ __forceinline__ float step_in(const float* p) {
    return *p;
}
__device__ __forceinline__ float step_in(const __nv_bfloat16* p) {
    return bf16_to_f32(p);
}

// State group q (states 4q .. 4q + 3) of one token: e_n = 2^(Δ'·A2_n), h_n ← e_n·h_n + Δ'x·B_n; returns the
// four e_n (the probes' decays). The one state update every Mamba-1 kernel takes (m1_chunk_states, m1_scan,
// m1_step and the persistent decode kernel), so that their states agree bit for bit.
// kSoft (fast exp only): states n < kSoft take exp2_soft, the FMA-pipe 2^x, instead of the MUFU op, to spread
// a pass's exps over two pipes (measured slower on the H200: docs/cuda.md, "Soft exp"); q is a constant once
// unrolled.
template <bool kFastExp, int kSoft = 0>
__device__ __forceinline__ float4 m1_update_group(float (&h)[kStepN], const float (&A2)[kStepN], int q,
                                                  float dt, float dtx, float4 b) {
    const auto ex = [](int n, float x) {
        return (kFastExp && n < kSoft) ? exp2_soft(x) : exp2_scan<kFastExp>(x);
    };
    const float e0 = ex(4 * q + 0, dt * A2[4 * q + 0]);
    const float e1 = ex(4 * q + 1, dt * A2[4 * q + 1]);
    const float e2 = ex(4 * q + 2, dt * A2[4 * q + 2]);
    const float e3 = ex(4 * q + 3, dt * A2[4 * q + 3]);
    h[4 * q + 0] = e0 * h[4 * q + 0] + dtx * b.x;
    h[4 * q + 1] = e1 * h[4 * q + 1] + dtx * b.y;
    h[4 * q + 2] = e2 * h[4 * q + 2] + dtx * b.z;
    h[4 * q + 3] = e3 * h[4 * q + 3] + dtx * b.w;
    return make_float4(e0, e1, e2, e3);
}

// Channel d's vectors and carried state: A·log2 e (16), the dt bias, the filter's threshold, D and the state
// h (16, zero when h_state is null). None of them is written by an earlier kernel of a decode step (each
// layer's state is its step kernel's alone), so m1_step loads them before its PDL wait.
struct M1StepChannel {
    float A2[kStepN];
    float bias, thr, dskip;
    float h[kStepN];
};

template <typename In>
__device__ __forceinline__ void m1_step_load_vectors(const M1StepIn<In>& p, int64_t d, const float* h_state,
                                                     M1StepChannel& c) {
    c.bias = p.bias ? p.bias[d] : 0.0f;
    c.thr = p.thr ? p.thr[d] : -INFINITY;
    c.dskip = p.Dskip ? p.Dskip[d] : 0.0f;
    const float4* hs = h_state ? reinterpret_cast<const float4*>(h_state + d * kStepN) : nullptr;
#pragma unroll
    for (int q = 0; q < kStepN / 4; ++q) {
        const float4 v = hs ? hs[q] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        c.h[4 * q] = v.x, c.h[4 * q + 1] = v.y, c.h[4 * q + 2] = v.z, c.h[4 * q + 3] = v.w;
    }
}

__device__ __forceinline__ void m1_step_load_A(const float* a_row, M1StepChannel& c) {
#pragma unroll
    for (int n = 0; n < kStepN; ++n) c.A2[n] = a_row[n] * kLog2e;
}

// Δ's pre-activation Σ_r low[r]·w[r], r ascending (lowrank_dt's order), with w channel d's dt_proj row in
// memory (global or shared).
template <typename In>
__device__ __forceinline__ float m1_step_dt_raw(const In* low, const float* w, int64_t R) {
    float raw = 0.0f;
    if (R % 4 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0) {
#pragma unroll 4  // loads of several groups in flight (the sum's order is unchanged)
        for (int64_t r = 0; r < R; r += 4) {
            const float4 wv = *reinterpret_cast<const float4*>(w + r);
            raw = fmaf(step_in(low + r), wv.x, raw);
            raw = fmaf(step_in(low + r + 1), wv.y, raw);
            raw = fmaf(step_in(low + r + 2), wv.z, raw);
            raw = fmaf(step_in(low + r + 3), wv.w, raw);
        }
    } else {
        for (int64_t r = 0; r < R; ++r) raw = fmaf(step_in(low + r), w[r], raw);
    }
    return raw;
}

// The same sum with the row held in registers (R % 4 == 0, R ≤ 4·kQ): the same products in the same order.
template <int kQ, typename In>
__device__ __forceinline__ float m1_step_dt_raw(const In* low, const float4 (&wv)[kQ], int64_t R) {
    float raw = 0.0f;
#pragma unroll
    for (int q = 0; q < kQ; ++q) {
        if (4 * q >= R) break;
        raw = fmaf(step_in(low + 4 * q), wv[q].x, raw);
        raw = fmaf(step_in(low + 4 * q + 1), wv[q].y, raw);
        raw = fmaf(step_in(low + 4 * q + 2), wv[q].z, raw);
        raw = fmaf(step_in(low + 4 * q + 3), wv[q].w, raw);
    }
    return raw;
}

// The rest of channel d's step from its loaded vectors c and Δ's pre-activation raw: Δ', the state update,
// y, the stores (h_state written back unless null). B and C: the token's 16 values each, p.B and p.C or
// copies of them (m1_step stages them in shared memory as float32: the same values).
template <bool kFastExp, typename In, typename BC>
__device__ __forceinline__ void m1_step_finish(const M1StepIn<In>& p, int64_t d, float* h_state,
                                               M1StepChannel c, float raw, const BC* B, const BC* C) {
    const float xv = step_in(p.x + d);
    const float zv = p.z ? step_in(p.z + d) : 0.0f;
    bool kept;
    const float dt = used_delta(raw, c.bias, p.softplus, c.thr, true, kept);
    const float dtx = dt * xv;
    float y = c.dskip * xv;
#pragma unroll
    for (int q = 0; q < kStepN / 4; ++q) {
        const float b0 = step_in(B + 4 * q), b1 = step_in(B + 4 * q + 1), b2 = step_in(B + 4 * q + 2),
                    b3 = step_in(B + 4 * q + 3);
        const float c0 = step_in(C + 4 * q), c1 = step_in(C + 4 * q + 1), c2 = step_in(C + 4 * q + 2),
                    c3 = step_in(C + 4 * q + 3);
        m1_update_group<kFastExp>(c.h, c.A2, q, dt, dtx, make_float4(b0, b1, b2, b3));
        y += c0 * c.h[4 * q + 0];
        y += c1 * c.h[4 * q + 1];
        y += c2 * c.h[4 * q + 2];
        y += c3 * c.h[4 * q + 3];
    }
    if (p.z) y *= silu(zv);
    if (p.y16)
        p.y16[d] = f32_to_bf16_rn(y);
    else
        p.y[d] = y;
    if (p.delta_out) p.delta_out[d] = dt;
    if (!h_state) return;
    float4* hs = reinterpret_cast<float4*>(h_state + d * kStepN);
#pragma unroll
    for (int q = 0; q < kStepN / 4; ++q)
        hs[q] = make_float4(c.h[4 * q], c.h[4 * q + 1], c.h[4 * q + 2], c.h[4 * q + 3]);
}

// Channel d's step, its rows read from global memory (the persistent decode kernel; m1_step runs the same
// parts, some of them before its PDL wait and with the rows staged or held in registers); h_state (E, 16)
// in/out, or null (a zero state, not written back).
template <bool kFastExp, typename In>
__device__ __forceinline__ void m1_step_channel(const M1StepIn<In>& p, int64_t d, float* h_state) {
    M1StepChannel c;
    m1_step_load_vectors(p, d, h_state, c);
    m1_step_load_A(p.A + d * kStepN, c);
    m1_step_finish<kFastExp>(p, d, h_state, c, m1_step_dt_raw(p.low, p.dt_w + d * p.R, p.R), p.B, p.C);
}

}  // namespace mambascope::kernels::cuda::detail
