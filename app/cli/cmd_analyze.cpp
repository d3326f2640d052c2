// analyze: vanilla / LongMamba / DeciMamba on one input, with probes, written as one HDF5 trace (issue 5).
// The same engine call (run_analysis) backs the GUI's Run button; `--session FILE` takes the GUI's session
// JSON.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "args.h"
#include "commands.h"
#include "input.h"
#include "mambascope/analysis.h"
#include "mambascope/error.h"
#include "mambascope/session.h"
#include "mambascope/sha256.h"
#include "mambascope/trace.h"

namespace mambascope::cli {
namespace {

std::string read_file(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    if (!f) throw Error("cannot open text file " + p.string());
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

// Text → ids (+ token strings and byte offsets). Byte-level models need no tokenizer; others go through the
// model's tokenizer (tokenize the text first and pass --ids when this build has none).
void tokenize_for(const Model& m, const std::string& text, RunInput& in) {
    if (m.config.tokenizer != "byte")
        throw Error(
            "this model is not byte-level: tokenize the text first (mambascope-cli tokenize) and pass --ids");
    in.ids.reserve(text.size());
    for (size_t i = 0; i < text.size(); ++i) {
        in.ids.push_back(static_cast<unsigned char>(text[i]));
        in.token_strings.emplace_back(1, text[i]);
        in.byte_offsets.push_back(int64_t(i));
    }
}

void print_summary(const RunResult& run) {
    std::printf("%-10s %10s %10s %14s %16s %14s %9s\n", "method", "mean NLL", "ppl", "global ch.",
                "critical frac.", "median RF end", "seconds");
    const int64_t T = int64_t(run.input.ids.size());
    for (const auto& m : run.methods) {
        double s = 0;
        for (float v : m.nll) s += v;
        const double nll = m.nll.empty() ? NAN : s / double(m.nll.size());
        int64_t globals = 0, crit = 0;
        for (size_t i = 0; i < m.global_mask.data.size(); ++i)
            if (m.global_mask.data[i]) ++globals, crit += m.critical_count.data[i];
        const double frac = globals ? double(crit) / double(globals) / double(T) : NAN;
        std::vector<int64_t> rf;  // last rf position, all layers and channels
        const int64_t P = int64_t(run.rf_positions.size()), C = run.channels;
        for (int64_t l = 0; l < run.n_layer; ++l)
            for (int64_t c = 0; c < C; ++c)
                rf.push_back(m.receptive_field.data[size_t((l * P + P - 1) * C + c)]);
        std::nth_element(rf.begin(), rf.begin() + long(rf.size() / 2), rf.end());
        std::printf("%-10s %10.4f %10.3f %14lld %16.4f %14lld %9.2f\n", method_name(m.method), nll,
                    std::exp(nll), (long long)globals, frac, (long long)rf[rf.size() / 2], m.seconds);
    }
}

}  // namespace

int cmd_analyze(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (!std::strcmp(argv[i], "--help")) {
            std::printf(
                "mambascope-cli analyze [--session FILE] [--model DIR|demo] [--text FILE|demo | --ids FILE]\n"
                "    [--calibration CAL.h5|demo|none] [--methods vanilla,longmamba,decimamba] [--channels "
                "L:C,...]\n"
                "    [--window A:B] [--rf-positions a,b] [--c C] [--b B] [--activate-above N]\n"
                "    [--attention-window N] [--max-tokens N] --out RUN.h5\n"
                "  Runs each method on the input with probes and writes one HDF5 trace "
                "(docs/trace-format.md).\n"
                "  With no model/text/calibration the embedded demo model, demo text and its calibration are "
                "used.\n");
            return 0;
        }
    Args a(argc, argv,
           {"session", "model", "text", "ids", "calibration", "methods", "channels", "window", "rf-positions",
            "c", "b", "activate-above", "attention-window", "max-tokens", "out"},
           {});
    Session s;
    std::filesystem::path base;
    // No --session: the demo session (demo model, demo text, its calibration, all three methods).
    const std::filesystem::path session_file = a.has("session") ? std::filesystem::path(a.get("session"))
                                                                : resources_dir() / "demo" / "session.json";
    s = load_session(session_file);
    base = session_file.parent_path();
    if (a.has("model")) s.model = a.get("model");
    if (a.has("text")) s.text = a.get("text"), s.ids.clear();
    if (a.has("ids")) s.ids = a.get("ids"), s.text.clear();
    if (a.has("calibration")) s.calibration = a.get("calibration") == "none" ? "" : a.get("calibration");
    auto& r = s.request;
    if (a.has("methods")) {
        r.methods.clear();
        std::stringstream ms(a.get("methods"));
        for (std::string m; std::getline(ms, m, ',');) r.methods.push_back(parse_method(m));
    }
    if (a.has("channels")) {
        r.channels.clear();
        std::stringstream cs(a.get("channels"));
        for (std::string item; std::getline(cs, item, ',');) {
            auto colon = item.find(':');
            if (colon == std::string::npos) throw Error("--channels expects L:C pairs, got '" + item + "'");
            try {
                r.channels.push_back({std::stoi(item.substr(0, colon)), std::stoll(item.substr(colon + 1))});
            } catch (const std::logic_error&) {
                throw Error("--channels expects L:C pairs of integers, got '" + item + "'");
            }
        }
    }
    if (a.has("window")) {
        const auto w = a.get("window");
        auto colon = w.find(':');
        if (colon == std::string::npos) throw Error("--window expects A:B, got '" + w + "'");
        try {
            r.window_begin = std::stoll(w.substr(0, colon));
            r.window_end = std::stoll(w.substr(colon + 1));
        } catch (const std::logic_error&) {
            throw Error("--window expects A:B with integers, got '" + w + "'");
        }
    }
    if (a.has("rf-positions")) r.rf_positions = a.get_int_list("rf-positions");
    r.c = a.get_double("c", r.c);
    r.b = a.get_double("b", r.b);
    r.activate_above = a.get_int("activate-above", r.activate_above);
    r.attention_tokens = a.get_int("attention-window", r.attention_tokens);
    s.max_tokens = a.get_int("max-tokens", s.max_tokens);
    const std::string out = a.require("out");

    const auto model_path = resolve_model_path(s.model, base);
    auto model = load_model(model_path);
    RunInput in;
    if (!s.ids.empty()) {
        auto ids = read_ids_file(resolve_text_path(s.ids, base).string());
        in.ids = ids;
    } else {
        const auto text_path = resolve_text_path(s.text.empty() ? "demo" : s.text, base);
        std::string text = read_file(text_path);
        if (s.max_tokens > 0 && model->config.tokenizer == "byte" && int64_t(text.size()) > s.max_tokens)
            text.resize(size_t(s.max_tokens));
        in.text_path = text_path.string();
        in.text_sha256 = sha256_hex(text);
        in.text_bytes = int64_t(text.size());
        tokenize_for(*model, text, in);
    }
    if (s.max_tokens > 0 && int64_t(in.ids.size()) > s.max_tokens) {
        in.ids.resize(size_t(s.max_tokens));
        if (!in.token_strings.empty()) in.token_strings.resize(size_t(s.max_tokens));
        if (!in.byte_offsets.empty()) in.byte_offsets.resize(size_t(s.max_tokens));
    }
    r.calibration_path = resolve_calibration_path(s.calibration, base);
    if (r.calibration_path.empty())
        for (Method m : r.methods)
            if (m == Method::LongMamba)
                throw Error("LongMamba needs a calibration",
                            "pass --calibration CAL.h5 (or 'demo' for the demo model)");
    auto run = run_analysis(*model, in, r, stderr_progress("analyze"));
    run.provenance["weights_sha256"] = sha256_file_hex(model->weights_file);
    run.provenance["tokenizer"] = model->config.tokenizer.empty() ? "gpt-neox-20b" : model->config.tokenizer;
    write_trace(out, run);
    std::printf("model: %s (%s, %d layers x %lld channels), input: %zu tokens (train length %lld)\n",
                model->name.c_str(), arch_name(model->config.arch), run.n_layer, (long long)run.channels,
                in.ids.size(), (long long)run.train_len);
    print_summary(run);
    std::fprintf(stderr, "analyze: wrote %s\n", out.c_str());
    return 0;
}

}  // namespace mambascope::cli
