// work_units.h: the batch jobs (calibration, perplexity sweep, retrieval) as lists of independent work units,
// so that a front end can spread them over processes and machines (mambascope-cli under mpirun,
// docs/scaling.md) and resume a killed job from a checkpoint of finished units.
//
// Design decision: every job is "compute every unit, then reduce the results in unit order". A unit's result
// is an opaque byte string (UnitResult) that a process can send to another or append to a checkpoint;
// reduce() takes the results strictly in unit order 0, 1, 2, ..., doing exactly the arithmetic of the old
// single loop. The output is therefore bit-identical whichever process computed which unit, and calibrate(),
// run_ppl_sweep() and run_retrieval() are run_units_serially() over their job. The engine knows nothing of
// MPI.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mambascope/progress.h"

namespace mambascope {

// One unit's result, serialized (ByteWriter / ByteReader).
using UnitResult = std::string;

class UnitJob {
  public:
    virtual ~UnitJob() = default;
    virtual size_t unit_count() const = 0;
    // Estimated cost (tokens through the model), used only to balance the units over processes.
    virtual double unit_cost(size_t u) const = 0;
    // What the unit is, for messages ("window 3/100 at tokens 1210..3258").
    virtual std::string unit_name(size_t u) const = 0;
    // The job's identity (kind, every parameter that changes a result, a hash of the inputs): a checkpoint
    // written by another job is refused.
    virtual std::string fingerprint() const = 0;
    // Computes unit u (any order, any process). `progress` receives this unit's own fraction in [0, 1];
    // returning false cancels (Cancelled).
    virtual UnitResult compute_unit(size_t u, const ProgressFn& progress) const = 0;
    // Consumes unit u's result; called for u = 0, 1, ..., unit_count() − 1 in this order, once each.
    virtual void reduce(size_t u, const UnitResult& result) = 0;
};

// Every unit in order, each reduced as soon as it is computed (memory: one unit's result). Progress runs over
// the whole job, weighted by unit_cost.
void run_units_serially(UnitJob& job, const ProgressFn& progress);

// Longest-processing-time-first assignment (Graham's LPT): units sorted by decreasing cost (ties: lower index
// first), each given to the process with the least assigned cost so far (ties: lower process). Deterministic,
// so every process computes the same plan without talking. Returns each process's units in the order it
// should compute them (decreasing cost). `costs` must be finite and ≥ 0; processes ≥ 1.
std::vector<std::vector<size_t>> assign_longest_first(std::span<const double> costs, int processes);

// Little-endian, fixed-width serialization of unit results.
class ByteWriter {
  public:
    void i64(int64_t v);
    void f64(double v);  // the exact bits
    void str(std::string_view s);
    void f64s(std::span<const double> v);  // count, then the values
    std::string take() { return std::move(out_); }

  private:
    std::string out_;
};

class ByteReader {
  public:
    explicit ByteReader(std::string_view bytes) : in_(bytes) {}
    int64_t i64();
    double f64();
    std::string str();
    std::vector<double> f64s();
    bool done() const { return pos_ == in_.size(); }

  private:
    void need(size_t n) const;  // Error when fewer than n bytes are left
    std::string_view in_;
    size_t pos_ = 0;
};

// Checkpoints (docs/scaling.md "Resume"). A checkpoint is one or more append-only files FILE.rank<R>, one per
// process that wrote finished units. Layout, integers little-endian:
//   header  "MSCKPT01" | SHA-256 of the job's fingerprint (64 hex chars) | u64 unit count
//   record  u64 unit | u64 n | n payload bytes | u64 FNV-1a of (unit, n, payload)
// A record that is cut short or whose checksum fails (a process killed while appending) ends the readable
// part: it and anything after it are ignored, and the writer cuts the file there before appending.
constexpr char kCheckpointMagic[] = "MSCKPT01";
constexpr size_t kCheckpointHeaderBytes = 8 + 64 + 8;

// Where a finished unit's result lies in a checkpoint file (verified when the file was read).
struct CheckpointRecord {
    std::filesystem::path file;
    uint64_t offset = 0;  // of the payload
    uint64_t bytes = 0;
};

struct CheckpointContents {
    std::map<size_t, CheckpointRecord> units;  // finished units found
    uint64_t valid_bytes = 0;                  // the readable prefix (0: not even a complete header)
};

// SHA-256 (hex) of a job fingerprint: what a checkpoint header records.
std::string checkpoint_job_hash(const std::string& fingerprint);
// Reads one checkpoint file, record by record (checksums verified, payloads not kept: a calibration's
// checkpoint may hold gigabytes). Error when its header names another job or another unit count.
CheckpointContents read_checkpoint(const std::filesystem::path& file, const std::string& job_hash,
                                   uint64_t unit_count);
// One unit's result, read from where read_checkpoint found it.
UnitResult read_checkpoint_unit(const CheckpointRecord& record);
// The files FILE.rank<R> that exist next to `base`, in rank order.
std::vector<std::filesystem::path> checkpoint_files(const std::filesystem::path& base);
std::filesystem::path checkpoint_file(const std::filesystem::path& base, int rank);

// Appends finished units to one checkpoint file (created with its header, or cut back to its readable
// prefix). Each append is flushed to the disk before returning.
class CheckpointWriter {
  public:
    CheckpointWriter(const std::filesystem::path& file, const std::string& job_hash, uint64_t unit_count);
    ~CheckpointWriter();
    CheckpointWriter(const CheckpointWriter&) = delete;
    CheckpointWriter& operator=(const CheckpointWriter&) = delete;
    void append(size_t unit, const UnitResult& result);

  private:
    std::filesystem::path file_;
    std::FILE* f_ = nullptr;
};

}  // namespace mambascope
