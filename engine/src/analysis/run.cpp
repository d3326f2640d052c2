// run_analysis: one input through several methods with the probes of analysis.h (issue 5 item 1).
//
// Each method is one forward run (DeciMamba: its driver, whose final pass carries the probes) with a fan-out
// observer: ChannelProbe (Σ Δ, log decay, critical counts, Δ windows; method doc §8.2, §8.6), a
// bounded ReceptiveFieldTracker (§8.7), a cumulative-log-decay series per detail channel, and a capture of
// Δ, B and C on the attention window for hidden attention (§5, §8.9).
//
// Shared work (issue 16): methods that compute the same thing compute it once. LongMamba without an active
// filter is the vanilla forward (its result is copied). DeciMamba's layers below its first decimating layer
// l0 are the vanilla forward's too (all positions, no filter): the unfiltered forward keeps its residual
// stream entering l0, DeciMamba starts there, and the summaries of layers < l0 are copied from that
// forward's result. Each shared result equals the separate computation bit for bit (CpuShared.*).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <optional>
#include <set>
#include <span>
#include <string>

#include "mambascope/analysis.h"
#include "mambascope/calibration.h"
#include "mambascope/channel_probe.h"
#include "mambascope/decimamba.h"
#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "mambascope/hidden_attention.h"
#include "mambascope/longmamba.h"
#include "mambascope/receptive_field.h"

namespace mambascope {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

int64_t n_a_of(const ModelConfig& c) {
    return c.arch == Arch::Mamba1 ? c.d_state : 1;
}

std::vector<std::vector<double>> decay_rates(const Model& model) {
    const auto& cfg = model.config;
    std::vector<std::vector<double>> rate;
    for (const auto& ly : model.layers)
        rate.push_back(
            channel_decay_rate(std::span<const float>(ly.A.data, static_cast<size_t>(ly.A.numel())),
                               cfg.channels(), n_a_of(cfg)));
    return rate;
}

// Forwards the scan's callbacks to several observers.
class FanOut : public ScanObserver {
  public:
    std::vector<ScanObserver*> children;
    void on_delta(const DeltaBlock& raw, const DeltaBlock& used) override {
        for (auto* c : children) c->on_delta(raw, used);
    }
    bool wants_scan_inputs(int layer) const override {
        for (auto* c : children)
            if (c->wants_scan_inputs(layer)) return true;
        return false;
    }
    void on_scan_inputs(const ScanInputs& in) override {
        for (auto* c : children)
            if (c->wants_scan_inputs(in.layer)) c->on_scan_inputs(in);
    }
};

// count[t] = number of global channels (over all layers, or those below `layer_end`) whose scan used token t,
// i.e. in which t is a critical token (method doc §8.6: Δ survived the filter, Δ_used > 0). Positions absent
// because of decimation count nothing in the layers that skipped them.
class GlobalKeepCounter : public ScanObserver {
  public:
    GlobalKeepCounter(const std::vector<uint8_t>& gmask, int64_t channels, int64_t T,
                      int layer_end = std::numeric_limits<int>::max())
        : gmask_(gmask), C_(channels), layer_end_(layer_end), count_(static_cast<size_t>(T), 0) {}
    void on_delta(const DeltaBlock&, const DeltaBlock& used) override {
        if (used.layer >= layer_end_) return;
        const uint8_t* g = gmask_.data() + static_cast<size_t>(used.layer) * static_cast<size_t>(C_);
        for (int64_t r = 0; r < used.rows; ++r) {
            const float* row = used.data + r * used.ld;
            int64_t n = 0;
            for (int64_t c = 0; c < used.channels; ++c) n += (g[c] != 0) & (row[c] > 0.0f);
            count_[static_cast<size_t>(used.positions[r])] += n;
        }
    }
    std::vector<int64_t> take() { return std::move(count_); }

  private:
    const std::vector<uint8_t>& gmask_;
    int64_t C_;
    int layer_end_;
    std::vector<int64_t> count_;
};

// cum_log_decay[t] = Σ_{k≤t} A_c·Δ_used,k for chosen channels over the whole input (positions absent because
// of decimation add 0).
class CumDecay : public ScanObserver {
  public:
    CumDecay(const std::vector<ChannelRef>& refs, const std::vector<std::vector<double>>& rate, int64_t T)
        : refs_(refs), T_(T) {
        for (const auto& r : refs) {
            rate_.push_back(rate[static_cast<size_t>(r.layer)][static_cast<size_t>(r.channel)]);
            inc_.emplace_back(static_cast<size_t>(T), 0.0f);  // per-position increments, summed in finish()
        }
    }
    void on_delta(const DeltaBlock&, const DeltaBlock& used) override {
        for (size_t i = 0; i < refs_.size(); ++i) {
            if (refs_[i].layer != used.layer) continue;
            for (int64_t r = 0; r < used.rows; ++r) {
                const int64_t p = used.positions ? used.positions[r] : r;
                if (p >= 0 && p < T_)
                    inc_[i][static_cast<size_t>(p)] = static_cast<float>(used.at(r, refs_[i].channel));
            }
        }
    }
    // cumulative sums in double, stored as float32
    std::vector<float> take(size_t i) {
        std::vector<float> out = std::move(inc_[i]);
        double acc = 0;
        for (auto& v : out) {
            acc += rate_[i] * static_cast<double>(v);
            v = static_cast<float>(acc);
        }
        return out;
    }

  private:
    std::vector<ChannelRef> refs_;
    int64_t T_;
    std::vector<double> rate_;
    std::vector<std::vector<float>> inc_;
};

// Δ_used, B and C of chosen channels on the attention window [begin, end).
class AttentionCapture : public ScanObserver {
  public:
    struct Slot {
        ChannelRef ref;
        int64_t group = 0;
        std::vector<int64_t> positions;
        std::vector<float> delta, B, C;   // (rows), (rows, N), (rows, N)
        std::vector<float> delta_by_pos;  // (end − begin), filled by on_delta
    };
    AttentionCapture(const ModelConfig& cfg, const std::vector<ChannelRef>& refs, int64_t begin, int64_t end)
        : N_(cfg.d_state), begin_(begin), end_(end) {
        const int64_t heads_per_group =
            cfg.arch == Arch::Mamba2 ? std::max<int64_t>(1, cfg.n_heads / std::max<int64_t>(1, cfg.n_groups))
                                     : 1;
        for (const auto& r : refs) {
            Slot s;
            s.ref = r;
            s.group = cfg.arch == Arch::Mamba2 ? r.channel / heads_per_group : 0;
            s.delta_by_pos.assign(static_cast<size_t>(end - begin), 0.0f);
            slots.push_back(std::move(s));
            layers_.insert(r.layer);
        }
    }
    bool wants_scan_inputs(int layer) const override { return layers_.count(layer) > 0; }
    void on_delta(const DeltaBlock&, const DeltaBlock& used) override {
        for (auto& s : slots) {
            if (s.ref.layer != used.layer) continue;
            for (int64_t r = 0; r < used.rows; ++r) {
                const int64_t p = used.positions ? used.positions[r] : r;
                if (p >= begin_ && p < end_)
                    s.delta_by_pos[static_cast<size_t>(p - begin_)] = used.at(r, s.ref.channel);
            }
        }
    }
    void on_scan_inputs(const ScanInputs& in) override {
        for (auto& s : slots) {
            if (s.ref.layer != in.layer) continue;
            for (int64_t r = 0; r < in.rows; ++r) {
                const int64_t p = in.positions ? in.positions[r] : r;
                if (p < begin_ || p >= end_) continue;
                s.positions.push_back(p);
                const float* b = in.B + r * in.ldbc + s.group * N_;
                const float* c = in.C + r * in.ldbc + s.group * N_;
                s.B.insert(s.B.end(), b, b + N_);
                s.C.insert(s.C.end(), c, c + N_);
            }
        }
    }
    std::vector<Slot> slots;

  private:
    int64_t N_, begin_, end_;
    std::set<int> layers_;
};

// Default detail channels (docs/trace-format.md): in the middle layer, the global channel with the largest
// calibrated log decay and the local channel with the smallest; without a calibration, the channels with
// the slowest and the fastest decay rate A_c.
std::vector<ChannelRef> default_channels(const Model& model, const Calibration* cal,
                                         const std::vector<uint8_t>& gmask,
                                         const std::vector<std::vector<double>>& rate) {
    const int layer = static_cast<int>(model.config.n_layer / 2);
    const int64_t C = model.config.channels();
    int64_t best_g = -1, best_l = -1;
    for (int64_t c = 0; c < C; ++c) {
        double v =
            cal ? cal->log_decay[static_cast<size_t>(layer * C + c)] : rate[layer][static_cast<size_t>(c)];
        const bool is_global = cal ? gmask[static_cast<size_t>(layer * C + c)] != 0 : true;
        auto val = [&](int64_t k) {
            return cal ? cal->log_decay[static_cast<size_t>(layer * C + k)]
                       : rate[layer][static_cast<size_t>(k)];
        };
        if (is_global && (best_g < 0 || v > val(best_g))) best_g = c;
        const bool is_local = cal ? !is_global : true;
        if (is_local && (best_l < 0 || v < val(best_l))) best_l = c;
    }
    std::vector<ChannelRef> out;
    if (best_g >= 0) out.push_back({layer, best_g});
    if (best_l >= 0 && best_l != best_g) out.push_back({layer, best_l});
    if (out.empty()) out.push_back({layer, 0});
    return out;
}

}  // namespace

RunResult run_analysis(const Model& model, const RunInput& input, const AnalysisRequest& req,
                       const ProgressFn& progress) {
    const auto& cfg = model.config;
    const int64_t T = static_cast<int64_t>(input.ids.size());
    const int64_t C = cfg.channels();
    const int n_layer = static_cast<int>(cfg.n_layer);
    if (T == 0) throw Error("run_analysis: the input has no tokens", "give at least one token id");
    check_ids(model, input.ids);
    if (req.methods.empty()) throw Error("run_analysis: no methods requested");

    RunResult res;
    res.input = input;
    // Ids read from a text file (`--text`): keep each token's text and byte offset, so traces show text.
    attach_token_text(res.input, model);
    res.n_layer = n_layer;
    res.channels = C;
    res.train_len = cfg.train_len;

    // Calibration (LongMamba needs it; the global masks use it when present).
    std::optional<Calibration> cal;
    if (!req.calibration_path.empty()) {
        cal = load_calibration(req.calibration_path);
        check_calibration_matches(*cal, cfg);
        res.calibration_path = req.calibration_path;
        res.calibration_log_decay = {{cal->n_layer, cal->channels}, cal->log_decay};
    }
    for (Method m : req.methods)
        if (m == Method::LongMamba && !cal)
            throw Error("LongMamba needs a calibration",
                        "pass a calibration file (mambascope-cli calibrate)");
    std::vector<uint8_t> gmask =
        cal ? global_mask(*cal, req.c) : std::vector<uint8_t>(size_t(n_layer * C), 0);

    const auto rate = decay_rates(model);

    // Resolve probes.
    std::vector<ChannelRef> refs =
        req.channels.empty() ? default_channels(model, cal ? &*cal : nullptr, gmask, rate) : req.channels;
    for (const auto& r : refs)
        if (r.layer < 0 || r.layer >= n_layer || r.channel < 0 || r.channel >= C)
            throw Error(
                "detail channel " + std::to_string(r.layer) + ":" + std::to_string(r.channel) +
                    " does not exist",
                "the model has " + std::to_string(n_layer) + " layers × " + std::to_string(C) + " channels");
    const int64_t wb = std::clamp<int64_t>(req.window_begin, 0, T - 1);
    const int64_t we = req.window_end < 0 ? std::min(T, wb + kMaxWindowTokens) : std::min(T, req.window_end);
    if (we <= wb) throw Error("empty Δ window [" + std::to_string(wb) + ", " + std::to_string(we) + ")");
    if (we - wb > kMaxWindowTokens)
        throw Error("the Δ window is longer than " + std::to_string(kMaxWindowTokens) + " tokens",
                    "choose a shorter --window");
    res.window_begin = wb;
    res.window_end = we;
    res.rf_positions = req.rf_positions.empty() ? std::vector<int64_t>{T - 1} : req.rf_positions;
    for (auto p : res.rf_positions)
        if (p < 0 || p >= T)
            throw Error("receptive-field position " + std::to_string(p) + " is outside the input (0.." +
                        std::to_string(T - 1) + ")");
    const double rf_eps = req.rf_epsilon > 0 ? req.rf_epsilon : req.c;
    const int64_t att_tokens =
        std::min({req.attention_tokens, kMaxAttentionTokens, kHiddenAttentionMaxWindow, T});
    const int64_t att_begin =
        req.attention_begin < 0 ? T - att_tokens : std::min(req.attention_begin, T - att_tokens);
    const int64_t att_end = att_begin + att_tokens;
    const int64_t n_a = n_a_of(cfg);

    const double n_methods = static_cast<double>(req.methods.size());
    // Index in res.methods of a method that ran the plain, unfiltered forward (see below).
    std::optional<size_t> unfiltered_result;

    // DeciMamba's parameters, resolved once; its first decimating layer l0 bounds the prefix it can share.
    DeciParams deci = req.deci;
    const bool wants_deci =
        std::find(req.methods.begin(), req.methods.end(), Method::DeciMamba) != req.methods.end();
    if (wants_deci) deci = resolve_deci_params(cfg, deci);
    const int deci_l0 = wants_deci ? deci.layers.front() : 0;
    // The prefix DeciMamba can take from an unfiltered forward that runs before it: its residual stream
    // entering l0, (T, D) floats, kept only when that is at most kMaxSharedPrefixBytes (otherwise DeciMamba
    // recomputes layers < l0) and the forward runs on the CPU (a GPU forward's rounding differs from the
    // CPU's, so its rows would not give DeciMamba's CPU result).
    struct SharedPrefix {
        LayerInput input;  // (T, D) entering l0
        std::vector<int64_t>
            keep_count_below;  // [T] GlobalKeepCounter over layers < l0 (with global channels)
        size_t result = 0;     // index in res.methods of the forward that kept it
    };
    std::optional<SharedPrefix> prefix;
    const bool prefix_fits = T * cfg.d_model * static_cast<int64_t>(sizeof(float)) <= kMaxSharedPrefixBytes;
    for (size_t mi = 0; mi < req.methods.size(); ++mi) {
        const Method method = req.methods[mi];
        const auto t0 = std::chrono::steady_clock::now();
        MethodResult mr;
        mr.method = method;
        mr.params["rf_epsilon"] = rf_eps;
        mr.params["c"] = req.c;

        DeltaFilter filter;
        if (method == Method::LongMamba) {
            FilterParams fp;
            fp.c = req.c;
            fp.b = req.b;
            fp.activate_above = req.activate_above;
            filter = make_longmamba_filter(*cal, fp, T);
            mr.params["b"] = req.b;
            mr.params["activate_above"] =
                static_cast<double>(req.activate_above < 0 ? cal->params.train_len : req.activate_above);
            mr.params["key_length"] =
                static_cast<double>(cal->lengths[nearest_length_index(cal->lengths, T)]);
            mr.params["filtered"] = filter.empty() ? 0.0 : 1.0;
        }

        // Shared work: vanilla, and LongMamba at or below its activation length (no filter then, method doc
        // §8.5), run the same forward with the same probes (the probes' reference filter is the empty one
        // too), so every number of their results is the same. The second of them copies the first's result
        // and keeps its own name and parameters (CpuShared.* tests the copy against a separate run).
        const bool unfiltered = method != Method::DeciMamba && filter.empty();
        if (unfiltered && unfiltered_result) {
            MethodResult same = res.methods[*unfiltered_result];
            same.method = method;
            same.params = mr.params;
            same.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            res.methods.push_back(std::move(same));
            continue;
        }
        // This unfiltered forward keeps DeciMamba's prefix when DeciMamba comes after it.
        const bool keep_prefix = unfiltered && !unfiltered_result && wants_deci && deci_l0 > 0 &&
                                 prefix_fits && req.device == Device::Cpu &&
                                 std::find(req.methods.begin() + static_cast<std::ptrdiff_t>(mi),
                                           req.methods.end(), Method::DeciMamba) != req.methods.end();
        const bool from_prefix = method == Method::DeciMamba && prefix.has_value();

        ProbeOptions po;
        po.reference = filter.empty() ? nullptr : &filter;
        po.m1_decay = parse_m1_decay(req.m1_decay);
        for (const auto& r : refs) po.window_channels.emplace_back(r.layer, r.channel);
        po.window_begin = wb;
        po.window_end = we;
        ChannelProbe probe(model, po);
        ReceptiveFieldTracker rf(rate, T, res.rf_positions);
        CumDecay cum(refs, rate, T);
        std::optional<AttentionCapture> att;
        if (req.attention) att.emplace(cfg, refs, att_begin, att_end);
        FanOut fan;
        fan.children = {&probe, &rf, &cum};
        if (att) fan.children.push_back(&*att);
        const bool any_global = std::any_of(gmask.begin(), gmask.end(), [](uint8_t v) { return v != 0; });
        std::optional<GlobalKeepCounter> keep_count, keep_count_below;
        if (any_global) {
            keep_count.emplace(gmask, C, T);
            fan.children.push_back(&*keep_count);
            if (keep_prefix) {
                keep_count_below.emplace(gmask, C, T, deci_l0);
                fan.children.push_back(&*keep_count_below);
            }
        }

        auto sub = [&](double lo, double hi) {
            return [&, lo, hi](double f, std::string_view) {
                if (!progress) return true;
                return progress((static_cast<double>(mi) + lo + (hi - lo) * f) / n_methods,
                                std::string(method_name(method)));
            };
        };
        HeadRequest head;
        head.nll = req.nll;
        ForwardResult fr;
        if (method == Method::DeciMamba) {
            const DeciParams& dp = deci;
            mr.params["L_base"] = static_cast<double>(dp.L_base);
            mr.params["beta"] = dp.beta;
            mr.params["min_seq_len"] = static_cast<double>(dp.min_seq_len);
            mr.params["resp_len"] = static_cast<double>(dp.resp_len);
            for (size_t k = 0; k < dp.layers.size(); ++k)
                mr.params["deci_layer_" + std::to_string(k)] = dp.layers[k];
            std::map<int, std::vector<int64_t>> kept;
            // The probes ride on DeciMamba's final pass: it is the forward over the final selection that a
            // separate probe pass would repeat (same kept positions, every layer; the head only adds the
            // NLL).
            // With a shared prefix the passes start at l0 and the probes see layers ≥ l0 only; the layers
            // below are filled in from the prefix's forward after the summaries are taken (below).
            fr = run_decimamba(model, input.ids, dp, head, sub(0.0, 1.0), &kept, &fan, nullptr,
                               from_prefix ? &prefix->input : nullptr);
            if (!kept.empty()) mr.kept_positions = kept.rbegin()->second;
        } else {
            ForwardOptions opt;
            opt.filter = filter.empty() ? nullptr : &filter;
            opt.observer = &fan;
            opt.progress = sub(0.0, 1.0);
            opt.device = req.device;
            if (keep_prefix) {
                prefix.emplace();
                prefix->input.layer = deci_l0;
                opt.capture_input = &prefix->input;
            }
            fr = run_forward(model, input.ids, opt, head);
            if (keep_prefix && keep_count_below) prefix->keep_count_below = keep_count_below->take();
        }
        mr.backend = fr.backend;
        if (!fr.note.empty()) res.provenance["device_note"] = fr.note;
        rf.finish(T);

        mr.nll_positions = std::move(fr.nll_positions);
        mr.nll = std::move(fr.nll);
        const std::vector<int64_t> LC{n_layer, C};
        mr.delta_sum.shape = LC;
        mr.delta_sum.data = probe.sum_used();
        mr.log_decay.shape = LC;
        mr.log_decay.data = probe.log_decay_used();
        mr.global_mask.shape = LC;
        mr.global_mask.data = gmask;
        if (keep_count) mr.global_keep_count = keep_count->take();
        mr.critical_count.shape = LC;
        mr.critical_count.data = probe.critical_count();
        const int64_t P = static_cast<int64_t>(res.rf_positions.size());
        mr.receptive_field = Array<int64_t>::zeros({n_layer, P, C});
        mr.receptive_field_censored = Array<uint8_t>::zeros({n_layer, P, C});
        mr.receptive_field_resolution = rf.stride();
        for (int l = 0; l < n_layer; ++l)
            for (int64_t p = 0; p < P; ++p)
                for (int64_t c = 0; c < C; ++c) {
                    auto v = rf.at(l, c, res.rf_positions[static_cast<size_t>(p)], rf_eps);
                    const size_t k = static_cast<size_t>((l * P + p) * C + c);
                    mr.receptive_field.data[k] = v.length;
                    mr.receptive_field_censored.data[k] = v.censored ? 1 : 0;
                }

        const int64_t W = we - wb;
        for (size_t i = 0; i < refs.size(); ++i) {
            const auto& r = refs[i];
            const auto& win = probe.windows()[i];
            ChannelTrace ct;
            ct.ref = r;
            ct.global = gmask[static_cast<size_t>(r.layer * C + r.channel)] != 0;
            ct.threshold =
                filter.empty()
                    ? kNegInf
                    : filter.threshold[static_cast<size_t>(r.layer)][static_cast<size_t>(r.channel)];
            ct.delta_raw.assign(static_cast<size_t>(W), 0.0f);
            ct.delta_used.assign(static_cast<size_t>(W), 0.0f);
            ct.critical.assign(static_cast<size_t>(W), 0);
            for (size_t k = 0; k < win.positions.size(); ++k) {
                const int64_t p = win.positions[k] - wb;
                if (p < 0 || p >= W) continue;
                ct.delta_raw[static_cast<size_t>(p)] = win.raw[k];
                ct.delta_used[static_cast<size_t>(p)] = win.used[k];
            }
            for (int64_t p : win.critical)
                if (p >= wb && p < we) ct.critical[static_cast<size_t>(p - wb)] = 1;
            ct.cum_log_decay = cum.take(i);
            mr.channels.push_back(std::move(ct));
        }
        if (att) {
            for (size_t si = 0; si < att->slots.size(); ++si) {
                auto& s = att->slots[si];
                if (from_prefix && s.ref.layer < deci_l0) {
                    // Below l0: the prefix forward's map of the same slot (all positions reach these layers,
                    // so that forward has one map per slot, in slot order).
                    const MethodResult& src = res.methods[prefix->result];
                    MS_CHECK(src.attention.size() == att->slots.size() && src.attention[si].ref == s.ref,
                             "shared prefix: attention maps do not line up");
                    mr.attention.push_back(src.attention[si]);
                    continue;
                }
                const int64_t Wa = static_cast<int64_t>(s.positions.size());
                if (Wa == 0) continue;
                std::vector<float> d(static_cast<size_t>(Wa));
                for (int64_t k = 0; k < Wa; ++k)
                    d[static_cast<size_t>(k)] =
                        s.delta_by_pos[static_cast<size_t>(s.positions[k] - att_begin)];
                const Tensor& A = model.layers[static_cast<size_t>(s.ref.layer)].A;
                std::span<const float> a(A.data + s.ref.channel * n_a, static_cast<size_t>(n_a));
                auto alpha =
                    hidden_attention(Wa, cfg.d_state, d, a, s.B.data(), cfg.d_state, s.C.data(), cfg.d_state);
                AttentionNormParams np;
                np.kind = req.attention_norm;
                np.floor = req.attention_log_floor;
                normalise_attention(alpha, Wa, np);
                AttentionMap am;
                am.ref = s.ref;
                am.norm = req.attention_norm;
                am.log_floor = req.attention_log_floor;
                am.begin = att_begin;
                am.alpha.shape = {Wa, Wa};
                am.alpha.data.assign(alpha.begin(), alpha.end());
                mr.attention.push_back(std::move(am));
            }
        }
        if (from_prefix) {
            // Layers < l0 (not seen by DeciMamba's probes): the prefix forward's numbers, which a full
            // DeciMamba run computes identically (same positions, no filter, same chunks).
            const MethodResult& src = res.methods[prefix->result];
            const auto below = [&](auto& dst, const auto& from, int64_t per_layer) {
                const auto n = static_cast<std::ptrdiff_t>(deci_l0 * per_layer);
                std::copy(from.begin(), from.begin() + n, dst.begin());
            };
            below(mr.delta_sum.data, src.delta_sum.data, C);
            below(mr.log_decay.data, src.log_decay.data, C);
            below(mr.critical_count.data, src.critical_count.data, C);
            below(mr.receptive_field.data, src.receptive_field.data, P * C);
            below(mr.receptive_field_censored.data, src.receptive_field_censored.data, P * C);
            MS_CHECK(mr.receptive_field_resolution == src.receptive_field_resolution,
                     "shared prefix: receptive-field resolutions differ");
            for (size_t i = 0; i < refs.size(); ++i) {
                if (refs[i].layer >= deci_l0) continue;
                ChannelTrace& ct = mr.channels[i];
                const ChannelTrace& from = src.channels[i];
                ct.delta_raw = from.delta_raw;
                ct.delta_used = from.delta_used;
                ct.critical = from.critical;
                ct.cum_log_decay = from.cum_log_decay;
            }
            // Recorded, so a trace says where DeciMamba's lower layers came from (and tests see the path
            // taken).
            res.provenance["decimamba_shared_layers"] =
                "0.." + std::to_string(deci_l0 - 1) + " from " + method_name(src.method);
            if (keep_count) {
                MS_CHECK(prefix->keep_count_below.size() == mr.global_keep_count.size(),
                         "shared prefix: global keep counts differ in length");
                for (size_t t = 0; t < mr.global_keep_count.size(); ++t)
                    mr.global_keep_count[t] += prefix->keep_count_below[t];
            }
        }
        mr.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        res.methods.push_back(std::move(mr));
        if (unfiltered && !unfiltered_result) unfiltered_result = res.methods.size() - 1;
        if (keep_prefix) prefix->result = res.methods.size() - 1;
    }
    report_progress(progress, 1.0, "done");
    return res;
}

}  // namespace mambascope
