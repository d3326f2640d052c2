// replay_main.cpp: a plain main() for a fuzz target (no libFuzzer). Runs LLVMFuzzerTestOneInput once on every
// file under each directory (or file) named on the command line, in sorted order. ctest registers one
// fuzz_replay.<target> test per target with tests/fuzz/corpus/<target> and tests/fuzz/crashes/<target>, so the
// committed seeds and every input that once crashed are replayed by the ordinary (gcc, no sanitizer) build.
// Exit status 0 when every input returned; a crash or an escaping exception fails the test, and the input that
// caused it is the last "replay:" line printed.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
    namespace fs = std::filesystem;
    std::vector<fs::path> files;
    for (int i = 1; i < argc; ++i) {
        const fs::path p(argv[i]);
        if (fs::is_directory(p)) {
            for (const auto& e : fs::recursive_directory_iterator(p))
                if (e.is_regular_file() && e.path().filename().string().rfind('.', 0) != 0) files.push_back(e.path());
        } else if (fs::is_regular_file(p)) {
            files.push_back(p);
        } else if (!fs::exists(p)) {
            std::fprintf(stderr, "replay: %s does not exist (skipped)\n", p.c_str());
        }
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
        std::ifstream in(f, std::ios::binary);
        if (!in) {
            std::fprintf(stderr, "replay: cannot read %s\n", f.c_str());
            return 2;
        }
        const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::fprintf(stderr, "replay: %s (%zu bytes)\n", f.c_str(), bytes.size());
        std::fflush(stderr);
        LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    }
    std::printf("replay: %zu inputs, no crash\n", files.size());
    return 0;
}
