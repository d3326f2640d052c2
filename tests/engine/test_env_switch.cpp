// The MAMBASCOPE_* switch parser (env_switch.h): the default when unset or empty, the listed values as given,
// and an Error naming the variable, the value and the accepted values for anything else.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "mambascope/env_switch.h"

namespace {

constexpr const char* kVar = "MAMBASCOPE_TEST_ENV_SWITCH";

struct Unset {
    Unset() { unsetenv(kVar); }
    ~Unset() { unsetenv(kVar); }
};

std::string set_and_fail(const char* value, bool flag_default) {
    setenv(kVar, value, 1);
    try {
        (void)mambascope::env_flag(kVar, flag_default, "it sets a test switch");
    } catch (const mambascope::Error& e) {
        return std::string(e.what()) + " | " + e.hint();
    }
    return "no error";
}

}  // namespace

TEST(EnvSwitch, UnsetOrEmptyIsTheFirstValueAndListedValuesAreReturned) {
    const Unset guard;
    EXPECT_EQ(mambascope::env_choice(kVar, {"auto", "launch", "0"}, "x"), "auto");
    setenv(kVar, "", 1);
    EXPECT_EQ(mambascope::env_choice(kVar, {"auto", "launch", "0"}, "x"), "auto");
    setenv(kVar, "launch", 1);
    EXPECT_EQ(mambascope::env_choice(kVar, {"auto", "launch", "0"}, "x"), "launch");
    setenv(kVar, "0", 1);
    EXPECT_EQ(mambascope::env_choice(kVar, {"", "0", "1"}, "x"), "0");
    unsetenv(kVar);
    EXPECT_EQ(mambascope::env_choice(kVar, {"", "0", "1"}, "x"), "");
}

TEST(EnvSwitch, FlagsTakeTheirDefaultUnsetAndZeroOrOneWhenSet) {
    const Unset guard;
    EXPECT_TRUE(mambascope::env_flag(kVar, true, "x"));
    EXPECT_FALSE(mambascope::env_flag(kVar, false, "x"));
    setenv(kVar, "0", 1);
    EXPECT_FALSE(mambascope::env_flag(kVar, true, "x"));
    setenv(kVar, "1", 1);
    EXPECT_TRUE(mambascope::env_flag(kVar, false, "x"));
}

// env_enum: each word gives the value paired with it (two words may share one), unset or empty the first
// pair's, and an unknown word env_choice's error.
TEST(EnvSwitch, EnumSwitchesReturnTheValuePairedWithTheWord) {
    const Unset guard;
    enum class Mode { Auto, Launch, Off };
    auto read = [] {
        return mambascope::env_enum<Mode>(
            kVar, {{"auto", Mode::Auto}, {"launch", Mode::Launch}, {"0", Mode::Off}, {"off", Mode::Off}},
            "it sets a test switch");
    };
    EXPECT_EQ(read(), Mode::Auto);
    setenv(kVar, "", 1);
    EXPECT_EQ(read(), Mode::Auto);
    setenv(kVar, "launch", 1);
    EXPECT_EQ(read(), Mode::Launch);
    setenv(kVar, "0", 1);
    EXPECT_EQ(read(), Mode::Off);
    setenv(kVar, "off", 1);
    EXPECT_EQ(read(), Mode::Off);
    setenv(kVar, "exit", 1);
    try {
        (void)read();
        ADD_FAILURE() << "no error for an unknown word";
    } catch (const mambascope::Error& e) {
        EXPECT_NE(std::string(e.what()).find("=exit is not one of: auto, launch, 0, off"), std::string::npos)
            << e.what();
    }
    unsetenv(kVar);
    EXPECT_EQ(mambascope::env_enum<int>(kVar, {{"", 8}, {"0", 0}, {"16", 16}}, "x"), 8);
    setenv(kVar, "16", 1);
    EXPECT_EQ(mambascope::env_enum<int>(kVar, {{"", 8}, {"0", 0}, {"16", 16}}, "x"), 16);
}

// What the older switches read as their default before (MAMBASCOPE_DECODE_GRAPH=off was "on").
TEST(EnvSwitch, AnUnknownValueIsAnErrorThatNamesTheVariableTheValueAndTheChoices) {
    const Unset guard;
    for (const char* bad : {"off", "yes", "true", "2", " 1", "1 "}) {
        const std::string m = set_and_fail(bad, true);
        EXPECT_NE(m.find(std::string(kVar) + "=" + bad + " is not one of: 1, 0"), std::string::npos) << m;
        EXPECT_NE(m.find("it sets a test switch; unset it for the default (1)"), std::string::npos) << m;
    }
    EXPECT_NE(set_and_fail("on", false)
                  .find("is not one of: 0, 1 | it sets a test switch; unset it for the "
                        "default (0)"),
              std::string::npos);
    setenv(kVar, "legacy2", 1);
    try {
        (void)mambascope::env_choice(kVar, {"", "legacy"}, "it selects a test kernel");
        FAIL() << "no error";
    } catch (const mambascope::Error& e) {
        EXPECT_NE(std::string(e.what()).find("is not one of: unset, legacy"), std::string::npos) << e.what();
        EXPECT_NE(e.hint().find("unset it for the default (unset)"), std::string::npos) << e.hint();
    }
}
