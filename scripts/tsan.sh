#!/usr/bin/env bash
# Opt-in ThreadSanitizer pass over the threaded tests: every test file that checks results
# across thread counts (those using ssm::test::MultiThreadCheck) is compiled with clang,
# -fsanitize=thread and LLVM's OpenMP runtime, and run with the Archer tool loaded, so
# TSan sees OpenMP's barriers and does not report them as races. Not part of
# scripts/test.sh (see docs/reliability.md for its time).
#   SSM_TSAN_BUILD=DIR  build folder (default build-tsan)
#   SSM_JOBS=N          files compiled at once (default: number of cores)
# Needs clang++ and libomp-dev (LLVM's OpenMP, which ships libarcher.so).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${SSM_TSAN_BUILD:-build-tsan}
cxx=${SSM_CLANG:-clang++}
command -v "$cxx" >/dev/null || { echo "tsan.sh: $cxx not found" >&2; exit 1; }
llvm_lib=$("$cxx" -print-resource-dir | sed 's#/lib/clang/.*##')/lib
archer=$llvm_lib/libarcher.so
[[ -e "$archer" && -e "$llvm_lib/libomp.so" ]] ||
  { echo "tsan.sh: LLVM's OpenMP runtime or libarcher.so missing in $llvm_lib (apt-get install libomp-dev)" >&2; exit 1; }
eigen=$(pkg-config --cflags eigen3 2>/dev/null | sed 's/-I/-isystem /' || echo "-isystem /usr/include/eigen3")
[[ -n "$eigen" ]] || eigen="-isystem /usr/include/eigen3"

mapfile -t files < <(grep -rl 'MultiThreadCheck threaded' tests --include='test_*.cpp' | sort)
((${#files[@]})) || { echo "tsan.sh: no threaded tests found" >&2; exit 1; }
mkdir -p "$build"
launcher=$(command -v ccache || true)
export launcher cxx build data_dir="$PWD/tests/data"
export tsan_flags="-std=c++20 -O1 -g -fno-omit-frame-pointer -fsanitize=thread -fopenmp=libomp -Iinclude -Itests $eigen"
compile() {
  local extra=()
  [[ "$1" == tests/data_dir.cpp ]] && extra=("-DSSM_TEST_DATA_DIR=\"$data_dir\"")
  # shellcheck disable=SC2086
  $launcher $cxx $tsan_flags "${extra[@]}" -c "$1" -o "$build/$(echo "$1" | tr / _).o"
}
export -f compile
echo "tsan.sh: ${#files[@]} test files: ${files[*]}"
start=$SECONDS
rm -f "$build"/*.o
printf '%s\n' tests/catch_main.cpp tests/data_dir.cpp "${files[@]}" |
  xargs -P "${SSM_JOBS:-$(nproc)}" -I{} bash -c 'compile "$1" || exit 255' _ {}
"$cxx" -fsanitize=thread -fopenmp=libomp "$build"/*.o -o "$build/ssm_tsan_tests" -L"$llvm_lib" -Wl,-rpath,"$llvm_lib"
echo "tsan.sh: built in $((SECONDS - start)) s"

tags=$(for f in "${files[@]}"; do printf '[#%s],' "$(basename "$f" .cpp)"; done)
start=$SECONDS
OMP_TOOL_LIBRARIES="$archer" TSAN_OPTIONS="ignore_noninstrumented_modules=1 halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" \
  "$build/ssm_tsan_tests" "${tags%,}" --filenames-as-tags
echo "tsan.sh: the threaded tests ran clean under ThreadSanitizer in $((SECONDS - start)) s"
