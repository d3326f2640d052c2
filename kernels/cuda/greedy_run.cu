// The embedding of a greedy run on the device; see greedy_run.cuh.
//
// Not PDL-aware, on purpose: the edge from the previous step's head into this kernel stays a full dependency,
// so each step of a run starts after the one before has completed, as between two graph launches. With a
// programmatic edge here, the kernels of step t + 1 could launch while step t still runs (a chain of early
// launches after small grids), and gemv_rmsnorm_conv and m1_step load their layer's carried state before
// their PDL wait (weights and state no earlier kernel of the same step writes): step t + 1 would read the
// state step t had yet to write. Found by CudaForward.GreedyRunOnTheDeviceEqualsStepGreedyFedBack on a tiny
// model, whose heads are small grids (MAMBASCOPE_DECODE_PDL=auto's "launch" edges).
#include "cuda/argmax.cuh"
#include "cuda/cuda_check.cuh"
#include "cuda/device_math.cuh"
#include "cuda/greedy_run.cuh"
#include "mambascope/error.h"

namespace mambascope::kernels::cuda {
namespace {

constexpr int kGreedyRunThreads = 256;  // one block: the row copy, D ≤ a few thousand floats

__global__ void __launch_bounds__(kGreedyRunThreads)
    embed_greedy_run_kernel(int64_t D, int64_t V, const float* table, GreedyRun* run, int32_t* ids,
                            int64_t cap, float* out) {
    const int32_t id = argmax_key_index(run->key);
    const bool ok = id >= 0 && id < V;
    __syncthreads();  // every thread has read the key before thread 0 resets it
    if (threadIdx.x == 0) greedy_run_record(run, ids, cap, id, ok);
    if (!ok) return;
    const float* src = table + static_cast<int64_t>(id) * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) out[d] = src[d];
}

}  // namespace

void embed_greedy_run(int64_t D, int64_t V, const float* table, GreedyRun* run, int32_t* ids, int64_t cap,
                      float* out, cudaStream_t stream) {
    MS_CHECK(D >= 1 && V >= 1 && V <= INT32_MAX && cap >= 1 && cap <= INT32_MAX,
             "embed_greedy_run: bad sizes");
    embed_greedy_run_kernel<<<1, kGreedyRunThreads, 0, stream>>>(D, V, table, run, ids, cap, out);
    CUDA_CHECK(cudaGetLastError());
}

}  // namespace mambascope::kernels::cuda
