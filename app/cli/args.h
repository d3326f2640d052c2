// args.h: small input/output helpers of the CLI that need no option parser (the fuzz target
// tests/fuzz/fuzz_ids compiles args.cpp alone): the ids-file reader and the atomic text writer, both with `-`
// for stdin/stdout.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mambascope::cli {

// Whitespace-separated token ids; Error (with the line number) for anything that is not a non-negative
// integer. `-` reads standard input.
std::vector<int32_t> read_ids_file(const std::string& path);
// Atomic text write (temp + rename); `-` writes standard output.
void write_text_file_atomic(const std::string& path, const std::string& text);
// The whole of standard input (binary).
std::string read_stdin();

}  // namespace mambascope::cli
