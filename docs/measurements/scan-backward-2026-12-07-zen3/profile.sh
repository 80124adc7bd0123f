#!/usr/bin/env bash
# The profile shares in docs/benchmarks.md: 10 retriever steps on one thread under
# `perf record`, then the share of each function and of each object (the kernel's line is
# the page faults). usage: profile.sh SSM_TRAIN_BINARY OUT.data   (from the repository root)
BIN=$1; DATA=$2
[ -f /tmp/ssm-train-ab.jsonl ] || python3 "$(dirname "$0")/make_train_jsonl.py" examples/data/manpages-mini /tmp/ssm-train-ab.jsonl
rm -rf /tmp/ssm-train-prof-out
perf record -o "$DATA" "$BIN" retriever --model examples/models/byte-retriever --train /tmp/ssm-train-ab.jsonl \
    --out /tmp/ssm-train-prof-out --group-size 4 --batch-size 16 --lr 5e-4 --warmup 3 --schedule linear \
    --temperature 0.05 --query-max-length 64 --passage-max-length 256 --steps 10 --seed 0 --threads 1
perf report -i "$DATA" --no-children --percent-limit 1 --stdio | grep -E '^ +[0-9]'
perf report -i "$DATA" --no-children --sort dso --stdio | grep -E '^ +[0-9]'
rm -rf /tmp/ssm-train-prof-out
