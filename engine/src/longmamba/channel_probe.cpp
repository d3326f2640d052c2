// Per-channel LongMamba statistics of a run. See channel_probe.h.
#include "mambascope/channel_probe.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <string>

#include "mambascope/error.h"

namespace mambascope {

ChannelProbe::ChannelProbe(const Model& model, ProbeOptions options)
    : model_(model),
      opt_(std::move(options)),
      n_layer_(model.config.n_layer),
      C_(model.config.channels()),
      n_a_(model.config.arch == Arch::Mamba1 ? model.config.d_state : 1) {
    const size_t LC = static_cast<size_t>(n_layer_ * C_);
    sum_used_.assign(LC, 0.0);
    sum_raw_.assign(LC, 0.0);
    critical_.assign(LC, 0);
    tokens_.assign(static_cast<size_t>(n_layer_), 0);
    if (opt_.m1_decay == M1Decay::Mean && n_a_ > 1) mean_log_decay_.assign(LC, 0.0);
    for (int64_t l = 0; l < n_layer_; ++l) {
        const Tensor& A = model.layers[static_cast<size_t>(l)].A;
        rate_.push_back(
            channel_decay_rate(std::span<const float>(A.data, static_cast<size_t>(A.numel())), C_, n_a_));
    }
    if (opt_.reference && !opt_.reference->empty()) {
        MS_CHECK(static_cast<int64_t>(opt_.reference->threshold.size()) == n_layer_,
                 "ChannelProbe: reference filter has the wrong number of layers");
        for (const auto& t : opt_.reference->threshold)
            MS_CHECK(static_cast<int64_t>(t.size()) == C_,
                     "ChannelProbe: reference filter has the wrong width");
    }
    if (!opt_.window_channels.empty()) {
        MS_CHECK(opt_.window_begin >= 0 && opt_.window_end > opt_.window_begin,
                 "ChannelProbe: the Δ window [" + std::to_string(opt_.window_begin) + ", " +
                     std::to_string(opt_.window_end) + ") is empty");
        MS_CHECK(
            opt_.window_end - opt_.window_begin <= kProbeMaxWindowTokens,
            "ChannelProbe: the Δ window is longer than " + std::to_string(kProbeMaxWindowTokens) + " tokens");
    }
    for (const auto& [layer, channel] : opt_.window_channels) {
        if (layer < 0 || layer >= n_layer_ || channel < 0 || channel >= C_)
            throw Error("probe channel (layer " + std::to_string(layer) + ", channel " +
                            std::to_string(channel) + ") does not exist",
                        "the model has " + std::to_string(n_layer_) + " layers × " + std::to_string(C_) +
                            " channels");
        ChannelWindow w;
        w.layer = layer;
        w.channel = channel;
        windows_.push_back(std::move(w));
    }
}

void ChannelProbe::on_delta(const DeltaBlock& raw, const DeltaBlock& used) {
    MS_CHECK(raw.channels == C_ && used.channels == C_ && raw.rows == used.rows && raw.layer == used.layer,
             "ChannelProbe: inconsistent Δ blocks");
    MS_CHECK(raw.layer >= 0 && raw.layer < n_layer_, "ChannelProbe: layer out of range");
    const int64_t l = raw.layer;
    const size_t base = static_cast<size_t>(l * C_);
    const std::vector<float>* thr = opt_.reference && !opt_.reference->empty()
                                        ? &opt_.reference->threshold[static_cast<size_t>(l)]
                                        : nullptr;
    const float* a_row = model_.layers[static_cast<size_t>(l)].A.data;
    for (int64_t r = 0; r < raw.rows; ++r) {
        for (int64_t c = 0; c < C_; ++c) {
            const float dr = raw.at(r, c), du = used.at(r, c);
            sum_raw_[base + c] += dr;
            sum_used_[base + c] += du;
            if (thr) {
                const float t = (*thr)[static_cast<size_t>(c)];
                if (!std::isinf(t) && dr > t) ++critical_[base + c];  // −inf (local): never critical
            }
        }
        if (!mean_log_decay_.empty()) {
            // Σ_t ln(mean_n exp(Δ_t,c·A[c,n])), stable (§8.2 `mean`)
            for (int64_t c = 0; c < C_; ++c) {
                const double d = used.at(r, c);
                const float* a = a_row + c * n_a_;
                double m = -std::numeric_limits<double>::infinity();
                for (int64_t n = 0; n < n_a_; ++n) m = std::max(m, d * a[n]);
                double s = 0;
                for (int64_t n = 0; n < n_a_; ++n) s += std::exp(d * a[n] - m);
                mean_log_decay_[base + c] += m + std::log(s / static_cast<double>(n_a_));
            }
        }
    }
    tokens_[static_cast<size_t>(l)] += raw.rows;
    for (ChannelWindow& w : windows_) {
        if (w.layer != l) continue;
        for (int64_t r = 0; r < raw.rows; ++r) {
            const int64_t p = raw.positions ? raw.positions[r] : -1;
            MS_CHECK(p >= 0, "ChannelProbe: Δ blocks without positions");
            if (p < opt_.window_begin || p >= opt_.window_end) continue;
            const float dr = raw.at(r, w.channel);
            w.positions.push_back(p);
            w.raw.push_back(dr);
            w.used.push_back(used.at(r, w.channel));
            if (thr && !std::isinf((*thr)[static_cast<size_t>(w.channel)]) &&
                dr > (*thr)[static_cast<size_t>(w.channel)])
                w.critical.push_back(p);
        }
    }
}

std::vector<double> ChannelProbe::log_decay_used() const {
    if (!mean_log_decay_.empty()) return mean_log_decay_;
    std::vector<double> out(sum_used_.size());
    for (int64_t l = 0; l < n_layer_; ++l)
        for (int64_t c = 0; c < C_; ++c)
            out[static_cast<size_t>(l * C_ + c)] = rate_[static_cast<size_t>(l)][static_cast<size_t>(c)] *
                                                   sum_used_[static_cast<size_t>(l * C_ + c)];
    return out;
}

}  // namespace mambascope
