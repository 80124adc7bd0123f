#!/usr/bin/env bash
# Installs what building ssm and its tests needs on a Debian/Ubuntu machine (run as root).
# Packages already present are left alone; nothing is installed when all are there.
set -euo pipefail
packages=(cmake g++ make libeigen3-dev nlohmann-json3-dev catch2 libbenchmark-dev)
# clang: every public header is compiled with it, and the fuzz harnesses need its
# libFuzzer + sanitizer runtimes (libclang-rt-dev, only recommended by clang).
packages+=(clang libclang-rt-dev)
packages+=(libfaiss-dev libopenblas0-pthread libopenmpi-dev openmpi-bin)  # optional: FAISS indexes (with a threaded BLAS), MPI sharding
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
