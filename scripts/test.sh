#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds and runs every
# test (unit, parity, bad input, programs, packaging), then the unit tests again under
# AddressSanitizer + UBSan.
#   SSM_JOBS=N     parallel build jobs (default: number of cores)
#   SSM_SKIP_ASAN=1  skip the sanitizer pass (quicker local runs)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=${SSM_JOBS:-$(nproc)}

echo "== build (Release) and test"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"

if [[ "${SSM_SKIP_ASAN:-0}" != 1 ]]; then
  echo "== unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSSM_SANITIZE=ON \
        -DSSM_BUILD_EXAMPLES=OFF -DSSM_INSTALL=OFF >/dev/null
  cmake --build build-asan -j "$jobs" --target ssm_tests
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j "$jobs" -L unit
fi
