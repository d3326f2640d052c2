// tokenize, detokenize: text ↔ whitespace-separated ids with a model's tokenizer, a tokenizer.json, the byte
// tokenizer or the built-in GPT-NeoX-20B (issue 3). `-` reads standard input / writes standard output.
#include <cstdio>
#include <string>

#include "args.h"
#include "commands.h"
#include "input.h"
#include "mambascope/config.h"
#include "mambascope/error.h"
#include "mambascope/tokenizer.h"

namespace mambascope::cli {
namespace {

struct TokenizeOptions {
    std::string model, tokenizer, in, out;
    bool replace_invalid = false;
};

// --tokenizer wins; else --model DIR's tokenizer (tokenizer.json, or its config's hint such as byte); else
// the built-in GPT-NeoX-20B. Only config.json is read, not the weights.
std::shared_ptr<const Tokenizer> pick_tokenizer(const TokenizeOptions& o) {
    if (!o.tokenizer.empty()) return tokenizer_from_spec(o.tokenizer);
    if (!o.model.empty()) return choose_tokenizer(o.model, load_config(o.model).tokenizer);
    return builtin_gpt_neox_tokenizer();
}

void add_tokenizer_options(CLI::App& app, TokenizeOptions& o) {
    auto* model =
        app.add_option("--model", o.model, "use this model's tokenizer (byte-level models included)")
            ->type_name("DIR");
    app.add_option("--tokenizer", o.tokenizer,
                   "a tokenizer.json, or byte (default: --model's, else GPT-NeoX-20B)")
        ->type_name("FILE|byte")
        ->excludes(model);
}

int run_tokenize(const TokenizeOptions& o) {
    const auto tok = pick_tokenizer(o);
    const std::string text = read_text_arg(o.in, o.replace_invalid);
    const auto ids = tok->encode(text);
    std::string out;
    out.reserve(ids.size() * 6);
    for (size_t i = 0; i < ids.size(); ++i) {
        out += std::to_string(ids[i]);
        out += (i + 1) % 32 == 0 || i + 1 == ids.size() ? '\n' : ' ';
    }
    write_text_file_atomic(o.out, out);
    std::fprintf(stderr, "%zu bytes -> %zu tokens (%s)\n", text.size(), ids.size(), tok->name().c_str());
    return 0;
}

int run_detokenize(const TokenizeOptions& o) {
    const auto tok = pick_tokenizer(o);
    write_text_file_atomic(o.out, tok->decode(read_ids_file(o.in)));
    return 0;
}

}  // namespace

Command add_tokenize(CLI::App& root) {
    auto o = std::make_shared<TokenizeOptions>();
    auto* app = root.add_subcommand("tokenize", "text file -> whitespace-separated token ids");
    add_tokenizer_options(*app, *o);
    app->add_option("--text", o->in, "input text (UTF-8; - reads standard input)")
        ->type_name("FILE|-")
        ->required();
    app->add_option("--out", o->out, "output ids file (- writes standard output)")
        ->type_name("FILE|-")
        ->required();
    app->add_flag("--replace-invalid", o->replace_invalid, "invalid UTF-8 becomes U+FFFD, not an error");
    return {app, [o] { return run_tokenize(*o); }};
}

Command add_detokenize(CLI::App& root) {
    auto o = std::make_shared<TokenizeOptions>();
    auto* app = root.add_subcommand("detokenize", "token ids -> text file");
    add_tokenizer_options(*app, *o);
    app->add_option("--ids", o->in, "input ids file (- reads standard input)")
        ->type_name("FILE|-")
        ->required();
    app->add_option("--out", o->out, "output text file (- writes standard output)")
        ->type_name("FILE|-")
        ->required();
    return {app, [o] { return run_detokenize(*o); }};
}

}  // namespace mambascope::cli
