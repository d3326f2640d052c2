// error.h: the one exception type of the engine.
//
// Every failure a user can cause (a bad file, a wrong shape, an out-of-range id, NaN weights) is reported as
// a mambascope::Error whose message says what failed and where, plus a hint that says what the user can do.
// Front ends print `what()` and `hint()`; they never see a crash. Cancellation is a distinct subtype so that
// callers can tell "the user stopped it" from "it failed".
#pragma once

#include <stdexcept>
#include <string>

namespace mambascope {

class Error : public std::runtime_error {
  public:
    explicit Error(const std::string& what, std::string hint = {})
        : std::runtime_error(what), hint_(std::move(hint)) {}
    const std::string& hint() const noexcept { return hint_; }

  private:
    std::string hint_;
};

// Thrown when a progress callback asks to stop. Nothing half-written is left behind by the thrower.
class Cancelled : public Error {
  public:
    Cancelled() : Error("cancelled by the user") {}
};

// Full message for display: "what (hint)".
inline std::string describe(const Error& e) {
    return e.hint().empty() ? std::string(e.what()) : std::string(e.what()) + "\n  hint: " + e.hint();
}

}  // namespace mambascope

// Shape and argument checks at the top of compute functions. The message is built only on failure.
#define MS_CHECK(cond, msg)                                                                                 \
    do {                                                                                                    \
        if (!(cond))                                                                                        \
            throw ::mambascope::Error(std::string(msg) + " [" + __FILE__ + ":" + std::to_string(__LINE__) + \
                                      "]");                                                                 \
    } while (0)
