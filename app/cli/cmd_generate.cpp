// generate: greedy (or temperature / top-k) continuation of a text prompt, through run_prefill + decode_step.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "args.h"
#include "commands.h"
#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "mambascope/model.h"
#include "mambascope/tokenizer.h"

namespace mambascope::cli {
namespace {

bool wants_help(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) return true;
    return false;
}

// Next id from logits restricted to [0, n): argmax when temperature ≤ 0, else a sample from the softmax of
// the top-k logits / temperature (k ≤ 0: all).
int32_t pick(const std::vector<float>& logits, int64_t n, double temperature, int64_t top_k,
             std::mt19937_64& rng) {
    if (temperature <= 0)
        return static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + n) - logits.begin());
    std::vector<int32_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    const auto k = static_cast<size_t>(top_k > 0 ? std::min<int64_t>(top_k, n) : n);
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                      [&](int32_t a, int32_t b) {
                          return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)];
                      });
    const double top = logits[static_cast<size_t>(order[0])];
    std::vector<double> w(k);
    for (size_t i = 0; i < k; ++i)
        w[i] = std::exp((logits[static_cast<size_t>(order[i])] - top) / temperature);
    std::discrete_distribution<size_t> dist(w.begin(), w.end());
    return order[dist(rng)];
}

}  // namespace

int cmd_generate(int argc, char** argv) {
    if (wants_help(argc, argv)) {
        std::printf(
            "mambascope-cli generate --model DIR --prompt TEXT --max-new N [--temperature T --top-k K --seed "
            "S]\n"
            "                        [--tokenizer FILE|byte] [--device cpu|cuda|auto] [--precision "
            "fp32|tf32|bf16]\n"
            "  prints the continuation (greedy unless --temperature > 0); on cuda the state stays on the "
            "GPU\n");
        return 0;
    }
    Args a(argc, argv,
           {"model", "prompt", "max-new", "temperature", "top-k", "seed", "tokenizer", "device", "precision"},
           {});
    ForwardOptions opt;
    opt.device = parse_device(a.get("device", "cpu"));
    opt.precision = parse_precision(a.get("precision", "fp32"));
    const auto model = load_model(a.require("model"));
    const auto tok = a.has("tokenizer") ? tokenizer_from_spec(a.get("tokenizer"))
                                        : choose_tokenizer(model->dir, model->config.tokenizer);
    const std::string prompt = a.require("prompt");
    const int64_t max_new = a.get_int("max-new", 32);
    const double temperature = a.get_double("temperature", 0.0);
    const int64_t top_k = a.get_int("top-k", 0);
    if (max_new < 0) throw Error("--max-new must be ≥ 0");
    if (!(temperature >= 0)) throw Error("--temperature must be ≥ 0");
    std::mt19937_64 rng(static_cast<uint64_t>(a.get_int("seed", 0)));
    const auto ids = tok->encode(prompt);
    if (ids.empty()) throw Error("the prompt is empty", "give at least one character of prompt");
    check_ids(*model, ids);
    const int64_t n = std::min<int64_t>(model->vocab_rows(), tok->vocab_size());  // ids both sides know

    ModelState state = make_state(*model);
    std::vector<float> logits;
    HeadRequest head;
    head.logits_positions = {static_cast<int64_t>(ids.size()) - 1};
    head.logits_sink = [&](int64_t, const float* row, int64_t rows) { logits.assign(row, row + rows); };
    const ForwardResult fr = run_prefill(*model, ids, state, opt, head);
    if (!fr.note.empty()) std::fprintf(stderr, "note: %s\n", fr.note.c_str());
    Decoder decoder(*model, state, fr.backend == "cuda" ? Device::Cuda : Device::Cpu, opt.precision);
    std::vector<int32_t> out;
    for (int64_t i = 0; i < max_new; ++i) {
        const int32_t next = pick(logits, n, temperature, top_k, rng);
        out.push_back(next);
        if (i + 1 < max_new) decoder.step(next, logits);
    }
    const std::string text = tok->decode(out);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fputc('\n', stdout);
    return 0;
}

}  // namespace mambascope::cli
