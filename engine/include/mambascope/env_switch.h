// env_switch.h: the MAMBASCOPE_* switches of A/B runs and tests (docs/cuda.md, "Switches for A/B runs").
//
// Design decision: one parser for every switch that takes a word, so that all of them treat a value they do
// not know the same way: an Error that names the variable, the values it takes and what it sets. Before, the
// older switches read anything but their one non-default value as the default, so a typo in an A/B run
// (MAMBASCOPE_DECODE_GRAPH=off) silently measured the default twice. Unset or empty is the default. The
// callers read a switch at each call (tests and benchmarks change them within one process) unless they say
// otherwise. Numeric switches (MAMBASCOPE_GEMV_GRID, MAMBASCOPE_M1_TP's shapes) parse their own numbers.
#pragma once

#include <cstdlib>
#include <initializer_list>
#include <string>

#include "mambascope/error.h"

namespace mambascope {

// The value of environment variable `name`, one of `values`; the first of them is the default, returned when
// the variable is unset or empty ("" as a value: the default is "unset", which the caller resolves). `what`
// says what the switch sets and where it is documented; it starts the error's hint.
inline std::string env_choice(const char* name, std::initializer_list<const char*> values,
                              const std::string& what) {
    const char* e = std::getenv(name);
    const std::string v = e ? e : "";
    if (v.empty()) return *values.begin();
    std::string listed;
    for (const char* allowed : values) {
        if (v == allowed) return v;
        listed += (listed.empty() ? "" : ", ") + (*allowed ? std::string(allowed) : std::string("unset"));
    }
    const std::string fallback = **values.begin() ? *values.begin() : "unset";
    throw Error(std::string(name) + "=" + v + " is not one of: " + listed,
                what + "; unset it for the default (" + fallback + ")");
}

// A 0/1 switch whose default (unset or empty) is `fallback`.
inline bool env_flag(const char* name, bool fallback, const std::string& what) {
    return fallback ? env_choice(name, {"1", "0"}, what) == "1" : env_choice(name, {"0", "1"}, what) == "1";
}

}  // namespace mambascope
