// Atomic text-file writer and temp-file registry; see mambascope/atomic_file.h.
#include "mambascope/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>

#include "mambascope/error.h"

namespace mambascope {
namespace fs = std::filesystem;

// ---- temp-file registry -----------------------------------------------------------------------------------
namespace {

constexpr int kSlots = 64;
constexpr size_t kPathMax = 4096;
// state: 0 free, 1 being filled / emptied (owned by one thread), 2 live (the handler may unlink it)
std::atomic<int> g_state[kSlots];
char g_paths[kSlots][kPathMax];

std::string errno_text(int err) {
    return std::strerror(err);
}

}  // namespace

int register_temp_file(const fs::path& path) {
    const std::string& s = path.native();
    if (s.size() + 1 > kPathMax) return -1;
    for (int i = 0; i < kSlots; ++i) {
        int expected = 0;
        if (!g_state[i].compare_exchange_strong(expected, 1)) continue;
        std::memcpy(g_paths[i], s.c_str(), s.size() + 1);
        g_state[i].store(2);
        return i;
    }
    return -1;
}

void unregister_temp_file(int slot) {
    if (slot < 0 || slot >= kSlots) return;
    g_state[slot].store(1);
    g_paths[slot][0] = '\0';
    g_state[slot].store(0);
}

void remove_registered_temp_files() noexcept {
    for (int i = 0; i < kSlots; ++i)
        if (g_state[i].load() == 2 && g_paths[i][0] != '\0') ::unlink(g_paths[i]);
}

int registered_temp_file_count() {
    int n = 0;
    for (int i = 0; i < kSlots; ++i) n += g_state[i].load() == 2;
    return n;
}

// ---- test seam --------------------------------------------------------------------------------------------
namespace atomic_file_testing {
namespace {
std::atomic<int> g_fault_step{0};
std::atomic<int> g_fault_errno{0};
}  // namespace
void fail_next(Step step, int err) {
    g_fault_errno.store(err);
    g_fault_step.store(static_cast<int>(step));
}
}  // namespace atomic_file_testing

namespace {

// True (with errno set) when the test seam says this step fails now.
bool injected(atomic_file_testing::Step step) {
    using namespace atomic_file_testing;
    int expected = static_cast<int>(step);
    if (step == Step::None || !g_fault_step.compare_exchange_strong(expected, 0)) return false;
    errno = g_fault_errno.load();
    return true;
}

// ---- concurrent-run detection ----------------------------------------------------------------------------
std::atomic<long long> g_run_start_ns{0};
std::mutex g_committed_mutex;
std::map<std::string, unsigned long long> g_committed;  // target → inode this process renamed there

long long mtime_ns(const struct stat& st) {
    return static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
}

bool committed_by_us(const fs::path& target, unsigned long long ino) {
    std::lock_guard<std::mutex> lock(g_committed_mutex);
    auto it = g_committed.find(target.native());
    return it != g_committed.end() && it->second == ino;
}

}  // namespace

void mark_run_start() {
    struct timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    g_run_start_ns.store(static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec);
}

DestinationSnapshot snapshot_destination(const fs::path& target) {
    DestinationSnapshot s;
    struct stat st {};
    if (::stat(target.c_str(), &st) == 0) {
        s.existed = true;
        s.ino = st.st_ino;
        s.size = static_cast<unsigned long long>(st.st_size);
        s.mtime_ns = mtime_ns(st);
    }
    return s;
}

std::string destination_change(const fs::path& target, const DestinationSnapshot& before) {
    struct stat st {};
    if (::stat(target.c_str(), &st) != 0) return {};  // absent now: nothing to lose
    const unsigned long long ino = st.st_ino;
    if (committed_by_us(target, ino)) return {};
    if (!before.existed) return "was created by another program while this run was going";
    if (ino != before.ino || static_cast<unsigned long long>(st.st_size) != before.size ||
        mtime_ns(st) != before.mtime_ns)
        return "was modified by another program while this run was going";
    const long long start = g_run_start_ns.load();
    if (start > 0 && mtime_ns(st) > start) return "was modified by another program after this run started";
    return {};
}

void note_committed(const fs::path& target) {
    struct stat st {};
    if (::stat(target.c_str(), &st) != 0) return;
    std::lock_guard<std::mutex> lock(g_committed_mutex);
    g_committed[target.native()] = st.st_ino;
}

void throw_destination_conflict(const fs::path& temp, const fs::path& target, const std::string& change) {
    fs::path keep = target;
    keep += ".conflict-" + std::to_string(::getpid());
    if (::rename(temp.c_str(), keep.c_str()) != 0) {
        const int err = errno;
        ::unlink(temp.c_str());
        throw Error("not replacing " + target.string() + ": it " + change +
                        ", and this run's result could not be "
                        "kept at " +
                        keep.string() + ": " + errno_text(err),
                    "rerun when no other run writes the same file, or choose another output path");
    }
    throw Error("not replacing " + target.string() + ": it " + change + "; this run's result is kept at " +
                    keep.string(),
                "compare the two files and rename the one you want; run one job per output file");
}

// ---- writer
// ------------------------------------------------------------------------------------------------

void write_all_fd(int fd, std::string_view bytes, const std::string& what) {
    const char* p = bytes.data();
    size_t left = bytes.size();
    while (left > 0) {
        ssize_t n = injected(atomic_file_testing::Step::Write) ? -1 : ::write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            const int err = errno;
            throw Error("cannot write " + what + ": " + errno_text(err), "is the disk full?");
        }
        p += n;
        left -= static_cast<size_t>(n);
    }
}

AtomicFile::AtomicFile(fs::path path) : path_(std::move(path)), target_(path_) {
    if (path_.empty()) throw Error("cannot write a file with an empty name");
    struct stat lst {};
    if (::lstat(path_.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode)) {
        std::error_code ec;
        fs::path real = fs::weakly_canonical(path_, ec);
        if (!ec) target_ = real;
    }
    struct stat st {};
    const bool exists = ::stat(target_.c_str(), &st) == 0;
    const std::string& t = target_.native();
    const bool special_tree = t.rfind("/dev/", 0) == 0 || t.rfind("/proc/", 0) == 0;
    if (exists && S_ISDIR(st.st_mode))
        throw Error("cannot write " + path_.string() + ": " + errno_text(EISDIR),
                    "give a file name, not a folder");
    if (exists && (!S_ISREG(st.st_mode) || special_tree)) {
        // Not a regular file (or a /dev, /proc alias of one, e.g. /dev/stdout): write in place, never
        // replace.
        direct_ = true;
        const int flags = O_WRONLY | O_CLOEXEC | O_NOCTTY | (S_ISREG(st.st_mode) ? O_TRUNC : 0);
        fd_ = injected(atomic_file_testing::Step::Open) ? -1 : ::open(target_.c_str(), flags);
        if (fd_ < 0) {
            const int err = errno;
            throw Error("cannot open " + path_.string() + " for writing: " + errno_text(err));
        }
        temp_ = target_;
        return;
    }
    const fs::path dir = target_.has_parent_path() ? target_.parent_path() : fs::path(".");
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        throw Error("cannot write " + path_.string() + ": folder " + dir.string() + " does not exist",
                    "create the folder first");
    const DestinationSnapshot snap = snapshot_destination(target_);
    existed_ = snap.existed;
    ino_ = snap.ino;
    size_ = snap.size;
    mtime_ns_ = snap.mtime_ns;
    const std::string base = target_.native() + ".tmp-" + std::to_string(::getpid());
    for (int attempt = 0; attempt < 1000; ++attempt) {
        temp_ = attempt == 0 ? base : base + "-" + std::to_string(attempt);
        fd_ = injected(atomic_file_testing::Step::Open)
                  ? -1
                  : ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd_ >= 0 || errno != EEXIST) break;
    }
    if (fd_ < 0) {
        const int err = errno;
        throw Error("cannot create " + temp_.string() + ": " + errno_text(err),
                    "check that the folder is writable and has space");
    }
    slot_ = register_temp_file(temp_);
}

AtomicFile::~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!done_ && !direct_ && !temp_.empty()) ::unlink(temp_.c_str());
    unregister_temp_file(slot_);
}

void AtomicFile::fail(const std::string& what, int err) {
    // errno is saved by the caller before anything here can change it.
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (!direct_) ::unlink(temp_.c_str());
    unregister_temp_file(slot_);
    slot_ = -1;
    done_ = true;
    throw Error(what + ": " + errno_text(err), err == ENOSPC || err == EFBIG || err == EDQUOT
                                                   ? "the disk is full (or over quota); free some space"
                                                   : "check that the folder is writable and has space");
}

void AtomicFile::write(std::string_view bytes) {
    if (done_ || fd_ < 0) throw Error("internal: write to a closed file " + path_.string());
    const char* p = bytes.data();
    size_t left = bytes.size();
    while (left > 0) {
        ssize_t n = injected(atomic_file_testing::Step::Write) ? -1 : ::write(fd_, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            const int err = errno;
            fail("cannot write " + (direct_ ? path_.string() : temp_.string()), err);
        }
        p += n;
        left -= static_cast<size_t>(n);
    }
}

void AtomicFile::commit() {
    if (done_) return;
    if (!direct_ && (injected(atomic_file_testing::Step::Fsync) || ::fsync(fd_) != 0)) {
        const int err = errno;
        fail("cannot write " + temp_.string() + " to disk (fsync)", err);
    }
    const int rc = injected(atomic_file_testing::Step::Close) ? (::close(fd_), -1) : ::close(fd_);
    fd_ = -1;
    if (rc != 0 && errno != EINTR) {
        const int err = errno;
        fail("cannot close " + (direct_ ? path_.string() : temp_.string()), err);
    }
    if (direct_) {
        done_ = true;
        return;
    }
    DestinationSnapshot before;
    before.existed = existed_;
    before.ino = ino_;
    before.size = size_;
    before.mtime_ns = mtime_ns_;
    const std::string change = destination_change(target_, before);
    if (!change.empty()) {
        done_ = true;
        const int slot = slot_;
        slot_ = -1;
        try {
            throw_destination_conflict(temp_, target_, change);
        } catch (...) {
            unregister_temp_file(slot);
            throw;
        }
    }
    if (injected(atomic_file_testing::Step::Rename) || ::rename(temp_.c_str(), target_.c_str()) != 0) {
        const int err = errno;  // saved before the cleanup can overwrite it
        fail("cannot rename " + temp_.string() + " to " + target_.string(), err);
    }
    done_ = true;
    unregister_temp_file(slot_);
    slot_ = -1;
    note_committed(target_);
    // Best effort: make the rename itself durable.
    const fs::path dir = target_.has_parent_path() ? target_.parent_path() : fs::path(".");
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
}

void write_file_atomic(const fs::path& path, std::string_view content) {
    AtomicFile f(path);
    f.write(content);
    f.commit();
}

}  // namespace mambascope
