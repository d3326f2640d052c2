#include "args.h"

#include <cctype>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "mambascope/atomic_file.h"
#include "mambascope/error.h"

namespace mambascope::cli {

std::string read_stdin() {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    if (std::cin.bad()) throw Error("cannot read standard input");
    return ss.str();
}

std::vector<int32_t> read_ids_file(const std::string& path) {
    std::istringstream from_stdin;
    std::ifstream from_file;
    if (path == "-") {
        from_stdin.str(read_stdin());
    } else {
        from_file.open(path, std::ios::binary);
        if (!from_file) throw Error("cannot open ids file " + path, "check the path");
    }
    std::istream& f = path == "-" ? static_cast<std::istream&>(from_stdin) : from_file;
    const std::string name = path == "-" ? std::string("standard input") : path;
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
                throw Error(name + ":" + std::to_string(lineno) + ": '" + line.substr(i, j - i) +
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
