// commands.h: one function per mambascope-cli subcommand. argv[0] is the subcommand name. Each returns the
// exit code and throws mambascope::Error for user-facing failures (main prints them to stderr, exit 1).
#pragma once

namespace mambascope::cli {

int cmd_info(int argc, char** argv);
int cmd_forward(int argc, char** argv);
int cmd_nll(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_ppl_sweep(int argc, char** argv);
int cmd_analyze(int argc, char** argv);
int cmd_calibrate(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_detokenize(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_retrieval(int argc, char** argv);

}  // namespace mambascope::cli
