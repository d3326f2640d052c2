// info, forward, nll: the engine-core commands (issue 2), with machine-readable output (--json, --per-token)
// and activation dumps (forward --dump; docs/cli.md "Activations").
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "args.h"
#include "commands.h"
#include "input.h"
#include "mambascope/calibration.h"
#include "mambascope/error.h"
#include "mambascope/forward.h"
#include "mambascope/h5.h"
#include "mambascope/longmamba.h"
#include "mambascope/model.h"
#include "nlohmann/json.hpp"

namespace mambascope::cli {
namespace {

// Logits rows buffered before each append to /logits: 256 × V floats (≈ 50 MB for V = 50280).
constexpr int64_t kLogitsRowsPerAppend = 256;

std::string human_bytes(double b) {
    const char* u[] = {"B", "KB", "MB", "GB", "TB"};
    int i = 0;
    while (b >= 1000 && i < 4) b /= 1000, ++i;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f %s", b, u[i]);
    return buf;
}

void print_json(const nlohmann::json& j) {
    std::printf("%s\n", j.dump(2).c_str());
}

// 0, 1, ..., n-1 as a 1-D int64 dataset (a dimension scale's coordinates).
void write_index(h5::Writer& w, const std::string& path, int64_t begin, int64_t n) {
    std::vector<int64_t> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = begin + i;
    w.write_i64(path, {uint64_t(n)}, v.data());
}

// The precision the projections really used: float32 on the CPU whatever was asked.
std::string used_precision(const ForwardResult& r, Precision asked) {
    return r.backend == "cuda" ? precision_name(asked) : "fp32";
}

// ---- activations (forward --dump) ----------------------------------------------------------------------

ActivationKind parse_activation(const std::string& s) {
    if (s == "x") return ActivationKind::X;
    if (s == "B") return ActivationKind::B;
    if (s == "C") return ActivationKind::C;
    if (s == "dt") return ActivationKind::Dt;
    if (s == "h") return ActivationKind::H;
    if (s == "resid") return ActivationKind::Resid;
    throw UsageError("unknown --dump activation '" + s + "'", "activations are x, B, C, dt, h and resid");
}

// HF-style module name of an activation (docs/cli.md): backbone.layers.N.mixer.{x,B,C,dt,h},
// backbone.layers.N.
std::string activation_path(ActivationKind k, int layer) {
    const std::string base = "/activations/backbone.layers." + std::to_string(layer);
    return k == ActivationKind::Resid ? base : base + ".mixer." + activation_name(k);
}

// Writes the asked window of each asked (activation, layer) into /activations as the forward hands it over:
// memory is one block (one chunk's window rows, or one state for h).
class ActivationDump : public ActivationSink {
  public:
    ActivationDump(h5::Writer& w, const ModelConfig& c, std::set<ActivationKind> kinds,
                   std::vector<int> layers, int64_t begin, int64_t end)
        : w_(w), kinds_(std::move(kinds)), begin_(begin), end_(end) {
        layer_on_.assign(size_t(c.n_layer), false);
        for (int l : layers) layer_on_[size_t(l)] = true;
        const uint64_t W = uint64_t(end - begin), G = c.arch == Arch::Mamba1 ? 1 : uint64_t(c.n_groups);
        w_.group("/activations");
        write_index(w_, "/activations/position", begin, end - begin);
        for (ActivationKind k : kinds_) {
            std::vector<uint64_t> shape{W};
            std::vector<std::string> dims{"position"};
            switch (k) {
                case ActivationKind::X:
                    shape.push_back(uint64_t(c.d_inner)), dims.push_back("channel");
                    break;
                case ActivationKind::B:
                case ActivationKind::C:
                    shape.insert(shape.end(), {G, uint64_t(c.d_state)}),
                        dims.insert(dims.end(), {"group", "state"});
                    break;
                case ActivationKind::Dt:
                    shape.push_back(uint64_t(c.channels()));
                    dims.push_back(c.arch == Arch::Mamba1 ? "channel" : "head");
                    break;
                case ActivationKind::H:
                    if (c.arch == Arch::Mamba1)
                        shape.insert(shape.end(), {uint64_t(c.d_inner), uint64_t(c.d_state)}),
                            dims.insert(dims.end(), {"channel", "state"});
                    else
                        shape.insert(shape.end(),
                                     {uint64_t(c.n_heads), uint64_t(c.head_dim), uint64_t(c.d_state)}),
                            dims.insert(dims.end(), {"head", "head_channel", "state"});
                    break;
                case ActivationKind::Resid:
                    shape.push_back(uint64_t(c.d_model)), dims.push_back("d_model");
                    break;
            }
            for (int l : layers) {
                const std::string path = activation_path(k, l);
                h5::Object ds = w_.create(path, h5::DType::F32, shape);
                h5::set_attr(ds.id(), "dims", dims);
                h5::set_attr(ds.id(), "layer", int64_t(l));
                h5::set_attr(ds.id(), "activation", std::string(activation_name(k)));
                inner_[int(k)] = std::vector<uint64_t>(shape.begin() + 1, shape.end());
                datasets_.emplace(std::make_pair(int(k), l), std::move(ds));
                paths_.push_back(path);
            }
        }
    }
    bool wants(ActivationKind k, int layer) const override {
        return kinds_.count(k) && layer_on_[size_t(layer)];
    }
    int64_t begin() const override { return begin_; }
    int64_t end() const override { return end_; }
    void on_activation(const ActivationBlock& b) override {
        const h5::Object& ds = datasets_.at({int(b.kind), b.layer});
        rows_.resize(size_t(b.width));
        // rows are consecutive positions (no DeciMamba here); one slab per row keeps the buffer one row
        for (int64_t r = 0; r < b.rows; ++r) {
            std::copy_n(b.data + r * b.ld, b.width, rows_.data());
            std::vector<uint64_t> start{uint64_t(b.positions[r] - begin_)}, count{1};
            for (uint64_t d : inner_.at(int(b.kind))) start.push_back(0), count.push_back(d);
            w_.write_slab(ds, h5::DType::F32, start, count, rows_.data());
        }
    }
    // Attaches /activations/position to axis 0 of every dataset (after the writes).
    void attach_scales() {
        for (const auto& p : paths_) w_.attach_scale(p, 0, "/activations/position", "position");
    }

  private:
    h5::Writer& w_;
    std::set<ActivationKind> kinds_;
    std::vector<bool> layer_on_;
    int64_t begin_, end_;
    std::map<std::pair<int, int>, h5::Object> datasets_;
    std::map<int, std::vector<uint64_t>> inner_;
    std::vector<std::string> paths_;
    std::vector<float> rows_;
};

// ---- info ----------------------------------------------------------------------------------------------

struct InfoOptions {
    std::string model;
    bool json = false;
};

int run_info(const InfoOptions& o) {
    auto m = load_model(o.model);
    const ModelConfig& c = m->config;
    const int64_t params = m->parameter_count();
    const int64_t state =
        c.n_layer * ((c.d_conv - 1) * c.conv_dim() +
                     (c.arch == Arch::Mamba1 ? c.d_inner * c.d_state : c.n_heads * c.head_dim * c.d_state));
    if (o.json) {
        nlohmann::json j = {{"model", m->dir.string()},
                            {"weights", m->weights_file.string()},
                            {"architecture", arch_name(c.arch)},
                            {"config_format", c.source_format},
                            {"d_model", c.d_model},
                            {"n_layer", c.n_layer},
                            {"d_inner", c.d_inner},
                            {"d_state", c.d_state},
                            {"d_conv", c.d_conv},
                            {"vocab_size", c.vocab_size},
                            {"embedding_rows", m->vocab_rows()},
                            {"tied_head", c.tie_embeddings},
                            {"channels_per_layer", c.channels()},
                            {"train_len", c.train_len},
                            {"tokenizer_hint", c.tokenizer},
                            {"parameters", params},
                            {"compute_dtype", "float32"},
                            {"weights_bytes", params * 4},
                            {"recurrent_state_bytes", state * 4}};
        if (c.arch == Arch::Mamba1)
            j["dt_rank"] = c.dt_rank;
        else
            j["heads"] = c.n_heads, j["head_dim"] = c.head_dim, j["n_groups"] = c.n_groups;
        print_json(j);
        return 0;
    }
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
    std::printf("parameters:       %lld\n", (long long)params);
    std::printf("compute dtype:    float32\n");
    std::printf("weights memory:   %s (float32)\n", human_bytes(double(params) * 4).c_str());
    std::printf("recurrent state:  %s\n", human_bytes(double(state) * 4).c_str());
    return 0;
}

// ---- forward -------------------------------------------------------------------------------------------

struct ForwardCliOptions {
    std::string model, out, positions;
    InputOptions in;
    DeviceOptions dev;
    LongMambaOptions lm;
    bool dump_delta = false, no_logits = false;
    std::vector<std::string> dump;
    std::vector<int> layers;
};

int run_forward_cmd(const ForwardCliOptions& o) {
    if (o.out == "-") throw UsageError("forward writes HDF5: --out needs a file path, not -");
    std::set<ActivationKind> kinds;
    for (const auto& d : o.dump) kinds.insert(parse_activation(d));
    if (kinds.count(ActivationKind::H) && o.positions.empty())
        throw UsageError("--dump h needs --positions A:B",
                         "the state is d_inner × d_state floats per token and layer: ask for a window");
    if (!kinds.empty() && o.dev.device != "cpu")
        throw UsageError("--dump captures activations on the CPU only", "drop --device or use --device cpu");
    if ((!o.layers.empty() || !o.positions.empty()) && kinds.empty())
        throw UsageError("--layers and --positions select what --dump writes", "add --dump x,B,C,dt,h,resid");
    if (o.lm.calibration.empty() &&
        (o.lm.given(o.lm.c_opt) || o.lm.given(o.lm.b_opt) || o.lm.given(o.lm.activate_opt)))
        throw UsageError("--c, --b and --activate-above need --calibration CAL.h5");
    std::pair<int64_t, int64_t> window{0, 0};
    if (!o.positions.empty()) window = parse_range("--positions", o.positions);

    auto m = load_model(o.model);
    const auto ids = read_input_ids(o.in, *m);
    const int64_t T = static_cast<int64_t>(ids.size()), V = m->vocab_rows(), L = m->config.n_layer,
                  C = m->config.channels();
    if (o.positions.empty()) window = {0, T};
    if (window.second > T)
        throw UsageError("--positions " + o.positions + " ends past the input (" + std::to_string(T) +
                         " tokens)");
    std::vector<int> layers = o.layers;
    if (layers.empty())
        for (int l = 0; l < L; ++l) layers.push_back(l);
    for (int l : layers)
        if (l >= L)
            throw UsageError("--layers " + std::to_string(l) + " is out of range: the model has " +
                             std::to_string(L) + " layers (0.." + std::to_string(L - 1) + ")");
    std::sort(layers.begin(), layers.end());
    layers.erase(std::unique(layers.begin(), layers.end()), layers.end());

    h5::Writer w(o.out);
    h5::set_attr(w.root(), "model", m->dir.string());
    h5::set_attr(w.root(), "software", std::string("mambascope ") + MAMBASCOPE_VERSION);
    std::vector<int64_t> ids64(ids.begin(), ids.end());
    w.write_i64("/ids", {uint64_t(T)}, ids64.data());
    write_index(w, "/position", 0, T);
    h5::Object logits_ds;
    if (!o.no_logits) {
        logits_ds = w.create_appendable("/logits", h5::DType::F32, {uint64_t(V)});
        write_index(w, "/vocab", 0, V);
    }
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
    } delta_dump;
    ForwardOptions opt;
    opt.chunk_tokens = o.dev.chunk;
    opt.progress = stderr_progress("forward", double(T), "tok");
    opt.device = parse_device(o.dev.device);
    opt.precision = parse_precision(o.dev.precision);
    // LongMamba (method doc §8.5): the calibration's thresholds for S = T, in global channels.
    DeltaFilter filter;
    h5::set_attr(w.root(), "method", std::string("vanilla"));
    if (!o.lm.calibration.empty()) {
        auto cal = load_calibration(o.lm.calibration);
        check_calibration_matches(cal, m->config);
        FilterParams fp;
        fp.c = o.lm.c;
        fp.b = o.lm.b;
        fp.activate_above = o.lm.activate_above;
        filter = make_longmamba_filter(cal, fp, T);
        if (!filter.empty()) opt.filter = &filter;
        h5::set_attr(w.root(), "method",
                     std::string(filter.empty() ? "vanilla (LongMamba not activated: input not "
                                                  "longer than activate_above)"
                                                : "longmamba"));
        h5::set_attr(w.root(), "calibration", o.lm.calibration);
        h5::set_attr(w.root(), "c", fp.c);
        h5::set_attr(w.root(), "b", fp.b);
    }
    if (o.dump_delta) {
        delta_dump.w = &w;
        delta_dump.ds = w.create("/delta", h5::DType::F32, {uint64_t(L), uint64_t(T), uint64_t(C)});
        write_index(w, "/layer", 0, L);
        write_index(w, "/channel", 0, C);
        opt.observer = &delta_dump;
    }
    std::unique_ptr<ActivationDump> acts;
    if (!kinds.empty()) {
        acts = std::make_unique<ActivationDump>(w, m->config, kinds, layers, window.first, window.second);
        opt.activations = acts.get();
    }
    HeadRequest head;
    std::vector<float> block;
    int64_t block_rows = 0;
    if (!o.no_logits) {
        head.all_logits = true;
        head.logits_sink = [&](int64_t, const float* row, int64_t v) {
            block.insert(block.end(), row, row + v);
            if (++block_rows == kLogitsRowsPerAppend) {
                w.append(logits_ds, h5::DType::F32, uint64_t(block_rows), block.data());
                block.clear();
                block_rows = 0;
            }
        };
    }
    auto res = run_forward(*m, ids, opt, head);
    if (block_rows) w.append(logits_ds, h5::DType::F32, uint64_t(block_rows), block.data());
    if (!res.note.empty()) std::fprintf(stderr, "forward: %s\n", res.note.c_str());
    // Dimension scales: h5py users see logits.dims[0] = position, etc. (docs/cli.md).
    w.attach_scale("/ids", 0, "/position", "position");
    if (!o.no_logits) {
        w.attach_scale("/logits", 0, "/position", "position");
        w.attach_scale("/logits", 1, "/vocab", "vocab");
    }
    if (o.dump_delta) {
        w.attach_scale("/delta", 0, "/layer", "layer");
        w.attach_scale("/delta", 1, "/position", "position");
        w.attach_scale("/delta", 2, "/channel", "channel");
    }
    if (acts) acts->attach_scales();
    h5::set_attr(w.root(), "backend", res.backend);
    h5::set_attr(w.root(), "device", o.dev.device);
    h5::set_attr(w.root(), "precision", used_precision(res, opt.precision));
    h5::set_attr(w.root(), "requested_precision", std::string(precision_name(opt.precision)));
    h5::set_attr(w.root(), "tokens", int64_t(T));
    h5::set_attr(w.root(), "seconds", res.seconds);
    w.commit();
    std::fprintf(stderr, "forward: %lld tokens in %.2f s (%.1f tok/s) -> %s\n", (long long)T, res.seconds,
                 double(T) / res.seconds, o.out.c_str());
    return 0;
}

// ---- nll -----------------------------------------------------------------------------------------------

struct NllOptions {
    std::string model, per_token;
    InputOptions in;
    DeviceOptions dev;
    bool json = false;
};

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void write_per_token(const std::string& path, const std::vector<int32_t>& ids, const ForwardResult& r) {
    const size_t n = r.nll.size();
    if (ends_with(path, ".csv")) {
        std::string out = "position,target,nll\n";
        out.reserve(n * 24);
        char line[96];
        for (size_t i = 0; i < n; ++i) {
            const int64_t p = r.nll_positions[i];
            std::snprintf(line, sizeof line, "%lld,%d,%.9g\n", (long long)p, ids[size_t(p + 1)],
                          double(r.nll[i]));
            out += line;
        }
        write_text_file_atomic(path, out);
        return;
    }
    h5::Writer w(path);
    std::vector<int64_t> pos(r.nll_positions.begin(), r.nll_positions.end()), target(n);
    for (size_t i = 0; i < n; ++i) target[i] = ids[size_t(pos[i] + 1)];
    w.write_i64("/position", {uint64_t(n)}, pos.data());
    w.write_i64("/target", {uint64_t(n)}, target.data());
    w.write_f32("/nll", {uint64_t(n)}, r.nll.data());
    w.attach_scale("/nll", 0, "/position", "position");
    w.attach_scale("/target", 0, "/position", "position");
    h5::set_attr(w.root(), "software", std::string("mambascope ") + MAMBASCOPE_VERSION);
    h5::set_attr(w.root(), "mean_nll", r.mean_nll());
    w.commit();
}

int run_nll(const NllOptions& o) {
    if (!o.per_token.empty() && !ends_with(o.per_token, ".csv") && !ends_with(o.per_token, ".h5") &&
        !ends_with(o.per_token, ".hdf5"))
        throw UsageError("--per-token " + o.per_token + ": the extension picks the format",
                         "end the path in .csv or .h5");
    auto m = load_model(o.model);
    auto ids = read_input_ids(o.in, *m);
    if (ids.size() < 2) throw Error("need at least 2 token ids to measure NLL");
    ForwardOptions opt;
    opt.chunk_tokens = o.dev.chunk;
    opt.progress = stderr_progress("nll", double(ids.size()), "tok");
    opt.device = parse_device(o.dev.device);
    opt.precision = parse_precision(o.dev.precision);
    HeadRequest head;
    head.nll = true;
    auto res = run_forward(*m, ids, opt, head);
    if (!o.per_token.empty()) write_per_token(o.per_token, ids, res);
    const double nll = res.mean_nll();
    if (!res.note.empty()) std::fprintf(stderr, "nll: %s\n", res.note.c_str());
    if (o.json) {
        print_json(
            {{"model", m->dir.string()},
             {"tokens", ids.size()},
             {"predicted", res.nll.size()},
             {"mean_nll", nll},
             {"sum_nll", nll * double(res.nll.size())},
             {"perplexity", std::exp(nll)},
             {"seconds", res.seconds},
             {"backend", res.backend},
             {"precision", used_precision(res, opt.precision)},
             {"per_token", o.per_token.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.per_token)}});
        return 0;
    }
    std::printf("tokens:      %lld\n", (long long)ids.size());
    std::printf("mean_nll:    %.6f\n", nll);
    std::printf("perplexity:  %.4f\n", std::exp(nll));
    std::printf("seconds:     %.3f\n", res.seconds);
    std::printf("backend:     %s\n", res.backend.c_str());
    return 0;
}

}  // namespace

Command add_info(CLI::App& root) {
    auto o = std::make_shared<InfoOptions>();
    auto* app = root.add_subcommand("info", "config, parameter count, dtype and memory of a model");
    app->add_option("--model", o->model, "model directory (config.json + weights)")
        ->type_name("DIR")
        ->required();
    app->add_flag("--json", o->json, "print one JSON object instead of the table")->group("Output");
    return {app, [o] { return run_info(*o); }};
}

Command add_forward(CLI::App& root) {
    auto o = std::make_shared<ForwardCliOptions>();
    auto* app = add_command(
        root, "forward", "run a model over an input; write logits, Δ and activations to HDF5",
        "  OUT.h5: /ids [T], /logits [T, V] (float32), /delta [n_layer, T, C] with --dump-delta,\n"
        "  /activations/backbone.layers.N[.mixer.x|B|C|dt|h] with --dump; dimension scales on every axis;\n"
        "  attributes backend, device, precision (the one used), method (docs/cli.md)");
    app->add_option("--model", o->model, "model directory")->type_name("DIR")->required();
    add_input_options(*app, o->in);
    app->add_option("--out", o->out, "output HDF5 file")->type_name("OUT.h5")->required()->group("Output");
    app->add_flag("--dump-delta", o->dump_delta, "write Δ of every layer and token: /delta [n_layer, T, C]")
        ->group("Output");
    app->add_flag("--no-logits", o->no_logits, "leave out /logits (e.g. when only activations are wanted)")
        ->group("Output");
    app->add_option("--dump", o->dump,
                    "activations to write: x, B, C, dt (Δ used), h (SSM state; needs --positions), resid "
                    "(layer output)")
        ->delimiter(',')
        ->check(CLI::IsMember({"x", "B", "C", "dt", "h", "resid"}))
        ->type_name("LIST")
        ->group("Activations");
    app->add_option("--layers", o->layers, "layers to dump (default all)")
        ->delimiter(',')
        ->check(CLI::NonNegativeNumber)
        ->type_name("LIST")
        ->group("Activations");
    app->add_option("--positions", o->positions,
                    "token positions to dump, BEGIN:END (default all; required for h)")
        ->type_name("A:B")
        ->group("Activations");
    add_device_options(*app, o->dev, true, true);
    add_longmamba_options(*app, o->lm);
    add_progress_option(*app);
    return {app, [o] { return run_forward_cmd(*o); }};
}

Command add_nll(CLI::App& root) {
    auto o = std::make_shared<NllOptions>();
    auto* app = root.add_subcommand("nll", "mean NLL (nats/token) and perplexity of predicting ids[1..T-1]");
    app->add_option("--model", o->model, "model directory")->type_name("DIR")->required();
    add_input_options(*app, o->in);
    app->add_flag("--json", o->json, "print one JSON object instead of the table")->group("Output");
    app->add_option(
           "--per-token", o->per_token,
           "write each predicted token's NLL: CSV (position,target,nll) or HDF5 (/position, /target, "
           "/nll), by extension")
        ->type_name("OUT.csv|OUT.h5")
        ->group("Output");
    add_device_options(*app, o->dev, true, true);
    add_progress_option(*app);
    return {app, [o] { return run_nll(*o); }};
}

}  // namespace mambascope::cli
