// trace.h: an analysis run (analysis.h RunResult) as a self-describing HDF5 file, and back.
//
// The layout (every dataset's name, shape, dtype, units and formula) is documented in docs/trace-format.md.
// Design decision: a trace holds only O(n_layer × C) summaries, O(T) series and bounded windows, so it is
// written whole from the RunResult in memory (no streaming needed: a 128k-token run of a 130m model is a few
// MB); the write is atomic (temp file + rename, h5::Writer), and a cancelled write leaves nothing behind.
// Every array gets dimension scales at the root or in its own group (netCDF-4 readers such as xarray only
// look there), units and long_name, and NeXus attributes (NXroot → NXentry → NXdata) so H5Web and silx find
// the main plot. Format version 2 moved the scales out of /dims; read_trace reads versions 1 and 2.
#pragma once

#include <cstdint>
#include <filesystem>

#include "mambascope/analysis.h"
#include "mambascope/progress.h"

namespace mambascope {

constexpr const char* kTraceFormat = "mambascope-trace";
constexpr int64_t kTraceFormatVersion = 2;  // 2: dimension scales at the root, not in /dims

// Writes `run` to `path` (atomic). Provenance entries become root attributes "provenance.<key>"; when
// run.calibration_path names a readable calibration, its arrays are copied under /calibration. Progress
// is reported per method; returning false cancels (throws Cancelled, no file and no temp file left).
void write_trace(const std::filesystem::path& path, const RunResult& run, const ProgressFn& progress = {});

// Reads a trace back into the same RunResult. Errors: "not a mambascope trace" (foreign HDF5), "written by a
// newer version N" (format_version > kTraceFormatVersion), truncated/corrupt files, wrong shapes.
RunResult read_trace(const std::filesystem::path& path);

}  // namespace mambascope
