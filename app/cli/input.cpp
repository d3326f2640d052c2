#include "input.h"

#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "args.h"
#include "mambascope/analysis.h"
#include "mambascope/decimamba.h"
#include "mambascope/longmamba.h"
#include "mambascope/text.h"
#include "nlohmann/json.hpp"

namespace mambascope::cli {
namespace {

// Seconds between progress lines when stderr is not a terminal (a log): often enough to show life in a
// 40-second job, rarely enough that an hour-long one writes a few hundred lines.
constexpr double kProgressLineSeconds = 5.0;
// Seconds between redraws of the live line on a terminal.
constexpr double kProgressTtySeconds = 0.1;

constexpr const char* kExitCodes = "Exit codes: 0 success, 1 runtime error, 2 usage error, 130 cancelled.";

enum class ProgressMode { Auto, Lines, Json, None };
ProgressMode g_progress_mode = ProgressMode::Auto;

std::atomic<bool> g_cancel{false};
static_assert(std::atomic<bool>::is_always_lock_free, "the cancel flag is set from a signal handler");

std::string format_seconds(double s) {
    if (!std::isfinite(s) || s < 0) return "?";
    char buf[32];
    if (s < 60)
        std::snprintf(buf, sizeof buf, "%.0fs", s);
    else if (s < 3600)
        std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
    else
        std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, (int(s) / 60) % 60);
    return buf;
}

}  // namespace

CLI::App* add_command(CLI::App& root, const std::string& name, const std::string& summary,
                      const std::string& details) {
    auto* app = root.add_subcommand(name, summary);
    app->footer(details + "\n" + kExitCodes);
    return app;
}

void add_input_options(CLI::App& app, InputOptions& o) {
    auto* text = app.add_option("--text", o.text, "input text file (UTF-8; - reads standard input)")
                     ->type_name("FILE|-")
                     ->group("Input");
    auto* ids =
        app.add_option("--ids", o.ids, "input token ids, whitespace-separated (- reads standard input)")
            ->type_name("FILE|-")
            ->group("Input");
    text->excludes(ids);  // read_input_ids requires one of them (UsageError, exit 2)
    app.add_option("--tokenizer", o.tokenizer,
                   "with --text: a tokenizer.json, or byte (default: the model's tokenizer)")
        ->type_name("FILE|byte")
        ->group("Input");
    app.add_flag("--replace-invalid", o.replace_invalid,
                 "with --text: invalid UTF-8 becomes U+FFFD, not an error")
        ->group("Input");
}

std::string read_text_arg(const std::string& path, bool replace_invalid) {
    if (path != "-") return read_text_file(path, {.replace_invalid = replace_invalid});
    std::string text = read_stdin();
    if (replace_invalid) return replace_invalid_utf8(text);
    check_utf8(text, "standard input");
    return text;
}

std::shared_ptr<const Tokenizer> input_tokenizer(const std::string& spec, const Model* model) {
    if (!spec.empty()) return tokenizer_from_spec(spec);
    if (model) return choose_tokenizer(model->dir, model->config.tokenizer);
    return builtin_gpt_neox_tokenizer();
}

std::vector<int32_t> read_input_ids(const InputOptions& o, const Model& model) {
    if (o.text.empty() == o.ids.empty()) throw UsageError("give exactly one of --ids FILE and --text FILE");
    std::vector<int32_t> ids;
    if (!o.ids.empty()) {
        ids = read_ids_file(o.ids);
    } else {
        const auto tok = input_tokenizer(o.tokenizer, &model);
        ids = tok->encode(read_text_arg(o.text, o.replace_invalid));
    }
    check_ids(model, ids);
    return ids;
}

void add_device_options(CLI::App& app, DeviceOptions& o, bool precision, bool chunk) {
    app.add_option("--device", o.device, "where the forward runs; auto: CUDA when usable, else the CPU")
        ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
        ->capture_default_str()
        ->group("Device");
    if (precision)
        app.add_option("--precision", o.precision, "projections on the GPU (the CPU computes in float32)")
            ->check(CLI::IsMember({"fp32", "tf32", "bf16"}))
            ->capture_default_str()
            ->group("Device");
    if (chunk)
        app.add_option("--chunk", o.chunk,
                       "tokens per prefill chunk (memory vs speed; results are identical)")
            ->check(CLI::PositiveNumber)
            ->capture_default_str()
            ->group("Device");
}

void add_longmamba_options(CLI::App& app, LongMambaOptions& o) {
    o.c = kDefaultC;
    o.b = kDefaultB;
    app.add_option("--calibration", o.calibration, "LongMamba calibration (mambascope-cli calibrate)")
        ->type_name("CAL.h5")
        ->group("LongMamba");
    o.c_opt = app.add_option("--c", o.c, "a channel is global iff its log decay > ln C")
                  ->check(CLI::Range(1e-12, 1.0))
                  ->capture_default_str()
                  ->group("LongMamba");
    o.b_opt = app.add_option("--b", o.b, "threshold multiplier")
                  ->check(CLI::PositiveNumber)
                  ->capture_default_str()
                  ->group("LongMamba");
    o.activate_opt =
        app.add_option("--activate-above", o.activate_above,
                       "filter only inputs longer than N tokens (default: the calibration's train length)")
            ->check(CLI::NonNegativeNumber)
            ->type_name("N")
            ->group("LongMamba");
}

void add_methods_option(CLI::App& app, std::vector<std::string>& methods, const std::string& fallback) {
    app.add_option("--methods", methods, "methods to run (default " + fallback + ")")
        ->delimiter(',')
        ->check(CLI::IsMember({"vanilla", "longmamba", "decimamba"}))
        ->type_name("LIST")
        ->group("Methods");
}

void add_deci_options(CLI::App& app, DeciOptions& o) {
    o.beta = kDeciDefaultBeta;
    app.add_option("--deci-layers", o.layers, "DeciMamba: layers that decimate (default n_layer/2)")
        ->delimiter(',')
        ->check(CLI::NonNegativeNumber)
        ->type_name("LIST")
        ->group("DeciMamba");
    app.add_option("--deci-lbase", o.lbase, "DeciMamba: L_base (default: the model's train length)")
        ->check(CLI::PositiveNumber)
        ->type_name("N")
        ->group("DeciMamba");
    app.add_option("--deci-beta", o.beta, "DeciMamba: beta")
        ->check(CLI::PositiveNumber)
        ->capture_default_str()
        ->group("DeciMamba");
}

void add_progress_option(CLI::App& app) {
    app.add_option_function<std::string>(
           "--progress",
           [](const std::string& m) {
               g_progress_mode = m == "lines"  ? ProgressMode::Lines
                                 : m == "json" ? ProgressMode::Json
                                 : m == "none" ? ProgressMode::None
                                               : ProgressMode::Auto;
           },
           "progress on stderr: auto (live line on a terminal, else a line every 5 s), lines, json (JSON "
           "lines), none")
        ->check(CLI::IsMember({"auto", "lines", "json", "none"}))
        ->default_str("auto")
        ->group("Output");
}

ProgressFn stderr_progress(const char* label, double units, const char* unit) {
    const ProgressMode mode = g_progress_mode;
    const bool live = mode == ProgressMode::Auto && isatty(2);
    const double interval = live ? kProgressTtySeconds : kProgressLineSeconds;
    struct State {
        std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
        double last_print = -1e9;
        bool done = false;
    };
    auto st = std::make_shared<State>();
    return [=](double f, std::string_view stage) {
        if (cancel_requested()) {
            if (live) std::fprintf(stderr, "\n");
            return false;
        }
        if (mode == ProgressMode::None || st->done) return true;
        const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - st->start).count();
        const bool finished = f >= 1.0;
        // first call, every interval, and the end
        if (!finished && st->last_print > -1e9 && t - st->last_print < interval) return true;
        st->last_print = t;
        st->done = finished;
        const double eta = f > 0 && t > 0 ? t * (1.0 - f) / f : NAN;
        const double rate = units > 0 && t > 0 ? f * units / t : NAN;
        if (mode == ProgressMode::Json) {
            nlohmann::json j = {{"label", label},
                                {"stage", std::string(stage)},
                                {"fraction", f},
                                {"elapsed_s", t},
                                {"eta_s", nullptr},
                                {"rate", nullptr},
                                {"unit", std::string(unit)}};
            if (std::isfinite(eta)) j["eta_s"] = eta;
            if (std::isfinite(rate)) j["rate"] = rate;
            std::fprintf(stderr, "%s\n", j.dump().c_str());
            return true;
        }
        char rate_s[48] = "";
        if (std::isfinite(rate)) std::snprintf(rate_s, sizeof rate_s, "  %.1f %s/s", rate, unit);
        std::string stage_s = stage.empty() || stage == label ? "" : " " + std::string(stage);
        const std::string when = finished ? "done in " + format_seconds(t)
                                          : "elapsed " + format_seconds(t) + "  ETA " + format_seconds(eta);
        if (live)
            std::fprintf(stderr, "\r%s%s %5.1f%%%s  %s\x1b[K%s", label, stage_s.c_str(), 100.0 * f, rate_s,
                         when.c_str(), finished ? "\n" : "");
        else
            std::fprintf(stderr, "%s%s %5.1f%%%s  %s\n", label, stage_s.c_str(), 100.0 * f, rate_s,
                         when.c_str());
        return true;
    };
}

void request_cancel() noexcept {
    g_cancel.store(true);
}
bool cancel_requested() noexcept {
    return g_cancel.load();
}

namespace {
std::string g_command_line;
}

void set_command_line(int argc, char** argv) {
    g_command_line.clear();
    for (int i = 0; i < argc; ++i)
        g_command_line += (i ? " " : "") + std::string(i ? argv[i] : "mambascope-cli");
}
const std::string& command_line() {
    return g_command_line;
}

std::pair<int64_t, int64_t> parse_range(const std::string& option, const std::string& w) {
    std::pair<int64_t, int64_t> r{0, 0};
    const auto colon = w.find(':');
    const auto parse = [](std::string_view s, int64_t& v) {
        const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        return !s.empty() && ec == std::errc() && p == s.data() + s.size();
    };
    const std::string hint = "use BEGIN:END token positions with 0 <= BEGIN < END, e.g. 0:4096";
    if (colon == std::string::npos || !parse(std::string_view(w).substr(0, colon), r.first) ||
        !parse(std::string_view(w).substr(colon + 1), r.second))
        throw UsageError("bad " + option + " '" + w + "': not two integers BEGIN:END", hint);
    if (r.first < 0 || r.second < 0)
        throw UsageError("bad " + option + " '" + w + "': token positions must not be negative", hint);
    if (r.second <= r.first)
        throw UsageError(
            "bad " + option + " '" + w + "': the window is empty (END must be greater than BEGIN)", hint);
    return r;
}

}  // namespace mambascope::cli
