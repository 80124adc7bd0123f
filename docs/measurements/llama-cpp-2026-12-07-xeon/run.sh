#!/usr/bin/env bash
# How the figures in this folder were made (Intel Xeon, family 6 model 207, 2 vCPUs), from
# the repository root, with nothing else running. LLAMA_BUILD: llama.cpp (ggml 0.25.3) built
# from its own sources outside the repository with
#   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DGGML_OPENMP=ON
#   cmake --build build -j2 --target llama-bench llama-quantize
# GGUF_DIR: the GGUF files made as benchmarks/llama_cpp_compare.sh's header says.
set -euo pipefail
here=docs/measurements/llama-cpp-2026-12-07-xeon
OUT=$here bash benchmarks/llama_cpp_compare.sh build-bench/benchmarks/bench_model "$LLAMA_BUILD/bin" "$GGUF_DIR" 3 2
mv "$here/compare.png" docs/images/llama-cpp-compare-xeon.png
# decode-before-after: BEFORE and AFTER are bench_model built at the commits before and after
# the AVX-512 decoding kernels (g++ -O3 -march=native, as build-bench builds it).
for r in 1 2 3; do
  for v in before after; do
    bin=BEFORE; [[ $v == after ]] && bin=AFTER
    "${!bin}" --benchmark_filter='BM_MemoryRead|BM_Decode/1/|BM_DecodeProjections' --benchmark_min_time=1 \
      --benchmark_format=json --benchmark_out="$here/decode-before-after/$v-r$r.json" --benchmark_out_format=json >/dev/null
  done
done
for r in 1 2 3; do
  for v in before after; do
    bin=BEFORE; [[ $v == after ]] && bin=AFTER
    "${!bin}" --benchmark_filter='BM_Decode/(8|16|64)/[012]' --benchmark_min_time=0.5 \
      --benchmark_format=json --benchmark_out="$here/decode-before-after/batch-$v-r$r.json" --benchmark_out_format=json >/dev/null
  done
done
# vnni-*: BEFORE = the commit before the VNNI kernel of dot_rows_q8, AFTER = the one with it.
for r in 1 2 3; do
  for v in before after; do
    bin=BEFORE; [[ $v == after ]] && bin=AFTER
    "${!bin}" --benchmark_filter='BM_MemoryRead|BM_Decode/(1|8|16)/4|BM_DecodeProjections/4' --benchmark_min_time=1 \
      --benchmark_format=json --benchmark_out="$here/decode-before-after/vnni-$v-r$r.json" --benchmark_out_format=json >/dev/null
  done
done
