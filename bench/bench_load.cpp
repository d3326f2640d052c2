// bench_load: how fast checkpoints load (hot page cache). Writes a synthetic safetensors file with `layers`
// tensors of [3072, 768] (one mamba-130m in_proj each) in F32 and in BF16, then times load_safetensors plus
// one pass that touches every float (the cost a forward pass would pay for a lazily mapped view). Prints
// figures; asserts nothing.
//   usage: bench_load [layers=64] [dir=/tmp]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mambascope/weights.h"

using namespace mambascope;

namespace {

constexpr int64_t kRows = 3072, kCols = 768;  // mamba-130m in_proj

void write_file(const std::filesystem::path& p, const std::string& dtype, int layers) {
    const size_t elem = dtype == "F32" ? 4 : 2;
    const size_t bytes = static_cast<size_t>(kRows * kCols) * elem;
    nlohmann::json h = nlohmann::json::object();
    for (int i = 0; i < layers; ++i) {
        h["backbone.layers." + std::to_string(i) + ".mixer.in_proj.weight"] = {
            {"dtype", dtype}, {"shape", {kRows, kCols}}, {"data_offsets", {i * bytes, (i + 1) * bytes}}};
    }
    std::string header = h.dump();
    while ((8 + header.size()) % 8) header += ' ';
    std::ofstream out(p, std::ios::binary);
    const uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << header;
    std::vector<char> block(bytes);
    for (size_t i = 0; i < bytes; ++i)
        block[i] = static_cast<char>((i * 2654435761u) >> 24 & 0x3f);  // finite values
    for (int i = 0; i < layers; ++i) out.write(block.data(), static_cast<std::streamsize>(bytes));
}

void time_load(const std::filesystem::path& p, const char* label) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    const WeightMap w = load_safetensors(p);
    const auto t1 = clock::now();
    double sum = 0;
    size_t floats = 0;
    for (const auto& [name, t] : w) {
        for (int64_t i = 0; i < t.numel(); ++i) sum += t.data[i];
        floats += static_cast<size_t>(t.numel());
    }
    const auto t2 = clock::now();
    const double load_s = std::chrono::duration<double>(t1 - t0).count();
    const double touch_s = std::chrono::duration<double>(t2 - t1).count();
    const double mb = static_cast<double>(std::filesystem::file_size(p)) / 1e6;
    std::printf(
        "%-5s file %7.1f MB  load %7.3f s (%7.0f MB/s)  load+touch %7.3f s  (%zu floats, checksum %.3g)\n",
        label, mb, load_s, mb / load_s, load_s + touch_s, floats, sum);
}

}  // namespace

int main(int argc, char** argv) {
    const int layers = argc > 1 ? std::atoi(argv[1]) : 64;
    const std::filesystem::path dir = argc > 2 ? argv[2] : "/tmp";
    const auto f32 = dir / "mambascope_bench_f32.safetensors";
    const auto bf16 = dir / "mambascope_bench_bf16.safetensors";
    write_file(f32, "F32", layers);
    write_file(bf16, "BF16", layers);
    for (int rep = 0; rep < 2; ++rep) {  // the first pass may still fault pages in from the writer
        time_load(f32, "F32");
        time_load(bf16, "BF16");
    }
    std::filesystem::remove(f32);
    std::filesystem::remove(bf16);
    return 0;
}
