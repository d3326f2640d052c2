// analyze: one input through several methods with probes, written as an HDF5 trace (issue 5 item 3).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <sstream>

#include "commands.h"
#include "input.h"
#include "mambascope/analysis.h"
#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/resources.h"
#include "mambascope/retrieval.h"
#include "mambascope/session.h"
#include "mambascope/sha256.h"
#include "mambascope/tokenizer.h"
#include "mambascope/trace.h"
#include "nlohmann/json.hpp"

namespace mambascope::cli {
namespace {

std::vector<ChannelRef> parse_channels(const std::string& s) {
    std::vector<ChannelRef> out;
    std::stringstream ss(s);
    for (std::string item; std::getline(ss, item, ',');) {
        const auto colon = item.find(':');
        try {
            if (colon == std::string::npos) throw std::invalid_argument(item);
            out.push_back({std::stoi(item.substr(0, colon)), std::stoll(item.substr(colon + 1))});
        } catch (const std::exception&) {
            throw Error("bad --channels entry '" + item + "'", "use LAYER:CHANNEL pairs, e.g. 12:345,12:7");
        }
    }
    return out;
}

std::string read_text(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    if (!f) throw Error("cannot read " + p.string());
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

double median(std::vector<double> v) {
    if (v.empty()) return NAN;
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
}

long peak_rss_kb() {
    std::ifstream f("/proc/self/status");
    for (std::string line; std::getline(f, line);)
        if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
    return -1;
}

struct AnalyzeOptions {
    std::string model, out, session, channels, window, random_shape;
    InputOptions in;
    DeviceOptions dev;
    LongMambaOptions lm;
    DeciOptions deci;
    std::vector<std::string> methods;
    std::vector<int64_t> rf_positions;
    int64_t max_tokens = 0, attention_window = 1, random_tokens = 0;
    bool no_attention = false, json = false;
    CLI::Option *max_tokens_opt = nullptr, *attention_opt = nullptr, *deci_layers_opt = nullptr,
                *deci_lbase_opt = nullptr, *deci_beta_opt = nullptr, *device_opt = nullptr;
    std::string command_line;
};

bool given(const CLI::Option* o) {
    return o && o->count() > 0;
}

int run_analyze(const AnalyzeOptions& o) {
    const std::string& out = o.out;
    const int64_t max_tokens = o.max_tokens;
    std::pair<int64_t, int64_t> window{0, -1};
    if (!o.window.empty()) window = parse_range("--window", o.window);
    const bool has_text = !o.in.text.empty(), has_ids = !o.in.ids.empty();

    // A session (--session FILE, or the demo session when no model is named) supplies model, text,
    // calibration and parameters; explicit options override it.
    std::optional<Session> session;
    if (!o.session.empty())
        session = load_session(o.session);
    else if (o.model.empty() && o.random_shape.empty())
        session = load_session(find_resource("demo/session.json"));

    // Model: a directory, or (hidden, for memory benchmarks) random weights of a real shape.
    std::shared_ptr<const Model> model;
    if (o.model.empty() && o.random_shape.empty() && session) {
        model = load_model(resolve_model_path(*session));
    } else if (!o.random_shape.empty()) {
        model = random_model(reference_config(o.random_shape), 1);
    } else {
        model = load_model(o.model);
    }

    RunInput in;
    std::map<std::string, std::string> haystack_provenance;
    if (o.random_tokens > 0) {
        std::mt19937 rng(7);
        const int64_t n = o.random_tokens;
        in.ids.resize(static_cast<size_t>(n));
        for (auto& id : in.ids)
            id = static_cast<int32_t>(rng() % static_cast<uint32_t>(model->config.vocab_size));
    } else if (session && !has_ids && !has_text && session->haystack.length > 0) {
        // The session's input is a passkey haystack (method doc §10.2).
        in = session_haystack_input(*session, *model, nullptr, &haystack_provenance);
    } else if (session && !has_ids && !has_text) {
        // Pasted text saved in the session wins over its text file (as in the GUI).
        const bool pasted = !session->input_text.empty();
        const auto text_path = pasted ? std::filesystem::path() : resolve_text_path(*session);
        const std::string text = pasted ? session->input_text : read_text(text_path);
        auto tok = choose_tokenizer(model->dir, model->config.tokenizer);
        std::vector<int64_t> offsets;
        in.ids = tok->encode_with_offsets(text, offsets);
        if (in.ids.size() < 2)
            throw Error("the session's input has fewer than 2 tokens", "give a longer text");
        in.text_path = pasted ? std::string("(pasted text)") : std::filesystem::absolute(text_path).string();
        in.text_sha256 = sha256_hex(text);
        in.text_bytes = static_cast<int64_t>(text.size());
        const int64_t cap = given(o.max_tokens_opt) ? max_tokens : session->max_tokens;
        if (cap > 0 && int64_t(in.ids.size()) > cap) in.ids.resize(size_t(cap)), offsets.resize(size_t(cap));
        for (size_t i = 0; i < in.ids.size(); ++i) {
            const int64_t end = i + 1 < offsets.size() ? offsets[i + 1] : int64_t(text.size());
            in.token_strings.push_back(text.substr(size_t(offsets[i]), size_t(end - offsets[i])));
        }
        in.byte_offsets = std::move(offsets);
    } else {
        in.ids = read_input_ids(o.in, *model);
    }
    if (given(o.max_tokens_opt) && int64_t(in.ids.size()) > max_tokens) in.ids.resize(size_t(max_tokens));
    if (has_text && o.in.text != "-") {
        const std::string text = read_text(o.in.text);
        in.text_path = std::filesystem::absolute(o.in.text).string();
        in.text_sha256 = sha256_hex(text);
        in.text_bytes = static_cast<int64_t>(text.size());
    }

    AnalysisRequest req;
    if (session) req = session_request(*session);
    if (!o.methods.empty() || !session) {
        req.methods.clear();
        for (const auto& m : o.methods.empty() ? std::vector<std::string>{"vanilla", "longmamba"} : o.methods)
            req.methods.push_back(parse_method(m));
    }
    if (!o.lm.calibration.empty()) req.calibration_path = o.lm.calibration;
    if (!o.channels.empty()) req.channels = parse_channels(o.channels);
    if (!o.window.empty()) {
        req.window_begin = window.first;
        req.window_end = window.second;
    }
    if (!o.rf_positions.empty()) req.rf_positions = o.rf_positions;
    if (o.lm.given(o.lm.c_opt)) req.c = o.lm.c;
    if (o.lm.given(o.lm.b_opt)) req.b = o.lm.b;
    if (o.lm.given(o.lm.activate_opt)) req.activate_above = o.lm.activate_above;
    if (given(o.deci_layers_opt)) req.deci.layers = o.deci.layers;
    if (given(o.deci_lbase_opt)) req.deci.L_base = o.deci.lbase;
    if (given(o.deci_beta_opt)) req.deci.beta = o.deci.beta;
    if (given(o.attention_opt)) req.attention_tokens = o.attention_window;
    req.attention = !o.no_attention;
    if (given(o.device_opt)) req.device = parse_device(o.dev.device);

    const long rss_before = peak_rss_kb();
    RunResult run =
        run_analysis(*model, in, req,
                     stderr_progress("analyze", double(in.ids.size()) * double(req.methods.size()), "tok"));
    if (run.provenance.count("device_note"))
        std::fprintf(stderr, "note: %s\n", run.provenance["device_note"].c_str());
    const long rss_run = peak_rss_kb();
    run.provenance["model_path"] =
        model->dir.empty() ? "(random weights)" : std::filesystem::absolute(model->dir).string();
    run.provenance["model_name"] = !o.random_shape.empty() ? "random " + o.random_shape : model->name;
    run.provenance["arch"] = arch_name(model->config.arch);
    if (!model->dir.empty() && std::filesystem::exists(model->dir / "config.json"))
        run.provenance["config_json"] = read_text(model->dir / "config.json");
    if (!model->weights_file.empty() && std::filesystem::exists(model->weights_file))
        run.provenance["weights_sha256"] = sha256_file(model->weights_file);
    run.provenance["tokenizer"] = has_ids || o.random_tokens > 0
                                      ? "none (ids given)"
                                      : (o.in.tokenizer.empty() ? model->config.tokenizer : o.in.tokenizer);
    run.provenance["command_line"] = o.command_line;
    for (const auto& [k, v] : haystack_provenance) run.provenance[k] = v;

    // A haystack session also answers the question with each method (greedy, the filter kept; §9.1, §10.3).
    std::vector<std::string> answers;
    if (!haystack_provenance.empty()) {
        Haystack h;
        session_haystack_input(*session, *model, &h);
        for (const auto& [k, v] : answer_haystack(*model, h, req)) run.provenance[k] = v;
        for (Method m : req.methods) {
            const std::string name = method_name(m);
            if (!run.provenance.count("haystack.answer." + name)) continue;
            char line[256];
            std::snprintf(line, sizeof line, "%-10s answered \"%s\" (%s); teacher-forced %s/%s digits",
                          name.c_str(), run.provenance["haystack.answer." + name].c_str(),
                          run.provenance["haystack.answer_correct." + name] == "1" ? "right" : "wrong",
                          run.provenance["haystack.tf_correct." + name].c_str(),
                          run.provenance["haystack.tf_total." + name].c_str());
            answers.push_back(line);
        }
    }

    const auto tw = std::chrono::steady_clock::now();
    write_trace(out, run);
    const double write_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - tw).count();
    const long rss_end = peak_rss_kb();

    const int64_t T = static_cast<int64_t>(run.input.ids.size());
    nlohmann::json summary = {{"trace", out}, {"tokens", T}, {"methods", nlohmann::json::array()}};
    if (!o.json)
        std::printf("%-10s %10s %12s %8s %14s %14s %8s\n", "method", "mean NLL", "perplexity", "global",
                    "crit. frac.", "median RF end", "seconds");
    for (const auto& m : run.methods) {
        double sum = 0;
        for (float v : m.nll) sum += v;
        const double mean = m.nll.empty() ? NAN : sum / static_cast<double>(m.nll.size());
        int64_t n_global = 0, crit = 0;
        for (size_t k = 0; k < m.global_mask.data.size(); ++k)
            if (m.global_mask.data[k]) ++n_global, crit += m.critical_count.data[k];
        const double frac = n_global ? static_cast<double>(crit) / (static_cast<double>(n_global) * T) : 0.0;
        // median RF over every (layer, channel) at the last rf position
        const int64_t P = static_cast<int64_t>(run.rf_positions.size()), C = run.channels;
        std::vector<double> rf;
        for (int l = 0; l < run.n_layer; ++l)
            for (int64_t c = 0; c < C; ++c)
                rf.push_back(static_cast<double>(
                    m.receptive_field.data[static_cast<size_t>((l * P + P - 1) * C + c)]));
        const double rf_median = median(rf);
        nlohmann::json row = {{"method", method_name(m.method)},
                              {"mean_nll", nullptr},
                              {"perplexity", nullptr},
                              {"global_channels", n_global},
                              {"critical_fraction", frac},
                              {"median_rf_end", nullptr},
                              {"seconds", m.seconds}};
        if (std::isfinite(mean)) row["mean_nll"] = mean, row["perplexity"] = std::exp(mean);
        if (std::isfinite(rf_median)) row["median_rf_end"] = rf_median;
        summary["methods"].push_back(row);
        if (!o.json)
            std::printf("%-10s %10.4f %12.3f %8lld %14.4f %14.0f %8.2f\n", method_name(m.method), mean,
                        std::exp(mean), static_cast<long long>(n_global), frac, rf_median, m.seconds);
    }
    if (!haystack_provenance.empty()) {
        const auto number = [&](const std::string& key) -> nlohmann::json {
            try {
                return std::stoll(haystack_provenance[key]);
            } catch (const std::exception&) {
                return nullptr;
            }
        };
        nlohmann::json h = {{"length", number("haystack.length")},
                            {"needle_begin", number("haystack.needle_begin")},
                            {"needle_end", number("haystack.needle_end")},
                            {"key", haystack_provenance["haystack.key"]},
                            {"answers", nlohmann::json::object()}};
        for (Method m : req.methods) {
            const std::string name = method_name(m);
            if (!run.provenance.count("haystack.answer." + name)) continue;
            h["answers"][name] = {{"answer", run.provenance["haystack.answer." + name]},
                                  {"correct", run.provenance["haystack.answer_correct." + name] == "1"}};
        }
        summary["haystack"] = h;
    }
    if (o.json) {
        std::printf("%s\n", summary.dump(2).c_str());
    } else if (!answers.empty()) {
        std::printf("\npasskey haystack: %s tokens, needle at tokens %s..%s, key %s\n",
                    haystack_provenance["haystack.length"].c_str(),
                    haystack_provenance["haystack.needle_begin"].c_str(),
                    haystack_provenance["haystack.needle_end"].c_str(),
                    haystack_provenance["haystack.key"].c_str());
        for (const auto& l : answers) std::printf("  %s\n", l.c_str());
    }
    std::fprintf(
        stderr,
        "analyze: wrote %s (%lld bytes, %.2f s); peak RSS %ld MB before, %ld MB after the run, %ld MB after "
        "writing\n",
        out.c_str(), static_cast<long long>(std::filesystem::file_size(out)), write_s, rss_before / 1024,
        rss_run / 1024, rss_end / 1024);
    return 0;
}

}  // namespace

Command add_analyze(CLI::App& root) {
    auto o = std::make_shared<AnalyzeOptions>();
    auto* app = add_command(
        root, "analyze", "vanilla / LongMamba / DeciMamba on one input, probes -> HDF5 trace",
        "  Runs the input through each method with probes (Δ sums, log decay, global channels, critical\n"
        "  tokens, receptive fields, Δ windows and hidden attention of detail channels) and writes an HDF5\n"
        "  trace (docs/trace-format.md). Prints a comparison table (--json: a JSON summary). With no\n"
        "  --model, --session or input: the embedded demo session.");
    app->add_option("--model", o->model, "model directory (default: the session's)")->type_name("DIR");
    app->add_option("--session", o->session, "a session file: model, text, calibration and parameters")
        ->type_name("FILE");
    add_input_options(*app, o->in);
    o->max_tokens_opt = app->add_option("--max-tokens", o->max_tokens, "keep the first N tokens of the input")
                            ->check(CLI::Range(int64_t(2), std::numeric_limits<int64_t>::max()))
                            ->type_name("N")
                            ->group("Input");
    app->add_option("--out", o->out, "output trace")->type_name("RUN.h5")->required()->group("Output");
    app->add_flag("--json", o->json, "print the summary as one JSON object instead of the table")
        ->group("Output");
    add_methods_option(*app, o->methods, "vanilla,longmamba");
    add_longmamba_options(*app, o->lm);
    add_deci_options(*app, o->deci);
    o->deci_layers_opt = app->get_option("--deci-layers");
    o->deci_lbase_opt = app->get_option("--deci-lbase");
    o->deci_beta_opt = app->get_option("--deci-beta");
    app->add_option("--channels", o->channels, "detail channels (Δ windows, hidden attention)")
        ->type_name("L:C,...")
        ->group("Probes");
    app->add_option("--window", o->window, "token window of the detail probes")
        ->type_name("A:B")
        ->group("Probes");
    app->add_option("--rf-positions", o->rf_positions, "positions where receptive fields are measured")
        ->delimiter(',')
        ->check(CLI::NonNegativeNumber)
        ->type_name("LIST")
        ->group("Probes");
    o->attention_opt =
        app->add_option("--attention-window", o->attention_window,
                        "tokens of hidden attention (at most " + std::to_string(kMaxAttentionTokens) + ")")
            ->check(CLI::PositiveNumber)
            ->type_name("N")
            ->group("Probes");
    app->add_flag("--no-attention", o->no_attention, "skip hidden attention")->group("Probes");
    add_device_options(*app, o->dev, false, false);
    o->device_opt = app->get_option("--device");
    add_progress_option(*app);
    // hidden: random weights of a real shape and random tokens, for memory benchmarks (docs/benchmarks.md)
    app->add_option("--random-shape", o->random_shape, "")->group("");
    app->add_option("--random-tokens", o->random_tokens, "")
        ->check(CLI::Range(int64_t(2), int64_t(1) << 31))
        ->group("");
    return {app, [o] {
                o->command_line = command_line();
                return run_analyze(*o);
            }};
}

}  // namespace mambascope::cli
