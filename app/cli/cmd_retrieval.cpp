// retrieval: passkey / needle-in-a-haystack evaluation over lengths × depths × methods (method doc §10).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "args.h"
#include "commands.h"
#include "input.h"
#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/resources.h"
#include "mambascope/retrieval.h"
#include "mambascope/text.h"
#include "mambascope/tokenizer.h"
#include "mambascope/trace.h"

namespace mambascope::cli {
namespace {

std::vector<double> parse_depths(const std::string& s) {
    std::vector<double> out;
    std::stringstream ss(s);
    for (std::string item; std::getline(ss, item, ',');) {
        size_t used = 0;
        double v = 0;
        try {
            v = std::stod(item, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used == 0 || used != item.size() || !(v >= 0.0 && v <= 1.0))
            throw Error("bad --depths entry '" + item + "'", "depths are fractions in [0, 1], e.g. 0,0.5,1");
        out.push_back(v);
    }
    return out;
}

std::vector<double> default_depths() { return {0.0, 0.25, 0.5, 0.75, 1.0}; }

}  // namespace

int cmd_retrieval(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (!std::strcmp(argv[i], "--help")) {
            std::printf(
                "mambascope-cli retrieval --model DIR|demo|demo-mamba1 [--filler FILE|demo] --lengths a,b,...\n"
                "    [--depths 0,0.25,0.5,0.75,1] [--samples 5] [--seed 0]\n"
                "    [--methods vanilla,longmamba,decimamba] [--calibration CAL.h5|demo] [--c C] [--b B]\n"
                "    [--activate-above N] [--deci-layers l,..] [--deci-lbase N] [--deci-beta B]\n"
                "    [--template standard|model] [--no-teacher-forced] [--no-generate] [--decode-filter "
                "keep|off]\n"
                "    [--device cpu|cuda|auto] [--csv OUT.csv] [--json OUT.json]\n"
                "    [--trace OUT.h5 --trace-cell LENGTH:DEPTH_INDEX:SAMPLE]\n"
                "  Passkey retrieval (method doc §10): haystacks of exactly LENGTH prompt tokens built from the\n"
                "  filler text (whitespace folded) with the needle at each depth, scored per method by\n"
                "  teacher-forced answer-token accuracy (digit accuracy for byte models; chance 0.1) and by\n"
                "  greedy generation (LongMamba's filter kept while decoding unless --decode-filter off).\n"
                "  --template model (default) uses the template in the model's config.json when it has one,\n"
                "  else the standard passkey template. --model demo is the embedded demo-mamba2 with its\n"
                "  calibration; --filler demo is the embedded eval text (Emma). Prints the accuracy per\n"
                "  length and method; --csv writes one row per haystack and method, --json the same for the\n"
                "  GUI's retrieval view; --trace writes the HDF5 trace of one cell's haystack.\n");
            return 0;
        }
    Args a(argc, argv,
           {"model", "filler", "lengths", "depths", "samples", "seed", "methods", "calibration", "c", "b",
            "activate-above", "deci-layers", "deci-lbase", "deci-beta", "template", "decode-filter", "device",
            "csv", "json", "trace", "trace-cell", "tokenizer"},
           {"no-teacher-forced", "no-generate"});
    std::string model_arg = a.get("model", "demo");
    const bool demo = model_arg == "demo" || model_arg == "demo-mamba2" || model_arg == "demo-mamba1";
    const std::string demo_name = model_arg == "demo-mamba1" ? "demo-mamba1" : "demo-mamba2";
    const std::filesystem::path model_dir = demo ? find_resource("models/" + demo_name) : std::filesystem::path(model_arg);
    auto model = load_model(model_dir, stderr_progress("loading"));

    const std::string filler_arg = a.get("filler", "demo");
    const std::filesystem::path filler_path = filler_arg == "demo" ? find_resource("text/demo.txt") : std::filesystem::path(filler_arg);
    TextReadOptions tro;
    const std::string filler = read_text_file(filler_path, tro);
    auto tok = a.has("tokenizer") ? tokenizer_from_spec(a.get("tokenizer"))
                                  : choose_tokenizer(model->dir, model->config.tokenizer);

    const std::string tmpl_name = a.get("template", "model");
    if (tmpl_name != "model" && tmpl_name != "standard")
        throw Error("unknown --template '" + tmpl_name + "'", "use model or standard");
    const PromptTemplate tmpl =
        tmpl_name == "standard" ? standard_passkey_template() : default_passkey_template(model->config);
    HaystackBuilder builder(tok, filler, tmpl);

    RetrievalRequest req;
    req.lengths = a.get_int_list("lengths");
    if (req.lengths.empty()) {
        const int64_t T = model->config.train_len;
        req.lengths = {T, 4 * T, 16 * T, 64 * T};
    }
    req.depths = a.has("depths") ? parse_depths(a.get("depths")) : default_depths();
    const int64_t samples = a.get_int("samples", 5);
    if (samples < 1 || samples > 100000) throw Error("--samples must be in 1..100000");
    req.samples = static_cast<int>(samples);
    const int64_t seed = a.get_int("seed", 0);
    if (seed < 0) throw Error("--seed must be non-negative");
    req.seed = static_cast<uint64_t>(seed);
    req.methods.clear();
    std::stringstream ms(a.get("methods", "vanilla,longmamba,decimamba"));
    for (std::string m; std::getline(ms, m, ',');) req.methods.push_back(parse_method(m));
    const std::string cal_arg = a.get("calibration", demo ? "demo" : "");
    if (cal_arg == "demo") {
        if (!demo) throw Error("--calibration demo belongs to the demo models", "pass the model's CAL.h5");
        req.calibration_path = find_resource("calibration/" + demo_name + ".h5");
    } else {
        req.calibration_path = cal_arg;
    }
    req.c = a.get_double("c", req.c);
    req.b = a.get_double("b", req.b);
    req.activate_above = a.get_int("activate-above", -1);
    for (int64_t l : a.get_int_list("deci-layers")) req.deci_layers.push_back(static_cast<int>(l));
    req.deci_L_base = a.get_int("deci-lbase", -1);
    req.deci_beta = a.get_double("deci-beta", req.deci_beta);
    req.teacher_forced = !a.has("no-teacher-forced");
    req.generate = !a.has("no-generate");
    const std::string df = a.get("decode-filter", "keep");
    if (df != "keep" && df != "off") throw Error("unknown --decode-filter '" + df + "'", "use keep or off");
    req.decode_filter = df == "keep";
    req.device = parse_device(a.get("device", "cpu"));

    if (a.has("trace") != a.has("trace-cell"))
        throw Error("--trace and --trace-cell go together", "e.g. --trace cell.h5 --trace-cell 16384:1:0");
    const std::string spec = a.get("trace-cell");
    long long L = 0;
    int di = 0, s = 0;
    if (a.has("trace-cell")) {  // checked before the (long) evaluation
        char tail = 0;
        if (std::sscanf(spec.c_str(), "%lld:%d:%d%c", &L, &di, &s, &tail) != 3 || L < 1 || di < 0 ||
            di >= static_cast<int>(req.depths.size()) || s < 0 || L > kMaxHaystackTokens)
            throw Error("bad --trace-cell '" + spec + "'",
                        "LENGTH:DEPTH_INDEX:SAMPLE with DEPTH_INDEX in 0.." +
                            std::to_string(req.depths.size() - 1));
    }

    RetrievalResult res = run_retrieval(*model, builder, req, stderr_progress("retrieval"));
    res.filler = filler_arg == "demo" ? "demo (resources/text/demo.txt)" : filler_arg;
    res.model = demo ? demo_name : model_arg;

    // Table: accuracy per length and method (mean over depths and samples).
    std::printf("passkey retrieval: %s, %zu depths x %d samples; teacher-forced answer-token accuracy",
                res.model.c_str(), req.depths.size(), req.samples);
    std::printf(req.generate ? " / greedy exact\n" : "\n");
    std::printf("%10s", "length");
    for (Method m : req.methods) std::printf(" %20s", method_name(m));
    std::printf("\n");
    for (int64_t L : req.lengths) {
        std::printf("%10lld", static_cast<long long>(L));
        for (Method m : req.methods) {
            char cell[64];
            const double tf = res.length_accuracy(m, L, false), gen = res.length_accuracy(m, L, true);
            if (req.generate && req.teacher_forced)
                std::snprintf(cell, sizeof cell, "%.3f / %.3f", tf, gen);
            else
                std::snprintf(cell, sizeof cell, "%.3f", req.generate ? gen : tf);
            std::printf(" %20s", cell);
        }
        std::printf("\n");
    }
    if (req.generate) {  // the answers of the first sample at the longest length and first depth
        const int64_t L = req.lengths.back();
        for (const auto& r : res.rows)
            if (r.length == L && r.depth_index == 0 && r.sample == 0)
                std::printf("  %-10s key %s  answered \"%s\"  %s\n", method_name(r.method), r.key.c_str(),
                            r.generated.c_str(), r.generated_correct ? "right" : "wrong");
    }
    if (a.has("csv")) {
        write_retrieval_csv(a.get("csv"), res);
        std::fprintf(stderr, "retrieval: wrote %s\n", a.get("csv").c_str());
    }
    if (a.has("json")) {
        write_retrieval_json(a.get("json"), res);
        std::fprintf(stderr, "retrieval: wrote %s\n", a.get("json").c_str());
    }
    if (a.has("trace")) {
        const Haystack h = builder.build_cell(req.seed, L, di, req.depths[static_cast<size_t>(di)], s);
        const AnalysisRequest ar = to_analysis_request(req);
        RunInput in = haystack_run_input(h, *tok);
        RunResult run = run_analysis(*model, in, ar, stderr_progress("trace"));
        run.provenance["model_path"] = std::filesystem::absolute(model->dir).string();
        run.provenance["model_name"] = model->name;
        run.provenance["arch"] = arch_name(model->config.arch);
        run.provenance["tokenizer"] = tok->name();
        run.provenance["haystack.key"] = h.key;
        run.provenance["haystack.needle_begin"] = std::to_string(h.needle_begin);
        run.provenance["haystack.needle_end"] = std::to_string(h.needle_end);
        run.provenance["haystack.answer_begin"] = std::to_string(h.ids.size());
        run.provenance["haystack.cell"] = spec;
        for (const auto& [k, v] : answer_haystack(*model, h, ar)) run.provenance[k] = v;
        write_trace(a.get("trace"), run);
        std::fprintf(stderr, "retrieval: wrote %s (haystack %s, key %s, needle at tokens %lld..%lld)\n",
                     a.get("trace").c_str(), spec.c_str(), h.key.c_str(), static_cast<long long>(h.needle_begin),
                     static_cast<long long>(h.needle_end));
    }
    return 0;
}

}  // namespace mambascope::cli
