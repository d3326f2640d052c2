// The shipped passkey demo (issue 12): the embedded demo-mamba2 finds the key at its training length, loses
// it at 64x, and LongMamba with the shipped calibration finds it again; the demo session is that haystack;
// the CLI's retrieval command writes what it says. These pin docs/results.md's claims on every fresh clone.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "mambascope/calibration.h"
#include "mambascope/model.h"
#include "mambascope/retrieval.h"
#include "mambascope/session.h"
#include "mambascope/tokenizer.h"

#include "cli_runner.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

const fs::path kRes = MAMBASCOPE_RESOURCES_DIR;

fs::path tmpdir(const std::string& name) {
    return mambascope::test::fresh_temp_dir("mambascope_ret", name);
}

// Runs the CLI, returns (exit code, stdout).
std::pair<int, std::string> cli(const std::string& args) {
    const auto r = mambascope::test::run_cli(args);
    return {r.rc, r.out};
}

}  // namespace

TEST(PasskeyDemo, VanillaFailsAt64xAndLongMambaRepairs) {
    auto model = load_model(kRes / "models" / "demo-mamba2");
    ASSERT_TRUE(model->config.retrieval_template.has_value());  // its own template, from config.json
    ASSERT_EQ(model->config.train_len, 256);
    auto tok = choose_tokenizer(model->dir, model->config.tokenizer);
    std::ifstream f(kRes / "text" / "demo.txt", std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    HaystackBuilder hb(tok, ss.str(), default_passkey_template(model->config));
    RetrievalRequest req;
    req.lengths = {256, 16384};
    req.depths = {0.25};
    req.samples = 2;
    req.methods = {Method::Vanilla, Method::LongMamba};
    req.calibration_path = kRes / "calibration" / "demo-mamba2.h5";
    req.generate = false;
    const RetrievalResult r = run_retrieval(*model, hb, req);
    EXPECT_GE(r.length_accuracy(Method::Vanilla, 256), 0.95);
    EXPECT_LE(r.length_accuracy(Method::Vanilla, 16384), 0.3);
    EXPECT_GE(r.length_accuracy(Method::LongMamba, 16384), 0.7);
}

TEST(PasskeyDemo, SessionIsA64xHaystackAndAnalyzePrintsTheAnswers) {
    const Session s = load_session(kRes / "demo" / "session.json");
    ASSERT_GT(s.haystack.length, 0);
    auto model = load_model(resolve_model_path(s));
    EXPECT_GE(s.haystack.length, 64 * model->config.train_len);
    Haystack h;
    std::map<std::string, std::string> prov;
    const RunInput in = session_haystack_input(s, *model, &h, &prov);
    EXPECT_EQ(static_cast<int64_t>(in.ids.size()), s.haystack.length + static_cast<int64_t>(h.answer.size()));
    EXPECT_EQ(prov["haystack.key"], h.key);
    EXPECT_FALSE(resolve_retrieval_path(s).empty());
    EXPECT_TRUE(fs::exists(resolve_retrieval_path(s)));
    // the same cell as in the shipped retrieval run: same key
    const RetrievalResult shipped = read_retrieval_json(resolve_retrieval_path(s));
    bool found = false;
    for (const auto& row : shipped.rows)
        if (row.length == s.haystack.length && row.depth_index == s.haystack.depth_index &&
            row.sample == s.haystack.sample) {
            EXPECT_EQ(row.key, h.key);
            found = true;
        }
    EXPECT_TRUE(found);

    const auto dir = tmpdir("analyze");
    auto [rc, out] = cli("analyze --session " + (kRes / "demo" / "session.json").string() +
                         " --methods vanilla,longmamba --no-attention --out " + (dir / "t.h5").string());
    ASSERT_EQ(rc, 0) << out;
    EXPECT_NE(out.find("vanilla    answered"), std::string::npos) << out;
    EXPECT_NE(out.find("(wrong)"), std::string::npos) << out;
    EXPECT_NE(out.find("longmamba  answered \"" + h.key), std::string::npos) << out;
    EXPECT_NE(out.find("(right)"), std::string::npos) << out;
    fs::remove_all(dir);
}

TEST(RetrievalCli, WritesCsvJsonAndACellTraceAndRejectsBadArguments) {  // --out: the JSON result file
    const auto dir = tmpdir("cli");
    const std::string base =
        "retrieval --model demo --lengths 300,600 --depths 0,1 --samples 1 "
        "--methods vanilla,longmamba ";
    auto [rc, out] = cli(base + "--csv " + (dir / "r.csv").string() + " --out " + (dir / "r.json").string() +
                         " --trace " + (dir / "c.h5").string() + " --trace-cell 600:1:0");
    ASSERT_EQ(rc, 0) << out;
    EXPECT_NE(out.find("longmamba"), std::string::npos);
    const RetrievalResult r = read_retrieval_json(dir / "r.json");
    EXPECT_EQ(r.rows.size(), 2u * 2 * 1 * 2);
    EXPECT_TRUE(fs::exists(dir / "c.h5"));
    std::ifstream csv(dir / "r.csv");
    std::string header;
    std::getline(csv, header);
    EXPECT_EQ(header.rfind("method,length,depth,sample,key", 0), 0u);
    // --json: the same result as JSON on stdout instead of the table (like info, nll and analyze)
    auto [rcj, js] = cli(base + "--json --no-generate");
    ASSERT_EQ(rcj, 0) << js;
    const auto j = nlohmann::json::parse(js.substr(js.find('{')));
    EXPECT_EQ(j.at("format"), "mambascope-retrieval");
    EXPECT_EQ(j.at("rows").size(), 2u * 2 * 1 * 2);
    EXPECT_EQ(js.find("passkey retrieval:"), std::string::npos) << "the table is not printed with --json";
    // bad arguments: clear errors, no output files; usage errors exit 2, runtime errors 1
    EXPECT_EQ(cli(base + "--depths 0,1.5").first, 2);
    EXPECT_EQ(cli(base + "--depths x").first, 2);
    EXPECT_EQ(cli(base + "--trace " + (dir / "x.h5").string()).first, 2);  // --trace without --trace-cell
    EXPECT_EQ(cli(base + "--trace " + (dir / "x.h5").string() + " --trace-cell 600:9:0").first, 2);
    EXPECT_EQ(cli(base + "--lengths 5").first, 1);  // shorter than the template
    EXPECT_EQ(cli(base + "--decode-filter maybe").first, 2);
    EXPECT_EQ(cli("retrieval --model demo --filler /nonexistent.txt --lengths 300").first, 1);
    EXPECT_FALSE(fs::exists(dir / "x.h5"));
    fs::remove_all(dir);
}
