// greedy_run.cuh: the embedding of a greedy run on the device (docs/cuda.md, "Greedy runs on the device"), so
// that a run of greedy decode steps feeds each step's argmax to the next step without the host: no copy into
// or out of the step, no host round trip between steps.
//
// Design decision: the hand-off is the folded argmax's 64-bit key (argmax.cuh, gemv_rmsnorm_argmax), which
// the LM head of step t leaves in GreedyRun::key; step t + 1's first kernel, this one, decodes it, looks the
// id up and resets the key to 0 for its own head. The run's first id enters the same way: the host writes
// argmax_key(0, id), which decodes to id. One block, so that no block resets the key while another still
// reads it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mambascope::kernels::cuda {

// Device state of one greedy run (16 bytes; the host writes it once per run, reads it back at the end).
struct GreedyRun {
    unsigned long long key;  // the previous step's argmax key (argmax_key), or the run's first id's
    int32_t pos;             // steps of this run so far: the next step writes ids[pos]
    int32_t bad;             // 1 when a key did not decode to an id in [0, V) or the run outgrew ids
};

// A step's bookkeeping, by one thread once every thread of the step that reads run->key has read it:
// ids[run->pos] = id (−1 when !ok); run->pos += 1; run->key = 0 (for this step's head, whose atomicMax starts
// from 0). A bad id (ok false) or pos ≥ cap sets run->bad. embed_greedy_run's (a function of its own for any
// kernel that takes a run's id: the persistent kernels' greedy runs of e651edc did, docs/cuda.md).
__host__ __device__ inline void greedy_run_record(GreedyRun* run, int32_t* ids, int64_t cap, int32_t id,
                                                  bool ok) {
    const int32_t pos = run->pos;
    if (pos >= 0 && pos < cap) ids[pos] = ok ? id : -1;
    if (!ok || pos < 0 || pos >= cap) run->bad = 1;
    run->pos = pos + 1;
    run->key = 0;
}

// One step's embedding: id = argmax_key_index(run->key); out = table[id, :] (D floats); greedy_run_record.
// An id outside [0, V) (never the head's: its key is never 0) or pos ≥ cap sets run->bad, stores −1 (where it
// can) and leaves out alone. Not PDL-aware (greedy_run.cu says why): it starts once the kernel in front (the
// previous step's head, which writes the key) has completed. Device pointers; asynchronous on `stream`.
void embed_greedy_run(int64_t D, int64_t V, const float* table, GreedyRun* run, int32_t* ids, int64_t cap,
                      float* out, cudaStream_t stream);

}  // namespace mambascope::kernels::cuda
