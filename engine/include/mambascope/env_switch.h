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
#include <utility>
#include <vector>

#include "mambascope/error.h"

namespace mambascope {

namespace detail {
inline std::string env_choice_of(const char* name, const std::vector<const char*>& values,
                                 const std::string& what) {
    const char* e = std::getenv(name);
    const std::string v = e ? e : "";
    if (v.empty()) return values.front();
    std::string listed;
    for (const char* allowed : values) {
        if (v == allowed) return v;
        listed += (listed.empty() ? "" : ", ") + (*allowed ? std::string(allowed) : std::string("unset"));
    }
    const std::string fallback = *values.front() ? values.front() : "unset";
    throw Error(std::string(name) + "=" + v + " is not one of: " + listed,
                what + "; unset it for the default (" + fallback + ")");
}
}  // namespace detail

// The value of environment variable `name`, one of `values`; the first of them is the default, returned when
// the variable is unset or empty ("" as a value: the default is "unset", which the caller resolves). `what`
// says what the switch sets and where it is documented; it starts the error's hint.
inline std::string env_choice(const char* name, std::initializer_list<const char*> values,
                              const std::string& what) {
    return detail::env_choice_of(name, std::vector<const char*>(values), what);
}

// The same switch read straight into what each word stands for: `choices` pairs each accepted word with its
// value (several words may share one, e.g. "0" and "off"), the first pair is the default. One table instead
// of env_choice plus a chain of string comparisons at every caller.
template <typename T>
T env_enum(const char* name, std::initializer_list<std::pair<const char*, T>> choices,
           const std::string& what) {
    std::vector<const char*> words;
    for (const auto& c : choices) words.push_back(c.first);
    const std::string v = detail::env_choice_of(name, words, what);
    for (const auto& c : choices)
        if (v == c.first) return c.second;
    return choices.begin()->second;  // not reached: env_choice_of returned one of the words
}

// A 0/1 switch whose default (unset or empty) is `fallback`.
inline bool env_flag(const char* name, bool fallback, const std::string& what) {
    return fallback ? env_choice(name, {"1", "0"}, what) == "1" : env_choice(name, {"0", "1"}, what) == "1";
}

}  // namespace mambascope
