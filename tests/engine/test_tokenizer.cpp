// Tokenizers: exact GPT-NeoX-20B encodings (HF tokenizers 0.23 fixtures), round trips, added tokens, the byte
// tokenizer, the resource lookup and choose_tokenizer.
#include <gtest/gtest.h>

#include <omp.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "mambascope/error.h"
#include "mambascope/resources.h"
#include "mambascope/text.h"
#include "mambascope/tokenizer.h"
#include "cli_runner.h"

namespace fs = std::filesystem;
using mambascope::Tokenizer;

namespace {

const Tokenizer& neox() {
    static const auto tok = mambascope::load_tokenizer_json(fs::path(MAMBASCOPE_RESOURCES_DIR) / "tokenizer" /
                                                            "gpt-neox-20b.json");
    return *tok;
}

std::vector<int32_t> ids(std::initializer_list<int32_t> l) {
    return std::vector<int32_t>(l);
}

}  // namespace

TEST(Tokenizer, GptNeoxReferenceEncodingsFromDataReadme) {
    EXPECT_EQ(neox().encode("Hello world"), ids({12092, 1533}));
    EXPECT_EQ(neox().encode("Hey how are you doing?"), ids({8262, 849, 403, 368, 2509, 32}));
    EXPECT_EQ(neox().encode("<|endoftext|>The quick brown fox"), ids({0, 510, 3158, 8516, 30013}));
    EXPECT_EQ(neox().encode("    indented code\n\tx = 1"),
              ids({50274, 527, 8006, 2127, 187, 186, 89, 426, 337}));
    EXPECT_EQ(neox().vocab_size(), 50277);
}

TEST(Tokenizer, GptNeoxMatchesEveryHfFixtureExactly) {
    std::ifstream in(fs::path(MAMBASCOPE_TEST_DATA_DIR) / "tokenizer" / "fixtures.json");
    ASSERT_TRUE(in);
    const auto cases = nlohmann::json::parse(in);
    ASSERT_GE(cases.size(), 4u);
    for (const auto& c : cases) {
        const auto text = c.at("text").get<std::string>();
        const auto want = c.at("ids").get<std::vector<int32_t>>();
        std::vector<int64_t> offsets;
        const auto got = neox().encode_with_offsets(text, offsets);
        EXPECT_EQ(got, want) << "text: " << text;
        ASSERT_EQ(offsets.size(), got.size());
        for (size_t i = 1; i < offsets.size(); ++i) EXPECT_LE(offsets[i - 1], offsets[i]) << text;
        // Offsets point into the input, and decoding reproduces the input up to NFC.
        for (const auto o : offsets) EXPECT_LE(o, static_cast<int64_t>(text.size()));
        if (text.find("e\xCC\x81") == std::string::npos) {
            EXPECT_EQ(neox().decode(got), text) << "text: " << text;
        }
    }
}

TEST(Tokenizer, EmptyInputGivesNoTokens) {
    EXPECT_TRUE(neox().encode("").empty());
    EXPECT_TRUE(mambascope::make_byte_tokenizer()->encode("").empty());
    EXPECT_EQ(neox().decode({}), "");
}

TEST(Tokenizer, OffsetsAreByteOffsetsOfTokenStarts) {
    std::vector<int64_t> offsets;
    const auto got = neox().encode_with_offsets("Hello world", offsets);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(offsets, (std::vector<int64_t>{0, 5}));
    // "é" is 2 bytes, so " x" starts at byte 5 of "café x".
    const auto got2 = neox().encode_with_offsets("caf\xC3\xA9 x", offsets);
    EXPECT_EQ(offsets.back(), 5);
    (void)got2;
}

TEST(Tokenizer, AddedTokensMatchInsideTextAndSpaceRunsUseLongestToken) {
    EXPECT_EQ(neox().encode("a<|endoftext|>b"), ids({66, 0, 67}));
    EXPECT_EQ(neox().encode("<|padding|>"), ids({1}));
    // 24 spaces is the longest space token (50254); 25 spaces → 50254 then " x".
    EXPECT_EQ(neox().encode(std::string(24, ' ')), ids({50254}));
    const auto t = neox().encode(std::string(25, ' ') + "x");
    ASSERT_EQ(t.size(), 2u);
    EXPECT_EQ(t[0], 50254);
    EXPECT_EQ(neox().token_text(0), "<|endoftext|>");
    EXPECT_EQ(neox().token_text(50276), "  ");
}

TEST(Tokenizer, NfcNormalisesCombiningMarks) {
    // "e" + U+0301 encodes like precomposed "é".
    EXPECT_EQ(neox().encode("caf"
                            "e\xCC\x81"),
              neox().encode("caf\xC3\xA9"));
}

TEST(Tokenizer, InvalidUtf8IsAnErrorNamingTheOffset) {
    try {
        neox().encode(
            std::string("ab\xFF"
                        "cd"));
        FAIL() << "no error";
    } catch (const mambascope::Error& e) {
        EXPECT_NE(std::string(e.what()).find("byte 2"), std::string::npos) << e.what();
    }
}

TEST(Tokenizer, UnknownIdIsAnError) {
    EXPECT_THROW(neox().decode({50277}), mambascope::Error);
    EXPECT_THROW(neox().decode({-1}), mambascope::Error);
    EXPECT_THROW(mambascope::make_byte_tokenizer()->decode({256}), mambascope::Error);
}

TEST(Tokenizer, RoundTripsEmmaExcerptAndLongRepeats) {
    const std::string text =
        mambascope::read_text_file(fs::path(MAMBASCOPE_TEST_DATA_DIR) / "text" / "emma_200k.txt");
    const auto t = neox().encode(text);
    EXPECT_GT(t.size(), 30000u);
    EXPECT_LT(t.size(), text.size() / 2);
    EXPECT_EQ(neox().decode(t), text);
    // A long single pre-token (no quadratic blow-up, exact bytes back).
    const std::string run(20000, '=');
    EXPECT_EQ(neox().decode(neox().encode(run)), run);
}

TEST(Tokenizer, ParallelBlocksGiveTheSameIdsAsSmallPieces) {
    // > 1 MB triggers the block-parallel path; each line encoded on its own must agree.
    std::string line = "Emma Woodhouse, handsome, clever, and rich 123.\n";
    std::string big;
    while (big.size() < (size_t(3) << 20)) big += line;
    std::vector<int64_t> offsets;
    const auto all = neox().encode_with_offsets(big, offsets);
    const auto one = neox().encode(line);
    ASSERT_EQ(all.size() % one.size(), 0u);
    for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], one[i % one.size()]) << i;
    EXPECT_EQ(offsets[one.size()], static_cast<int64_t>(line.size()));
    EXPECT_EQ(offsets.back(), static_cast<int64_t>(big.size() - line.size()) +
                                  (static_cast<int64_t>(line.size()) - 1));  // the final "\n"
}

TEST(Tokenizer, FullCorpusRoundTripsWhenSharedDataPresent) {
    const fs::path dir = fs::path(MAMBASCOPE_TEST_DATA_DIR) / ".." / ".." / ".." / "shared" / "data" /
                         "corpus" / "eval";  // ../shared beside the checkout
    if (!fs::exists(dir / "emma.txt")) GTEST_SKIP() << "shared corpus not present";
    for (const char* f : {"emma.txt", "mansfieldpark.txt"}) {
        const auto text = mambascope::read_text_file(dir / f);
        const auto t = neox().encode(text);
        EXPECT_EQ(neox().decode(t), text) << f;
        EXPECT_GT(t.size(), 150000u) << f;  // data README: ~220k tokens each
        EXPECT_LT(t.size(), 300000u) << f;
    }
}

TEST(ByteTokenizer, IdIsByteValueAndDecodesToBytes) {
    const auto tok = mambascope::make_byte_tokenizer();
    const std::string s = "A\xC3\xA9\n";
    EXPECT_EQ(tok->encode(s), ids({65, 0xC3, 0xA9, 10}));
    EXPECT_EQ(tok->decode(tok->encode(s)), s);
    EXPECT_EQ(tok->vocab_size(), 256);
    EXPECT_EQ(tok->name(), "byte");
}

TEST(ByteTokenizer, SpecialTokensFromConfigAreMatchedFirst) {
    const auto tok = mambascope::make_byte_tokenizer({{"<eos>", 256}});
    EXPECT_EQ(tok->encode("a<eos>b"), ids({97, 256, 98}));
    EXPECT_EQ(tok->decode({97, 256}), "a<eos>");
    EXPECT_EQ(tok->vocab_size(), 257);
}

TEST(TokenizerFactory, BuiltinIsFoundViaResourcesAndChooseTokenizerPrefersModelDir) {
    EXPECT_TRUE(fs::exists(mambascope::find_resource("tokenizer/gpt-neox-20b.json")));
    EXPECT_THROW(mambascope::find_resource("no/such/file"), mambascope::Error);
    EXPECT_EQ(mambascope::builtin_gpt_neox_tokenizer()->encode("Hello world"), ids({12092, 1533}));
    EXPECT_EQ(
        mambascope::choose_tokenizer(fs::path(MAMBASCOPE_RESOURCES_DIR) / "models" / "demo-mamba1", "byte")
            ->name(),
        "byte");
    EXPECT_EQ(mambascope::choose_tokenizer("", "")->vocab_size(), 50277);
    // A model dir with its own tokenizer.json wins over the hint.
    const fs::path dir = mambascope::test::fresh_temp_dir("mambascope_tok", "choose");
    fs::copy_file(fs::path(MAMBASCOPE_RESOURCES_DIR) / "tokenizer" / "gpt-neox-20b.json",
                  dir / "tokenizer.json", fs::copy_options::overwrite_existing);
    EXPECT_EQ(mambascope::choose_tokenizer(dir, "byte")->name(), "tokenizer.json");
    fs::remove_all(dir);
}

TEST(Tokenizer, ParallelEncodingOfParagraphTextIsIdenticalToSerial) {
    // Paragraph breaks ("\n\n") and indented lines must not be cut: compare 1 thread with 2 threads.
    const std::string emma =
        mambascope::read_text_file(fs::path(MAMBASCOPE_TEST_DATA_DIR) / "text" / "emma_200k.txt");
    std::string doubled;  // every line break doubled: each candidate cut follows "\n\n"
    for (const char c : emma) doubled += c == '\n' ? std::string("\n\n") : std::string(1, c);
    std::string big;
    for (int i = 0; i < 6; ++i) big += doubled + "\n\n  Chapter " + std::to_string(i) + "\n";
    ASSERT_GT(big.size(), size_t(1) << 20);  // above the parallel threshold
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    std::vector<int64_t> serial_offsets, parallel_offsets;
    const auto serial = neox().encode_with_offsets(big, serial_offsets);
    omp_set_num_threads(2);
    const auto parallel = neox().encode_with_offsets(big, parallel_offsets);
    omp_set_num_threads(threads);
    EXPECT_EQ(serial, parallel);
    EXPECT_EQ(serial_offsets, parallel_offsets);
    EXPECT_EQ(neox().decode(parallel), big);
}

TEST(Tokenizer, AddedTokenFlagsLstripRstripSingleWordAreHonoured) {
    // A tiny byte-level BPE: bytes a b [ w ] < x > and space (Ġ), one merge "a b".
    const nlohmann::json j = {{"normalizer", nullptr},
                              {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
                              {"decoder", {{"type", "ByteLevel"}}},
                              {"added_tokens",
                               {{{"id", 20},
                                 {"content", "<x>"},
                                 {"special", true},
                                 {"lstrip", true},
                                 {"rstrip", false},
                                 {"single_word", false},
                                 {"normalized", false}},
                                {{"id", 21},
                                 {"content", "<y>"},
                                 {"special", true},
                                 {"lstrip", false},
                                 {"rstrip", true},
                                 {"single_word", false},
                                 {"normalized", false}},
                                {{"id", 22},
                                 {"content", "w"},
                                 {"special", false},
                                 {"lstrip", false},
                                 {"rstrip", false},
                                 {"single_word", true},
                                 {"normalized", false}}}},
                              {"model",
                               {{"type", "BPE"},
                                {"vocab",
                                 {{"a", 0},
                                  {"b", 1},
                                  {"[", 2},
                                  {"w", 3},
                                  {"]", 4},
                                  {"<", 5},
                                  {"x", 6},
                                  {">", 7},
                                  {"\xC4\xA0", 8},
                                  {"ab", 9}}},
                                {"merges", {"a b"}}}}};
    const fs::path p = mambascope::test::fresh_temp_dir("mambascope_tok", "tiny") / "tokenizer.json";
    std::ofstream(p) << j.dump();
    const auto tok = mambascope::load_tokenizer_json(p);
    EXPECT_EQ(tok->encode("ab"), ids({9}));
    EXPECT_EQ(tok->encode("a  <x>b"), ids({0, 20, 1}));      // lstrip eats the spaces before
    EXPECT_EQ(tok->encode("a<y>  b"), ids({0, 21, 1}));      // rstrip eats the spaces after
    EXPECT_EQ(tok->encode("a w b"), ids({0, 8, 22, 8, 1}));  // single word: matched
    EXPECT_EQ(tok->encode("[w]"), ids({2, 22, 4}));          // punctuation is not a word character
    EXPECT_EQ(tok->encode("awb"), ids({0, 3, 1}));           // inside a word: not matched
    EXPECT_EQ(tok->vocab_size(), 23);
    fs::remove(p);
}
