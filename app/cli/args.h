// args.h: the CLI's tiny option parser. `--name value` and `--flag`; unknown options are errors (a typo must
// not be silently ignored), values are parsed with clear messages.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace mambascope::cli {

class Args {
  public:
    // argv[0] is the subcommand. `valued` lists options that take a value, `flags` those that don't.
    Args(int argc, char** argv, std::set<std::string> valued, std::set<std::string> flags);
    bool has(const std::string& name) const;
    std::string get(const std::string& name, const std::string& fallback = "") const;
    std::string require(const std::string& name) const;
    int64_t get_int(const std::string& name, int64_t fallback) const;
    double get_double(const std::string& name, double fallback) const;
    std::vector<int64_t> get_int_list(const std::string& name) const;  // "a,b,c"; empty if absent
    const std::vector<std::string>& positional() const { return positional_; }

  private:
    std::map<std::string, std::string> values_;
    std::set<std::string> flags_set_;
    std::vector<std::string> positional_;
};

// Whitespace-separated token ids; Error (with the line number) for anything that is not a non-negative
// integer.
std::vector<int32_t> read_ids_file(const std::string& path);
// Atomic text write (temp + rename).
void write_text_file_atomic(const std::string& path, const std::string& text);

}  // namespace mambascope::cli
