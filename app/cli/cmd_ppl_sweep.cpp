// ppl-sweep: perplexity against context length for several methods (issue 4 item 6).
#include <cstdio>
#include <string>

#include "commands.h"
#include "dist.h"
#include "input.h"
#include "mambascope/analysis.h"
#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/ppl_sweep.h"

namespace mambascope::cli {
namespace {

struct PplSweepOptions {
    std::string model, out;
    InputOptions in;
    DeviceOptions dev;
    LongMambaOptions lm;
    DeciOptions deci;
    DistOptions dist;
    std::vector<std::string> methods;
    std::vector<int64_t> lengths;
    int64_t windows = kDefaultSweepWindows, predict = kDefaultSweepPredict;
};

int run_ppl_sweep(const PplSweepOptions& o) {
    Dist dist("ppl-sweep", o.dev.device);  // under mpirun: this rank's place and GPU (docs/scaling.md)
    auto model = load_model(o.model);
    auto doc = read_input_ids(o.in, *model);
    PplSweepParams p;
    p.lengths = o.lengths;
    p.windows = static_cast<int>(o.windows);
    p.predict = o.predict;
    p.methods.clear();
    for (const auto& m : o.methods.empty() ? std::vector<std::string>{"vanilla", "longmamba"} : o.methods)
        p.methods.push_back(parse_method(m));
    Calibration cal;
    if (!o.lm.calibration.empty()) {
        cal = load_calibration(o.lm.calibration);
        p.calibration = &cal;
    }
    p.filter.c = o.lm.c;
    p.filter.b = o.lm.b;
    p.filter.activate_above = o.lm.activate_above;
    p.deci.layers = o.deci.layers;
    p.deci.L_base = o.deci.lbase;
    p.deci.beta = o.deci.beta;
    p.device = parse_device(o.dev.device);
    // run_ppl_sweep() as work units: (length, method, window) cells spread over the ranks; rank 0 reduces.
    PplSweepJob job(*model, doc, p);
    const ProgressFn progress = dist.progress(stderr_progress("ppl-sweep"));
    if (!dist.run(job, o.dist, model_identity(*model), progress)) return 0;  // not rank 0: rank 0 writes
    report_progress(progress, 1.0, "ppl-sweep");
    const std::vector<PplPoint> points = job.result();
    std::printf("perplexity of the last %lld tokens, %d windows per length\n%s", (long long)p.predict,
                p.windows, format_ppl_table(points).c_str());
    if (!o.out.empty()) {
        write_ppl_csv(o.out, points);
        std::fprintf(stderr, "ppl-sweep: wrote %s\n", o.out.c_str());
    }
    dist.finish(o.dist);
    return 0;
}

}  // namespace

Command add_ppl_sweep(CLI::App& root) {
    auto o = std::make_shared<PplSweepOptions>();
    auto* app = add_command(
        root, "ppl-sweep", "perplexity vs context length (vanilla / LongMamba / DeciMamba)",
        "  For each context length: `windows` windows spread over the document, NLL of each window's last\n"
        "  `predict` tokens (the paper's PG19 protocol). Prints a table; --out writes CSV.");
    app->add_option("--model", o->model, "model directory")->type_name("DIR")->required();
    add_input_options(*app, o->in);
    app->add_option("--lengths", o->lengths, "context lengths in tokens")
        ->delimiter(',')
        ->check(CLI::PositiveNumber)
        ->type_name("LIST")
        ->required();
    app->add_option("--windows", o->windows, "windows per length")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app->add_option("--predict", o->predict, "tokens scored at the end of each window")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app->add_option("--out", o->out, "write the sweep as CSV")->type_name("SWEEP.csv")->group("Output");
    add_methods_option(*app, o->methods, "vanilla,longmamba");
    add_longmamba_options(*app, o->lm);
    add_deci_options(*app, o->deci);
    add_device_options(*app, o->dev, false, false);
    add_dist_options(*app, o->dist);
    add_progress_option(*app);
    return {app, [o] { return run_ppl_sweep(*o); }};
}

}  // namespace mambascope::cli
