#!/usr/bin/env bash
# The CUDA backend's checks on a machine with a GPU, in one go and within a time budget:
#
#   01 configure   build-cuda with -DSSM_BUILD_CUDA=ON for this GPU (CMAKE_CUDA_ARCHITECTURES
#                  native; 90 if CMake cannot detect it)
#   02 build       the CUDA targets only (ssm_cuda_all: ssm_test_cuda_ops, ssm_test_cuda_model,
#                  ssm_bench_cuda_scan, ssm_bench_cuda_model, compiled side by side)
#   03 ctest       ctest -L cuda (every device op against the CPU, the model against the
#                  references); a test reported as skipped counts as a failure here
#   04 bench-scan  ssm_bench_cuda_scan
#   05 bench-model ssm_bench_cuda_model
#   06 bert        benchmarks/cuda/bert_sdpa_baseline.py (PyTorch)
#   07 memcheck    compute-sanitizer memcheck on the ops test, SSM_CUDA_TEST_QUICK=1
#   08 racecheck   compute-sanitizer racecheck on the ops tests whose kernels use shared
#                  memory (norms, scans, the fused decoding step, argmax), quick mode
#
#   03b isolate    only when 03 failed: every test case in a process of its own (one case that
#                  breaks the CUDA context cannot hide the others), then 07-08, then 04-06
#
# When the tests pass, the benchmarks run before the sanitizers: the sanitizers' duration is
# the least certain, so they get what is left of the budget. Every step runs whatever happened before it (a
# step whose program did not build fails on its own), each under a time limit, and tees its
# output to "$OUT"/NN-step.log; "$OUT"/summary.txt lists every step with its status and
# time. Exits non-zero when any step failed, timed out or was not reached.
#
#   OUT=DIR                  where the logs go (default: ./cuda-device-check)
#   SSM_CHECK_BUDGET=SECONDS the whole run's budget (default 450: 7.5 minutes)
#   SSM_CUDA_ARCH=ARCHS      CMAKE_CUDA_ARCHITECTURES (default: native, falling back to 90)
#   SSM_JOBS=N               parallel build jobs (default: number of cores)
#   SSM_PYTHON=PATH          the Python with PyTorch for the baseline (default: python3)
#   SSM_PREBUILT=DIR         the four CUDA programs built on another machine for this GPU
#                            from a checkout at the same path: used when they start here
#                            (configure and build are skipped, the tests run directly)
#   SSM_SKIP="bert"          steps to leave out (only the PyTorch baseline can be)
#
# A machine without Eigen, nlohmann_json or Catch2: run scripts/device-deps.sh where they
# are installed and carry the .device-deps folder it writes; configure puts it first.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD
out=${OUT:-$root/cuda-device-check}
mkdir -p "$out"
budget=${SSM_CHECK_BUDGET:-450}
jobs=${SSM_JOBS:-$(nproc)}
python=${SSM_PYTHON:-python3}
build="build-cuda"
start=$(date +%s)

steps=() statuses=() times=()
failed=0

elapsed() { echo $(($(date +%s) - start)); }

# run_step NN NAME CAP COMMAND...: runs COMMAND (a program or one of the exported functions
# below) under min(CAP, what is left of the budget) seconds, output to the terminal and to
# $out/NN-NAME.log; records PASS, FAIL (rc N), TIMEOUT or NOT RUN.
run_step() {
    local nn=$1 name=$2 cap=$3
    shift 3
    local log="$out/$nn-$name.log"
    local left=$((budget - $(elapsed)))
    local status t0 rc
    if ((left < 15)); then
        status="NOT RUN (budget spent)"
        echo "== $nn $name: not run, the ${budget}s budget is spent" | tee "$log"
        rc=1
        t0=$(date +%s)
    else
        local limit=$((cap < left ? cap : left))
        echo "== $nn $name (limit ${limit}s): $*" | tee "$log"
        t0=$(date +%s)
        timeout --kill-after=10 "$limit" bash -c '"$@"' bash "$@" 2>&1 | tee -a "$log"
        rc=${PIPESTATUS[0]}
        if ((rc == 0)); then
            status=PASS
        elif ((rc == 124 || rc == 137)); then
            status="TIMEOUT (${limit}s)"
        else
            status="FAIL (rc $rc)"
        fi
    fi
    local took=$(($(date +%s) - t0))
    echo "== $nn $name: $status in ${took}s" | tee -a "$log"
    steps+=("$nn $name") statuses+=("$status") times+=("$took")
    [[ $status == PASS ]] || failed=$((failed + 1))
    return 0
}

# After a step that passed: fail it when its output says a test did not run on the device
# (the CUDA tests exit 77 without one, which ctest reports as "Skipped" and exits 0).
fail_if_skipped() {
    local log=$1
    [[ ${statuses[-1]} == PASS ]] || return 0
    if grep -qE 'SKIPPED: no CUDA device|\(Skipped\)|\*\*\*Skipped|Not Run' "$log"; then
        echo "== a test was skipped or not run (no usable GPU?): counted as a failure" | tee -a "$log"
        statuses[-1]="FAIL (skipped)"
        failed=$((failed + 1))
    fi
}

configure() {
    # A build folder configured elsewhere (another checkout, another machine) starts over.
    if [[ -f $build/CMakeCache.txt ]] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$root" "$build/CMakeCache.txt"; then
        echo "removing $build: configured for another source folder"
        rm -rf "$build"
    fi
    local archs=${SSM_CUDA_ARCH:-native}
    local args=(-S . -B "$build" -G "Unix Makefiles" -DCMAKE_BUILD_TYPE=Release -DSSM_BUILD_CUDA=ON
                -DSSM_BUILD_EXAMPLES=OFF -DSSM_INSTALL=OFF)
    # Headers gathered by scripts/device-deps.sh (Eigen, nlohmann_json, Catch2 v2), when carried.
    if [[ -d $root/.device-deps ]]; then
        echo "using $root/.device-deps (scripts/device-deps.sh) before the system folders"
        args+=(-DCMAKE_PREFIX_PATH="$root/.device-deps")
    fi
    if cmake "${args[@]}" -DCMAKE_CUDA_ARCHITECTURES="$archs"; then return 0; fi
    [[ -n ${SSM_CUDA_ARCH:-} ]] && return 1
    echo "configure with CMAKE_CUDA_ARCHITECTURES=native failed; again with 90"
    cmake "${args[@]}" -DCMAKE_CUDA_ARCHITECTURES=90
}

environment() {
    date -u
    uname -a
    command -v nvidia-smi >/dev/null && nvidia-smi
    nvcc --version 2>/dev/null || /usr/local/cuda/bin/nvcc --version
    cmake --version | head -1
    g++ --version | head -1
    command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer
    "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
    git rev-parse HEAD 2>/dev/null && git status --short | head -20
    return 0
}

# Runs every test case of both CUDA test programs in a process of its own, so that one
# case that breaks the CUDA context (an illegal address is sticky) or crashes does not hide
# the others' results. Run only after the whole-program ctest step failed.
isolate() {
    local program names name spec rc failures=0
    for program in "$build"/tests/cuda/ssm_test_cuda_ops "$build"/tests/cuda/ssm_test_cuda_model; do
        [[ -x $program ]] || { echo "$program: not built"; failures=$((failures + 1)); continue; }
        # Catch2 v2 lists with --list-test-names-only and exits with the number of tests it
        # listed (not 0); v3 lists names alone with --list-tests --verbosity quiet. Every
        # test name here starts with "cuda " (the runner's own first line with "CUDA").
        names=$("$program" --list-test-names-only 2>/dev/null | grep '^cuda ')
        [[ -n $names ]] || names=$("$program" --list-tests --verbosity quiet 2>/dev/null | grep '^cuda ')
        [[ -n $names ]] || { echo "$program: lists no test"; failures=$((failures + 1)); continue; }
        while IFS= read -r name; do
            [[ -n $name ]] || continue
            spec=$(printf '%s' "$name" | sed 's/[][,\\]/\\&/g')
            timeout --kill-after=5 60 "$program" "$spec" >/tmp/isolate.log 2>&1
            rc=$?
            if ((rc == 0)); then
                echo "PASS      $name"
            else
                echo "FAIL rc=$rc  $name"
                sed 's/^/    | /' /tmp/isolate.log | tail -40
                failures=$((failures + 1))
            fi
        done <<<"$names"
    done
    echo "$failures test case(s) failed on their own"
    ((failures == 0))
}

export build root python
export -f configure environment isolate

sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
[[ -x $sanitizer ]] || echo "compute-sanitizer not found (neither on PATH nor in /usr/local/cuda/bin)"
ops=$build/tests/cuda/ssm_test_cuda_ops
# The ops tests whose kernels share memory between threads (Catch test spec: any of these).
shared_memory_tests='cuda op: residual*,cuda op: selective*,cuda op: bf16 selective*,cuda op: the fused*,cuda op: argmax*'

# SSM_PREBUILT=DIR: the four programs built elsewhere for this GPU (same source path, so
# the tests find tests/data) are used when they start here; else the build runs as usual.
prebuilt_ok() {
    local dir=$1 f
    for f in ssm_test_cuda_ops ssm_test_cuda_model ssm_bench_cuda_scan ssm_bench_cuda_model; do
        [[ -x $dir/$f ]] || { echo "$dir/$f: missing"; return 1; }
    done
    # Started, it lists its tests (Catch2 v2 then exits with their number, not 0).
    local log
    log=$("$dir/ssm_test_cuda_ops" --list-test-names-only 2>&1)
    if ! grep -q '^cuda op:' <<<"$log"; then
        echo "$dir/ssm_test_cuda_ops does not start here:"
        printf '%s\n' "$log" | tail -5
        return 1
    fi
    mkdir -p "$build/tests/cuda" "$build/benchmarks/cuda"
    cp "$dir"/ssm_test_cuda_* "$build/tests/cuda/"
    cp "$dir"/ssm_bench_cuda_* "$build/benchmarks/cuda/"
    echo "using the programs in $dir"
}
# The two test programs directly (what ctest runs), for prebuilt programs without a build tree.
run_tests() {
    local rc=0
    "$build/tests/cuda/ssm_test_cuda_ops" || rc=1
    "$build/tests/cuda/ssm_test_cuda_model" || rc=1
    return $rc
}
export -f prebuilt_ok run_tests

run_step 00 environment 60 environment
if [[ -n ${SSM_PREBUILT:-} ]] && prebuilt_ok "$SSM_PREBUILT"; then
    run_step 03 tests 150 run_tests
    grep -q 'SKIPPED: no CUDA device' "$out/03-tests.log" && statuses[-1]="FAIL (skipped)"
else
    run_step 01 configure 90 configure
    run_step 02 build 240 cmake --build "$build" -j "$jobs" --target ssm_cuda_all -- -k
    run_step 03 ctest 150 ctest --test-dir "$build" -L cuda --output-on-failure --timeout 140
    fail_if_skipped "$out/03-ctest.log"
fi
benchmarks() {
    run_step 04 bench-scan 60 "$build/benchmarks/cuda/ssm_bench_cuda_scan"
    run_step 05 bench-model 120 "$build/benchmarks/cuda/ssm_bench_cuda_model"
    [[ " ${SSM_SKIP:-} " == *" bert "* ]] ||
        run_step 06 bert 120 "$python" benchmarks/cuda/bert_sdpa_baseline.py
}
sanitizers() {
    # API errors are left to the tests: one asks cudaMalloc for 2^50 bytes on purpose and
    # checks the error it gets, which memcheck would otherwise count.
    run_step 07 memcheck 120 env SSM_CUDA_TEST_QUICK=1 "$sanitizer" --tool memcheck --error-exitcode 99 \
        --report-api-errors no "$ops"
    fail_if_skipped "$out/07-memcheck.log"
    run_step 08 racecheck 120 env SSM_CUDA_TEST_QUICK=1 "$sanitizer" --tool racecheck --error-exitcode 99 \
        "$ops" "$shared_memory_tests"
    fail_if_skipped "$out/08-racecheck.log"
}
# When the tests pass, the benchmarks come before the sanitizers; when they fail, each case
# runs alone first and the memory checker next, since figures of a wrong result mean little.
if [[ ${statuses[-1]} == PASS ]]; then
    benchmarks
    sanitizers
else
    run_step 03b isolate 150 isolate
    sanitizers
    benchmarks
fi

{
    echo "CUDA device check, $(date -u), $(elapsed)s of a ${budget}s budget"
    for i in "${!steps[@]}"; do
        printf '%-16s %-24s %5ss  %s\n' "${steps[$i]}" "${statuses[$i]}" "${times[$i]}" \
            "$(echo "${steps[$i]}" | tr ' ' '-').log"
    done
    passed=$((${#steps[@]} - failed))
    echo "$passed passed, $failed failed"
} | tee "$out/summary.txt"
((failed == 0))
