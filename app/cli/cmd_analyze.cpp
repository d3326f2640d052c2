// analyze: one input through several methods with probes, written as an HDF5 trace (issue 5 item 3).
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include <optional>
#include "args.h"
#include "commands.h"
#include "input.h"
#include "mambascope/analysis.h"
#include "mambascope/error.h"
#include "mambascope/resources.h"
#include "mambascope/calibration.h"
#include "mambascope/retrieval.h"
#include "mambascope/session.h"
#include "mambascope/sha256.h"
#include "mambascope/tokenizer.h"
#include "mambascope/trace.h"

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

}  // namespace

int cmd_analyze(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (!std::strcmp(argv[i], "--help")) {
            std::printf(
                "mambascope-cli analyze --model DIR (--text FILE | --ids FILE) [--calibration CAL.h5]\n"
                "    [--methods vanilla,longmamba,decimamba] [--channels L:C,...] [--window A:B]\n"
                "    [--rf-positions a,b] [--c C] [--b B] [--activate-above N] [--attention-window N]\n"
                "    [--no-attention] [--session FILE] [--max-tokens N] [--device cpu|cuda|auto] --out "
                "RUN.h5\n"
                "  Runs the input through each method with probes (Δ sums, log decay, global channels,\n"
                "  critical tokens, receptive fields, Δ windows and hidden attention of detail channels)\n"
                "  and writes an HDF5 trace (docs/trace-format.md). Prints a comparison table.\n");
            return 0;
        }
    Args a(argc, argv,
           {"model", "text", "ids", "calibration", "methods", "channels", "window", "rf-positions", "c", "b",
            "activate-above", "attention-window", "out", "tokenizer", "random-shape", "random-tokens",
            "session", "max-tokens", "device"},
           {"replace-invalid", "no-attention"});
    const std::string out = a.require("out");

    // Numeric options are checked before any work: a negative or empty value is an error, never a default.
    const int64_t max_tokens = a.get_int("max-tokens", 0);
    if (a.has("max-tokens") && max_tokens < 2)
        throw Error("--max-tokens must be an integer of at least 2, got " + a.get("max-tokens"),
                    "e.g. --max-tokens 4096");
    const int64_t attention_window = a.get_int("attention-window", 1);
    if (attention_window < 1)
        throw Error("--attention-window must be a positive integer, got " + a.get("attention-window"),
                    "e.g. --attention-window 256 (at most " + std::to_string(kMaxAttentionTokens) + ")");
    std::pair<int64_t, int64_t> window{0, -1};
    if (a.has("window")) {
        const std::string w = a.get("window");
        const auto colon = w.find(':');
        const auto parse = [](std::string_view s, int64_t& v) {
            const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
            return !s.empty() && ec == std::errc() && p == s.data() + s.size();
        };
        const std::string hint = "use BEGIN:END token positions with 0 <= BEGIN < END, e.g. 0:4096";
        if (colon == std::string::npos || !parse(std::string_view(w).substr(0, colon), window.first) ||
            !parse(std::string_view(w).substr(colon + 1), window.second))
            throw Error("bad --window '" + w + "': not two integers BEGIN:END", hint);
        if (window.first < 0 || window.second < 0)
            throw Error("bad --window '" + w + "': token positions must not be negative", hint);
        if (window.second <= window.first)
            throw Error("bad --window '" + w + "': the window is empty (END must be greater than BEGIN)",
                        hint);
    }

    // A session (--session FILE, or the demo session when no model is named) supplies model, text,
    // calibration and parameters; explicit options override it.
    std::optional<Session> session;
    if (a.has("session"))
        session = load_session(a.get("session"));
    else if (!a.has("model") && !a.has("random-shape"))
        session = load_session(find_resource("demo/session.json"));

    // Model: a directory, or (hidden, for memory benchmarks) random weights of a real shape.
    std::shared_ptr<const Model> model;
    if (!a.has("model") && !a.has("random-shape") && session) {
        model = load_model(resolve_model_path(*session));
    } else if (a.has("random-shape")) {
        model = random_model(reference_config(a.get("random-shape")), 1);
    } else {
        model = load_model(a.require("model"));
    }

    RunInput in;
    std::map<std::string, std::string> haystack_provenance;
    if (a.has("random-tokens")) {
        std::mt19937 rng(7);
        const int64_t n = a.get_int("random-tokens", 0);
        if (n < 2 || n > (int64_t(1) << 31))
            throw Error("--random-tokens must be between 2 and 2^31, not " + std::to_string(n));
        in.ids.resize(static_cast<size_t>(n));
        for (auto& id : in.ids)
            id = static_cast<int32_t>(rng() % static_cast<uint32_t>(model->config.vocab_size));
    } else if (session && !a.has("ids") && !a.has("text") && session->haystack.length > 0) {
        // The session's input is a passkey haystack (method doc §10.2).
        in = session_haystack_input(*session, *model, nullptr, &haystack_provenance);
    } else if (session && !a.has("ids") && !a.has("text")) {
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
        const int64_t cap = a.has("max-tokens") ? max_tokens : session->max_tokens;
        if (cap > 0 && int64_t(in.ids.size()) > cap) in.ids.resize(size_t(cap)), offsets.resize(size_t(cap));
        for (size_t i = 0; i < in.ids.size(); ++i) {
            const int64_t end = i + 1 < offsets.size() ? offsets[i + 1] : int64_t(text.size());
            in.token_strings.push_back(text.substr(size_t(offsets[i]), size_t(end - offsets[i])));
        }
        in.byte_offsets = std::move(offsets);
    } else {
        in.ids = read_input_ids(a, *model);
    }
    if (a.has("max-tokens") && int64_t(in.ids.size()) > max_tokens) in.ids.resize(size_t(max_tokens));
    if (a.has("text")) {
        const std::string text = read_text(a.get("text"));
        in.text_path = std::filesystem::absolute(a.get("text")).string();
        in.text_sha256 = sha256_hex(text);
        in.text_bytes = static_cast<int64_t>(text.size());
    }

    AnalysisRequest req;
    if (session) req = session_request(*session);
    if (a.has("methods") || !session) {
        req.methods.clear();
        std::stringstream ms(a.get("methods", "vanilla,longmamba"));
        for (std::string m; std::getline(ms, m, ',');) req.methods.push_back(parse_method(m));
    }
    if (a.has("calibration")) req.calibration_path = a.get("calibration");
    if (a.has("channels")) req.channels = parse_channels(a.get("channels"));
    if (a.has("window")) {
        req.window_begin = window.first;
        req.window_end = window.second;
    }
    if (a.has("rf-positions")) req.rf_positions = a.get_int_list("rf-positions");
    req.c = a.get_double("c", req.c);
    req.b = a.get_double("b", req.b);
    req.activate_above = a.get_int("activate-above", req.activate_above);
    if (a.has("attention-window")) req.attention_tokens = attention_window;
    req.attention = !a.has("no-attention");
    if (a.has("device")) req.device = parse_device(a.get("device"));

    const long rss_before = peak_rss_kb();
    RunResult run = run_analysis(*model, in, req, stderr_progress("analyze"));
    if (run.provenance.count("device_note"))
        std::fprintf(stderr, "note: %s\n", run.provenance["device_note"].c_str());
    const long rss_run = peak_rss_kb();
    run.provenance["model_path"] =
        model->dir.empty() ? "(random weights)" : std::filesystem::absolute(model->dir).string();
    run.provenance["model_name"] = a.has("random-shape") ? "random " + a.get("random-shape") : model->name;
    run.provenance["arch"] = arch_name(model->config.arch);
    if (!model->dir.empty() && std::filesystem::exists(model->dir / "config.json"))
        run.provenance["config_json"] = read_text(model->dir / "config.json");
    if (!model->weights_file.empty() && std::filesystem::exists(model->weights_file))
        run.provenance["weights_sha256"] = sha256_file(model->weights_file);
    run.provenance["tokenizer"] = a.has("ids") || a.has("random-tokens")
                                      ? "none (ids given)"
                                      : a.get("tokenizer", model->config.tokenizer);
    std::string cmdline;
    for (int i = 0; i < argc; ++i) cmdline += (i ? " " : "") + std::string(argv[i]);
    run.provenance["command_line"] = "mambascope-cli " + cmdline;
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

    std::printf("%-10s %10s %12s %8s %14s %14s %8s\n", "method", "mean NLL", "perplexity", "global",
                "crit. frac.", "median RF end", "seconds");
    const int64_t T = static_cast<int64_t>(run.input.ids.size());
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
        std::printf("%-10s %10.4f %12.3f %8lld %14.4f %14.0f %8.2f\n", method_name(m.method), mean,
                    std::exp(mean), static_cast<long long>(n_global), frac, median(rf), m.seconds);
    }
    if (!answers.empty()) {
        std::printf("\npasskey haystack: %s tokens, needle at tokens %s..%s, key %s\n",
                    haystack_provenance["haystack.length"].c_str(),
                    haystack_provenance["haystack.needle_begin"].c_str(),
                    haystack_provenance["haystack.needle_end"].c_str(), haystack_provenance["haystack.key"].c_str());
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

}  // namespace mambascope::cli
