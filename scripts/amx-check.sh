#!/usr/bin/env bash
# AMX's bf16 tiles on a CPU that has them (a GPU machine's host is often one), with the
# compiler alone — no CMake, no Google Benchmark:
#
#   01 cpu     lscpu, and whether the CPU reports amx_tile and amx_bf16 (if not: exit 3)
#   02 tests   the gemm tests (tests/core/test_gemm_amx.cpp, test_gemm_bf16.cpp,
#              tests/layers/test_linear.cpp) built -O2 -march=native and run: the tile kernels
#              on the instructions themselves, against the double product of the rounded operands
#   03 probe   benchmarks/amx_probe.cpp: the FMA, vdpbf16ps and AMX peaks, one projection and
#              the mamba-130m-shaped prefill on each unit, in one run
#
# Logs go to "$OUT" (default ./amx-check), one per step, and summary.txt. Catch2 v2's header
# comes from .device-deps/ when that folder exists (scripts/device-deps.sh), else from the
# system. Exits non-zero when a step failed.
#   CXX=g++  OUT=DIR  SSM_AMX_REPS=5 (timings per figure)
#   SSM_AMX_ANYWAY=1  go on without AMX (to try the script: the tile parts then say "not run")
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-$PWD/amx-check}
cxx=${CXX:-g++}
mkdir -p "$out"
includes=(-Iinclude -Itests -Ibenchmarks)
[[ -d .device-deps/include ]] && includes+=(-isystem .device-deps/include -isystem .device-deps/include/eigen3)
includes+=(-isystem /usr/include/eigen3)
flags=(-std=c++20 -march=native -fopenmp -Wall -Wextra -Wno-maybe-uninitialized -Wno-uninitialized)
summary=$out/summary.txt
: >"$summary"
failed=0
step() {  # step NAME STATUS SECONDS
    printf '%-8s %-10s %4ss\n' "$1" "$2" "$3" | tee -a "$summary"
}

t0=$(date +%s)
{ lscpu; echo; grep -o -w 'amx_[a-z0-9]*' /proc/cpuinfo | sort -u; } >"$out/01-cpu.log" 2>&1
if ! grep -q -w amx_bf16 /proc/cpuinfo || ! grep -q -w amx_tile /proc/cpuinfo; then
    step cpu "NO AMX" $(($(date +%s) - t0))
    if [[ ${SSM_AMX_ANYWAY:-0} != 1 ]]; then
        echo "amx-check: this CPU reports no amx_tile/amx_bf16; nothing to check" >&2
        exit 3
    fi
else
    step cpu PASS $(($(date +%s) - t0))
fi

t0=$(date +%s)
if timeout 900 "$cxx" "${flags[@]}" -O2 "${includes[@]}" "-DSSM_TEST_DATA_DIR=\"$PWD/tests/data\"" \
        tests/catch_main.cpp tests/data_dir.cpp tests/core/test_gemm_amx.cpp tests/core/test_gemm_bf16.cpp \
        tests/layers/test_linear.cpp -o "$out/gemm_tests" >"$out/02-tests.log" 2>&1 &&
    timeout 600 "$out/gemm_tests" --durations yes >>"$out/02-tests.log" 2>&1; then
    step tests PASS $(($(date +%s) - t0))
else
    step tests FAIL $(($(date +%s) - t0))
    failed=1
fi
tail -3 "$out/02-tests.log"

t0=$(date +%s)
if timeout 600 "$cxx" "${flags[@]}" -O3 "${includes[@]}" benchmarks/amx_probe.cpp -o "$out/amx_probe" \
        >"$out/03-probe.log" 2>&1 &&
    timeout 600 "$out/amx_probe" --reps "${SSM_AMX_REPS:-5}" >>"$out/03-probe.log" 2>&1; then
    step probe PASS $(($(date +%s) - t0))
else
    step probe FAIL $(($(date +%s) - t0))
    failed=1
fi
cat "$out/03-probe.log"
exit $failed
