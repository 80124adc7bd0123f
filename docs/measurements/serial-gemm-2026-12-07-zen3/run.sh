#!/bin/bash
# A/B, 5 interleaved rounds: base d931d55 (Eigen products in attention, top-k, SSD) vs main (serial_product).
out=/work/ab2/json5; mkdir -p $out
FS='BM_PeakFma|BM_AttentionLayer/(2048|8192)/2048|BM_AttentionTrainStep'
FR='BM_PeakFma|BM_ExactTopK'
FM='BM_PeakFma|BM_SsdForward|BM_SsdBackward_Chunked|BM_Mamba2_Prefill_Chunk256/512|BM_Mamba1_Prefill/512|BM_Mamba1_TrainStep|BM_Mamba2_TrainStep'
for r in 1 2 3 4 5; do
  for v in base main; do
    d=/work/$v/build-bench/benchmarks
    $d/bench_samba --benchmark_filter="$FS" --benchmark_min_time=1 --benchmark_format=json > $out/samba-$v-$r.json 2>/dev/null
    $d/bench_model --benchmark_filter="BM_Projection/(512|2048)/0/" --benchmark_min_time=1 --benchmark_format=json > $out/model-$v-$r.json 2>/dev/null
    $d/bench_retrieval --benchmark_filter="$FR" --benchmark_min_time=1 --benchmark_format=json > $out/retrieval-$v-$r.json 2>/dev/null
    $d/bench_mamba2 --benchmark_filter="$FM" --benchmark_min_time=1 --benchmark_format=json > $out/mamba2-$v-$r.json 2>/dev/null
  done
  echo round $r done $(date)
done
