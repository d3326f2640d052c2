// bench_tokenizer: GPT-NeoX-20B tokenisation speed (tokens/s) on a text file.
// usage: bench_tokenizer [TEXT_FILE] (default: the World English Bible from ../shared, if present)
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "mambascope/error.h"
#include "mambascope/text.h"
#include "mambascope/tokenizer.h"

int main(int argc, char** argv) {
    const std::filesystem::path file =
        argc > 1 ? std::filesystem::path(argv[1])
                 : std::filesystem::path(
                       "../shared/data/corpus/eval/web_bible.txt");  // run from the repository root
    try {
        using clock = std::chrono::steady_clock;
        auto t0 = clock::now();
        const auto tok = mambascope::builtin_gpt_neox_tokenizer();
        auto t1 = clock::now();
        const std::string text = mambascope::read_text_file(file);
        auto t2 = clock::now();
        const auto ids = tok->encode(text);
        auto t3 = clock::now();
        const std::string back = tok->decode(ids);
        auto t4 = clock::now();
        const auto s = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
        std::printf("file:        %s (%zu bytes)\n", file.string().c_str(), text.size());
        std::printf("load json:   %.3f s\n", s(t0, t1));
        std::printf("read+utf8:   %.3f s\n", s(t1, t2));
        std::printf("encode:      %.3f s  %zu tokens  %.0f tokens/s  %.1f MB/s\n", s(t2, t3), ids.size(),
                    double(ids.size()) / s(t2, t3), double(text.size()) / 1e6 / s(t2, t3));
        std::printf("decode:      %.3f s  round trip %s\n", s(t3, t4), back == text ? "exact" : "DIFFERS");
        return back == text ? 0 : 1;
    } catch (const mambascope::Error& e) {
        std::fprintf(stderr, "bench_tokenizer: %s\n", mambascope::describe(e).c_str());
        return 1;
    }
}
