// `mambascope-cli calibrate` end to end on a tiny Mamba-2 checkpoint written by the test (config.json +
// model.safetensors): the file it writes loads, matches the engine's calibrate(), and bad options fail
// cleanly.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "mambascope/calibration.h"
#include "mambascope/model.h"
#include "nlohmann/json.hpp"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {

struct F32Tensor {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> values;
};

void write_safetensors(const fs::path& p, const std::vector<F32Tensor>& ts) {
    nlohmann::json h = nlohmann::json::object();
    std::string data;
    for (const auto& t : ts) {
        const size_t bytes = t.values.size() * 4;
        h[t.name] = {
            {"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + bytes}}};
        data.append(reinterpret_cast<const char*>(t.values.data()), bytes);
    }
    std::string header = h.dump();
    while ((8 + header.size()) % 8 != 0) header += ' ';
    std::string out(8, '\0');
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
    std::ofstream(p, std::ios::binary) << out << header << data;
}

// Tiny HF-style Mamba-2: D 16, 2 layers, E 32 = 4 heads × 8, N 4, 1 group, K 4, vocab 32, train_len 64.
fs::path write_tiny_mamba2(const fs::path& dir) {
    fs::create_directories(dir);
    const int64_t D = 16, L = 2, E = 32, H = 4, N = 4, G = 1, K = 4, V = 32;
    nlohmann::json cfg = {{"model_type", "mamba2"},
                          {"hidden_size", D},
                          {"num_hidden_layers", L},
                          {"vocab_size", V},
                          {"state_size", N},
                          {"num_heads", H},
                          {"head_dim", E / H},
                          {"n_groups", G},
                          {"expand", 2},
                          {"conv_kernel", K},
                          {"tie_word_embeddings", true},
                          {"mambascope", {{"train_len", 64}}}};
    std::ofstream(dir / "config.json") << cfg.dump(2);
    std::mt19937 rng(3);
    auto randn = [&](std::vector<int64_t> shape, float scale) {
        int64_t n = 1;
        for (int64_t d : shape) n *= d;
        std::normal_distribution<float> nd(0, scale);
        F32Tensor t{"", shape, std::vector<float>(static_cast<size_t>(n))};
        for (float& x : t.values) x = nd(rng);
        return t;
    };
    auto named = [](F32Tensor t, std::string name) {
        t.name = std::move(name);
        return t;
    };
    auto fill = [](std::string name, std::vector<int64_t> shape, float v) {
        int64_t n = 1;
        for (int64_t d : shape) n *= d;
        return F32Tensor{std::move(name), shape, std::vector<float>(static_cast<size_t>(n), v)};
    };
    const int64_t conv_dim = E + 2 * G * N, rows = 2 * E + 2 * G * N + H;
    std::vector<F32Tensor> ts;
    ts.push_back(named(randn({V, D}, 0.5f), "backbone.embeddings.weight"));
    ts.push_back(fill("backbone.norm_f.weight", {D}, 1.0f));
    for (int64_t i = 0; i < L; ++i) {
        const std::string p = "backbone.layers." + std::to_string(i) + ".";
        ts.push_back(fill(p + "norm.weight", {D}, 1.0f));
        ts.push_back(named(randn({rows, D}, 0.25f), p + "mixer.in_proj.weight"));
        ts.push_back(named(randn({conv_dim, 1, K}, 0.5f), p + "mixer.conv1d.weight"));
        ts.push_back(named(randn({conv_dim}, 0.1f), p + "mixer.conv1d.bias"));
        ts.push_back(named(randn({D, E}, 0.2f), p + "mixer.out_proj.weight"));
        ts.push_back(named(randn({H}, 0.5f), p + "mixer.dt_bias"));
        F32Tensor alog = fill(p + "mixer.A_log", {H}, 0.0f);
        for (int64_t h = 0; h < H; ++h) alog.values[static_cast<size_t>(h)] = std::log(0.5f + 2.0f * h);
        ts.push_back(alog);
        ts.push_back(fill(p + "mixer.D", {H}, 1.0f));
        ts.push_back(fill(p + "mixer.norm.weight", {E}, 1.0f));
    }
    write_safetensors(dir / "model.safetensors", ts);
    return dir;
}

int run_cli(const std::string& args) {
    const std::string cmd = std::string(MAMBASCOPE_CLI_PATH) + " " + args + " > /dev/null 2>&1";
    const int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace

TEST(CalibrateCli, WritesACalibrationEqualToTheEngines) {
    const fs::path dir = fs::temp_directory_path() / ("mambascope_calcli_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    const fs::path model_dir = write_tiny_mamba2(dir / "model");
    std::vector<int32_t> ids(400);
    std::mt19937 rng(4);
    for (auto& i : ids) i = static_cast<int32_t>(rng() % 32);
    {
        std::ofstream f(dir / "ids.txt");
        for (int32_t i : ids) f << i << ' ';
    }
    const fs::path out = dir / "cal.h5";
    ASSERT_EQ(run_cli("calibrate --model " + model_dir.string() + " --ids " + (dir / "ids.txt").string() +
                      " --samples 3 --lengths 64,128,256 --aggregate max --out " + out.string()),
              0);
    const Calibration cal = load_calibration(out);
    EXPECT_EQ(cal.n_layer, 2);
    EXPECT_EQ(cal.channels, 4);
    EXPECT_EQ(cal.params.train_len, 64);  // the model's train_len
    EXPECT_EQ(cal.samples_used, 3);
    EXPECT_EQ(cal.params.aggregate, Aggregate::Max);
    EXPECT_EQ(cal.lengths, (std::vector<int64_t>{64, 128, 256}));

    auto m = load_model(model_dir);
    CalibrationParams p;
    p.samples = 3;
    p.lengths = {64, 128, 256};
    p.aggregate = Aggregate::Max;
    const Calibration ref = calibrate(*m, ids, p);
    EXPECT_EQ(cal.thresholds, ref.thresholds);
    EXPECT_EQ(cal.log_decay, ref.log_decay);

    // --device auto: the same calibration (on a machine without a GPU it falls back to the CPU)
    const fs::path out_auto = dir / "cal_auto.h5";
    ASSERT_EQ(
        run_cli("calibrate --model " + model_dir.string() + " --ids " + (dir / "ids.txt").string() +
                " --samples 3 --lengths 64,128,256 --aggregate max --device auto --out " + out_auto.string()),
        0);
    const Calibration cal_auto = load_calibration(out_auto);
    ASSERT_EQ(cal_auto.log_decay.size(), ref.log_decay.size());
    for (size_t i = 0; i < ref.log_decay.size(); ++i)
        EXPECT_NEAR(cal_auto.log_decay[i], ref.log_decay[i], 1e-4);

    // a bad option value is a usage error (exit 2), a stream that is too short a runtime error (exit 1);
    // neither leaves a file behind
    const fs::path bad = dir / "bad.h5";
    EXPECT_EQ(run_cli("calibrate --model " + model_dir.string() + " --ids " + (dir / "ids.txt").string() +
                      " --aggregate median --out " + bad.string()),
              2);
    EXPECT_EQ(run_cli("calibrate --model " + model_dir.string() + " --ids " + (dir / "ids.txt").string() +
                      " --train-len 1000 --out " + bad.string()),
              1);
    EXPECT_FALSE(fs::exists(bad));
    fs::remove_all(dir);
}
