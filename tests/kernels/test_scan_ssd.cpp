// The chunked SSD form of the Mamba-2 scan (kernels/cpu/scan_ssd.h, method doc §9.2) against the recurrent
// reference scan_mamba2 (kernels/cpu/scan.h): in fp32 they are the same function up to rounding, filter and
// carried state included; with bf16 operands the difference is the stated bf16 bound, and it is not zero.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "cpu/scan.h"
#include "cpu/scan_ssd.h"

namespace {

namespace kc = mambascope::kernels;

struct Case {
    int64_t T, H, P, G, N, Q;
    bool filter;
};

struct Out {
    std::vector<float> y, s, delta;
};

double rel_err(const std::vector<float>& got, const std::vector<float>& want) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < got.size(); ++i) {
        if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
        num = std::max(num, std::abs(double(got[i]) - want[i]));
        den = std::max(den, std::abs(double(want[i])));
    }
    return num / std::max(den, 1e-30);
}

struct Inputs {
    std::vector<float> x, delta, A, B, C, D, s0, thr;
};

Inputs make(const Case& c, std::mt19937& rng) {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::uniform_real_distribution<float> ud(0.0f, 1.0f);
    Inputs in;
    auto fill = [&](std::vector<float>& v, size_t n, float scale) {
        v.resize(n);
        for (auto& e : v) e = scale * nd(rng);
    };
    fill(in.x, size_t(c.T * c.H * c.P), 1.0f);
    fill(in.B, size_t(c.T * c.G * c.N), 0.5f);
    fill(in.C, size_t(c.T * c.G * c.N), 0.5f);
    fill(in.D, size_t(c.H), 1.0f);
    fill(in.s0, size_t(c.H * c.P * c.N), 0.5f);
    in.delta.resize(size_t(c.T * c.H));
    for (auto& e : in.delta) e = std::log1p(std::exp(-5.0f + 5.5f * ud(rng)));  // softplus of U(−5, 0.5)
    in.A.resize(size_t(c.H));
    for (auto& e : in.A) e = -(0.05f + 8.0f * ud(rng));
    in.thr.resize(size_t(c.H));
    for (auto& e : in.thr) e = 0.02f + 0.3f * ud(rng);  // filters a good part of every head
    return in;
}

Out run(const Case& c, const Inputs& in, bool chunked, bool bf16) {
    Out o{std::vector<float>(size_t(c.T * c.H * c.P)), in.s0, in.delta};
    const float* thr = c.filter ? in.thr.data() : nullptr;
    if (chunked)
        kc::scan_mamba2_chunked(c.T, c.H, c.P, c.G, c.N, in.x.data(), c.H * c.P, o.delta.data(), c.H,
                                in.A.data(), in.B.data(), c.G * c.N, in.C.data(), c.G * c.N, in.D.data(), thr,
                                o.s.data(), o.y.data(), c.H * c.P, c.Q, bf16);
    else
        kc::scan_mamba2(c.T, c.H, c.P, c.G, c.N, in.x.data(), c.H * c.P, o.delta.data(), c.H, in.A.data(),
                        in.B.data(), c.G * c.N, in.C.data(), c.G * c.N, in.D.data(), thr, o.s.data(),
                        o.y.data(), c.H * c.P);
    return o;
}

const std::vector<Case> kCases = {
    {1, 2, 4, 1, 8, 64, true},      {63, 3, 5, 3, 16, 64, false},  {64, 2, 8, 1, 16, 64, true},
    {65, 4, 8, 2, 32, 64, true},    {300, 2, 16, 1, 32, 16, true}, {1000, 3, 16, 1, 64, 64, true},
    {777, 2, 8, 2, 16, 128, false},
};

TEST(ScanSsd, Float32ChunkedFormEqualsTheRecurrenceWithFilterAndCarriedState) {
    std::mt19937 rng(5);
    for (const Case& c : kCases) {
        SCOPED_TRACE("T=" + std::to_string(c.T) + " Q=" + std::to_string(c.Q) +
                     " filter=" + std::to_string(c.filter));
        const Inputs in = make(c, rng);
        const Out rec = run(c, in, false, false), chk = run(c, in, true, false);
        EXPECT_LE(rel_err(chk.y, rec.y), 2e-5);
        EXPECT_LE(rel_err(chk.s, rec.s), 2e-5);
        EXPECT_EQ(chk.delta, rec.delta);  // the same Δ' written back
    }
}

// Every token of a chunk filtered (Δ' = 0): the state passes through unchanged and y = C·S + D·x exactly as
// the recurrence gives it (no decay, no input: method doc §2.4).
TEST(ScanSsd, AFullyFilteredInputLeavesTheStateUnchanged) {
    std::mt19937 rng(6);
    Case c{130, 2, 8, 1, 16, 64, true};
    Inputs in = make(c, rng);
    std::fill(in.thr.begin(), in.thr.end(), 1e9f);
    const Out chk = run(c, in, true, false), rec = run(c, in, false, false);
    EXPECT_EQ(chk.s, in.s0);
    EXPECT_LE(rel_err(chk.y, rec.y), 1e-6);
    for (float d : chk.delta) EXPECT_EQ(d, 0.0f);
}

// bf16 operands: within the bound the CUDA test states for the GPU (2e-2), and visibly not fp32 (the rounding
// is applied).
TEST(ScanSsd, Bf16OperandsStayWithinTheirBoundAndAreRounded) {
    std::mt19937 rng(7);
    for (const Case& c : kCases) {
        SCOPED_TRACE("T=" + std::to_string(c.T));
        const Inputs in = make(c, rng);
        const Out rec = run(c, in, false, false), b16 = run(c, in, true, true);
        const double e = std::max(rel_err(b16.y, rec.y), rel_err(b16.s, rec.s));
        EXPECT_LE(e, 2e-2);
        EXPECT_GT(e, 1e-5);
    }
}

TEST(ScanSsd, RoundBf16IsNearestEvenAndKeepsNaN) {
    EXPECT_EQ(kc::round_bf16(1.0f), 1.0f);
    EXPECT_EQ(kc::round_bf16(1.0f + std::ldexp(1.0f, -8)), 1.0f);  // halfway: to even (mantissa 0)
    EXPECT_EQ(kc::round_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 1.0f + std::ldexp(1.0f, -6));  // halfway: up
    EXPECT_EQ(kc::round_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)),
              1.0f + std::ldexp(1.0f, -7));
    EXPECT_EQ(kc::round_bf16(-2.5f), -2.5f);
    EXPECT_TRUE(std::isnan(kc::round_bf16(std::numeric_limits<float>::quiet_NaN())));
    EXPECT_EQ(kc::round_bf16(std::numeric_limits<float>::infinity()), std::numeric_limits<float>::infinity());
}

}  // namespace
