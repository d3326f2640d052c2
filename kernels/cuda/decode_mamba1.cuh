// decode_mamba1.cuh: one whole bf16 Mamba-1 decode step (the embedding, every layer, the head) as a single
// persistent kernel with grid-wide barriers between its phases.
//
// Design decision (docs/cuda.md, "The persistent decode kernel"): a step graph of one kernel per operation
// spends most of a step between kernels (mamba-130m: 122 kernels). Here one cooperative grid (every block
// resident) runs the step's phases in order: the embedding; per layer RMSNorm + in_proj with the conv folded
// in, x_proj, the scan step (dt_proj fused), out_proj + the residual; then the final norm + the head. Between
// phases a grid barrier. Each phase is the per-kernel path's arithmetic, from the same device functions
// (gemv_row.cuh, m1_step.cuh; the conv's T = 1 case of conv1d_silu), so the persistent step equals the step
// graph bit for bit. Weights are started into L2 one phase or more before they are read (prefetch_l2), so
// DRAM streams while the grid waits at barriers. Measured on the H200 it ties the PDL step graph at best, so
// the decoder runs it only on request (MAMBASCOPE_DECODE_PERSISTENT=1).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace mambascope::kernels::cuda {

// One layer's weights and state (device pointers). Layouts as the step graph's: in_proj (2E, D) rows x then
// z; conv weight (E, K); x_proj (R + 2N, E) rows dt_low, B, C; dt_proj weight (E, R); A (E, N) negative.
struct Mamba1DecodeLayer {
    const float* norm = nullptr;              // (D) RMSNorm weight
    const __nv_bfloat16* in_proj = nullptr;   // (2E, D)
    const float* conv_w = nullptr;            // (E, K)
    const float* conv_b = nullptr;            // (E) or null
    const __nv_bfloat16* x_proj = nullptr;    // (R + 2N, E)
    const float* dt_proj_w = nullptr;         // (E, R)
    const float* dt_proj_b = nullptr;         // (E) or null
    const float* A = nullptr;                 // (E, N)
    const float* Dskip = nullptr;             // (E) or null
    const __nv_bfloat16* out_proj = nullptr;  // (D, E)
    const float* thr = nullptr;               // (E) LongMamba's Δ thresholds, or null (no filter)
    float* h = nullptr;                       // (E, N) SSM state, in/out
    float* conv_state = nullptr;              // (K − 1, E) conv state, in/out
};

struct Mamba1DecodeArgs {
    int64_t D = 0, E = 0, R = 0, N = 16, K = 4;  // d_model, d_inner, dt_rank, d_state, d_conv
    int64_t n_layer = 0;
    int64_t V = 0;  // head rows
    float eps = 1e-5f;
    bool fast_exp = true;                       // the scan's exp on MUFU (as the step graph's)
    const Mamba1DecodeLayer* layers = nullptr;  // (n_layer) on the device
    const int32_t* id = nullptr;                // the token id (device)
    const float* embedding = nullptr;           // (vocab, D)
    const float* norm_f = nullptr;              // (D)
    const __nv_bfloat16* head = nullptr;        // (V, D)
    float* x = nullptr;                         // (D) residual stream
    __nv_bfloat16* proj16 = nullptr;            // (2E) in_proj's output
    __nv_bfloat16* conv16 = nullptr;            // (E) the conv's output
    __nv_bfloat16* dbc16 = nullptr;             // (R + 2N) x_proj's output
    __nv_bfloat16* y16 = nullptr;               // (E) the scan's output
    float* logits = nullptr;                    // (V)
    unsigned* barrier = nullptr;                // one counter; decode_mamba1_step zeroes it on the stream
    // optional (2 · decode_mamba1_phases): block 0's clock64() when each phase starts (after the barrier) and
    // when its work ends (before the next barrier); bench_cuda_decode's phase table
    long long* phase_clock = nullptr;
    // The ring kernel (MAMBASCOPE_DECODE_PERSISTENT=ring; decode_mamba1.cu): a producer warp per block
    // streams the block's weight rows into shared memory with bulk copies, ahead of the grid barriers.
    // ring_slots: 4 KB slots per consumer warp (0: as many as fit, at most 3; tests take fewer, so that the
    // producer waits for slots to be read). Same results bit for bit.
    bool ring = false;
    int ring_slots = 0;
};

// Empty when decode_mamba1_step handles these shapes and pointers, else why not (the caller then keeps the
// step graph): N = 16, K = 4, D and E multiples of 8 (16-byte loads), D ≤ 4096 with the norm weights on
// 16-byte boundaries (the RMSNorm order of rmsnorm_bf16's warp kernel), R + 2N a multiple of 8, the bf16
// buffers 16-byte aligned. `layers` is the host copy of args.layers.
std::string decode_mamba1_unsupported(const Mamba1DecodeArgs& args,
                                      const std::vector<Mamba1DecodeLayer>& layers);

// The grid the step takes on the current device: one block per SM (MAMBASCOPE_DECODE_BLOCKS_PER_SM=2: two,
// with a copy of the kernel compiled to fit two), capped by the occupancy so that every block is resident at
// once. The ring kernel (ring): one block per SM.
int decode_mamba1_blocks(bool ring = false);

// The phases of one step: the embedding, 4 per layer, the head.
int decode_mamba1_phases(int64_t n_layer);

// One step on `stream`: zeroes the barrier counter, then the cooperative kernel. blocks: 0 = the default
// grid (tests pass small grids, so that every warp loops over several rows and channels).
void decode_mamba1_step(const Mamba1DecodeArgs& args, cudaStream_t stream, int blocks = 0);

}  // namespace mambascope::kernels::cuda
