// Session files (session.h) as the CLI reads them: pasted text, device choice and sweep path round-trip, bad
// values are clear errors, and `mambascope-cli analyze --session` runs the pasted text on the chosen device.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "mambascope/session.h"
#include "mambascope/trace.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

fs::path tmpdir(const std::string& name) {
    auto d = fs::temp_directory_path() / ("mambascope_session_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

int cli(const std::string& args, const fs::path& log) {
    const std::string cmd = std::string(MAMBASCOPE_CLI_PATH) + " " + args + " > " + log.string() + " 2>&1";
    const int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string slurp(const fs::path& p) {
    std::ifstream f(p);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST(Session, PastedTextDeviceAndSweepRoundTrip) {
    Session s;
    s.input_text = "Émma Woodhouse, handsome, clever, and rich —\n\"quoted\" \\ text";
    s.device = Device::Auto;
    s.sweep = "sweeps/emma.csv";
    const Session r = session_from_json(session_to_json(s), "test", "/base");
    EXPECT_EQ(r.input_text, s.input_text);
    EXPECT_EQ(r.device, Device::Auto);
    EXPECT_EQ(r.sweep, s.sweep);
    EXPECT_EQ(resolve_sweep_path(r), fs::path("/base/sweeps/emma.csv"));
    EXPECT_EQ(session_request(r).device, Device::Auto);
    // Defaults: no pasted text, CPU, no sweep.
    const Session d = session_from_json("{}", "test");
    EXPECT_TRUE(d.input_text.empty());
    EXPECT_EQ(d.device, Device::Cpu);
    EXPECT_TRUE(resolve_sweep_path(d).empty());
}

TEST(Session, BadDeviceAndBadTypesAreErrorsNamingTheKey) {
    try {
        session_from_json(R"({"device": "tpu"})", "s.json");
        FAIL() << "expected an Error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("device"), std::string::npos) << e.what();
    }
    EXPECT_THROW(session_from_json(R"({"input_text": 5})", "s.json"), Error);
    EXPECT_THROW(session_from_json(R"({"view_state": {"tokens": "rainbow"}})", "s.json"), Error);
    EXPECT_THROW(session_from_json(R"({"view_state": {"channel_map": "entropy"}})", "s.json"), Error);
    const Session v =
        session_from_json(R"({"view_state": {"tokens": "nll_change", "channel_map": "delta_sum"}})", "s");
    EXPECT_EQ(v.tokens_colour, "nll_change");
    EXPECT_EQ(v.channel_map_statistic, "delta_sum");
    EXPECT_EQ(session_from_json(session_to_json(v), "s").tokens_colour, "nll_change");
    EXPECT_THROW(session_from_json(R"({"sweep": []})", "s.json"), Error);
}

TEST(SessionCli, AnalyzeRunsPastedTextOnTheChosenDevice) {
    const fs::path d = tmpdir("cli");
    Session s;  // demo model and calibration
    s.input_text =
        "It was a truth universally acknowledged, that a single man in possession of a good fortune.";
    s.methods = {Method::Vanilla};
    s.device = Device::Cuda;
    save_session(s, d / "s.json");
    ASSERT_EQ(cli("analyze --session " + (d / "s.json").string() + " --out " + (d / "run.h5").string(),
                  d / "log.txt"),
              0)
        << slurp(d / "log.txt");
    const RunResult run = read_trace(d / "run.h5");
    // The demo model is byte-level: one token per byte of the pasted text.
    ASSERT_EQ(run.input.ids.size(), s.input_text.size());
    for (size_t i = 0; i < s.input_text.size(); ++i)
        EXPECT_EQ(run.input.ids[i], static_cast<unsigned char>(s.input_text[i])) << i;
    EXPECT_EQ(run.input.text_path, "(pasted text)");
    ASSERT_EQ(run.methods.size(), 1u);
    if (cuda_usable()) {
        EXPECT_EQ(run.methods[0].backend, "cuda");
    } else {
        // No GPU: the run falls back to the CPU and says why, on stderr and in the trace.
        EXPECT_EQ(run.methods[0].backend, "cpu");
        ASSERT_TRUE(run.provenance.count("device_note"));
        EXPECT_NE(slurp(d / "log.txt").find("CUDA not used"), std::string::npos);
    }
    fs::remove_all(d);
}
