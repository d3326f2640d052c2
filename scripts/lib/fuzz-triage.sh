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
#   - gdb's backtrace (fuzz_gdb_frames), where libc's abort path has its own names (__pthread_kill_implementation,
#     __GI_raise, __GI_abort, __libc_message, __fortify_fail, __stack_chk_fail).
# C++'s operator new is NOT skipped: a huge `new` is Mambascope's own allocation (a size it failed to check).
# A report with no frame at all (an RSS-limit report, a timeout without a stack) is not libhdf5's: a finding.
#
# Reports without a stack. A library built with Debian's hardening (-fstack-protector-strong: libhdf5) that
# overflows a stack buffer aborts in __stack_chk_fail ("*** stack smashing detected ***"), and the sanitizer's
# report of that signal then unwinds through the smashed frames and fails itself ("AddressSanitizer: CHECK
# failed: asan_report.cpp …", "<empty stack>"). scripts/fuzz.sh then replays the input under gdb with the
# sanitizer's and libFuzzer's signal handlers off (fuzz_gdb_frames) and decides on gdb's backtrace: the frames
# below __stack_chk_fail are intact, and the first of them is the function whose stack was smashed.

# fuzz_deciding_frame: reads a report on stdin, prints its deciding frame line (empty if none).
fuzz_deciding_frame() {
  grep -E '^\s+#[0-9]+ ' |
    grep -vE ' in (__interceptor_|__asan|__sanitizer|__ubsan|__lsan|fuzzer::|__restore_rt|raise|abort|__assert|malloc|calloc|realloc|free|posix_memalign|aligned_alloc|memalign|memmove|memcpy|memset|memcmp|strlen|strcmp|strncmp|__pthread_kill|__GI_|__libc_message|__fortify_fail|__stack_chk_fail)|\(/lib/x86_64-linux-gnu/libc\.so|/libc\.so\.6|sysdeps/|/libc-start\.c|/nptl/' |
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

# fuzz_report_has_no_stack: reads a report on stdin; exit 0 when the sanitizer could not print a stack (its own
# report failed, or it printed an empty one), so that only a debugger's backtrace can say whose crash it was.
fuzz_report_has_no_stack() {
  local report
  report=$(cat)
  [ -z "$(printf '%s\n' "$report" | fuzz_deciding_frame)" ] &&
    printf '%s\n' "$report" | grep -qE 'AddressSanitizer: CHECK failed|<empty stack>|stack smashing detected'
}

# fuzz_gdb_frames EXE INPUT: replays INPUT in the fuzz target EXE under gdb, the sanitizer's and libFuzzer's
# signal handlers off and the HDF5 probe off, and prints gdb's backtrace of the crash as report frame lines
# ("    #7  0x… in H5T__bit_get_d () from …/libhdf5_serial.so.103"). Prints nothing without gdb or a crash.
fuzz_gdb_frames() {
  command -v gdb >/dev/null 2>&1 || return 0
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}handle_abort=0:handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_sigill=0" \
    MAMBASCOPE_H5_PROBE=0 timeout 300 gdb -nx -batch -ex run -ex bt --args "$1" -handle_abrt=0 -handle_segv=0 \
    -handle_bus=0 -handle_fpe=0 -handle_ill=0 -rss_limit_mb=2048 -timeout=60 "$2" 2>/dev/null |
    sed -nE 's/^(#[0-9]+ )/    \1/p' || true
}
