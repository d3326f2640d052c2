#!/usr/bin/env bash
# fuzz-triage.sh: sourced by scripts/fuzz.sh (and tests/fuzz/triage/run.sh, which checks it on recorded reports).
# A libhdf5 crash contained by the HDF5 probe (h5::probe_read_in_child) is replayed in-process without the probe;
# the report it prints decides whether it is libhdf5's (contained: not a finding) or Mambascope's (a finding).
#
# The deciding frame is the first stack frame of the report that is not the sanitizer or fuzzer run-time, a libc
# signal/abort path, or the C allocator / mem* family. These run-time frames come first in:
#   - AddressSanitizer reports (#0 __interceptor_memcpy, then the caller);
#   - libFuzzer's out-of-memory report for a single malloc above -malloc_limit_mb (#0 __sanitizer_print_stack_trace,
#     fuzzer::PrintStackTrace, fuzzer::Fuzzer::HandleMalloc, fuzzer::MallocHook, __asan::Allocator, malloc, then
#     the caller: libhdf5 when it mallocs a garbage size read from the file);
#   - libFuzzer's deadly-signal report (fuzzer::Fuzzer::CrashCallback, libc's __restore_rt/raise/abort).
# C++'s operator new is NOT skipped: a huge `new` is Mambascope's own allocation (a size it failed to check).
# A report with no frame at all (an RSS-limit report, a timeout without a stack) is not libhdf5's: a finding.

# fuzz_deciding_frame: reads a report on stdin, prints its deciding frame line (empty if none).
fuzz_deciding_frame() {
  grep -E '^\s+#[0-9]+ ' |
    grep -vE ' in (__interceptor_|__asan|__sanitizer|__ubsan|__lsan|fuzzer::|__restore_rt|raise|abort|__assert|malloc|calloc|realloc|free|posix_memalign|aligned_alloc|memalign|memmove|memcpy|memset|memcmp|strlen|strcmp|strncmp)|\(/lib/x86_64-linux-gnu/libc\.so|/libc\.so\.6|sysdeps/|/libc-start\.c' |
    head -1 || true
}

# fuzz_is_libhdf5_report: reads a report on stdin; exit 0 when its deciding frame is in libhdf5.
fuzz_is_libhdf5_report() {
  local report
  report=$(cat)
  # Growth of the whole process (RSS limit) and timeouts are not one bad read: always findings.
  if printf '%s\n' "$report" | grep -qE 'libFuzzer: (out-of-memory \(used:|timeout)'; then return 1; fi
  printf '%s\n' "$report" | fuzz_deciding_frame | grep -q 'libhdf5'
}
