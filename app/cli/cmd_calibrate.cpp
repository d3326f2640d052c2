// calibrate: LongMamba's offline calibration (method doc §2.3, §8.3) of a model on a token stream → CAL.h5.
#include <cstdio>
#include <string>

#include "commands.h"
#include "dist.h"
#include "input.h"
#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/longmamba.h"
#include "mambascope/model.h"

namespace mambascope::cli {
namespace {

struct CalibrateOptions {
    std::string model, out, aggregate = "mean", m1_decay = "slowest";
    InputOptions in;
    DeviceOptions dev;
    DistOptions dist;
    int64_t train_len = -1, samples = kDefaultCalibrationSamples;
    double clamp_top = kDefaultClampTop, c = kDefaultC;
    std::vector<int64_t> lengths;
};

int run_calibrate(const CalibrateOptions& o) {
    Dist dist("calibrate", o.dev.device);  // under mpirun: this rank's place and GPU (docs/scaling.md)
    auto model = load_model(o.model);
    const std::vector<int32_t> ids = read_input_ids(o.in, *model);  // --ids FILE or --text FILE

    CalibrationParams p;
    p.train_len = o.train_len;
    p.samples = static_cast<int>(o.samples);
    p.clamp_top = o.clamp_top;
    p.lengths = o.lengths;
    p.aggregate = parse_aggregate(o.aggregate);
    p.m1_decay = parse_m1_decay(o.m1_decay);
    p.device = parse_device(o.dev.device);

    // calibrate() as work units: the windows, spread over the ranks; rank 0 aggregates them in window order.
    // Stage-labelled progress ("calibration window 3/100") with rate and ETA; false once SIGINT/SIGTERM asked
    // to stop (input.h), so the engine throws Cancelled at its next window and nothing half-written is left.
    CalibrationJob job(*model, ids, p);
    const ProgressFn progress = dist.progress(stderr_progress("calibrate"));
    if (!dist.run(job, o.dist, model_identity(*model), progress)) return 0;  // not rank 0: rank 0 writes
    report_progress(progress, 1.0, "calibration done");
    const Calibration cal = job.result();
    save_calibration(o.out, cal);
    dist.finish(o.dist);

    const std::vector<uint8_t> global = global_mask(cal, o.c);
    int64_t n_global = 0;
    for (uint8_t g : global) n_global += g;
    std::printf("calibration:      %s\n", o.out.c_str());
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
                o.c);
    return 0;
}

}  // namespace

Command add_calibrate(CLI::App& root) {
    auto o = std::make_shared<CalibrateOptions>();
    auto* app = add_command(
        root, "calibrate", "LongMamba calibration of a model on a token stream (CAL.h5)",
        "  Runs the model on `samples` windows of `train-len` tokens starting at int(P/samples*i + 10) of "
        "the\n"
        "  token stream, and writes per-layer channel decays, Δ budgets, and Δ thresholds/alpha for each\n"
        "  target length (docs/longmamba.md).");
    app->add_option("--model", o->model, "model directory")->type_name("DIR")->required();
    add_input_options(*app, o->in);
    app->add_option("--out", o->out, "output calibration")->type_name("CAL.h5")->required()->group("Output");
    app->add_option("--train-len", o->train_len, "window length (default: the model's train_len)")
        ->check(CLI::PositiveNumber)
        ->type_name("L");
    app->add_option("--samples", o->samples, "number of windows (capped to what the stream allows)")
        ->check(CLI::Range(int64_t(1), int64_t(1000000)))
        ->capture_default_str();
    app->add_option("--clamp-top", o->clamp_top, "clampTop ratio in (0, 1]")
        ->check(CLI::Range(1e-9, 1.0))
        ->capture_default_str();
    app->add_option("--lengths", o->lengths,
                    "target lengths in tokens (default: 1000..8000,10000,...,192000)")
        ->delimiter(',')
        ->check(CLI::PositiveNumber)
        ->type_name("LIST");
    app->add_option("--aggregate", o->aggregate, "aggregation over windows")
        ->check(CLI::IsMember({"mean", "max"}))
        ->capture_default_str();
    app->add_option("--m1-decay", o->m1_decay, "Mamba-1 channel decay reduction")
        ->check(CLI::IsMember({"slowest", "mean"}))
        ->capture_default_str();
    app->add_option("--c", o->c, "only for the summary printed at the end: global iff log_decay > ln C")
        ->check(CLI::Range(1e-12, 1.0))
        ->capture_default_str();
    add_device_options(*app, o->dev, false, false);
    add_dist_options(*app, o->dist);
    add_progress_option(*app);
    return {app, [o] { return run_calibrate(*o); }};
}

}  // namespace mambascope::cli
