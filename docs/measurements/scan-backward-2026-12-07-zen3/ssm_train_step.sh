#!/usr/bin/env bash
# 12 retriever steps at the bundled byte retriever's shape and recipe (16 queries of up to
# 64 bytes, 4 passages each of up to 256), from the bundled model, two threads; prints
# ssm-train's "trained steps" line with tokens/s.
# usage: ssm_train_step.sh SSM_TRAIN_BINARY THREADS   (run from the repository root;
#        the training lines come from make_train_jsonl.py, written to /tmp/ssm-train-ab.jsonl)
BIN=$1; TH=$2
[ -f /tmp/ssm-train-ab.jsonl ] || python3 "$(dirname "$0")/make_train_jsonl.py" examples/data/manpages-mini /tmp/ssm-train-ab.jsonl
rm -rf /tmp/ssm-train-ab-out-$$
$BIN retriever --model examples/models/byte-retriever --train /tmp/ssm-train-ab.jsonl --out /tmp/ssm-train-ab-out-$$ \
    --group-size 4 --batch-size 16 --lr 5e-4 --warmup 3 --schedule linear --temperature 0.05 \
    --query-max-length 64 --passage-max-length 256 --steps 12 --seed 0 --threads $TH 2>&1 | grep trained
rm -rf /tmp/ssm-train-ab-out-$$
