#!/usr/bin/env bash
# Gathers the headers the CUDA build needs besides the CUDA toolkit — Eigen, nlohmann_json
# and Catch2 v2, with their CMake package files — from this machine's system folders into
# .device-deps/ (ignored by git), laid out as an install prefix. A GPU machine without them
# (and without apt) builds with them when that folder is copied beside the sources;
# scripts/cuda-device-check.sh adds it to CMAKE_PREFIX_PATH whenever it exists. About 12 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.device-deps
rm -rf "$dest"
mkdir -p "$dest/include" "$dest/share/cmake" "$dest/share/eigen3" "$dest/lib/cmake"
copy() {  # copy SOURCE DEST_FOLDER: fails with the path when the source is missing
    [[ -e $1 ]] || { echo "device-deps: $1 not found (install libeigen3-dev nlohmann-json3-dev catch2)" >&2; exit 1; }
    cp -a "$1" "$2"
}
copy /usr/include/eigen3 "$dest/include/"
copy /usr/share/eigen3/cmake "$dest/share/eigen3/"
copy /usr/include/nlohmann "$dest/include/"
copy /usr/share/cmake/nlohmann_json "$dest/share/cmake/"
copy /usr/include/catch2 "$dest/include/"
copy /usr/lib/cmake/Catch2 "$dest/lib/cmake/"
# Catch2's package names this archive (Catch2::Catch2WithMain) and checks that it exists;
# the tests bring their own main and never link it.
copy /usr/lib/libCatch2WithMain.a "$dest/lib/"
du -sh "$dest"
