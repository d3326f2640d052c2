// Tests for config.json parsing (engine/src/io/config.cpp): both checkpoint families, Infinity spellings,
// errors.
#include <gtest/gtest.h>

#include <unistd.h>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "mambascope/config.h"
#include "mambascope/error.h"

using namespace mambascope;

namespace {

// Real state-spaces/mamba-130m-hf/config.json (docs/checkpoints.md §1).
constexpr const char* kHfMamba130m = R"({
  "architectures": ["MambaForCausalLM"], "bos_token_id": 0, "conv_kernel": 4, "d_model": 768,
  "eos_token_id": 0, "expand": 2, "fused_add_norm": true, "hidden_act": "silu", "hidden_size": 768,
  "initializer_range": 0.1, "intermediate_size": 1536, "layer_norm_epsilon": 1e-05, "model_type": "mamba",
  "n_layer": 24, "num_hidden_layers": 24, "pad_token_id": 0, "pad_vocab_size_multiple": 8,
  "rescale_prenorm_residual": false, "residual_in_fp32": true, "rms_norm": true, "ssm_cfg": {},
  "state_size": 16, "time_step_floor": 0.0001, "time_step_init_scheme": "random", "time_step_max": 0.1,
  "time_step_min": 0.001, "time_step_rank": 48, "time_step_scale": 1.0, "torch_dtype": "float32",
  "transformers_version": "4.39.0.dev0", "use_bias": false, "use_cache": true, "use_conv_bias": true,
  "vocab_size": 50280
})";

// Real state-spaces/mamba-130m/config.json (checkpoints.md §2).
constexpr const char* kSsmMamba130m =
    R"({"d_model":768,"n_layer":24,"vocab_size":50277,"ssm_cfg":{},"rms_norm":true,"residual_in_fp32":true,)"
    R"("fused_add_norm":true,"pad_vocab_size_multiple":8})";

// Real state-spaces/mamba2-130m/config.json (checkpoints.md §3).
constexpr const char* kSsmMamba2_130m =
    R"({"d_model":768,"d_intermediate":0,"n_layer":24,"vocab_size":50277,"ssm_cfg":{"layer":"Mamba2"},)"
    R"("attn_layer_idx":[],"attn_cfg":{},"rms_norm":true,"residual_in_fp32":true,"fused_add_norm":true,)"
    R"("pad_vocab_size_multiple":16,"tie_embeddings":true})";

// An HF Mamba2 config (AntonV/mamba2-130m-hf style); %LIMIT% is replaced by an Infinity spelling.
std::string hf_mamba2(const std::string& limit_max) {
    return R"({"model_type": "mamba2", "architectures": ["Mamba2ForCausalLM"], "hidden_size": 768,
      "num_hidden_layers": 24, "vocab_size": 50288, "num_heads": 24, "head_dim": 64, "n_groups": 1,
      "state_size": 128, "expand": 2, "conv_kernel": 4, "layer_norm_epsilon": 1e-05,
      "note": "Infinity and NaN inside strings stay text", "time_step_limit": [0.0, )" +
           limit_max + R"(], "tie_word_embeddings": true})";
}

std::string error_of(const std::string& text) {
    try {
        parse_config_json(text, "config.json");
    } catch (const Error& e) {
        return e.what();
    }
    return "<no error>";
}

}  // namespace

TEST(Config, HfMamba130mMatchesPublishedShapes) {
    const ModelConfig c = parse_config_json(kHfMamba130m, "config.json");
    EXPECT_EQ(c.arch, Arch::Mamba1);
    EXPECT_EQ(c.source_format, "hf");
    EXPECT_EQ(c.d_model, 768);
    EXPECT_EQ(c.n_layer, 24);
    EXPECT_EQ(c.vocab_size, 50280);
    EXPECT_EQ(c.padded_vocab(), 50280);
    EXPECT_EQ(c.d_inner, 1536);
    EXPECT_EQ(c.d_state, 16);
    EXPECT_EQ(c.dt_rank, 48);
    EXPECT_EQ(c.d_conv, 4);
    EXPECT_TRUE(c.tie_embeddings);  // absent → true for mamba
    EXPECT_FALSE(c.use_bias);
    EXPECT_TRUE(c.use_conv_bias);
    EXPECT_DOUBLE_EQ(c.norm_eps, 1e-5);
    EXPECT_EQ(c.in_proj_rows(), 3072);
    EXPECT_EQ(c.channels(), 1536);
    EXPECT_EQ(c.train_len, 2048);
}

TEST(Config, HfMambaDerivesAutoTimeStepRankAndIntermediateSize) {
    const ModelConfig c = parse_config_json(
        R"({"model_type":"mamba","hidden_size":100,"num_hidden_layers":2,"vocab_size":256,"time_step_rank":"auto"})",
        "config.json");
    EXPECT_EQ(c.dt_rank, 7);  // ceil(100/16)
    EXPECT_EQ(c.d_inner, 200);
    EXPECT_EQ(c.d_state, 16);
    EXPECT_EQ(c.pad_vocab_size_multiple, 1);
}

TEST(Config, MambaSsmOriginal130mDerivesHfFields) {
    const ModelConfig c = parse_config_json(kSsmMamba130m, "config.json");
    EXPECT_EQ(c.arch, Arch::Mamba1);
    EXPECT_EQ(c.source_format, "mamba_ssm");
    EXPECT_EQ(c.vocab_size, 50277);
    EXPECT_EQ(c.padded_vocab(), 50280);  // the embedding really has 50280 rows
    EXPECT_EQ(c.d_inner, 1536);
    EXPECT_EQ(c.dt_rank, 48);
    EXPECT_EQ(c.d_state, 16);
    EXPECT_TRUE(c.tie_embeddings);
}

TEST(Config, MambaSsmMamba2OriginalUsesMamba2Defaults) {
    const ModelConfig c = parse_config_json(kSsmMamba2_130m, "config.json");
    EXPECT_EQ(c.arch, Arch::Mamba2);
    EXPECT_EQ(c.d_state, 128);
    EXPECT_EQ(c.head_dim, 64);
    EXPECT_EQ(c.n_heads, 24);
    EXPECT_EQ(c.n_groups, 1);
    EXPECT_EQ(c.padded_vocab(), 50288);
    EXPECT_EQ(c.in_proj_rows(), 3352);  // measured layer-0 shape
    EXPECT_EQ(c.conv_dim(), 1792);
    EXPECT_EQ(c.dt_limit_min, 0.0);
    EXPECT_TRUE(std::isinf(c.dt_limit_max));
}

TEST(Config, MambaSsmCfgOverridesAndDtLimit) {
    const ModelConfig c = parse_config_json(
        R"({"d_model":64,"n_layer":2,"vocab_size":256,"pad_vocab_size_multiple":1,"norm_epsilon":1e-6,
            "ssm_cfg":{"layer":"Mamba2","d_state":16,"headdim":16,"ngroups":2,"expand":2,"dt_limit":[0.001, Infinity]}})",
        "config.json");
    EXPECT_EQ(c.n_heads, 8);
    EXPECT_EQ(c.n_groups, 2);
    EXPECT_EQ(c.d_state, 16);
    EXPECT_DOUBLE_EQ(c.norm_eps, 1e-6);
    EXPECT_DOUBLE_EQ(c.dt_limit_min, 0.001);
    EXPECT_TRUE(std::isinf(c.dt_limit_max));
}

TEST(Config, HfMamba2AcceptsBareInfinityAndFloatObject) {
    for (const std::string spelling : {"Infinity", R"({"__float__": "Infinity"})"}) {
        SCOPED_TRACE(spelling);
        const ModelConfig c = parse_config_json(hf_mamba2(spelling), "config.json");
        EXPECT_EQ(c.arch, Arch::Mamba2);
        EXPECT_EQ(c.source_format, "hf");
        EXPECT_EQ(c.n_heads, 24);
        EXPECT_EQ(c.head_dim, 64);
        EXPECT_EQ(c.d_inner, 1536);
        EXPECT_TRUE(std::isinf(c.dt_limit_max) && c.dt_limit_max > 0);
        EXPECT_TRUE(c.tie_embeddings);
    }
}

TEST(Config, HfMamba2DefaultsToUntiedEmbeddings) {
    const ModelConfig c = parse_config_json(
        R"({"model_type":"mamba2","hidden_size":64,"num_hidden_layers":1,"vocab_size":16,"num_heads":4,"head_dim":32,"n_groups":1})",
        "config.json");
    EXPECT_FALSE(c.tie_embeddings);
    EXPECT_TRUE(std::isinf(c.dt_limit_max));
}

TEST(Config, Mamba2HeadsTimesHeadDimMustEqualInnerWidth) {
    const std::string err = error_of(
        R"({"model_type":"mamba2","hidden_size":64,"num_hidden_layers":1,"vocab_size":16,"num_heads":3,"head_dim":32})");
    EXPECT_NE(err.find("96"), std::string::npos) << err;   // num_heads·head_dim
    EXPECT_NE(err.find("128"), std::string::npos) << err;  // expand·hidden_size
}

TEST(Config, ArchitecturesAloneIdentifiesHfMamba) {
    const ModelConfig c = parse_config_json(
        R"({"architectures":["MambaForCausalLM"],"hidden_size":32,"num_hidden_layers":1,"vocab_size":16})",
        "x");
    EXPECT_EQ(c.arch, Arch::Mamba1);
    EXPECT_EQ(c.source_format, "hf");
}

TEST(Config, MambascopeExtensionSetsTrainLenAndTokenizer) {
    const ModelConfig c = parse_config_json(
        R"({"model_type":"mamba","hidden_size":32,"num_hidden_layers":1,"vocab_size":256,
            "mambascope":{"train_len":512,"tokenizer":"byte"}})",
        "config.json");
    EXPECT_EQ(c.train_len, 512);
    EXPECT_EQ(c.tokenizer, "byte");
}

TEST(Config, UnknownModelTypeListsSupportedOnes) {
    const std::string err = error_of(R"({"model_type":"falcon_mamba","hidden_size":32})");
    EXPECT_NE(err.find("falcon_mamba"), std::string::npos) << err;
    EXPECT_NE(err.find("\"mamba2\""), std::string::npos) << err;
}

TEST(Config, BadJsonReportsLineAndColumn) {
    const std::string err = error_of("{\n  \"model_type\": \"mamba\",\n  \"hidden_size\": 768,,\n}");
    EXPECT_NE(err.find("line 3"), std::string::npos) << err;
    EXPECT_NE(err.find("column 22"), std::string::npos) << err;
}

TEST(Config, BadJsonPositionIgnoresInfinityRewrite) {
    // The rewrite of Infinity into a longer marker string must not shift the reported column.
    const std::string err = error_of("{\"a\": [Infinity, -Infinity], \"b\": ]}");
    EXPECT_NE(err.find("line 1, column 35"), std::string::npos) << err;
}

TEST(Config, HybridMambaSsmModelsAreRefused) {
    EXPECT_NE(error_of(R"({"d_model":64,"n_layer":2,"vocab_size":16,"d_intermediate":256,"ssm_cfg":{}})")
                  .find("hybrid models with MLP/attention layers are not supported"),
              std::string::npos);
    EXPECT_NE(error_of(R"({"d_model":64,"n_layer":2,"vocab_size":16,"attn_layer_idx":[1],"ssm_cfg":{}})")
                  .find("hybrid models with MLP/attention layers are not supported"),
              std::string::npos);
}

TEST(Config, MissingRequiredKeyIsNamed) {
    const std::string err = error_of(R"({"model_type":"mamba","hidden_size":32,"vocab_size":16})");
    EXPECT_NE(err.find("num_hidden_layers"), std::string::npos) << err;
}

TEST(Config, WrongTypeIsNamed) {
    const std::string err =
        error_of(R"({"model_type":"mamba","hidden_size":"768","num_hidden_layers":1,"vocab_size":16})");
    EXPECT_NE(err.find("\"hidden_size\" must be an integer"), std::string::npos) << err;
    EXPECT_NE(
        error_of(
            R"({"model_type":"mamba","hidden_size":32,"num_hidden_layers":1,"vocab_size":16,"use_bias":1})")
            .find("\"use_bias\" must be true or false"),
        std::string::npos);
}

TEST(Config, NonPositiveSizesAreRefused) {
    EXPECT_NE(error_of(R"({"model_type":"mamba","hidden_size":0,"num_hidden_layers":1,"vocab_size":16})")
                  .find("must be positive"),
              std::string::npos);
    EXPECT_NE(error_of(R"({"d_model":64,"n_layer":-2,"vocab_size":16})").find("must be positive"),
              std::string::npos);
}

TEST(Config, UnknownSsmLayerIsRefused) {
    EXPECT_NE(
        error_of(R"({"d_model":64,"n_layer":2,"vocab_size":16,"ssm_cfg":{"layer":"Mamba3"}})").find("Mamba3"),
        std::string::npos);
}

TEST(Config, LoadConfigReadsDirectoryAndNamesMissingFile) {
    const auto dir =
        std::filesystem::temp_directory_path() / ("mambascope_cfg_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    EXPECT_THROW(load_config(dir), Error);
    std::ofstream(dir / "config.json") << kSsmMamba130m;
    EXPECT_EQ(load_config(dir).d_model, 768);
    std::filesystem::remove_all(dir);
}
