// generate: greedy (or temperature / top-k) continuation of a text prompt, through run_prefill + decode_step.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "commands.h"
#include "input.h"
#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "mambascope/model.h"
#include "mambascope/tokenizer.h"

namespace mambascope::cli {
namespace {

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

struct GenerateOptions {
    std::string model, prompt, tokenizer;
    DeviceOptions dev;
    int64_t max_new = 32, top_k = 0, seed = 0;
    double temperature = 0.0;
};

int run_generate(const GenerateOptions& o) {
    ForwardOptions opt;
    opt.device = parse_device(o.dev.device);
    opt.precision = parse_precision(o.dev.precision);
    const auto model = load_model(o.model);
    const auto tok = input_tokenizer(o.tokenizer, model.get());
    const std::string& prompt = o.prompt;
    const int64_t max_new = o.max_new, top_k = o.top_k;
    const double temperature = o.temperature;
    std::mt19937_64 rng(static_cast<uint64_t>(o.seed));
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
    int32_t next = pick(logits, n, temperature, top_k, rng);
    if (max_new > 0 && temperature <= 0) {
        // greedy: one run of steps, each fed the one before's choice; on cuda the steps feed each other on
        // the GPU and only the ids come back (docs/cuda.md, "Greedy runs on the device")
        out.push_back(next);
        const std::vector<int32_t> rest = decoder.step_greedy_run(next, n, max_new - 1);
        out.insert(out.end(), rest.begin(), rest.end());
    }
    for (int64_t i = 0; i < max_new && temperature > 0; ++i) {
        out.push_back(next);
        if (i + 1 == max_new) break;
        decoder.step(next, logits);
        next = pick(logits, n, temperature, top_k, rng);
    }
    const std::string text = tok->decode(out);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fputc('\n', stdout);
    return 0;
}

}  // namespace

Command add_generate(CLI::App& root) {
    auto o = std::make_shared<GenerateOptions>();
    auto* app = root.add_subcommand(
        "generate",
        "continue a text prompt (greedy unless --temperature > 0); on cuda the state stays on the GPU");
    app->add_option("--model", o->model, "model directory")->type_name("DIR")->required();
    app->add_option("--prompt", o->prompt, "the prompt text")->type_name("TEXT")->required();
    app->add_option("--tokenizer", o->tokenizer, "a tokenizer.json, or byte (default: the model's tokenizer)")
        ->type_name("FILE|byte");
    app->add_option("--max-new", o->max_new, "tokens to generate")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app->add_option("--temperature", o->temperature, "sampling temperature; 0: greedy")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app->add_option("--top-k", o->top_k, "sample among the K most likely; 0: all")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app->add_option("--seed", o->seed, "sampling seed")->check(CLI::NonNegativeNumber)->capture_default_str();
    add_device_options(*app, o->dev, true, false);
    return {app, [o] { return run_generate(*o); }};
}

}  // namespace mambascope::cli
