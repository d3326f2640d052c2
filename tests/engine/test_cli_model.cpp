// mambascope-cli info/forward/nll: the contract other tools rely on (issue 2 item 4), and model directories
// written by save_model_dir load back to the same network.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "mambascope/calibration.h"
#include "mambascope/forward.h"
#include "mambascope/h5.h"
#include "mambascope/model.h"
#include "mambascope/tokenizer.h"

#include "cli_runner.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

fs::path tmpdir(const std::string& name) {
    auto d = fs::temp_directory_path() / ("mambascope_cli_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

int cli(const std::string& args) {
    const std::string cmd = std::string(MAMBASCOPE_CLI_PATH) + " " + args + " > /dev/null 2>&1";
    const int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

ModelConfig tiny(Arch a) {
    ModelConfig c;
    c.arch = a;
    c.d_model = 16;
    c.n_layer = 2;
    c.vocab_size = 40;
    c.d_inner = 32;
    c.d_state = 4;
    c.d_conv = 4;
    c.dt_rank = 2;
    c.n_heads = 4;
    c.head_dim = 8;
    c.n_groups = 1;
    c.tie_embeddings = a == Arch::Mamba1;
    return c;
}

void write_ids(const fs::path& p, const std::vector<int32_t>& ids) {
    std::ofstream f(p);
    for (auto i : ids) f << i << ' ';
}

class CliModel : public ::testing::TestWithParam<Arch> {};

}  // namespace

TEST_P(CliModel, SavedModelDirectoryLoadsToTheSameNetwork) {
    auto m = random_model(tiny(GetParam()), 5);
    auto dir = tmpdir("save");
    save_model_dir(*m, dir / "model");
    auto back = load_model(dir / "model");
    std::vector<int32_t> ids{1, 5, 9, 3, 39, 0, 7};
    HeadRequest h;
    h.nll = true;
    auto a = run_forward(*m, ids, {}, h), b = run_forward(*back, ids, {}, h);
    ASSERT_EQ(a.nll.size(), b.nll.size());
    for (size_t i = 0; i < a.nll.size(); ++i) EXPECT_NEAR(a.nll[i], b.nll[i], 1e-5);
    fs::remove_all(dir);
}

TEST_P(CliModel, ForwardWritesLogitsAndDeltaWithTheDocumentedShapes) {
    auto m = random_model(tiny(GetParam()), 6);
    auto dir = tmpdir("fwd");
    save_model_dir(*m, dir / "model");
    std::vector<int32_t> ids(23);
    std::mt19937 rng(1);
    for (auto& i : ids) i = int32_t(rng() % 40);
    write_ids(dir / "ids.txt", ids);
    ASSERT_EQ(cli("forward --model " + (dir / "model").string() + " --ids " + (dir / "ids.txt").string() +
                  " --dump-delta --chunk 5 --out " + (dir / "out.h5").string()),
              0);
    h5::Reader r(dir / "out.h5");
    std::vector<uint64_t> ls, ds;
    auto logits = r.read_f32("/logits", &ls);
    auto delta = r.read_f32("/delta", &ds);
    EXPECT_EQ(ls, (std::vector<uint64_t>{23, 40}));
    const uint64_t C = uint64_t(m->config.channels());
    EXPECT_EQ(ds, (std::vector<uint64_t>{2, 23, C}));
    // values equal the engine's
    std::vector<float> ref;
    HeadRequest h;
    h.all_logits = true;
    h.logits_sink = [&](int64_t, const float* row, int64_t V) { ref.insert(ref.end(), row, row + V); };
    struct Obs : ScanObserver {
        std::vector<float> d;  // layer-major
        int64_t C = 0;
        void on_delta(const DeltaBlock&, const DeltaBlock& u) override {
            for (int64_t r = 0; r < u.rows; ++r)
                for (int64_t c = 0; c < u.channels; ++c)
                    d[size_t((u.layer * 23 + u.positions[r]) * C + c)] = u.at(r, c);
        }
    } obs;
    obs.C = int64_t(C);
    obs.d.assign(2 * 23 * C, -1.0f);
    ForwardOptions opt;
    opt.observer = &obs;
    run_forward(*m, ids, opt, h);
    ASSERT_EQ(ref.size(), logits.size());
    for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(ref[i], logits[i], 1e-5);
    for (size_t i = 0; i < obs.d.size(); ++i) EXPECT_NEAR(obs.d[i], delta[i], 1e-6);
    fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Archs, CliModel, ::testing::Values(Arch::Mamba1, Arch::Mamba2),
                         [](const auto& i) { return i.param == Arch::Mamba1 ? "Mamba1" : "Mamba2"; });

// generate, greedy (the default): the prompt's last logits' argmax, then a greedy run of max-new − 1 steps
// (Decoder::step_greedy_run), written as the byte tokenizer's text: the same bytes as the engine's own
// prefill + step_greedy loop; --max-new 0 writes an empty line.
TEST_P(CliModel, GenerateGreedyWritesTheDecodersGreedyContinuation) {
    ModelConfig c = tiny(GetParam());
    c.vocab_size = 256;
    auto m = random_model(c, 8);
    auto dir = tmpdir("generate");
    save_model_dir(*m, dir / "model");
    const std::string prompt = "abcab";
    std::vector<int32_t> ids(prompt.begin(), prompt.end());
    ModelState st = make_state(*m);
    std::vector<float> logits;
    HeadRequest head;
    head.logits_positions = {int64_t(ids.size()) - 1};
    head.logits_sink = [&](int64_t, const float* row, int64_t rows) { logits.assign(row, row + rows); };
    run_prefill(*m, ids, st, {}, head);
    std::vector<int32_t> want = {int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin())};
    Decoder d(*m, st);
    while (want.size() < 9) want.push_back(d.step_greedy(want.back(), 256));
    const std::string text = make_byte_tokenizer()->decode(want) + "\n";
    const auto r = test::run_cli("generate --model " + (dir / "model").string() +
                                 " --tokenizer byte --prompt " + prompt + " --max-new 9");
    EXPECT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(r.out, text);
    const auto none = test::run_cli("generate --model " + (dir / "model").string() +
                                    " --tokenizer byte --prompt " + prompt + " --max-new 0");
    EXPECT_EQ(none.rc, 0) << none.err;
    EXPECT_EQ(none.out, "\n");
    fs::remove_all(dir);
}

TEST(CliModelErrors, BadInputsExitNonZeroAndWriteNothing) {
    auto m = random_model(tiny(Arch::Mamba1), 7);
    auto dir = tmpdir("err");
    save_model_dir(*m, dir / "model");
    write_ids(dir / "bad.txt", {1, 2, 400});
    std::ofstream(dir / "junk.txt") << "1 2 three";
    write_ids(dir / "ok.txt", {1, 2, 3});
    const std::string model = " --model " + (dir / "model").string();
    const std::string out = " --out " + (dir / "out.h5").string();
    // runtime errors exit 1, usage errors 2 (docs/cli.md)
    EXPECT_EQ(cli("forward" + model + " --ids " + (dir / "bad.txt").string() + out), 1);   // id out of range
    EXPECT_EQ(cli("forward" + model + " --ids " + (dir / "junk.txt").string() + out), 1);  // not an id
    EXPECT_EQ(cli("forward --model " + (dir / "nope").string() + " --ids " + (dir / "ok.txt").string() + out),
              1);
    EXPECT_EQ(cli("forward" + model + " --ids " + (dir / "ok.txt").string()), 2);  // missing --out
    EXPECT_EQ(cli("forward" + model + " --ids " + (dir / "ok.txt").string() + out + " --bogus"), 2);
    EXPECT_FALSE(fs::exists(dir / "out.h5"));
    for (auto& e : fs::directory_iterator(dir)) EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos);
    EXPECT_EQ(cli("nll" + model + " --ids " + (dir / "ok.txt").string()), 0);
    EXPECT_EQ(cli("info" + model), 0);
    EXPECT_EQ(cli("nosuchcommand"), 2);
    fs::remove_all(dir);
}

// `forward --calibration` applies LongMamba exactly as the engine does (method doc §8.5), with the same
// outputs.
TEST(CliModelLongMamba, ForwardWithCalibrationEqualsTheEnginesFilteredRun) {
    const fs::path res = MAMBASCOPE_RESOURCES_DIR;
    auto dir = tmpdir("lm");
    std::ifstream f(res / "text" / "demo.txt", std::ios::binary);
    std::string text(3000, '\0');
    f.read(text.data(), std::streamsize(text.size()));
    std::vector<int32_t> ids(text.begin(), text.end());
    for (auto& i : ids) i &= 0xff;
    write_ids(dir / "ids.txt", ids);
    const std::string base = "forward --model " + (res / "models" / "demo-mamba1").string() + " --ids " +
                             (dir / "ids.txt").string();
    ASSERT_EQ(cli(base + " --dump-delta --calibration " + (res / "calibration" / "demo-mamba1.h5").string() +
                  " --b 1.0 --out " + (dir / "lm.h5").string()),
              0);
    ASSERT_EQ(cli(base + " --out " + (dir / "vanilla.h5").string()), 0);
    auto model = load_model(res / "models" / "demo-mamba1");
    auto cal = load_calibration(res / "calibration" / "demo-mamba1.h5");
    auto filter = make_longmamba_filter(cal, FilterParams{}, 3000);
    ASSERT_FALSE(filter.empty());
    std::vector<float> want;
    HeadRequest h;
    h.logits_positions = {0, 1500, 2999};
    h.logits_sink = [&](int64_t, const float* row, int64_t V) { want.insert(want.end(), row, row + V); };
    ForwardOptions opt;
    opt.filter = &filter;
    run_forward(*model, ids, opt, h);
    h5::Reader lm(dir / "lm.h5"), van(dir / "vanilla.h5");
    double diff_vanilla = 0;
    for (int i = 0; i < 3; ++i) {
        const uint64_t row = std::vector<uint64_t>{0, 1500, 2999}[size_t(i)];
        auto got = lm.read_rows_f32("/logits", row, 1);
        auto v = van.read_rows_f32("/logits", row, 1);
        for (size_t j = 0; j < got.size(); ++j) {
            EXPECT_NEAR(got[j], want[size_t(i) * 256 + j], 1e-4);
            diff_vanilla = std::max(diff_vanilla, double(std::abs(got[j] - v[j])));
        }
    }
    EXPECT_GT(diff_vanilla, 1e-3);  // filtering changed the long-range prediction
    EXPECT_EQ(h5::get_attr_string(lm.root(), "method"), "longmamba");
    // a global channel has exact zeros in the dumped Δ (filtered tokens), a local one has none
    auto delta = lm.read_f32("/delta");
    const int64_t C = 512;
    int64_t zeros_global = 0, zeros_local = 0;
    for (int64_t l = 0; l < 6; ++l)
        for (int64_t c = 0; c < C; ++c) {
            const bool global = std::isfinite(filter.threshold[size_t(l)][size_t(c)]);
            for (int64_t t = 0; t < 3000; ++t)
                if (delta[size_t((l * 3000 + t) * C + c)] == 0.0f) (global ? zeros_global : zeros_local)++;
        }
    EXPECT_GT(zeros_global, 0);
    EXPECT_EQ(zeros_local, 0);
    fs::remove_all(dir);
}
