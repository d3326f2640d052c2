// Receptive-field lengths (method doc §8.7). See receptive_field.h.
#include "mambascope/receptive_field.h"

#include <algorithm>
#include <cmath>

#include "mambascope/error.h"

namespace mambascope {

namespace {

// Σ Δ over the last r tokens must exceed this for the decay to fall below ε: A·ΣΔ < ln ε ⇔ ΣΔ > ln ε / A.
double delta_budget(double a_c, double epsilon) {
    MS_CHECK(epsilon > 0 && epsilon < 1,
             "receptive field: ε must be in (0, 1), got " + std::to_string(epsilon));
    MS_CHECK(a_c < 0, "receptive field: A_c must be negative, got " + std::to_string(a_c));
    return std::log(epsilon) / a_c;  // > 0
}

}  // namespace

ReceptiveField receptive_field(std::span<const float> delta, double a_c, double epsilon, int64_t t) {
    MS_CHECK(t >= 0 && t < static_cast<int64_t>(delta.size()),
             "receptive field: position " + std::to_string(t) + " outside the Δ series of length " +
                 std::to_string(delta.size()));
    const double ln_eps = std::log(epsilon);
    (void)delta_budget(a_c, epsilon);  // argument checks
    double sum = 0;
    for (int64_t r = 1; r <= t + 1; ++r) {
        sum += delta[static_cast<size_t>(t - r + 1)];
        if (a_c * sum < ln_eps) return {r, r, false};
    }
    return {t + 1, t + 1, true};
}

ReceptiveFieldTracker::ReceptiveFieldTracker(std::vector<std::vector<double>> rate,
                                             std::vector<int64_t> queries)
    : rate_(std::move(rate)), queries_(std::move(queries)) {
    MS_CHECK(!rate_.empty() && !rate_[0].empty(), "ReceptiveFieldTracker: no layers or channels");
    channels_ = static_cast<int64_t>(rate_[0].size());
    for (const auto& r : rate_)
        MS_CHECK(static_cast<int64_t>(r.size()) == channels_, "ReceptiveFieldTracker: ragged A");
    std::sort(queries_.begin(), queries_.end());
    queries_.erase(std::unique(queries_.begin(), queries_.end()), queries_.end());
    for (int64_t q : queries_) MS_CHECK(q >= 0, "ReceptiveFieldTracker: negative query position");
    layers_.resize(rate_.size());
    for (Layer& ly : layers_) {
        ly.running.assign(static_cast<size_t>(channels_), 0.0);
        ly.qsum.assign(queries_.size() * static_cast<size_t>(channels_), 0.0);
    }
}

ReceptiveFieldTracker::ReceptiveFieldTracker(std::vector<std::vector<double>> rate, int64_t expected_tokens,
                                             std::vector<int64_t> queries, int64_t budget_bytes)
    : ReceptiveFieldTracker(std::move(rate), std::move(queries)) {
    MS_CHECK(expected_tokens >= 1, "ReceptiveFieldTracker: expected_tokens must be ≥ 1");
    const int64_t per_cp =
        static_cast<int64_t>(layers_.size()) * channels_ * static_cast<int64_t>(sizeof(double));
    const int64_t max_cps = std::max<int64_t>(2, budget_bytes / std::max<int64_t>(per_cp, 1));
    // smallest stride with expected_tokens/stride + 1 ≤ max_cps
    stride_ = std::max<int64_t>(1, (expected_tokens + max_cps - 2) / (max_cps - 1));
    // The checkpoints' final size is known: expected_tokens/stride + 1 rows of C per layer (≤ budget_bytes in
    // all). Reserved once, so the vector never doubles and copies itself (issue 16: the doubling touched
    // ≈ 2× the budget in fresh pages, ≈ 2 page faults per token in analyze). Pages are touched only as
    // checkpoints are written, so a short input does not pay for the reservation.
    const size_t cps_rows = static_cast<size_t>(expected_tokens / stride_ + 1);
    for (Layer& ly : layers_) ly.cps.reserve(cps_rows * static_cast<size_t>(channels_));
}

ReceptiveFieldTracker ReceptiveFieldTracker::with_stride(std::vector<std::vector<double>> rate,
                                                         int64_t stride, std::vector<int64_t> queries) {
    MS_CHECK(stride >= 1, "ReceptiveFieldTracker: stride must be ≥ 1");
    ReceptiveFieldTracker tr(std::move(rate), std::move(queries));
    tr.stride_ = stride;
    return tr;
}

int64_t ReceptiveFieldTracker::memory_bytes() const {
    size_t n = 0;
    for (const Layer& ly : layers_) n += ly.cps.capacity() + ly.qsum.size() + ly.running.size();
    return static_cast<int64_t>(n * sizeof(double));
}

void ReceptiveFieldTracker::advance_to(Layer& ly, int64_t position) {
    // Every prefix P(j) with j ≤ position is final now (it sums positions < j ≤ position).
    const size_t C = static_cast<size_t>(channels_);
    while (ly.next_cp * stride_ <= position) {
        ly.cps.insert(ly.cps.end(), ly.running.begin(), ly.running.end());
        ++ly.next_cp;
    }
    while (ly.next_q < queries_.size() && queries_[ly.next_q] + 1 <= position) {
        std::copy(ly.running.begin(), ly.running.end(),
                  ly.qsum.begin() + static_cast<std::ptrdiff_t>(ly.next_q * C));
        ++ly.next_q;
    }
}

void ReceptiveFieldTracker::add(int layer, int64_t rows, const float* delta, int64_t ld,
                                const int64_t* positions) {
    MS_CHECK(layer >= 0 && layer < static_cast<int>(layers_.size()),
             "ReceptiveFieldTracker: layer " + std::to_string(layer) + " out of range");
    MS_CHECK(total_ < 0, "ReceptiveFieldTracker: add() after finish()");
    MS_CHECK(ld >= channels_, "ReceptiveFieldTracker: row stride smaller than the channel count");
    Layer& ly = layers_[static_cast<size_t>(layer)];
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t p = positions ? positions[r] : ly.next_pos;
        MS_CHECK(p >= ly.next_pos, "ReceptiveFieldTracker: positions must increase within a layer");
        advance_to(ly, p);
        const float* row = delta + r * ld;
        for (int64_t c = 0; c < channels_; ++c) ly.running[static_cast<size_t>(c)] += row[c];
        ly.next_pos = p + 1;
    }
}

void ReceptiveFieldTracker::on_delta(const DeltaBlock& /*raw*/, const DeltaBlock& used) {
    MS_CHECK(used.channels == channels_, "ReceptiveFieldTracker: Δ block has " +
                                             std::to_string(used.channels) + " channels, expected " +
                                             std::to_string(channels_));
    add(used.layer, used.rows, used.data, used.ld, used.positions);
}

void ReceptiveFieldTracker::finish(int64_t total_tokens) {
    MS_CHECK(total_tokens >= 1, "ReceptiveFieldTracker: no tokens");
    for (int64_t q : queries_)
        MS_CHECK(q < total_tokens, "ReceptiveFieldTracker: query position " + std::to_string(q) +
                                       " beyond the input (" + std::to_string(total_tokens) + " tokens)");
    // The last position is always answerable exactly: add it as a query before finishing.
    const int64_t last = total_tokens - 1;
    if (std::find(queries_.begin(), queries_.end(), last) == queries_.end()) {
        const size_t C = static_cast<size_t>(channels_);
        queries_.push_back(last);  // largest: stays sorted
        for (Layer& ly : layers_) ly.qsum.resize(queries_.size() * C, 0.0);
    }
    for (Layer& ly : layers_) {
        MS_CHECK(ly.next_pos <= total_tokens, "ReceptiveFieldTracker: positions beyond total_tokens");
        advance_to(ly, total_tokens);
    }
    total_ = total_tokens;
}

ReceptiveField ReceptiveFieldTracker::at(int layer, int64_t channel, int64_t t, double epsilon) const {
    MS_CHECK(total_ >= 0, "ReceptiveFieldTracker: at() before finish()");
    MS_CHECK(layer >= 0 && layer < static_cast<int>(layers_.size()),
             "ReceptiveFieldTracker: layer out of range");
    MS_CHECK(channel >= 0 && channel < channels_, "ReceptiveFieldTracker: channel out of range");
    MS_CHECK(t >= 0 && t < total_,
             "ReceptiveFieldTracker: position " + std::to_string(t) + " outside the input");
    const Layer& ly = layers_[static_cast<size_t>(layer)];
    const size_t C = static_cast<size_t>(channels_);
    const double budget =
        delta_budget(rate_[static_cast<size_t>(layer)][static_cast<size_t>(channel)], epsilon);
    auto cp = [&](int64_t m) { return ly.cps[static_cast<size_t>(m) * C + static_cast<size_t>(channel)]; };

    // P(t+1): exact from a checkpoint or a recorded query.
    double p_end = 0;
    if ((t + 1) % stride_ == 0) {
        p_end = cp((t + 1) / stride_);
    } else {
        const auto it = std::lower_bound(queries_.begin(), queries_.end(), t);
        MS_CHECK(it != queries_.end() && *it == t, "receptive field at position " + std::to_string(t) +
                                                       " was not requested (stride " +
                                                       std::to_string(stride_) + ")");
        p_end = ly.qsum[static_cast<size_t>(it - queries_.begin()) * C + static_cast<size_t>(channel)];
    }
    // RF = t+1−j* where j* = the largest start j ≤ t with P(t+1) − P(j) > budget (P non-decreasing in j).
    // Largest checkpoint index m with m·stride ≤ t satisfying it: j* ∈ [m·stride, min((m+1)·stride − 1, t)].
    const int64_t m_max = t / stride_;
    if (!(p_end - cp(0) > budget)) return {t + 1, t + 1, true};
    int64_t lo_m = 0, hi_m = m_max;  // invariant: condition holds at lo_m
    while (lo_m < hi_m) {
        const int64_t mid = lo_m + (hi_m - lo_m + 1) / 2;
        if (p_end - cp(mid) > budget)
            lo_m = mid;
        else
            hi_m = mid - 1;
    }
    const int64_t j_lo = lo_m * stride_;
    const int64_t j_hi = std::min((lo_m + 1) * stride_ - 1, t);
    return {t + 1 - j_hi, t + 1 - j_lo, false};
}

}  // namespace mambascope
