// UTF-8 reading and validation (text.h).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "mambascope/error.h"
#include "mambascope/text.h"
#include "cli_runner.h"

namespace fs = std::filesystem;

TEST(Text, FindsFirstInvalidUtf8ByteOffset) {
    EXPECT_EQ(mambascope::find_invalid_utf8("plain ascii"), std::string_view::npos);
    EXPECT_EQ(mambascope::find_invalid_utf8("caf\xC3\xA9 \xF0\x9F\x98\x80"), std::string_view::npos);
    EXPECT_EQ(mambascope::find_invalid_utf8("ab\x80"), 2u);            // stray continuation
    EXPECT_EQ(mambascope::find_invalid_utf8("x\xC0\xAF"), 1u);         // overlong
    EXPECT_EQ(mambascope::find_invalid_utf8("xy\xED\xA0\x80"), 2u);    // surrogate
    EXPECT_EQ(mambascope::find_invalid_utf8("\xF4\x90\x80\x80"), 0u);  // > U+10FFFF
    EXPECT_EQ(mambascope::find_invalid_utf8("abc\xE2\x82"), 3u);       // truncated
}

TEST(Text, ReplaceInvalidSubstitutesMaximalSubparts) {
    EXPECT_EQ(mambascope::replace_invalid_utf8("a\xFF"
                                               "b"),
              "a\xEF\xBF\xBD"
              "b");
    EXPECT_EQ(mambascope::replace_invalid_utf8("a\xE2\x82"
                                               "b"),
              "a\xEF\xBF\xBD"
              "b");  // one U+FFFD for E2 82
    EXPECT_EQ(mambascope::replace_invalid_utf8("caf\xC3\xA9"), "caf\xC3\xA9");
}

TEST(Text, ReadTextFileReportsOffsetOrReplaces) {
    const fs::path p = mambascope::test::fresh_temp_dir("mambascope_text", "invalid") / "invalid.txt";
    {
        std::ofstream out(p, std::ios::binary);
        out << "hello\n\xFEworld";
    }
    try {
        mambascope::read_text_file(p);
        FAIL() << "no error";
    } catch (const mambascope::Error& e) {
        EXPECT_NE(std::string(e.what()).find("byte 6"), std::string::npos) << e.what();
        EXPECT_NE(e.hint().find("replace-invalid"), std::string::npos);
    }
    EXPECT_EQ(mambascope::read_text_file(p, {.replace_invalid = true}), "hello\n\xEF\xBF\xBDworld");
    fs::remove(p);
    EXPECT_THROW(mambascope::read_text_file(p), mambascope::Error);
}
