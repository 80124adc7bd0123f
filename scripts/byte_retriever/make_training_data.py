#!/usr/bin/env python3
"""Contrastive training data in Tevatron's JSONL format from a BEIR folder and a BM25 run.

Usage: make_training_data.py --beir DIR --run bm25-train.trec --out train.jsonl
                             [--negatives 7] [--max-negatives 30] [--skip-top 0] [--seed 0]

One line per query judged in DIR/qrels/train.tsv (--split), in qrels order:

  {"query_id": ..., "query": ...,
   "positive_passages": [{"docid", "title", "text"}, ...],
   "negative_passages": [{"docid", "title", "text"}, ...]}

The negatives are the run's top documents for the query, best first, with the judged
relevant ones left out (and the first --skip-top of the others, to stay clear of
unjudged near-copies of the answer), at most --max-negatives of them. A query for which
the run offers fewer than --negatives is topped up to --negatives with passages drawn at
random (seeded) from the rest of the corpus, after the mined ones, so a trainer that
takes one positive and --negatives negatives per query always finds enough.
"""

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ranked, read_corpus, read_qrels, read_queries, read_run  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--beir", required=True, type=Path)
    ap.add_argument("--run", required=True, type=Path, help="BM25 run over the split's queries")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--split", default="train")
    ap.add_argument("--negatives", type=int, default=7,
                    help="fewest negatives a line holds (random ones fill up)")
    ap.add_argument("--max-negatives", type=int, default=30, help="most mined negatives a line holds")
    ap.add_argument("--skip-top", type=int, default=0,
                    help="leave out this many of the run's best non-relevant documents")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.negatives > args.max_negatives:
        ap.error("--negatives cannot exceed --max-negatives")

    corpus = read_corpus(args.beir)
    queries = read_queries(args.beir)
    qrels = read_qrels(args.beir, args.split)
    run = read_run(args.run)
    rng = random.Random(args.seed)
    doc_ids = list(corpus)

    def passage(docid):
        return {"docid": docid, "title": corpus[docid]["title"], "text": corpus[docid]["text"]}

    lines = mined_total = topped_up = missing_run = 0
    with open(args.out, "w", encoding="utf-8") as f:
        for qid, judged in qrels.items():
            positives = [d for d, rel in judged.items() if rel > 0]
            if not positives:
                continue
            unknown = [d for d in positives if d not in corpus]
            if unknown:
                sys.exit(f"{qid}: judged document {unknown[0]} is not in corpus.jsonl")
            if qid not in run:
                missing_run += 1
            mined = [d for d in ranked(run.get(qid, {})) if d not in judged and d in corpus]
            negatives = mined[args.skip_top: args.skip_top + args.max_negatives]
            mined_total += len(negatives)
            if len(negatives) < args.negatives:
                topped_up += 1
                taken = set(negatives) | set(judged)
                while len(negatives) < args.negatives and len(taken) < len(doc_ids):
                    d = rng.choice(doc_ids)
                    if d not in taken:
                        taken.add(d)
                        negatives.append(d)
            f.write(json.dumps({
                "query_id": qid,
                "query": queries[qid],
                "positive_passages": [passage(d) for d in positives],
                "negative_passages": [passage(d) for d in negatives],
            }, ensure_ascii=False) + "\n")
            lines += 1

    print(f"wrote {lines} queries to {args.out}: {mined_total / max(lines, 1):.1f} mined "
          f"negatives a query on average; {topped_up} topped up with random passages"
          + (f"; {missing_run} absent from the run" if missing_run else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
