#!/usr/bin/env bash
# Trains the bundled byte-level retriever (examples/models/byte-retriever) from the manual
# pages corpus, and evaluates every stage against BM25 on the held-out queries.
#
#   bash scripts/byte_retriever/train.sh            # DATA and OUT below may be overridden
#
# Needs: the corpus and BM25 runs made by build_corpus.py, bm25.py and
# make_training_data.py (see README.md beside this script), and a Release build of
# ssm-train and ssm-retrieve in build/.
set -euo pipefail
cd "$(dirname "$0")/../.."

DATA=${DATA:-/work/data/manpages}
OUT=${OUT:-/work/data/byte-retriever}
BIN=${BIN:-build/examples}
THREADS=${THREADS:-1}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-1800}
FINETUNE_STEPS=${FINETUNE_STEPS:-600}      # first phase, decaying to zero
FINETUNE_TOTAL=${FINETUNE_TOTAL:-1800}     # then resumed to this step
FINETUNE_MORE=${FINETUNE_MORE:-2800}       # then a third phase: 8 passages a query
FINETUNE_ICT=${FINETUNE_ICT:-2400}         # then a fourth: inverse-cloze queries added
SEED=${SEED:-0}
mkdir -p "$OUT"

# The held-out text for bits per byte: the first 200 kB of the test queries' passages.
python3 - "$DATA" "$OUT/heldout.txt" <<'EOF'
import json, sys
data, out = sys.argv[1], sys.argv[2]
test = {l.split('\t')[1] for l in open(f'{data}/qrels/test.tsv').read().splitlines()[1:]}
text = []
for line in open(f'{data}/corpus.jsonl'):
    d = json.loads(line)
    if d['_id'] in test:
        text.append(d['text'])
open(out, 'w').write('\n'.join(text)[:200_000])
EOF

# 1. The untrained model: mamba_ssm's initialisation, seeded.
if [ ! -f "$OUT/init/trainer_state.json" ]; then
  rm -rf "$OUT/init"
  "$BIN/ssm-train" lm --init scripts/byte_retriever/config.json --train "$OUT/heldout.txt" --out "$OUT/init" \
    --steps 1 --lr 0 --seq-len 64 --batch-size 1 --seed "$SEED" --threads "$THREADS" >/dev/null
fi

# 2. Byte-level language-model pretraining on the training pages' text (MambaByte recipe).
if [ ! -f "$OUT/pretrained/trainer_state.json" ]; then
  "$BIN/ssm-train" lm --model "$OUT/init" --train "$DATA/pretrain.txt" --out "$OUT/pretrained" \
    --seq-len 512 --batch-size 8 --lr 2e-3 --warmup 100 --schedule cosine --weight-decay 0.1 \
    --steps "$PRETRAIN_STEPS" --seed "$SEED" --threads "$THREADS" --save-every 300 \
    --eval "$OUT/heldout.txt" --eval-every 300 --log "$OUT/pretrain.jsonl"
fi

# 3. Retriever fine-tuning: InfoNCE, 1 positive + 3 BM25 negatives per query, in-batch
#    negatives (64 passages a step).
if [ ! -f "$OUT/retriever/trainer_state.json" ]; then
  "$BIN/ssm-train" retriever --model "$OUT/pretrained" --train "$DATA/train.jsonl" --out "$OUT/retriever" \
    --group-size 4 --batch-size 16 --lr 5e-4 --warmup 30 --schedule linear --temperature 0.05 \
    --query-max-length 64 --passage-max-length 256 --steps "$FINETUNE_STEPS" --seed "$SEED" \
    --threads "$THREADS" --save-every 200 --log "$OUT/finetune.jsonl"
fi
# ... then resumed from that folder with the schedule recomputed for FINETUNE_TOTAL steps
if [ ! -f "$OUT/retriever-long/trainer_state.json" ]; then
  "$BIN/ssm-train" retriever --resume "$OUT/retriever" --train "$DATA/train.jsonl" --out "$OUT/retriever-long" \
    --group-size 4 --batch-size 16 --lr 5e-4 --warmup 30 --schedule linear --temperature 0.05 \
    --query-max-length 64 --passage-max-length 256 --steps "$FINETUNE_TOTAL" --seed "$SEED" \
    --threads "$THREADS" --save-every 300 --log "$OUT/finetune-long.jsonl"
fi

# The held-out queries (their passages among all the corpus) as a BEIR folder.
mkdir -p "$OUT/beir-test/qrels"
ln -sf "$(realpath "$DATA/corpus.jsonl")" "$OUT/beir-test/corpus.jsonl"
ln -sf "$(realpath "$DATA/queries-test.jsonl")" "$OUT/beir-test/queries.jsonl"
ln -sf "$(realpath "$DATA/qrels/test.tsv")" "$OUT/beir-test/qrels/test.tsv"

# ... then a third phase from that model, with a fresh optimizer and another data order:
#    1 positive + 7 BM25 negatives per query (128 passages a step), warmup 50, linear decay
#    to zero. --eval only reports the held-out figures along the way (the last step is
#    what ships, whatever they say).
if [ ! -f "$OUT/retriever-more/trainer_state.json" ]; then
  "$BIN/ssm-train" retriever --model "$OUT/retriever-long" --train "$DATA/train.jsonl" --out "$OUT/retriever-more" \
    --group-size 8 --batch-size 16 --lr 5e-4 --warmup 50 --schedule linear --temperature 0.05 \
    --query-max-length 64 --passage-max-length 256 --steps "$FINETUNE_MORE" --seed "$((SEED + 1))" \
    --threads "$THREADS" --save-every 400 --eval "$OUT/beir-test" --eval-every 400 --log "$OUT/finetune-more.jsonl"
fi

# ... then a fourth phase from that model with more pairs from the same training pages: up
#    to two sentences of each passage become queries for the rest of it (inverse cloze,
#    make_ict_pairs.py), beside the NAME-line queries; otherwise as the third phase, with
#    another data order. This folder is the bundled model.
if [ ! -f "$DATA/train-ict.jsonl" ]; then
  python3 scripts/byte_retriever/make_ict_pairs.py --train "$DATA/train.jsonl" --out "$DATA/train-ict.jsonl"
fi
if [ ! -f "$OUT/retriever-ict/trainer_state.json" ]; then
  "$BIN/ssm-train" retriever --model "$OUT/retriever-more" --train "$DATA/train-ict.jsonl" --out "$OUT/retriever-ict" \
    --group-size 8 --batch-size 16 --lr 5e-4 --warmup 50 --schedule linear --temperature 0.05 \
    --query-max-length 64 --passage-max-length 256 --steps "$FINETUNE_ICT" --seed "$((SEED + 2))" \
    --threads "$THREADS" --save-every 400 --eval "$OUT/beir-test" --eval-every 400 --log "$OUT/finetune-ict.jsonl"
fi

# 4. Every stage on the held-out queries, beside BM25.
for stage in init pretrained retriever retriever-long retriever-more retriever-ict; do
  "$BIN/ssm-retrieve" --model "$OUT/$stage" --beir "$OUT/beir-test" --max-length 256 --top-k 100 \
    --threads "$THREADS" --run "$OUT/$stage-test.trec" | tail -1
done
python3 scripts/byte_retriever/evaluate.py --beir "$DATA" --split test \
  "$DATA/bm25-test.trec" "$OUT/init-test.trec" "$OUT/pretrained-test.trec" "$OUT/retriever-test.trec" \
  "$OUT/retriever-long-test.trec" "$OUT/retriever-more-test.trec" "$OUT/retriever-ict-test.trec" \
  --fuse "$DATA/bm25-test.trec" "$OUT/retriever-ict-test.trec" --fuse-out "$OUT/fused-test.trec"
