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
# Numerics of training with bf16 products (docs/training.md): a byte model from --init, float32
# against bf16 products with the unit forced; 90% of manpages-mini's passages to train on, the
# rest held out. (The tokens/s in these logs are not comparable: other work shared the machine.)
python3 -c "
import json
docs=[json.loads(l)['text'] for l in open('examples/data/manpages-mini/corpus.jsonl')]
cut=int(len(docs)*0.9)
open('/tmp/man-train.txt','w').write('\n\n'.join(docs[:cut])); open('/tmp/man-held.txt','w').write('\n\n'.join(docs[cut:]))"
A="lm --init examples/models/byte-retriever/config.json --train /tmp/man-train.txt --eval /tmp/man-held.txt --seq-len 256 --batch-size 8 --steps 300 --lr 3e-3 --warmup 20 --schedule cosine --eval-every 100 --threads 2 --seed 1"
build/examples/ssm-train $A --out lm-f32 --log lm-byte-float32.jsonl
SSM_CPU_ISA=avx512bf16 build/examples/ssm-train $A --bf16-products --out lm-bf16 --log lm-byte-bf16-products.jsonl
