// commands.h: one registration function per mambascope-cli subcommand. Each adds its subcommand and options
// to the root CLI11 app and returns what runs once the command line parsed. The run function returns the exit
// code and throws UsageError (exit 2), mambascope::Error (exit 1) or Cancelled (exit 130); main prints them.
#pragma once

#include "input.h"

namespace mambascope::cli {

Command add_info(CLI::App& root);
Command add_forward(CLI::App& root);
Command add_nll(CLI::App& root);
Command add_analyze(CLI::App& root);
Command add_ppl_sweep(CLI::App& root);
Command add_bench(CLI::App& root);
Command add_calibrate(CLI::App& root);
Command add_tokenize(CLI::App& root);
Command add_detokenize(CLI::App& root);
Command add_generate(CLI::App& root);
Command add_retrieval(CLI::App& root);

}  // namespace mambascope::cli
