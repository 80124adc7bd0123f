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
echo "clang-headers.sh: $("$cxx" --version | head -n 1)"
export cxx eigen
status=0
find include/ssm -name '*.hpp' | sort | xargs -P "${SSM_JOBS:-$(nproc)}" -I{} bash -c '
  printf "#include \"%s\"\n" "${1#include/}" |
    $cxx -std=c++20 -fsyntax-only -Wall -Wextra -Wpedantic -Werror -Iinclude $eigen -x c++ - ||
    { echo "clang-headers.sh: $1 does not compile on its own with $cxx" >&2; exit 1; }' _ {} || status=1
((status == 0)) || exit 1
echo "clang-headers.sh: $(find include/ssm -name '*.hpp' | wc -l) headers compile on their own"
