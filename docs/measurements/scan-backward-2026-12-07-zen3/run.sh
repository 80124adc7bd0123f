#!/bin/bash
# A/B, 5 interleaved rounds: base 1d4917e (scan backward: two exps per element, chunk 256)
# vs main (31388bc), each built in its own worktree's build-bench; ssm-train from each
# commit's build/examples (ssm_train_step.sh, beside this file).
out=/work/ab3/json5; mkdir -p $out
FS='BM_PeakFma|BM_ScanTrain|BM_Scan<ssm::BasicParallelScan<false>>/2048'
FM='BM_PeakFma|BM_Mamba1_TrainStep'
FT='BM_TrainStep'
for r in 1 2 3 4 5; do
  for v in base main; do
    d=/work/$v/build-bench/benchmarks
    $d/bench_scan --benchmark_filter="$FS" --benchmark_min_time=1 --benchmark_format=json > $out/scan-$v-$r.json 2>/dev/null
    $d/bench_mamba2 --benchmark_filter="$FM" --benchmark_min_time=1 --benchmark_format=json > $out/mamba2-$v-$r.json 2>/dev/null
    $d/bench_train --benchmark_filter="$FT" --benchmark_min_time=1 --benchmark_format=json > $out/train-$v-$r.json 2>/dev/null
    bin=/work/ab-base/ssm-train; [ $v = main ] && bin=/work/main/build/examples/ssm-train
    echo "$v $r $(bash /work/main/docs/measurements/scan-backward-2026-12-07-zen3/ssm_train_step.sh $bin 2)" >> $out/ssm-train.txt
  done
  echo round $r done $(date)
done
