// input.h: shared CLI input handling: token ids from --ids FILE or --text FILE (tokenised with the model's
// tokenizer), and progress on stderr.
#pragma once

#include <cstdint>
#include <vector>

#include "args.h"
#include "mambascope/model.h"
#include "mambascope/progress.h"

namespace mambascope::cli {

// --ids FILE, or --text FILE [--tokenizer FILE|byte] [--replace-invalid]; exactly one of them. Ids are
// checked against the model's vocabulary.
std::vector<int32_t> read_input_ids(const Args& args, const Model& model);

// A progress callback for long jobs: prints "label  42.0%" when stderr is a terminal, and returns false (the
// engine then throws Cancelled, exit 130) once cancel_requested() is set.
ProgressFn stderr_progress(const char* label);

// Set by main.cpp's SIGINT/SIGTERM handler (async-signal-safe); read by every progress callback.
void request_cancel() noexcept;
bool cancel_requested() noexcept;

}  // namespace mambascope::cli
