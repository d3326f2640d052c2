// run_analysis: the same input through several methods with the requested probes; see mambascope/analysis.h.
//
// One forward per method (DeciMamba: its scoring passes + one final pass), with a fan-out observer feeding:
// ChannelProbe (Σ Δ, log decay, critical counts, Δ windows), ReceptiveFieldTracker (§8.7, bounded), and a
// detail observer (cumulative log decay of the detail channels over the whole input, and x'/B/C/Δ over the
// attention window for hidden attention, §5). Memory: O(n_layer·C) + O(T) per detail channel + the chosen
// windows.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "mambascope/analysis.h"
#include "mambascope/calibration.h"
#include "mambascope/channel_probe.h"
#include "mambascope/decimamba.h"
#include "mambascope/error.h"
#include "mambascope/hidden_attention.h"
#include "mambascope/longmamba.h"
#include "mambascope/receptive_field.h"

namespace mambascope {
namespace {

struct Fanout : ScanObserver {
    std::vector<ScanObserver*> obs;
    void on_delta(const DeltaBlock& raw, const DeltaBlock& used) override {
        for (auto* o : obs) o->on_delta(raw, used);
    }
    bool wants_scan_inputs(int layer) const override {
        for (auto* o : obs)
            if (o->wants_scan_inputs(layer)) return true;
        return false;
    }
    void on_scan_inputs(const ScanInputs& in) override {
        for (auto* o : obs)
            if (o->wants_scan_inputs(in.layer)) o->on_scan_inputs(in);
    }
};

// Cumulative log decay (whole input) and the attention window's scan inputs of the detail channels.
struct DetailObserver : ScanObserver {
    struct Chan {
        ChannelRef ref;
        double rate = 0;  // A_c (Mamba-1: slowest state)
        double running = 0;
        std::vector<float> cum;           // [T], NaN where not reached (DeciMamba), filled forward at the end
        std::vector<float> att_delta;     // [W]
        std::vector<float> att_B, att_C;  // [W × N] of the channel's group
        std::vector<uint8_t> att_seen;    // [W]
    };
    const Model& model;
    std::vector<Chan> chans;
    int64_t a0 = 0, a1 = 0;  // attention window [a0, a1)
    int64_t N = 0;

    DetailObserver(const Model& m, const std::vector<ChannelRef>& refs, int64_t T, int64_t att_begin,
                   int64_t att_end)
        : model(m), a0(att_begin), a1(att_end), N(m.config.d_state) {
        const ModelConfig& c = m.config;
        for (const auto& r : refs) {
            Chan ch;
            ch.ref = r;
            const auto& A = m.layers[size_t(r.layer)].A;
            const int64_t n_a = c.arch == Arch::Mamba1 ? c.d_state : 1;
            ch.rate = channel_decay_rate(std::span<const float>(A.data, size_t(A.numel())), c.channels(),
                                         n_a)[size_t(r.channel)];
            ch.cum.assign(size_t(T), std::numeric_limits<float>::quiet_NaN());
            const int64_t W = std::max<int64_t>(0, a1 - a0);
            ch.att_delta.assign(size_t(W), 0.0f);
            ch.att_B.assign(size_t(W * N), 0.0f);
            ch.att_C.assign(size_t(W * N), 0.0f);
            ch.att_seen.assign(size_t(W), 0);
            chans.push_back(std::move(ch));
        }
    }
    void on_delta(const DeltaBlock&, const DeltaBlock& used) override {
        for (auto& ch : chans) {
            if (ch.ref.layer != used.layer) continue;
            for (int64_t r = 0; r < used.rows; ++r) {
                const int64_t p = used.positions[r];
                const float d = used.at(r, ch.ref.channel);
                ch.running += ch.rate * d;
                ch.cum[size_t(p)] = static_cast<float>(ch.running);
                if (p >= a0 && p < a1) ch.att_delta[size_t(p - a0)] = d;
            }
        }
    }
    bool wants_scan_inputs(int layer) const override {
        if (a1 <= a0) return false;
        for (const auto& ch : chans)
            if (ch.ref.layer == layer) return true;
        return false;
    }
    void on_scan_inputs(const ScanInputs& in) override {
        const ModelConfig& c = model.config;
        for (auto& ch : chans) {
            if (ch.ref.layer != in.layer) continue;
            // B/C columns of the channel's group (Mamba-1: the only group).
            const int64_t g = c.arch == Arch::Mamba1 ? 0 : ch.ref.channel / (c.n_heads / c.n_groups);
            for (int64_t r = 0; r < in.rows; ++r) {
                const int64_t p = in.positions[r];
                if (p < a0 || p >= a1) continue;
                const int64_t w = p - a0;
                std::copy_n(in.B + r * in.ldbc + g * N, N, ch.att_B.begin() + w * N);
                std::copy_n(in.C + r * in.ldbc + g * N, N, ch.att_C.begin() + w * N);
                ch.att_seen[size_t(w)] = 1;
            }
        }
    }
};

std::vector<ChannelRef> default_channels(const Model& m, const Calibration* cal, double c) {
    const int layer = int(m.config.n_layer / 2);
    const int64_t C = m.config.channels();
    if (!cal) return {{layer, 0}, {layer, std::min<int64_t>(1, C - 1)}};
    // the most global channel (largest log decay) and the most local one of the middle layer
    int64_t hi = 0, lo = 0;
    for (int64_t ch = 0; ch < C; ++ch) {
        const double v = cal->log_decay[size_t(layer * C + ch)];
        if (v > cal->log_decay[size_t(layer * C + hi)]) hi = ch;
        if (v < cal->log_decay[size_t(layer * C + lo)]) lo = ch;
    }
    (void)c;
    if (hi == lo) return {{layer, hi}};
    return {{layer, hi}, {layer, lo}};
}

}  // namespace

RunResult run_analysis(const Model& model, const RunInput& input, const AnalysisRequest& req,
                       const ProgressFn& progress) {
    const ModelConfig& cfg = model.config;
    const int64_t T = static_cast<int64_t>(input.ids.size()), L = cfg.n_layer, C = cfg.channels();
    check_ids(model, input.ids);
    if (req.methods.empty())
        throw Error("no methods requested", "choose vanilla, longmamba and/or decimamba");
    std::optional<Calibration> cal;
    if (!req.calibration_path.empty()) {
        cal = load_calibration(req.calibration_path);
        check_calibration_matches(*cal, cfg);
    }
    for (Method m : req.methods)
        if (m == Method::LongMamba && !cal)
            throw Error("LongMamba needs a calibration file",
                        "pass --calibration CAL.h5 (mambascope-cli calibrate)");
    FilterParams fp;
    fp.c = req.c;
    fp.b = req.b;
    fp.activate_above = req.activate_above;
    // The filter LongMamba uses on this input: the reference for "critical tokens" in every method (§8.6).
    DeltaFilter lm_filter;
    if (cal) lm_filter = make_longmamba_filter(*cal, fp, T);
    std::vector<uint8_t> gmask = cal ? global_mask(*cal, req.c) : std::vector<uint8_t>(size_t(L * C), 0);

    RunResult out;
    out.input = input;
    out.n_layer = int(L);
    out.channels = C;
    out.train_len = cal ? cal->params.train_len : cfg.train_len;
    out.rf_positions = req.rf_positions.empty() ? std::vector<int64_t>{T - 1} : req.rf_positions;
    for (int64_t p : out.rf_positions)
        if (p < 0 || p >= T)
            throw Error("receptive-field position " + std::to_string(p) + " is outside the input [0, " +
                        std::to_string(T) + ")");
    std::sort(out.rf_positions.begin(), out.rf_positions.end());
    out.window_begin = std::clamp<int64_t>(req.window_begin, 0, T);
    out.window_end = req.window_end < 0 ? std::min(T, out.window_begin + kMaxWindowTokens)
                                        : std::clamp<int64_t>(req.window_end, out.window_begin, T);
    if (out.window_end - out.window_begin > kMaxWindowTokens)
        throw Error("the Δ window is " + std::to_string(out.window_end - out.window_begin) +
                    " tokens; at most " + std::to_string(kMaxWindowTokens));
    if (!req.calibration_path.empty()) out.calibration_path = req.calibration_path;
    out.provenance["model_path"] = model.dir.string();
    out.provenance["model_name"] = model.name;
    out.provenance["arch"] = arch_name(cfg.arch);
    out.provenance["weights_file"] = model.weights_file.string();

    auto chans = req.channels.empty() ? default_channels(model, cal ? &*cal : nullptr, req.c) : req.channels;
    for (const auto& r : chans)
        if (r.layer < 0 || r.layer >= L || r.channel < 0 || r.channel >= C)
            throw Error("channel " + std::to_string(r.layer) + ":" + std::to_string(r.channel) +
                        " does not exist (layers 0.." + std::to_string(L - 1) + ", channels 0.." +
                        std::to_string(C - 1) + ")");
    const int64_t att_tokens = std::min<int64_t>({req.attention_tokens, kMaxAttentionTokens, T});
    const int64_t att_begin =
        req.attention_begin < 0 ? T - att_tokens : std::clamp<int64_t>(req.attention_begin, 0, T);
    const int64_t att_end = req.attention ? std::min(T, att_begin + att_tokens) : att_begin;
    const double eps = req.rf_epsilon > 0 ? req.rf_epsilon : req.c;

    std::vector<std::vector<double>> rate(static_cast<size_t>(L));
    for (int64_t l = 0; l < L; ++l) {
        const auto& A = model.layers[size_t(l)].A;
        rate[size_t(l)] = channel_decay_rate(std::span<const float>(A.data, size_t(A.numel())), C,
                                             cfg.arch == Arch::Mamba1 ? cfg.d_state : 1);
    }

    const double n_methods = double(req.methods.size());
    for (size_t mi = 0; mi < req.methods.size(); ++mi) {
        const Method method = req.methods[mi];
        const auto t0 = std::chrono::steady_clock::now();
        MethodResult mr;
        mr.method = method;
        ProbeOptions po;
        po.reference = lm_filter.empty() ? nullptr : &lm_filter;
        po.m1_decay = cal ? cal->params.m1_decay : parse_m1_decay(req.m1_decay);
        for (const auto& r : chans) po.window_channels.emplace_back(r.layer, r.channel);
        po.window_begin = out.window_begin;
        po.window_end = out.window_end;
        ChannelProbe probe(model, po);
        ReceptiveFieldTracker rf(rate, T, out.rf_positions);
        DetailObserver detail(model, chans, T, att_begin, att_end);
        Fanout fan;
        fan.obs = {&probe, &rf, &detail};
        HeadRequest head;
        head.nll = req.nll;
        auto sub = [&](double f, std::string_view stage) {
            return !progress || progress((double(mi) + f) / n_methods, stage);
        };
        ForwardResult fr;
        DeltaFilter used_filter;
        if (method == Method::DeciMamba) {
            DeciParams dp;
            dp.layers = req.deci_layers;
            dp.L_base = req.deci_L_base;
            dp.beta = req.deci_beta;
            dp.min_seq_len = req.deci_min_seq_len;
            dp.resp_len = req.deci_resp_len;
            dp = resolve_deci_params(cfg, dp);
            std::map<int, std::vector<int64_t>> kept;
            fr = run_decimamba(model, input.ids, dp, head, sub, &kept, &fan);
            if (!kept.empty()) mr.kept_positions = kept.rbegin()->second;
            mr.params["L_base"] = double(dp.L_base);
            mr.params["beta"] = dp.beta;
            mr.params["min_seq_len"] = double(dp.min_seq_len);
            mr.params["resp_len"] = double(dp.resp_len);
            for (size_t i = 0; i < dp.layers.size(); ++i)
                mr.params["layer_" + std::to_string(i)] = dp.layers[i];
        } else {
            ForwardOptions opt;
            opt.observer = &fan;
            opt.progress = sub;
            if (method == Method::LongMamba) {
                used_filter = lm_filter;
                if (!used_filter.empty()) opt.filter = &used_filter;
                mr.params["c"] = req.c;
                mr.params["b"] = req.b;
                mr.params["activate_above"] =
                    double(req.activate_above >= 0 ? req.activate_above : cal->params.train_len);
                mr.params["key_length"] = double(cal->lengths[nearest_length_index(cal->lengths, T)]);
                mr.params["activated"] = used_filter.empty() ? 0.0 : 1.0;
            }
            fr = run_forward(model, input.ids, opt, head);
        }
        rf.finish(T);
        mr.nll_positions = fr.nll_positions;
        mr.nll = fr.nll;
        // summaries
        mr.delta_sum = Array<double>::zeros({L, C});
        mr.delta_sum.data = probe.sum_used();
        mr.log_decay = Array<double>::zeros({L, C});
        mr.log_decay.data = probe.log_decay_used();
        mr.global_mask = Array<uint8_t>::zeros({L, C});
        mr.global_mask.data = gmask;
        mr.critical_count = Array<int64_t>::zeros({L, C});
        mr.critical_count.data = probe.critical_count();
        const int64_t P = int64_t(out.rf_positions.size());
        mr.receptive_field = Array<int64_t>::zeros({L, P, C});
        mr.receptive_field_censored = Array<uint8_t>::zeros({L, P, C});
        mr.receptive_field_resolution = rf.stride();
        for (int64_t l = 0; l < L; ++l)
            for (int64_t pi = 0; pi < P; ++pi)
                for (int64_t ch = 0; ch < C; ++ch) {
                    auto r = rf.at(int(l), ch, out.rf_positions[size_t(pi)], eps);
                    mr.receptive_field.data[size_t((l * P + pi) * C + ch)] = r.length;
                    mr.receptive_field_censored.data[size_t((l * P + pi) * C + ch)] = r.censored ? 1 : 0;
                }
        // detail channels
        const int64_t W = out.window_end - out.window_begin;
        for (size_t k = 0; k < chans.size(); ++k) {
            ChannelTrace ct;
            ct.ref = chans[k];
            ct.global = gmask[size_t(ct.ref.layer * C + ct.ref.channel)] != 0;
            ct.threshold = lm_filter.empty()
                               ? -INFINITY
                               : lm_filter.threshold[size_t(ct.ref.layer)][size_t(ct.ref.channel)];
            ct.delta_raw.assign(size_t(W), 0.0f);
            ct.delta_used.assign(size_t(W), 0.0f);
            ct.critical.assign(size_t(W), 0);
            for (const auto& w : probe.windows()) {
                if (w.layer != ct.ref.layer || w.channel != ct.ref.channel) continue;
                for (size_t i = 0; i < w.positions.size(); ++i) {
                    const size_t at = size_t(w.positions[i] - out.window_begin);
                    ct.delta_raw[at] = w.raw[i];
                    ct.delta_used[at] = w.used[i];
                }
                for (int64_t p : w.critical) ct.critical[size_t(p - out.window_begin)] = 1;
            }
            auto& dc = detail.chans[k];
            float last = 0.0f;
            for (auto& v : dc.cum) {  // positions DeciMamba dropped keep the last value
                if (std::isnan(v)) v = last;
                last = v;
            }
            ct.cum_log_decay = std::move(dc.cum);
            mr.channels.push_back(std::move(ct));
            if (att_end > att_begin) {
                const int64_t Wa = att_end - att_begin;
                const auto& A = model.layers[size_t(chans[k].layer)].A;
                const int64_t n_a = cfg.arch == Arch::Mamba1 ? cfg.d_state : 1;
                std::span<const float> a_row(A.data + chans[k].channel * n_a, size_t(n_a));
                auto alpha = hidden_attention(Wa, cfg.d_state, dc.att_delta, a_row, dc.att_B.data(),
                                              cfg.d_state, dc.att_C.data(), cfg.d_state);
                normalise_attention(alpha, Wa,
                                    AttentionNormParams{req.attention_norm, req.attention_log_floor});
                AttentionMap am;
                am.ref = chans[k];
                am.norm = req.attention_norm;
                am.log_floor = req.attention_log_floor;
                am.begin = att_begin;
                am.alpha = Array<float>::zeros({Wa, Wa});
                for (size_t i = 0; i < alpha.size(); ++i) am.alpha.data[i] = static_cast<float>(alpha[i]);
                mr.attention.push_back(std::move(am));
            }
        }
        mr.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        out.methods.push_back(std::move(mr));
    }
    report_progress(progress, 1.0, "done");
    return out;
}

}  // namespace mambascope
