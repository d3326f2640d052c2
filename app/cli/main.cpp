// mambascope-cli: batch front end. Every GUI job is also a command here, with the same outputs.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "commands.h"
#include "input.h"
#include "mambascope/atomic_file.h"
#include "mambascope/error.h"

namespace {

struct Command {
    const char* name;
    int (*fn)(int, char**);
    const char* help;
};

const Command kCommands[] = {
    {"info", mambascope::cli::cmd_info, "config, parameter count, dtype and memory of a model"},
    {"forward", mambascope::cli::cmd_forward, "run a model over token ids; write logits (and Δ) to HDF5"},
    {"nll", mambascope::cli::cmd_nll, "mean NLL and perplexity of a token file"},
    {"analyze", mambascope::cli::cmd_analyze,
     "vanilla / LongMamba / DeciMamba on one input, probes -> HDF5 trace"},
    {"ppl-sweep", mambascope::cli::cmd_ppl_sweep,
     "perplexity vs context length (vanilla / LongMamba / DeciMamba)"},
    {"bench", mambascope::cli::cmd_bench, "prefill speed and peak memory on random weights of real shapes"},
    {"calibrate", mambascope::cli::cmd_calibrate,
     "LongMamba calibration of a model on a token stream (CAL.h5)"},
    {"tokenize", mambascope::cli::cmd_tokenize, "text file -> token ids (GPT-NeoX-20B, tokenizer.json or byte)"},
    {"detokenize", mambascope::cli::cmd_detokenize, "token ids -> text file"},
    {"generate", mambascope::cli::cmd_generate, "continue a text prompt (greedy or sampled)"},
    {"retrieval", mambascope::cli::cmd_retrieval,
     "passkey retrieval over lengths x depths x methods (CSV, JSON, one cell's trace)"},
};

void usage() {
    std::printf(
        "mambascope-cli %s: Mamba / Mamba-2 long-context analysis (LongMamba)\n\nusage: mambascope-cli "
        "<command> [options]\n\ncommands:\n",
        MAMBASCOPE_VERSION);
    for (const auto& c : kCommands) std::printf("  %-12s %s\n", c.name, c.help);
    std::printf("\n`mambascope-cli <command> --help` describes a command's options.\n");
}

// SIGINT / SIGTERM. The first asks the running job to stop: progress callbacks return false, the engine
// throws Cancelled at its next safe point, every writer removes its temp file, exit 130. A second signal (the
// job did not reach a safe point, or the user insists) removes every registered temp file (unlink only,
// async-signal-safe) and exits 130 at once. SIGKILL cannot be caught: its temp files stay.
volatile std::sig_atomic_t g_signals = 0;

extern "C" void on_signal(int) {
    if (g_signals++ == 0) {
        mambascope::cli::request_cancel();
        static const char msg[] = "\nmambascope-cli: stopping (press Ctrl-C again to quit at once)\n";
        [[maybe_unused]] auto r = ::write(2, msg, sizeof msg - 1);
        return;
    }
    mambascope::remove_registered_temp_files();
    ::_exit(130);
}

void install_signal_handlers() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
        !std::strcmp(argv[1], "help")) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    if (!std::strcmp(argv[1], "--version")) {
        std::printf("mambascope-cli %s\n", MAMBASCOPE_VERSION);
        return 0;
    }
    mambascope::mark_run_start();
    install_signal_handlers();
    for (const auto& c : kCommands) {
        if (std::strcmp(argv[1], c.name) != 0) continue;
        try {
            return c.fn(argc - 1, argv + 1);
        } catch (const mambascope::Cancelled&) {
            std::fprintf(stderr, "mambascope-cli %s: cancelled\n", c.name);
            return 130;
        } catch (const mambascope::Error& e) {
            std::fprintf(stderr, "mambascope-cli %s: error: %s\n", c.name, mambascope::describe(e).c_str());
            return 1;
        } catch (const std::bad_alloc&) {
            std::fprintf(stderr, "mambascope-cli %s: error: out of memory\n", c.name);
            return 1;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "mambascope-cli %s: internal error: %s\n", c.name, e.what());
            return 1;
        }
    }
    std::fprintf(stderr, "mambascope-cli: unknown command '%s'\n\n", argv[1]);
    usage();
    return 2;
}
