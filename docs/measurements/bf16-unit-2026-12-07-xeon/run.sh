#!/usr/bin/env bash
# What produced the figures in this folder (docs/benchmarks.md, "Intel Xeon ... 2026-12-07").
# Machine: 2-vCPU Intel Xeon VM, family 6 model 207, AVX-512 (F, BW, VL, VNNI, BF16, FP16),
# AMX not exposed by the hypervisor, 24 GiB. Nothing else ran on it during each command.
set -euo pipefail
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DSSM_BUILD_BENCHMARKS=ON -DSSM_BUILD_TESTS=OFF -DSSM_BUILD_EXAMPLES=OFF
cmake --build build-bench -j2 --target bench_model bench_train
# The ceilings, one projection on each path, prefill on each bf16 path (medians of 3).
build-bench/benchmarks/bench_model --benchmark_filter='Peak|Projection|Prefill/(512|2048)/(0|1|3)/' \
    --benchmark_repetitions=3 --benchmark_report_aggregates_only=true --benchmark_out=bench_model.json --benchmark_out_format=json
# A training step in float32 and with bf16 products on the unit (forced on).
build-bench/benchmarks/bench_train --benchmark_filter='Peak|TrainStep' --benchmark_repetitions=3 \
    --benchmark_report_aggregates_only=true --benchmark_out=bench_train.json --benchmark_out_format=json
# gemm_f32 copying a transposed A (dW's form): the step under the AVX2 dispatch, the binary of
# the commit before (base) and after (new), three interleaved rounds.
for i in 1 2 3; do for v in base new; do
  SSM_CPU_ISA=avx2 "$v/bench_train" --benchmark_filter='TrainStep/(512|2048)/0' --benchmark_min_time=1 \
      --benchmark_out="train-avx2-ab-$v-$i.json" --benchmark_out_format=json
done; done
# The three products alone (gemm_forms.cpp, built against each commit's headers), three rounds.
g++ -std=c++20 -O3 -march=native -fopenmp -DNDEBUG -Iinclude -isystem /usr/include/eigen3 \
    docs/measurements/bf16-unit-2026-12-07-xeon/gemm_forms.cpp -o gemm_forms && ./gemm_forms
