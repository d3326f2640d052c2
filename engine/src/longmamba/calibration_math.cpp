// LongMamba calibration maths (method doc §2.3, §8.2–§8.5). See longmamba.h.
#include <algorithm>
#include <cmath>
#include <limits>

#include "mambascope/error.h"
#include "mambascope/longmamba.h"

namespace mambascope {

const char* m1_decay_name(M1Decay d) {
    return d == M1Decay::Slowest ? "slowest" : "mean";
}
const char* aggregate_name(Aggregate a) {
    return a == Aggregate::Mean ? "mean" : "max";
}

M1Decay parse_m1_decay(const std::string& s) {
    if (s == "slowest") return M1Decay::Slowest;
    if (s == "mean") return M1Decay::Mean;
    throw Error("unknown Mamba-1 decay reduction '" + s + "'", "use 'slowest' or 'mean'");
}

Aggregate parse_aggregate(const std::string& s) {
    if (s == "mean" || s == "avg") return Aggregate::Mean;
    if (s == "max") return Aggregate::Max;
    throw Error("unknown aggregation '" + s + "'", "use 'mean' or 'max'");
}

std::vector<int64_t> official_lengths() {
    // §2.3 step 6, in thousands of tokens.
    static constexpr int64_t kThousands[] = {1,  2,  3,  4,  5,  6,  7,  8,  10,  12,  14,  16, 20,
                                             24, 30, 36, 44, 54, 64, 80, 96, 120, 144, 168, 192};
    std::vector<int64_t> out;
    for (int64_t k : kThousands) out.push_back(k * 1000);
    return out;
}

std::string length_key(int64_t length) {
    return std::to_string(static_cast<int64_t>(length / 1e3)) + "k";
}

std::vector<double> clamp_top(std::span<const float> delta, double clamp_top) {
    MS_CHECK(!delta.empty(), "clamp_top: empty Δ column");
    MS_CHECK(clamp_top > 0 && clamp_top <= 1,
             "clamp_top: ratio must be in (0, 1], got " + std::to_string(clamp_top));
    const int64_t n = static_cast<int64_t>(delta.size());
    // k = max(1, int(n·sc)) (Python int() truncates)
    const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(n) * clamp_top));
    std::vector<float> tmp(delta.begin(), delta.end());
    std::nth_element(tmp.begin(), tmp.begin() + (k - 1), tmp.end(), std::greater<float>());
    const double v = tmp[static_cast<size_t>(k - 1)];  // k-th largest
    std::vector<double> out(delta.size());
    for (size_t i = 0; i < delta.size(); ++i) out[i] = std::min(static_cast<double>(delta[i]), v);
    return out;
}

namespace {

// v_i of torch's linear interpolation (align_corners=False) of u (length L) to `length` samples.
inline double resample_at(std::span<const double> u, int64_t length, int64_t i) {
    const int64_t L = static_cast<int64_t>(u.size());
    const double scale = static_cast<double>(L) / static_cast<double>(length);
    const double s = std::max(0.0, (static_cast<double>(i) + 0.5) * scale - 0.5);
    const int64_t i0 = std::min<int64_t>(static_cast<int64_t>(s), L - 1);
    const int64_t i1 = std::min<int64_t>(i0 + 1, L - 1);
    const double f = s - static_cast<double>(i0);
    return (1.0 - f) * u[static_cast<size_t>(i0)] + f * u[static_cast<size_t>(i1)];
}

}  // namespace

std::vector<double> resample_linear(std::span<const double> u, int64_t length) {
    MS_CHECK(!u.empty(), "resample_linear: empty input");
    MS_CHECK(length >= 1, "resample_linear: target length must be ≥ 1");
    std::vector<double> v(static_cast<size_t>(length));
    for (int64_t i = 0; i < length; ++i) v[static_cast<size_t>(i)] = resample_at(u, length, i);
    return v;
}

ThresholdAlpha threshold_alpha(std::span<const double> sorted_desc, double delta_sum, int64_t length) {
    MS_CHECK(!sorted_desc.empty(), "threshold_alpha: empty Δ column");
    MS_CHECK(length >= 1, "threshold_alpha: target length must be ≥ 1");
    const int64_t L = static_cast<int64_t>(sorted_desc.size());
    if (length <= L) return {0.0, 1.0};  // identity: every Δ > 0 survives
    // cum_i = Σ_{j≤i} v_j; i* = first i with cum_i > S (strict), none → 0
    int64_t i_star = 0;
    double cum = 0;
    for (int64_t i = 0; i < length; ++i) {
        cum += resample_at(sorted_desc, length, i);
        if (cum > delta_sum) {
            i_star = i;
            break;
        }
    }
    const int64_t K = i_star + 1;
    // θ = v[K]; K ≥ λ (crossing at the last index) would be out of range in the official code: use v[λ−1].
    const double theta = resample_at(sorted_desc, length, std::min(K, length - 1));
    const double alpha = std::min(static_cast<double>(K) / static_cast<double>(length), 1.0);
    return {theta, alpha};
}

std::vector<double> channel_decay_rate(std::span<const float> A, int64_t channels, int64_t n_a) {
    MS_CHECK(n_a >= 1 && static_cast<int64_t>(A.size()) == channels * n_a,
             "channel_decay_rate: A has " + std::to_string(A.size()) + " values, expected " +
                 std::to_string(channels) + " × " + std::to_string(n_a));
    std::vector<double> out(static_cast<size_t>(channels));
    for (int64_t c = 0; c < channels; ++c) {
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t n = 0; n < n_a; ++n) m = std::max(m, static_cast<double>(A[c * n_a + n]));
        out[static_cast<size_t>(c)] = m;  // max_n A[c,n]: the slowest-decaying state
    }
    return out;
}

WindowStats window_stats(int64_t T, int64_t C, const float* delta, int64_t ld, std::span<const float> A,
                         int64_t n_a, std::span<const int64_t> lengths, double clamp_top_ratio,
                         M1Decay m1_decay) {
    MS_CHECK(T >= 1 && C >= 1,
             "window_stats: empty Δ (" + std::to_string(T) + " × " + std::to_string(C) + ")");
    MS_CHECK(ld >= C, "window_stats: row stride smaller than the channel count");
    MS_CHECK(delta != nullptr, "window_stats: null Δ");
    MS_CHECK(!lengths.empty(), "window_stats: no target lengths");
    const std::vector<double> rate = channel_decay_rate(A, C, n_a);
    const int64_t n_len = static_cast<int64_t>(lengths.size());

    WindowStats w;
    w.channels = C;
    w.n_lengths = n_len;
    w.log_decay.assign(static_cast<size_t>(C), 0.0);
    w.delta_sum.assign(static_cast<size_t>(C), 0.0);
    w.threshold.assign(static_cast<size_t>(n_len * C), 0.0);
    w.alpha.assign(static_cast<size_t>(n_len * C), 1.0);
    const bool mean_states = n_a > 1 && m1_decay == M1Decay::Mean;

#pragma omp parallel for schedule(dynamic, 8)
    for (int64_t c = 0; c < C; ++c) {
        std::vector<float> column(static_cast<size_t>(T));  // Δ_{:,c} (T)
        for (int64_t t = 0; t < T; ++t) column[static_cast<size_t>(t)] = delta[t * ld + c];
        std::vector<double> clamped = clamp_top(column, clamp_top_ratio);  // Δ̃_{:,c} (T)
        double S = 0;
        for (double d : clamped) S += d;
        w.delta_sum[static_cast<size_t>(c)] = S;
        if (mean_states) {
            // Σ_t ln(mean_n exp(Δ̃_t·A[c,n])), each term as max + ln(mean exp(x − max))
            const float* a = A.data() + c * n_a;
            double total = 0;
            for (double d : clamped) {
                double m = -std::numeric_limits<double>::infinity();
                for (int64_t n = 0; n < n_a; ++n) m = std::max(m, d * a[n]);
                double s = 0;
                for (int64_t n = 0; n < n_a; ++n) s += std::exp(d * a[n] - m);
                total += m + std::log(s / static_cast<double>(n_a));
            }
            w.log_decay[static_cast<size_t>(c)] = total;
        } else {
            w.log_decay[static_cast<size_t>(c)] = rate[static_cast<size_t>(c)] * S;  // A_c·ΣΔ̃
        }
        std::sort(clamped.begin(), clamped.end(), std::greater<double>());
        for (int64_t li = 0; li < n_len; ++li) {
            const ThresholdAlpha ta = threshold_alpha(clamped, S, lengths[static_cast<size_t>(li)]);
            w.threshold[static_cast<size_t>(li * C + c)] = ta.threshold;
            w.alpha[static_cast<size_t>(li * C + c)] = ta.alpha;
        }
    }
    return w;
}

StatsAggregator::StatsAggregator(int64_t channels, int64_t n_lengths, Aggregate how)
    : channels_(channels), n_lengths_(n_lengths), how_(how) {
    MS_CHECK(channels >= 1 && n_lengths >= 1, "StatsAggregator: empty shape");
    const double init = how == Aggregate::Max ? -std::numeric_limits<double>::infinity() : 0.0;
    acc_.channels = channels;
    acc_.n_lengths = n_lengths;
    acc_.log_decay.assign(static_cast<size_t>(channels), init);
    acc_.delta_sum.assign(static_cast<size_t>(channels), init);
    acc_.threshold.assign(static_cast<size_t>(channels * n_lengths), init);
    acc_.alpha.assign(static_cast<size_t>(channels * n_lengths), init);
    lse_max_.assign(static_cast<size_t>(channels), -std::numeric_limits<double>::infinity());
    lse_sum_.assign(static_cast<size_t>(channels), 0.0);
}

void StatsAggregator::add(const WindowStats& w) {
    MS_CHECK(w.channels == channels_ && w.n_lengths == n_lengths_,
             "StatsAggregator: window statistics of another shape");
    auto combine = [&](std::vector<double>& acc, const std::vector<double>& x) {
        for (size_t i = 0; i < acc.size(); ++i)
            acc[i] = how_ == Aggregate::Max ? std::max(acc[i], x[i]) : acc[i] + x[i];
    };
    combine(acc_.delta_sum, w.delta_sum);
    combine(acc_.threshold, w.threshold);
    combine(acc_.alpha, w.alpha);
    if (how_ == Aggregate::Max) {
        combine(acc_.log_decay, w.log_decay);
    } else {
        // online log-sum-exp: Σ exp(x_i) = exp(m)·s
        for (size_t c = 0; c < lse_sum_.size(); ++c) {
            const double x = w.log_decay[c];
            if (x > lse_max_[c]) {
                lse_sum_[c] = lse_sum_[c] * std::exp(lse_max_[c] - x) + 1.0;
                lse_max_[c] = x;
            } else {
                lse_sum_[c] += std::exp(x - lse_max_[c]);
            }
        }
    }
    ++count_;
}

WindowStats StatsAggregator::result() const {
    if (count_ == 0) throw Error("no calibration window was aggregated");
    WindowStats r = acc_;
    if (how_ == Aggregate::Mean) {
        const double n = static_cast<double>(count_);
        for (double& v : r.delta_sum) v /= n;
        for (double& v : r.threshold) v /= n;
        for (double& v : r.alpha) v /= n;
        // ln(mean_i exp(x_i)) = m + ln(s) − ln(n)
        for (size_t c = 0; c < r.log_decay.size(); ++c)
            r.log_decay[c] = lse_max_[c] + std::log(lse_sum_[c] / n);
    }
    return r;
}

size_t nearest_length_index(std::span<const int64_t> lengths, int64_t S) {
    MS_CHECK(!lengths.empty(), "nearest_length_index: empty length table");
    size_t best = 0;
    int64_t best_dist = std::numeric_limits<int64_t>::max();
    for (size_t i = 0; i < lengths.size(); ++i) {
        const int64_t d = lengths[i] > S ? lengths[i] - S : S - lengths[i];
        if (d < best_dist) {  // strict: the first (smaller) length wins ties
            best = i;
            best_dist = d;
        }
    }
    return best;
}

std::vector<uint8_t> global_mask(std::span<const double> log_decay, double c) {
    MS_CHECK(c > 0, "global_mask: c must be > 0, got " + std::to_string(c));
    const double ln_c = std::log(c);
    std::vector<uint8_t> mask(log_decay.size());
    for (size_t i = 0; i < log_decay.size(); ++i) mask[i] = log_decay[i] > ln_c ? 1 : 0;
    return mask;
}

}  // namespace mambascope
