// forward.h: running a model over tokens on the CPU (or another backend): chunked prefill with carried state,
// the decode step, streaming per-token NLL, logits for requested positions, and the hooks LongMamba and the
// probes use.
//
// Design decision: the prefill is token-major and chunked. A chunk of `chunk_tokens` tokens goes through all
// layers, the conv and SSM states are carried to the next chunk, so memory is O(chunk × width + state),
// independent of the input length, and results are identical to one pass. The scan sees Δ through two
// declarative hooks that every backend can honour: a per-layer, per-channel threshold filter (LongMamba,
// method doc §8.5) applied inside the scan, and an observer that receives each chunk's raw and used Δ
// (probes, calibration, windows). A third, optional hook (ActivationSink) hands over x, B, C, Δ, the SSM
// state and the residual stream on an asked window of positions (mambascope-cli forward --dump). Logits are
// never materialised for the whole input: the head runs per chunk and hands rows to a sink or reduces them to
// NLL.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "mambascope/model.h"
#include "mambascope/progress.h"

namespace mambascope {

// Tokens per prefill chunk: big enough for efficient GEMMs, small enough that per-chunk buffers of a 2.8b
// model (≈ 4·E floats per token) stay under ~200 MB.
constexpr int64_t kPrefillChunkTokens = 1024;
// Rows of logits computed at once by the head when reducing to NLL: V × this × 4 bytes (≈ 25 MB for V =
// 50280).
constexpr int64_t kHeadChunkTokens = 128;

// The recurrent state of every layer after some tokens.
struct LayerState {
    std::vector<float> conv;  // (K-1) × conv_dim, oldest row first
    std::vector<float> ssm;   // M1: E × N; M2: H × P × N
};
struct ModelState {
    std::vector<LayerState> layers;
    int64_t tokens_seen = 0;
};
ModelState make_state(const Model& model);

// One chunk's Δ for one layer, as the scan saw it. rows × channels, row stride `ld`; row r is original
// position positions[r] (positions are increasing; with DeciMamba some positions are absent).
struct DeltaBlock {
    int layer = 0;
    int64_t rows = 0;
    int64_t channels = 0;
    const float* data = nullptr;
    int64_t ld = 0;
    const int64_t* positions = nullptr;
    float at(int64_t r, int64_t c) const { return data[r * ld + c]; }
};

// Receives Δ per (chunk, layer), in order of positions within a layer. `raw` is softplus(...) (clamped for
// Mamba-2); `used` is what the scan used after filtering (equal to raw where nothing was filtered). Both
// views are valid only during the call.
// The scan's other inputs for one (chunk, layer), after DeciMamba's selection: x' (rows × E), B and C
// (rows × G·N each). Delivered only for layers where the observer asks (hidden attention needs them on a
// window).
struct ScanInputs {
    int layer = 0;
    int64_t rows = 0;
    const int64_t* positions = nullptr;  // original positions of the rows
    const float* x = nullptr;            // (rows, E), row stride ldx
    int64_t ldx = 0;
    const float* B = nullptr;  // (rows, G·N), row stride ldbc
    const float* C = nullptr;  // (rows, G·N), row stride ldbc
    int64_t ldbc = 0;
};

class ScanObserver {
  public:
    virtual ~ScanObserver() = default;
    virtual void on_delta(const DeltaBlock& raw, const DeltaBlock& used) = 0;
    // Return true for the layers whose ScanInputs you want (asked once per chunk and layer).
    virtual bool wants_scan_inputs(int layer) const { return false; }
    virtual void on_scan_inputs(const ScanInputs& inputs) {}
};

// Activation capture (TransformerLens-style hooks). A sink names the activations, layers and positions it
// wants; the forward hands it only those rows, one (chunk, layer, kind) block at a time, so a capture costs
// memory for one chunk's window and never T × channels × state. Null in ForwardOptions (the default) costs
// one pointer test per layer. Names follow HF's modules (mambascope-cli forward --dump, docs/cli.md):
//   X     backbone.layers.N.mixer.x      x' = silu(conv(.)), the scan's input      (rows, E)
//   B, C  backbone.layers.N.mixer.B / .C  the scan's input-dependent B and C       (rows, G·N)
//   Dt    backbone.layers.N.mixer.dt     Δ the scan used (after LongMamba's filter) (rows, C)
//   H     backbone.layers.N.mixer.h      SSM state after the token   M1 (rows, E·N), M2 (rows, H·P·N)
//   Resid backbone.layers.N              residual stream after layer N (its output) (rows, D)
enum class ActivationKind { X, B, C, Dt, H, Resid };
const char* activation_name(ActivationKind k);  // "x", "B", "C", "dt", "h", "resid"

// rows × width floats, row stride `ld`; row r is original position positions[r] (increasing).
struct ActivationBlock {
    ActivationKind kind = ActivationKind::X;
    int layer = 0;
    int64_t rows = 0;
    int64_t width = 0;
    const float* data = nullptr;
    int64_t ld = 0;
    const int64_t* positions = nullptr;
};

class ActivationSink {
  public:
    virtual ~ActivationSink() = default;
    virtual bool wants(ActivationKind kind, int layer) const = 0;
    // Positions [begin, end) (absolute, as in DeltaBlock::positions) whose rows are delivered.
    virtual int64_t begin() const = 0;
    virtual int64_t end() const = 0;
    // Valid only during the call. H arrives one row at a time (the scan is split at each asked position).
    virtual void on_activation(const ActivationBlock& block) = 0;
};

// LongMamba's filter (method doc §8.5): in layer l, channel c, Δ ← Δ if Δ > threshold[l][c] else 0.
// threshold = -inf leaves a channel untouched (local channels). An empty outer vector means "no filter".
struct DeltaFilter {
    std::vector<std::vector<float>> threshold;  // [n_layer][C]
    bool empty() const { return threshold.empty(); }
};

// Where the forward runs. Auto picks CUDA when this build has it and a GPU is usable, else the CPU.
enum class Device { Cpu, Cuda, Auto };
const char* device_name(Device d);          // "cpu" / "cuda" / "auto"
Device parse_device(const std::string& s);  // Error on anything else
// True when this build has the CUDA backend and a GPU answers; otherwise `why` says what is missing.
bool cuda_usable(std::string* why = nullptr);

// Precision of the projections on the GPU (the scans, norms and the LM head stay float32). CPU runs are
// float32.
//   Fp32: float32 cuBLAS. Tf32: TF32 tensor cores (inputs rounded to 10-bit mantissas). Bf16: bf16 weights
//   and activations with float32 accumulation.
enum class Precision { Fp32, Tf32, Bf16 };
const char* precision_name(Precision p);          // "fp32" / "tf32" / "bf16"
Precision parse_precision(const std::string& s);  // Error on anything else

// The residual stream entering one layer for every position of a prefill: x (T, D), row t = position
// state.tokens_seen + t. Methods that agree on the layers below `layer` share them through it (issue 16:
// DeciMamba after vanilla starts at its first decimating layer). Costs T·D·4 bytes (100k tokens × 768 =
// 307 MB), so the caller decides whether to keep one (run_analysis: kMaxSharedPrefixBytes).
// The rows are bit-identical to a recomputation only under the same chunk_tokens (the GEMMs' blocking, and so
// their rounding, depends on the rows per call): start_from checks it.
struct LayerInput {
    int layer = 0;
    int64_t tokens = 0;        // T: rows filled
    int64_t chunk_tokens = 0;  // the capturing run's ForwardOptions::chunk_tokens
    std::vector<float> x;      // (T, D)
};

struct ForwardOptions {
    Precision precision = Precision::Fp32;  // CUDA projections only
    Device device = Device::Cpu;  // Auto/Cuda fall back to the CPU with ForwardResult::note saying why
    const DeltaFilter* filter = nullptr;    // null: vanilla
    ScanObserver* observer = nullptr;       // null: no probes
    ActivationSink* activations = nullptr;  // null: no capture; set: the forward runs on the CPU
    // DeciMamba (method doc §4): for a layer l in this map, only the listed original positions (sorted) go
    // through the SSM of layer l and every later layer. Positions must be a subset of what reaches layer l.
    const std::map<int, std::vector<int64_t>>* keep_positions = nullptr;
    int stop_after_layer = -1;  // ≥ 0: run layers 0..stop_after_layer only, skip the head
    // Shared prefix (CPU only; a run asking for either runs on the CPU). capture_input: fill it with the
    // residual stream entering capture_input->layer (no position may be dropped below that layer).
    // start_from: skip the embedding and layers 0..start_from->layer − 1 and start from its rows, which must
    // come from a run over the same ids with the same computation and chunk_tokens below that layer; the
    // state of the skipped layers is left as it was, and no keep_positions entry may lie below that layer.
    LayerInput* capture_input = nullptr;
    const LayerInput* start_from = nullptr;
    int64_t chunk_tokens = kPrefillChunkTokens;
    ProgressFn progress;  // fraction of the tokens done; returning false cancels
};

// What the head should produce.
struct HeadRequest {
    // Per-token NLL (natural log) of ids[p+1] at every position p that has a next id and survives decimation.
    bool nll = false;
    // Logits rows: called with (position, logits[V_rows]) for the requested positions, in increasing order.
    std::function<void(int64_t position, const float* logits, int64_t vocab_rows)> logits_sink;
    bool all_logits = false;                // every position (streams T × V through the sink, never stored)
    std::vector<int64_t> logits_positions;  // otherwise: these positions (sorted)
};

struct ForwardResult {
    std::vector<int64_t> nll_positions;  // positions p with an NLL (target ids[p+1])
    std::vector<float> nll;              // natural-log NLL, aligned with nll_positions
    int64_t tokens = 0;
    double seconds = 0;
    std::string backend = "cpu";  // where it ran
    std::string note;             // why a requested GPU run fell back to the CPU (empty otherwise)
    double mean_nll() const;      // NaN when empty
};

// The SGEMM of the CPU forward: "openblas", "blis" or "eigen" (CMake MAMBASCOPE_BLAS), and its entry point
// C (M, N) = A (M, K) · Bᵀ + beta · C on row-major matrices, B (N, K) (bench times the projections with it).
const char* cpu_gemm_backend();
void cpu_sgemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                  float beta, float* C, int64_t ldc);

// OpenMP threads waiting at a barrier spin by default (libgomp: up to ≈ 300k pause loops per wait), which on
// a loaded or shared machine burns the cores the working threads need. libgomp reads OMP_WAIT_POLICY once,
// before main, so a program calls this first thing in main: when the user has not set OMP_WAIT_POLICY it
// sets it to passive and re-executes the program (/proc/self/exe) with the same arguments. Returns only when
// nothing was done (policy already set, or the re-exec failed: the run continues with the default policy).
void default_passive_omp_wait(char** argv);

// Checks ids (non-empty unless allowed, each in [0, vocab_rows)) and throws an Error naming the first bad
// one.
void check_ids(const Model& model, std::span<const int32_t> ids);

// Prefills `ids` (absolute positions state.tokens_seen + i), updating `state`.
ForwardResult run_prefill(const Model& model, std::span<const int32_t> ids, ModelState& state,
                          const ForwardOptions& options = {}, const HeadRequest& head = {});

// Convenience: fresh state, whole input.
ForwardResult run_forward(const Model& model, std::span<const int32_t> ids,
                          const ForwardOptions& options = {}, const HeadRequest& head = {});

// One decode step on the CPU (no filter, method doc §2.4): feeds `id`, writes logits [V_rows] for the next
// token.
void decode_step(const Model& model, int32_t id, ModelState& state, std::vector<float>& logits);

namespace detail {
class DecoderBackend;
}

// One decode step with LongMamba's filter kept (method doc §9.1): like decode_step, but Δ of global channels
// is filtered with `filter`'s thresholds, exactly as the filtered prefill does.
void decode_step_filtered(const Model& model, int32_t id, ModelState& state, const DeltaFilter& filter,
                          std::vector<float>& logits);

// Token-by-token decoding (generation) on a device. The state stays where the forward runs: on the GPU a
// step moves one id in and one logits row out (the CPU path is decode_step). Cuda/Auto fall back to the CPU
// with note() saying why. By default decode steps are not filtered (method doc §2.4, §8.5). With a non-empty
// `keep_filter` (method doc §9.1) every step applies it, so a filtered prefill followed by filtered steps
// equals one filtered prefill of the whole sequence (on the GPU the thresholds are captured in the step's
// graph once). `model` and `keep_filter` must outlive the decoder.
class Decoder {
  public:
    Decoder(const Model& model, const ModelState& state, Device device = Device::Cpu,
            Precision precision = Precision::Fp32, const DeltaFilter* keep_filter = nullptr);
    ~Decoder();
    Decoder(const Decoder&) = delete;
    Decoder& operator=(const Decoder&) = delete;
    void step(int32_t id, std::vector<float>& logits);  // logits [V_rows] of the token after `id`
    // Greedy decoding: the id of the largest logit in [0, n) of the token after `id` (the first among equal
    // maxima, as std::max_element; 1 ≤ n ≤ V_rows). On the GPU the argmax runs there and only the id comes
    // back (no logits row to the host: docs/cuda.md, "Greedy steps"); equal to argmax(step(id)).
    int32_t step_greedy(int32_t id, int64_t n);
    // A greedy run: `count` greedy steps, the first fed `id`, each later one fed the id the step before it
    // chose; returns those ids in order (count ≥ 0). Equal to `next = step_greedy(next, n)` called count
    // times. On the GPU the steps feed each other on the device (docs/cuda.md, "Greedy runs on the device"):
    // one copy in and one out per run, no host round trip between steps.
    std::vector<int32_t> step_greedy_run(int32_t id, int64_t n, int64_t count);
    ModelState state() const;                                // host copy of the current state
    const std::string& backend() const { return backend_; }  // "cpu" / "cuda"
    const std::string& note() const { return note_; }        // why a GPU request ran on the CPU
  private:
    const Model& model_;
    ModelState cpu_state_;  // used by the CPU path and by filtered steps
    const DeltaFilter* filter_ = nullptr;
    std::unique_ptr<detail::DecoderBackend> gpu_;
    std::string backend_ = "cpu", note_;
};

}  // namespace mambascope
