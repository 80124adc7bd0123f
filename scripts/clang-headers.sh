#!/usr/bin/env bash
# Compiles every public header of include/ssm on its own with clang (C++20, the project's
# warnings as errors): each header must stand alone, and clang must accept the library.
#   SSM_JOBS=N  headers compiled at once (default: number of cores)
#   SSM_CLANG=clang++-NN  the compiler (default: clang++)
set -euo pipefail
cd "$(dirname "$0")/.."
cxx=${SSM_CLANG:-clang++}
command -v "$cxx" >/dev/null || { echo "clang-headers.sh: $cxx not found" >&2; exit 1; }
eigen=$(pkg-config --cflags eigen3 2>/dev/null | sed "s/-I/-isystem /")
[[ -n "$eigen" ]] || eigen="-isystem /usr/include/eigen3"
# The optional parts' headers (retrieval/mpi.hpp) need their package's include folders;
# a header whose package is not installed is skipped, with a line saying so.
mpi=$(pkg-config --cflags mpi-c 2>/dev/null | sed "s/-I/-isystem /g" || true)
echo "clang-headers.sh: $("$cxx" --version | head -n 1)"
export cxx eigen mpi
status=0
find include/ssm -name '*.hpp' | sort | xargs -P "${SSM_JOBS:-$(nproc)}" -I{} bash -c '
  extra=""
  case "$1" in
    */retrieval/mpi.hpp) [[ -n "$mpi" ]] || { echo "clang-headers.sh: $1 skipped (no MPI)"; exit 0; }; extra=$mpi ;;
    */retrieval/faiss_index.hpp) [[ -e /usr/include/faiss/Index.h ]] || { echo "clang-headers.sh: $1 skipped (no FAISS)"; exit 0; } ;;
  esac
  printf "#include \"%s\"\n" "${1#include/}" |
    $cxx -std=c++20 -fsyntax-only -Wall -Wextra -Wpedantic -Werror -Iinclude $eigen $extra -x c++ - ||
    { echo "clang-headers.sh: $1 does not compile on its own with $cxx" >&2; exit 1; }' _ {} || status=1
((status == 0)) || exit 1
echo "clang-headers.sh: $(find include/ssm -name '*.hpp' | wc -l) headers compile on their own"
