// The CPU forward's GEMM backend and its fused LM head + NLL (issue 16), each against a float64 reference:
// sgemm_nt (whatever MAMBASCOPE_BLAS this build chose) on the model's odd shapes, with strides and beta; the
// blockwise log-sum-exp NLL on a vocabulary of several blocks with a partial last block, over more rows than
// one head chunk; and DeciMamba's reused selection buffers across chunks of different kept counts.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <Eigen/Core>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "cpu/gemm.h"
#include "engine/tiny_model.h"
#include "mambascope/forward.h"
#include "mambascope/model.h"

using namespace mambascope;

namespace {

std::vector<float> random_floats(size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
}

// C = A·Bᵀ + beta·C in double, row-major with strides.
std::vector<double> sgemm_nt_reference(int64_t M, int64_t N, int64_t K, const std::vector<float>& A,
                                       int64_t lda, const std::vector<float>& B, int64_t ldb, float beta,
                                       const std::vector<float>& C0, int64_t ldc) {
    std::vector<double> C(C0.begin(), C0.end());
    for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
            double acc = 0;
            for (int64_t k = 0; k < K; ++k)
                acc += double(A[size_t(i * lda + k)]) * double(B[size_t(j * ldb + k)]);
            C[size_t(i * ldc + j)] = acc + double(beta) * double(C0[size_t(i * ldc + j)]);
        }
    return C;
}

// Sinks the residual stream after one layer (the head's input before norm_f).
class ResidAfter : public ActivationSink {
  public:
    explicit ResidAfter(int layer, int64_t D) : layer_(layer), D_(D) {}
    bool wants(ActivationKind kind, int layer) const override {
        return kind == ActivationKind::Resid && layer == layer_;
    }
    int64_t begin() const override { return 0; }
    int64_t end() const override { return std::numeric_limits<int64_t>::max(); }
    void on_activation(const ActivationBlock& b) override {
        for (int64_t r = 0; r < b.rows; ++r)
            rows[b.positions[r]].assign(b.data + r * b.ld, b.data + r * b.ld + D_);
    }
    std::map<int64_t, std::vector<float>> rows;

  private:
    int layer_;
    int64_t D_;
};

}  // namespace

// Every backend (the one this build links) computes C = A·Bᵀ + beta·C like float64 does, to float32 rounding
// of a K-term dot product, on the model's shapes: odd sizes, padded strides, beta 0 (C garbage) and 1.
TEST(CpuGemm, SgemmNtMatchesTheDoubleReferenceWithStridesAndBeta) {
    struct Case {
        int64_t M, N, K;
        float beta;
    };
    for (Case cs : {Case{37, 80, 1536, 0.0f}, Case{129, 1536, 48, 0.0f}, Case{64, 768, 1536, 1.0f},
                    Case{1, 1001, 768, 0.0f}, Case{300, 3072, 96, 1.0f}}) {
        const int64_t lda = cs.K + 3, ldb = cs.K + 5, ldc = cs.N + 7;
        auto A = random_floats(size_t(cs.M * lda), 1);
        auto B = random_floats(size_t(cs.N * ldb), 2);
        auto C = random_floats(size_t(cs.M * ldc), 3);
        if (cs.beta == 0.0f)
            for (int64_t i = 0; i < cs.M; ++i) C[size_t(i * ldc)] = std::nanf("");  // must not be read
        const auto ref = sgemm_nt_reference(cs.M, cs.N, cs.K, A, lda, B, ldb, cs.beta, C, ldc);
        kernels::sgemm_nt(cs.M, cs.N, cs.K, A.data(), lda, B.data(), ldb, cs.beta, C.data(), ldc);
        const double tol = 1e-5 * std::sqrt(double(cs.K)) * 4;  // |a·b| terms ~ 1, sum of K
        double worst = 0;
        for (int64_t i = 0; i < cs.M; ++i)
            for (int64_t j = 0; j < cs.N; ++j)
                worst = std::max(worst, std::abs(double(C[size_t(i * ldc + j)]) - ref[size_t(i * ldc + j)]));
        EXPECT_LT(worst, tol) << kernels::sgemm_backend() << " M=" << cs.M << " N=" << cs.N << " K=" << cs.K;
        // the padding between rows is untouched
        if (ldc > cs.N) EXPECT_FALSE(std::isnan(C[size_t(cs.N + 1)]));
    }
    EXPECT_TRUE(std::string(kernels::sgemm_backend()) == "openblas" ||
                std::string(kernels::sgemm_backend()) == "blis" ||
                std::string(kernels::sgemm_backend()) == "eigen");
}

// The other MAMBASCOPE_BLAS choices, whichever are installed (opened with dlopen, so one build checks them
// all) and Eigen's product, on the forward's shapes against float64: C = A·Bᵀ, row-major.
TEST(CpuGemm, EveryInstalledLibraryMatchesTheDoubleReference) {
    using CblasSgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int,
                                float, float*, int);
    using MatRM = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    std::vector<std::pair<std::string,
                          std::function<void(int64_t, int64_t, int64_t, const float*, const float*, float*)>>>
        libs;
    libs.emplace_back("eigen", [](int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C) {
        Eigen::Map<MatRM>(C, M, N).noalias() =
            Eigen::Map<const MatRM>(A, M, K) * Eigen::Map<const MatRM>(B, N, K).transpose();
    });
    for (const char* path : {"/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0",
                             "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
                             "/usr/lib/x86_64-linux-gnu/blis-openmp/libblis.so.4"}) {
        void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!h) continue;
        auto f = reinterpret_cast<CblasSgemm>(dlsym(h, "cblas_sgemm"));
        if (!f) continue;
        libs.emplace_back(path,
                          [f](int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C) {
                              f(101, 111, 112, int(M), int(N), int(K), 1.0f, A, int(K), B, int(K), 0.0f, C,
                                int(N));  // row-major, A·Bᵀ
                          });
    }
    for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{256, 3072, 768},
                           {256, 80, 1536},
                           {256, 1536, 48},
                           {129, 1031, 768}}) {
        const auto A = random_floats(size_t(M * K), 4), B = random_floats(size_t(N * K), 5);
        const std::vector<float> zero(size_t(M * N), 0.0f);
        const auto ref = sgemm_nt_reference(M, N, K, A, K, B, K, 0.0f, zero, N);
        for (const auto& [name, gemm] : libs) {
            std::vector<float> C(size_t(M * N), std::nanf(""));
            gemm(M, N, K, A.data(), B.data(), C.data());
            double worst = 0;
            for (size_t i = 0; i < C.size(); ++i) worst = std::max(worst, std::abs(double(C[i]) - ref[i]));
            EXPECT_LT(worst, 4e-5 * std::sqrt(double(K))) << name << " M=" << M << " N=" << N << " K=" << K;
        }
    }
}

// The NLL computed blockwise over the vocabulary (never T × V logits) equals log Σ exp − target in float64
// from the final residual stream: vocabulary of 5 blocks with a partial last one and a tail not a multiple
// of 16 lanes, 300 rows (three head chunks, the last partial).
TEST(CpuForwardHead, BlockwiseNllMatchesTheDoubleLogSumExp) {
    ModelConfig cfg = test::tiny(Arch::Mamba1);
    cfg.vocab_size = 4 * 1024 + 397;
    auto m = random_model(cfg, 11);
    const int T = 300;
    std::mt19937 rng(5);
    std::vector<int32_t> ids(T);
    for (auto& i : ids) i = static_cast<int32_t>(rng() % cfg.vocab_size);
    ResidAfter sink(int(cfg.n_layer) - 1, cfg.d_model);
    ForwardOptions opt;
    opt.activations = &sink;
    opt.chunk_tokens = 256;  // two prefill chunks: 256 + 44 rows
    HeadRequest head;
    head.nll = true;
    auto res = run_forward(*m, ids, opt, head);
    ASSERT_EQ(res.nll.size(), size_t(T - 1));
    ASSERT_EQ(sink.rows.size(), size_t(T));
    const int64_t D = cfg.d_model, V = m->vocab_rows();
    double worst = 0;
    for (int p = 0; p < T - 1; ++p) {
        ASSERT_EQ(res.nll_positions[size_t(p)], p);
        const auto& x = sink.rows.at(p);
        double ms = 0;
        for (float v : x) ms += double(v) * v;
        const double inv = 1.0 / std::sqrt(ms / double(D) + cfg.norm_eps);
        std::vector<double> l(static_cast<size_t>(V));
        double mx = -1e300;
        for (int64_t v = 0; v < V; ++v) {
            double acc = 0;
            for (int64_t k = 0; k < D; ++k)
                acc += double(x[size_t(k)]) * inv * double(m->norm_f.data[k]) *
                       double(m->lm_head.data[v * D + k]);
            l[size_t(v)] = acc;
            mx = std::max(mx, acc);
        }
        double se = 0;
        for (double v : l) se += std::exp(v - mx);
        const double nll = std::log(se) + mx - l[size_t(ids[size_t(p + 1)])];
        worst = std::max(worst, std::abs(double(res.nll[size_t(p)]) - nll));
    }
    EXPECT_LT(worst, 2e-5);
}

// Asking for logits rows and NLL together: the streamed rows and the blockwise NLL agree.
TEST(CpuForwardHead, NllAgreesWithTheStreamedLogitsRows) {
    ModelConfig cfg = test::tiny(Arch::Mamba2);
    cfg.vocab_size = 2 * 1024 + 5;
    auto m = random_model(cfg, 12);
    std::vector<int32_t> ids(150);
    std::mt19937 rng(6);
    for (auto& i : ids) i = static_cast<int32_t>(rng() % cfg.vocab_size);
    HeadRequest head;
    head.nll = true;
    head.logits_positions = {3, 77, 140};
    std::map<int64_t, std::vector<float>> rows;
    head.logits_sink = [&](int64_t p, const float* l, int64_t V) { rows[p].assign(l, l + V); };
    auto res = run_forward(*m, ids, {}, head);
    ASSERT_EQ(rows.size(), 3u);
    for (auto& [p, l] : rows) {
        double mx = -1e300, se = 0;
        for (float v : l) mx = std::max(mx, double(v));
        for (float v : l) se += std::exp(double(v) - mx);
        EXPECT_NEAR(res.nll[size_t(p)], std::log(se) + mx - l[size_t(ids[size_t(p + 1)])], 1e-5) << p;
    }
}

// DeciMamba's kept rows go through reused buffers: chunks whose kept counts differ (including none kept and
// all kept) give the same NLL as one chunk holding the whole input.
TEST(CpuForwardHead, DecimationWithReusedBuffersEqualsOneChunk) {
    for (Arch arch : {Arch::Mamba1, Arch::Mamba2}) {
        auto m = random_model(test::tiny(arch), 13);
        std::vector<int32_t> ids(96);
        std::mt19937 rng(7);
        for (auto& i : ids) i = static_cast<int32_t>(rng() % 37);
        std::map<int, std::vector<int64_t>> keep;
        for (int64_t p = 0; p < 96; ++p)
            if ((p >= 16 && p < 32) || (p >= 48 && p % 3 == 0) || p == 95)
                keep[1].push_back(p);  // chunk 0: none
        HeadRequest head;
        head.nll = true;
        ForwardOptions one, chunked;
        one.keep_positions = chunked.keep_positions = &keep;
        one.chunk_tokens = 96;
        chunked.chunk_tokens = 16;
        auto a = run_forward(*m, ids, one, head);
        auto b = run_forward(*m, ids, chunked, head);
        ASSERT_EQ(a.nll_positions, b.nll_positions);
        ASSERT_FALSE(a.nll.empty());
        for (size_t i = 0; i < a.nll.size(); ++i) EXPECT_NEAR(a.nll[i], b.nll[i], 1e-5) << i;
    }
}
