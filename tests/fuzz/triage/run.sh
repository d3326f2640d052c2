#!/usr/bin/env bash
# run.sh: checks scripts/lib/fuzz-triage.sh (scripts/fuzz.sh's verdict on a crash the HDF5 probe contained) on
# reports recorded from the fuzz targets in this directory: libhdf5-*.txt must be judged libhdf5's (contained),
# own-*.txt Mambascope's (a finding). ctest: fuzz_triage.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../../../scripts/lib/fuzz-triage.sh
source "$here/../../../scripts/lib/fuzz-triage.sh"
fail=0 n=0
for report in "$here"/*.txt; do
  name=$(basename "$report")
  n=$((n + 1))
  if fuzz_is_libhdf5_report <"$report"; then verdict=libhdf5; else verdict=own; fi
  expected=${name%%-*}
  frame=$(fuzz_deciding_frame <"$report" | sed -E 's/^\s+//' | cut -c1-100)
  if [ "$verdict" = "$expected" ]; then
    echo "ok   $name: $verdict (${frame:-no frame})"
  else
    echo "FAIL $name: judged $verdict, expected $expected (${frame:-no frame})"
    fail=1
  fi
done
[ "$n" -ge 5 ] || { echo "FAIL: only $n recorded reports"; exit 1; }
exit "$fail"
