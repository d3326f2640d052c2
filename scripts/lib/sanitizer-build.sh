#!/usr/bin/env bash
# sanitizer-build.sh: sourced by scripts/asan.sh and scripts/fuzz.sh. Configures ONE clang build tree with
# AddressSanitizer + UndefinedBehaviorSanitizer and libFuzzer's coverage instrumentation (fuzzer-no-link) for the
# engine, the CLI, the test suite and the fuzz targets (MAMBASCOPE_FUZZ=ON), so that the sanitizer suite and the
# fuzzers share one build (CI builds it once). GUI, CUDA and benchmarks are off. SGEMM is Eigen's here: Debian's
# OpenBLAS/BLIS OpenMP builds are made for GCC's libgomp, and in a clang program they run on LLVM's libomp, which
# OpenBLAS initialises at load time (a shared-memory registration that aborts the process under `ulimit -f 0`,
# the full-disk tests' setting). The Release build (GCC) links OpenBLAS as shipped; CpuGemm.* checks every backend.
# MPI is off here (Open MPI's own allocations would be leak reports); the one-rank path of the batch jobs, the
# same work-unit code, runs under the sanitizers; the mpirun tests (label mpi) run in the Release suite.
# Sets: san_build (the tree; MAMBASCOPE_SAN_BUILD_DIR overrides build-san/), san_jobs.
# Call sanitizer_configure once; then cmake --build "$san_build" --target <what you need>.
san_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
san_build="${MAMBASCOPE_SAN_BUILD_DIR:-$san_root/build-san}"
san_jobs="${MAMBASCOPE_JOBS:-$(nproc)}"

sanitizer_configure() {
  # The toolchain (clang, its ASan/UBSan/libFuzzer runtime, OpenMP for clang, gdb for the fuzz triage) is not in
  # install-deps.sh's default list: install it only when missing. Then the engine's own packages (a no-op when
  # present).
  local fuzzer_lib
  fuzzer_lib=$(ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a 2>/dev/null | head -1 || true)
  if ! command -v clang++ >/dev/null || [ -z "$fuzzer_lib" ] || ! dpkg-query -W libomp-dev >/dev/null 2>&1 ||
    ! command -v gdb >/dev/null; then
    bash "$san_root/scripts/install-deps.sh" --fuzz
  fi
  bash "$san_root/scripts/install-deps.sh" >/dev/null
  local san="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
  local launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  cmake -S "$san_root" -B "$san_build" "${launcher[@]}" \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DCMAKE_C_FLAGS="$san" -DCMAKE_CXX_FLAGS="$san" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
    -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
    -DMAMBASCOPE_FUZZ=ON -DMAMBASCOPE_TESTS=ON -DMAMBASCOPE_BENCH=OFF -DMAMBASCOPE_GUI=OFF -DMAMBASCOPE_CUDA=OFF \
    -DMAMBASCOPE_BLAS=eigen -DMAMBASCOPE_MPI=OFF \
    >/dev/null
}

# Sanitizer run-time settings shared by the suite and the fuzzers. No suppressions: a report anywhere, system
# libraries included, is a failure. detect_leaks: a leak is a failure; abort_on_error: a report kills the process
# (ctest / libFuzzer see it).
# clang's OpenMP run-time (libomp) registers every process that loads it in /dev/shm/__KMP_REGISTERED_LIB_<pid>_<uid>
# and removes the file at a normal exit. A process that dies by a signal or _exit (a fuzzer's crash, the triage's
# replays, a killed CLI in the tests) leaves it behind, and a later process that gets the same pid reads it at
# start-up: libomp then judged the dead one's entry and crashed formatting its message (SIGBUS in vsnprintf from
# __kmpc_global_thread_num, RetrievalRun.GridRowsScoresAndJsonRoundTrip under scripts/asan.sh after a day of
# fuzzing on the same machine). Removes the entries of processes that no longer exist.
sanitizer_clean_omp_registrations() {
  local f pid
  for f in /dev/shm/__KMP_REGISTERED_LIB_*; do
    [ -e "$f" ] || continue
    pid=${f#/dev/shm/__KMP_REGISTERED_LIB_}
    pid=${pid%%_*}
    case "$pid" in '' | *[!0-9]*) continue ;; esac
    kill -0 "$pid" 2>/dev/null || rm -f "$f"
  done
}

sanitizer_env() {
  sanitizer_clean_omp_registrations
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:allocator_may_return_null=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
}
