#!/usr/bin/env python3
"""nDCG@10, MRR@10 and Recall@100 of TREC runs on a BEIR split, as a markdown table.

Usage: evaluate.py --beir DIR --split test run1.trec [run2.trec ...]
                   [--fuse a.trec b.trec --fuse-out fused.trec]

The metrics come from pytrec_eval (PyPI: pytrec-eval-terrier), the trec_eval measures
ndcg_cut_10, recip_rank (on each run cut to its top 10) and recall_100. Means are taken
over every judged query of the split: a query a run does not answer counts as 0 (as
trec_eval -c does). --fuse writes the reciprocal-rank fusion (k = 60) of the runs given
to it, score(d) = sum over runs of 1 / (60 + rank of d), ranks as trec_eval orders a run;
the fused run is evaluated with the others. --only / --drop restrict the judged queries
to those whose id matches (or does not match) a regular expression.
"""

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ranked, read_qrels, read_run, write_run  # noqa: E402

try:
    import pytrec_eval
except ImportError:
    sys.exit("evaluate.py needs pytrec_eval: pip install pytrec-eval-terrier")

RRF_K = 60


def rrf(runs, k=RRF_K, depth=1000):
    fused = {}
    for run in runs:
        for qid, scores in run.items():
            acc = fused.setdefault(qid, {})
            for rank, docid in enumerate(ranked(scores), 1):
                acc[docid] = acc.get(docid, 0.0) + 1.0 / (k + rank)
    return {q: {d: s[d] for d in ranked(s)[:depth]} for q, s in fused.items()}


def evaluate(run, qrels):
    """Mean nDCG@10, MRR@10, R@100 over all judged queries, and how many the run answers."""
    run = {q: run.get(q, {}) for q in qrels}
    answered = {q: r for q, r in run.items() if r}
    top10 = {q: {d: r[d] for d in ranked(r)[:10]} for q, r in answered.items()}
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "recall_100"}).evaluate(answered)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    n = len(qrels)
    return {
        "nDCG@10": sum(m["ndcg_cut_10"] for m in full.values()) / n,
        "MRR@10": sum(m["recip_rank"] for m in rr.values()) / n,
        "R@100": sum(m["recall_100"] for m in full.values()) / n,
        "answered": len(answered),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--beir", required=True, type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("runs", nargs="*", type=Path, help="TREC runs to evaluate")
    ap.add_argument("--fuse", nargs="+", type=Path, metavar="RUN",
                    help="runs to fuse with reciprocal-rank fusion (k = 60)")
    ap.add_argument("--fuse-out", type=Path, help="where to write the fused run")
    ap.add_argument("--fuse-depth", type=int, default=1000, help="fused documents per query")
    ap.add_argument("--only", help="evaluate only the query ids matching this regex")
    ap.add_argument("--drop", help="leave out the query ids matching this regex")
    args = ap.parse_args()
    if args.fuse is not None and len(args.fuse) < 2:
        ap.error("--fuse needs at least two runs")
    if args.fuse_out and not args.fuse:
        ap.error("--fuse-out needs --fuse")
    if not args.runs and not args.fuse:
        ap.error("give at least one run, or --fuse")

    qrels = read_qrels(args.beir, args.split)
    if args.only:
        qrels = {q: j for q, j in qrels.items() if re.search(args.only, q)}
    if args.drop:
        qrels = {q: j for q, j in qrels.items() if not re.search(args.drop, q)}
    if not qrels:
        sys.exit("no judged queries left to evaluate")

    rows = [(str(p), read_run(p)) for p in args.runs]
    if args.fuse:
        fused = rrf([read_run(p) for p in args.fuse], depth=args.fuse_depth)
        if args.fuse_out:
            write_run(args.fuse_out, fused, "rrf")
        rows.append(("RRF(" + ", ".join(p.name for p in args.fuse) + ")", fused))

    print(f"{args.beir} {args.split}: {len(qrels)} judged queries\n")
    print("| run | answered | nDCG@10 | MRR@10 | R@100 |")
    print("|---|---:|---:|---:|---:|")
    for name, run in rows:
        m = evaluate(run, qrels)
        print(f"| {name} | {m['answered']} | {m['nDCG@10']:.4f} | {m['MRR@10']:.4f} | "
              f"{m['R@100']:.4f} |")


if __name__ == "__main__":
    main()
