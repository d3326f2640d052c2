// The CLI commands shown in the README, the docs and the scripts use only options the CLI has (issue 15: the
// help and the docs had drifted from the parser). Each `mambascope-cli COMMAND ...` line (with its `\`
// continuations) is checked against `mambascope-cli COMMAND --help`, which CLI11 generates from the option
// table.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cli_runner.h"

namespace fs = std::filesystem;

namespace {

const fs::path kRoot = fs::path(MAMBASCOPE_RESOURCES_DIR).parent_path();

std::string help_of(const std::string& command) {
    const auto r = mambascope::test::run_cli(command + " --help");
    return r.out + r.err;
}

// Options that exist but are hidden from the help on purpose (memory benchmarks, docs/benchmarks.md).
const std::set<std::string> kHidden = {"--random-shape", "--random-tokens"};

}  // namespace

TEST(CliDocs, EveryDocumentedCommandLineUsesExistingOptions) {
    std::vector<fs::path> files = {kRoot / "README.md", kRoot / "scripts" / "run.sh"};
    for (const auto& dir : {kRoot / "docs", kRoot / "scripts" / "device"})
        for (const auto& e : fs::directory_iterator(dir))
            if (e.path().extension() == ".md" || e.path().extension() == ".sh") files.push_back(e.path());
    const std::regex command_re(R"(mambascope-cli\s+([a-z][a-z-]*))");
    const std::regex option_re(R"((^|[\s\[(])(--[a-z][a-z0-9-]*))");
    std::map<std::string, std::string> helps;
    int checked = 0;
    for (const auto& file : files) {
        std::ifstream in(file);
        std::vector<std::string> lines;
        for (std::string l; std::getline(in, l);) lines.push_back(l);
        for (size_t i = 0; i < lines.size(); ++i) {
            std::smatch m;
            std::string rest = lines[i];
            while (std::regex_search(rest, m, command_re)) {
                const std::string command = m[1];
                std::string text = m.suffix();
                for (size_t j = i; j + 1 < lines.size() && !lines[j].empty() && lines[j].back() == '\\'; ++j)
                    text += " " + lines[j + 1];
                rest = m.suffix();
                if (!helps.count(command)) helps[command] = help_of(command);
                const std::string& help = helps[command];
                if (help.find("Usage: mambascope-cli " + command) == std::string::npos) {
                    if (text.find("--") == std::string::npos) continue;  // prose ("mambascope-cli is ...")
                    ADD_FAILURE() << file << ":" << i + 1 << ": no command '" << command << "'";
                    continue;
                }
                // $(...) is another program's command line
                for (size_t a = text.find("$("); a != std::string::npos; a = text.find("$(")) {
                    const size_t b = text.find(')', a);
                    text.erase(a, b == std::string::npos ? std::string::npos : b + 1 - a);
                }
                // the command line ends at the inline-code quote, a pipe, && or ;
                const size_t end = text.find_first_of("`|;");
                text = text.substr(0, end);
                for (auto it = std::sregex_iterator(text.begin(), text.end(), option_re);
                     it != std::sregex_iterator(); ++it) {
                    const std::string opt = (*it)[2];
                    if (kHidden.count(opt)) continue;
                    ++checked;
                    EXPECT_NE(help.find(opt + " "), std::string::npos)
                        << file << ":" << i + 1 << ": `mambascope-cli " << command << "` has no option "
                        << opt;
                }
            }
        }
    }
    EXPECT_GT(checked, 50);  // the scan found the documented commands
}
