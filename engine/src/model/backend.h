// backend.h: the engine's internal backend boundary. The CPU forward (forward.cpp) is always there; the CUDA
// forward (forward_cuda.cpp) exists when the build has CUDA. Both implement run_prefill's contract exactly
// (same hooks, same outputs), so callers choose a device and nothing else changes.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "mambascope/forward.h"

namespace mambascope::detail {

ForwardResult cpu_run_prefill(const Model& model, std::span<const int32_t> ids, ModelState& state,
                              const ForwardOptions& options, const HeadRequest& head);

// Empty when the CUDA forward supports this model and options; otherwise the reason it does not.
std::string cuda_unsupported_reason(const Model& model, const ForwardOptions& options);

ForwardResult cuda_run_prefill(const Model& model, std::span<const int32_t> ids, ModelState& state,
                               const ForwardOptions& options, const HeadRequest& head);

// Token-by-token decoding with the state held by the backend (Decoder in forward.h).
// How a GPU decoder runs its step (benchmarks and tests read it; zeros before the first step or on the CPU).
struct DecodeGraphInfo {
    bool graph = false;        // one CUDA graph per step (else one launch per kernel)
    int64_t kernel_nodes = 0;  // kernels in the step's graph
    int64_t programmatic_edges =
        0;  // kernel → kernel edges turned into PDL edges (docs/cuda.md, "Decoding on the GPU")
    std::string pdl_mode = "off";  // MAMBASCOPE_DECODE_PDL's mode: auto, launch, exit or off
    // of those, the edges on the "launch" port (the next kernel launches once every block has started)
    int64_t launch_port_edges = 0;
    // a bf16 Mamba-1 step graph runs the conv inside in_proj's gemv (docs/cuda.md, "The conv inside in_proj")
    bool conv_fused = false;
    // and x_proj too (docs/cuda.md, "x_proj inside in_proj")
    bool xproj_fused = false;
    // later weights prefetched into L2 by an earlier kernel of a bf16 Mamba-1 step (docs/cuda.md, "L2
    // ahead"): 0 none, 1 out_proj's from x_proj's kernel, 2 also the next layer's in_proj (or the LM head)
    // from out_proj's, 3 from a prefetch kernel per layer on a parallel branch of the graph ("The L2 branch")
    int l2_ahead = 0;
    // in_proj's z half on a parallel branch of a bf16 Mamba-1 step graph whose conv is its own kernel
    // (docs/cuda.md, "z on a branch"; MAMBASCOPE_DECODE_Z_BRANCH=1)
    bool z_branch = false;
    // the early launch (docs/cuda.md, "The early launch";
    // MAMBASCOPE_DECODE_EARLY_LAUNCH): every projection lets the kernel behind it launch once its blocks are
    // past their PDL wait, and grids of up to 2 blocks per SM give the "launch" port
    bool early_launch = false;
    // where the greedy graph takes its argmax (docs/cuda.md, "Greedy steps"): "head" (inside the LM head's
    // kernel), "kernel" (a kernel after it), or "" (no greedy graph built yet)
    std::string greedy_argmax;
    // a greedy run's steps per graph launch, fed on the device (docs/cuda.md, "Greedy runs on the device"),
    // or 0 when step_greedy_run loops over step_greedy (no run yet, the switch off, or a head without the
    // argmax)
    int64_t greedy_run_steps = 0;
    int64_t greedy_run_kernel_nodes = 0;        // kernels in that graph (all its steps)
    int64_t greedy_run_programmatic_edges = 0;  // its PDL edges (none between steps)
    // the whole step as one persistent kernel (docs/cuda.md, "The persistent decode kernel"): its grid, or
    // why the step graph of one kernel per operation runs instead
    bool persistent = false;
    int64_t persistent_blocks = 0;
    bool persistent_ring = false;  // the ring kernel (MAMBASCOPE_DECODE_PERSISTENT=ring)
    std::string persistent_note;
};

class DecoderBackend {
  public:
    virtual ~DecoderBackend() = default;
    virtual void step(int32_t id, std::vector<float>& logits) = 0;  // logits [V_rows] of the next token
    // Greedy: the argmax of the next token's logits over [0, n) (std::max_element's index), the logits left
    // on the device. The default steps and takes the argmax on the host.
    virtual int32_t step_greedy(int32_t id, int64_t n);
    // `count` greedy steps, each fed the previous one's id (Decoder::step_greedy_run). The default loops over
    // step_greedy.
    virtual std::vector<int32_t> step_greedy_run(int32_t id, int64_t n, int64_t count);
    virtual void download(ModelState& state) const = 0;  // host copy of the state
    virtual DecodeGraphInfo graph_info() const { return {}; }
};
// Whether a step graph of this shape and precision runs the conv inside in_proj's gemv (docs/cuda.md, "The
// conv inside in_proj"): bf16 Mamba-1 with d_inner up to the measured width, or as
// MAMBASCOPE_DECODE_CONV_FUSED forces (1 always where the layout allows, 0 never; any other value is an
// error). CUDA builds only.
bool decode_conv_fold(const ModelConfig& c, Precision precision, bool graph);
// Whether such a step graph takes the early launch (docs/cuda.md, "The early launch"):
// bf16 Mamba-1 whose in_proj weights are at most the measured size, or as MAMBASCOPE_DECODE_EARLY_LAUNCH
// forces (1 every bf16 Mamba-1 step graph, 0 never; any other value is an error). CUDA builds only.
bool decode_early_launch(const ModelConfig& c, Precision precision, bool graph);
// Whether such a step graph (conv_fold: the conv folds) computes x_proj inside in_proj's gemv too
// (docs/cuda.md, "x_proj inside in_proj"): opt-in, MAMBASCOPE_DECODE_XPROJ_FUSED=1, wherever the conv folds
// and x_proj's rows suit the kernel (unset or 0: never; any other value is an error). CUDA builds only.
bool decode_xproj_fold(const ModelConfig& c, bool conv_fold);
// The state is uploaded once; `model` must outlive the decoder.
std::unique_ptr<DecoderBackend> make_cuda_decoder(const Model& model, const ModelState& state,
                                                  Precision precision);
// The same with LongMamba's filter kept while decoding (method doc §9.1; null or empty: none): the thresholds
// are uploaded once and the step is the same graph, so a filtered step costs what an unfiltered one does.
std::unique_ptr<DecoderBackend> make_cuda_decoder(const Model& model, const ModelState& state,
                                                  Precision precision, const DeltaFilter* filter);

}  // namespace mambascope::detail
