// CUDA forward: the same chunked prefill as forward.cpp, with every op on the GPU (cuBLAS projections, fused
// conv, fused softplus + filter + probes scans, gated norm, streaming NLL). See backend.h for the contract.
//
// Per chunk of R rows and per layer (method doc §1.1–§1.3), all on `stream`:
//   u = rmsnorm(x)                      (R, D)
//   proj = u·in_projᵀ                   (R, P)                 cuBLAS
//   conv = silu(conv1d(proj[:, cols]))  (R, conv_dim)          conv state on the device
//   M1: dbc = conv·x_projᵀ (R, R_dt+2N); dt = dbc[:, :R_dt]·dt_projᵀ (R, E); y = scan(softplus(dt + b_dt), z
//   gate) M2: y = gated_rmsnorm(scan(softplus(dt + dt_bias)), z) x = y·out_projᵀ + x                 (R, D)
//   cuBLAS with β = 1
// Observers get host copies of Δ (and x', B, C where asked); the filter is applied inside the scan kernels.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "cpu/activations.h"
#include "mambascope/env_switch.h"
#include "mambascope/error.h"
#include "model/backend.h"

#ifdef MAMBASCOPE_HAVE_CUDA
#include <cuda_runtime.h>

#include "cuda/argmax.cuh"
#include "cuda/conv1d_silu.cuh"
#include "cuda/cuda_check.cuh"
#include "cuda/decode_mamba1.cuh"
#include "cuda/forward_ops.cuh"
#include "cuda/gemm.cuh"
#include "cuda/gemv.cuh"
#include "cuda/greedy_run.cuh"
#include "cuda/l2_prefetch.cuh"
#include "cuda/pdl.cuh"
#include "cuda/rmsnorm.cuh"
#include "cuda/scan_mamba1.cuh"
#include "cuda/scan_mamba1_tp.cuh"
#include "cuda/scan_mamba2.cuh"
#include "cuda/scan_mamba2_ssd.cuh"
#endif

namespace mambascope {

#ifndef MAMBASCOPE_HAVE_CUDA

bool cuda_usable(std::string* why) {
    if (why) *why = "this build has no CUDA backend (configure with nvcc available)";
    return false;
}
namespace detail {
std::string cuda_unsupported_reason(const Model&, const ForwardOptions&) {
    return "no CUDA backend";
}
ForwardResult cuda_run_prefill(const Model&, std::span<const int32_t>, ModelState&, const ForwardOptions&,
                               const HeadRequest&) {
    throw Error("this build has no CUDA backend");
}
std::unique_ptr<DecoderBackend> make_cuda_decoder(const Model&, const ModelState&, Precision) {
    throw Error("this build has no CUDA backend");
}
std::unique_ptr<DecoderBackend> make_cuda_decoder(const Model&, const ModelState&, Precision,
                                                  const DeltaFilter*) {
    throw Error("this build has no CUDA backend");
}
}  // namespace detail

#else

namespace kc = kernels::cuda;

bool cuda_usable(std::string* why) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        if (why)
            *why = e != cudaSuccess ? std::string("no usable GPU (") + cudaGetErrorString(e) + ")" : "no GPU";
        cudaGetLastError();  // clear the sticky error of a failed query
        return false;
    }
    return true;
}

namespace detail {
namespace {

// The Mamba-1 scan's exp on the MUFU unit everywhere: measured on the H200 against a float64 recurrence over
// 4000 tokens with ~3000-token memories, normalised max error 3.7e-7 (vs 1.4e-7 with the polynomial), and
// 1.3–1.4× faster (docs/benchmarks.md). Rounding-level either way, so the forward takes the faster one.
constexpr bool kScanFastExp = true;

// bf16 Mamba-1 layers keep their activations in bf16 from in_proj to out_proj (in_proj, x_proj and dt_proj
// write bf16; the conv and the scan read it), instead of float32 projections read back by the conv and the
// scan. Only without observers or DeciMamba gathers (those read float32 activations on the host);
// MAMBASCOPE_M1_BF16_SCAN=0 turns it off (A/B runs of bench_cuda_forward).
bool m1_bf16_chain_enabled() {
    static const bool on = env_flag("MAMBASCOPE_M1_BF16_SCAN", true,
                                    "it sets whether bf16 Mamba-1 prefill keeps its activations in bf16 "
                                    "around the scan (docs/cuda.md, \"Switches for A/B runs\")");
    return on;
}

// bf16 Mamba-2 prefill runs the chunked SSD scan on tensor cores (kernels/cuda/scan_mamba2_ssd.cuh, method
// doc §9.2): bf16 matrix operands, fp32 accumulation, within the bf16 bound of the exact recurrence (the CUDA
// tests state it). From kSsdMinTokens tokens on (below, a chunk of 64 is mostly padding and the recurrent
// scan is as fast); fp32/tf32 runs and decode steps keep the recurrent scan. MAMBASCOPE_M2_SSD=0 turns it
// off (A/B runs of bench_cuda_forward).
constexpr int64_t kSsdMinTokens = 128;
bool m2_ssd_enabled() {
    // read per call: tests switch it within one process
    return env_flag("MAMBASCOPE_M2_SSD", true,
                    "it sets whether bf16 Mamba-2 prefill takes the chunked SSD scan (docs/cuda.md, \"The "
                    "Mamba-2 chunked SSD scan\")");
}

// bf16 Mamba-2 prefill chunks that take the SSD scan keep their activations in bf16 from in_proj to out_proj
// (in_proj writes bf16 z | xBC | dt; the conv reads and writes bf16; the SSD scan reads bf16 x, B, C, dt and
// writes bf16 y; the gated norm reads bf16 y and z), as mamba_ssm does: half the activation bytes of the
// float32 chain around the scan. Only without observers or DeciMamba gathers (those read float32 activations
// on the host); MAMBASCOPE_M2_BF16_CHAIN=0 turns it off (A/B runs and the tests, read per call).
bool m2_bf16_chain_enabled() {
    return env_flag("MAMBASCOPE_M2_BF16_CHAIN", true,
                    "it sets whether bf16 Mamba-2 prefill keeps its activations in bf16 (docs/cuda.md, \"The "
                    "Mamba-2 chunked SSD scan\")");
}

// A device buffer of floats (or other PODs), freed on destruction.
template <class T>
struct DevBuf {
    T* ptr = nullptr;
    size_t count = 0;
    DevBuf() = default;
    explicit DevBuf(size_t n) { resize(n); }
    DevBuf(const DevBuf&) = delete;
    DevBuf& operator=(const DevBuf&) = delete;
    ~DevBuf() {
        if (ptr) cudaFree(ptr);
    }
    void resize(size_t n) {
        if (n <= count) return;
        if (ptr) cudaFree(ptr);
        ptr = nullptr;
        CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(T)));
        count = n;
    }
    void upload(const T* host, size_t n) {
        resize(n);
        CUDA_CHECK(cudaMemcpy(ptr, host, n * sizeof(T), cudaMemcpyHostToDevice));
    }
};

struct DevTensor {
    std::shared_ptr<DevBuf<float> > buf;
    const float* ptr() const { return buf ? buf->ptr : nullptr; }
};

DevTensor upload(const Tensor& t) {
    DevTensor d;
    if (!t.data) return d;
    d.buf = std::make_shared<DevBuf<float> >();
    d.buf->upload(t.data, static_cast<size_t>(t.numel()));
    return d;
}

struct DevLayer {
    DevTensor norm, in_proj, conv_w, conv_b, out_proj, A, Dskip, x_proj, dt_proj_w, dt_proj_b, dt_bias,
        gate_norm;
    // bf16 copies of the projection weights, made on the first bf16 run
    std::shared_ptr<DevBuf<__nv_bfloat16> > in_proj16, out_proj16, x_proj16, dt_proj16;
    // x_proj transposed (E × R_dt + 2N), bf16: a decode step's in_proj with x_proj folded in (made by the
    // first decoder that folds it)
    std::shared_ptr<DevBuf<__nv_bfloat16> > x_proj16T;
};

std::shared_ptr<DevBuf<__nv_bfloat16> > to_bf16_copy(const DevTensor& t, int64_t n, cudaStream_t s) {
    if (!t.ptr()) return nullptr;
    auto b = std::make_shared<DevBuf<__nv_bfloat16> >(size_t(n));
    kc::to_bf16(1, n, t.ptr(), n, b->ptr, n, s);
    return b;
}

// Per-chunk device buffers; grown on demand and reused across calls (a decoder keeps one; prefills take one
// from their model's pool, so that a call does not pay ≈ 15 cudaMalloc/cudaFree, each a device sync).
struct Workspace {
    DevBuf<int32_t> ids, targets;
    DevBuf<float> x, u, proj, conv, dbc, dt, y, delta_used, logits, xn, nll;
    DevBuf<float> g_proj, g_conv, g_dbc, g_dt, g_x;
    DevBuf<int64_t> rows;
    DevBuf<__nv_bfloat16> a16;  // bf16 copy of a projection's input
    // bf16 activations written directly by the norm, conv and scan kernels (bf16 projections only)
    DevBuf<__nv_bfloat16> u16, conv16, y16;
    // the bf16 Mamba-1 chain: in_proj (R, P), x_proj (R, R_dt + 2N) and dt_proj (R, E) outputs in bf16
    // (the bf16 Mamba-2 chain uses proj16 too)
    DevBuf<__nv_bfloat16> proj16, dbc16, dt16;
    DevBuf<__nv_bfloat16> ys16;  // the bf16 Mamba-2 chain: the SSD scan's y (R, E), the gated norm's input
    // a decode step's x_proj folded into in_proj (gemv_rmsnorm_conv_xproj): the blocks' and groups' partial
    // sums and the tickets (zeroed once; each call leaves them at 0)
    DevBuf<float> xparts;
    DevBuf<unsigned> xcount;
    DevBuf<char>
        scan_ws;  // the scans' chunk states (Mamba-1; Mamba-2 SSD), instead of an allocation per layer
};

struct DevModel {
    DevTensor embedding, norm_f, lm_head;
    std::vector<DevLayer> layers;
    std::unique_ptr<kc::CublasHandle> cublas;
    cudaStream_t stream = nullptr;
    std::mutex pool_mutex;
    std::vector<std::unique_ptr<Workspace> > pool;  // idle prefill workspaces, freed with the model's weights
    ~DevModel() {
        if (stream) cudaStreamDestroy(stream);
    }
};

std::mutex g_upload_mutex;

DevModel& device_model(const Model& m) {
    std::lock_guard<std::mutex> lock(g_upload_mutex);
    if (!m.device_weights) {
        auto d = std::make_shared<DevModel>();
        d->embedding = upload(m.embedding);
        d->norm_f = upload(m.norm_f);
        d->lm_head = m.lm_head.data == m.embedding.data ? d->embedding : upload(m.lm_head);
        for (const auto& l : m.layers) {
            DevLayer dl;
            dl.norm = upload(l.norm);
            dl.in_proj = upload(l.in_proj);
            dl.conv_w = upload(l.conv_w);
            dl.conv_b = upload(l.conv_b);
            dl.out_proj = upload(l.out_proj);
            dl.A = upload(l.A);
            dl.Dskip = upload(l.Dskip);
            dl.x_proj = upload(l.x_proj);
            dl.dt_proj_w = upload(l.dt_proj_w);
            dl.dt_proj_b = upload(l.dt_proj_b);
            dl.dt_bias = upload(l.dt_bias);
            dl.gate_norm = upload(l.gate_norm);
            d->layers.push_back(std::move(dl));
        }
        d->cublas = std::make_unique<kc::CublasHandle>();
        CUDA_CHECK(cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking));
        m.device_weights = d;
    }
    return *static_cast<DevModel*>(m.device_weights.get());
}

// Host copy of a (rows × cols) block with row stride ld.
std::vector<float> to_host(const float* dev, int64_t rows, int64_t cols, int64_t ld, cudaStream_t s) {
    std::vector<float> h(static_cast<size_t>(rows * cols));
    if (rows > 0 && cols > 0)
        CUDA_CHECK(cudaMemcpy2DAsync(h.data(), cols * sizeof(float), dev, ld * sizeof(float),
                                     cols * sizeof(float), rows, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    return h;
}

// The recurrent state of every layer on the device (ModelState's layout).
struct DevState {
    std::vector<DevBuf<float> > conv, ssm;
    int64_t tokens_seen = 0;
    explicit DevState(const ModelState& h) : conv(h.layers.size()), ssm(h.layers.size()) {
        for (size_t l = 0; l < h.layers.size(); ++l) {
            conv[l].upload(h.layers[l].conv.data(), h.layers[l].conv.size());
            ssm[l].upload(h.layers[l].ssm.data(), h.layers[l].ssm.size());
        }
        tokens_seen = h.tokens_seen;
    }
    void download(ModelState& h) const {
        for (size_t l = 0; l < h.layers.size(); ++l) {
            CUDA_CHECK(cudaMemcpy(h.layers[l].conv.data(), conv[l].ptr,
                                  h.layers[l].conv.size() * sizeof(float), cudaMemcpyDeviceToHost));
            CUDA_CHECK(cudaMemcpy(h.layers[l].ssm.data(), ssm[l].ptr, h.layers[l].ssm.size() * sizeof(float),
                                  cudaMemcpyDeviceToHost));
        }
        h.tokens_seen = tokens_seen;
    }
};

void ensure_bf16_weights(const Model& model, DevModel& dm) {
    std::lock_guard<std::mutex> lock(g_upload_mutex);
    for (size_t l = 0; l < dm.layers.size(); ++l) {
        DevLayer& dl = dm.layers[l];
        const LayerWeights& w = model.layers[l];
        if (!dl.in_proj16) {
            dl.in_proj16 = to_bf16_copy(dl.in_proj, w.in_proj.numel(), dm.stream);
            dl.out_proj16 = to_bf16_copy(dl.out_proj, w.out_proj.numel(), dm.stream);
            dl.x_proj16 = to_bf16_copy(dl.x_proj, w.x_proj.numel(), dm.stream);
            dl.dt_proj16 = to_bf16_copy(dl.dt_proj_w, w.dt_proj_w.numel(), dm.stream);
        }
    }
}

// x_proj16T for every layer (Mamba-1): x_proj (R × E, float32 on the host) transposed, then rounded to bf16
// on the device as the other bf16 copies are.
void ensure_x_proj_transposed(const Model& model, DevModel& dm) {
    std::lock_guard<std::mutex> lock(g_upload_mutex);
    for (size_t l = 0; l < dm.layers.size(); ++l) {
        DevLayer& dl = dm.layers[l];
        const Tensor& xp = model.layers[l].x_proj;
        if (dl.x_proj16T || !xp.data) continue;
        const int64_t R = model.config.dt_rank + 2 * model.config.d_state, E = model.config.d_inner;
        MS_CHECK(xp.numel() == R * E, "x_proj has the wrong shape for its transposed copy");
        std::vector<float> t(static_cast<size_t>(R * E));
        for (int64_t j = 0; j < R; ++j)
            for (int64_t d = 0; d < E; ++d) t[size_t(d * R + j)] = xp.data[j * E + d];
        DevTensor tmp;
        tmp.buf = std::make_shared<DevBuf<float> >();
        tmp.buf->upload(t.data(), t.size());
        dl.x_proj16T = to_bf16_copy(tmp, R * E, dm.stream);
        CUDA_CHECK(cudaStreamSynchronize(dm.stream));  // before tmp is freed
    }
}

ForwardResult prefill_on_device(const Model& model, std::span<const int32_t> ids, DevState& state,
                                const ForwardOptions& opt, const HeadRequest& head, Workspace& ws);

}  // namespace

std::string cuda_unsupported_reason(const Model& m, const ForwardOptions&) {
    const ModelConfig& c = m.config;
    if (c.arch == Arch::Mamba1 && c.d_state != 16)
        return "the CUDA Mamba-1 scan is built for d_state 16 only";
    if (c.arch == Arch::Mamba2 &&
        !(c.d_state == 16 || c.d_state == 32 || c.d_state == 64 || c.d_state == 128))
        return "the CUDA Mamba-2 scan supports d_state 16/32/64/128";
    if (c.arch == Arch::Mamba2 && c.head_dim > 128) return "the CUDA Mamba-2 scan supports head_dim ≤ 128";
    if (c.arch == Arch::Mamba2 && (c.dt_limit_min > 0.0 || std::isfinite(c.dt_limit_max)))
        return "a Δ limit (time_step_limit) other than (0, inf) is not implemented on CUDA";
    if (c.d_conv > 8) return "d_conv > 8";
    for (const auto& l : m.layers)
        if (l.in_proj_b.data || l.out_proj_b.data)
            return "in_proj/out_proj biases are not implemented on CUDA";
    return {};
}

ForwardResult cuda_run_prefill(const Model& model, std::span<const int32_t> ids, ModelState& state,
                               const ForwardOptions& opt, const HeadRequest& head) {
    check_ids(model, ids);
    MS_CHECK(static_cast<int64_t>(state.layers.size()) == model.config.n_layer,
             "state does not belong to this model");
    // Device state, uploaded from the host state and written back at the end.
    DevState ds(state);
    DevModel& dm = device_model(model);
    std::unique_ptr<Workspace> ws;
    {
        std::lock_guard<std::mutex> lock(dm.pool_mutex);
        if (!dm.pool.empty()) ws = std::move(dm.pool.back()), dm.pool.pop_back();
    }
    if (!ws) ws = std::make_unique<Workspace>();
    ForwardResult res = prefill_on_device(model, ids, ds, opt, head, *ws);
    {
        std::lock_guard<std::mutex> lock(dm.pool_mutex);
        dm.pool.push_back(std::move(ws));
    }
    ds.download(state);
    return res;
}

namespace {

ForwardResult prefill_on_device(const Model& model, std::span<const int32_t> ids, DevState& state,
                                const ForwardOptions& opt, const HeadRequest& head, Workspace& ws) {
    const ModelConfig& c = model.config;
    const auto t_start = std::chrono::steady_clock::now();
    DevModel& dm = device_model(model);
    cudaStream_t s = dm.stream;
    cublasHandle_t cb = dm.cublas->get();
    const bool bf16 = opt.precision == Precision::Bf16, tf32 = opt.precision == Precision::Tf32;
    if (bf16) ensure_bf16_weights(model, dm);
    DevBuf<__nv_bfloat16>& a16 = ws.a16;
    // C (M×N) = A16 (M×K, lda, bf16) · W16ᵀ + beta·C: for inputs a kernel already wrote in bf16.
    auto project16 = [&](int64_t M, int64_t N, int64_t K, const __nv_bfloat16* A, int64_t lda,
                         const std::shared_ptr<DevBuf<__nv_bfloat16> >& W16, float* C, int64_t ldc,
                         float beta) {
        kc::gemm_rowmajor_bf16(cb, s, M, N, K, A, lda, W16->ptr, K, C, ldc, beta);
    };
    // C (M×N) = A (M×K, lda) · Wᵀ + beta·C in the requested precision.
    auto project = [&](int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const DevTensor& W,
                       const std::shared_ptr<DevBuf<__nv_bfloat16> >& W16, float* C, int64_t ldc,
                       float beta) {
        if (bf16) {
            a16.resize(size_t(M * K));
            kc::to_bf16(M, K, A, lda, a16.ptr, K, s);
            kc::gemm_rowmajor_bf16(cb, s, M, N, K, a16.ptr, K, W16->ptr, K, C, ldc, beta);
        } else {
            kc::gemm_rowmajor(cb, s, M, N, K, A, lda, W.ptr(), K, C, ldc, tf32, beta);
        }
    };
    const int64_t T = static_cast<int64_t>(ids.size()), D = c.d_model, E = c.d_inner, N = c.d_state,
                  K = c.d_conv;
    const int64_t C = c.channels(), P = c.in_proj_rows(), CD = c.conv_dim(), V = model.vocab_rows();
    const int64_t GN = c.n_groups * N, Rdt = c.dt_rank, ldbc = c.arch == Arch::Mamba1 ? Rdt + 2 * N : CD;
    const int64_t chunk = opt.chunk_tokens;
    const int last_layer = opt.stop_after_layer >= 0 ? std::min<int>(opt.stop_after_layer, int(c.n_layer) - 1)
                                                     : int(c.n_layer) - 1;
    const float eps = static_cast<float>(c.norm_eps);

    std::vector<DevBuf<float> >& conv_state = state.conv;
    std::vector<DevBuf<float> >& ssm_state = state.ssm;
    // Filter thresholds on the device.
    std::vector<DevBuf<float> > thr(static_cast<size_t>(c.n_layer));
    const bool filtered = opt.filter && !opt.filter->empty();
    if (filtered) {
        MS_CHECK(static_cast<int64_t>(opt.filter->threshold.size()) == c.n_layer,
                 "filter has the wrong layer count");
        for (int64_t l = 0; l < c.n_layer; ++l) {
            MS_CHECK(static_cast<int64_t>(opt.filter->threshold[size_t(l)].size()) == C,
                     "filter has the wrong channel count");
            thr[size_t(l)].upload(opt.filter->threshold[size_t(l)].data(), size_t(C));
        }
    }
    // Chunk buffers (no larger than this call needs: a decode step is one row).
    const int64_t rows_max = std::min<int64_t>(chunk, std::max<int64_t>(1, int64_t(ids.size())));
    const int64_t head_max = std::min<int64_t>(kHeadChunkTokens, rows_max);
    auto& d_ids = ws.ids;
    auto &x = ws.x, &u = ws.u, &proj = ws.proj, &conv = ws.conv, &dbc = ws.dbc, &dt = ws.dt, &y = ws.y,
         &delta_used = ws.delta_used, &logits = ws.logits, &xn = ws.xn, &nll = ws.nll;
    auto &g_proj = ws.g_proj, &g_conv = ws.g_conv, &g_dbc = ws.g_dbc, &g_dt = ws.g_dt, &g_x = ws.g_x;
    auto& d_rows = ws.rows;
    auto& d_targets = ws.targets;
    d_ids.resize(size_t(rows_max));
    x.resize(size_t(rows_max * D));
    u.resize(size_t(rows_max * D));
    proj.resize(size_t(rows_max * P));
    conv.resize(size_t(rows_max * CD));
    dbc.resize(size_t(rows_max * ldbc));
    dt.resize(size_t(rows_max * E));
    y.resize(size_t(rows_max * E));
    delta_used.resize(size_t(rows_max * C));
    logits.resize(size_t(head_max * V));
    xn.resize(size_t(head_max * D));
    nll.resize(size_t(head_max));
    d_targets.resize(size_t(head_max));
    if (bf16) {
        ws.u16.resize(size_t(rows_max * D));
        ws.conv16.resize(size_t(rows_max * CD));
        ws.y16.resize(size_t(rows_max * E));
    }
    // bf16 end to end through the Mamba-1 mixer (see m1_bf16_chain_enabled).
    const bool m1_chain =
        bf16 && c.arch == Arch::Mamba1 && !opt.observer && !opt.keep_positions && m1_bf16_chain_enabled();
    if (m1_chain) {
        ws.proj16.resize(size_t(rows_max * P));
        ws.dbc16.resize(size_t(rows_max * ldbc));
        ws.dt16.resize(size_t(rows_max * E));
    }
    // bf16 end to end through the Mamba-2 mixer, for the prefill chunks that take the SSD scan (see
    // m2_bf16_chain_enabled); shorter chunks take the float32 activations below.
    const bool m2_chain = bf16 && c.arch == Arch::Mamba2 && !opt.observer && !opt.keep_positions &&
                          rows_max >= kSsdMinTokens && m2_ssd_enabled() && m2_bf16_chain_enabled() &&
                          kc::scan_mamba2_ssd_supports(c.head_dim, N);
    if (m2_chain) {
        ws.proj16.resize(size_t(rows_max * P));
        ws.ys16.resize(size_t(rows_max * E));
    }

    ForwardResult res;
    res.tokens = T;
    res.backend = "cuda";
    const int64_t pos_base = state.tokens_seen;
    std::vector<int64_t> positions;
    report_progress(opt.progress, 0.0, "prefill");
    for (int64_t t0 = 0; t0 < T; t0 += chunk) {
        int64_t R = std::min(chunk, T - t0);
        positions.resize(size_t(R));
        for (int64_t r = 0; r < R; ++r) positions[size_t(r)] = pos_base + t0 + r;
        CUDA_CHECK(cudaMemcpyAsync(d_ids.ptr, ids.data() + t0, size_t(R) * sizeof(int32_t),
                                   cudaMemcpyHostToDevice, s));
        kc::embed_rows(R, D, d_ids.ptr, dm.embedding.ptr(), x.ptr, s);
        for (int li = 0; li <= last_layer && R > 0; ++li) {
            const DevLayer& w = dm.layers[size_t(li)];
            if (m1_chain) {
                // u = rmsnorm(x) → proj = u·in_projᵀ → conv = silu(conv1d(proj[:, :E])) → dbc = conv·x_projᵀ
                // → dt = dbc[:, :R_dt]·dt_projᵀ → y = scan(...) → x += y·out_projᵀ; bf16 activations
                // throughout.
                kc::rmsnorm_bf16(R, D, x.ptr, D, w.norm.ptr(), eps, ws.u16.ptr, D, s);
                kc::gemm_rowmajor_bf16_out(cb, s, R, P, D, ws.u16.ptr, D, w.in_proj16->ptr, D, ws.proj16.ptr,
                                           P);
                kc::conv1d_silu(R, CD, K, ws.proj16.ptr, P, w.conv_w.ptr(), w.conv_b.ptr(),
                                conv_state[size_t(li)].ptr, nullptr, 0, s, ws.conv16.ptr, CD);
                kc::gemm_rowmajor_bf16_out(cb, s, R, ldbc, E, ws.conv16.ptr, CD, w.x_proj16->ptr, E,
                                           ws.dbc16.ptr, ldbc);
                kc::gemm_rowmajor_bf16_out(cb, s, R, E, Rdt, ws.dbc16.ptr, ldbc, w.dt_proj16->ptr, Rdt,
                                           ws.dt16.ptr, E);
                kc::Mamba1ScanArgs a;
                a.T = R, a.E = E, a.N = N;
                a.x16 = ws.conv16.ptr, a.ldx = CD, a.delta16 = ws.dt16.ptr, a.ldd = E;
                a.delta_bias = w.dt_proj_b.ptr(), a.delta_softplus = true, a.A = w.A.ptr();
                a.B16 = ws.dbc16.ptr + Rdt, a.ldb = ldbc, a.C16 = ws.dbc16.ptr + Rdt + N, a.ldc = ldbc;
                a.Dskip = w.Dskip.ptr(), a.z16 = ws.proj16.ptr + E, a.ldz = P;
                a.thr = filtered ? thr[size_t(li)].ptr : nullptr, a.h = ssm_state[size_t(li)].ptr;
                a.y16 = ws.y16.ptr, a.ldy = E, a.fast_exp = kScanFastExp;
                // the time-parallel scan where MAMBASCOPE_M1_TP (or its measured default) asks for it and it
                // takes these arguments (docs/cuda.md, "The time-parallel scan"); else the chunked scan
                kc::Mamba1TpShape tp;
                if (kc::scan_mamba1_tp_chosen(&tp) && kc::scan_mamba1_tp_unsupported(a, tp).empty()) {
                    kc::scan_mamba1_tp(a, s, tp);
                } else {
                    ws.scan_ws.resize(kc::scan_mamba1_workspace_bytes(R, E, N));
                    kc::scan_mamba1(a, ws.scan_ws.ptr, ws.scan_ws.count, s);
                }
                project16(R, D, E, ws.y16.ptr, E, w.out_proj16, x.ptr, D, 1.0f);
                continue;
            }
            if (m2_chain && R >= kSsdMinTokens) {
                // u = rmsnorm(x) → proj = u·in_projᵀ = [z | xBC | dt] → xBC = silu(conv1d(xBC)) → y = SSD
                // scan → g = gated_norm(y, z) → x += g·out_projᵀ; bf16 activations throughout.
                kc::rmsnorm_bf16(R, D, x.ptr, D, w.norm.ptr(), eps, ws.u16.ptr, D, s);
                kc::gemm_rowmajor_bf16_out(cb, s, R, P, D, ws.u16.ptr, D, w.in_proj16->ptr, D, ws.proj16.ptr,
                                           P);
                kc::conv1d_silu(R, CD, K, ws.proj16.ptr + E, P, w.conv_w.ptr(), w.conv_b.ptr(),
                                conv_state[size_t(li)].ptr, nullptr, 0, s, ws.conv16.ptr, CD);
                kc::Mamba2ScanArgs a;
                a.T = R, a.H = c.n_heads, a.P = c.head_dim, a.G = c.n_groups, a.N = N;
                a.x16 = ws.conv16.ptr, a.ldx = CD;
                a.delta16 = ws.proj16.ptr + 2 * E + 2 * GN, a.ldd = P;
                a.delta_bias = w.dt_bias.ptr(), a.delta_softplus = true, a.A = w.A.ptr();
                a.B16 = ws.conv16.ptr + E, a.ldb = CD, a.C16 = ws.conv16.ptr + E + GN, a.ldc = CD;
                a.Dskip = w.Dskip.ptr(), a.thr = filtered ? thr[size_t(li)].ptr : nullptr;
                a.s = ssm_state[size_t(li)].ptr, a.y16 = ws.ys16.ptr, a.ldy = E;
                ws.scan_ws.resize(
                    kc::scan_mamba2_ssd_workspace_bytes(R, c.n_heads, c.head_dim, c.n_groups, N));
                kc::scan_mamba2_ssd(a, ws.scan_ws.ptr, ws.scan_ws.count, s);
                kc::gated_rmsnorm_bf16(R, E, c.norm_groups(), ws.ys16.ptr, E, ws.proj16.ptr, P,
                                       w.gate_norm.ptr(), eps, ws.y16.ptr, E, s);
                project16(R, D, E, ws.y16.ptr, E, w.out_proj16, x.ptr, D, 1.0f);
                continue;
            }
            // bf16: the norm, the conv and the scan write the next projection's bf16 input themselves.
            if (bf16) {
                kc::rmsnorm_bf16(R, D, x.ptr, D, w.norm.ptr(), eps, ws.u16.ptr, D, s);
                project16(R, P, D, ws.u16.ptr, D, w.in_proj16, proj.ptr, P, 0.0f);
            } else {
                kc::rmsnorm(R, D, x.ptr, D, w.norm.ptr(), eps, u.ptr, D, s);
                project(R, P, D, u.ptr, D, w.in_proj, w.in_proj16, proj.ptr, P, 0.0f);
            }
            const int64_t conv_col = c.arch == Arch::Mamba1 ? 0 : E;
            const bool conv_bf16 = bf16 && c.arch == Arch::Mamba1;  // x_proj's input
            kc::conv1d_silu(R, CD, K, proj.ptr + conv_col, P, w.conv_w.ptr(), w.conv_b.ptr(),
                            conv_state[size_t(li)].ptr, conv.ptr, CD, s, conv_bf16 ? ws.conv16.ptr : nullptr,
                            CD);
            float* dt_raw = nullptr;  // pre-softplus Δ input, (R, ·) with stride dt_ld
            int64_t dt_ld = 0;
            if (c.arch == Arch::Mamba1) {
                if (conv_bf16)
                    project16(R, ldbc, E, ws.conv16.ptr, CD, w.x_proj16, dbc.ptr, ldbc, 0.0f);
                else
                    project(R, ldbc, E, conv.ptr, CD, w.x_proj, w.x_proj16, dbc.ptr, ldbc, 0.0f);
                project(R, E, Rdt, dbc.ptr, ldbc, w.dt_proj_w, w.dt_proj16, dt.ptr, E, 0.0f);
                dt_raw = dt.ptr;
                dt_ld = E;
            } else {
                dt_raw = proj.ptr + 2 * E + 2 * GN;
                dt_ld = P;
            }
            // DeciMamba: gather the kept rows (method doc §4).
            float* xin = conv.ptr;
            float* zin = c.arch == Arch::Mamba1 ? proj.ptr + E : proj.ptr;
            float* Bp = c.arch == Arch::Mamba1 ? dbc.ptr + Rdt : conv.ptr + E;
            float* Cp = c.arch == Arch::Mamba1 ? dbc.ptr + Rdt + N : conv.ptr + E + GN;
            if (opt.keep_positions) {
                auto it = opt.keep_positions->find(li);
                if (it != opt.keep_positions->end()) {
                    std::vector<int64_t> sel;
                    for (int64_t r = 0; r < R; ++r)
                        if (std::binary_search(it->second.begin(), it->second.end(), positions[size_t(r)]))
                            sel.push_back(r);
                    if (static_cast<int64_t>(sel.size()) != R) {
                        const int64_t Rk = static_cast<int64_t>(sel.size());
                        std::vector<int64_t> kept;
                        for (int64_t r : sel) kept.push_back(positions[size_t(r)]);
                        positions = std::move(kept);
                        if (Rk == 0) {
                            R = 0;
                            break;
                        }
                        d_rows.upload(sel.data(), sel.size());
                        g_conv.resize(size_t(Rk * CD));
                        g_proj.resize(size_t(Rk * P));
                        g_x.resize(size_t(Rk * D));
                        kc::gather_rows(Rk, CD, d_rows.ptr, conv.ptr, CD, g_conv.ptr, CD, s);
                        kc::gather_rows(Rk, P, d_rows.ptr, proj.ptr, P, g_proj.ptr, P, s);
                        kc::gather_rows(Rk, D, d_rows.ptr, x.ptr, D, g_x.ptr, D, s);
                        CUDA_CHECK(cudaMemcpyAsync(x.ptr, g_x.ptr, size_t(Rk * D) * sizeof(float),
                                                   cudaMemcpyDeviceToDevice, s));
                        xin = g_conv.ptr;
                        zin = c.arch == Arch::Mamba1 ? g_proj.ptr + E : g_proj.ptr;
                        if (c.arch == Arch::Mamba1) {
                            g_dbc.resize(size_t(Rk * ldbc));
                            g_dt.resize(size_t(Rk * E));
                            kc::gather_rows(Rk, ldbc, d_rows.ptr, dbc.ptr, ldbc, g_dbc.ptr, ldbc, s);
                            kc::gather_rows(Rk, E, d_rows.ptr, dt.ptr, E, g_dt.ptr, E, s);
                            Bp = g_dbc.ptr + Rdt;
                            Cp = g_dbc.ptr + Rdt + N;
                            dt_raw = g_dt.ptr;
                        } else {
                            Bp = g_conv.ptr + E;
                            Cp = g_conv.ptr + E + GN;
                            dt_raw = g_proj.ptr + 2 * E + 2 * GN;
                        }
                        R = Rk;
                    }
                }
            }
            if (opt.observer && opt.observer->wants_scan_inputs(li)) {
                auto hx = to_host(xin, R, E, CD, s);
                auto hB = to_host(Bp, R, (c.arch == Arch::Mamba1 ? N : GN), ldbc, s);
                auto hC = to_host(Cp, R, (c.arch == Arch::Mamba1 ? N : GN), ldbc, s);
                const int64_t w_bc = c.arch == Arch::Mamba1 ? N : GN;
                ScanInputs in{li, R, positions.data(), hx.data(), E, hB.data(), hC.data(), w_bc};
                opt.observer->on_scan_inputs(in);
            }
            float* thr_ptr = filtered ? thr[size_t(li)].ptr : nullptr;
            const bool want_delta = opt.observer != nullptr;
            if (c.arch == Arch::Mamba1) {
                kc::Mamba1ScanArgs a;
                a.T = R, a.E = E, a.N = N;
                a.x = xin, a.ldx = CD;
                a.delta = dt_raw, a.ldd = dt_ld, a.delta_bias = w.dt_proj_b.ptr(), a.delta_softplus = true;
                a.A = w.A.ptr(), a.B = Bp, a.ldb = ldbc, a.C = Cp, a.ldc = ldbc, a.Dskip = w.Dskip.ptr();
                a.z = zin, a.ldz = P, a.thr = thr_ptr, a.h = ssm_state[size_t(li)].ptr, a.ldy = E;
                if (bf16)
                    a.y16 = ws.y16.ptr;  // out_proj's bf16 input
                else
                    a.y = y.ptr;
                if (want_delta) a.delta_out = delta_used.ptr, a.ldo = C;
                a.fast_exp = kScanFastExp;
                ws.scan_ws.resize(kc::scan_mamba1_workspace_bytes(R, E, N));
                kc::scan_mamba1(a, ws.scan_ws.ptr, ws.scan_ws.count, s);
            } else {
                kc::Mamba2ScanArgs a;
                a.T = R, a.H = c.n_heads, a.P = c.head_dim, a.G = c.n_groups, a.N = N;
                a.x = xin, a.ldx = CD;
                a.delta = dt_raw, a.ldd = dt_ld, a.delta_bias = w.dt_bias.ptr(), a.delta_softplus = true;
                a.A = w.A.ptr(), a.B = Bp, a.ldb = ldbc, a.C = Cp, a.ldc = ldbc, a.Dskip = w.Dskip.ptr();
                a.thr = thr_ptr, a.s = ssm_state[size_t(li)].ptr, a.y = y.ptr, a.ldy = E;
                if (want_delta) a.delta_out = delta_used.ptr, a.ldo = C;
                if (bf16 && R >= kSsdMinTokens && m2_ssd_enabled() &&
                    kc::scan_mamba2_ssd_supports(c.head_dim, N)) {
                    ws.scan_ws.resize(
                        kc::scan_mamba2_ssd_workspace_bytes(R, c.n_heads, c.head_dim, c.n_groups, N));
                    kc::scan_mamba2_ssd(a, ws.scan_ws.ptr, ws.scan_ws.count, s);
                } else {
                    kc::scan_mamba2(a, nullptr, 0, s);
                }
                if (bf16)
                    kc::gated_rmsnorm_bf16(R, E, c.norm_groups(), y.ptr, E, zin, P, w.gate_norm.ptr(), eps,
                                           ws.y16.ptr, E, s);
                else
                    kc::gated_rmsnorm(R, E, c.norm_groups(), y.ptr, E, zin, P, w.gate_norm.ptr(), eps, s);
            }
            if (want_delta) {
                auto used = to_host(delta_used.ptr, R, C, C, s);
                std::vector<float> raw;
                const float* raw_ptr = used.data();
                if (filtered) {
                    // Raw Δ = softplus(dt + bias), recomputed on the host from the pre-activation (bounded:
                    // one chunk).
                    raw = to_host(dt_raw, R, C, dt_ld, s);
                    const auto& bias = c.arch == Arch::Mamba1 ? model.layers[size_t(li)].dt_proj_b
                                                              : model.layers[size_t(li)].dt_bias;
                    for (int64_t r = 0; r < R; ++r)
                        for (int64_t ch = 0; ch < C; ++ch)
                            raw[size_t(r * C + ch)] =
                                kernels::softplus(raw[size_t(r * C + ch)] + bias.data[ch]);
                    raw_ptr = raw.data();
                }
                DeltaBlock bu{li, R, C, used.data(), C, positions.data()};
                DeltaBlock br{li, R, C, raw_ptr, C, positions.data()};
                opt.observer->on_delta(br, bu);
            }
            // x = y·out_projᵀ + x
            if (bf16)
                project16(R, D, E, ws.y16.ptr, E, w.out_proj16, x.ptr, D, 1.0f);
            else
                project(R, D, E, y.ptr, E, w.out_proj, w.out_proj16, x.ptr, D, 1.0f);
        }
        if (opt.stop_after_layer < 0 && R > 0 && (head.nll || head.logits_sink)) {
            // Rows that need the head: a target exists (NLL) or the sink asked for the position.
            for (int64_t r0 = 0; r0 < R; r0 += kHeadChunkTokens) {
                const int64_t rows = std::min<int64_t>(kHeadChunkTokens, R - r0);
                std::vector<int64_t> need;
                std::vector<int32_t> targets;
                std::vector<uint8_t> has_target;
                for (int64_t r = r0; r < r0 + rows; ++r) {
                    const int64_t p = positions[size_t(r)];
                    const bool t = head.nll && p - pos_base + 1 < T;
                    const bool sink = head.logits_sink &&
                                      (head.all_logits || std::binary_search(head.logits_positions.begin(),
                                                                             head.logits_positions.end(), p));
                    if (t || sink) {
                        need.push_back(r);
                        targets.push_back(t ? ids[size_t(p - pos_base + 1)] : 0);
                        has_target.push_back(t ? 1 : 0);
                    }
                }
                if (need.empty()) continue;
                const int64_t Rn = static_cast<int64_t>(need.size());
                d_rows.upload(need.data(), need.size());
                g_x.resize(size_t(Rn * D));
                kc::gather_rows(Rn, D, d_rows.ptr, x.ptr, D, g_x.ptr, D, s);
                kc::rmsnorm(Rn, D, g_x.ptr, D, dm.norm_f.ptr(), eps, xn.ptr, D, s);
                kc::gemm_rowmajor(cb, s, Rn, V, D, xn.ptr, D, dm.lm_head.ptr(), D, logits.ptr, V);
                if (head.nll) {
                    CUDA_CHECK(cudaMemcpyAsync(d_targets.ptr, targets.data(), size_t(Rn) * sizeof(int32_t),
                                               cudaMemcpyHostToDevice, s));
                    kc::nll_rows(Rn, V, logits.ptr, V, d_targets.ptr, nll.ptr, s);
                    auto h_nll = to_host(nll.ptr, 1, Rn, Rn, s);
                    for (int64_t i = 0; i < Rn; ++i)
                        if (has_target[size_t(i)]) {
                            res.nll_positions.push_back(positions[size_t(need[size_t(i)])]);
                            res.nll.push_back(h_nll[size_t(i)]);
                        }
                }
                if (head.logits_sink) {
                    auto h_logits = to_host(logits.ptr, Rn, V, V, s);
                    for (int64_t i = 0; i < Rn; ++i) {
                        const int64_t p = positions[size_t(need[size_t(i)])];
                        if (head.all_logits ||
                            std::binary_search(head.logits_positions.begin(), head.logits_positions.end(), p))
                            head.logits_sink(p, h_logits.data() + i * V, V);
                    }
                }
            }
        }
        CUDA_CHECK(cudaStreamSynchronize(s));
        report_progress(opt.progress, double(t0 + std::min(chunk, T - t0)) / double(T), "prefill");
    }
    state.tokens_seen += T;
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    return res;
}

// Decoding with the state resident on the GPU, one CUDA graph per decoder: the first step records every
// kernel of a one-token step (embedding, all layers, the head, the logits copy) on the decoder's stream and
// instantiates it; each later step writes the token id into pinned host memory, replays the graph (one launch
// instead of ≈ 8 per layer) and reads the logits from pinned memory. The recorded kernels are the prefill's
// with one row, except: the projections are one-row gemv kernels (gemv.cuh; cuBLAS's tiled GEMMs used a tenth
// of the GPU for one row), dt_proj runs inside the scan (Mamba1ScanArgs::dt_proj_w) and the conv updates its
// state itself. bf16 decoders use a bf16 copy of the LM head (half the bytes of a step's largest read).
// MAMBASCOPE_DECODE_GRAPH=0 (or a failed capture) falls back to the prefill path, one launch per kernel.
bool decode_graph_enabled() {  // read per decoder, so that a benchmark can A/B both paths in one process
    return env_flag("MAMBASCOPE_DECODE_GRAPH", true,
                    "it sets whether a GPU decoder replays one CUDA graph per step (docs/cuda.md, \"Decoding "
                    "on the GPU\")");
}

// MAMBASCOPE_DECODE_PERSISTENT=1 runs a bf16 Mamba-1 step as the persistent decode kernel (docs/cuda.md, "The
// persistent decode kernel") instead of the step graph of one kernel per operation; =ring as the ring
// kernel (a producer warp per block streams the weights into shared memory ahead of the grid barriers;
// "The ring kernel"). Opt-in: on the H200 the plain kernel ties the step graph on mamba-130m and is 5% slower
// on mamba-1.4b (docs/benchmarks.md, "Eighth stop"). Read per decoder, for A/B benchmarks.
enum class PersistentKernel { Off, Plain, Ring };
PersistentKernel decode_persistent_kernel() {
    return env_enum<PersistentKernel>(
        "MAMBASCOPE_DECODE_PERSISTENT",
        {{"0", PersistentKernel::Off}, {"1", PersistentKernel::Plain}, {"ring", PersistentKernel::Ring}},
        "it sets whether a bf16 Mamba-1 decode step runs as the persistent kernel (1) or the ring kernel "
        "(ring) (docs/cuda.md, \"The persistent decode kernel\")");
}

// MAMBASCOPE_DECODE_RUN: a greedy run's steps per graph launch, fed on the device (docs/cuda.md, "Greedy runs
// on the device"); 0 loops over step_greedy (one graph launch and host round trip per step, as before). Read
// per decoder.
constexpr int64_t kDecodeRunSteps = 8;  // the default (docs/benchmarks.md, sixteenth stop)
int64_t decode_run_steps() {
    return env_enum<int64_t>(
        "MAMBASCOPE_DECODE_RUN",
        {{"", kDecodeRunSteps}, {"0", 0}, {"1", 1}, {"2", 2}, {"4", 4}, {"8", 8}, {"16", 16}, {"32", 32}},
        "it sets how many greedy steps of a run one CUDA graph holds, fed on the "
        "device (docs/cuda.md, \"Greedy runs on the device\"; 0: none)");
}

// The widest d_inner whose bf16 step graph runs the conv inside in_proj by default (docs/cuda.md, "The conv
// inside in_proj"). Measured on an H200 (docs/benchmarks.md, "Twelfth stop"): the fold saves 7% of a step at
// d_inner 1536 and 2048, ties at 4096 (+0.4%) and costs 4% at 5120; the threshold lies between the last gain
// and the tie.
constexpr int64_t kDecodeConvFoldMaxInner = 3072;

// The early launch (twenty-seventh stop; docs/cuda.md, "The early launch") for step
// graphs whose in_proj has at most this many bytes of weights. Measured on an H100 (docs/benchmarks.md,
// twenty-seventh stop), greedy bf16 runs, ms/token without → with: mamba-130m (in_proj 4.7 MB) 0.310 → 0.271,
// mamba-370m (8.4 MB) 0.745 → 0.661, mamba-1.4b (33.5 MB) 1.610 → 1.837. The threshold lies between the last
// gain and the loss.
constexpr int64_t kDecodeEarlyLaunchMaxInProjBytes = int64_t{16} << 20;

}  // namespace

// MAMBASCOPE_DECODE_EARLY_LAUNCH: unset takes the early launch for bf16 Mamba-1 step graphs whose in_proj
// weights are at most kDecodeEarlyLaunchMaxInProjBytes, 1 for every bf16 Mamba-1 step graph, 0 never. Read
// per decoder; any other value is an error.
bool decode_early_launch(const ModelConfig& c, Precision precision, bool graph) {
    const std::string v =
        env_choice("MAMBASCOPE_DECODE_EARLY_LAUNCH", {"", "0", "1"},
                   "it sets whether a bf16 Mamba-1 decode step graph lets each kernel launch early behind "
                   "its projections (docs/cuda.md, \"The early launch\"; the "
                   "default is measured per size)");
    const bool can = graph && precision == Precision::Bf16 && c.arch == Arch::Mamba1;
    if (!can || v == "0") return false;
    const int64_t in_proj_bytes = c.in_proj_rows() * c.d_model * int64_t{2};
    return v == "1" || in_proj_bytes <= kDecodeEarlyLaunchMaxInProjBytes;
}

// MAMBASCOPE_DECODE_CONV_FUSED: unset folds the conv into in_proj's gemv up to kDecodeConvFoldMaxInner, 1
// whatever the width, 0 never (A/B runs, the tests). Read per decoder; any other value is an error. Only a
// bf16 Mamba-1 step graph with d_conv 4 and in_proj = [x; z] can fold (gemv_rmsnorm_conv's layout).
bool decode_conv_fold(const ModelConfig& c, Precision precision, bool graph) {
    const std::string v =
        env_choice("MAMBASCOPE_DECODE_CONV_FUSED", {"", "0", "1"},
                   "it sets whether a bf16 Mamba-1 decode step runs the conv inside in_proj's "
                   "kernel (docs/cuda.md, \"The conv inside in_proj\"; the default is "
                   "measured per width)");
    const bool can = graph && precision == Precision::Bf16 && c.arch == Arch::Mamba1 &&
                     c.d_conv == kc::kGemvConvK && c.d_model <= kc::kGemvNormMaxK &&
                     c.in_proj_rows() == 2 * c.d_inner && c.conv_dim() == c.d_inner;
    if (!can || v == "0") return false;
    return v == "1" || c.d_inner <= kDecodeConvFoldMaxInner;
}

// MAMBASCOPE_DECODE_XPROJ_FUSED=1 folds x_proj into in_proj's gemv as well wherever the conv folds and
// x_proj's rows suit the kernel (a multiple of 8, at most kGemvXprojMaxR: every Mamba-1 checkpoint); unset or
// 0, x_proj stays its own gemv. Opt-in: measured 13-24% slower per step on an H100 (docs/cuda.md, "x_proj
// inside in_proj"; docs/benchmarks.md, "Fourteenth stop"). Read per decoder; any other value is an error.
bool decode_xproj_fold(const ModelConfig& c, bool conv_fold) {
    const bool on = env_flag("MAMBASCOPE_DECODE_XPROJ_FUSED", false,
                             "it sets whether a bf16 Mamba-1 decode step computes x_proj inside in_proj's "
                             "kernel (docs/cuda.md, \"x_proj inside in_proj\")");
    const int64_t R = c.dt_rank + 2 * c.d_state;
    return conv_fold && on && R % 8 == 0 && R <= kc::kGemvXprojMaxR;
}

namespace {

// MAMBASCOPE_DECODE_L2_AHEAD (docs/cuda.md, "L2 ahead"): 0 (the default: 1 and 2 measured 16-95% slower)
// none; 1 x_proj's kernel starts out_proj's weights into L2 once in_proj and the conv are done; 2 that, and
// out_proj's kernel starts the next layer's in_proj (the LM head after the last layer), at most
// kDecodeL2AheadShare of the L2. Read per decoder; any other value is an error.
constexpr double kDecodeL2AheadShare = 0.5;
// 3 ("branch"): the L2 branch (docs/cuda.md, "The L2 branch"): after each layer's in_proj a kernel on a
// parallel branch of the step graph (kc::prefetch_l2_ranges) starts that layer's x_proj, dt_proj and
// out_proj and the next layer's in_proj (the LM head after the last layer) on their way into L2, at most
// decode_l2_branch_share() of the L2 in all; no kernel of the chain waits on it. Measured 2-13% slower on
// mamba-1.4b (H100, docs/benchmarks.md, twenty-third stop): opt-in.
constexpr int kDecodeL2Branch = 3;
int decode_l2_ahead() {
    return env_enum<int>(
        "MAMBASCOPE_DECODE_L2_AHEAD", {{"0", 0}, {"1", 1}, {"2", 2}, {"branch", kDecodeL2Branch}},
        "it sets which later weights a bf16 Mamba-1 decode step prefetches into L2: from its "
        "x_proj and out_proj kernels (1, 2) or from a parallel branch of the step graph "
        "(branch) (docs/cuda.md, \"L2 ahead\" and \"The L2 branch\")");
}
// MAMBASCOPE_DECODE_L2_BRANCH_SHARE: the L2 branch's budget per launch as a share of the L2 (default 0.75:
// room for what the chain reads meanwhile). Read per decoder; any other value is an error.
double decode_l2_branch_share() {
    return env_enum<double>("MAMBASCOPE_DECODE_L2_BRANCH_SHARE",
                            {{"0.75", 0.75}, {"0.25", 0.25}, {"0.5", 0.5}, {"1", 1.0}},
                            "it sets how much of the L2 each of the L2 branch's prefetch launches may fill "
                            "(docs/cuda.md, \"The L2 branch\")");
}

// MAMBASCOPE_DECODE_Z_BRANCH (docs/cuda.md, "z on a branch"): 1 splits a bf16 Mamba-1 step's in_proj: the x
// half (with the conv where it is folded) on the chain, the z half (read by the scan step only) on a parallel
// branch beside the conv and x_proj, joined into the scan step. Not with x_proj folded into in_proj. 0 (the
// default) keeps one in_proj: the split measured 16-28% slower (docs/benchmarks.md, twenty-fourth stop). Read
// per decoder; any other value is an error.
bool decode_z_branch() {
    return env_flag(
        "MAMBASCOPE_DECODE_Z_BRANCH", false,
        "it sets whether a bf16 Mamba-1 decode step computes in_proj's z half on a parallel branch "
        "of the step graph (docs/cuda.md, \"z on a branch\")");
}

// MAMBASCOPE_DECODE_PDL: how the step graph's kernel → kernel edges run (docs/cuda.md, "Decoding on the
// GPU"). An edge into a kernel that waits in grid_dependency_wait (pdl.cuh) becomes programmatic from one of
// two ports:
//   launch: the kernel launches once every block of the kernel before it has started, prefetches its weights
//           into L2 and waits there (the most overlap; but its blocks are placed while the earlier kernel
//           still holds the GPU);
//   exit:   it launches when the blocks of the kernel before it have exited (the launch latency is hidden);
//   auto (the default): launch after a kernel of at most one block per SM, exit after a larger one;
//   0/off:  full dependencies, as captured.
// Read per decoder, so that a benchmark can A/B the modes in one process.
enum class PdlMode { Off, Exit, Launch, Auto };

PdlMode decode_pdl_mode(std::string* name) {
    const PdlMode m = env_enum<PdlMode>("MAMBASCOPE_DECODE_PDL",
                                        {{"auto", PdlMode::Auto},
                                         {"launch", PdlMode::Launch},
                                         {"exit", PdlMode::Exit},
                                         {"0", PdlMode::Off},
                                         {"off", PdlMode::Off}},
                                        "it sets how the decode step graph's kernel edges run (docs/cuda.md, "
                                        "\"Decoding on the GPU\")");
    *name = m == PdlMode::Auto     ? "auto"
            : m == PdlMode::Launch ? "launch"
            : m == PdlMode::Exit   ? "exit"
                                   : "off";
    return m;
}

// auto's rule: an edge takes the "launch" port after a kernel of at most this many blocks per SM
// (docs/cuda.md, "Decoding on the GPU"), "exit" after a larger one. MAMBASCOPE_DECODE_PDL_LAUNCH_PER_SM = 1
// (default), 2, 3 or 6 for A/B runs (2: out_proj's grids on mamba-130m to mamba-1.4b, ≈ 1.5-1.9 blocks per
// SM, too; 6: every kernel of those steps, as "launch"). Read per decoder; any other value is an error.
// The early launch (decode_early_launch) takes kPdlLaunchBlocksPerSmEarly where the variable is unset.
constexpr int64_t kPdlLaunchBlocksPerSm = 1;
constexpr int64_t kPdlLaunchBlocksPerSmEarly = 2;
int64_t pdl_launch_blocks_per_sm(bool early) {
    return env_enum<int64_t>("MAMBASCOPE_DECODE_PDL_LAUNCH_PER_SM",
                             {{"", early ? kPdlLaunchBlocksPerSmEarly : kPdlLaunchBlocksPerSm},
                              {"1", 1},
                              {"2", 2},
                              {"3", 3},
                              {"6", 6}},
                             "it sets up to how many blocks per SM a kernel lets the next one launch early "
                             "under MAMBASCOPE_DECODE_PDL=auto (docs/cuda.md, \"Decoding on the GPU\")");
}

// The kernel a graph node launches (its host stub, as passed to <<<>>>), or null for other nodes; `blocks`
// gets its grid size.
const void* graph_node_kernel(cudaGraphNode_t node, int64_t* blocks = nullptr) {
    cudaGraphNodeType type;
    CUDA_CHECK(cudaGraphNodeGetType(node, &type));
    if (type != cudaGraphNodeTypeKernel) return nullptr;
    cudaKernelNodeParams kp{};
    CUDA_CHECK(cudaGraphKernelNodeGetParams(node, &kp));
    if (blocks) *blocks = int64_t{kp.gridDim.x} * kp.gridDim.y * kp.gridDim.z;
    return kp.func;
}

// Turns each kernel → kernel edge of `graph` whose downstream kernel waits in grid_dependency_wait
// (pdl_register said so when it was launched) into a programmatic edge (port per `mode`, see above; auto
// takes "launch" after grids of at most launch_per_sm blocks per SM); every other edge stays a full
// dependency. Returns the number of edges changed. A node's kernel may be reported as the host stub or as its
// cudaFunction_t: both are matched.
int64_t make_kernel_edges_programmatic(cudaGraph_t graph, PdlMode mode, int64_t launch_per_sm,
                                       int64_t* launch_edges = nullptr) {
    if (launch_edges) *launch_edges = 0;
    int dev = 0, major = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    if (major < 9) return 0;  // PDL needs sm_90
    std::vector<const void*> aware;
    for (const void* k : kc::pdl_registered_kernels()) {
        // the wait is compiled for sm_90 and newer only (device_math.cuh): a kernel built from an older
        // architecture's PTX (CMAKE_CUDA_ARCHITECTURES) does not wait, so its edges stay full dependencies
        cudaFuncAttributes fa{};
        if (cudaFuncGetAttributes(&fa, k) != cudaSuccess || fa.ptxVersion < 90 || fa.binaryVersion < 90) {
            cudaGetLastError();
            continue;
        }
        aware.push_back(k);
        cudaFunction_t f = nullptr;
        if (cudaGetFuncBySymbol(&f, k) == cudaSuccess && f) aware.push_back(reinterpret_cast<const void*>(f));
        cudaGetLastError();
    }
    const auto waits = [&](const void* k) {
        return k && std::find(aware.begin(), aware.end(), k) != aware.end();
    };
    int sms = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    const int64_t launch_blocks = launch_per_sm * sms;  // auto: "launch" up to this grid
    size_t n = 0;
    CUDA_CHECK(cudaGraphGetEdges(graph, nullptr, nullptr, nullptr, &n));
    std::vector<cudaGraphNode_t> from(n), to(n);
    std::vector<cudaGraphEdgeData> data(n);
    CUDA_CHECK(cudaGraphGetEdges(graph, from.data(), to.data(), data.data(), &n));
    int64_t changed = 0;
    for (size_t i = 0; i < n; ++i) {
        if (data[i].type != cudaGraphDependencyTypeDefault ||
            data[i].from_port != cudaGraphKernelNodePortDefault)
            continue;
        int64_t up_blocks = 0;
        if (!graph_node_kernel(from[i], &up_blocks) || !waits(graph_node_kernel(to[i]))) continue;
        const bool at_launch =
            mode == PdlMode::Launch || (mode == PdlMode::Auto && up_blocks <= launch_blocks);
        CUDA_CHECK(cudaGraphRemoveDependencies(graph, &from[i], &to[i], &data[i], 1));
        cudaGraphEdgeData e{};
        e.from_port =
            at_launch ? cudaGraphKernelNodePortLaunchCompletion : cudaGraphKernelNodePortProgrammatic;
        e.type = cudaGraphDependencyTypeProgrammatic;
        CUDA_CHECK(cudaGraphAddDependencies(graph, &from[i], &to[i], &e, 1));
        ++changed;
        if (launch_edges && at_launch) ++*launch_edges;
    }
    return changed;
}

class CudaDecoder final : public DecoderBackend {
  public:
    CudaDecoder(const Model& model, const ModelState& state, Precision precision, const DeltaFilter* filter)
        : model_(model), state_(state) {
        opt_.precision = precision;
        if (filter && !filter->empty()) {
            // LongMamba's filter kept while decoding (method doc §9.1): thresholds on the device once.
            MS_CHECK(static_cast<int64_t>(filter->threshold.size()) == model.config.n_layer,
                     "the decode filter does not belong to this model");
            filter_ = *filter;
            opt_.filter = &filter_;
            thr_ = std::vector<DevBuf<float> >(filter_.threshold.size());
            for (size_t l = 0; l < thr_.size(); ++l) {
                MS_CHECK(static_cast<int64_t>(filter_.threshold[l].size()) == model.config.channels(),
                         "the decode filter has the wrong channel count");
                thr_[l].upload(filter_.threshold[l].data(), filter_.threshold[l].size());
            }
        }
        use_graph_ = decode_graph_enabled();
        const ModelConfig& c = model.config;
        conv_fused_ = decode_conv_fold(c, precision, use_graph_);
        info_.conv_fused = conv_fused_;
        const bool z_branch = decode_z_branch();  // read (and checked) for every decoder
        xproj_fused_ = decode_xproj_fold(c, conv_fused_);
        info_.xproj_fused = xproj_fused_;
        z_branch_ = z_branch && precision == Precision::Bf16 && c.arch == Arch::Mamba1 && !xproj_fused_ &&
                    c.d_model <= kc::kGemvNormMaxK;
        info_.z_branch = z_branch_;
        const int ahead = decode_l2_ahead();  // read (and checked) for every decoder
        l2_ahead_ = precision == Precision::Bf16 && c.arch == Arch::Mamba1 ? ahead : 0;
        info_.l2_ahead = l2_ahead_;
        const double branch_share = decode_l2_branch_share();  // read (and checked) for every decoder
        if (l2_ahead_ >= 2) {
            int dev = 0, bytes = 0;
            CUDA_CHECK(cudaGetDevice(&dev));
            CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrL2CacheSize, dev));
            l2_ahead_budget_ = static_cast<int64_t>(
                (l2_ahead_ == kDecodeL2Branch ? branch_share : kDecodeL2AheadShare) * bytes);
        }
        run_steps_ = decode_run_steps();
        early_launch_ = decode_early_launch(c, precision, use_graph_);
        info_.early_launch = early_launch_;
        pdl_launch_per_sm_ = pdl_launch_blocks_per_sm(early_launch_);
        persistent_kind_ = decode_persistent_kernel();  // read (and checked) for every decoder
    }
    ~CudaDecoder() override {
        for (int slot = 0; slot < kSlots; ++slot) {
            if (execs_[slot]) cudaGraphExecDestroy(execs_[slot]);
            if (graphs_[slot]) cudaGraphDestroy(graphs_[slot]);
        }
        if (stream_) cudaStreamDestroy(stream_);
        if (branch_) cudaStreamDestroy(branch_);
        if (zstream_) cudaStreamDestroy(zstream_);
        if (zfork_) cudaEventDestroy(zfork_);
        if (zjoin_) cudaEventDestroy(zjoin_);
        if (fork_) cudaEventDestroy(fork_);
        if (join_) cudaEventDestroy(join_);
        if (id_host_) cudaFreeHost(id_host_);
        if (next_host_) cudaFreeHost(next_host_);
        if (next_key_host_) cudaFreeHost(next_key_host_);
        if (logits_host_) cudaFreeHost(logits_host_);
        if (run_host_) cudaFreeHost(run_host_);
        if (run_ids_host_) cudaFreeHost(run_ids_host_);
    }
    void step(int32_t id, std::vector<float>& logits) override {
        const int32_t one[1] = {id};
        std::span<const int32_t> ids(one, 1);
        check_ids(model_, ids);
        if (use_graph_ && !execs_[0]) build(0, 0);
        if (!use_graph_) {
            HeadRequest head;
            head.logits_positions = {state_.tokens_seen};
            head.logits_sink = [&](int64_t, const float* row, int64_t V) { logits.assign(row, row + V); };
            prefill_on_device(model_, ids, state_, opt_, head, ws_);
            return;
        }
        *id_host_ = id;
        CUDA_CHECK(cudaGraphLaunch(execs_[0], stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        logits.assign(logits_host_, logits_host_ + model_.vocab_rows());
        state_.tokens_seen += 1;
    }
    // Greedy steps (docs/cuda.md, "Greedy steps"): a second graph, the same step with the argmax over logits
    // [0, n) folded into the LM head (or, where the head cannot take it, in a kernel after it) and an 8- or
    // 4-byte copy instead of the logits row's. Built on the first greedy step (again if n changes); both
    // graphs update the same device state.
    int32_t step_greedy(int32_t id, int64_t n) override {
        const int32_t one[1] = {id};
        check_ids(model_, std::span<const int32_t>(one, 1));
        MS_CHECK(n >= 1 && n <= model_.vocab_rows(), "step_greedy: candidate count out of range");
        if (use_graph_ && (!execs_[1] || greedy_n_ != n)) {
            if (execs_[1]) cudaGraphExecDestroy(execs_[1]);
            if (graphs_[1]) cudaGraphDestroy(graphs_[1]);
            execs_[1] = nullptr, graphs_[1] = nullptr;
            build(1, n);
            greedy_n_ = n;
        }
        if (!use_graph_) return DecoderBackend::step_greedy(id, n);  // the step, then the host's argmax
        *id_host_ = id;
        CUDA_CHECK(cudaGraphLaunch(execs_[1], stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        state_.tokens_seen += 1;
        return greedy_in_head_ ? kc::argmax_key_index(*next_key_host_) : *next_host_;
    }
    // A greedy run (docs/cuda.md, "Greedy runs on the device"): graph slot 2 holds run_steps_ greedy steps,
    // each starting with embed_greedy_run, which takes its id from the key the step before it left (the
    // run's first: the host's), and none copying anything to the host. The host writes the run's first key
    // once, launches the graph, and copies the chosen ids back once per kRunCap steps. Steps past the last
    // multiple of run_steps_ go through step_greedy. Where the greedy head does not take the argmax (fp32,
    // the persistent kernel, MAMBASCOPE_ARGMAX=vec|scalar) or MAMBASCOPE_DECODE_RUN=0: step_greedy's loop.
    std::vector<int32_t> step_greedy_run(int32_t id, int64_t n, int64_t count) override {
        const int32_t one[1] = {id};
        check_ids(model_, std::span<const int32_t>(one, 1));
        MS_CHECK(n >= 1 && n <= model_.vocab_rows(), "step_greedy_run: candidate count out of range");
        MS_CHECK(count >= 0, "step_greedy_run: negative step count");
        std::vector<int32_t> out;
        out.reserve(size_t(count));
        const int64_t K = run_steps_;
        if (use_graph_ && K > 0 && count >= K && run_n_ != n) {  // built once per n (or found unsupported)
            if (execs_[2]) cudaGraphExecDestroy(execs_[2]);
            if (graphs_[2]) cudaGraphDestroy(graphs_[2]);
            execs_[2] = nullptr, graphs_[2] = nullptr;
            build_run(n);
        }
        if (execs_[2]) {
            info_.greedy_run_steps = K;
            while (count - int64_t(out.size()) >= K) {
                const int64_t steps = std::min(kRunCap, (count - int64_t(out.size())) / K * K);
                *run_host_ = kc::GreedyRun{kc::argmax_key(0.0f, id), 0, 0};
                CUDA_CHECK(cudaMemcpyAsync(run_.ptr, run_host_, sizeof(kc::GreedyRun), cudaMemcpyHostToDevice,
                                           stream_));
                for (int64_t t = 0; t < steps; t += K) CUDA_CHECK(cudaGraphLaunch(execs_[2], stream_));
                CUDA_CHECK(cudaMemcpyAsync(run_ids_host_, run_ids_.ptr, size_t(steps) * sizeof(int32_t),
                                           cudaMemcpyDeviceToHost, stream_));
                CUDA_CHECK(cudaMemcpyAsync(run_host_, run_.ptr, sizeof(kc::GreedyRun), cudaMemcpyDeviceToHost,
                                           stream_));
                CUDA_CHECK(cudaStreamSynchronize(stream_));
                state_.tokens_seen += steps;
                // ids[t] is what step t was fed: ids[0] = id, ids[t + 1] = step t's choice; the last step's
                // choice is the key it left
                MS_CHECK(
                    run_host_->bad == 0 && run_host_->pos == steps && run_ids_host_[0] == id,
                    "a greedy run on the GPU lost its ids (internal error: the step's key did not decode)");
                out.insert(out.end(), run_ids_host_ + 1, run_ids_host_ + steps);
                id = kc::argmax_key_index(run_host_->key);
                MS_CHECK(id >= 0 && id < n,
                         "a greedy run on the GPU chose an id out of range (internal error)");
                out.push_back(id);
            }
        }
        while (int64_t(out.size()) < count) out.push_back(id = step_greedy(id, n));
        return out;
    }
    void download(ModelState& state) const override { state_.download(state); }
    DecodeGraphInfo graph_info() const override { return info_; }

  private:
    // Records one step on stream_ (no allocation, no host synchronisation: everything is captured).
    void record_step() {
        const ModelConfig& c = model_.config;
        DevModel& dm = device_model(model_);
        cudaStream_t s = stream_;
        const bool bf16 = opt_.precision == Precision::Bf16;  // tf32: the one-row products are float32 gemv
        const int64_t D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, C = c.channels();
        const bool fuse_norm = D <= kc::kGemvNormMaxK;  // RMSNorm inside the following gemv (one node fewer)
        const int64_t P = c.in_proj_rows(), CD = c.conv_dim(), V = model_.vocab_rows();
        const int64_t GN = c.n_groups * N, Rdt = c.dt_rank, ldbc = c.arch == Arch::Mamba1 ? Rdt + 2 * N : CD;
        const float eps = static_cast<float>(c.norm_eps);
        Workspace& w = ws_;
        auto project = [&](int64_t Nout, int64_t Kin, const float* A, const DevTensor& W,
                           const std::shared_ptr<DevBuf<__nv_bfloat16> >& W16, float* out, float beta) {
            if (bf16) {
                kc::to_bf16(1, Kin, A, Kin, w.a16.ptr, Kin, s);
                kc::gemv(Nout, Kin, W16->ptr, Kin, w.a16.ptr, out, beta, s);  // one row: gemv.cuh
            } else {
                kc::gemv(Nout, Kin, W.ptr(), Kin, A, out, beta, s);
            }
        };
        if (recording_run_) {  // a greedy run's step: the id from the key the step before left
            kc::embed_greedy_run(D, V, dm.embedding.ptr(), run_.ptr, run_ids_.ptr, kRunCap, w.x.ptr, s);
        } else {
            // the id and the folded argmax's key, reset to 0 by the same copy (kStepInInts: the layout)
            CUDA_CHECK(cudaMemcpyAsync(step_in_.ptr, id_host_, kStepInInts * sizeof(int32_t),
                                       cudaMemcpyHostToDevice, s));
            kc::embed_rows(1, D, step_in_.ptr, dm.embedding.ptr(), w.x.ptr, s);
        }
        for (int64_t li = 0; li < c.n_layer; ++li) {
            const DevLayer& L = dm.layers[size_t(li)];
            float* h = state_.ssm[size_t(li)].ptr;
            float* cst = state_.conv[size_t(li)].ptr;
            const float* thr = thr_.empty() ? nullptr : thr_[size_t(li)].ptr;
            if (bf16 && c.arch == Arch::Mamba1 && fuse_norm) {
                // the prefill's bf16 chain with one row; the norm runs inside in_proj's gemv (one node), and
                // so does the conv (one more) when conv_fused_
                // the L2 branch (l2_ahead_ = kDecodeL2Branch): once in_proj is done, this layer's later
                // weights and the next layer's in_proj (the LM head after the last layer)
                const auto branch = [&] {
                    if (l2_ahead_ != kDecodeL2Branch) return;
                    const bool last = li + 1 == c.n_layer;
                    const void* next =
                        last ? (lm_head16_ ? static_cast<const void*>(lm_head16_->ptr) : nullptr)
                             : dm.layers[size_t(li + 1)].in_proj16->ptr;
                    record_l2_branch(
                        kc::l2_budget_ranges({{xproj_fused_ ? nullptr : L.x_proj16->ptr, ldbc * E * 2},
                                              {L.dt_proj_w.ptr(), Rdt * E * int64_t{sizeof(float)}},
                                              {L.out_proj16->ptr, D * E * 2},
                                              {next, (last ? V : P) * D * 2}},
                                             l2_ahead_budget_));
                };
                if (xproj_fused_) {  // and x_proj: dbc16 from the same kernel
                    kc::gemv_rmsnorm_conv_xproj(E, D, L.in_proj16->ptr, D, w.x.ptr, L.norm.ptr(), eps,
                                                w.proj16.ptr, L.conv_w.ptr(), L.conv_b.ptr(), cst,
                                                w.conv16.ptr, L.x_proj16T->ptr, ldbc, w.xparts.ptr,
                                                w.xcount.ptr, w.dbc16.ptr, s);
                    branch();
                } else if (z_branch_) {
                    // z on a branch: in_proj's x half (rows [0, E); with the conv when conv_fused_) on the
                    // chain, its z half (rows [E, 2E)), which only the scan step reads, beside the conv and
                    // x_proj; the same rows, the same bits
                    if (conv_fused_)
                        kc::gemv_rmsnorm_conv(E, D, L.in_proj16->ptr, D, w.x.ptr, L.norm.ptr(), eps,
                                              w.proj16.ptr, L.conv_w.ptr(), L.conv_b.ptr(), cst, w.conv16.ptr,
                                              s,
                                              /*x_only=*/true);
                    else
                        kc::gemv_rmsnorm(E, D, L.in_proj16->ptr, D, w.x.ptr, L.norm.ptr(), eps, w.proj16.ptr,
                                         s);
                    CUDA_CHECK(cudaEventRecord(zfork_, s));
                    CUDA_CHECK(cudaStreamWaitEvent(zstream_, zfork_, 0));
                    kc::gemv_rmsnorm(E, D, L.in_proj16->ptr + E * D, D, w.x.ptr, L.norm.ptr(), eps,
                                     w.proj16.ptr + E, zstream_);
                    CUDA_CHECK(cudaEventRecord(zjoin_, zstream_));
                    branch();
                    if (!conv_fused_)
                        kc::conv1d_silu(1, CD, K, w.proj16.ptr, P, L.conv_w.ptr(), L.conv_b.ptr(), cst,
                                        nullptr, 0, s, w.conv16.ptr, CD);
                } else if (conv_fused_) {
                    kc::gemv_rmsnorm_conv(E, D, L.in_proj16->ptr, D, w.x.ptr, L.norm.ptr(), eps, w.proj16.ptr,
                                          L.conv_w.ptr(), L.conv_b.ptr(), cst, w.conv16.ptr, s);
                    branch();
                } else {
                    kc::gemv_rmsnorm(P, D, L.in_proj16->ptr, D, w.x.ptr, L.norm.ptr(), eps, w.proj16.ptr, s);
                    branch();
                    kc::conv1d_silu(1, CD, K, w.proj16.ptr, P, L.conv_w.ptr(), L.conv_b.ptr(), cst, nullptr,
                                    0, s, w.conv16.ptr, CD);
                }
                // L2 ahead (l2_ahead_ = 1 or 2): out_proj's weights, (D × E) bf16
                const kc::L2Ahead out_ahead{l2_ahead_ == 1 || l2_ahead_ == 2 ? L.out_proj16->ptr : nullptr,
                                            D * E * 2};
                if (!xproj_fused_)
                    kc::gemv(ldbc, E, L.x_proj16->ptr, E, w.conv16.ptr, w.dbc16.ptr, s, out_ahead);
                if (z_branch_) CUDA_CHECK(cudaStreamWaitEvent(s, zjoin_, 0));  // z joins the chain
                kc::Mamba1ScanArgs a;
                a.T = 1, a.E = E, a.N = N;
                // dt = dbc[:, :R_dt]·dt_projᵀ inside the scan (one launch fewer per layer)
                a.x16 = w.conv16.ptr, a.ldx = CD, a.delta16 = w.dbc16.ptr, a.ldd = ldbc;
                a.dt_proj_w = L.dt_proj_w.ptr(), a.dt_rank = Rdt;
                a.delta_bias = L.dt_proj_b.ptr(), a.delta_softplus = true, a.A = L.A.ptr();
                a.B16 = w.dbc16.ptr + Rdt, a.ldb = ldbc, a.C16 = w.dbc16.ptr + Rdt + N, a.ldc = ldbc;
                a.Dskip = L.Dskip.ptr(), a.z16 = w.proj16.ptr + E, a.ldz = P, a.thr = thr, a.h = h;
                a.y16 = w.y16.ptr, a.ldy = E, a.fast_exp = kScanFastExp;
                kc::scan_mamba1(a, nullptr, 0, s);
                // L2 ahead (l2_ahead_ = 2): the next layer's in_proj (P × D bf16), after the last layer the
                // LM head (V × D), at most l2_ahead_budget_ bytes of either
                kc::L2Ahead in_ahead;
                if (l2_ahead_ == 2) {
                    const bool last = li + 1 == c.n_layer;
                    in_ahead.p = last ? (lm_head16_ ? lm_head16_->ptr : nullptr)
                                      : dm.layers[size_t(li + 1)].in_proj16->ptr;
                    in_ahead.bytes = std::min<int64_t>(l2_ahead_budget_, (last ? V : P) * D * 2);
                }
                kc::gemv(D, E, L.out_proj16->ptr, E, w.y16.ptr, w.x.ptr, 1.0f, s, in_ahead);
                continue;
            }
            if (bf16 && fuse_norm) {
                kc::gemv_rmsnorm(P, D, L.in_proj16->ptr, D, w.x.ptr, L.norm.ptr(), eps, w.proj.ptr, 0.0f, s);
            } else {
                kc::rmsnorm(1, D, w.x.ptr, D, L.norm.ptr(), eps, w.u.ptr, D, s);
                project(P, D, w.u.ptr, L.in_proj, L.in_proj16, w.proj.ptr, 0.0f);
            }
            const int64_t conv_col = c.arch == Arch::Mamba1 ? 0 : E;
            kc::conv1d_silu(1, CD, K, w.proj.ptr + conv_col, P, L.conv_w.ptr(), L.conv_b.ptr(), cst,
                            w.conv.ptr, CD, s);
            if (c.arch == Arch::Mamba1) {
                project(ldbc, E, w.conv.ptr, L.x_proj, L.x_proj16, w.dbc.ptr, 0.0f);
                kc::Mamba1ScanArgs a;
                a.T = 1, a.E = E, a.N = N;
                a.x = w.conv.ptr, a.ldx = CD, a.delta = w.dbc.ptr, a.ldd = ldbc;  // dt_proj fused
                a.dt_proj_w = L.dt_proj_w.ptr(), a.dt_rank = Rdt;
                a.delta_bias = L.dt_proj_b.ptr(), a.delta_softplus = true, a.A = L.A.ptr();
                a.B = w.dbc.ptr + Rdt, a.ldb = ldbc, a.C = w.dbc.ptr + Rdt + N, a.ldc = ldbc;
                a.Dskip = L.Dskip.ptr(), a.z = w.proj.ptr + E, a.ldz = P, a.thr = thr, a.h = h;
                a.y = w.y.ptr, a.ldy = E, a.fast_exp = kScanFastExp;
                kc::scan_mamba1(a, nullptr, 0, s);
            } else {
                kc::Mamba2ScanArgs a;
                a.T = 1, a.H = c.n_heads, a.P = c.head_dim, a.G = c.n_groups, a.N = N;
                a.x = w.conv.ptr, a.ldx = CD;
                a.delta = w.proj.ptr + 2 * E + 2 * GN, a.ldd = P, a.delta_bias = L.dt_bias.ptr();
                a.delta_softplus = true;
                a.A = L.A.ptr(), a.B = w.conv.ptr + E, a.ldb = ldbc, a.C = w.conv.ptr + E + GN, a.ldc = ldbc;
                a.Dskip = L.Dskip.ptr(), a.thr = thr, a.s = h, a.y = w.y.ptr, a.ldy = E;
                kc::scan_mamba2(a, nullptr, 0, s);
                if (bf16) {  // the gated norm writes out_proj's bf16 input (one conversion node fewer)
                    kc::gated_rmsnorm_bf16(1, E, c.norm_groups(), w.y.ptr, E, w.proj.ptr, P,
                                           L.gate_norm.ptr(), eps, w.y16.ptr, E, s);
                    kc::gemv(D, E, L.out_proj16->ptr, E, w.y16.ptr, w.x.ptr, 1.0f, s);
                    continue;
                }
                kc::gated_rmsnorm(1, E, c.norm_groups(), w.y.ptr, E, w.proj.ptr, P, L.gate_norm.ptr(), eps,
                                  s);
            }
            project(D, E, w.y.ptr, L.out_proj, L.out_proj16, w.x.ptr, 1.0f);
        }
        // head: logits = rmsnorm(x)·lm_headᵀ
        if (bf16 && fuse_norm && tail_in_head_) {
            kc::gemv_rmsnorm_argmax(V, D, lm_head16_->ptr, D, w.x.ptr, dm.norm_f.ptr(), eps, w.logits.ptr,
                                    tail_n_, recording_run_ ? &run_.ptr->key : step_key(), s);
        } else if (bf16 && fuse_norm) {
            kc::gemv_rmsnorm(V, D, lm_head16_->ptr, D, w.x.ptr, dm.norm_f.ptr(), eps, w.logits.ptr, 0.0f, s);
        } else if (bf16) {
            kc::rmsnorm_bf16(1, D, w.x.ptr, D, dm.norm_f.ptr(), eps, w.u16.ptr, D, s);
            kc::gemv(V, D, lm_head16_->ptr, D, w.u16.ptr, w.logits.ptr, 0.0f, s);
        } else {
            kc::rmsnorm(1, D, w.x.ptr, D, dm.norm_f.ptr(), eps, w.xn.ptr, D, s);
            kc::gemv(V, D, dm.lm_head.ptr(), D, w.xn.ptr, w.logits.ptr, 0.0f,
                     s);  // fp32, as the prefill's head
        }
        (void)C;
        join_l2_branch();
        if (!recording_run_) record_tail();  // a run's step leaves its key on the device
    }

    // The L2 branch (docs/cuda.md, "The L2 branch"): a prefetch kernel on branch_, after what stream_ has
    // recorded so far (the layer's in_proj), and after the branch's previous kernel; nothing on stream_ waits
    // for it until join_l2_branch.
    void record_l2_branch(const kc::L2Ranges& ranges) {
        if (ranges.n == 0) return;
        CUDA_CHECK(cudaEventRecord(fork_, stream_));
        CUDA_CHECK(cudaStreamWaitEvent(branch_, fork_, 0));
        kc::prefetch_l2_ranges(ranges, branch_);
        branch_open_ = true;
    }
    // Joins the branch back into stream_ (a capture must end with every stream it forked joined): the step's
    // last nodes then wait for the branch's last kernel, which by then has long finished.
    void join_l2_branch() {
        if (!branch_open_) return;
        CUDA_CHECK(cudaEventRecord(join_, branch_));
        CUDA_CHECK(cudaStreamWaitEvent(stream_, join_, 0));
        branch_open_ = false;
    }

    // The step's last nodes: the logits row into pinned memory, or (a greedy graph) the key of the argmax the
    // head took, or the argmax kernel over logits [0, tail_n_) and its id.
    void record_tail() {
        if (tail_n_ > 0 && tail_in_head_) {
            CUDA_CHECK(cudaMemcpyAsync(next_key_host_, step_key(), sizeof(unsigned long long),
                                       cudaMemcpyDeviceToHost, stream_));
            return;
        }
        if (tail_n_ > 0) {
            kc::argmax(tail_n_, ws_.logits.ptr, next_id_.ptr, stream_);
            CUDA_CHECK(
                cudaMemcpyAsync(next_host_, next_id_.ptr, sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
            return;
        }
        CUDA_CHECK(cudaMemcpyAsync(logits_host_, ws_.logits.ptr, size_t(model_.vocab_rows()) * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream_));
    }

    // Builds graph slot 0 (the logits row out) or 1 (greedy over [0, n)) into graphs_/execs_; leaves
    // use_graph_ false when no graph could be captured.
    void build(int slot, int64_t n) {
        tail_n_ = n;
        // the argmax inside the head: the bf16 head with its norm inside (gemv_rmsnorm) and MAMBASCOPE_ARGMAX
        // unset or "head" (try_persistent clears it: its kernel writes the logits itself)
        tail_in_head_ = n > 0 && opt_.precision == Precision::Bf16 &&
                        model_.config.d_model <= kc::kGemvNormMaxK &&
                        kc::argmax_mode() == kc::ArgmaxMode::Head;
        build_graph();
        graphs_[slot] = graph_, execs_[slot] = exec_;
        graph_ = nullptr, exec_ = nullptr;
        if (slot == 1) {
            greedy_in_head_ = tail_in_head_;
            info_.greedy_argmax = tail_in_head_ ? "head" : "kernel";
        }
    }

    // Builds slot 2: run_steps_ greedy steps over [0, n) fed on the device, where the head takes the argmax
    // (else slot 2 stays empty and runs loop over step_greedy). Within a step the edges are programmatic
    // under PDL as in the step graph; the edge from a step's head into the next step's embedding stays a
    // full dependency (embed_greedy_run is not PDL-aware: greedy_run.cu says why).
    void build_run(int64_t n) {
        prepare();
        run_n_ = n;
        tail_n_ = n;
        tail_in_head_ = n > 0 && opt_.precision == Precision::Bf16 &&
                        model_.config.d_model <= kc::kGemvNormMaxK &&
                        kc::argmax_mode() == kc::ArgmaxMode::Head;
        if (!tail_in_head_ || persistent_kind_ != PersistentKernel::Off) return;
        if (!run_.ptr) {
            run_.resize(1), run_ids_.resize(size_t(kRunCap));
            CUDA_CHECK(cudaMallocHost(&run_host_, sizeof(kc::GreedyRun)));
            CUDA_CHECK(cudaMallocHost(&run_ids_host_, size_t(kRunCap) * sizeof(int32_t)));
        }
        std::string pdl_name;
        const PdlMode mode = decode_pdl_mode(&pdl_name);
        recording_run_ = true;
        const int64_t nodes = info_.kernel_nodes;
        const bool captured = capture([&] {
            for (int64_t k = 0; k < run_steps_; ++k) record_step();
        });
        recording_run_ = false;
        info_.greedy_run_kernel_nodes = info_.kernel_nodes;
        info_.kernel_nodes = nodes;  // kernel_nodes describes the step graph
        if (!captured) return;
        info_.greedy_run_programmatic_edges =
            mode != PdlMode::Off ? make_kernel_edges_programmatic(graph_, mode, pdl_launch_per_sm_) : 0;
        if (info_.greedy_run_programmatic_edges > 0) info_.pdl_mode = pdl_name;
        if (cudaGraphInstantiate(&exec_, graph_, 0) != cudaSuccess) {
            cudaGetLastError();
            exec_ = nullptr;
            cudaGraphDestroy(graph_);
            graph_ = nullptr;
            return;  // the loop over step_greedy
        }
        graphs_[2] = graph_, execs_[2] = exec_;
        graph_ = nullptr, exec_ = nullptr;
    }

    void build_graph() {
        prepare();
        std::string pdl_name;
        const PdlMode mode = decode_pdl_mode(&pdl_name);
        if (try_persistent()) return;
        if (!capture([&] { record_step(); })) {
            use_graph_ = false;  // the per-kernel path still works
            info_.conv_fused = info_.xproj_fused = info_.z_branch = info_.early_launch = false;
            return;
        }
        if (mode != PdlMode::Off) {
            // PDL edges (docs/cuda.md, "Decoding on the GPU"); a driver that refuses them gets the graph as
            // captured.
            info_.programmatic_edges =
                make_kernel_edges_programmatic(graph_, mode, pdl_launch_per_sm_, &info_.launch_port_edges);
            if (cudaGraphInstantiate(&exec_, graph_, 0) == cudaSuccess) {
                info_.pdl_mode = info_.programmatic_edges > 0 ? pdl_name : "off";
                return;
            }
            cudaGetLastError();
            exec_ = nullptr;
            cudaGraphDestroy(graph_);
            graph_ = nullptr;
            info_.programmatic_edges = 0;
            if (!capture([&] { record_step(); })) {
                use_graph_ = false;
                return;
            }
        }
        CUDA_CHECK(cudaGraphInstantiate(&exec_, graph_, 0));
    }

    // Device weights, buffers, pinned memory and the stream, once per decoder.
    void prepare() {
        if (prepared_) return;
        const ModelConfig& c = model_.config;
        DevModel& dm = device_model(model_);
        const bool bf16 = opt_.precision == Precision::Bf16;
        if (bf16) {
            ensure_bf16_weights(model_, dm);
            lm_head16_ = to_bf16_copy(dm.lm_head, model_.vocab_rows() * c.d_model, dm.stream);
        }
        CUDA_CHECK(cudaStreamSynchronize(dm.stream));
        const int64_t D = c.d_model, E = c.d_inner, P = c.in_proj_rows(), CD = c.conv_dim();
        const int64_t ldbc = c.arch == Arch::Mamba1 ? c.dt_rank + 2 * c.d_state : CD;
        Workspace& w = ws_;
        w.ids.resize(1), w.x.resize(size_t(D)), w.u.resize(size_t(D)), w.xn.resize(size_t(D));
        w.proj.resize(size_t(P)), w.conv.resize(size_t(CD)), w.dbc.resize(size_t(ldbc));
        w.dt.resize(size_t(E)), w.y.resize(size_t(E)), w.logits.resize(size_t(model_.vocab_rows()));
        w.a16.resize(size_t(std::max({D, E, P, CD}))), w.u16.resize(size_t(D)), w.conv16.resize(size_t(CD));
        w.y16.resize(size_t(E)), w.proj16.resize(size_t(P)), w.dbc16.resize(size_t(ldbc)),
            w.dt16.resize(size_t(E));
        if (xproj_fused_) {
            ensure_x_proj_transposed(model_, dm);
            w.xparts.resize(size_t(kc::gemv_xproj_parts(E) * ldbc));
            const int64_t counters = kc::gemv_xproj_counters(E);
            w.xcount.resize(size_t(counters));
            CUDA_CHECK(cudaMemset(w.xcount.ptr, 0, size_t(counters) * sizeof(unsigned)));
        }
        CUDA_CHECK(cudaMallocHost(&id_host_, kStepInInts * sizeof(int32_t)));
        std::fill(id_host_, id_host_ + kStepInInts, 0);  // the key's words stay 0
        step_in_.resize(kStepInInts);
        CUDA_CHECK(cudaMallocHost(&next_host_, sizeof(int32_t)));
        CUDA_CHECK(cudaMallocHost(&next_key_host_, sizeof(unsigned long long)));
        CUDA_CHECK(cudaMallocHost(&logits_host_, size_t(model_.vocab_rows()) * sizeof(float)));
        next_id_.resize(1);
        CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
        if (z_branch_) {  // z on a branch: its stream and its fork and join events
            CUDA_CHECK(cudaStreamCreateWithFlags(&zstream_, cudaStreamNonBlocking));
            CUDA_CHECK(cudaEventCreateWithFlags(&zfork_, cudaEventDisableTiming));
            CUDA_CHECK(cudaEventCreateWithFlags(&zjoin_, cudaEventDisableTiming));
        }
        if (l2_ahead_ == kDecodeL2Branch) {  // the L2 branch's stream and its fork and join events
            CUDA_CHECK(cudaStreamCreateWithFlags(&branch_, cudaStreamNonBlocking));
            CUDA_CHECK(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming));
            CUDA_CHECK(cudaEventCreateWithFlags(&join_, cudaEventDisableTiming));
        }
        prepared_ = true;
    }

    // The persistent decode kernel (docs/cuda.md, "The persistent decode kernel"): the step graph becomes
    // the id's copy → one cooperative kernel → the logits' copy. False, with info_.persistent_note saying
    // why, when the precision, the architecture, the shapes or the driver do not take it (the caller then
    // captures the step graph of one kernel per operation; both give the same logits bit for bit).
    bool try_persistent() {
        const ModelConfig& c = model_.config;
        if (opt_.precision != Precision::Bf16) {
            info_.persistent_note = "float32 projections (the persistent kernel is the bf16 chain)";
            return false;
        }
        if (c.arch != Arch::Mamba1) {
            info_.persistent_note = "Mamba-2 (the persistent kernel is Mamba-1's)";
            return false;
        }
        const PersistentKernel kind = persistent_kind_;
        if (kind == PersistentKernel::Off) {
            info_.persistent_note = "opt-in (MAMBASCOPE_DECODE_PERSISTENT=1 or ring)";
            return false;
        }
        DevModel& dm = device_model(model_);
        Workspace& w = ws_;
        kc::Mamba1DecodeArgs a;
        a.D = c.d_model, a.E = c.d_inner, a.R = c.dt_rank, a.N = c.d_state, a.K = c.d_conv;
        a.n_layer = c.n_layer, a.V = model_.vocab_rows(), a.eps = static_cast<float>(c.norm_eps);
        a.fast_exp = kScanFastExp;
        a.ring = kind == PersistentKernel::Ring;
        a.id = w.ids.ptr, a.embedding = dm.embedding.ptr(), a.norm_f = dm.norm_f.ptr();
        a.head = lm_head16_ ? lm_head16_->ptr : nullptr;
        a.x = w.x.ptr, a.proj16 = w.proj16.ptr, a.conv16 = w.conv16.ptr, a.dbc16 = w.dbc16.ptr;
        a.y16 = w.y16.ptr, a.logits = w.logits.ptr;
        std::vector<kc::Mamba1DecodeLayer> layers(size_t(c.n_layer));
        for (size_t l = 0; l < layers.size(); ++l) {
            const DevLayer& L = dm.layers[l];
            kc::Mamba1DecodeLayer& m = layers[l];
            m.norm = L.norm.ptr(), m.in_proj = L.in_proj16 ? L.in_proj16->ptr : nullptr;
            m.conv_w = L.conv_w.ptr(), m.conv_b = L.conv_b.ptr();
            m.x_proj = L.x_proj16 ? L.x_proj16->ptr : nullptr;
            m.dt_proj_w = L.dt_proj_w.ptr(), m.dt_proj_b = L.dt_proj_b.ptr(), m.A = L.A.ptr();
            m.Dskip = L.Dskip.ptr(), m.out_proj = L.out_proj16 ? L.out_proj16->ptr : nullptr;
            m.thr = thr_.empty() ? nullptr : thr_[l].ptr;
            m.h = state_.ssm[l].ptr, m.conv_state = state_.conv[l].ptr;
        }
        layers_.upload(layers.data(), layers.size());
        barrier_.resize(1);
        a.layers = layers_.ptr, a.barrier = barrier_.ptr;
        const std::string why = kc::decode_mamba1_unsupported(a, layers);
        if (!why.empty()) {
            info_.persistent_note = why;
            return false;
        }
        const int blocks = kc::decode_mamba1_blocks(a.ring);
        tail_in_head_ = false;  // the persistent kernel's head: the argmax kernel after it
        const bool captured = capture([&] {
            CUDA_CHECK(
                cudaMemcpyAsync(w.ids.ptr, id_host_, sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
            kc::decode_mamba1_step(a, stream_, blocks);
            record_tail();
        });
        if (captured && cudaGraphInstantiate(&exec_, graph_, 0) == cudaSuccess) {
            info_.persistent = true;
            info_.conv_fused = info_.xproj_fused = false;  // the persistent kernel folds them its own way
            info_.z_branch = info_.early_launch = false;   // nor does it take the step graph's edges
            info_.persistent_blocks = blocks;
            info_.persistent_ring = a.ring;
            info_.persistent_note.clear();
            return true;
        }
        cudaGetLastError();  // a driver without cooperative graph nodes: the step graph instead
        exec_ = nullptr;
        if (graph_) cudaGraphDestroy(graph_);
        graph_ = nullptr;
        info_.graph = false;
        info_.persistent_note = "the cooperative launch could not be captured into a graph";
        return false;
    }

    // Records `record` (the step's work on stream_) into graph_; false when the capture failed.
    template <class Record>
    bool capture(Record&& record) {
        CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
        try {
            const kc::GemvTriggerDefault trigger(early_launch_);  // the captured projections' default
            record();
        } catch (const Error&) {
            branch_open_ = false;  // the L2 branch's fork goes with the broken capture
            cudaGraph_t broken = nullptr;
            cudaStreamEndCapture(stream_, &broken);
            if (broken) cudaGraphDestroy(broken);
            cudaGetLastError();
            return false;
        }
        CUDA_CHECK(cudaStreamEndCapture(stream_, &graph_));
        size_t n = 0;
        CUDA_CHECK(cudaGraphGetNodes(graph_, nullptr, &n));
        std::vector<cudaGraphNode_t> nodes(n);
        CUDA_CHECK(cudaGraphGetNodes(graph_, nodes.data(), &n));
        info_.graph = true;
        info_.kernel_nodes = 0;
        for (cudaGraphNode_t node : nodes) info_.kernel_nodes += graph_node_kernel(node) ? 1 : 0;
        return true;
    }

    const Model& model_;
    DevState state_;
    Workspace ws_;
    ForwardOptions opt_;
    DeltaFilter filter_;               // a copy: the caller's may go away
    std::vector<DevBuf<float> > thr_;  // (n_layer)(C) on the device, or empty (no filter)
    bool use_graph_ = true;
    bool conv_fused_ = false;      // the step graph's conv inside in_proj's gemv (gemv_rmsnorm_conv)
    bool xproj_fused_ = false;     // and x_proj too (gemv_rmsnorm_conv_xproj)
    int l2_ahead_ = 0;             // MAMBASCOPE_DECODE_L2_AHEAD
    int64_t l2_ahead_budget_ = 0;  // bytes of the next in_proj / LM head that out_proj's kernel prefetches
                                   // (2), or that one launch of the L2 branch prefetches (branch)
    cudaStream_t stream_ = nullptr;
    cudaStream_t branch_ = nullptr;                      // the L2 branch's stream (captured only)
    cudaEvent_t fork_ = nullptr, join_ = nullptr;        // its fork from and join into stream_
    bool branch_open_ = false;                           // a branch kernel recorded since the last join
    int64_t pdl_launch_per_sm_ = kPdlLaunchBlocksPerSm;  // MAMBASCOPE_DECODE_PDL_LAUNCH_PER_SM
    bool early_launch_ = false;  // decode_early_launch: the projections trigger after their wait
    PersistentKernel persistent_kind_ = PersistentKernel::Off;  // MAMBASCOPE_DECODE_PERSISTENT
    bool z_branch_ = false;                                     // MAMBASCOPE_DECODE_Z_BRANCH where it applies
    cudaStream_t zstream_ = nullptr;                            // its stream (captured only)
    cudaEvent_t zfork_ = nullptr;                               // its fork after in_proj's x half
    cudaEvent_t zjoin_ = nullptr;                               // its join before the scan step
    std::shared_ptr<DevBuf<__nv_bfloat16> > lm_head16_;
    DevBuf<kc::Mamba1DecodeLayer> layers_;  // the persistent kernel's layer table (device)
    DevBuf<unsigned> barrier_;              // its grid barrier's counter
    // The step's input as the graph copies it to the device (step_in_): the id, a pad word, then the folded
    // argmax's 64-bit key, which the host side keeps at 0 so that the copy resets it every step (no node of
    // its own). cudaMalloc'd memory is 256-byte aligned, so the key at 8 bytes is 8-byte aligned.
    static constexpr int64_t kStepInInts = 4;
    unsigned long long* step_key() const { return reinterpret_cast<unsigned long long*>(step_in_.ptr + 2); }
    DevBuf<int32_t> step_in_;
    int32_t* id_host_ = nullptr;    // pinned (kStepInInts): the graph's H2D copy reads the id from here
    float* logits_host_ = nullptr;  // pinned: the graph's D2H copy writes the logits here
    cudaGraph_t graph_ = nullptr;   // the graph being built (build() moves it into graphs_)
    cudaGraphExec_t exec_ = nullptr;
    // slot 0: the logits row out; slot 1: greedy (the argmax's id out); slot 2: a greedy run's steps
    static constexpr int kSlots = 3;
    cudaGraph_t graphs_[kSlots] = {};
    cudaGraphExec_t execs_[kSlots] = {};
    int64_t greedy_n_ = 0;         // the candidate count slot 1 was built for
    int64_t tail_n_ = 0;           // while building: 0 = the logits row out, n = greedy over [0, n)
    bool tail_in_head_ = false;    // while building: the head takes the argmax (gemv_rmsnorm_argmax)
    bool greedy_in_head_ = false;  // slot 1's head took it: the step's result is next_key_host_
    bool prepared_ = false;
    DevBuf<int32_t> next_id_;       // the argmax's output
    int32_t* next_host_ = nullptr;  // pinned: the greedy graph copies the next id here (the argmax kernel)
    unsigned long long* next_key_host_ = nullptr;  // or the key (the argmax inside the head)
    // A greedy run (step_greedy_run): its device state, the ids its steps were fed (kRunCap per copy back)
    static constexpr int64_t kRunCap = 1024;  // a multiple of every MAMBASCOPE_DECODE_RUN
    int64_t run_steps_ = 0;                   // steps per launch of slot 2 (MAMBASCOPE_DECODE_RUN)
    int64_t run_n_ = 0;                       // the candidate count slot 2 was built for
    bool recording_run_ = false;              // while building slot 2
    DevBuf<kc::GreedyRun> run_;
    DevBuf<int32_t> run_ids_;
    kc::GreedyRun* run_host_ = nullptr;  // pinned
    int32_t* run_ids_host_ = nullptr;    // pinned (kRunCap)
    DecodeGraphInfo info_;
};

}  // namespace

std::unique_ptr<DecoderBackend> make_cuda_decoder(const Model& model, const ModelState& state,
                                                  Precision precision) {
    return make_cuda_decoder(model, state, precision, nullptr);
}

std::unique_ptr<DecoderBackend> make_cuda_decoder(const Model& model, const ModelState& state,
                                                  Precision precision, const DeltaFilter* filter) {
    MS_CHECK(static_cast<int64_t>(state.layers.size()) == model.config.n_layer,
             "state does not belong to this model");
    return std::make_unique<CudaDecoder>(model, state, precision, filter);
}

}  // namespace detail
#endif

}  // namespace mambascope
