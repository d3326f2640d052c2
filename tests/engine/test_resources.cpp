// The shipped demo resources (issue 6): the models load, are what the manifest says (sizes; the sha256 sums
// are checked by tests/python/test_resources_manifest.py), and a short deterministic run gives the recorded
// NLL.
#include <gtest/gtest.h>

#include <cmath>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "mambascope/calibration.h"
#include "mambascope/forward.h"
#include "mambascope/model.h"

using namespace mambascope;
namespace fs = std::filesystem;

namespace {
const fs::path kRes = MAMBASCOPE_RESOURCES_DIR;

nlohmann::json manifest() {
    std::ifstream f(kRes / "MANIFEST.json");
    return nlohmann::json::parse(f);
}
}  // namespace

TEST(DemoResources, ManifestListsEveryFileWithItsSize) {
    auto m = manifest();
    ASSERT_EQ(m["format"], "mambascope-resources");
    size_t n = 0;
    for (auto& [rel, info] : m["files"].items()) {
        ++n;
        ASSERT_TRUE(fs::exists(kRes / rel)) << rel;
        EXPECT_EQ(fs::file_size(kRes / rel), info["bytes"].get<uint64_t>()) << rel;
    }
    EXPECT_GE(n, 8u);
}

TEST(DemoResources, DemoModelsGiveTheRecordedNll) {
    auto m = manifest();
    ASSERT_GE(m["demo_nll"].size(), 2u);
    for (auto& [name, rec] : m["demo_nll"].items()) {
        auto model = load_model(kRes / "models" / name);
        EXPECT_EQ(model->config.tokenizer, "byte");
        EXPECT_EQ(model->config.train_len, name == "demo-mamba2" ? 256 : 1024);  // passkey model: 256 bytes
        std::ifstream f(kRes / rec["text"].get<std::string>(), std::ios::binary);
        std::string text(static_cast<size_t>(rec["tokens"].get<int64_t>()), '\0');
        f.read(text.data(), std::streamsize(text.size()));
        std::vector<int32_t> ids(text.begin(), text.end());
        for (auto& i : ids) i &= 0xff;  // bytes
        HeadRequest head;
        head.nll = true;
        auto res = run_forward(*model, ids, {}, head);
        EXPECT_NEAR(res.mean_nll(), rec["mean_nll"].get<double>(), 1e-4) << name;
        // a uniform guess costs ln 256 = 5.55 nats/byte; the passkey model (trained on whitespace-folded text,
        // weighted towards the answer) is a weaker language model than the LM-only demo-mamba1 (1.35)
        EXPECT_LT(res.mean_nll(), std::log(256.0) - 1.0)
            << name << ": a trained byte model predicts English far better than chance";
    }
}

TEST(DemoResources, CalibrationsMatchTheirModels) {
    for (const char* name : {"demo-mamba1", "demo-mamba2"}) {
        auto model = load_model(kRes / "models" / name);
        auto cal = load_calibration(kRes / "calibration" / (std::string(name) + ".h5"));
        EXPECT_NO_THROW(check_calibration_matches(cal, model->config)) << name;
        EXPECT_EQ(cal.params.train_len, model->config.train_len) << name;
    }
}
