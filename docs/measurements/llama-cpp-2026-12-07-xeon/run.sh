#!/usr/bin/env bash
# How the figures in this folder were made (Intel Xeon, family 6 model 207, 2 vCPUs), from
# the repository root, with nothing else running. LLAMA_BUILD: llama.cpp (ggml 0.25.3) built
# from its own sources outside the repository with
#   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DGGML_OPENMP=ON
#   cmake --build build -j2 --target llama-bench llama-quantize
# GGUF_DIR: the GGUF files made as benchmarks/llama_cpp_compare.sh's header says.
# BIN_96eaf94, BIN_65f5467, BIN_c591431: bench_model built at those commits (g++ -O3
# -march=native, as build-bench builds it): before the AVX-512 decoding kernels, with them,
# and with the VNNI kernel of dot_rows_q8 too. build-bench was at c591431 for the comparison.
set -euo pipefail
here=docs/measurements/llama-cpp-2026-12-07-xeon
OUT=$here bash benchmarks/llama_cpp_compare.sh build-bench/benchmarks/bench_model "$LLAMA_BUILD/bin" "$GGUF_DIR" 3 2
mv "$here/compare.png" docs/images/llama-cpp-compare-xeon.png

# ab BEFORE AFTER PREFIX FILTER MIN_TIME: 3 interleaved rounds of both binaries, into
# decode-before-after/PREFIX{before,after}-rN.json.
ab() {
  local before=$1 after=$2 prefix=$3 filter=$4 min_time=$5 r v bin
  for r in 1 2 3; do
    for v in before after; do
      bin=$before; [[ $v == after ]] && bin=$after
      "$bin" --benchmark_filter="$filter" --benchmark_min_time="$min_time" --benchmark_format=json \
        --benchmark_out="$here/decode-before-after/$prefix$v-r$r.json" --benchmark_out_format=json >/dev/null
    done
  done
}
ab "$BIN_96eaf94" "$BIN_65f5467" "" 'BM_MemoryRead|BM_Decode/1/|BM_DecodeProjections' 1
ab "$BIN_96eaf94" "$BIN_65f5467" batch- 'BM_Decode/(8|16|64)/[012]' 0.5
ab "$BIN_65f5467" "$BIN_c591431" vnni- 'BM_MemoryRead|BM_Decode/(1|8|16)/4|BM_DecodeProjections/4' 1
