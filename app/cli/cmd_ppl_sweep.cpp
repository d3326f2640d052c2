// ppl-sweep: perplexity against context length for several methods (issue 4 item 6).
#include <cstdio>
#include <cstring>
#include <sstream>

#include "args.h"
#include "commands.h"
#include "input.h"
#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/ppl_sweep.h"

namespace mambascope::cli {

int cmd_ppl_sweep(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (!std::strcmp(argv[i], "--help")) {
            std::printf(
                "mambascope-cli ppl-sweep --model DIR (--text FILE | --ids FILE) --lengths a,b,...\n"
                "    [--methods vanilla,longmamba,decimamba] [--calibration CAL.h5] [--c C] [--b B]\n"
                "    [--activate-above N] [--windows 10] [--predict 100] [--deci-layers l,..] [--deci-lbase "
                "N]\n"
                "    [--deci-beta B] [--device cpu|cuda|auto] [--out SWEEP.csv]\n"
                "  For each context length: `windows` windows spread over the document, NLL of each "
                "window's\n"
                "  last `predict` tokens (the paper's PG19 protocol). Prints a table; --out writes CSV.\n");
            return 0;
        }
    Args a(argc, argv,
           {"model", "text", "ids", "lengths", "methods", "calibration", "c", "b", "activate-above",
            "windows", "predict", "deci-layers", "deci-lbase", "deci-beta", "out", "tokenizer", "device"},
           {"replace-invalid"});
    auto model = load_model(a.require("model"));
    auto doc = read_input_ids(a, *model);
    PplSweepParams p;
    p.lengths = a.get_int_list("lengths");
    if (p.lengths.empty()) throw Error("missing --lengths (comma-separated context lengths in tokens)");
    p.windows = static_cast<int>(a.get_int("windows", kDefaultSweepWindows));
    p.predict = a.get_int("predict", kDefaultSweepPredict);
    p.methods.clear();
    std::stringstream ms(a.get("methods", "vanilla,longmamba"));
    for (std::string m; std::getline(ms, m, ',');) p.methods.push_back(parse_method(m));
    Calibration cal;
    if (a.has("calibration")) {
        cal = load_calibration(a.get("calibration"));
        p.calibration = &cal;
    }
    p.filter.c = a.get_double("c", p.filter.c);
    p.filter.b = a.get_double("b", p.filter.b);
    p.filter.activate_above = a.get_int("activate-above", -1);
    for (int64_t l : a.get_int_list("deci-layers")) p.deci.layers.push_back(static_cast<int>(l));
    p.deci.L_base = a.get_int("deci-lbase", -1);
    p.deci.beta = a.get_double("deci-beta", p.deci.beta);
    p.device = parse_device(a.get("device", "cpu"));
    auto progress = stderr_progress("ppl-sweep");
    auto points = run_ppl_sweep(*model, doc, p, progress);
    std::printf("perplexity of the last %lld tokens, %d windows per length\n%s", (long long)p.predict,
                p.windows, format_ppl_table(points).c_str());
    if (a.has("out")) {
        write_ppl_csv(a.get("out"), points);
        std::fprintf(stderr, "ppl-sweep: wrote %s\n", a.get("out").c_str());
    }
    return 0;
}

}  // namespace mambascope::cli
