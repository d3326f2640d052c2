#include "args.h"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "mambascope/atomic_file.h"
#include "mambascope/error.h"

namespace mambascope::cli {

Args::Args(int argc, char** argv, std::set<std::string> valued, std::set<std::string> flags) {
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a.rfind("--", 0) == 0) {
            std::string name = a.substr(2);
            std::string value;
            bool inline_value = false;
            if (auto eq = name.find('='); eq != std::string::npos) {
                value = name.substr(eq + 1);
                name = name.substr(0, eq);
                inline_value = true;
            }
            if (valued.count(name)) {
                if (!inline_value) {
                    if (i + 1 >= argc) throw Error("option --" + name + " needs a value");
                    value = argv[++i];
                }
                values_[name] = value;
            } else if (flags.count(name)) {
                flags_set_.insert(name);
            } else {
                std::string known;
                for (auto& v : valued) known += " --" + v;
                for (auto& f : flags) known += " --" + f;
                throw Error("unknown option --" + name + " for '" + std::string(argv[0]) + "'",
                            "options are:" + known);
            }
        } else {
            positional_.push_back(a);
        }
    }
}

bool Args::has(const std::string& name) const {
    return values_.count(name) || flags_set_.count(name);
}

std::string Args::get(const std::string& name, const std::string& fallback) const {
    auto it = values_.find(name);
    return it == values_.end() ? fallback : it->second;
}

std::string Args::require(const std::string& name) const {
    auto it = values_.find(name);
    if (it == values_.end()) throw Error("missing required option --" + name);
    return it->second;
}

int64_t Args::get_int(const std::string& name, int64_t fallback) const {
    auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    int64_t v = 0;
    const auto& s = it->second;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size())
        throw Error("option --" + name + " expects an integer, got '" + s + "'");
    return v;
}

double Args::get_double(const std::string& name, double fallback) const {
    auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    const auto& s = it->second;
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || errno != 0)
        throw Error("option --" + name + " expects a number, got '" + s + "'");
    return v;
}

std::vector<int64_t> Args::get_int_list(const std::string& name) const {
    std::vector<int64_t> out;
    auto it = values_.find(name);
    if (it == values_.end()) return out;
    std::stringstream ss(it->second);
    std::string item;
    while (std::getline(ss, item, ',')) {
        int64_t v = 0;
        auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
        if (item.empty() || ec != std::errc() || p != item.data() + item.size())
            throw Error("option --" + name + " expects a comma-separated list of integers, got '" +
                        it->second + "'");
        out.push_back(v);
    }
    return out;
}

std::vector<int32_t> read_ids_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw Error("cannot open ids file " + path, "check the path");
    std::vector<int32_t> ids;
    std::string line;
    int64_t lineno = 0;
    while (std::getline(f, line)) {
        ++lineno;
        size_t i = 0;
        while (i < line.size()) {
            while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i]))) ++i;
            if (i >= line.size()) break;
            size_t j = i;
            while (j < line.size() && !std::isspace(static_cast<unsigned char>(line[j]))) ++j;
            int64_t v = 0;
            auto [p, ec] = std::from_chars(line.data() + i, line.data() + j, v);
            if (ec != std::errc() || p != line.data() + j || v < 0 || v > INT32_MAX)
                throw Error(path + ":" + std::to_string(lineno) + ": '" + line.substr(i, j - i) +
                                "' is not a token id (a non-negative integer)",
                            "an ids file holds whitespace-separated integers; use `mambascope-cli tokenize` "
                            "to make one");
            ids.push_back(static_cast<int32_t>(v));
            i = j;
        }
    }
    return ids;
}

void write_text_file_atomic(const std::string& path, const std::string& text) {
    if (path == "-") {  // standard output: written in place, every write checked
        std::fflush(stdout);
        write_all_fd(1, text, "standard output");
        return;
    }
    write_file_atomic(path, text);
}

}  // namespace mambascope::cli
