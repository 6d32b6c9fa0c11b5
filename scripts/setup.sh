#!/usr/bin/env bash
# setup.sh - installs the Debian packages nnparity needs to build, test and run its demo.
# Idempotent and quick when everything is present. As root it runs apt-get (after `apt-get update`
# when the package lists are missing); otherwise it prints the exact command and stops.
set -euo pipefail

# Build: compilers, the unit-test framework, JSON, zlib, PCRE2 (regexes), libpng (PNG plots). Tests: numpy, torch,
# torchvision (real models with random weights) and pytest for the interpreter Debian's packages
# install into (/usr/bin/python3), and chromium, which opens the HTML report headless. Open MPI
# (mpicc builds the plugin behind `nnparity diff --mpi`; mpirun runs its tests); nnparity itself
# never links it. Installing (make install) and its tests: pkg-config and CMake, which programs
# outside the tree find the library with, g++ and the C library's static archive for the C++
# and static consumers, groff and man-db for the man pages, and pip, setuptools, wheel and venv
# for the Python package.
packages=(gcc make clang libcmocka-dev libjansson-dev zlib1g-dev libpcre2-dev libpng-dev
          python3 python3-numpy python3-torch python3-torchvision python3-pytest chromium
          openmpi-bin libopenmpi-dev
          pkgconf cmake g++ libc6-dev groff-base man-db
          python3-pip python3-setuptools python3-wheel python3-venv)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "nnparity needs these Debian packages: ${missing[*]}" >&2
    echo "Install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Fresh images ship without package lists; installing from stale lists fails, so refresh then.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -print -quit 2>/dev/null)" ]; then
    apt-get update -q
fi
if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
