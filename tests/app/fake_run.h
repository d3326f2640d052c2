// fake_run.h: a fabricated RunResult with plausible numbers for the GUI tests (never used by the app).
// Values are closed-form in (layer, channel, token) so tests can check that views draw exactly these numbers.
#pragma once

#include <cmath>
#include <memory>

#include "mambascope/analysis.h"

namespace mambascope::test {

constexpr int kFakeLayers = 4;
constexpr int64_t kFakeChannels = 16;
constexpr int64_t kFakeTokens = 300;
constexpr int64_t kFakeTrainLen = 100;

inline double fake_log_decay(Method m, int l, int64_t c) {
    return -0.1 * double(l + 1) * double(c + 1) * (m == Method::LongMamba ? 0.5 : 1.0);
}
inline float fake_delta(int l, int64_t c, int64_t t) {
    return float(0.05 + 0.04 * std::sin(0.1 * double(t) + double(c)) + 0.01 * l + (t % 37 == 0 ? 0.3 : 0.0));
}
// Global channels (c % 4 == 0 in every layer: 16 of 64) that keep token t: all for vanilla, fewer for
// LongMamba on every third token.
inline int64_t fake_keep_count(Method m, int64_t t) {
    const int64_t n_global = kFakeLayers * (kFakeChannels / 4);
    return m == Method::LongMamba && t % 3 == 0 ? n_global - 1 - t % 7 : n_global;
}
inline float fake_nll(Method m, int64_t p) {
    return float(2.0 + std::sin(0.05 * double(p)) + (m == Method::LongMamba ? -0.2 : 0.0));
}

inline std::shared_ptr<RunResult> make_fake_run() {
    auto r = std::make_shared<RunResult>();
    r->n_layer = kFakeLayers;
    r->channels = kFakeChannels;
    r->train_len = kFakeTrainLen;
    r->window_begin = 0;
    r->window_end = kFakeTokens;
    r->rf_positions = {kFakeTokens - 1};
    r->provenance["model"] = "fake";
    for (int64_t t = 0; t < kFakeTokens; ++t) {
        r->input.ids.push_back(int32_t('a' + t % 26));
        r->input.token_strings.push_back(std::string(1, char('a' + t % 26)));
        r->input.byte_offsets.push_back(t);
    }
    for (Method m : {Method::Vanilla, Method::LongMamba}) {
        MethodResult mr;
        mr.method = m;
        mr.log_decay = Array<double>::zeros({kFakeLayers, kFakeChannels});
        mr.delta_sum = Array<double>::zeros({kFakeLayers, kFakeChannels});
        mr.global_mask = Array<uint8_t>::zeros({kFakeLayers, kFakeChannels});
        mr.critical_count = Array<int64_t>::zeros({kFakeLayers, kFakeChannels});
        mr.receptive_field = Array<int64_t>::zeros({kFakeLayers, 1, kFakeChannels});
        mr.receptive_field_censored = Array<uint8_t>::zeros({kFakeLayers, 1, kFakeChannels});
        for (int l = 0; l < kFakeLayers; ++l)
            for (int64_t c = 0; c < kFakeChannels; ++c) {
                mr.log_decay.at2(l, c) = fake_log_decay(m, l, c);
                mr.delta_sum.at2(l, c) = -fake_log_decay(m, l, c) * 2;
                mr.global_mask.at2(l, c) = c % 4 == 0;
                mr.critical_count.at2(l, c) = c % 4 == 0 ? 10 + c : 0;
                mr.receptive_field.data[size_t(l * kFakeChannels + c)] =
                    5 + 10 * c + (m == Method::LongMamba ? 50 : 0);
            }
        for (int64_t t = 0; t < kFakeTokens; ++t) mr.global_keep_count.push_back(fake_keep_count(m, t));
        for (int64_t p = 0; p + 1 < kFakeTokens; ++p) {
            mr.nll_positions.push_back(p);
            mr.nll.push_back(fake_nll(m, p));
        }
        for (ChannelRef ref : {ChannelRef{1, 3}, ChannelRef{2, 4}}) {
            ChannelTrace t;
            t.ref = ref;
            t.global = ref.channel % 4 == 0;
            t.threshold = m == Method::LongMamba ? 0.1f : -INFINITY;
            double cum = 0;
            for (int64_t i = 0; i < kFakeTokens; ++i) {
                const float d = fake_delta(ref.layer, ref.channel, i);
                const bool crit = m != Method::LongMamba || d > t.threshold;
                t.delta_raw.push_back(d);
                t.delta_used.push_back(crit ? d : 0.f);
                t.critical.push_back(crit ? 1 : 0);
                cum += -0.5 * (crit ? d : 0.f);
                t.cum_log_decay.push_back(float(cum));
            }
            mr.channels.push_back(t);
            AttentionMap am;
            am.ref = ref;
            am.begin = kFakeTokens - 20;
            am.alpha = Array<float>::zeros({20, 20});
            for (int i = 0; i < 20; ++i)
                for (int j = 0; j <= i; ++j) am.alpha.at2(i, j) = float(std::exp(-0.2 * (i - j)));
            mr.attention.push_back(am);
        }
        r->methods.push_back(std::move(mr));
    }
    return r;
}

}  // namespace mambascope::test
