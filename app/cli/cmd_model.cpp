// info, forward, nll: the engine-core commands (issue 2).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "args.h"
#include "commands.h"
#include "input.h"
#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "mambascope/h5.h"
#include "mambascope/model.h"

namespace mambascope::cli {
namespace {

bool wants_help(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) return true;
    return false;
}

std::string human_bytes(double b) {
    const char* u[] = {"B", "KB", "MB", "GB", "TB"};
    int i = 0;
    while (b >= 1000 && i < 4) b /= 1000, ++i;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f %s", b, u[i]);
    return buf;
}

}  // namespace

int cmd_info(int argc, char** argv) {
    if (wants_help(argc, argv)) {
        std::printf("mambascope-cli info --model DIR\n");
        return 0;
    }
    Args a(argc, argv, {"model"}, {});
    auto m = load_model(a.require("model"));
    const ModelConfig& c = m->config;
    std::printf("model:            %s\n", m->dir.string().c_str());
    std::printf("weights:          %s\n", m->weights_file.string().c_str());
    std::printf("architecture:     %s (%s config)\n", arch_name(c.arch), c.source_format.c_str());
    std::printf("d_model:          %lld\n", (long long)c.d_model);
    std::printf("n_layer:          %lld\n", (long long)c.n_layer);
    std::printf("d_inner:          %lld\n", (long long)c.d_inner);
    std::printf("d_state:          %lld\n", (long long)c.d_state);
    std::printf("d_conv:           %lld\n", (long long)c.d_conv);
    if (c.arch == Arch::Mamba1)
        std::printf("dt_rank:          %lld\n", (long long)c.dt_rank);
    else
        std::printf("heads:            %lld x %lld (groups %lld)\n", (long long)c.n_heads,
                    (long long)c.head_dim, (long long)c.n_groups);
    std::printf("vocab:            %lld (config), %lld (embedding rows)\n", (long long)c.vocab_size,
                (long long)m->vocab_rows());
    std::printf("tied head:        %s\n", c.tie_embeddings ? "yes" : "no");
    std::printf("channels (LM):    %lld per layer\n", (long long)c.channels());
    std::printf("train length:     %lld tokens\n", (long long)c.train_len);
    std::printf("tokenizer hint:   %s\n",
                c.tokenizer.empty() ? "(tokenizer.json or GPT-NeoX-20B)" : c.tokenizer.c_str());
    const int64_t params = m->parameter_count();
    std::printf("parameters:       %lld\n", (long long)params);
    std::printf("compute dtype:    float32\n");
    std::printf("weights memory:   %s (float32)\n", human_bytes(double(params) * 4).c_str());
    const int64_t state =
        c.n_layer * ((c.d_conv - 1) * c.conv_dim() +
                     (c.arch == Arch::Mamba1 ? c.d_inner * c.d_state : c.n_heads * c.head_dim * c.d_state));
    std::printf("recurrent state:  %s\n", human_bytes(double(state) * 4).c_str());
    return 0;
}

int cmd_forward(int argc, char** argv) {
    if (wants_help(argc, argv)) {
        std::printf(
            "mambascope-cli forward --model DIR --ids FILE [--dump-delta] --out OUT.h5 [--chunk N] [--device "
            "cpu|cuda|auto]\n"
            "  writes /logits (float32 [T, V]) and with --dump-delta /delta (float32 [n_layer, T, C])\n");
        return 0;
    }
    Args a(argc, argv,
           {"model", "ids", "out", "chunk", "device", "precision", "calibration", "c", "b", "activate-above"},
           {"dump-delta"});
    const std::string out = a.require("out");
    auto ids = read_ids_file(a.require("ids"));
    auto m = load_model(a.require("model"));
    check_ids(*m, ids);
    const int64_t T = static_cast<int64_t>(ids.size()), V = m->vocab_rows(), L = m->config.n_layer,
                  C = m->config.channels();

    h5::Writer w(out);
    h5::set_attr(w.root(), "model", m->dir.string());
    h5::set_attr(w.root(), "software", std::string("mambascope ") + MAMBASCOPE_VERSION);
    auto logits_ds = w.create_appendable("/logits", h5::DType::F32, {uint64_t(V)});
    // /delta [n_layer, T, C] is written slab by slab as the chunks go (bounded memory).
    struct DeltaDump : ScanObserver {
        h5::Writer* w = nullptr;
        h5::Object ds;
        std::vector<float> rows;
        void on_delta(const DeltaBlock&, const DeltaBlock& used) override {
            rows.resize(size_t(used.rows * used.channels));
            for (int64_t r = 0; r < used.rows; ++r)
                std::copy_n(used.data + r * used.ld, used.channels, rows.data() + r * used.channels);
            w->write_slab(ds, h5::DType::F32, {uint64_t(used.layer), uint64_t(used.positions[0]), 0},
                          {1, uint64_t(used.rows), uint64_t(used.channels)}, rows.data());
        }
    } dump;
    ForwardOptions opt;
    if (a.has("chunk")) opt.chunk_tokens = a.get_int("chunk", kPrefillChunkTokens);
    opt.progress = stderr_progress("forward");
    opt.device = parse_device(a.get("device", "cpu"));
    opt.precision = parse_precision(a.get("precision", "fp32"));
    // LongMamba (method doc §8.5): the calibration's thresholds for S = T, in global channels.
    DeltaFilter filter;
    if (a.has("calibration")) {
        auto cal = load_calibration(a.get("calibration"));
        check_calibration_matches(cal, m->config);
        FilterParams fp;
        fp.c = a.get_double("c", fp.c);
        fp.b = a.get_double("b", fp.b);
        fp.activate_above = a.get_int("activate-above", -1);
        filter = make_longmamba_filter(cal, fp, T);
        if (!filter.empty()) opt.filter = &filter;
        h5::set_attr(w.root(), "method",
                     std::string(filter.empty() ? "vanilla (LongMamba not activated: input not "
                                                  "longer than activate_above)"
                                                : "longmamba"));
        h5::set_attr(w.root(), "calibration", a.get("calibration"));
        h5::set_attr(w.root(), "c", fp.c);
        h5::set_attr(w.root(), "b", fp.b);
    } else if (a.has("c") || a.has("b") || a.has("activate-above")) {
        throw Error("--c, --b and --activate-above need --calibration CAL.h5");
    }
    if (a.has("dump-delta")) {
        dump.w = &w;
        dump.ds = w.create("/delta", h5::DType::F32, {uint64_t(L), uint64_t(T), uint64_t(C)});
        opt.observer = &dump;
    }
    HeadRequest head;
    head.all_logits = true;
    std::vector<float> block;
    int64_t block_rows = 0;
    head.logits_sink = [&](int64_t, const float* row, int64_t v) {
        block.insert(block.end(), row, row + v);
        if (++block_rows == 256) {
            w.append(logits_ds, h5::DType::F32, uint64_t(block_rows), block.data());
            block.clear();
            block_rows = 0;
        }
    };
    auto res = run_forward(*m, ids, opt, head);
    if (block_rows) w.append(logits_ds, h5::DType::F32, uint64_t(block_rows), block.data());
    if (!res.note.empty()) std::fprintf(stderr, "forward: %s\n", res.note.c_str());
    h5::set_attr(w.root(), "backend", res.backend);
    h5::set_attr(w.root(), "tokens", int64_t(T));
    h5::set_attr(w.root(), "seconds", res.seconds);
    w.commit();
    std::fprintf(stderr, "forward: %lld tokens in %.2f s (%.1f tok/s) -> %s\n", (long long)T, res.seconds,
                 double(T) / res.seconds, out.c_str());
    return 0;
}

int cmd_nll(int argc, char** argv) {
    if (wants_help(argc, argv)) {
        std::printf(
            "mambascope-cli nll --model DIR (--ids FILE | --text FILE [--tokenizer FILE|byte] [--replace-invalid])\n"
            "                   [--chunk N] [--device cpu|cuda|auto] [--precision fp32|tf32|bf16]\n"
            "  prints the mean NLL (nats/token) and perplexity of predicting ids[1..T-1]\n");
        return 0;
    }
    Args a(argc, argv, {"model", "ids", "text", "tokenizer", "chunk", "device", "precision"}, {"replace-invalid"});
    auto m = load_model(a.require("model"));
    auto ids = read_input_ids(a, *m);
    if (ids.size() < 2) throw Error("need at least 2 token ids to measure NLL");
    ForwardOptions opt;
    if (a.has("chunk")) opt.chunk_tokens = a.get_int("chunk", kPrefillChunkTokens);
    opt.progress = stderr_progress("nll");
    opt.device = parse_device(a.get("device", "cpu"));
    opt.precision = parse_precision(a.get("precision", "fp32"));
    HeadRequest head;
    head.nll = true;
    auto res = run_forward(*m, ids, opt, head);
    const double nll = res.mean_nll();
    std::printf("tokens:      %lld\n", (long long)ids.size());
    std::printf("mean_nll:    %.6f\n", nll);
    std::printf("perplexity:  %.4f\n", std::exp(nll));
    std::printf("seconds:     %.3f\n", res.seconds);
    std::printf("backend:     %s\n", res.backend.c_str());
    if (!res.note.empty()) std::fprintf(stderr, "nll: %s\n", res.note.c_str());
    return 0;
}

}  // namespace mambascope::cli
