// session.h: a saved Mambascope session (model, input, methods, LongMamba/DeciMamba parameters, the user's
// selection and view) as a small JSON file that both the desktop app and `mambascope-cli analyze --session`
// read, so a picture in the GUI can be reproduced in batch.
//
// Design decision: the file stores what the user typed ("demo" or a path, relative paths meaning relative to
// the session file); resolution to real files happens only in resolve_*(), through find_resource() for
// "demo". Unknown keys are ignored (forward compatible); a wrongly typed known key is an Error naming the
// key.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "mambascope/analysis.h"

namespace mambascope {

// Default cap on input tokens when a session does not say (keeps an accidental 100 MB paste bounded).
constexpr int64_t kDefaultSessionMaxTokens = 16384;

// A passkey haystack as a session's input (method doc §10.2): rebuilt from these fields on every run.
struct SessionHaystack {
    int64_t length = 0;            // prompt tokens; 0 = the session has no haystack (its input is `text`)
    double depth = 0.5;            // needle depth in [0, 1]
    int depth_index = 0;           // the depth's index in its retrieval grid (part of the key's hash)
    int sample = 0;                // sample index in the cell
    uint64_t seed = 0;             // the retrieval run's seed
    std::string filler = "demo";   // filler text file, or "demo" (resources/text/demo.txt)
    std::string prompt = "model";  // "model": the model's own template if it has one; "standard"
};

struct Session {
    // model directory, or "demo" (resources/models/demo-mamba2, the passkey model)
    std::string model = "demo";
    std::string text = "demo";         // UTF-8 text file, or "demo" (resources/text/demo.txt)
    std::string input_text;            // pasted text; when not empty it is the input and `text` is unused
    std::string trace;                 // optional saved trace (HDF5): open it instead of running
    std::string calibration = "demo";  // calibration .h5, "demo" (the demo model's), or "" (none)
    std::vector<Method> methods{Method::Vanilla, Method::LongMamba, Method::DeciMamba};
    double c = 0.05;              // §8.4
    double b = 1.0;               // §8.5
    int64_t activate_above = -1;  // -1: the calibration's train_len
    DeciParams deci;  // layers, L_base and beta are the file's "deci" object (§8.8); the rest keep defaults
    int64_t max_tokens = kDefaultSessionMaxTokens;  // input is cut to this many tokens
    Device device = Device::Cpu;  // where vanilla/LongMamba run (DeciMamba stays on the CPU)
    std::string sweep;            // optional perplexity-sweep CSV shown in the Perplexity view
    SessionHaystack haystack;     // when haystack.length > 0 the input is that passkey haystack
    std::string retrieval;        // optional retrieval JSON shown in the Retrieval view ("demo": shipped)
    // Selection and view state (GUI only; the CLI ignores them)
    int selected_layer = 0;
    int64_t selected_channel = 0;
    int64_t selected_token = -1;
    std::string view = "channel_map";
    // View state: the channel map's statistic and the Tokens view's colouring (names below).
    std::string channel_map_statistic = "log_decay";
    std::string tokens_colour = "critical";
    // Zoom of the views: "<view>.<axis>" (e.g. "channel_detail.x", "channel_map.y") → [lower, upper].
    std::map<std::string, std::array<double, 2>> view_ranges;
    std::vector<std::string> hidden_methods;  // methods hidden in the views ("vanilla", ...)
    bool difference_map = false;              // the channel map's LongMamba − vanilla map shown
    // Detail channels traced up front (AnalysisRequest::channels; the CLI honours them too). Empty: the
    // engine's default pair.
    std::vector<ChannelRef> detail_channels;
    // Set by load_session: the folder relative paths are resolved against (empty: current directory).
    std::filesystem::path base_dir;
};

// Valid view-state names.
inline constexpr const char* kChannelMapStatistics[] = {"log_decay", "delta_sum", "critical_count",
                                                        "receptive_field"};
inline constexpr const char* kTokensColours[] = {"critical", "nll_change", "global_keep"};

std::string session_to_json(const Session& s);  // pretty-printed
// `origin` names the source in error messages; `base_dir` becomes Session::base_dir.
Session session_from_json(std::string_view text, const std::string& origin,
                          const std::filesystem::path& base_dir = {});
Session load_session(const std::filesystem::path& file);
void save_session(const Session& s, const std::filesystem::path& file);  // atomic (temp + rename)

// "demo" → the resource; relative → against base_dir; "" stays "" (calibration only).
std::filesystem::path resolve_model_path(const Session& s);
std::filesystem::path resolve_text_path(const Session& s);
std::filesystem::path resolve_calibration_path(const Session& s);
std::filesystem::path resolve_trace_path(const Session& s);      // "" when the session has no trace
std::filesystem::path resolve_sweep_path(const Session& s);      // "" when the session has no sweep
std::filesystem::path resolve_retrieval_path(const Session& s);  // "" when none; "demo" → the shipped one
std::filesystem::path resolve_filler_path(const Session& s);     // the haystack's filler text

// The analysis request the session describes (probes left at their defaults).
AnalysisRequest session_request(const Session& s);

}  // namespace mambascope
