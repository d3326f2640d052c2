// Atomic outputs (issue 13): full disk, temp files, HDF5 shutdown after a failed flush, interrupts,
// concurrent runs, errno in messages.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli_runner.h"
#include "mambascope/atomic_file.h"
#include "mambascope/error.h"
#include "mambascope/h5.h"
#include "mambascope/model.h"
#include "mambascope/ppl_sweep.h"
#include "mambascope/session.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

fs::path tmpdir(const std::string& name) {
    return test::fresh_temp_dir("mambascope_atomic", name);
}

using test::run_cli_logged;
using test::slurp;

void put(const fs::path& p, const std::string& s) {
    std::ofstream(p, std::ios::binary) << s;
}

// Names in `dir` containing ".tmp-".
std::vector<std::string> temp_files(const fs::path& dir) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.path().filename().string().find(".tmp-") != std::string::npos)
            out.push_back(e.path().filename().string());
    return out;
}

// A full disk: every write to a regular file fails (EFBIG; SIGXFSZ ignored so that it is an error, not a
// kill).
const std::string kDiskFull = "trap \"\" XFSZ; ulimit -f 0";

}  // namespace

// Finding 1: a small output used to fit the stream buffer, the unchecked final flush failed, and the
// destination was replaced by a 0-byte file with exit 0.
TEST(AtomicWrites, TokenizeOnFullDiskFailsAndKeepsDestination) {
    const auto d = tmpdir("tok_small");
    put(d / "in.txt", "hello world");
    put(d / "out.ids", "1 2 3\n");
    const int rc = run_cli_logged(
        "tokenize --tokenizer byte --text " + (d / "in.txt").string() + " --out " + (d / "out.ids").string(),
        d / "log", kDiskFull);
    EXPECT_EQ(rc, 1) << slurp(d / "log");
    EXPECT_EQ(slurp(d / "out.ids"), "1 2 3\n");
    EXPECT_TRUE(temp_files(d).empty());
    // (the log is a regular file under the same limit: the message itself is checked in the injection test)

    // detokenize too
    put(d / "in.ids", "104 105\n");
    put(d / "out.txt", "previous");
    EXPECT_EQ(run_cli_logged("detokenize --tokenizer byte --ids " + (d / "in.ids").string() + " --out " +
                                 (d / "out.txt").string(),
                             d / "log", kDiskFull),
              1);
    EXPECT_EQ(slurp(d / "out.txt"), "previous");
    EXPECT_TRUE(temp_files(d).empty());
    fs::remove_all(d);
}

// Finding 2: a large output failed correctly but left out.ids.tmp-PID behind.
TEST(AtomicWrites, TokenizeLargeOutputOnFullDiskLeavesNoTempFile) {
    const auto d = tmpdir("tok_large");
    put(d / "in.txt", std::string(400000, 'a'));
    const int rc = run_cli_logged(
        "tokenize --tokenizer byte --text " + (d / "in.txt").string() + " --out " + (d / "out.ids").string(),
        d / "log", "trap \"\" XFSZ; ulimit -f 64");  // 32 KiB: the temp file starts, then fails
    EXPECT_EQ(rc, 1) << slurp(d / "log");
    EXPECT_FALSE(fs::exists(d / "out.ids"));
    EXPECT_TRUE(temp_files(d).empty());
    fs::remove_all(d);
}

// Every step of the writer checked: an injected failure of each leaves the destination and no temp file.
TEST(AtomicWrites, InjectedFailureOfEveryStepKeepsDestination) {
    using atomic_file_testing::Step;
    const auto d = tmpdir("inject");
    const fs::path out = d / "out.txt";
    for (Step step : {Step::Open, Step::Write, Step::Fsync, Step::Close, Step::Rename}) {
        put(out, "old content");
        atomic_file_testing::fail_next(step, ENOSPC);
        try {
            write_file_atomic(out, "new content");
            ADD_FAILURE() << "no error for step " << int(step);
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("No space left on device"), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find("out.txt"), std::string::npos) << e.what();
        }
        EXPECT_EQ(slurp(out), "old content") << int(step);
        EXPECT_TRUE(temp_files(d).empty()) << int(step);
        EXPECT_EQ(registered_temp_file_count(), 0);
    }
    atomic_file_testing::fail_next(Step::None, 0);
    write_file_atomic(out, "new content");
    EXPECT_EQ(slurp(out), "new content");

    // the engine's other text writers go through the same writer
    atomic_file_testing::fail_next(Step::Write, ENOSPC);
    EXPECT_THROW(write_ppl_csv(d / "out.txt", {}), Error);
    EXPECT_EQ(slurp(out), "new content");
    atomic_file_testing::fail_next(Step::Fsync, EIO);
    EXPECT_THROW(save_session(Session{}, out), Error);
    EXPECT_EQ(slurp(out), "new content");
    EXPECT_TRUE(temp_files(d).empty());
    fs::remove_all(d);
}

// A real full-disk write: /dev/full through a symlink; the link must not be replaced by a regular file
// (like /dev/stdout must not be).
TEST(AtomicWrites, NonRegularDestinationIsWrittenInPlaceNeverReplaced) {
    const auto d = tmpdir("devfull");
    fs::create_symlink("/dev/full", d / "full");
    fs::create_symlink("/dev/null", d / "null");
    try {
        write_file_atomic(d / "full", "x");
        ADD_FAILURE() << "writing to /dev/full succeeded";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("No space left on device"), std::string::npos) << e.what();
    }
    write_file_atomic(d / "null", "x");
    EXPECT_TRUE(fs::is_symlink(d / "full"));
    EXPECT_TRUE(fs::is_symlink(d / "null"));
    EXPECT_TRUE(temp_files(d).empty());
    // the CLI: detokenize to /dev/full fails (exit 1), and "-" is standard output
    put(d / "in.ids", "104 105\n");
    EXPECT_EQ(run_cli_logged("detokenize --tokenizer byte --ids " + (d / "in.ids").string() + " --out " +
                                 (d / "full").string(),
                             d / "log"),
              1);
    EXPECT_EQ(run_cli_logged("detokenize --tokenizer byte --ids " + (d / "in.ids").string() + " --out -",
                             d / "log"),
              0);
    EXPECT_EQ(slurp(d / "log"), "hi");
    EXPECT_FALSE(fs::exists(d / "-"));
    fs::remove_all(d);
}

// Finding 6: "cannot rename …: Success" (errno overwritten by the cleanup).
TEST(AtomicWrites, DirectoryDestinationSaysIsADirectory) {
    const auto d = tmpdir("isdir");
    fs::create_directories(d / "out");
    try {
        write_file_atomic(d / "out", "x");
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("Is a directory"), std::string::npos) << m;
        EXPECT_EQ(m.find("Success"), std::string::npos) << m;
    }
    try {
        h5::Writer w(d / "out");
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("Is a directory"), std::string::npos) << e.what();
    }
    put(d / "in.txt", "hi");
    EXPECT_EQ(run_cli_logged("tokenize --tokenizer byte --text " + (d / "in.txt").string() + " --out " +
                                 (d / "out").string(),
                             d / "log"),
              1);
    const std::string log = slurp(d / "log");
    EXPECT_NE(log.find("Is a directory"), std::string::npos) << log;
    EXPECT_EQ(log.find("Success"), std::string::npos) << log;
    EXPECT_TRUE(temp_files(d).empty());
    EXPECT_TRUE(fs::is_directory(d / "out"));
    fs::remove_all(d);
}

// Finding 5: two runs writing the same output both reported success; one result was lost silently. The
// second is refused, keeps its result at "<path>.conflict-<pid>", and the other run's file is untouched.
TEST(AtomicWrites, DestinationChangedDuringTheRunIsNotOverwritten) {
    const auto d = tmpdir("conflict");
    const fs::path out = d / "out.csv";
    const fs::path keep = d / ("out.csv.conflict-" + std::to_string(::getpid()));
    put(out, "before");
    {
        AtomicFile f(out);
        f.write("ours");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        put(out, "the other run");  // another run commits meanwhile
        try {
            f.commit();
            ADD_FAILURE() << "no error";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("modified by another program"), std::string::npos)
                << e.what();
            EXPECT_NE(std::string(e.what()).find(keep.string()), std::string::npos) << e.what();
        }
    }
    EXPECT_EQ(slurp(out), "the other run");
    EXPECT_EQ(slurp(keep), "ours");
    EXPECT_TRUE(temp_files(d).empty());
    fs::remove(keep);

    // created meanwhile
    fs::remove(out);
    {
        AtomicFile f(out);
        f.write("ours");
        put(out, "the other run");
        EXPECT_THROW(f.commit(), Error);
    }
    EXPECT_EQ(slurp(out), "the other run");
    EXPECT_EQ(slurp(keep), "ours");
    fs::remove(keep);

    // this process's own earlier result is not a conflict
    write_file_atomic(out, "one");
    write_file_atomic(out, "two");
    EXPECT_EQ(slurp(out), "two");

    // HDF5 writer
    const fs::path h5out = d / "out.h5";
    put(h5out, "before");
    {
        h5::Writer w(h5out);
        const double v = 1.5;
        w.write_f64("/x", {1}, &v);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        put(h5out, "the other run");
        EXPECT_THROW(w.commit(), Error);
    }
    EXPECT_EQ(slurp(h5out), "the other run");
    EXPECT_TRUE(fs::exists(d / ("out.h5.conflict-" + std::to_string(::getpid()))));
    EXPECT_TRUE(temp_files(d).empty());
    fs::remove_all(d);
}

// Finding 3 (simulated in-process): a failed commit closes every id and removes the temp file; the next file
// is written normally.
TEST(AtomicWrites, FailedHdf5CommitClosesEverythingAndRemovesTemp) {
    const auto d = tmpdir("h5fail");
    put(d / "a.h5", "old");
    {
        h5::Writer w(d / "a.h5");
        auto ds = w.create_appendable("/rows", h5::DType::F32, {4});
        const float row[4] = {1, 2, 3, 4};
        w.append(ds, h5::DType::F32, 1, row);
        auto g = w.group("/g");
        h5::testing::fail_next_commit();
        EXPECT_THROW(w.commit(), Error);
        EXPECT_TRUE(temp_files(d).empty());
        EXPECT_EQ(registered_temp_file_count(), 0);
    }
    EXPECT_EQ(slurp(d / "a.h5"), "old");
    {
        h5::Writer w(d / "b.h5");
        const double v = 2.5;
        w.write_f64("/x", {1}, &v);
        w.commit();
    }
    h5::Reader r(d / "b.h5");
    EXPECT_EQ(r.read_f64("/x"), std::vector<double>{2.5});
    EXPECT_TRUE(temp_files(d).empty());
    fs::remove_all(d);
}

// Finding 3 (real): a trace written to a full disk. The HDF5 flush fails; the process used to crash in
// H5_term_library at exit (status 139).
TEST(AtomicWrites, AnalyzeOnFullDiskExitsCleanly) {
    const auto d = tmpdir("h5full");
    put(d / "run.h5", "previous");
    const int rc = run_cli_logged(
        "analyze --random-shape mamba-130m --random-tokens 64 --methods vanilla --no-attention --out " +
            (d / "run.h5").string(),
        d / "log", "trap \"\" XFSZ; ulimit -f 40");
    EXPECT_EQ(rc, 1) << slurp(d / "log");
    EXPECT_EQ(slurp(d / "run.h5"), "previous");
    EXPECT_TRUE(temp_files(d).empty());
    fs::remove_all(d);
}

namespace {

// Starts the CLI with `args` (stdout/stderr to `log`), waits `delay`, sends `sig` (`count` times, 50 ms
// apart) and returns the wait status. wait_for_output: first wait until the CLI has printed something (its
// signal handlers are installed before its first line: a fixed delay alone raced a slow start-up, which
// re-executes the program once, on a loaded machine and then died of the signal itself).
int run_and_signal(const std::vector<std::string>& args, const fs::path& log, std::chrono::milliseconds delay,
                   int sig, int count, const fs::path& wait_for_temp_in = {}, bool wait_for_output = false) {
    std::error_code ec;
    if (wait_for_output) fs::remove(log, ec);  // not the previous run's lines
    const pid_t pid = ::fork();
    if (pid == 0) {
        FILE* f = std::freopen(log.c_str(), "w", stdout);
        (void)f;
        ::dup2(1, 2);
        std::vector<char*> argv;
        std::string cli = MAMBASCOPE_CLI_PATH;
        argv.push_back(cli.data());
        std::vector<std::string> copy = args;
        for (auto& a : copy) argv.push_back(a.data());
        argv.push_back(nullptr);
        ::execv(cli.c_str(), argv.data());
        ::_exit(127);
    }
    if (!wait_for_temp_in.empty())  // until the streaming writer has started (at most 60 s)
        for (int k = 0; k < 6000 && temp_files(wait_for_temp_in).empty(); ++k)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (wait_for_output) {  // until the first line (at most 60 s)
        for (int k = 0; k < 6000 && (!fs::exists(log, ec) || fs::file_size(log, ec) == 0); ++k)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::this_thread::sleep_for(delay);
    for (int k = 0; k < count; ++k) {
        ::kill(pid, sig);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
}

}  // namespace

// Finding 4: SIGINT / SIGTERM during a run left *.tmp-PID files and killed the process.
TEST(AtomicWrites, SigintDuringAnalyzeExits130AndLeavesNoTempFile) {
    const auto d = tmpdir("sigint");
    put(d / "run.h5", "previous");
    const std::vector<std::string> args = {"analyze",         "--random-shape", "mamba-130m",
                                           "--random-tokens", "4000",           "--methods",
                                           "vanilla",         "--out",          (d / "run.h5").string()};
    for (int sig : {SIGINT, SIGTERM}) {
        const int status = run_and_signal(args, d / "log", std::chrono::milliseconds(300), sig, 1, {}, true);
        ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status) << ": " << slurp(d / "log");
        EXPECT_EQ(WEXITSTATUS(status), 130) << slurp(d / "log");
        EXPECT_NE(slurp(d / "log").find("cancelled"), std::string::npos) << slurp(d / "log");
        EXPECT_EQ(slurp(d / "run.h5"), "previous");
        EXPECT_TRUE(temp_files(d).empty());
    }
    // a second signal: out at once, temp files removed
    const int status = run_and_signal(args, d / "log", std::chrono::milliseconds(300), SIGINT, 2, {}, true);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 130);
    EXPECT_EQ(slurp(d / "run.h5"), "previous");
    EXPECT_TRUE(temp_files(d).empty());
    fs::remove_all(d);
}

// calibrate has its own stage progress: the first SIGINT stops it too (exit 130, no output, no temp file).
TEST(AtomicWrites, SigintDuringCalibrateExits130AndWritesNothing) {
    const auto d = tmpdir("sigcal");
    const fs::path res = MAMBASCOPE_RESOURCES_DIR;
    const std::vector<std::string> args = {"calibrate",
                                           "--model",
                                           (res / "models" / "demo-mamba1").string(),
                                           "--text",
                                           (res / "text" / "demo.txt").string(),
                                           "--samples",
                                           "400",
                                           "--out",
                                           (d / "cal.h5").string()};
    const int status = run_and_signal(args, d / "log", std::chrono::milliseconds(300), SIGINT, 1, {}, true);
    ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status) << ": " << slurp(d / "log");
    EXPECT_EQ(WEXITSTATUS(status), 130) << slurp(d / "log");
    EXPECT_FALSE(fs::exists(d / "cal.h5"));
    EXPECT_TRUE(temp_files(d).empty());
    fs::remove_all(d);
}

// The registry the second signal uses: unlink() of every live temp path.
TEST(AtomicWrites, RegisteredTempFilesAreRemovedBySignalPath) {
    const auto d = tmpdir("registry");
    {
        AtomicFile f(d / "x.txt");
        f.write("partial");
        h5::Writer w(d / "y.h5");
        EXPECT_EQ(temp_files(d).size(), 2u);
        EXPECT_EQ(registered_temp_file_count(), 2);
        remove_registered_temp_files();
        EXPECT_TRUE(temp_files(d).empty());
    }
    EXPECT_EQ(registered_temp_file_count(), 0);
    EXPECT_FALSE(fs::exists(d / "x.txt"));
    fs::remove_all(d);
}

// Finding 4, streaming writer: SIGINT while `forward --dump-delta` streams /delta into its temp file.
TEST(AtomicWrites, SigintDuringForwardDumpDeltaExits130AndLeavesNoTempFile) {
    const auto d = tmpdir("sigfwd");
    ModelConfig c;
    c.arch = Arch::Mamba1;
    c.d_model = 32;
    c.n_layer = 4;
    c.vocab_size = 64;
    c.d_inner = 64;
    c.d_state = 8;
    c.d_conv = 4;
    c.dt_rank = 4;
    c.tie_embeddings = true;
    save_model_dir(*random_model(c, 3), d / "model");
    {
        std::ofstream f(d / "ids.txt");
        for (int i = 0; i < 200000; ++i) f << (i * 7919) % 64 << (i % 32 == 31 ? '\n' : ' ');
    }
    fs::create_directories(d / "out");
    put(d / "out" / "fwd.h5", "previous");
    const std::vector<std::string> args = {
        "forward",      "--model", (d / "model").string(),         "--ids", (d / "ids.txt").string(),
        "--dump-delta", "--out",   (d / "out" / "fwd.h5").string()};
    const int status = run_and_signal(args, d / "log", std::chrono::milliseconds(100), SIGINT, 1, d / "out");
    ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status) << ": " << slurp(d / "log");
    EXPECT_EQ(WEXITSTATUS(status), 130) << slurp(d / "log");
    EXPECT_EQ(slurp(d / "out" / "fwd.h5"), "previous");
    EXPECT_TRUE(temp_files(d / "out").empty());
    fs::remove_all(d);
}
