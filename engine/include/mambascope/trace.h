// trace.h: one analysis run ↔ one HDF5 file ("trace") that the GUI reopens without the model and Python reads
// with h5py in three lines. The format (every dataset, shape, dtype, unit and formula) is
// docs/trace-format.md.
//
// Design decision: the file is self-describing and versioned (root attributes format = "mambascope-trace",
// format_version); readers refuse foreign files and newer versions with a clear error. Writes are atomic
// (temp file + rename), so a cancelled or failed export never leaves a half file, and an existing file is
// never half-overwritten.
#pragma once

#include <filesystem>

#include "mambascope/analysis.h"

namespace mambascope {

constexpr const char* kTraceFormat = "mambascope-trace";
constexpr int64_t kTraceFormatVersion = 1;

void write_trace(const std::filesystem::path& path, const RunResult& run);
RunResult read_trace(const std::filesystem::path& path);

}  // namespace mambascope
