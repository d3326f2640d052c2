// mambascope-cli tokenize / detokenize / generate and --text input (issue 3 CLI contract).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "mambascope/forward.h"
#include "mambascope/model.h"
#include "mambascope/tokenizer.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

fs::path tmpdir(const std::string& name) {
    auto d = fs::temp_directory_path() / ("mambascope_tokcli_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

int cli(const std::string& args, const fs::path& stdout_file = "/dev/null") {
    const std::string cmd =
        std::string(MAMBASCOPE_CLI_PATH) + " " + args + " > " + stdout_file.string() + " 2>/dev/null";
    const int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

}  // namespace

TEST(TokenizeCli, TokenizeThenDetokenizeRoundTripsWithBuiltinAndByte) {
    const auto d = tmpdir("rt");
    const std::string text = "Hello world\n    indented code\n\tx = 1 caf\xC3\xA9 <|endoftext|>";
    std::ofstream(d / "in.txt", std::ios::binary) << text;
    ASSERT_EQ(cli("tokenize --text " + (d / "in.txt").string() + " --out " + (d / "ids.txt").string()), 0);
    std::istringstream ids_in(slurp(d / "ids.txt"));
    std::vector<int32_t> ids;
    for (int32_t v; ids_in >> v;) ids.push_back(v);
    EXPECT_EQ(ids, builtin_gpt_neox_tokenizer()->encode(text));
    EXPECT_EQ(ids.front(), 12092);
    ASSERT_EQ(cli("detokenize --ids " + (d / "ids.txt").string() + " --out " + (d / "back.txt").string()), 0);
    EXPECT_EQ(slurp(d / "back.txt"), text);

    ASSERT_EQ(cli("tokenize --tokenizer byte --text " + (d / "in.txt").string() + " --out " +
                  (d / "b.txt").string()),
              0);
    ASSERT_EQ(cli("detokenize --tokenizer byte --ids " + (d / "b.txt").string() + " --out " +
                  (d / "bb.txt").string()),
              0);
    EXPECT_EQ(slurp(d / "bb.txt"), text);
    fs::remove_all(d);
}

TEST(TokenizeCli, InvalidUtf8FailsUnlessReplaceInvalid) {
    const auto d = tmpdir("bad");
    std::ofstream(d / "bad.txt", std::ios::binary) << "ok\xFF";
    EXPECT_NE(cli("tokenize --text " + (d / "bad.txt").string() + " --out " + (d / "ids.txt").string()), 0);
    EXPECT_FALSE(fs::exists(d / "ids.txt"));
    EXPECT_EQ(cli("tokenize --replace-invalid --text " + (d / "bad.txt").string() + " --out " +
                  (d / "ids.txt").string()),
              0);
    EXPECT_TRUE(fs::exists(d / "ids.txt"));
    fs::remove_all(d);
}

TEST(GenerateCli, GreedyIsDeterministicAndEqualsManualArgmaxLoop) {
    const fs::path model_dir = fs::path(MAMBASCOPE_RESOURCES_DIR) / "models" / "demo-mamba1";
    const auto d = tmpdir("gen");
    const int max_new = 24;
    const std::string args = "generate --model " + model_dir.string() +
                             " --prompt 'It was a truth ' --max-new " + std::to_string(max_new);
    ASSERT_EQ(cli(args, d / "a.txt"), 0);
    ASSERT_EQ(cli(args, d / "b.txt"), 0);
    const std::string got = slurp(d / "a.txt");
    EXPECT_EQ(got, slurp(d / "b.txt"));

    const auto model = load_model(model_dir);
    const auto tok = make_byte_tokenizer();
    const auto ids = tok->encode("It was a truth ");
    ModelState state = make_state(*model);
    std::vector<float> logits;
    HeadRequest head;
    head.logits_positions = {static_cast<int64_t>(ids.size()) - 1};
    head.logits_sink = [&](int64_t, const float* row, int64_t rows) { logits.assign(row, row + rows); };
    run_prefill(*model, ids, state, {}, head);
    std::vector<int32_t> out;
    for (int i = 0; i < max_new; ++i) {
        const auto next =
            static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + 256) - logits.begin());
        out.push_back(next);
        decode_step(*model, next, state, logits);
    }
    EXPECT_EQ(got, tok->decode(out) + "\n");
    // Sampling with a seed is reproducible too.
    const std::string sargs = args + " --temperature 0.8 --top-k 20 --seed 7";
    ASSERT_EQ(cli(sargs, d / "s1.txt"), 0);
    ASSERT_EQ(cli(sargs, d / "s2.txt"), 0);
    EXPECT_EQ(slurp(d / "s1.txt"), slurp(d / "s2.txt"));
    fs::remove_all(d);
}

TEST(TextInputCli, NllAcceptsTextWithTheModelsTokenizer) {
    const fs::path model_dir = fs::path(MAMBASCOPE_RESOURCES_DIR) / "models" / "demo-mamba1";
    const auto d = tmpdir("nlltext");
    const std::string text = "It is a truth universally acknowledged.";
    std::ofstream(d / "t.txt", std::ios::binary) << text;
    std::ofstream ids(d / "ids.txt");
    for (const auto id : make_byte_tokenizer()->encode(text)) ids << id << ' ';
    ids.close();
    ASSERT_EQ(cli("nll --model " + model_dir.string() + " --text " + (d / "t.txt").string(), d / "a.txt"), 0);
    ASSERT_EQ(cli("nll --model " + model_dir.string() + " --ids " + (d / "ids.txt").string(), d / "b.txt"),
              0);
    const auto nll_line = [](const std::string& out) {
        const auto p = out.find("mean_nll:");
        return p == std::string::npos ? std::string() : out.substr(p, out.find('\n', p) - p);
    };
    EXPECT_FALSE(nll_line(slurp(d / "a.txt")).empty());
    EXPECT_EQ(nll_line(slurp(d / "a.txt")), nll_line(slurp(d / "b.txt")));
    fs::remove_all(d);
}
