// dist.h: calibrate, ppl-sweep and retrieval over the ranks of `mpirun -np N mambascope-cli ...`
// (docs/scaling.md), and their --resume checkpoints.
//
// Design decision: MPI stays in this one module. The engine gives each job as work units
// (mambascope/work_units.h); here every rank computes the units the longest-first plan gives it, rank 0
// receives every result and reduces them in unit order, so the output is bit-identical to a one-process run,
// and only rank 0 writes and prints. Without MPI in the build, or when the program was not started by mpirun,
// the same code runs with one rank.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "mambascope/model.h"
#include "mambascope/progress.h"
#include "mambascope/work_units.h"

namespace mambascope::cli {

// --resume FILE (checkpoint of finished units; FILE.rank<R> per rank).
struct DistOptions {
    std::string resume;
};
void add_dist_options(CLI::App& app, DistOptions& o);

// What the job cannot see of the model: its weights file (path, size, modification time), for the
// checkpoint's identity.
std::string model_identity(const Model& model);

// Test hooks (documented in docs/scaling.md; for the test suite only): the rank about to compute this unit
// index raises SIGKILL on itself / throws an Error instead of computing it.
constexpr const char* kDistTestKillUnitEnv = "MAMBASCOPE_DIST_TEST_KILL_UNIT";
constexpr const char* kDistTestFailUnitEnv = "MAMBASCOPE_DIST_TEST_FAIL_UNIT";

// The ranks of this run. Construct it first in a command (before the model loads and before any CUDA call):
// under mpirun it initialises MPI and, with `device` cuda or auto, makes this rank see only the GPU of its
// node-local rank (CUDA_VISIBLE_DEVICES); the destructor finalises MPI.
class Dist {
  public:
    Dist(const std::string& command, const std::string& device);
    ~Dist();
    Dist(const Dist&) = delete;
    Dist& operator=(const Dist&) = delete;

    int rank() const { return rank_; }
    int size() const { return size_; }
    bool root() const { return rank_ == 0; }
    // The progress callback of this rank: `progress` on rank 0, elsewhere only the cancel check.
    ProgressFn progress(const ProgressFn& root_progress) const;

    // Computes every unit of `job` not already in the checkpoint (`opt.resume`), spread over the ranks, and
    // reduces all of them in unit order on rank 0. `extra_fingerprint` adds what the job cannot see (the
    // weights file) to the checkpoint's identity. Returns true on rank 0 (the job then holds the result),
    // false on the other ranks (which must not write or print). A unit that fails on a rank of a several-rank
    // run prints "rank R: unit U (...) failed: ..." and aborts the whole job with exit 1; on one rank the
    // error propagates.
    bool run(UnitJob& job, const DistOptions& opt, const std::string& extra_fingerprint,
             const ProgressFn& progress);

    // After rank 0 wrote the output: removes the checkpoint files and prints the per-rank busy time (stderr).
    void finish(const DistOptions& opt);

    // Per rank: seconds computing units and units computed (filled on rank 0 by run()).
    struct RankBusy {
        double seconds = 0;
        long long units = 0;
    };
    const std::vector<RankBusy>& busy() const { return busy_; }
    long long resumed_units() const { return resumed_; }

  private:
    std::string command_;
    int rank_ = 0, size_ = 1;
    bool mpi_ = false;
    std::vector<RankBusy> busy_;
    long long resumed_ = 0;
};

}  // namespace mambascope::cli
