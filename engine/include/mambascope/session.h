// session.h: a saved analysis session (model, input, methods and parameters, selection, view state) as JSON.
// The GUI saves and loads it; `mambascope-cli analyze --session FILE` runs the same analysis headless.
//
// Design decision: the word "demo" in model/text/calibration means the embedded demo resources (the
// byte-level demo Mamba-1 model, its calibration and the demo text), so a session file is portable between
// machines. Relative paths are resolved against the session file's directory.
#pragma once

#include <filesystem>
#include <string>

#include "mambascope/analysis.h"

namespace mambascope {

struct Session {
    std::string model = "demo";        // model directory or "demo"
    std::string text = "demo";         // UTF-8 text file, "demo", or empty (then `ids`)
    std::string ids;                   // whitespace-separated token ids (alternative to text)
    std::string calibration = "demo";  // calibration file, "demo" (the demo model's), or empty (none)
    std::string trace;                 // a trace to open instead of running (GUI)
    int64_t max_tokens = 0;            // input length limit (0: none)
    std::string device = "cpu";        // cpu / cuda / auto
    AnalysisRequest request;  // methods, c, b, activate_above, DeciMamba, channels, windows, attention
    // view state (GUI)
    ChannelRef selected{-1, -1};
    int64_t selected_token = -1;
    std::string view = "channel-map";
    std::string statistic = "log_decay";
};

Session load_session(const std::filesystem::path& file);
void save_session(const std::filesystem::path& file, const Session& s);  // atomic

// The embedded resources directory (MAMBASCOPE_RESOURCES, next to the executable, or the source tree).
std::filesystem::path resources_dir();
// Resolved paths: "demo" → the demo resources; relative → against `base`; "" stays "".
std::filesystem::path resolve_model_path(const std::string& s, const std::filesystem::path& base);
std::filesystem::path resolve_text_path(const std::string& s, const std::filesystem::path& base);
std::filesystem::path resolve_calibration_path(const std::string& s, const std::filesystem::path& base);

}  // namespace mambascope
