// cli_runner.h: runs mambascope-cli (MAMBASCOPE_CLI_PATH) from a test through /bin/sh and reads back its exit
// status and output, plus the scratch-directory and file-reading helpers such tests share.
//
// Design decision: the CLI's output goes to files, never a pipe or terminal, so a test sees what a batch job
// sees (progress lines on a non-terminal) and a crash at exit shows as 128 + signal, as the shell reports it.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace mambascope::test {

// A new, empty directory <temp>/<prefix>_<name>_<pid> (emptied if a previous run left it).
inline std::filesystem::path fresh_temp_dir(const std::string& prefix, const std::string& name) {
    auto d =
        std::filesystem::temp_directory_path() / (prefix + "_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d;
}

// The whole file as bytes ("" when it cannot be opened).
inline std::string slurp(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Runs `cmd` with std::system; returns the exit status, or 128+signal when killed by a signal (so a crash at
// exit shows as 139), or -1 when the shell could not run.
inline int run_shell(const std::string& cmd) {
    const int rc = std::system(cmd.c_str());
    if (WIFEXITED(rc)) return WEXITSTATUS(rc);
    return WIFSIGNALED(rc) ? 128 + WTERMSIG(rc) : -1;
}

struct CliRun {
    int rc = -1;  // exit status (run_shell)
    std::string out, err;
};

// Runs the CLI with stdout and stderr captured in separate files (neither is a terminal); `stdin_file` feeds
// stdin; `env` runs first on the command line (e.g. "env OMP_WAIT_POLICY=active").
inline CliRun run_cli(const std::string& args, const std::filesystem::path& stdin_file = "/dev/null",
                      const std::string& env = "") {
    static int n = 0;
    const auto d =
        std::filesystem::temp_directory_path() / ("mambascope_cli_io_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    const auto o = d / ("o" + std::to_string(n)), e = d / ("e" + std::to_string(n++));
    CliRun r;
    r.rc = run_shell((env.empty() ? "" : env + " ") + std::string(MAMBASCOPE_CLI_PATH) + " " + args + " < " +
                     stdin_file.string() + " > " + o.string() + " 2> " + e.string());
    r.out = slurp(o);
    r.err = slurp(e);
    return r;
}

// Runs the CLI through `sh -c` with stdout and stderr together in `log`; `prefix` runs first in the same
// shell (e.g. "ulimit -f 0"). Returns the exit status (run_shell).
inline int run_cli_logged(const std::string& args, const std::filesystem::path& log,
                          const std::string& prefix = "") {
    return run_shell("sh -c '" + prefix + (prefix.empty() ? "" : "; ") + "exec " +
                     std::string(MAMBASCOPE_CLI_PATH) + " " + args + "' > " + log.string() + " 2>&1");
}

}  // namespace mambascope::test
