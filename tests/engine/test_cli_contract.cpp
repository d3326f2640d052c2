// mambascope-cli's command-line contract (issue 15): help from the option table on every subcommand, usage
// errors exit 2 with a message, stray arguments are rejected, --json output parses, nll --per-token adds up
// to the reported NLL, tokenize --model and `-` work, progress shows on a non-terminal, and forward's HDF5
// carries ids, dimension scales, the precision and the activations asked for.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <hdf5_hl.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli_runner.h"
#include "mambascope/forward.h"
#include "mambascope/h5.h"
#include "mambascope/model.h"
#include "mambascope/tokenizer.h"
#include "tiny_model.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

const fs::path kRes = MAMBASCOPE_RESOURCES_DIR;
const fs::path kDemo1 = kRes / "models" / "demo-mamba1";

fs::path tmpdir(const std::string& name) {
    return test::fresh_temp_dir("mambascope_clic", name);
}

using test::CliRun;
using test::run_cli;
using test::slurp;

bool contains(const std::string& s, const std::string& what) {
    return s.find(what) != std::string::npos;
}

void write_ids(const fs::path& p, const std::vector<int32_t>& ids) {
    std::ofstream f(p);
    for (auto i : ids) f << i << ' ';
}

const std::vector<std::string> kCommands = {"info",       "forward",  "nll",       "analyze",
                                            "ppl-sweep",  "bench",    "calibrate", "tokenize",
                                            "detokenize", "generate", "retrieval"};

}  // namespace

TEST(CliContract, TopLevelHelpListsEachCommandOnce) {
    const CliRun r = run_cli("--help");
    ASSERT_EQ(r.rc, 0) << r.err;
    for (const auto& c : kCommands) {
        // "  name   description" lines: exactly one per command
        size_t count = 0;
        std::istringstream lines(r.out);
        for (std::string line; std::getline(lines, line);) {
            std::istringstream words(line);
            std::string first;
            words >> first;
            if (first == c) ++count;
        }
        EXPECT_EQ(count, 1u) << c << " in\n" << r.out;
    }
    EXPECT_EQ(run_cli("").rc, 2);  // no command: usage error
    EXPECT_EQ(run_cli("--version").rc, 0);
}

TEST(CliContract, HelpOnEverySubcommandPrintsOptionsAndRunsNothing) {
    const auto d = tmpdir("help");
    for (const auto& c : kCommands)
        for (const std::string flag : {"-h", "--help"}) {
            // with an --out that would be written if the command ran
            const fs::path out = d / (c + ".out");
            const CliRun r = run_cli(c + " " + flag);
            EXPECT_EQ(r.rc, 0) << c << " " << flag << ": " << r.err;
            EXPECT_TRUE(contains(r.out, c)) << r.out;
            EXPECT_TRUE(contains(r.out, "--help")) << c << ": " << r.out;
            EXPECT_FALSE(contains(r.out, "tok_per_s")) << "bench ran: " << r.out;  // bench -h started a run
            EXPECT_FALSE(fs::exists(out));
        }
    // The help shows the options the command accepts (generated from the option table).
    const CliRun f = run_cli("forward --help");
    for (const std::string opt :
         {"--model", "--text", "--ids", "--out", "--device", "--precision", "--calibration", "--c", "--b",
          "--activate-above", "--dump", "--layers", "--positions", "--progress"})
        EXPECT_TRUE(contains(f.out, opt)) << opt << " missing from forward --help";
    EXPECT_TRUE(contains(run_cli("calibrate --help").out, "--device"));
    // no pointer to another command
    EXPECT_FALSE(contains(run_cli("calibrate --help").out, "forward --help"));
    for (const std::string c : {"analyze", "ppl-sweep", "retrieval"})
        EXPECT_TRUE(contains(run_cli(c + " --help").out, "--deci-layers")) << c;
    fs::remove_all(d);
}

TEST(CliContract, UsageErrorsExit2WithAMessageAndRuntimeErrorsExit1) {
    const auto d = tmpdir("usage");
    write_ids(d / "ok.txt", {1, 2, 3, 4});
    const std::string model = " --model " + kDemo1.string();
    const std::string ids = " --ids " + (d / "ok.txt").string();
    struct Case {
        std::string args, expect;
    };
    for (const Case& c : std::vector<Case>{
             {"forward" + model + ids + " --out " + (d / "o.h5").string() + " --bogus", "--bogus"},
             {"forward" + model + ids + " --out " + (d / "o.h5").string() + " stray", "stray"},
             {"nll" + model + ids + " extra", "extra"},
             {"forward" + model + ids, "--out"},  // missing required
             {"nll" + model + ids + " --device gpu", "--device"},
             {"nll" + model + ids + " --chunk x", "--chunk"},
             {"nll" + model + ids + " --text " + (d / "ok.txt").string(), "--text"},  // --text excludes --ids
             {"nll" + model, "--ids"},                                                // no input at all
             {"calibrate" + model + ids + " --out " + (d / "c.h5").string() + " --aggregate median",
              "--aggregate"},
             {"analyze" + model + ids + " --out " + (d / "t.h5").string() + " --window 9:3", "--window"},
             {"forward" + model + ids + " --out " + (d / "o.h5").string() + " --dump h", "--positions"},
             {"forward" + model + ids + " --out " + (d / "o.h5").string() + " --dump zz", "--dump"},
             {"nosuchcommand", "nosuchcommand"},
         }) {
        const CliRun r = run_cli(c.args);
        EXPECT_EQ(r.rc, 2) << c.args << "\n" << r.err;
        EXPECT_TRUE(contains(r.err, "usage error")) << c.args << "\n" << r.err;
        EXPECT_TRUE(contains(r.err, c.expect)) << c.args << "\n" << r.err;
    }
    EXPECT_FALSE(fs::exists(d / "o.h5"));
    // a missing file or a bad id is a runtime error: exit 1, the file named
    const CliRun missing = run_cli("nll" + model + " --ids " + (d / "nope.txt").string());
    EXPECT_EQ(missing.rc, 1);
    EXPECT_TRUE(contains(missing.err, (d / "nope.txt").string())) << missing.err;
    write_ids(d / "bad.txt", {1, 999});
    EXPECT_EQ(run_cli("nll" + model + " --ids " + (d / "bad.txt").string()).rc, 1);
    fs::remove_all(d);
}

TEST(CliContract, JsonOutputOfInfoNllAndAnalyzeParses) {
    const auto d = tmpdir("json");
    const CliRun info = run_cli("info --json --model " + kDemo1.string());
    ASSERT_EQ(info.rc, 0) << info.err;
    const auto ij = nlohmann::json::parse(info.out);
    const auto m = load_model(kDemo1);
    EXPECT_EQ(ij.at("n_layer").get<int64_t>(), m->config.n_layer);
    EXPECT_EQ(ij.at("parameters").get<int64_t>(), m->parameter_count());
    EXPECT_EQ(ij.at("architecture").get<std::string>(), arch_name(m->config.arch));

    const std::string text = "It is a truth universally acknowledged, that a single man.";
    std::ofstream(d / "t.txt", std::ios::binary) << text;
    const CliRun nll = run_cli("nll --json --model " + kDemo1.string() + " --text " + (d / "t.txt").string());
    ASSERT_EQ(nll.rc, 0) << nll.err;
    const auto nj = nlohmann::json::parse(nll.out);
    EXPECT_EQ(nj.at("tokens").get<size_t>(), text.size());  // byte model: one token per byte
    EXPECT_EQ(nj.at("predicted").get<size_t>(), text.size() - 1);
    EXPECT_NEAR(std::exp(nj.at("mean_nll").get<double>()), nj.at("perplexity").get<double>(), 1e-6);
    EXPECT_EQ(nj.at("precision").get<std::string>(), "fp32");

    const CliRun an =
        run_cli("analyze --json --model " + kDemo1.string() + " --text " + (d / "t.txt").string() +
                " --methods vanilla --no-attention --out " + (d / "t.h5").string());
    ASSERT_EQ(an.rc, 0) << an.err;
    const auto aj = nlohmann::json::parse(an.out);
    ASSERT_EQ(aj.at("methods").size(), 1u);
    EXPECT_EQ(aj["methods"][0].at("method").get<std::string>(), "vanilla");
    // analyze scores the same text with the same model: its mean NLL is nll's
    EXPECT_NEAR(aj["methods"][0].at("mean_nll").get<double>(), nj.at("mean_nll").get<double>(), 1e-4);
    fs::remove_all(d);
}

TEST(CliContract, NllPerTokenSumsToTheReportedNll) {
    const auto d = tmpdir("pertok");
    std::ofstream(d / "t.txt", std::ios::binary)
        << "Emma Woodhouse, handsome, clever, and rich, with a comfortable home";
    const std::string base = "nll --json --model " + kDemo1.string() + " --text " + (d / "t.txt").string();
    const CliRun csv = run_cli(base + " --per-token " + (d / "p.csv").string());
    ASSERT_EQ(csv.rc, 0) << csv.err;
    const auto j = nlohmann::json::parse(csv.out);
    std::istringstream lines(slurp(d / "p.csv"));
    std::string line;
    std::getline(lines, line);
    EXPECT_EQ(line, "position,target,nll");
    double sum = 0;
    int64_t n = 0, last_pos = -1;
    const std::string text = slurp(d / "t.txt");
    while (std::getline(lines, line)) {
        long long pos = 0;
        int target = 0;
        double v = 0;
        ASSERT_EQ(std::sscanf(line.c_str(), "%lld,%d,%lf", &pos, &target, &v), 3) << line;
        EXPECT_EQ(pos, last_pos + 1);
        EXPECT_EQ(target, static_cast<unsigned char>(text[size_t(pos + 1)]));  // byte model: the next byte
        last_pos = pos;
        sum += v;
        ++n;
    }
    EXPECT_EQ(n, j.at("predicted").get<int64_t>());
    EXPECT_NEAR(sum, j.at("sum_nll").get<double>(), 1e-4);
    EXPECT_NEAR(sum / double(n), j.at("mean_nll").get<double>(), 1e-6);

    ASSERT_EQ(run_cli(base + " --per-token " + (d / "p.h5").string()).rc, 0);
    h5::Reader r(d / "p.h5");
    const auto v = r.read_f32("/nll");
    double s2 = 0;
    for (float x : v) s2 += x;
    EXPECT_NEAR(s2, j.at("sum_nll").get<double>(), 1e-3);
    EXPECT_EQ(r.read_i64("/position").size(), v.size());
    EXPECT_EQ(run_cli(base + " --per-token " + (d / "p.txt").string()).rc, 2);  // unknown format
    fs::remove_all(d);
}

TEST(CliContract, TokenizeWithTheModelsByteTokenizerRoundTripsThroughStdinAndStdout) {
    const auto d = tmpdir("tok");
    const std::string text = "Hello, Emma! caf\xC3\xA9\n";
    std::ofstream(d / "in.txt", std::ios::binary) << text;
    // --model DIR: the byte-level demo model's own tokenizer (ids are bytes), stdin → stdout
    const CliRun t = run_cli("tokenize --model " + kDemo1.string() + " --text - --out -", d / "in.txt");
    ASSERT_EQ(t.rc, 0) << t.err;
    std::istringstream in(t.out);
    std::vector<int32_t> ids;
    for (int32_t v; in >> v;) ids.push_back(v);
    ASSERT_EQ(ids.size(), text.size());
    for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], static_cast<unsigned char>(text[i]));
    std::ofstream(d / "ids.txt") << t.out;
    const CliRun back = run_cli("detokenize --model " + kDemo1.string() + " --ids - --out -", d / "ids.txt");
    ASSERT_EQ(back.rc, 0) << back.err;
    EXPECT_EQ(back.out, text);
    // the README's flow: tokenize with the model, then forward/nll on the ids
    ASSERT_EQ(run_cli("tokenize --model " + kDemo1.string() + " --text " + (d / "in.txt").string() +
                      " --out " + (d / "f.ids").string())
                  .rc,
              0);
    EXPECT_EQ(run_cli("nll --model " + kDemo1.string() + " --ids " + (d / "f.ids").string()).rc, 0);
    // nll reads ids from stdin too
    const CliRun nll = run_cli("nll --json --model " + kDemo1.string() + " --ids -", d / "f.ids");
    ASSERT_EQ(nll.rc, 0) << nll.err;
    EXPECT_EQ(nlohmann::json::parse(nll.out).at("tokens").get<size_t>(), text.size());
    fs::remove_all(d);
}

TEST(CliContract, ProgressPrintsLinesWithEtaOnANonTerminal) {
    const auto d = tmpdir("progress");
    std::vector<int32_t> ids(256);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(32 + i % 90);
    write_ids(d / "ids.txt", ids);
    const std::string base =
        "nll --model " + kDemo1.string() + " --ids " + (d / "ids.txt").string() + " --chunk 32";
    const CliRun lines = run_cli(base);  // stderr is a file: auto → lines
    ASSERT_EQ(lines.rc, 0) << lines.err;
    EXPECT_TRUE(contains(lines.err, "nll")) << lines.err;
    EXPECT_TRUE(contains(lines.err, "ETA")) << lines.err;
    EXPECT_TRUE(contains(lines.err, "100.0%")) << lines.err;
    EXPECT_TRUE(contains(lines.err, "tok/s")) << lines.err;
    EXPECT_FALSE(contains(lines.err, "\r")) << "terminal redraws in a log";

    const CliRun json = run_cli(base + " --progress json");
    ASSERT_EQ(json.rc, 0) << json.err;
    std::istringstream in(json.err);
    int objects = 0;
    double last = -1;
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] != '{') continue;
        const auto j = nlohmann::json::parse(line);
        EXPECT_EQ(j.at("label").get<std::string>(), "nll");
        EXPECT_GE(j.at("fraction").get<double>(), last);
        last = j.at("fraction").get<double>();
        ++objects;
    }
    EXPECT_GE(objects, 2);
    EXPECT_EQ(last, 1.0);
    EXPECT_EQ(run_cli(base + " --progress none").err.find('%'), std::string::npos);
    fs::remove_all(d);
}

namespace {
// Names of the dimension scales attached to each axis of a dataset (empty string: none).
std::vector<std::string> scale_names(const fs::path& file, const std::string& dataset) {
    std::vector<std::string> out;
    const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    const hid_t ds = H5Dopen2(f, dataset.c_str(), H5P_DEFAULT);
    const hid_t sp = H5Dget_space(ds);
    const int rank = H5Sget_simple_extent_ndims(sp);
    for (int a = 0; a < rank; ++a) {
        char label[64] = "";
        H5DSget_label(ds, unsigned(a), label, sizeof label);
        out.push_back(H5DSget_num_scales(ds, unsigned(a)) > 0 ? label : "");
    }
    H5Sclose(sp);
    H5Dclose(ds);
    H5Fclose(f);
    return out;
}
}  // namespace

TEST(CliContract, ForwardFileCarriesIdsScalesPrecisionAndActivations) {
    const auto d = tmpdir("fwd");
    auto m = random_model(test::tiny(Arch::Mamba2), 9);
    save_model_dir(*m, d / "model");
    std::vector<int32_t> ids(40);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7) % 37);
    write_ids(d / "ids.txt", ids);
    const std::string base =
        "forward --model " + (d / "model").string() + " --ids " + (d / "ids.txt").string() + " --chunk 16";
    const CliRun r =
        run_cli(base + " --dump-delta --dump x,B,C,dt,h,resid --layers 1,2 --positions 10:30 --out " +
                (d / "f.h5").string());
    ASSERT_EQ(r.rc, 0) << r.err;
    h5::Reader f(d / "f.h5");
    EXPECT_EQ(f.read_i64("/ids"), std::vector<int64_t>(ids.begin(), ids.end()));
    EXPECT_EQ(h5::get_attr_string(f.root(), "precision"), "fp32");
    EXPECT_EQ(h5::get_attr_string(f.root(), "backend"), "cpu");
    EXPECT_EQ(scale_names(d / "f.h5", "/logits"), (std::vector<std::string>{"position", "vocab"}));
    EXPECT_EQ(scale_names(d / "f.h5", "/delta"), (std::vector<std::string>{"layer", "position", "channel"}));

    // Only the asked layers and window; HF-style names; shapes as documented.
    const std::string a = "/activations/backbone.layers.";
    EXPECT_FALSE(f.exists(a + "0.mixer.x"));
    const auto& c = m->config;
    EXPECT_EQ(f.shape(a + "2.mixer.x"), (std::vector<uint64_t>{20, uint64_t(c.d_inner)}));
    EXPECT_EQ(f.shape(a + "2.mixer.B"),
              (std::vector<uint64_t>{20, uint64_t(c.n_groups), uint64_t(c.d_state)}));
    EXPECT_EQ(f.shape(a + "1.mixer.h"),
              (std::vector<uint64_t>{20, uint64_t(c.n_heads), uint64_t(c.head_dim), uint64_t(c.d_state)}));
    EXPECT_EQ(f.shape(a + "2"), (std::vector<uint64_t>{20, uint64_t(c.d_model)}));
    EXPECT_EQ(scale_names(d / "f.h5", a + "1.mixer.h")[0], "position");
    EXPECT_EQ(f.read_i64("/activations/position").front(), 10);

    // dt equals the /delta dump on the window
    const auto delta = f.read_f32("/delta");
    const auto dt = f.read_f32(a + "1.mixer.dt");
    const int64_t C = c.channels(), T = 40;
    for (int64_t p = 10; p < 30; ++p)
        for (int64_t k = 0; k < C; ++k)
            EXPECT_EQ(dt[size_t((p - 10) * C + k)], delta[size_t((1 * T + p) * C + k)]) << p << " " << k;

    // the last layer's resid through the final norm and the head gives the logits
    const auto resid = f.read_f32(a + "2");
    const auto logits = f.read_f32("/logits");
    const int64_t D = c.d_model, V = m->vocab_rows();
    for (int64_t p = 10; p < 30; p += 7) {
        double ss = 0;
        for (int64_t k = 0; k < D; ++k)
            ss += double(resid[size_t((p - 10) * D + k)]) * resid[size_t((p - 10) * D + k)];
        const double inv = 1.0 / std::sqrt(ss / double(D) + c.norm_eps);
        for (int64_t v = 0; v < V; ++v) {
            double dot = 0;
            for (int64_t k = 0; k < D; ++k)
                dot += double(resid[size_t((p - 10) * D + k)]) * inv * m->norm_f.data[k] *
                       m->lm_head.data[v * D + k];
            EXPECT_NEAR(dot, logits[size_t(p * V + v)], 1e-4);
        }
    }
    // out-of-range layer or window: usage errors naming the option
    const CliRun bad = run_cli(base + " --dump x --layers 7 --out " + (d / "g.h5").string());
    EXPECT_EQ(bad.rc, 2);
    EXPECT_TRUE(contains(bad.err, "--layers")) << bad.err;
    EXPECT_EQ(run_cli(base + " --dump x --positions 10:99 --out " + (d / "g.h5").string()).rc, 2);
    EXPECT_FALSE(fs::exists(d / "g.h5"));
    fs::remove_all(d);
}
