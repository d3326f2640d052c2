// channel_detail.h: the detail of channels a run did not trace (Δ window, critical tokens, cumulative decay,
// hidden attention), computed on demand from the run's own recorded input and parameters.
//
// Design decision: detail is not interpolated or estimated from the summaries: the run's methods are run
// again on RunResult::input (the trace records the token ids) with the run's parameters and only the new
// channels as probes, so the added ChannelTrace / AttentionMap equal what run_analysis would have recorded
// had the channels been asked for up front (tested). A 131k-token input costs one forward per method; the
// caller runs it off the GUI thread with progress and cancellation.
#pragma once

#include <vector>

#include "mambascope/analysis.h"

namespace mambascope {

// The request that reproduces `run`'s probes for `channels`: the run's methods, c, b, activate_above,
// DeciMamba parameters and calibration (MethodResult::params, RunResult::calibration_path), its Δ window and
// its attention window and normalisation; no NLL. Error when LongMamba needs a calibration the run does not
// name.
AnalysisRequest channel_detail_request(const RunResult& run, const std::vector<ChannelRef>& channels);

// `run` with the detail of `channels` added to every method (channels it already traces are kept as they
// are). Error when the model's shape differs from the run's, the run has no input ids, or a channel does not
// exist; Cancelled when `progress` returns false.
RunResult add_channel_detail(const Model& model, const RunResult& run,
                             const std::vector<ChannelRef>& channels, const ProgressFn& progress = {});

}  // namespace mambascope
