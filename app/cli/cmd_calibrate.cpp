// calibrate: LongMamba's offline calibration (method doc §2.3, §8.3) of a model on a token stream → CAL.h5.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>

#include "args.h"
#include "commands.h"
#include "input.h"
#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/longmamba.h"
#include "mambascope/model.h"

namespace mambascope::cli {
namespace {

constexpr const char* kCalibrateHelp =
    "mambascope-cli calibrate --model DIR (--ids FILE | --text FILE) --out CAL.h5 [options]\n"
    "\n"
    "LongMamba calibration (docs/longmamba.md): runs the model on `samples` windows of `train-len` tokens\n"
    "starting at int(P/samples*i + 10) of the token stream, and writes per-layer channel decays, Δ budgets,\n"
    "and Δ thresholds/alpha for each target length.\n"
    "\n"
    "options:\n"
    "  --train-len L        window length (default: the model's train_len)\n"
    "  --samples K          number of windows (default 100; capped to what the stream allows)\n"
    "  --clamp-top F        clampTop ratio in (0, 1] (default 0.1)\n"
    "  --lengths a,b,...    target lengths in tokens (default: 1000..8000,10000,...,192000)\n"
    "  --aggregate mean|max aggregation over windows (default mean)\n"
    "  --m1-decay slowest|mean  Mamba-1 channel decay reduction (default slowest)\n"
    "  --tokenizer FILE|byte, --replace-invalid   with --text (see `mambascope-cli forward --help`)\n"
    "  --c C                only for the summary printed at the end: global iff log_decay > ln C (default "
    "0.05)\n";

bool wants_help(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) return true;
    return false;
}

// Progress with the stage label ("calibration window 3/100"), only when stderr is a terminal.
// Stage-labelled progress on a terminal; everywhere, false once SIGINT/SIGTERM asked to stop (input.h), so the
// engine throws Cancelled at its next window and nothing half-written is left.
ProgressFn stage_progress() {
    const bool tty = isatty(2);
    return [tty](double f, std::string_view stage) {
        if (cancel_requested()) return false;
        if (!tty) return true;
        std::fprintf(stderr, "\r%-32.*s %5.1f%%", static_cast<int>(stage.size()), stage.data(), 100.0 * f);
        if (f >= 1.0) std::fprintf(stderr, "\n");
        return true;
    };
}

}  // namespace

int cmd_calibrate(int argc, char** argv) {
    if (wants_help(argc, argv)) {
        std::printf("%s", kCalibrateHelp);
        return 0;
    }
    Args a(argc, argv,
           {"model", "ids", "text", "out", "train-len", "samples", "clamp-top", "lengths", "aggregate",
            "m1-decay", "c", "tokenizer"},
           {"replace-invalid"});
    const std::string out = a.require("out");
    auto model = load_model(a.require("model"));
    const std::vector<int32_t> ids = read_input_ids(a, *model);  // --ids FILE or --text FILE

    CalibrationParams p;
    p.train_len = a.get_int("train-len", -1);
    p.samples = static_cast<int>(a.get_int("samples", kDefaultCalibrationSamples));
    p.clamp_top = a.get_double("clamp-top", kDefaultClampTop);
    p.lengths = a.get_int_list("lengths");
    p.aggregate = parse_aggregate(a.get("aggregate", "mean"));
    p.m1_decay = parse_m1_decay(a.get("m1-decay", "slowest"));
    const double c = a.get_double("c", kDefaultC);

    const Calibration cal = calibrate(*model, ids, p, stage_progress());
    save_calibration(out, cal);

    const std::vector<uint8_t> global = global_mask(cal, c);
    int64_t n_global = 0;
    for (uint8_t g : global) n_global += g;
    std::printf("calibration:      %s\n", out.c_str());
    std::printf("model:            %s (%s, %lld layers x %lld channels)\n", cal.model_name.c_str(),
                cal.arch.c_str(), static_cast<long long>(cal.n_layer), static_cast<long long>(cal.channels));
    std::printf("windows:          %lld of %d requested, %lld tokens each, stream of %lld tokens\n",
                static_cast<long long>(cal.samples_used), p.samples,
                static_cast<long long>(cal.params.train_len), static_cast<long long>(cal.stream_tokens));
    std::printf("clamp_top:        %g\naggregate:        %s\nm1_decay:         %s\n", cal.params.clamp_top,
                aggregate_name(cal.params.aggregate), m1_decay_name(cal.params.m1_decay));
    std::printf("target lengths:   %zu (%s .. %s)\n", cal.lengths.size(),
                length_key(cal.lengths.front()).c_str(), length_key(cal.lengths.back()).c_str());
    std::printf("global channels:  %lld of %lld (%.1f%%) at c = %g\n", static_cast<long long>(n_global),
                static_cast<long long>(global.size()), 100.0 * static_cast<double>(n_global) / global.size(),
                c);
    return 0;
}

}  // namespace mambascope::cli
