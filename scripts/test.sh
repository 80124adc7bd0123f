#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds and runs every
# test (unit, parity, bad input, programs, packaging), compiles the CUDA backend with nvcc
# (running its tests where a GPU exists), then the unit and program tests again under
# AddressSanitizer + UBSan, then with clang: every public header alone and a short run of
# each fuzz harness (tests/fuzz).
#   SSM_JOBS=N     parallel build jobs (default: number of cores)
#   SSM_SKIP_ASAN=1  skip the sanitizer pass (quicker local runs)
#   SSM_ASAN_PROGRAMS=1  also build the programs sanitized and run their tests under ASan
#   SSM_SKIP_CUDA=1  skip compiling the CUDA backend (done whenever nvcc is found)
#   SSM_SKIP_CLANG=1 skip the clang stage (every public header alone, the fuzz harnesses)
#   SSM_FUZZ_SECONDS=N  how long each fuzz harness runs (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=${SSM_JOBS:-$(nproc)}

echo "== build (Release) and test"
# Every option the suite relies on is set here: build/ may already hold a cache from the
# README's first command (-DSSM_BUILD_TESTS=OFF), and a cached OFF would otherwise stand.
# An empty test set is an error, never a pass.
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSSM_BUILD_TESTS=ON -DSSM_BUILD_EXAMPLES=ON \
      -DSSM_INSTALL=ON -DSSM_USE_OPENMP=ON -DSSM_SANITIZE=OFF -DSSM_BUILD_CUDA=OFF \
      -DSSM_BUILD_FUZZERS=OFF -DSSM_UNITY_TESTS=ON >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure --no-tests=error -j "$jobs"

# The CUDA backend: every CUDA target compiled with nvcc (sm_90 and sm_80) so a broken
# kernel cannot land; its tests run on a GPU and report "Skipped" (exit 77) without one.
nvcc_path=$(command -v nvcc || true)
[[ -z "$nvcc_path" && -x /usr/local/cuda/bin/nvcc ]] && nvcc_path=/usr/local/cuda/bin/nvcc
if [[ "${SSM_SKIP_CUDA:-0}" != 1 && -n "$nvcc_path" ]]; then
  echo "== CUDA backend: compile with $nvcc_path (sm_90, sm_80), run where a GPU exists"
  cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DSSM_BUILD_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc_path" \
        -DCMAKE_CUDA_ARCHITECTURES="90;80" -DSSM_BUILD_EXAMPLES=OFF -DSSM_INSTALL=OFF >/dev/null
  cmake --build build-cuda -j "$jobs" --target ssm_cuda_all
  ctest --test-dir build-cuda --output-on-failure --no-tests=error -L cuda
elif [[ "${SSM_SKIP_CUDA:-0}" != 1 ]]; then
  echo "== CUDA backend: SKIPPED (no nvcc on this machine)"
fi

# The programs' end-to-end tests join this pass with SSM_ASAN_PROGRAMS=1: each program,
# sanitized, takes several CPU minutes to compile, more than CI's budget holds
# (docs/reliability.md has the times).
if [[ "${SSM_SKIP_ASAN:-0}" != 1 ]]; then
  if [[ "${SSM_ASAN_PROGRAMS:-0}" == 1 ]]; then
    echo "== unit and program tests under AddressSanitizer + UndefinedBehaviorSanitizer"
    asan_targets=(ssm_tests ssm_program_tests compose-model compose-encoder)
    asan_labels="unit|programs"
  else
    echo "== unit tests under AddressSanitizer + UndefinedBehaviorSanitizer (programs too: SSM_ASAN_PROGRAMS=1)"
    asan_targets=(ssm_tests)
    asan_labels="unit"
  fi
  # -O1 with line tables only (-g1): sanitized code at -O2 -g takes over twice as long to
  # compile, and the reports still name file and line (docs/reliability.md has the times).
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
        -DSSM_SANITIZE=ON -DSSM_BUILD_TESTS=ON -DSSM_BUILD_EXAMPLES=ON -DSSM_INSTALL=OFF \
        -DSSM_BUILD_CUDA=OFF -DSSM_UNITY_TESTS=ON >/dev/null
  cmake --build build-asan -j "$jobs" --target "${asan_targets[@]}"
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure --no-tests=error -j "$jobs" -L "$asan_labels"
fi

# clang: every public header compiles on its own (Debian's clang is 14), and each libFuzzer
# harness of tests/fuzz runs for a short smoke time; any finding fails the suite.
if [[ "${SSM_SKIP_CLANG:-0}" != 1 ]]; then
  echo "== clang: each public header on its own; fuzz harnesses (${SSM_FUZZ_SECONDS:-15} s each)"
  SSM_JOBS="$jobs" bash scripts/clang-headers.sh
  SSM_JOBS="$jobs" bash scripts/fuzz.sh "${SSM_FUZZ_SECONDS:-15}"
fi
