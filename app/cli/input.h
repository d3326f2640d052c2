// input.h: the option vocabulary every mambascope-cli subcommand shares (on CLI11), the input they read
// (token ids from --ids or --text, `-` for standard input), progress on stderr, and the cancel flag.
//
// Design decision: one option group per concern (input, device, LongMamba, DeciMamba, progress), added by one
// function each, so a flag has the same name, meaning and help on every command that takes it (docs/cli.md).
// A command line the program cannot run is a UsageError (exit 2); a failure while running is an Error (exit
// 1); a cancel (SIGINT/SIGTERM) is Cancelled (exit 130).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "mambascope/model.h"
#include "mambascope/progress.h"
#include "mambascope/tokenizer.h"

namespace mambascope::cli {

// A command line that cannot be run (bad value, missing or conflicting option): exit 2.
class UsageError : public Error {
  public:
    using Error::Error;
};

// One subcommand: its CLI11 app and what runs once it parsed (returns the exit code).
struct Command {
    CLI::App* app = nullptr;
    std::function<int()> run;
};

// A subcommand whose `summary` is its line in `mambascope-cli --help` and whose `details` follow its own
// help.
CLI::App* add_command(CLI::App& root, const std::string& name, const std::string& summary,
                      const std::string& details);

// --text FILE|- / --ids FILE|- (mutually exclusive; read_input_ids requires one), --tokenizer FILE|byte,
// --replace-invalid.
struct InputOptions {
    std::string text, ids, tokenizer;
    bool replace_invalid = false;
    bool given() const { return !text.empty() || !ids.empty(); }
};
void add_input_options(CLI::App& app, InputOptions& o);
// Ids checked against the model's vocabulary; text tokenised with --tokenizer or the model's tokenizer.
std::vector<int32_t> read_input_ids(const InputOptions& o, const Model& model);
// The tokenizer --tokenizer names, else the model's (tokenizer.json, config hint, byte), else GPT-NeoX-20B.
std::shared_ptr<const Tokenizer> input_tokenizer(const std::string& spec, const Model* model);
// A UTF-8 text file (`-`: standard input), invalid UTF-8 an Error unless replace_invalid.
std::string read_text_arg(const std::string& path, bool replace_invalid);

// --device cpu|cuda|auto, and where the command has them --precision and --chunk.
struct DeviceOptions {
    std::string device = "cpu", precision = "fp32";
    int64_t chunk = kPrefillChunkTokens;
};
void add_device_options(CLI::App& app, DeviceOptions& o, bool precision, bool chunk);

// --calibration CAL.h5, --c, --b, --activate-above (LongMamba, method doc §8.5).
struct LongMambaOptions {
    std::string calibration;
    double c = 0, b = 0;  // FilterParams' defaults unless given
    int64_t activate_above = -1;
    CLI::Option *c_opt = nullptr, *b_opt = nullptr, *activate_opt = nullptr;
    bool given(const CLI::Option* o) const { return o && o->count() > 0; }
};
void add_longmamba_options(CLI::App& app, LongMambaOptions& o);

// --methods vanilla,longmamba,decimamba.
void add_methods_option(CLI::App& app, std::vector<std::string>& methods, const std::string& fallback);

// --deci-layers, --deci-lbase, --deci-beta (DeciMamba, method doc §4).
struct DeciOptions {
    std::vector<int> layers;
    int64_t lbase = -1;
    double beta = 1.0;
};
void add_deci_options(CLI::App& app, DeciOptions& o);

// --progress auto|lines|json|none; applies to every progress callback of the run (stderr_progress).
void add_progress_option(CLI::App& app);

// A progress callback for long jobs, on stderr. auto: a live line with rate and ETA on a terminal, else a
// line every kProgressLineSeconds; lines: always lines; json: one JSON object per line; none: silent. `units`
// (>0) turns the rate into `unit`/s (e.g. tokens). Returns false (the engine then throws Cancelled, exit 130)
// once cancel_requested() is set.
ProgressFn stderr_progress(const char* label, double units = 0, const char* unit = "");

// Set by main.cpp's SIGINT/SIGTERM handler (async-signal-safe); read by every progress callback.
void request_cancel() noexcept;
bool cancel_requested() noexcept;

// The command line as typed (main sets it), for provenance.
void set_command_line(int argc, char** argv);
const std::string& command_line();

// Parsers shared by commands: "a:b" (0 <= a < b) for --window/--positions, with the option named in errors.
std::pair<int64_t, int64_t> parse_range(const std::string& option, const std::string& value);

}  // namespace mambascope::cli
