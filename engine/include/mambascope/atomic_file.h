// atomic_file.h: the one way the engine and the CLI write a text/CSV/JSON file, and the registry of live temp
// files that a signal handler can remove.
//
// Design decisions:
// - A regular-file destination is written to "<path>.tmp-<pid>" in the same folder; every write, the fsync
//   and the close are checked, then the temp file is renamed over the destination. On any failure the temp
//   file is removed and the destination is left as it was; the Error keeps the errno of the step that failed
//   (saved before the cleanup), e.g. "No space left on device" or "Is a directory".
// - A destination that exists and is not a regular file is never replaced by one: a directory is an Error;
//   a character device, FIFO or socket (/dev/stdout, /dev/full, a pipe) is written in place, still checked.
//   A symlink to a regular file is followed: the file it points to is replaced, the link is kept.
// - Concurrent runs: the destination's (inode, size, mtime), or its absence, is recorded when the writer is
//   opened, and, if mark_run_start() was called (the CLI does at start-up), a destination modified after the
//   run started and not by this process also counts as changed. If it changed, commit() does NOT replace it:
//   the new result is kept at "<path>.conflict-<pid>" and an Error names both files, so that neither result
//   is lost silently and the user can compare them and rename by hand. (The check and the rename are two
//   steps; a writer that lands in between is not detected.)
// - Temp files are registered in a fixed table of char buffers (no allocation);
// remove_registered_temp_files()
//   only calls unlink(), so a signal handler may call it before _exit().
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace mambascope {

// Writes `content` to `path` atomically (see above). Errors name the file and the failing step.
void write_file_atomic(const std::filesystem::path& path, std::string_view content);

// Streaming form: write() any number of times, then commit(). Destroyed without commit(): the temp file is
// removed and the destination is untouched.
class AtomicFile {
  public:
    explicit AtomicFile(std::filesystem::path path);
    ~AtomicFile();
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    void write(std::string_view bytes);
    void commit();
    // The file actually written: the temp file, or the destination itself when it is not a regular file.
    const std::filesystem::path& temp_path() const { return temp_; }

  private:
    void fail(const std::string& what, int err);  // removes the temp file, throws
    std::filesystem::path path_, target_, temp_;
    int fd_ = -1;
    int slot_ = -1;
    bool direct_ = false;  // writing into a non-regular destination in place
    bool done_ = false;
    bool existed_ = false;
    unsigned long long ino_ = 0, size_ = 0;
    long long mtime_ns_ = 0;
};

// Writes all of `bytes` to an open file descriptor; Error naming `what` (e.g. "standard output") on failure.
void write_all_fd(int fd, std::string_view bytes, const std::string& what);

// ---- concurrent-run detection ----
// Records "now" as the start of this run (the CLI calls it first thing in main).
void mark_run_start();
// Throws if `target` changed since the snapshot / the run start (see the design note). HDF5 writer helper.
struct DestinationSnapshot {
    bool existed = false;
    unsigned long long ino = 0, size = 0;
    long long mtime_ns = 0;
};
DestinationSnapshot snapshot_destination(const std::filesystem::path& target);
// Empty when unchanged, otherwise a human description ("was created", "was modified") of the change.
std::string destination_change(const std::filesystem::path& target, const DestinationSnapshot& before);
// Moves `temp` to "<target>.conflict-<pid>" and throws the conflict Error; removes `temp` if even that fails.
[[noreturn]] void throw_destination_conflict(const std::filesystem::path& temp,
                                             const std::filesystem::path& target, const std::string& change);
// Remembers that this process renamed a file over `target` (so its own earlier result is not a conflict).
void note_committed(const std::filesystem::path& target);

// ---- temp-file registry (async-signal-safe removal) ----
// Returns a slot, or -1 when the table is full or the path is too long (the file is then just not removed by
// a signal).
int register_temp_file(const std::filesystem::path& path);
void unregister_temp_file(int slot);
// unlink()s every registered temp file. Async-signal-safe.
void remove_registered_temp_files() noexcept;
// Number of live registrations (tests).
int registered_temp_file_count();

// ---- test seam ----
namespace atomic_file_testing {
enum class Step { None, Open, Write, Fsync, Close, Rename };
// The next `step` of any AtomicFile fails with `err` (one shot). Step::None clears it.
void fail_next(Step step, int err);
}  // namespace atomic_file_testing

}  // namespace mambascope
