#!/usr/bin/env bash
# install-deps.sh: installs every Debian 12 package that Mambascope's build, run and tests need.
# A no-op (no apt call at all) when everything is already present. Needs root or sudo.
# `install-deps.sh --fuzz` also installs the optional fuzzing toolchain (clang, libFuzzer, llvm tools; used only by
# scripts/fuzz.sh), which the default list leaves out.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libeigen3-dev libopenblas0-openmp libblis4-openmp libhdf5-dev hdf5-tools
  libgtest-dev libgmock-dev libbenchmark-dev
  qt6-base-dev qt6-base-dev-tools qt6-svg-dev libqcustomplot-dev libgl-dev
  xvfb xauth
  python3 python3-h5py python3-numpy python3-matplotlib python3-xarray python3-h5netcdf python3-netcdf4 python3-silx
  nlohmann-json3-dev libicu-dev zlib1g-dev libcli11-dev
  libopenmpi-dev openmpi-bin
  fonts-dejavu-core
)

# Optional: only with --fuzz (scripts/fuzz.sh). clang + its runtime (libFuzzer, ASan/UBSan), OpenMP for clang, llvm,
# gdb.
# gdb: the triage's backtrace when a sanitizer report has no stack (scripts/lib/fuzz-triage.sh, fuzz_gdb_frames).
fuzz_packages=(clang libclang-rt-dev libomp-dev llvm gdb)
for arg in "$@"; do
  case "$arg" in
    --fuzz) packages+=("${fuzz_packages[@]}") ;;
    *) echo "install-deps: unknown argument $arg (known: --fuzz)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
