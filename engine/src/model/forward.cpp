// CPU forward: chunked prefill, decode step, streaming NLL; see mambascope/forward.h.
//
// Per chunk of R rows (token-major), for every layer ℓ (method doc §1.1–§1.3):
//   u = RMSNorm(x; norm_ℓ)                         x, u (R, D)      x is the fp32 residual stream
//   Mamba-1: [xi ; z] = u·in_projᵀ                  (R, 2E)
//            x' = silu(conv(xi))                    (R, E)   conv state carried
//            [δ ; B ; C] = x'·x_projᵀ               (R, R_dt + 2N)
//            Δ = softplus(δ·dt_projᵀ + b_dt)        (R, E)
//            y = scan(x', Δ, A, B, C, D) ⊙ silu(z)  (R, E)   ssm state carried, filter inside
//   Mamba-2: [z ; xBC ; dt] = u·in_projᵀ            (R, 2E + 2GN + H)
//            xBC' = silu(conv(xBC))                 (R, E + 2GN)
//            Δ = clamp(softplus(dt + dt_bias))      (R, H)
//            y = gated_rmsnorm(scan(x, Δ, A, B, C, D), z)
//   x ← x + y·out_projᵀ
// then logits = RMSNorm(x; norm_f)·lm_headᵀ, a few rows at a time; for the NLL the logits are reduced
// blockwise over the vocabulary (log-sum-exp) and never exist as rows × V.
// Every projection is one kernels::sgemm_nt call (the BLAS chosen at configure time, cpu/gemm.h).
//
// OpenMP regions of our own (a fork and a closing barrier each) per layer and chunk, besides one per GEMM:
// Mamba-1 five (RMSNorm; conv + SiLU; softplus; scan; gate), Mamba-2 four (RMSNorm; conv + SiLU; scan; gated
// RMSNorm; its Δ, R × H values, is computed on one thread). Folding softplus and the gate into the scan's
// region (one region instead of three) was measured slower on the issue-16 machine, in the scan's loop or as
// passes over each 16-channel block: the separate passes stream whole rows (docs/benchmarks.md, issue 16).
#include "mambascope/forward.h"

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <unistd.h>

#include "cpu/activations.h"
#include "cpu/conv1d.h"
#include "cpu/gemm.h"
#include "cpu/norm.h"
#include "cpu/scan.h"
#include "mambascope/error.h"
#include "model/backend.h"

namespace mambascope {
namespace {

using MatRM = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
// Vocabulary columns per block of the fused head + NLL: one thread's block of logits (kHeadChunkTokens ×
// this × 4 bytes = 512 KB) stays in its core's cache between the GEMM that writes it and the log-sum-exp that
// reads it.
constexpr int64_t kHeadVocabBlock = 1024;

// out (R, O) = in (R, I) · Wᵀ (W: O × I) [+ bias]
void linear(const MatRM& in, const Tensor& W, const Tensor& bias, MatRM& out) {
    const int64_t R = in.rows(), I = in.cols(), O = W.dim(0);
    MS_CHECK(W.numel() == O * I, "linear: weight shape does not match the input width");
    out.resize(R, O);
    float beta = 0.0f;
    if (bias.data) {  // out = bias (each row), then out += in · Wᵀ
        out.rowwise() = Eigen::Map<const Eigen::RowVectorXf>(bias.data, bias.numel());
        beta = 1.0f;
    }
    kernels::sgemm_nt(R, O, I, in.data(), I, W.data, I, beta, out.data(), O);
}

// Rows 0..|sel| of `out` = the rows of `m` listed in `sel`. `out` keeps m's shape (a buffer reused from chunk
// to chunk whatever the number of kept rows: no allocation per chunk); rows past |sel| are unused.
void gather_rows(const MatRM& m, const std::vector<int64_t>& sel, MatRM& out) {
    if (out.rows() != m.rows() || out.cols() != m.cols()) out.resize(m.rows(), m.cols());
    for (size_t i = 0; i < sel.size(); ++i) out.row(static_cast<int64_t>(i)) = m.row(sel[i]);
}

// Rows [lo, hi) of a chunk whose positions (increasing) fall in the sink's window.
std::pair<int64_t, int64_t> window_rows(const ActivationSink& sink, const std::vector<int64_t>& positions) {
    const auto lo = std::lower_bound(positions.begin(), positions.end(), sink.begin());
    const auto hi = std::lower_bound(lo, positions.end(), sink.end());
    return {lo - positions.begin(), hi - positions.begin()};
}

// Hands rows [lo, hi) of a (rows × width, stride ld) matrix to the sink, when it wants them.
void emit(ActivationSink* sink, ActivationKind kind, int layer, const float* data, int64_t width, int64_t ld,
          const std::vector<int64_t>& positions, std::pair<int64_t, int64_t> rows) {
    if (!sink || rows.second <= rows.first || !sink->wants(kind, layer)) return;
    sink->on_activation(ActivationBlock{kind, layer, rows.second - rows.first, width, data + rows.first * ld,
                                        ld, positions.data() + rows.first});
}

// Per-run buffers, sized by the first chunk and reused by every later chunk and layer (Eigen's resize to the
// same size keeps the memory): no per-chunk allocation, so no page faults after the first chunk.
struct Scratch {
    MatRM u, proj, conv_out, dbc, delta, delta_raw, y;
    MatRM conv_sel, dbc_sel, delta_sel, proj_sel;  // DeciMamba's kept rows
    std::vector<int64_t> sel, kept;
};

// The head's buffers, also reused across chunks.
struct HeadScratch {
    MatRM xn;                     // (rows, D) final-normed rows
    MatRM logits;                 // (rows, V) full rows, only for rows a logits sink asked for
    std::vector<float> block;     // per thread: (kHeadChunkTokens, kHeadVocabBlock) logits of one block
    std::vector<float> row_max;   // per thread: (kHeadChunkTokens) running max of a row's logits
    std::vector<double> row_sum;  // per thread: (kHeadChunkTokens) Σ exp(ℓ − row_max) so far
    std::vector<float> target_logit, nll;  // (kHeadChunkTokens)
    std::vector<int64_t> need, target;     // rows of the chunk that need the head; their target ids
    std::vector<uint8_t> to_sink;
};

// Online log-sum-exp over one block of a row (the streaming softmax normaliser): before and after,
// Σ_{v seen} exp(ℓ_v) = s · e^m. The block's terms exp(ℓ_v − m_block) are summed on 16 float lanes (at most
// kHeadVocabBlock / 16 terms per lane), blocks are combined in double.
void lse_block(const float* l, int64_t w, float& m, double& s) {
    using kernels::vf16;
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    // m_block = max_v ℓ_v, 16 lanes then across them
    vf16 mx = kernels::vsplat(kNegInf);
    int64_t v = 0;
    for (; v + 16 <= w; v += 16) {
        vf16 t;
        std::memcpy(&t, l + v, sizeof t);
        mx = t > mx ? t : mx;
    }
    float bm = kNegInf;
    for (int k = 0; k < 16; ++k) bm = std::max(bm, mx[k]);
    for (; v < w; ++v) bm = std::max(bm, l[v]);
    if (bm == kNegInf) return;
    vf16 acc{};
    const vf16 shift = kernels::vsplat(bm);
    v = 0;
    for (; v + 16 <= w; v += 16) {
        vf16 t;
        std::memcpy(&t, l + v, sizeof t);
        acc += kernels::vexp16(t - shift);
    }
    float bs = 0.0f;
    for (int k = 0; k < 16; ++k) bs += acc[k];
    for (; v < w; ++v) bs += kernels::fast_exp(l[v] - bm);
    if (bm > m) {
        s = s * std::exp(static_cast<double>(m) - bm) + bs;
        m = bm;
    } else {
        s += bs * std::exp(static_cast<double>(bm) - m);
    }
}

// Runs one layer on the chunk; x (R, D) and positions (R) are updated in place (rows can be dropped by
// DeciMamba).
void layer_chunk(const Model& model, int li, MatRM& x, std::vector<int64_t>& positions, LayerState& st,
                 const ForwardOptions& opt, Scratch& s) {
    const ModelConfig& c = model.config;
    const LayerWeights& w = model.layers[static_cast<size_t>(li)];
    const int64_t R = x.rows(), D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv;
    const int64_t C = c.channels();
    const float eps = static_cast<float>(c.norm_eps);

    // u = RMSNorm(x)  (R, D)
    s.u.resize(R, D);
    kernels::rmsnorm(R, D, x.data(), D, w.norm.data, eps, s.u.data(), D);
    linear(s.u, w.in_proj, w.in_proj_b, s.proj);  // (R, in_proj_rows)
    const int64_t P = s.proj.cols();

    // Depthwise conv + SiLU over x (M1) or xBC (M2), state carried.
    const int64_t conv_dim = c.conv_dim();
    const int64_t conv_col = c.arch == Arch::Mamba1 ? 0 : E;  // column of the conv input within proj
    s.conv_out.resize(R, conv_dim);
    kernels::conv1d_silu(R, conv_dim, K, s.proj.data() + conv_col, P, w.conv_w.data, w.conv_b.data,
                         st.conv.data(), s.conv_out.data(), conv_dim);

    // Δ (R, C) after softplus (and the dt limit for Mamba-2).
    const float* Bp;
    const float* Cp;
    int64_t ldbc;
    if (c.arch == Arch::Mamba1) {
        linear(s.conv_out, w.x_proj, Tensor{}, s.dbc);  // (R, R_dt + 2N)
        const int64_t Rdt = c.dt_rank;
        // δ·dt_projᵀ   δ = dbc[:, :R_dt] (R, R_dt), dt_proj (E, R_dt)
        s.delta.resize(R, E);
        kernels::sgemm_nt(R, E, Rdt, s.dbc.data(), s.dbc.cols(), w.dt_proj_w.data, Rdt, 0.0f, s.delta.data(),
                          E);
        kernels::softplus_bias_inplace(R, E, s.delta.data(), w.dt_proj_b.data);
        Bp = s.dbc.data() + Rdt;
        Cp = s.dbc.data() + Rdt + N;
        ldbc = s.dbc.cols();
    } else {
        const int64_t H = c.n_heads, GN = c.n_groups * N;
        s.delta.resize(R, H);
        const float lo = static_cast<float>(c.dt_limit_min), hi = static_cast<float>(c.dt_limit_max);
        const bool clamp = c.dt_limit_min > 0.0 || std::isfinite(c.dt_limit_max);
        for (int64_t r = 0; r < R; ++r) {
            const float* dtr = s.proj.data() + r * P + 2 * E + 2 * GN;
            for (int64_t h = 0; h < H; ++h) {
                float d = kernels::softplus(dtr[h] + w.dt_bias.data[h]);
                if (clamp) d = std::min(std::max(d, lo), hi);
                s.delta(r, h) = d;
            }
        }
        Bp = s.conv_out.data() + E;
        Cp = s.conv_out.data() + E + GN;
        ldbc = conv_dim;
    }

    // DeciMamba: keep only the listed positions from here on (method doc §4).
    std::vector<int64_t>& sel = s.sel;
    sel.clear();
    if (opt.keep_positions) {
        auto it = opt.keep_positions->find(li);
        if (it != opt.keep_positions->end()) {
            const auto& keep = it->second;
            for (int64_t r = 0; r < R; ++r)
                if (std::binary_search(keep.begin(), keep.end(), positions[static_cast<size_t>(r)]))
                    sel.push_back(r);
            if (static_cast<int64_t>(sel.size()) == R)
                sel.clear();
            else if (sel.empty()) {
                // Nothing of this chunk survives: the chunk ends here for all later layers.
                x.resize(0, D);
                positions.clear();
                return;
            }
        }
    }
    const float* xin = s.conv_out.data();
    int64_t ldx = conv_dim;
    const float* zin = c.arch == Arch::Mamba1 ? s.proj.data() + E : s.proj.data();
    int64_t ldz = P;
    MatRM* delta = &s.delta;
    int64_t Rk = R;
    if (!sel.empty()) {
        Rk = static_cast<int64_t>(sel.size());
        gather_rows(s.conv_out, sel, s.conv_sel);
        gather_rows(s.proj, sel, s.proj_sel);
        gather_rows(s.delta, sel, s.delta_sel);
        xin = s.conv_sel.data();
        zin = c.arch == Arch::Mamba1 ? s.proj_sel.data() + E : s.proj_sel.data();
        delta = &s.delta_sel;
        if (c.arch == Arch::Mamba1) {
            gather_rows(s.dbc, sel, s.dbc_sel);
            Bp = s.dbc_sel.data() + c.dt_rank;
            Cp = s.dbc_sel.data() + c.dt_rank + N;
        } else {
            Bp = s.conv_sel.data() + E;
            Cp = s.conv_sel.data() + E + c.n_groups * N;
        }
        s.kept.clear();
        for (int64_t r : sel) s.kept.push_back(positions[static_cast<size_t>(r)]);
        positions.swap(s.kept);
        // x ← x[sel] in place (sel is increasing, so row i is read before it is overwritten)
        for (size_t i = 0; i < sel.size(); ++i)
            if (sel[i] != static_cast<int64_t>(i)) x.row(static_cast<int64_t>(i)) = x.row(sel[i]);
        x.conservativeResize(Rk, D);
    }

    const float* thr = nullptr;
    if (opt.filter && !opt.filter->empty()) {
        MS_CHECK(static_cast<int64_t>(opt.filter->threshold.size()) == c.n_layer,
                 "filter has the wrong layer count");
        const auto& t = opt.filter->threshold[static_cast<size_t>(li)];
        MS_CHECK(static_cast<int64_t>(t.size()) == C, "filter has the wrong channel count");
        thr = t.data();
    }
    const bool keep_raw = opt.observer && thr;
    if (keep_raw) s.delta_raw = *delta;

    if (opt.observer && opt.observer->wants_scan_inputs(li)) {
        ScanInputs in{li, Rk, positions.data(), xin, ldx, Bp, Cp, ldbc};
        opt.observer->on_scan_inputs(in);
    }

    // Activation capture: the rows of this chunk inside the sink's window (none when no sink).
    ActivationSink* sink = opt.activations;
    const std::pair<int64_t, int64_t> win =
        sink ? window_rows(*sink, positions) : std::pair<int64_t, int64_t>{};
    const int64_t GN = (c.arch == Arch::Mamba1 ? 1 : c.n_groups) * N;
    if (sink) {
        emit(sink, ActivationKind::X, li, xin, E, ldx, positions, win);
        emit(sink, ActivationKind::B, li, Bp, GN, ldbc, positions, win);
        emit(sink, ActivationKind::C, li, Cp, GN, ldbc, positions, win);
    }

    // Selective scan with the filter inside; Δ becomes the Δ actually used. Rows [r0, r1) of the chunk, state
    // carried in st.ssm, so a split scan equals one pass.
    s.y.resize(Rk, E);
    const auto scan_rows = [&](int64_t r0, int64_t r1) {
        if (r1 <= r0) return;
        if (c.arch == Arch::Mamba1) {
            kernels::scan_mamba1(r1 - r0, E, N, xin + r0 * ldx, ldx, delta->data() + r0 * C, E, w.A.data,
                                 Bp + r0 * ldbc, ldbc, Cp + r0 * ldbc, ldbc, w.Dskip.data, thr, st.ssm.data(),
                                 s.y.data() + r0 * E, E);
        } else {
            kernels::scan_mamba2(r1 - r0, c.n_heads, c.head_dim, c.n_groups, N, xin + r0 * ldx, ldx,
                                 delta->data() + r0 * C, c.n_heads, w.A.data, Bp + r0 * ldbc, ldbc,
                                 Cp + r0 * ldbc, ldbc, w.Dskip.data, thr, st.ssm.data(), s.y.data() + r0 * E,
                                 E);
        }
    };
    if (sink && win.second > win.first && sink->wants(ActivationKind::H, li)) {
        // h after each asked token: the scan stops at every row of the window (state E·N or H·P·N floats).
        const int64_t S = static_cast<int64_t>(st.ssm.size());
        scan_rows(0, win.first);
        for (int64_t r = win.first; r < win.second; ++r) {
            scan_rows(r, r + 1);
            sink->on_activation(
                ActivationBlock{ActivationKind::H, li, 1, S, st.ssm.data(), S, positions.data() + r});
        }
        scan_rows(win.second, Rk);
    } else {
        scan_rows(0, Rk);
    }
    if (sink) emit(sink, ActivationKind::Dt, li, delta->data(), C, C, positions, win);
    if (opt.observer) {
        DeltaBlock used{li, Rk, C, delta->data(), C, positions.data()};
        DeltaBlock raw = used;
        if (keep_raw) raw.data = s.delta_raw.data();
        opt.observer->on_delta(raw, used);
    }

    // Gate and output projection.
    if (c.arch == Arch::Mamba1) {
        kernels::mul_silu_rows(Rk, E, s.y.data(), E, zin, ldz);
    } else {
        kernels::gated_rmsnorm(Rk, E, c.norm_groups(), s.y.data(), E, zin, ldz, w.gate_norm.data, eps);
    }
    // x ← x + y·out_projᵀ (+ b): the GEMM accumulates into the fp32 residual stream (beta = 1).
    MS_CHECK(w.out_proj.numel() == D * E, "out_proj has the wrong shape");
    kernels::sgemm_nt(Rk, D, E, s.y.data(), E, w.out_proj.data, E, 1.0f, x.data(), D);
    if (w.out_proj_b.data) x.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(w.out_proj_b.data, D);
    if (sink) emit(sink, ActivationKind::Resid, li, x.data(), D, D, positions, win);
}

// NLL rows of the head chunk: nll_i = log Σ_v exp(ℓ_iv) − ℓ_i,target   ℓ = xn·lm_headᵀ (n, V), never stored.
// The vocabulary is split into blocks of kHeadVocabBlock columns, contiguous runs of blocks per thread; each
// thread computes its blocks' logits with a single-threaded GEMM (BLAS called inside a parallel region runs
// on the calling thread) into its own cache-sized buffer and folds them into its running (max, sum) per row
// (lse_block); the per-thread partials are merged at the end. One parallel region per head chunk.
void head_nll_blockwise(const float* xn, int64_t n, int64_t D, const float* lm_head, int64_t V,
                        HeadScratch& h) {
    const int64_t n_blocks = (V + kHeadVocabBlock - 1) / kHeadVocabBlock;
#ifdef _OPENMP
    const int max_threads = omp_get_max_threads();
#else
    const int max_threads = 1;
#endif
    const size_t per_thread = static_cast<size_t>(kHeadChunkTokens);
    h.block.resize(static_cast<size_t>(max_threads) * per_thread * kHeadVocabBlock);
    h.row_max.resize(static_cast<size_t>(max_threads) * per_thread);
    h.row_sum.resize(static_cast<size_t>(max_threads) * per_thread);
    h.target_logit.assign(per_thread, 0.0f);
    int used_threads = 1;
#pragma omp parallel num_threads(max_threads)
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const int t = 0, nt = 1;
#endif
        if (t == 0) used_threads = nt;
        float* L = h.block.data() + static_cast<size_t>(t) * per_thread * kHeadVocabBlock;  // (n, Vb)
        float* m = h.row_max.data() + static_cast<size_t>(t) * per_thread;
        double* sum = h.row_sum.data() + static_cast<size_t>(t) * per_thread;
        std::fill(m, m + n, -std::numeric_limits<float>::infinity());
        std::fill(sum, sum + n, 0.0);
        const int64_t b0 = n_blocks * t / nt, b1 = n_blocks * (t + 1) / nt;
        for (int64_t b = b0; b < b1; ++b) {
            const int64_t v0 = b * kHeadVocabBlock, w = std::min(kHeadVocabBlock, V - v0);
            // L (n, w) = xn (n, D) · lm_head[v0 : v0 + w]ᵀ
            kernels::sgemm_nt(n, w, D, xn, D, lm_head + v0 * D, D, 0.0f, L, kHeadVocabBlock);
            for (int64_t i = 0; i < n; ++i) {
                const float* li = L + i * kHeadVocabBlock;
                lse_block(li, w, m[i], sum[i]);
                const int64_t tv = h.target[static_cast<size_t>(i)];
                if (tv >= v0 && tv < v0 + w) h.target_logit[static_cast<size_t>(i)] = li[tv - v0];
            }
        }
    }
    h.nll.resize(per_thread);
    for (int64_t i = 0; i < n; ++i) {
        // log Σ_t s_t·e^{m_t} = M + log Σ_t s_t·e^{m_t − M}
        float M = -std::numeric_limits<float>::infinity();
        for (int t = 0; t < used_threads; ++t)
            M = std::max(M, h.row_max[static_cast<size_t>(t) * per_thread + i]);
        double S = 0;
        for (int t = 0; t < used_threads; ++t) {
            const size_t k = static_cast<size_t>(t) * per_thread + static_cast<size_t>(i);
            if (h.row_sum[k] > 0) S += h.row_sum[k] * std::exp(static_cast<double>(h.row_max[k]) - M);
        }
        h.nll[static_cast<size_t>(i)] =
            static_cast<float>(std::log(S) + M - h.target_logit[static_cast<size_t>(i)]);
    }
}

// Final norm + head over rows; emits NLL and logits rows.
void head_rows(const Model& model, const MatRM& x, const std::vector<int64_t>& positions,
               std::span<const int32_t> ids, int64_t pos_base, const HeadRequest& head, ForwardResult& res,
               size_t& next_logit_req, HeadScratch& h) {
    const ModelConfig& c = model.config;
    const int64_t D = c.d_model, V = model.vocab_rows();
    const bool want_rows = static_cast<bool>(head.logits_sink);
    if (!head.nll && !want_rows) return;
    MS_CHECK(model.lm_head.numel() >= V * D, "lm_head has the wrong shape");
    for (int64_t r0 = 0; r0 < x.rows(); r0 += kHeadChunkTokens) {
        const int64_t rows = std::min<int64_t>(kHeadChunkTokens, x.rows() - r0);
        // Which rows need the head at all: NLL rows (a next id exists) and rows a logits sink asked for.
        h.need.clear();
        h.target.clear();
        h.to_sink.clear();
        for (int64_t r = r0; r < r0 + rows; ++r) {
            const int64_t p = positions[static_cast<size_t>(r)];
            const bool has_target = head.nll && p - pos_base + 1 < static_cast<int64_t>(ids.size());
            bool sink = false;
            if (want_rows) {
                if (head.all_logits)
                    sink = true;
                else {
                    while (next_logit_req < head.logits_positions.size() &&
                           head.logits_positions[next_logit_req] < p)
                        ++next_logit_req;
                    sink = next_logit_req < head.logits_positions.size() &&
                           head.logits_positions[next_logit_req] == p;
                }
            }
            if (!has_target && !sink) continue;
            h.need.push_back(r);
            h.target.push_back(has_target ? ids[static_cast<size_t>(p - pos_base + 1)] : -1);
            h.to_sink.push_back(sink ? 1 : 0);
        }
        const int64_t n = static_cast<int64_t>(h.need.size());
        if (n == 0) continue;
        // xn = RMSNorm(x[need]; norm_f)   (n, D)
        h.xn.resize(kHeadChunkTokens, D);
        for (int64_t i = 0; i < n; ++i)
            kernels::rmsnorm(1, D, x.data() + h.need[static_cast<size_t>(i)] * D, D, model.norm_f.data,
                             static_cast<float>(c.norm_eps), h.xn.data() + i * D, D);
        // NLL of every row with a target, blockwise (rows without one get target −1 and are not read).
        if (head.nll) head_nll_blockwise(h.xn.data(), n, D, model.lm_head.data, V, h);
        // Full logits rows only for the rows a sink asked for.
        if (want_rows) {
            const int64_t n_sink = std::count(h.to_sink.begin(), h.to_sink.end(), uint8_t{1});
            const bool all_rows = n_sink == n;  // e.g. all_logits: one GEMM for the chunk, else row by row
            if (all_rows) {
                // logits (n, V) = xn · lm_headᵀ
                h.logits.resize(kHeadChunkTokens, V);
                kernels::sgemm_nt(n, V, D, h.xn.data(), D, model.lm_head.data, D, 0.0f, h.logits.data(), V);
            } else {
                h.logits.resize(1, V);
            }
            for (int64_t i = 0; i < n; ++i) {
                if (!h.to_sink[static_cast<size_t>(i)]) continue;
                float* row = h.logits.data() + (all_rows ? i * V : 0);
                if (!all_rows)
                    kernels::sgemm_nt(1, V, D, h.xn.data() + i * D, D, model.lm_head.data, D, 0.0f, row, V);
                head.logits_sink(positions[static_cast<size_t>(h.need[static_cast<size_t>(i)])], row, V);
            }
        }
        if (head.nll)
            for (int64_t i = 0; i < n; ++i) {
                if (h.target[static_cast<size_t>(i)] < 0) continue;
                res.nll_positions.push_back(positions[static_cast<size_t>(h.need[static_cast<size_t>(i)])]);
                res.nll.push_back(h.nll[static_cast<size_t>(i)]);
            }
    }
}

}  // namespace

const char* activation_name(ActivationKind k) {
    switch (k) {
        case ActivationKind::X:
            return "x";
        case ActivationKind::B:
            return "B";
        case ActivationKind::C:
            return "C";
        case ActivationKind::Dt:
            return "dt";
        case ActivationKind::H:
            return "h";
        case ActivationKind::Resid:
            return "resid";
    }
    return "?";
}

double ForwardResult::mean_nll() const {
    if (nll.empty()) return std::numeric_limits<double>::quiet_NaN();
    double s = 0;
    for (float v : nll) s += v;
    return s / static_cast<double>(nll.size());
}

void default_passive_omp_wait(char** argv) {
    if (std::getenv("OMP_WAIT_POLICY") || !argv || !argv[0]) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    execv("/proc/self/exe", argv);  // returns only on failure
    unsetenv("OMP_WAIT_POLICY");
}

const char* cpu_gemm_backend() {
    return kernels::sgemm_backend();
}

void cpu_sgemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                  float beta, float* C, int64_t ldc) {
    kernels::sgemm_nt(M, N, K, A, lda, B, ldb, beta, C, ldc);
}

ModelState make_state(const Model& model) {
    const ModelConfig& c = model.config;
    ModelState s;
    s.layers.resize(static_cast<size_t>(c.n_layer));
    const int64_t ssm = c.arch == Arch::Mamba1 ? c.d_inner * c.d_state : c.n_heads * c.head_dim * c.d_state;
    for (auto& l : s.layers) {
        l.conv.assign(static_cast<size_t>((c.d_conv - 1) * c.conv_dim()), 0.0f);
        l.ssm.assign(static_cast<size_t>(ssm), 0.0f);
    }
    return s;
}

void check_ids(const Model& model, std::span<const int32_t> ids) {
    if (ids.empty()) throw Error("empty input: no token ids", "give at least one token");
    const int64_t V = model.vocab_rows();
    for (size_t i = 0; i < ids.size(); ++i)
        if (ids[i] < 0 || ids[i] >= V)
            throw Error("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                            " is out of range [0, " + std::to_string(V) + ")",
                        "the ids must come from this model's tokenizer");
}

const char* device_name(Device d) {
    switch (d) {
        case Device::Cpu:
            return "cpu";
        case Device::Cuda:
            return "cuda";
        case Device::Auto:
            return "auto";
    }
    return "?";
}

const char* precision_name(Precision p) {
    switch (p) {
        case Precision::Fp32:
            return "fp32";
        case Precision::Tf32:
            return "tf32";
        case Precision::Bf16:
            return "bf16";
    }
    return "?";
}

Precision parse_precision(const std::string& s) {
    if (s == "fp32") return Precision::Fp32;
    if (s == "tf32") return Precision::Tf32;
    if (s == "bf16") return Precision::Bf16;
    throw Error("unknown precision '" + s + "'", "precisions are fp32, tf32 (CUDA) and bf16 (CUDA)");
}

Device parse_device(const std::string& s) {
    if (s == "cpu") return Device::Cpu;
    if (s == "cuda") return Device::Cuda;
    if (s == "auto") return Device::Auto;
    throw Error("unknown device '" + s + "'", "devices are cpu, cuda and auto");
}

ForwardResult run_prefill(const Model& model, std::span<const int32_t> ids, ModelState& state,
                          const ForwardOptions& opt, const HeadRequest& head) {
    std::string note;
    if (opt.device != Device::Cpu && opt.activations) {
        note = "CUDA not used: activation capture runs on the CPU backend only; ran on the CPU";
    } else if (opt.device != Device::Cpu && (opt.capture_input || opt.start_from)) {
        note = "CUDA not used: a shared layer input is a CPU backend feature; ran on the CPU";
    } else if (opt.device != Device::Cpu) {
        std::string why;
        if (!cuda_usable(&why)) {
            note = "CUDA not used: " + why + "; ran on the CPU";
        } else if (auto r = detail::cuda_unsupported_reason(model, opt); !r.empty()) {
            note = "CUDA not used: " + r + "; ran on the CPU";
        } else {
            return detail::cuda_run_prefill(model, ids, state, opt, head);
        }
    }
    ForwardResult res = detail::cpu_run_prefill(model, ids, state, opt, head);
    if (opt.precision != Precision::Fp32)
        note += std::string(note.empty() ? "" : "; ") + precision_name(opt.precision) +
                " applies to the CUDA backend only: the CPU computed in float32";
    res.note = note;
    return res;
}

ForwardResult detail::cpu_run_prefill(const Model& model, std::span<const int32_t> ids, ModelState& state,
                                      const ForwardOptions& opt, const HeadRequest& head) {
    check_ids(model, ids);
    const ModelConfig& c = model.config;
    MS_CHECK(static_cast<int64_t>(state.layers.size()) == c.n_layer, "state does not belong to this model");
    MS_CHECK(opt.chunk_tokens > 0, "chunk_tokens must be positive");
    const auto t_start = std::chrono::steady_clock::now();
    const int64_t T = static_cast<int64_t>(ids.size()), D = c.d_model;
    const int64_t pos_base = state.tokens_seen;
    const int last_layer = opt.stop_after_layer >= 0 ? std::min<int>(opt.stop_after_layer, int(c.n_layer) - 1)
                                                     : int(c.n_layer) - 1;
    // Shared prefix: start at start_from->layer from its rows, and/or keep the rows entering
    // capture_input->layer (both (T, D), ForwardOptions).
    const int first_layer = opt.start_from ? opt.start_from->layer : 0;
    if (opt.start_from) {
        MS_CHECK(first_layer >= 0 && first_layer < c.n_layer, "start_from: layer out of range");
        MS_CHECK(opt.start_from->tokens == T && static_cast<int64_t>(opt.start_from->x.size()) == T * D,
                 "start_from: its rows do not match this input (" + std::to_string(opt.start_from->tokens) +
                     " tokens for " + std::to_string(T) + ")");
        MS_CHECK(opt.start_from->chunk_tokens == opt.chunk_tokens,
                 "start_from: its rows were computed in chunks of " +
                     std::to_string(opt.start_from->chunk_tokens) + " tokens, this run's chunks are " +
                     std::to_string(opt.chunk_tokens));
        if (opt.keep_positions && !opt.keep_positions->empty())
            MS_CHECK(opt.keep_positions->begin()->first >= first_layer,
                     "start_from: a decimating layer lies below the start layer");
    }
    LayerInput* capture = opt.capture_input;
    if (capture) {
        MS_CHECK(capture->layer >= first_layer && capture->layer <= last_layer,
                 "capture_input: layer outside the layers this run computes");
        capture->tokens = T;
        capture->chunk_tokens = opt.chunk_tokens;
        capture->x.resize(static_cast<size_t>(T * D));
    }
    ForwardResult res;
    res.tokens = T;
    Scratch s;
    HeadScratch hs;
    MatRM x;
    std::vector<int64_t> positions;
    size_t next_logit_req = 0;
    report_progress(opt.progress, 0.0, "prefill");
    for (int64_t t0 = 0; t0 < T; t0 += opt.chunk_tokens) {
        const int64_t R = std::min(opt.chunk_tokens, T - t0);
        x.resize(R, D);
        positions.resize(static_cast<size_t>(R));
        for (int64_t r = 0; r < R; ++r) {
            const float* src = opt.start_from
                                   ? opt.start_from->x.data() + (t0 + r) * D
                                   : model.embedding.data + int64_t(ids[static_cast<size_t>(t0 + r)]) * D;
            std::copy_n(src, D, x.data() + r * D);
            positions[static_cast<size_t>(r)] = pos_base + t0 + r;
        }
        for (int li = first_layer; li <= last_layer && x.rows() > 0; ++li) {
            if (capture && li == capture->layer) {
                MS_CHECK(x.rows() == R, "capture_input: positions were dropped below the captured layer");
                std::copy_n(x.data(), R * D, capture->x.data() + t0 * D);
            }
            layer_chunk(model, li, x, positions, state.layers[static_cast<size_t>(li)], opt, s);
        }
        if (opt.stop_after_layer < 0 && x.rows() > 0)
            head_rows(model, x, positions, ids, pos_base, head, res, next_logit_req, hs);
        report_progress(opt.progress, double(t0 + R) / double(T), "prefill");
    }
    state.tokens_seen += T;
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    return res;
}

ForwardResult run_forward(const Model& model, std::span<const int32_t> ids, const ForwardOptions& options,
                          const HeadRequest& head) {
    ModelState st = make_state(model);
    return run_prefill(model, ids, st, options, head);
}

void decode_step(const Model& model, int32_t id, ModelState& state, std::vector<float>& logits) {
    const int32_t one[1] = {id};
    HeadRequest head;
    const int64_t pos = state.tokens_seen;
    head.logits_positions = {pos};
    head.logits_sink = [&](int64_t, const float* row, int64_t V) { logits.assign(row, row + V); };
    ForwardOptions opt;  // decode steps are never filtered (method doc §2.4)
    detail::cpu_run_prefill(model, std::span<const int32_t>(one, 1), state, opt, head);
}

void decode_step_filtered(const Model& model, int32_t id, ModelState& state, const DeltaFilter& filter,
                          std::vector<float>& logits) {
    const int32_t one[1] = {id};
    HeadRequest head;
    head.logits_positions = {state.tokens_seen};
    head.logits_sink = [&](int64_t, const float* row, int64_t V) { logits.assign(row, row + V); };
    ForwardOptions opt;
    opt.filter = filter.empty() ? nullptr : &filter;
    detail::cpu_run_prefill(model, std::span<const int32_t>(one, 1), state, opt, head);
}

Decoder::Decoder(const Model& model, const ModelState& state, Device device, Precision precision,
                 const DeltaFilter* keep_filter)
    : model_(model) {
    MS_CHECK(static_cast<int64_t>(state.layers.size()) == model.config.n_layer,
             "state does not belong to this model");
    if (keep_filter && !keep_filter->empty()) {
        // Filtered steps (method doc §9.1): on the GPU the graph decoder with the thresholds captured once
        // (forward_cuda.cpp, CudaDecoder); on the CPU decode_step_filtered.
        MS_CHECK(static_cast<int64_t>(keep_filter->threshold.size()) == model.config.n_layer,
                 "the decode filter does not belong to this model");
        filter_ = keep_filter;
    }
    if (device != Device::Cpu) {
        std::string why;
        ForwardOptions probe;
        probe.precision = precision;
        probe.filter = filter_;
        if (!cuda_usable(&why))
            note_ = "CUDA not used: " + why + "; decoding on the CPU";
        else if (auto r = detail::cuda_unsupported_reason(model, probe); !r.empty())
            note_ = "CUDA not used: " + r + "; decoding on the CPU";
        else {
            gpu_ = detail::make_cuda_decoder(model, state, precision, filter_);
            backend_ = "cuda";
            return;
        }
    }
    if (precision != Precision::Fp32)
        note_ += std::string(note_.empty() ? "" : "; ") + precision_name(precision) +
                 " applies to the CUDA backend only: the CPU computes in float32";
    cpu_state_ = state;
}

Decoder::~Decoder() = default;

void Decoder::step(int32_t id, std::vector<float>& logits) {
    if (gpu_)
        gpu_->step(id, logits);
    else if (filter_)
        decode_step_filtered(model_, id, cpu_state_, *filter_, logits);
    else
        decode_step(model_, id, cpu_state_, logits);
}

namespace {
// Greedy's next id on the host: std::max_element over logits [0, n) (the semantics kernels/cuda/argmax.cuh
// reproduces on the GPU).
int32_t host_argmax(const std::vector<float>& logits, int64_t n) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + n) - logits.begin());
}
}  // namespace

int32_t Decoder::step_greedy(int32_t id, int64_t n) {
    MS_CHECK(n >= 1 && n <= model_.vocab_rows(),
             "step_greedy: the candidate count must be 1 to the logits row's length (" +
                 std::to_string(model_.vocab_rows()) + "), not " + std::to_string(n));
    if (gpu_) return gpu_->step_greedy(id, n);
    std::vector<float> logits;
    step(id, logits);
    return host_argmax(logits, n);
}

std::vector<int32_t> Decoder::step_greedy_run(int32_t id, int64_t n, int64_t count) {
    MS_CHECK(n >= 1 && n <= model_.vocab_rows(),
             "step_greedy_run: the candidate count must be 1 to the logits row's length (" +
                 std::to_string(model_.vocab_rows()) + "), not " + std::to_string(n));
    MS_CHECK(count >= 0, "step_greedy_run: the step count must be 0 or more, not " + std::to_string(count));
    const int32_t one[1] = {id};
    check_ids(model_, std::span<const int32_t>(one, 1));
    if (gpu_) return gpu_->step_greedy_run(id, n, count);
    std::vector<int32_t> out;
    out.reserve(size_t(count));
    for (int64_t t = 0; t < count; ++t) out.push_back(id = step_greedy(id, n));
    return out;
}

namespace detail {
int32_t DecoderBackend::step_greedy(int32_t id, int64_t n) {
    std::vector<float> logits;
    step(id, logits);
    return host_argmax(logits, n);
}

std::vector<int32_t> DecoderBackend::step_greedy_run(int32_t id, int64_t n, int64_t count) {
    std::vector<int32_t> out;
    out.reserve(size_t(count));
    for (int64_t t = 0; t < count; ++t) out.push_back(id = step_greedy(id, n));
    return out;
}
}  // namespace detail

ModelState Decoder::state() const {
    if (!gpu_) return cpu_state_;
    ModelState s = make_state(model_);
    gpu_->download(s);
    return s;
}

}  // namespace mambascope
