// Work units over MPI ranks, checkpoints and --resume; see dist.h and docs/scaling.md.
#include "dist.h"

#include <unistd.h>
#include <algorithm>

#include <chrono>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <sstream>

#include "input.h"
#include "mambascope/error.h"
#include "mambascope/sha256.h"

#ifdef MAMBASCOPE_HAVE_MPI
// the C API only (Open MPI's and MPICH's mpi.h otherwise pull in the deprecated C++ bindings, not linked)
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace mambascope::cli {
namespace {

// Exit status of a several-rank job whose unit failed (MPI_Abort ends every rank with it).
constexpr int kExitUnitFailed = 1;
constexpr int kExitCancelled = 130;

long long env_unit(const char* name) {
    const char* v = std::getenv(name);
    if (!v || !*v) return -1;
    char* end = nullptr;
    const long long u = std::strtoll(v, &end, 10);
    return end && *end == '\0' ? u : -1;
}

#ifdef MAMBASCOPE_HAVE_MPI
// Started by mpirun (Open MPI, or a PMI/PMIx launcher such as srun or MPICH's hydra)?
bool launched_by_mpirun() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"})
        if (std::getenv(v)) return true;
    return false;
}

// The GPUs this process may use: CUDA_VISIBLE_DEVICES's list when set, else the driver's GPUs (no CUDA call:
// the choice must be made before the CUDA runtime starts).
std::vector<std::string> visible_gpus() {
    std::vector<std::string> out;
    if (const char* v = std::getenv("CUDA_VISIBLE_DEVICES")) {
        std::stringstream ss(v);
        for (std::string item; std::getline(ss, item, ',');)
            if (!item.empty()) out.push_back(item);
        return out;
    }
    std::error_code ec;
    int n = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/driver/nvidia/gpus", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
        ++n;
    for (int i = 0; i < n; ++i) out.push_back(std::to_string(i));
    return out;
}

constexpr int kTagResult = 1;

// A broadcast from rank 0 of a vector of int64 (size first).
void bcast_i64s(std::vector<long long>& v) {
    long long n = static_cast<long long>(v.size());
    MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
    v.resize(static_cast<size_t>(n));
    if (n > 0) MPI_Bcast(v.data(), static_cast<int>(n), MPI_LONG_LONG, 0, MPI_COMM_WORLD);
}

void bcast_string(std::string& s) {
    long long n = static_cast<long long>(s.size());
    MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
    s.resize(static_cast<size_t>(n));
    if (n > 0) MPI_Bcast(s.data(), static_cast<int>(n), MPI_CHAR, 0, MPI_COMM_WORLD);
}

void send_result(const UnitResult& r) {
    if (r.size() > static_cast<size_t>(INT_MAX)) throw Error("a unit result is larger than 2 GiB");
    MPI_Send(r.data(), static_cast<int>(r.size()), MPI_BYTE, 0, kTagResult, MPI_COMM_WORLD);
}

UnitResult recv_result(int from) {
    MPI_Status st;
    MPI_Probe(from, kTagResult, MPI_COMM_WORLD, &st);
    int n = 0;
    MPI_Get_count(&st, MPI_BYTE, &n);
    UnitResult r(static_cast<size_t>(n), '\0');
    MPI_Recv(r.data(), n, MPI_BYTE, from, kTagResult, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    return r;
}
#endif

}  // namespace

void add_dist_options(CLI::App& app, DistOptions& o) {
    app.add_option("--resume", o.resume,
                   "checkpoint of finished units (FILE.rank<R>): kept while running, read again to resume, "
                   "removed after success")
        ->type_name("FILE")
        ->group("Output");
}

std::string model_identity(const Model& model) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path w = fs::absolute(model.weights_file, ec);
    const auto size = fs::file_size(model.weights_file, ec);
    const auto mtime = fs::last_write_time(model.weights_file, ec).time_since_epoch().count();
    return "weights " + w.string() + " " + std::to_string(ec ? 0 : size) + " " +
           std::to_string(ec ? 0 : mtime);
}

Dist::Dist(const std::string& command, const std::string& device) : command_(command) {
#ifdef MAMBASCOPE_HAVE_MPI
    if (!launched_by_mpirun()) return;
    MPI_Init(nullptr, nullptr);
    mpi_ = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    if (device != "cpu" && size_ > 1) {  // one GPU per rank of a node: GPU = node-local rank mod GPUs
        MPI_Comm node;
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
        int local = 0;
        MPI_Comm_rank(node, &local);
        MPI_Comm_free(&node);
        const std::vector<std::string> gpus = visible_gpus();
        if (!gpus.empty())
            ::setenv("CUDA_VISIBLE_DEVICES", gpus[static_cast<size_t>(local) % gpus.size()].c_str(), 1);
    }
#else
    (void)device;
    // N copies of a build without MPI would each run the whole job and write the same file
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
        if (const char* n = std::getenv(v); n && std::atoi(n) > 1)
            throw Error("this mambascope-cli was built without MPI but was started by mpirun with " +
                            std::string(n) + " processes",
                        "rebuild with MPI (libopenmpi-dev, -DMAMBASCOPE_MPI=ON), or run it without mpirun");
#endif
}

Dist::~Dist() {
#ifdef MAMBASCOPE_HAVE_MPI
    if (mpi_) MPI_Finalize();
#endif
}

ProgressFn Dist::progress(const ProgressFn& root_progress) const {
    if (root()) return root_progress;
    return [](double, std::string_view) { return !cancel_requested(); };
}

bool Dist::run(UnitJob& job, const DistOptions& opt, const std::string& extra_fingerprint,
               const ProgressFn& progress) {
    const size_t n = job.unit_count();
    const bool several = size_ > 1;
    const std::string who = "mambascope-cli " + command_;

    // A failure that must end every rank (several ranks): say where, then abort the job.
    auto abort_job = [&](const std::string& what, int code) {
        std::fprintf(stderr, "%s: rank %d: %s\n", who.c_str(), rank_, what.c_str());
        std::fflush(stderr);
#ifdef MAMBASCOPE_HAVE_MPI
        if (mpi_) MPI_Abort(MPI_COMM_WORLD, code);
#endif
        std::_Exit(code);
    };

    // 1. Finished units from the checkpoint: rank 0 reads every FILE.rank* and tells the others which units
    //    to skip (one reader, so every rank plans with the same set).
    const std::string job_hash = checkpoint_job_hash(job.fingerprint() + "\n" + extra_fingerprint);
    std::map<size_t, CheckpointRecord> finished;  // rank 0: where the results are
    std::vector<long long> done_units;
    std::string error;
    if (!opt.resume.empty() && root()) {
        try {
            for (const auto& file : checkpoint_files(opt.resume))
                for (auto& [u, r] : read_checkpoint(file, job_hash, n).units)
                    finished.emplace(u, std::move(r));
        } catch (const Error& e) {
            error = describe(e);
        }
        for (const auto& [u, r] : finished) done_units.push_back(static_cast<long long>(u));
    }
#ifdef MAMBASCOPE_HAVE_MPI
    if (mpi_ && !opt.resume.empty()) {
        bcast_string(error);
        bcast_i64s(done_units);
        MPI_Barrier(MPI_COMM_WORLD);  // nobody cuts or appends to a file before rank 0 has read them all
    }
#endif
    if (!error.empty()) throw Error(error);
    std::vector<bool> done(n, false);
    for (long long u : done_units) done[static_cast<size_t>(u)] = true;
    resumed_ = static_cast<long long>(done_units.size());
    std::unique_ptr<CheckpointWriter> checkpoint;
    if (!opt.resume.empty())
        checkpoint = std::make_unique<CheckpointWriter>(checkpoint_file(opt.resume, rank_), job_hash, n);

    // 2. The plan: the units left, longest first, the same on every rank.
    std::vector<size_t> todo;
    std::vector<double> costs;
    for (size_t u = 0; u < n; ++u)
        if (!done[u]) {
            todo.push_back(u);
            costs.push_back(job.unit_cost(u));
        }
    const auto plan = assign_longest_first(costs, size_);
    std::vector<int> owner(n, -1);
    for (int r = 0; r < size_; ++r)
        for (size_t i : plan[static_cast<size_t>(r)]) owner[todo[i]] = r;

    // 3. This rank's units.
    double my_cost = 0, my_done = 0;
    for (size_t i : plan[static_cast<size_t>(rank_)]) my_cost += costs[i];
    if (!(my_cost > 0)) my_cost = 1;
    const long long kill_unit = env_unit(kDistTestKillUnitEnv), fail_unit = env_unit(kDistTestFailUnitEnv);
    std::map<size_t, UnitResult> mine;
    RankBusy busy;
    // Several ranks: longest first, each result kept until rank 0 reduces it. One rank: in unit order, each
    // result reduced as soon as it is computed (memory: one unit's result, as run_units_serially; a
    // calibration window of mamba-1.4b is ~82 MB, so keeping them all would grow with the job).
    std::vector<size_t> my_plan = plan[static_cast<size_t>(rank_)];
    if (!several) std::sort(my_plan.begin(), my_plan.end());  // todo is in unit order
    size_t reduced_upto = 0;                                  // one rank: units 0..reduced_upto-1 are reduced
    for (size_t i : my_plan) {
        const size_t u = todo[i];
        const double cost = costs[i], base = my_done;
        const ProgressFn unit_progress = [&](double f, std::string_view stage) {
            return !progress || progress((base + f * cost) / my_cost, stage);
        };
        const auto t0 = std::chrono::steady_clock::now();
        try {
            if (static_cast<long long>(u) == kill_unit) {  // test hook: die as an OOM kill would
                std::fprintf(stderr, "%s: rank %d: %s=%lld: raising SIGKILL before unit %zu (%s)\n",
                             who.c_str(), rank_, kDistTestKillUnitEnv, kill_unit, u,
                             job.unit_name(u).c_str());
                std::fflush(stderr);
                ::raise(SIGKILL);
            }
            if (static_cast<long long>(u) == fail_unit)
                throw Error(std::string("test failure (") + kDistTestFailUnitEnv + ")");
            UnitResult r = job.compute_unit(u, unit_progress);
            if (checkpoint) checkpoint->append(u, r);
            if (several) {
                mine.emplace(u, std::move(r));
            } else {
                for (; reduced_upto < u; ++reduced_upto)  // the units before u come from the checkpoint
                    job.reduce(reduced_upto, read_checkpoint_unit(finished.at(reduced_upto)));
                job.reduce(u, r);
                reduced_upto = u + 1;
            }
        } catch (const Cancelled&) {
            if (!several) throw;
            abort_job("cancelled", kExitCancelled);
        } catch (const std::exception& e) {
            if (!several) throw;
            const auto* err = dynamic_cast<const Error*>(&e);
            abort_job("unit " + std::to_string(u) + " (" + job.unit_name(u) +
                          ") failed: " + (err ? describe(*err) : std::string(e.what())),
                      kExitUnitFailed);
        }
        busy.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ++busy.units;
        my_done += cost;
    }

    // 4. Rank 0 reduces every unit in unit order: from the checkpoint, its own, or received from the owner
    // (each
    //    rank sends its results in increasing unit order, the order rank 0 asks for them).
#ifdef MAMBASCOPE_HAVE_MPI
    if (several && !root()) {
        for (auto& [u, r] : mine) send_result(r);
        double mine_busy[2] = {busy.seconds, static_cast<double>(busy.units)};
        MPI_Gather(mine_busy, 2, MPI_DOUBLE, nullptr, 2, MPI_DOUBLE, 0, MPI_COMM_WORLD);
        return false;
    }
#endif
    try {
        for (size_t u = reduced_upto; u < n; ++u) {
            if (done[u]) {
                job.reduce(u, read_checkpoint_unit(finished.at(u)));
            } else if (owner[u] == 0) {
                job.reduce(u, mine.at(u));
                mine.erase(u);
            } else {
#ifdef MAMBASCOPE_HAVE_MPI
                job.reduce(u, recv_result(owner[u]));
#endif
            }
        }
    } catch (const std::exception& e) {
        if (!several) throw;
        abort_job(std::string("reducing the units failed: ") + e.what(), kExitUnitFailed);
    }
    busy_.assign(static_cast<size_t>(size_), RankBusy{});
    busy_[0] = busy;
#ifdef MAMBASCOPE_HAVE_MPI
    if (several) {
        std::vector<double> all(2 * static_cast<size_t>(size_));
        double mine_busy[2] = {busy.seconds, static_cast<double>(busy.units)};
        MPI_Gather(mine_busy, 2, MPI_DOUBLE, all.data(), 2, MPI_DOUBLE, 0, MPI_COMM_WORLD);
        for (int r = 0; r < size_; ++r)
            busy_[static_cast<size_t>(r)] = {all[2 * r], static_cast<long long>(all[2 * r + 1])};
    }
#endif
    return true;
}

void Dist::finish(const DistOptions& opt) {
    if (!root()) return;
    if (!opt.resume.empty())
        for (const auto& file : checkpoint_files(opt.resume)) {
            std::error_code ec;
            std::filesystem::remove(file, ec);
        }
    if (size_ == 1 && opt.resume.empty()) return;
    long long computed = 0;
    for (const auto& b : busy_) computed += b.units;
    std::fprintf(stderr, "mambascope-cli %s: %d rank%s, %lld units computed, %lld from the checkpoint\n",
                 command_.c_str(), size_, size_ == 1 ? "" : "s", computed, resumed_);
    for (size_t r = 0; r < busy_.size(); ++r)
        std::fprintf(stderr, "  rank %zu: %lld units, %.2f s busy\n", r, busy_[r].units, busy_[r].seconds);
}

}  // namespace mambascope::cli
