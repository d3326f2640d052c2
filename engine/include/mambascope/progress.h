// progress.h: how long engine jobs report progress and learn that the user wants them to stop.
//
// A plain function type (no Qt): the GUI's worker thread wraps it into signals, the CLI prints a line. The
// callback returns false to ask for cancellation; the engine then throws mambascope::Cancelled at the next
// safe point, after removing any temporary file it was writing.
#pragma once

#include <functional>
#include <string_view>

namespace mambascope {

// fraction in [0, 1] of the whole job; stage is a short human label ("layer 3/24", "calibration window
// 5/100").
using ProgressFn = std::function<bool(double fraction, std::string_view stage)>;

// Calls `fn` if set; throws Cancelled when it returns false.
void report_progress(const ProgressFn& fn, double fraction, std::string_view stage);

}  // namespace mambascope
