// bench_sgemm: SGEMM GFLOP/s of every available backend, side by side in one process, on the shapes the CPU
// forward runs (mamba-130m, a prefill chunk of kPrefillChunkTokens rows) and the 2048×3072×768.
// Prints figures; asserts nothing. docs/benchmarks.md records the results and the command.
//
// The backend the engine was built with (MAMBASCOPE_BLAS) is timed through kernels::sgemm_nt; the other
// libraries are opened with dlopen, so one run compares them all under the same machine load. OpenBLAS reads
// OPENBLAS_CORETYPE when it is loaded: run once with and once without it to see both kernels.
//
//   bench_sgemm [repeats]      (each figure is the best of `repeats`; OMP_NUM_THREADS sets the threads)
#include <dlfcn.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu/gemm.h"
#include "mambascope/forward.h"

namespace {

using MatRM = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// cblas_sgemm's ABI (CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112).
using CblasSgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float,
                            float*, int);

struct Shape {
    const char* name;
    int64_t M, N, K;  // C (M, N) = A (M, K) · Bᵀ, B (N, K)
};

struct Backend {
    std::string name;
    // C = A·Bᵀ, all row-major
    std::function<void(const Shape&, const float*, const float*, float*)> run;
};

double seconds_of(const std::function<void()>& f, int repeats) {
    std::vector<double> t;
    for (int i = 0; i < repeats; ++i) {
        const auto a = std::chrono::steady_clock::now();
        f();
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
    }
    // the fastest repeat: on a shared machine the one least disturbed by other processes
    return *std::min_element(t.begin(), t.end());
}

}  // namespace

int main(int argc, char** argv) {
    const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 7;
    const int64_t R = mambascope::kPrefillChunkTokens;
    const std::vector<Shape> shapes = {
        {"issue 2048x3072x768", 2048, 3072, 768},  {"in_proj  (R, 768)->3072", R, 3072, 768},
        {"x_proj   (R, 1536)->80", R, 80, 1536},   {"dt_proj  (R, 48)->1536", R, 1536, 48},
        {"out_proj (R, 1536)->768", R, 768, 1536}, {"lm_head  (256, 768)->50280", 256, 50280, 768},
    };

    std::vector<Backend> backends;
    backends.push_back({"eigen", [](const Shape& s, const float* A, const float* B, float* C) {
                            Eigen::Map<const MatRM> a(A, s.M, s.K), b(B, s.N, s.K);
                            Eigen::Map<MatRM> c(C, s.M, s.N);
                            c.noalias() = a * b.transpose();
                        }});
    backends.push_back({std::string("engine (") + mambascope::kernels::sgemm_backend() + ")",
                        [](const Shape& s, const float* A, const float* B, float* C) {
                            mambascope::kernels::sgemm_nt(s.M, s.N, s.K, A, s.K, B, s.K, 0.0f, C, s.N);
                        }});
    const char* libs[][2] = {
        {"openblas-openmp", "/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0"},
        {"openblas-pthread", "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"},
        {"blis-openmp", "/usr/lib/x86_64-linux-gnu/blis-openmp/libblis.so.4"},
    };
    for (auto& l : libs) {
        void* h = dlopen(l[1], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            std::printf("# %s: not found (%s)\n", l[0], l[1]);
            continue;
        }
        auto f = reinterpret_cast<CblasSgemm>(dlsym(h, "cblas_sgemm"));
        if (!f) continue;
        Dl_info info{};
        if (dladdr(reinterpret_cast<void*>(f), &info) && info.dli_fname)
            std::printf("# %s: cblas_sgemm from %s\n", l[0], info.dli_fname);
        backends.push_back({l[0], [f](const Shape& s, const float* A, const float* B, float* C) {
                                f(101, 111, 112, int(s.M), int(s.N), int(s.K), 1.0f, A, int(s.K), B, int(s.K),
                                  0.0f, C, int(s.N));
                            }});
    }

    const char* core = std::getenv("OPENBLAS_CORETYPE");
    std::printf("# repeats=%d (best of) OPENBLAS_CORETYPE=%s OMP_NUM_THREADS=%s\n", repeats,
                core ? core : "(unset)",
                std::getenv("OMP_NUM_THREADS") ? std::getenv("OMP_NUM_THREADS") : "(unset)");
    std::printf("%-28s", "shape \\ GFLOP/s");
    for (auto& b : backends) std::printf(" %18s", b.name.c_str());
    std::printf("\n");
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (const auto& s : shapes) {
        std::vector<float> A(size_t(s.M * s.K)), B(size_t(s.N * s.K)), C(size_t(s.M * s.N));
        for (auto& v : A) v = nd(rng);
        for (auto& v : B) v = nd(rng);
        std::printf("%-28s", s.name);
        const double flop = 2.0 * double(s.M) * double(s.N) * double(s.K);
        for (auto& b : backends) {
            b.run(s, A.data(), B.data(), C.data());  // warm-up (packing buffers, thread pools)
            const double sec = seconds_of([&] { b.run(s, A.data(), B.data(), C.data()); }, repeats);
            std::printf(" %18.1f", flop / sec * 1e-9);
        }
        std::printf("\n");
        std::fflush(stdout);
    }
    return 0;
}
