// mambascope-cli: batch front end. Every GUI job is also a command here, with the same outputs.
//
// Exit codes (docs/cli.md): 0 success (and --help), 1 a failure while running (a bad file, out of memory, a
// full disk), 2 a command line that cannot run (unknown option, stray argument, bad value), 130 cancelled by
// SIGINT/SIGTERM.
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "commands.h"
#include "input.h"
#include "mambascope/atomic_file.h"
#include "mambascope/error.h"
#include "mambascope/forward.h"

namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;
constexpr int kExitCancelled = 130;

// SIGINT / SIGTERM. The first asks the running job to stop: progress callbacks return false, the engine
// throws Cancelled at its next safe point, every writer removes its temp file, exit 130. A second signal (the
// job did not reach a safe point, or the user insists) removes every registered temp file (unlink only,
// async-signal-safe) and exits 130 at once. SIGKILL cannot be caught: its temp files stay.
volatile std::sig_atomic_t g_signals = 0;

extern "C" void on_signal(int) {
    const std::sig_atomic_t seen = g_signals;
    g_signals = seen + 1;
    if (seen == 0) {
        mambascope::cli::request_cancel();
        static const char msg[] = "\nmambascope-cli: stopping (press Ctrl-C again to quit at once)\n";
        [[maybe_unused]] auto r = ::write(2, msg, sizeof msg - 1);
        return;
    }
    mambascope::remove_registered_temp_files();
    ::_exit(kExitCancelled);
}

void install_signal_handlers() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
}

// "mambascope-cli forward" for the subcommand the user named, "mambascope-cli" before one is known.
std::string who(const CLI::App& app) {
    const auto subs = app.get_subcommands();
    return subs.empty() ? std::string("mambascope-cli") : "mambascope-cli " + subs.front()->get_name();
}

}  // namespace

int main(int argc, char** argv) {
    mambascope::default_passive_omp_wait(argv);  // no spinning OpenMP threads unless the user asks for them
    using namespace mambascope::cli;
    CLI::App app{std::string("mambascope-cli ") + MAMBASCOPE_VERSION +
                     ": Mamba / Mamba-2 long-context analysis (LongMamba)",
                 "mambascope-cli"};
    app.set_version_flag("--version", std::string("mambascope-cli ") + MAMBASCOPE_VERSION);
    app.require_subcommand(1);
    const std::vector<Command> commands = {add_info(app),      add_forward(app),   add_nll(app),
                                           add_analyze(app),   add_ppl_sweep(app), add_bench(app),
                                           add_calibrate(app), add_tokenize(app),  add_detokenize(app),
                                           add_generate(app),  add_retrieval(app)};
    const std::string exit_codes = "Exit codes: 0 success, 1 runtime error, 2 usage error, 130 cancelled.";
    for (const auto& c : commands)
        if (c.app->get_footer().empty()) c.app->footer(exit_codes);
    app.footer("`mambascope-cli COMMAND --help` describes a command's options (docs/cli.md).\n" + exit_codes);

    const auto known = [&](const std::string& name) {
        return std::any_of(commands.begin(), commands.end(),
                           [&](const Command& c) { return c.app->get_name() == name; });
    };
    if (argc > 1 && argv[1][0] != '-' && !known(argv[1])) {
        std::fprintf(stderr, "mambascope-cli: usage error: unknown command '%s'\n", argv[1]);
        std::fprintf(stderr, "run `mambascope-cli --help` for the commands\n");
        return kExitUsage;
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::Success& e) {  // --help, --version
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        if (argc < 2)
            std::fprintf(stderr, "%s\n", app.help().c_str());  // bare `mambascope-cli`: the commands
        std::fprintf(stderr, "%s: usage error: %s\n", who(app).c_str(), e.what());
        std::fprintf(stderr, "run `%s --help` for the options\n", who(app).c_str());
        return kExitUsage;
    }

    set_command_line(argc, argv);
    mambascope::mark_run_start();
    install_signal_handlers();
    const std::string name = who(app);
    for (const auto& c : commands) {
        if (!c.app->parsed()) continue;
        try {
            return c.run();
        } catch (const mambascope::Cancelled&) {
            std::fprintf(stderr, "%s: cancelled\n", name.c_str());
            return kExitCancelled;
        } catch (const UsageError& e) {
            std::fprintf(stderr, "%s: usage error: %s\n", name.c_str(), mambascope::describe(e).c_str());
            std::fprintf(stderr, "run `%s --help` for the options\n", name.c_str());
            return kExitUsage;
        } catch (const mambascope::Error& e) {
            std::fprintf(stderr, "%s: error: %s\n", name.c_str(), mambascope::describe(e).c_str());
            return kExitRuntime;
        } catch (const std::bad_alloc&) {
            std::fprintf(stderr, "%s: error: out of memory\n", name.c_str());
            return kExitRuntime;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "%s: internal error: %s\n", name.c_str(), e.what());
            return kExitRuntime;
        }
    }
    return kExitUsage;  // unreachable: require_subcommand(1)
}
