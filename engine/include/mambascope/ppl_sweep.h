// ppl_sweep.h: perplexity against context length, the paper's PG19 protocol (method doc §6, §7): for each
// context length L, `windows` windows of L tokens spread evenly over one long document, each prefilled by the
// method in one pass, scored on the NLL of its last `predict` tokens (100 in the paper). Perplexity =
// exp(mean NLL).
//
// Design decision: only the last `predict` positions go through the LM head (the head is as costly as the
// model for a 50k vocabulary), so a sweep costs one prefill per window. LongMamba filters each window with S
// = L (§8.5); DeciMamba always keeps the scored tail (resp_len = predict).
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "mambascope/analysis.h"
#include "mambascope/calibration.h"
#include "mambascope/decimamba.h"
#include "mambascope/model.h"
#include "mambascope/work_units.h"

namespace mambascope {

constexpr int kDefaultSweepWindows = 10;
constexpr int64_t kDefaultSweepPredict = 100;

struct PplSweepParams {
    std::vector<int64_t> lengths;  // context lengths, ascending
    int windows = kDefaultSweepWindows;
    int64_t predict = kDefaultSweepPredict;  // scored tokens at the end of each window
    std::vector<Method> methods{Method::Vanilla, Method::LongMamba};
    const Calibration* calibration = nullptr;  // required for LongMamba
    FilterParams filter;
    DeciParams deci;
    Device device = Device::Cpu;  // vanilla/LongMamba windows; DeciMamba runs on the CPU
};

struct PplPoint {
    int64_t length = 0;
    Method method = Method::Vanilla;
    int windows = 0;
    int64_t tokens_scored = 0;
    double mean_nll = 0;  // nats per token
    double perplexity = 0;
    double seconds = 0;
    std::vector<double> window_nll;  // [windows] mean NLL of each window's scored tail
};

// Window starts for one length: evenly spaced over [0, P − L] (one window: 0). Error when P < L.
std::vector<int64_t> sweep_window_starts(int64_t doc_tokens, int64_t length, int windows);

std::vector<PplPoint> run_ppl_sweep(const Model& model, std::span<const int32_t> doc,
                                    const PplSweepParams& params, const ProgressFn& progress = {});

// run_ppl_sweep() as work units (work_units.h): one unit per (length, method, window), in that nesting order
// (cost: the length in tokens); its result is the window's summed NLL over the scored tail, the token count
// and its seconds. reduce() sums them per (length, method) in window order, as the single loop did.
class PplSweepJob : public UnitJob {
  public:
    // Checks the parameters and the document (the errors run_ppl_sweep() gives). `params.calibration` and the
    // model must outlive the job.
    PplSweepJob(const Model& model, std::span<const int32_t> doc, const PplSweepParams& params);
    size_t unit_count() const override;
    double unit_cost(size_t u) const override;
    std::string unit_name(size_t u) const override;
    std::string fingerprint() const override;
    UnitResult compute_unit(size_t u, const ProgressFn& progress) const override;
    void reduce(size_t u, const UnitResult& result) override;
    std::vector<PplPoint> result() const;  // once every unit was reduced

  private:
    struct Cell {
        size_t length_index, method_index, window;
    };
    Cell cell(size_t u) const;
    const Model& model_;
    std::span<const int32_t> doc_;
    PplSweepParams p_;
    std::vector<std::vector<int64_t>> starts_;  // per length
    std::vector<PplPoint> points_;              // (length, method), filled by reduce
    std::vector<double> nll_sum_;               // per point
    size_t reduced_ = 0;
};

// CSV: length,method,windows,tokens_scored,mean_nll,perplexity,seconds (atomic write).
void write_ppl_csv(const std::filesystem::path& path, const std::vector<PplPoint>& points);
std::vector<PplPoint> read_ppl_csv(const std::filesystem::path& path);

// The table as text: one row per length, one perplexity column per method.
std::string format_ppl_table(const std::vector<PplPoint>& points);

}  // namespace mambascope
