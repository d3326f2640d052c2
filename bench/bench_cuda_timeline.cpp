// bench_cuda_timeline: a kernel timeline of the decode step graph on the GPU, from CUPTI's activity records
// (the view Nsight Systems would give; the GPU machine has no working Nsight Systems: docs/benchmarks.md,
// twenty-fourth stop).
//
// usage: bench_cuda_timeline [shape ...]   (default: mamba-1.4b; random weights of the real shape)
//   TIMELINE_STEPS  traced greedy steps, 8 to 100000 (default 64, after 8 traced and dropped)
//   TIMELINE_CSV    a path: every traced kernel as a CSV row (step, index in the step, name, grid, block,
//                   start and end in ns from the step's first kernel's start)
// The decoder's MAMBASCOPE_* variables apply as in any run (e.g. MAMBASCOPE_DECODE_Z_BRANCH=1).
//
// For each shape: a bf16 prefill of 2048 tokens, a greedy run on the device to record its graph, 256 steps
// timed untraced, then the traced steps. Kernels are ordered by their end: a step's chain ends each kernel
// after the one in front (each waits for it in griddepcontrol.wait or in the graph's edge), so a kernel's
// *increment*, its end minus the end of the kernel that ended before it, is its share of the step's time,
// and the increments of a step add up to the step. Its *lead* is how long before that end it started (PDL's
// early launch: positive when it was resident and waiting). Its *duration* is end minus start (waiting
// included). Per layer position (the step's kernels between the embedding and the head, in start order, in
// n_layer equal groups) the table gives the mean of each over the layers and steps. Prints; asserts nothing.
#if defined(MAMBASCOPE_HAVE_CUDA) && defined(MAMBASCOPE_HAVE_CUPTI)

#include <cuda_runtime.h>
#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "mambascope/forward.h"
#include "mambascope/model.h"
#include "model/backend.h"

using namespace mambascope;

namespace {

constexpr size_t kCuptiBuffer = size_t(8) << 20;  // bytes per activity buffer
constexpr int kDroppedSteps = 8;                  // traced first and dropped (one run graph launch)
constexpr int kUntracedSteps = 256;
constexpr int32_t kVocabArgmax = 50277;  // the argmax's rows, as in bench_cuda_forward

struct KernelRecord {
    uint64_t start = 0, end = 0;
    std::string name;
    int grid = 0, block = 0;
};

std::mutex g_mutex;
std::vector<KernelRecord> g_records;

#define CUPTI_OK(call)                                                                 \
    do {                                                                               \
        const CUptiResult r_ = (call);                                                 \
        if (r_ != CUPTI_SUCCESS) {                                                     \
            const char* msg_ = nullptr;                                                \
            cuptiGetResultString(r_, &msg_);                                           \
            std::fprintf(stderr, "bench_cuda_timeline: %s failed: %s\n", #call, msg_); \
            std::exit(1);                                                              \
        }                                                                              \
    } while (0)

// "void ns::(anonymous namespace)::gemv_kernel<float, true>(long, …)" → "gemv_kernel<float, true>"
std::string short_name(const char* mangled) {
    int status = 0;
    std::unique_ptr<char, void (*)(void*)> d(abi::__cxa_demangle(mangled, nullptr, nullptr, &status),
                                             std::free);
    std::string s = status == 0 && d ? d.get() : mangled;
    // drop the parameter list: the last '(' at template depth 0
    int depth = 0;
    size_t cut = s.size();
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '<') ++depth;
        if (s[i] == '>') --depth;
        if (s[i] == '(' && depth == 0 && s.compare(i, 11, "(anonymous ") != 0) {
            cut = i;
            break;
        }
    }
    s = s.substr(0, cut);
    // drop the return type and the namespaces before the name (outside template arguments)
    depth = 0;
    size_t from = 0;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '<') ++depth;
        if (s[i] == '>') --depth;
        if (depth == 0 && (s[i] == ' ' || (s[i] == ':' && i + 1 < s.size() && s[i + 1] == ':'))) from = i + 1;
        if (depth == 0 && s[i] == ')') from = i + 1;
    }
    while (from < s.size() && (s[from] == ':' || s[from] == ' ')) ++from;
    return s.substr(from);
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
    *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kCuptiBuffer));
    *size = *buffer ? kCuptiBuffer : 0;
    *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
    CUpti_Activity* rec = nullptr;
    std::lock_guard<std::mutex> lock(g_mutex);
    while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
        if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
        KernelRecord r;
        r.start = k->start, r.end = k->end, r.name = short_name(k->name);
        r.grid = k->gridX * k->gridY * k->gridZ, r.block = k->blockX * k->blockY * k->blockZ;
        g_records.push_back(std::move(r));
    }
    size_t dropped = 0;
    cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped);
    if (dropped) std::fprintf(stderr, "bench_cuda_timeline: CUPTI dropped %zu records\n", dropped);
    std::free(buffer);
}

struct Stat {
    double increment = 0, lead = 0, duration = 0;
    int64_t n = 0;
    std::string name;
    int grid = 0, block = 0;
};

void report(const std::string& shape, const ModelConfig& cfg, double untraced_ms, double traced_ms,
            std::vector<KernelRecord> recs, int steps, const char* csv) {
    std::sort(recs.begin(), recs.end(), [](const auto& a, const auto& b) { return a.start < b.start; });
    // steps begin at the run's embedding kernel
    std::vector<size_t> begins;
    for (size_t i = 0; i < recs.size(); ++i)
        if (recs[i].name.find("embed_greedy_run") != std::string::npos) begins.push_back(i);
    if (begins.size() < size_t(kDroppedSteps + 1)) {
        std::printf("%-12s timeline: %zu step starts found among %zu kernels; nothing to report\n",
                    shape.c_str(), begins.size(), recs.size());
        return;
    }
    begins.push_back(recs.size());
    std::ofstream out;
    if (csv) out.open(csv, std::ios::app);
    const int64_t L = cfg.n_layer;
    std::map<int64_t, Stat> per_pos;  // -1: the embedding, 0..q-1: position in a layer, 1000: the head
    double step_sum_us = 0;
    int64_t counted = 0, irregular = 0;
    for (size_t s = kDroppedSteps; s + 1 < begins.size(); ++s) {
        std::vector<KernelRecord> k(recs.begin() + begins[s], recs.begin() + begins[s + 1]);
        const int64_t n = static_cast<int64_t>(k.size());
        if (n < 2 || (n - 2) % L != 0) {
            ++irregular;
            continue;
        }
        const int64_t q = (n - 2) / L;
        // position of kernel i (start order) and its increment (end order)
        std::vector<size_t> by_end(k.size());
        for (size_t i = 0; i < k.size(); ++i) by_end[i] = i;
        std::sort(by_end.begin(), by_end.end(), [&](size_t a, size_t b) { return k[a].end < k[b].end; });
        // the step's first increment is measured from the previous step's last end
        uint64_t prev_end = k[0].start;
        if (s > 0)
            for (size_t i = begins[s - 1]; i < begins[s]; ++i) prev_end = std::max(prev_end, recs[i].end);
        for (size_t j = 0; j < by_end.size(); ++j) {
            const size_t i = by_end[j];
            const int64_t pos = i == 0 ? -1 : int64_t(i) == n - 1 ? 1000 : (int64_t(i) - 1) % q;
            Stat& st = per_pos[pos];
            st.increment += double(k[i].end - std::min(prev_end, k[i].end)) * 1e-3;
            st.lead += (double(prev_end) - double(k[i].start)) * 1e-3;
            st.duration += double(k[i].end - k[i].start) * 1e-3;
            ++st.n;
            st.name = k[i].name, st.grid = k[i].grid, st.block = k[i].block;
            prev_end = std::max(prev_end, k[i].end);
        }
        step_sum_us += double(k.back().end - k.front().start) * 1e-3;
        ++counted;
        if (out.is_open())
            for (size_t i = 0; i < k.size(); ++i)
                out << shape << ',' << s - kDroppedSteps << ',' << i << ",\"" << k[i].name << "\","
                    << k[i].grid << ',' << k[i].block << ',' << k[i].start - k[0].start << ','
                    << k[i].end - k[0].start << '\n';
    }
    std::printf(
        "%-12s timeline: %d steps traced, %lld reported (%lld irregular); untraced %.3f ms/token, "
        "traced %.3f ms/token\n",
        shape.c_str(), steps, static_cast<long long>(counted), static_cast<long long>(irregular), untraced_ms,
        traced_ms);
    if (!counted) return;
    std::printf("%-12s %-5s %-58s %7s %6s %10s %8s %9s %7s\n", shape.c_str(), "pos", "kernel", "grid",
                "block", "increment", "lead", "duration", "share");
    double total = 0;
    for (const auto& [pos, st] : per_pos) total += st.increment;
    for (const auto& [pos, st] : per_pos) {
        const std::string p = pos == -1 ? "embed" : pos == 1000 ? "head" : "L." + std::to_string(pos);
        std::printf("%-12s %-5s %-58.58s %7d %6d %8.2fus %6.2fus %7.2fus %6.1f%%\n", shape.c_str(), p.c_str(),
                    st.name.c_str(), st.grid, st.block, st.increment / double(st.n), st.lead / double(st.n),
                    st.duration / double(st.n), 100.0 * st.increment / total);
    }
    std::printf(
        "%-12s per step: increments %.1f us (= %.3f ms/token traced), first start to last end %.1f us\n",
        shape.c_str(), total / double(counted), total / double(counted) * 1e-3,
        step_sum_us / double(counted));
}

}  // namespace

int main(int argc, char** argv) {
    std::string why;
    if (!cuda_usable(&why)) {
        std::printf("bench_cuda_timeline: %s\n", why.c_str());
        return 0;
    }
    std::vector<std::string> shapes;
    for (int i = 1; i < argc; ++i) shapes.push_back(argv[i]);
    if (shapes.empty()) shapes = {"mamba-1.4b"};
    const char* env_steps = std::getenv("TIMELINE_STEPS");
    int steps = 64;
    if (env_steps && *env_steps) {
        char* end = nullptr;
        const long v = std::strtol(env_steps, &end, 10);
        if (*end != '\0' || v < 8 || v > 100000) {
            std::fprintf(stderr,
                         "bench_cuda_timeline: TIMELINE_STEPS must be a whole number of steps from 8 to "
                         "100000, not '%s'\n",
                         env_steps);
            return 1;
        }
        steps = static_cast<int>(v);
    }
    const char* csv = std::getenv("TIMELINE_CSV");
    if (csv) std::ofstream(csv, std::ios::trunc) << "shape,step,index,name,grid,block,start_ns,end_ns\n";
    CUPTI_OK(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed));
    for (const auto& shape : shapes) {
        const ModelConfig cfg = reference_config(shape);
        auto m = random_model(cfg, 1);
        std::vector<int32_t> ids(2048);
        for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7919) % kVocabArgmax);
        ModelState st = make_state(*m);
        ForwardOptions opt;
        opt.device = Device::Cuda;
        opt.precision = Precision::Bf16;
        run_prefill(*m, ids, st, opt);
        auto dec = detail::make_cuda_decoder(*m, st, Precision::Bf16, nullptr);
        int32_t next = dec->step_greedy_run(1, kVocabArgmax, 32).back();  // records the run's graph
        auto t0 = std::chrono::steady_clock::now();
        next = dec->step_greedy_run(next, kVocabArgmax, kUntracedSteps).back();
        const double untraced = 1e3 *
                                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                                kUntracedSteps;
        {
            std::lock_guard<std::mutex> lock(g_mutex);
            g_records.clear();
        }
        CUPTI_OK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
        t0 = std::chrono::steady_clock::now();
        next = dec->step_greedy_run(next, kVocabArgmax, kDroppedSteps + steps).back();
        const double traced = 1e3 *
                              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
                              (kDroppedSteps + steps);
        CUPTI_OK(cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
        CUPTI_OK(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED));
        std::vector<KernelRecord> recs;
        {
            std::lock_guard<std::mutex> lock(g_mutex);
            recs.swap(g_records);
        }
        const detail::DecodeGraphInfo gi = dec->graph_info();
        std::printf("%-12s graph: %lld kernels per run of %lld steps, %lld PDL edges, %s%s%s\n",
                    shape.c_str(), static_cast<long long>(gi.greedy_run_kernel_nodes),
                    static_cast<long long>(gi.greedy_run_steps),
                    static_cast<long long>(gi.greedy_run_programmatic_edges), gi.pdl_mode.c_str(),
                    gi.conv_fused ? ", conv folded" : "", gi.z_branch ? ", z on a branch" : "");
        report(shape, cfg, untraced, traced, std::move(recs), steps, csv);
        std::fflush(stdout);
        dec.reset();
        m->device_weights.reset();
    }
    return 0;
}

#else
#include <cstdio>
int main() {
    std::printf("bench_cuda_timeline: this build has no CUDA backend or no CUPTI\n");
    return 0;
}
#endif
