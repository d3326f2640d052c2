#!/usr/bin/env bash
# dist_test.sh: mambascope-cli's batch jobs under mpirun (docs/scaling.md), on the CPU. One case per ctest test
# (label mpi; registered only when the build has MPI and mpirun exists):
#   calibrate | ppl-sweep | retrieval   -np 2 and -np 3 give the one-process output (timings aside)
#   kill      a rank killed mid-run (SIGKILL): non-zero exit, a message naming the rank, no output file
#   fail      a unit that throws: "rank R: unit U (...) failed: ...", non-zero exit, no output file
#   resume    --resume after a killed run: only the missing units are computed, the output is the same
# Usage: dist_test.sh CASE --cli PATH --resources DIR --work DIR
set -euo pipefail
case_name=$1; shift
while [ $# -gt 0 ]; do
  case "$1" in
    --cli) cli=$2; shift 2 ;;
    --resources) res=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    *) echo "dist_test: unknown argument $1" >&2; exit 2 ;;
  esac
done
rm -rf "$work"; mkdir -p "$work"; cd "$work"

# One OpenMP thread per process: the runs differ only in their number of ranks. mpirun may run as root (CI
# containers) and oversubscribe the cores; shared memory without the single-copy mechanism works in containers.
export OMP_NUM_THREADS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1
mpi() { local np=$1; shift; mpirun --oversubscribe -np "$np" "$cli" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

m1=$res/models/demo-mamba1
text=$res/text/demo.txt
cal1=$res/calibration/demo-mamba1.h5

# Outputs equal but for the wall-clock columns (ppl-sweep's `seconds`, retrieval's per-row `seconds`).
same_h5() {  # every dataset's bytes and every attribute (HDF5 files also hold object times)
  /usr/bin/python3 - "$1" "$2" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
def items(f):
    out = {}
    f.visititems(lambda n, o: out.__setitem__(n, o))
    return out
ia, ib = items(a), items(b)
assert sorted(ia) == sorted(ib), (sorted(ia), sorted(ib))
for n in ia:
    if isinstance(ia[n], h5py.Dataset):
        assert ia[n][()].tobytes() == ib[n][()].tobytes(), "dataset " + n + " differs"
for obj_a, obj_b in [(a, b)] + [(ia[n], ib[n]) for n in ia]:
    ka, kb = dict(obj_a.attrs), dict(obj_b.attrs)
    assert sorted(ka) == sorted(kb)
    for k in ka:
        assert np.array_equal(np.asarray(ka[k]), np.asarray(kb[k])), "attribute " + k + " differs"
PY
}
same_csv() { cmp <(cut -d, -f1-6 "$1") <(cut -d, -f1-6 "$2"); }
same_json() { cmp <(grep -v '"seconds"' "$1") <(grep -v '"seconds"' "$2"); }

calibrate_args=(calibrate --model "$m1" --text "$text" --train-len 512 --samples 5 --lengths 1000,2000,4000
  --progress none)  # 5 windows
sweep_args=(ppl-sweep --model "$m1" --text "$text" --lengths 256,512,1024 --predict 50
  --methods vanilla,longmamba --calibration "$cal1" --progress none --windows 3)  # 3 × 2 × 3 = 18 units
retrieval_args=(retrieval --model demo --lengths 300,600 --depths 0,1 --samples 1 --no-generate
  --progress none)  # 4 haystacks

case "$case_name" in
  calibrate)
    "$cli" "${calibrate_args[@]}" --out ref.h5 > ref.txt
    for np in 2 3; do
      mpi "$np" "${calibrate_args[@]}" --out np$np.h5 > np$np.txt 2> np$np.err || fail "-np $np exited $?"
      same_h5 ref.h5 np$np.h5 || fail "calibrate -np $np differs from one process"
      sed "s#np$np.h5#ref.h5#" np$np.txt | cmp - ref.txt || fail "calibrate -np $np printed another summary"
      grep -q "$np ranks, 5 units computed" np$np.err || fail "no busy report: $(cat np$np.err)"
    done ;;
  ppl-sweep)
    "$cli" "${sweep_args[@]}" --out ref.csv > ref.txt
    for np in 2 3; do
      mpi "$np" "${sweep_args[@]}" --out np$np.csv > np$np.txt 2> np$np.err || fail "-np $np exited $?"
      same_csv ref.csv np$np.csv || fail "ppl-sweep -np $np differs from one process"
      cmp ref.txt np$np.txt || fail "ppl-sweep -np $np printed another table"
      grep -q "rank $((np - 1)): [1-9]" np$np.err || fail "the last rank computed nothing: $(cat np$np.err)"
    done ;;
  retrieval)
    "$cli" "${retrieval_args[@]}" --out ref.json > /dev/null
    for np in 2 3; do
      mpi "$np" "${retrieval_args[@]}" --out np$np.json > /dev/null 2> np$np.err || fail "-np $np exited $?"
      same_json ref.json np$np.json || fail "retrieval -np $np differs from one process"
    done
    # --json on stdout carries each rank's busy time
    mpi 2 "${retrieval_args[@]}" --json > np2.stdout 2> /dev/null
    /usr/bin/python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert len(j["ranks"]) == 2 and sum(r["units"] for r in j["ranks"]) == 4, j["ranks"]' np2.stdout ;;
  kill)
    set +e
    MAMBASCOPE_DIST_TEST_KILL_UNIT=7 mpi 2 "${sweep_args[@]}" --out killed.csv > /dev/null 2> killed.err
    rc=$?
    set -e
    [ "$rc" -ne 0 ] || fail "a killed rank left exit status 0"
    [ ! -e killed.csv ] || fail "a killed run left an output file"
    ls -A | grep -q '^killed.csv' && fail "a killed run left a temp file: $(ls -A)"
    grep -q "rank 1: MAMBASCOPE_DIST_TEST_KILL_UNIT=7: raising SIGKILL before unit 7" killed.err ||
      fail "no message naming the rank and unit: $(cat killed.err)"
    grep -qi "signal 9\|killed" killed.err || fail "mpirun did not report the kill: $(cat killed.err)" ;;
  fail)
    for np in 2 3; do
      set +e
      MAMBASCOPE_DIST_TEST_FAIL_UNIT=4 mpi "$np" "${sweep_args[@]}" --out failed.csv > /dev/null 2> failed.err
      rc=$?
      set -e
      [ "$rc" -ne 0 ] || fail "a failed unit left exit status 0"
      [ ! -e failed.csv ] || fail "a failed unit left an output file"
      grep -Eq "mambascope-cli ppl-sweep: rank [0-9]: unit 4 \(longmamba at 256 tokens, window 2/3 at token [0-9]+\) failed: test failure" failed.err ||
        fail "no message naming the rank and unit: $(cat failed.err)"
    done
    # one process: the error as usual (exit 1)
    set +e
    MAMBASCOPE_DIST_TEST_FAIL_UNIT=4 "$cli" "${sweep_args[@]}" --out failed.csv > /dev/null 2> failed.err
    rc=$?
    set -e
    [ "$rc" -eq 1 ] && [ ! -e failed.csv ] || fail "one process: exit $rc" ;;
  resume)
    "$cli" "${sweep_args[@]}" --out ref.csv > /dev/null
    # killed at unit 9: longest first, rank 1 computes units 13, 15, 17 (1024 tokens), 7, then 9: four are in its
    # checkpoint whatever rank 0 did meanwhile
    set +e
    MAMBASCOPE_DIST_TEST_KILL_UNIT=9 mpi 2 "${sweep_args[@]}" --out out.csv --resume ckpt > /dev/null 2> killed.err
    rc=$?
    set -e
    [ "$rc" -ne 0 ] && [ ! -e out.csv ] || fail "the killed run: exit $rc, $(ls)"
    ls ckpt.rank* > /dev/null || fail "no checkpoint files"
    # another job's checkpoint is refused
    set +e
    "$cli" "${sweep_args[@]:0:${#sweep_args[@]}-1}" 2 --out other.csv --resume ckpt > /dev/null 2> other.err
    rc=$?
    set -e
    [ "$rc" -eq 1 ] && grep -q "belongs to another job" other.err || fail "another job's checkpoint: $(cat other.err)"
    # resume on three ranks: the rest of the units, the same output, the checkpoint removed
    mpi 3 "${sweep_args[@]}" --out out.csv --resume ckpt > /dev/null 2> resumed.err || fail "resume exited $?"
    same_csv ref.csv out.csv || fail "the resumed sweep differs from one uninterrupted process"
    read -r computed resumed < <(sed -n 's/.*3 ranks, \([0-9]*\) units computed, \([0-9]*\) from the checkpoint.*/\1 \2/p' resumed.err)
    [ -n "${computed:-}" ] || fail "no busy report: $(cat resumed.err)"
    [ "$resumed" -ge 4 ] && [ $((computed + resumed)) -eq 18 ] ||
      fail "computed $computed + resumed $resumed units of 18"
    ! ls ckpt.rank* 2> /dev/null || fail "checkpoint files left after success"
    # and on one process, from a checkpoint of a killed one-process run: one rank computes in unit order and
    # reduces each unit at once (dist.cpp), so units 0..13 are done when it is killed at 14
    set +e
    MAMBASCOPE_DIST_TEST_KILL_UNIT=14 "$cli" "${sweep_args[@]}" --out out1.csv --resume ck1 > /dev/null 2>&1
    set -e
    "$cli" "${sweep_args[@]}" --out out1.csv --resume ck1 > /dev/null 2> resumed1.err
    grep -q "1 rank, 4 units computed, 14 from the checkpoint" resumed1.err || fail "one process: $(cat resumed1.err)"
    same_csv ref.csv out1.csv || fail "the resumed one-process sweep differs" ;;
  *) echo "dist_test: unknown case $case_name" >&2; exit 2 ;;
esac
echo "dist_test $case_name: ok"
