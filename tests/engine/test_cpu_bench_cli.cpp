// mambascope-cli's CPU defaults (issue 16): OpenMP threads wait passively unless the user chose a policy
// (default_passive_omp_wait re-executes the program with OMP_WAIT_POLICY=passive), and `bench --analyze`
// reports page faults, system time and the GEMM backend.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "cli_runner.h"

namespace fs = std::filesystem;

namespace {

const fs::path kDemo = fs::path(MAMBASCOPE_RESOURCES_DIR) / "models" / "demo-mamba1";

// The CLI's stdout and stderr together, run after `env` on its command line.
std::string run(const std::string& env, const std::string& args) {
    const auto r = mambascope::test::run_cli(args, "/dev/null", env);
    return r.out + r.err;
}

}  // namespace

TEST(CpuBenchCli, OpenMpWaitsPassivelyUnlessTheUserChose) {
    const std::string args = "bench --model " + kDemo.string() + " --tokens 16";
    EXPECT_NE(run("env -u OMP_WAIT_POLICY", args).find("omp_wait_policy=passive "), std::string::npos);
    EXPECT_NE(run("env OMP_WAIT_POLICY=active", args).find("omp_wait_policy=active "), std::string::npos);
}

TEST(CpuBenchCli, AnalyzeModeReportsFaultsSystemTimeAndBackend) {
    const std::string out = run("env", "bench --analyze --model " + kDemo.string() + " --tokens 300");
    for (const char* key : {"mode=analyze", "minflt=", "sys_s=", "sys_pct_of_wall=", "peak_rss_mb=", "blas=",
                            "load1_before=", "method=vanilla", "mean_nll="})
        EXPECT_NE(out.find(key), std::string::npos) << key << " missing in: " << out;
}
