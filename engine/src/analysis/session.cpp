// Session JSON; see mambascope/session.h.
#include "mambascope/session.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "mambascope/error.h"

namespace mambascope {
namespace {

using json = nlohmann::ordered_json;

std::filesystem::path exe_dir() {
    std::error_code ec;
    auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
    return ec ? std::filesystem::path() : p.parent_path();
}

template <class T>
T get_or(const json& j, const char* key, T fallback, const std::string& origin) {
    if (!j.contains(key)) return fallback;
    try {
        return j.at(key).get<T>();
    } catch (const json::exception&) {
        throw Error(origin + ": session key '" + key + "' has the wrong type");
    }
}

}  // namespace

std::filesystem::path resources_dir() {
    std::vector<std::filesystem::path> candidates;
    if (const char* env = std::getenv("MAMBASCOPE_RESOURCES")) candidates.emplace_back(env);
    const auto exe = exe_dir();
    if (!exe.empty()) {
        candidates.push_back(exe / ".." / "share" / "mambascope");
        candidates.push_back(exe / ".." / "resources");
        candidates.push_back(exe / ".." / ".." / "resources");
        candidates.push_back(exe / ".." / ".." / ".." / "resources");
    }
    candidates.emplace_back(MAMBASCOPE_SOURCE_RESOURCES_DIR);
    for (const auto& c : candidates)
        if (std::filesystem::exists(c / "models" / "demo-mamba1" / "config.json"))
            return std::filesystem::weakly_canonical(c);
    throw Error("the embedded resources (demo model, demo text) were not found",
                "set MAMBASCOPE_RESOURCES to the repository's resources/ directory");
}

static std::filesystem::path resolve(const std::string& s, const std::filesystem::path& base,
                                     const std::filesystem::path& demo) {
    if (s.empty()) return {};
    if (s == "demo") return resources_dir() / demo;
    std::filesystem::path p(s);
    return p.is_absolute() || base.empty() ? p : base / p;
}
std::filesystem::path resolve_model_path(const std::string& s, const std::filesystem::path& base) {
    return resolve(s, base, "models/demo-mamba1");
}
std::filesystem::path resolve_text_path(const std::string& s, const std::filesystem::path& base) {
    return resolve(s, base, "text/demo.txt");
}
std::filesystem::path resolve_calibration_path(const std::string& s, const std::filesystem::path& base) {
    return resolve(s, base, "calibration/demo-mamba1.h5");
}

Session load_session(const std::filesystem::path& file) {
    std::ifstream f(file);
    if (!f) throw Error("cannot open session file " + file.string());
    json j;
    try {
        j = json::parse(f);
    } catch (const json::parse_error& e) {
        throw Error(file.string() + ": not valid JSON (" + e.what() + ")");
    }
    if (!j.is_object()) throw Error(file.string() + ": a session is a JSON object");
    const std::string o = file.string();
    if (j.contains("format") && j["format"] != "mambascope-session")
        throw Error(o + ": not a mambascope session (format = " + j["format"].dump() + ")");
    Session s;
    s.model = get_or<std::string>(j, "model", s.model, o);
    s.text = get_or<std::string>(j, "text", s.text, o);
    s.ids = get_or<std::string>(j, "ids", s.ids, o);
    s.calibration = get_or<std::string>(j, "calibration", s.calibration, o);
    s.trace = get_or<std::string>(j, "trace", s.trace, o);
    s.max_tokens = get_or<int64_t>(j, "max_tokens", 0, o);
    s.device = get_or<std::string>(j, "device", s.device, o);
    auto& r = s.request;
    if (j.contains("methods")) {
        r.methods.clear();
        for (const auto& m : j["methods"]) r.methods.push_back(parse_method(m.get<std::string>()));
    }
    r.c = get_or<double>(j, "c", r.c, o);
    r.b = get_or<double>(j, "b", r.b, o);
    r.activate_above = get_or<int64_t>(j, "activate_above", r.activate_above, o);
    r.deci_layers = get_or<std::vector<int>>(j, "deci_layers", r.deci_layers, o);
    r.deci_L_base = get_or<int64_t>(j, "deci_L_base", r.deci_L_base, o);
    r.deci_beta = get_or<double>(j, "deci_beta", r.deci_beta, o);
    if (j.contains("channels"))
        for (const auto& c : j["channels"])
            r.channels.push_back({c.at(0).get<int>(), c.at(1).get<int64_t>()});
    r.window_begin = get_or<int64_t>(j, "window_begin", r.window_begin, o);
    r.window_end = get_or<int64_t>(j, "window_end", r.window_end, o);
    r.rf_positions = get_or<std::vector<int64_t>>(j, "rf_positions", r.rf_positions, o);
    r.attention = get_or<bool>(j, "attention", r.attention, o);
    r.attention_tokens = get_or<int64_t>(j, "attention_tokens", r.attention_tokens, o);
    r.nll = get_or<bool>(j, "nll", r.nll, o);
    if (j.contains("selected"))
        s.selected = {j["selected"].at(0).get<int>(), j["selected"].at(1).get<int64_t>()};
    s.selected_token = get_or<int64_t>(j, "selected_token", s.selected_token, o);
    s.view = get_or<std::string>(j, "view", s.view, o);
    s.statistic = get_or<std::string>(j, "statistic", s.statistic, o);
    return s;
}

void save_session(const std::filesystem::path& file, const Session& s) {
    json j;
    j["format"] = "mambascope-session";
    j["model"] = s.model;
    j["text"] = s.text;
    if (!s.ids.empty()) j["ids"] = s.ids;
    j["calibration"] = s.calibration;
    if (!s.trace.empty()) j["trace"] = s.trace;
    j["max_tokens"] = s.max_tokens;
    j["device"] = s.device;
    const auto& r = s.request;
    j["methods"] = json::array();
    for (Method m : r.methods) j["methods"].push_back(method_name(m));
    j["c"] = r.c;
    j["b"] = r.b;
    j["activate_above"] = r.activate_above;
    j["deci_layers"] = r.deci_layers;
    j["deci_L_base"] = r.deci_L_base;
    j["deci_beta"] = r.deci_beta;
    j["channels"] = json::array();
    for (const auto& c : r.channels) j["channels"].push_back({c.layer, c.channel});
    j["window_begin"] = r.window_begin;
    j["window_end"] = r.window_end;
    j["rf_positions"] = r.rf_positions;
    j["attention"] = r.attention;
    j["attention_tokens"] = r.attention_tokens;
    j["nll"] = r.nll;
    j["selected"] = {s.selected.layer, s.selected.channel};
    j["selected_token"] = s.selected_token;
    j["view"] = s.view;
    j["statistic"] = s.statistic;
    auto tmp = file;
    tmp += ".tmp-" + std::to_string(::getpid());
    {
        std::ofstream f(tmp);
        if (!f) throw Error("cannot write " + tmp.string());
        f << j.dump(2) << "\n";
        if (!f) throw Error("write failed: " + tmp.string());
    }
    std::error_code ec;
    std::filesystem::rename(tmp, file, ec);
    if (ec) {
        std::filesystem::remove(tmp, ec);
        throw Error("cannot rename to " + file.string() + ": " + ec.message());
    }
}

}  // namespace mambascope
