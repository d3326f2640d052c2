// Session files (session.h).
#include "mambascope/session.h"

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <system_error>
#include <type_traits>

#include "io/json_limits.h"
#include "mambascope/atomic_file.h"
#include "mambascope/error.h"
#include "mambascope/resources.h"
#include "mambascope/text.h"

namespace mambascope {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kSessionVersion = 1;
// A session nests three levels; deeper input is refused before nlohmann builds or copies it.
constexpr int kMaxSessionDepth = 64;
// Longest excerpt of a library message or JSON value echoed in an error.
constexpr size_t kMaxEcho = 200;

std::string session_to_json(const Session& s) {
    json j;
    j["mambascope_session"] = kSessionVersion;
    j["model"] = s.model;
    j["text"] = s.text;
    if (!s.input_text.empty()) j["input_text"] = s.input_text;
    if (!s.trace.empty()) j["trace"] = s.trace;
    j["calibration"] = s.calibration;
    json methods = json::array();
    for (auto m : s.methods) methods.push_back(method_name(m));
    j["methods"] = methods;
    j["c"] = s.c;
    j["b"] = s.b;
    j["activate_above"] = s.activate_above;
    j["deci"] = {{"layers", s.deci.layers}, {"L_base", s.deci.L_base}, {"beta", s.deci.beta}};
    j["max_tokens"] = s.max_tokens;
    j["device"] = device_name(s.device);
    if (!s.sweep.empty()) j["sweep"] = s.sweep;
    if (!s.retrieval.empty()) j["retrieval"] = s.retrieval;
    if (s.haystack.length > 0)
        j["haystack"] = {{"length", s.haystack.length},
                         {"depth", s.haystack.depth},
                         {"depth_index", s.haystack.depth_index},
                         {"sample", s.haystack.sample},
                         {"seed", s.haystack.seed},
                         {"filler", s.haystack.filler},
                         {"template", s.haystack.prompt}};
    j["selection"] = {
        {"layer", s.selected_layer}, {"channel", s.selected_channel}, {"token", s.selected_token}};
    j["view"] = s.view;
    j["view_state"] = {{"channel_map", s.channel_map_statistic}, {"tokens", s.tokens_colour}};
    if (!s.view_ranges.empty()) {
        json r = json::object();
        for (const auto& [k, v] : s.view_ranges) r[k] = {v[0], v[1]};
        j["view_state"]["ranges"] = r;
    }
    if (!s.hidden_methods.empty()) j["view_state"]["hidden_methods"] = s.hidden_methods;
    if (s.difference_map) j["view_state"]["difference_map"] = true;
    if (!s.detail_channels.empty()) {
        json ch = json::array();
        for (const auto& c : s.detail_channels) ch.push_back({c.layer, c.channel});
        j["channels"] = ch;
    }
    return j.dump(2) + "\n";
}

// An integer of type T: nlohmann would truncate 1.5 to 1 and 2^40 to 0 without a word. A float with an
// integral value (4096.0, as some JSON writers print it) is accepted.
template <class T>
static T checked_integer(const json& v, const std::string& origin, const std::string& key) {
    if (v.is_number_float()) {
        const double d = v.get<double>();
        if (d > -9.0e15 && d < 9.0e15 && static_cast<double>(static_cast<int64_t>(d)) == d)
            return checked_integer<T>(json(static_cast<int64_t>(d)), origin, key);
    }
    bool ok = v.is_number_integer();
    if (ok && v.is_number_unsigned()) {
        ok = v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
    } else if (ok) {
        const int64_t x = v.get<int64_t>();
        if constexpr (std::is_unsigned_v<T>)
            ok = x >= 0;
        else
            ok = x >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
                 x <= static_cast<int64_t>(std::numeric_limits<T>::max());
    }
    if (!ok) {
        std::string got = v.dump(-1, ' ', false, json::error_handler_t::replace);
        if (got.size() > kMaxEcho) got = got.substr(0, kMaxEcho) + "...";
        throw Error(origin + ": session key '" + key + "' must be an integer in [" +
                        std::to_string(std::numeric_limits<T>::min()) + ", " +
                        std::to_string(std::numeric_limits<T>::max()) + "], got " + got,
                    "see docs/user-guide.md for the session format");
    }
    return v.get<T>();
}

template <class T>
static void get_opt(const json& j, const char* key, T& out, const std::string& origin,
                    const std::string& scope = {}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    const std::string name = scope + key;
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
        out = checked_integer<T>(*it, origin, name);
    } else if constexpr (std::is_same_v<T, std::vector<int>>) {
        if (!it->is_array()) throw Error(origin + ": session key '" + name + "' must be a list of integers");
        std::vector<int> v;
        for (size_t i = 0; i < it->size(); ++i)
            v.push_back(checked_integer<int>((*it)[i], origin, name + "[" + std::to_string(i) + "]"));
        out = std::move(v);
    } else {
        try {
            out = it->get<T>();
        } catch (const json::exception& e) {
            throw Error(origin + ": session key '" + name + "' has the wrong type (" +
                            std::string(e.what()).substr(0, kMaxEcho) + ")",
                        "see docs/user-guide.md for the session format");
        }
    }
}

Session session_from_json(std::string_view text, const std::string& origin, const fs::path& base_dir) {
    check_json_nesting(text, origin, kMaxSessionDepth);  // before nlohmann builds or copies anything
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception& e) {
        // parse_error and out_of_range (a number like 1e400) alike.
        throw Error(origin + ": not valid JSON (" + std::string(e.what()).substr(0, kMaxEcho) + ")",
                    "a session file is the JSON Mambascope saves");
    }
    if (!j.is_object()) throw Error(origin + ": a session must be a JSON object");
    Session s;
    s.base_dir = base_dir;
    get_opt(j, "model", s.model, origin);
    get_opt(j, "text", s.text, origin);
    get_opt(j, "trace", s.trace, origin);
    get_opt(j, "calibration", s.calibration, origin);
    if (auto it = j.find("methods"); it != j.end()) {
        if (!it->is_array()) throw Error(origin + ": 'methods' must be a list of names");
        s.methods.clear();
        for (const auto& m : *it) {
            if (!m.is_string()) throw Error(origin + ": 'methods' must be a list of names");
            s.methods.push_back(parse_method(m.get<std::string>()));
        }
    }
    get_opt(j, "c", s.c, origin);
    get_opt(j, "b", s.b, origin);
    get_opt(j, "activate_above", s.activate_above, origin);
    if (auto it = j.find("deci"); it != j.end() && it->is_object()) {
        get_opt(*it, "layers", s.deci.layers, origin, "deci.");
        get_opt(*it, "L_base", s.deci.L_base, origin, "deci.");
        get_opt(*it, "beta", s.deci.beta, origin, "deci.");
        // Layer indices are checked against the model's n_layer when the request runs
        // (resolve_deci_params); here they must at least be layer numbers.
        for (const int l : s.deci.layers)
            if (l < 0) throw Error(origin + ": deci.layers holds the negative layer " + std::to_string(l));
    }
    get_opt(j, "max_tokens", s.max_tokens, origin);
    get_opt(j, "input_text", s.input_text, origin);
    get_opt(j, "sweep", s.sweep, origin);
    get_opt(j, "retrieval", s.retrieval, origin);
    if (auto it = j.find("haystack"); it != j.end() && !it->is_null()) {
        if (!it->is_object()) throw Error(origin + ": 'haystack' must be an object");
        auto& h = s.haystack;
        get_opt(*it, "length", h.length, origin, "haystack.");
        get_opt(*it, "depth", h.depth, origin, "haystack.");
        get_opt(*it, "depth_index", h.depth_index, origin, "haystack.");
        get_opt(*it, "sample", h.sample, origin, "haystack.");
        get_opt(*it, "seed", h.seed, origin, "haystack.");
        get_opt(*it, "filler", h.filler, origin, "haystack.");
        get_opt(*it, "template", h.prompt, origin, "haystack.");
        if (h.length < 0) throw Error(origin + ": haystack.length must be positive");
        if (!(h.depth >= 0 && h.depth <= 1)) throw Error(origin + ": haystack.depth must be in [0, 1]");
        if (h.depth_index < 0 || h.sample < 0)
            throw Error(origin + ": haystack.depth_index and haystack.sample must be non-negative");
        if (h.prompt != "model" && h.prompt != "standard")
            throw Error(origin + ": haystack.template must be \"model\" or \"standard\"");
    }
    {
        std::string dev = device_name(s.device);
        get_opt(j, "device", dev, origin);
        try {
            s.device = parse_device(dev);
        } catch (const Error&) {
            throw Error(origin + ": session key 'device' must be \"cpu\", \"cuda\" or \"auto\", not \"" +
                        dev + "\"");
        }
    }
    if (find_invalid_utf8(s.input_text) != std::string_view::npos)
        throw Error(origin + ": 'input_text' is not valid UTF-8", "paste the text again or use a text file");
    if (auto it = j.find("selection"); it != j.end() && it->is_object()) {
        get_opt(*it, "layer", s.selected_layer, origin, "selection.");
        get_opt(*it, "channel", s.selected_channel, origin, "selection.");
        get_opt(*it, "token", s.selected_token, origin, "selection.");
    }
    get_opt(j, "view", s.view, origin);
    if (auto it = j.find("view_state"); it != j.end() && it->is_object()) {
        get_opt(*it, "channel_map", s.channel_map_statistic, origin, "view_state.");
        get_opt(*it, "tokens", s.tokens_colour, origin, "view_state.");
        get_opt(*it, "hidden_methods", s.hidden_methods, origin, "view_state.");
        for (const auto& m : s.hidden_methods) (void)parse_method(m);  // Error on an unknown name
        get_opt(*it, "difference_map", s.difference_map, origin, "view_state.");
        if (auto r = it->find("ranges"); r != it->end() && !r->is_null()) {
            if (!r->is_object()) throw Error(origin + ": view_state.ranges must be an object");
            for (const auto& [k, v] : r->items()) {
                if (!v.is_array() || v.size() != 2 || !v[0].is_number() || !v[1].is_number() ||
                    !(v[0].get<double>() < v[1].get<double>()))
                    throw Error(origin + ": view_state.ranges." + k +
                                " must be [lower, upper] with lower < upper");
                s.view_ranges[k] = {v[0].get<double>(), v[1].get<double>()};
            }
        }
    }
    if (auto it = j.find("channels"); it != j.end() && !it->is_null()) {
        if (!it->is_array())
            throw Error(origin + ": session key 'channels' must be a list of [layer, channel]");
        for (size_t i = 0; i < it->size(); ++i) {
            const json& c = (*it)[i];
            const std::string key = "channels[" + std::to_string(i) + "]";
            if (!c.is_array() || c.size() != 2)
                throw Error(origin + ": session key '" + key + "' must be [layer, channel]");
            const ChannelRef ref{checked_integer<int>(c[0], origin, key),
                                 checked_integer<int64_t>(c[1], origin, key)};
            if (ref.layer < 0 || ref.channel < 0)
                throw Error(origin + ": session key '" + key + "' must not be negative");
            s.detail_channels.push_back(ref);
        }
    }
    auto check_name = [&](const std::string& v, const auto& names, const char* key) {
        for (const char* n : names)
            if (v == n) return;
        std::string list;
        for (const char* n : names) list += std::string(list.empty() ? "" : ", ") + n;
        throw Error(origin + ": view_state." + key + " '" + v + "' is not one of " + list);
    };
    check_name(s.channel_map_statistic, kChannelMapStatistics, "channel_map");
    check_name(s.tokens_colour, kTokensColours, "tokens");
    if (!(s.c > 0 && s.c < 1))
        throw Error(origin + ": c must be in (0, 1)", "LongMamba §8.4: typical c is 0.05");
    if (!(s.b > 0))
        throw Error(origin + ": b must be positive", "LongMamba §8.5: b = 1 is the paper's default");
    if (s.max_tokens < 2) throw Error(origin + ": max_tokens must be at least 2");
    return s;
}

Session load_session(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw Error("cannot open session file " + file.string(), "check the path");
    std::stringstream ss;
    ss << in.rdbuf();
    return session_from_json(ss.str(), file.string(), file.parent_path());
}

void save_session(const Session& s, const fs::path& file) {
    const std::string bytes = session_to_json(s);
    write_file_atomic(file, bytes);
}

static fs::path resolve_relative(const Session& s, const std::string& p) {
    fs::path path(p);
    if (path.is_relative() && !s.base_dir.empty()) path = s.base_dir / path;
    return path.lexically_normal();
}

static std::string demo_model_name(const Session& s) {
    // The demo calibration follows the demo model; a user model with "demo" calibration gets demo-mamba2's.
    if (s.model == "demo") return "demo-mamba2";
    const std::string leaf = fs::path(s.model).filename().string();
    return leaf.rfind("demo-mamba", 0) == 0 ? leaf : "demo-mamba2";
}

fs::path resolve_model_path(const Session& s) {
    if (s.model == "demo") return find_resource("models/demo-mamba2");
    return resolve_relative(s, s.model);
}

fs::path resolve_text_path(const Session& s) {
    if (s.text == "demo") return find_resource("text/demo.txt");
    return resolve_relative(s, s.text);
}

fs::path resolve_calibration_path(const Session& s) {
    if (s.calibration.empty()) return {};
    if (s.calibration == "demo") return find_resource("calibration/" + demo_model_name(s) + ".h5");
    return resolve_relative(s, s.calibration);
}

fs::path resolve_trace_path(const Session& s) {
    return s.trace.empty() ? fs::path() : resolve_relative(s, s.trace);
}

fs::path resolve_retrieval_path(const Session& s) {
    if (s.retrieval.empty()) return {};
    if (s.retrieval == "demo") return find_resource("demo/retrieval.json");
    return resolve_relative(s, s.retrieval);
}

fs::path resolve_filler_path(const Session& s) {
    if (s.haystack.filler == "demo") return find_resource("text/demo.txt");
    return resolve_relative(s, s.haystack.filler);
}

fs::path resolve_sweep_path(const Session& s) {
    return s.sweep.empty() ? fs::path() : resolve_relative(s, s.sweep);
}

AnalysisRequest session_request(const Session& s) {
    AnalysisRequest r;
    r.methods = s.methods;
    r.calibration_path = resolve_calibration_path(s);
    r.c = s.c;
    r.b = s.b;
    r.activate_above = s.activate_above;
    r.deci.layers = s.deci.layers;
    r.deci.L_base = s.deci.L_base;
    r.deci.beta = s.deci.beta;
    r.device = s.device;
    r.channels = s.detail_channels;
    return r;
}

}  // namespace mambascope
