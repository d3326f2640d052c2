// retrieval: passkey / needle-in-a-haystack evaluation over lengths × depths × methods (method doc §10).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "dist.h"
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
            throw UsageError("bad --depths entry '" + item + "'",
                             "depths are fractions in [0, 1], e.g. 0,0.5,1");
        out.push_back(v);
    }
    return out;
}

std::vector<double> default_depths() {
    return {0.0, 0.25, 0.5, 0.75, 1.0};
}

struct RetrievalOptions {
    std::string model = "demo", filler = "demo", tokenizer, tmpl = "model", decode_filter = "keep", csv, out,
                trace, trace_cell, depths;
    DeviceOptions dev;
    LongMambaOptions lm;
    DeciOptions deci;
    DistOptions dist;
    std::vector<std::string> methods;
    std::vector<int64_t> lengths;
    int64_t samples = 5, seed = 0;
    bool no_teacher_forced = false, no_generate = false, json = false;
};

// The human summary: accuracy per length and method (mean over depths and samples), and the answers of the
// first sample at the longest length and first depth.
void print_table(const RetrievalRequest& req, const RetrievalResult& res) {
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
}

int run_retrieval_cmd(const RetrievalOptions& o) {
    if (o.trace.empty() != o.trace_cell.empty())
        throw UsageError("--trace and --trace-cell go together",
                         "e.g. --trace cell.h5 --trace-cell 16384:1:0");
    Dist dist("retrieval", o.dev.device);  // under mpirun: this rank's place and GPU (docs/scaling.md)
    const std::string& model_arg = o.model;
    const std::vector<double> depths = o.depths.empty() ? default_depths() : parse_depths(o.depths);
    const bool demo = model_arg == "demo" || model_arg == "demo-mamba2" || model_arg == "demo-mamba1";
    const std::string demo_name = model_arg == "demo-mamba1" ? "demo-mamba1" : "demo-mamba2";
    const std::filesystem::path model_dir =
        demo ? find_resource("models/" + demo_name) : std::filesystem::path(model_arg);
    auto model = load_model(model_dir);

    const std::string& filler_arg = o.filler;
    const std::filesystem::path filler_path =
        filler_arg == "demo" ? find_resource("text/demo.txt") : std::filesystem::path(filler_arg);
    TextReadOptions tro;
    const std::string filler = read_text_file(filler_path, tro);
    auto tok = input_tokenizer(o.tokenizer, model.get());

    const std::string& tmpl_name = o.tmpl;
    const PromptTemplate tmpl =
        tmpl_name == "standard" ? standard_passkey_template() : default_passkey_template(model->config);
    HaystackBuilder builder(tok, filler, tmpl);

    RetrievalRequest req;
    req.lengths = o.lengths;
    if (req.lengths.empty()) {
        const int64_t T = model->config.train_len;
        req.lengths = {T, 4 * T, 16 * T, 64 * T};
    }
    req.depths = depths;
    req.samples = static_cast<int>(o.samples);
    req.seed = static_cast<uint64_t>(o.seed);
    req.methods.clear();
    for (const auto& m :
         o.methods.empty() ? std::vector<std::string>{"vanilla", "longmamba", "decimamba"} : o.methods)
        req.methods.push_back(parse_method(m));
    const std::string cal_arg = o.lm.calibration.empty() ? (demo ? "demo" : "") : o.lm.calibration;
    if (cal_arg == "demo") {
        if (!demo)
            throw UsageError("--calibration demo belongs to the demo models", "pass the model's CAL.h5");
        req.calibration_path = find_resource("calibration/" + demo_name + ".h5");
    } else {
        req.calibration_path = cal_arg;
    }
    if (o.lm.given(o.lm.c_opt)) req.c = o.lm.c;
    if (o.lm.given(o.lm.b_opt)) req.b = o.lm.b;
    req.activate_above = o.lm.activate_above;
    req.deci.layers = o.deci.layers;
    req.deci.L_base = o.deci.lbase;
    req.deci.beta = o.deci.beta;
    req.teacher_forced = !o.no_teacher_forced;
    req.generate = !o.no_generate;
    req.decode_filter = o.decode_filter == "keep";
    req.device = parse_device(o.dev.device);
    req.precision = parse_precision(o.dev.precision);

    const std::string& spec = o.trace_cell;
    long long L = 0;
    int di = 0, s = 0;
    if (!spec.empty()) {  // checked before the (long) evaluation
        char tail = 0;
        if (std::sscanf(spec.c_str(), "%lld:%d:%d%c", &L, &di, &s, &tail) != 3 || L < 1 || di < 0 ||
            di >= static_cast<int>(req.depths.size()) || s < 0 || L > kMaxHaystackTokens)
            throw UsageError(
                "bad --trace-cell '" + spec + "'",
                "LENGTH:DEPTH_INDEX:SAMPLE with DEPTH_INDEX in 0.." + std::to_string(req.depths.size() - 1));
    }

    // run_retrieval() as work units: the haystacks spread over the ranks; rank 0 collects the rows in order.
    RetrievalJob job(*model, builder, req);
    const ProgressFn progress = dist.progress(stderr_progress("retrieval"));
    report_progress(progress, 0.0, "retrieval");
    if (!dist.run(job, o.dist, model_identity(*model), progress)) return 0;  // not rank 0: rank 0 writes
    RetrievalResult res = job.result();
    res.filler = filler_arg == "demo" ? "demo (resources/text/demo.txt)" : filler_arg;
    res.model = demo ? demo_name : model_arg;

    if (o.json) {  // the result file's JSON on stdout instead of the table
        std::string text = retrieval_json_text(res);
        if (dist.size() > 1 || !o.dist.resume.empty()) {  // + each rank's busy time (docs/scaling.md)
            nlohmann::json j = nlohmann::json::parse(text), ranks = nlohmann::json::array();
            for (size_t r = 0; r < dist.busy().size(); ++r)
                ranks.push_back(
                    {{"rank", r}, {"units", dist.busy()[r].units}, {"busy_s", dist.busy()[r].seconds}});
            j["ranks"] = std::move(ranks);
            j["resumed_units"] = dist.resumed_units();
            text = j.dump(1);
        }
        std::printf("%s\n", text.c_str());
    } else {
        print_table(req, res);
    }
    if (!o.csv.empty()) {
        write_retrieval_csv(o.csv, res);
        std::fprintf(stderr, "retrieval: wrote %s\n", o.csv.c_str());
    }
    if (!o.out.empty()) {
        write_retrieval_json(o.out, res);
        std::fprintf(stderr, "retrieval: wrote %s\n", o.out.c_str());
    }
    dist.finish(o.dist);
    if (!o.trace.empty()) {
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
        write_trace(o.trace, run);
        std::fprintf(stderr, "retrieval: wrote %s (haystack %s, key %s, needle at tokens %lld..%lld)\n",
                     o.trace.c_str(), spec.c_str(), h.key.c_str(), static_cast<long long>(h.needle_begin),
                     static_cast<long long>(h.needle_end));
    }
    return 0;
}

}  // namespace

Command add_retrieval(CLI::App& root) {
    auto o = std::make_shared<RetrievalOptions>();
    auto* app = add_command(
        root, "retrieval", "passkey retrieval over lengths x depths x methods (CSV, JSON, one cell's trace)",
        "  Passkey retrieval (method doc §10): haystacks of exactly LENGTH prompt tokens built from the\n"
        "  filler text (whitespace folded) with the needle at each depth, scored per method by\n"
        "  teacher-forced answer-token accuracy (digit accuracy for byte models; chance 0.1) and by\n"
        "  greedy generation (LongMamba's filter kept while decoding unless --decode-filter off).\n"
        "  --template model (default) uses the template in the model's config.json when it has one,\n"
        "  else the standard passkey template. --model demo is the embedded demo-mamba2 with its\n"
        "  calibration; --filler demo is the embedded eval text (Emma).");
    app->add_option("--model", o->model, "model directory, or demo / demo-mamba1 (embedded)")
        ->type_name("DIR|demo|demo-mamba1")
        ->capture_default_str();
    app->add_option("--filler", o->filler, "haystack filler text, or demo (embedded)")
        ->type_name("FILE|demo")
        ->capture_default_str()
        ->group("Input");
    app->add_option("--tokenizer", o->tokenizer, "a tokenizer.json, or byte (default: the model's tokenizer)")
        ->type_name("FILE|byte")
        ->group("Input");
    app->add_option("--lengths", o->lengths, "haystack lengths in tokens (default train_len x 1, 4, 16, 64)")
        ->delimiter(',')
        ->check(CLI::PositiveNumber)
        ->type_name("LIST");
    app->add_option("--depths", o->depths, "needle depths, fractions in [0, 1] (default 0,0.25,0.5,0.75,1)")
        ->type_name("LIST");
    app->add_option("--samples", o->samples, "haystacks per (length, depth)")
        ->check(CLI::Range(int64_t(1), int64_t(100000)))
        ->capture_default_str();
    app->add_option("--seed", o->seed, "seed of the keys and filler offsets")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app->add_option("--template", o->tmpl, "prompt template")
        ->check(CLI::IsMember({"model", "standard"}))
        ->capture_default_str();
    app->add_flag("--no-teacher-forced", o->no_teacher_forced, "skip the teacher-forced score");
    app->add_flag("--no-generate", o->no_generate, "skip greedy generation");
    app->add_option("--decode-filter", o->decode_filter, "keep LongMamba's filter while decoding")
        ->check(CLI::IsMember({"keep", "off"}))
        ->capture_default_str();
    add_methods_option(*app, o->methods, "vanilla,longmamba,decimamba");
    add_longmamba_options(*app, o->lm);
    app->get_option("--calibration")->description("LongMamba calibration, or demo (the demo model's)");
    add_deci_options(*app, o->deci);
    add_device_options(*app, o->dev, true, false);
    add_dist_options(*app, o->dist);
    app->add_option("--csv", o->csv, "one row per haystack and method")
        ->type_name("OUT.csv")
        ->group("Output");
    app->add_option("--out", o->out, "the result file (JSON) for the GUI's retrieval view (--retrieval FILE)")
        ->type_name("OUT.json")
        ->group("Output");
    app->add_flag("--json", o->json, "print the result as JSON on stdout instead of the table")
        ->group("Output");
    auto* trace = app->add_option("--trace", o->trace, "the HDF5 trace of one cell's haystack")
                      ->type_name("OUT.h5")
                      ->group("Output");
    app->add_option("--trace-cell", o->trace_cell, "the cell of --trace")
        ->type_name("LENGTH:DEPTH_INDEX:SAMPLE")
        ->group("Output");
    (void)trace;
    add_progress_option(*app);
    return {app, [o] { return run_retrieval_cmd(*o); }};
}

}  // namespace mambascope::cli
