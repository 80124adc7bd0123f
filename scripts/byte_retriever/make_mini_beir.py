#!/usr/bin/env python3
"""A small BEIR folder cut from a larger one: a few test queries, their answers, BM25's
hard negatives for them and random other test-split passages.

Usage: make_mini_beir.py --beir DIR --out examples/data/manpages-mini
                         [--queries 50] [--passages 1000] [--hard 10] [--seed 0]
                         [--run DIR/bm25-test.trec]

--queries test queries are drawn (seeded) from DIR/qrels/test.tsv. The corpus holds
their relevant passages, the --hard best non-relevant passages of the BM25 run for each
of them, and passages of other test queries drawn at random until it holds --passages.
Ids, titles and texts are kept as they are. Written: corpus.jsonl (in the source
corpus's order), queries.jsonl, qrels/test.tsv and, where dpkg can say, sources.tsv
(the corpus id, the manual page file and the Debian package it came from).
"""

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ranked, read_corpus, read_qrels, read_queries, read_run  # noqa: E402


def packages_of(paths):
    """{path: Debian package} for the files dpkg knows."""
    out = {}
    try:
        proc = subprocess.run(["dpkg", "-S", *paths], capture_output=True, text=True)
    except OSError:
        return out
    for line in proc.stdout.splitlines():
        pkg, sep, path = line.partition(": ")
        if sep:
            out[path.strip()] = pkg.strip()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--beir", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--passages", type=int, default=1000)
    ap.add_argument("--hard", type=int, default=10, help="BM25 negatives per query")
    ap.add_argument("--run", type=Path, help="BM25 test run (default DIR/bm25-test.trec)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    run_path = args.run or args.beir / "bm25-test.trec"
    corpus = read_corpus(args.beir)
    queries = read_queries(args.beir)
    qrels = read_qrels(args.beir, "test")
    run = read_run(run_path)
    rng = random.Random(args.seed)

    chosen = sorted(rng.sample(sorted(qrels), min(args.queries, len(qrels))))
    keep = set()
    for qid in chosen:
        keep.update(d for d, rel in qrels[qid].items() if rel > 0)
    for qid in chosen:
        hard = [d for d in ranked(run.get(qid, {})) if d not in qrels[qid]][: args.hard]
        keep.update(hard)
    others = sorted({d for qid in qrels if qid not in chosen for d in qrels[qid]} - keep)
    rng.shuffle(others)
    keep.update(others[: max(0, args.passages - len(keep))])

    out = args.out
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
        for docid, d in corpus.items():
            if docid in keep:
                f.write(json.dumps({"_id": docid, "title": d["title"], "text": d["text"]},
                                   ensure_ascii=False) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid in chosen:
            f.write(json.dumps({"_id": qid, "text": queries[qid]}, ensure_ascii=False) + "\n")
    with open(out / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid in chosen:
            for docid, rel in qrels[qid].items():
                f.write(f"{qid}\t{docid}\t{rel}\n")

    pages = args.beir / "pages.tsv"
    if pages.exists():
        with open(pages, encoding="utf-8") as f:
            path_of = {r[0]: r[2] for r in (line.rstrip("\n").split("\t") for line in f) if len(r) == 3}
        paths = [path_of[d] for d in sorted(keep) if d in path_of]
        pkg = packages_of(paths)
        if pkg:
            with open(out / "sources.tsv", "w", encoding="utf-8") as f:
                f.write("corpus-id\tpath\tpackage\n")
                for d in sorted(keep):
                    p = path_of.get(d, "")
                    f.write(f"{d}\t{p}\t{pkg.get(p, '')}\n")

    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out}: {len(chosen)} queries, {len(keep)} passages, {size / 1024:.0f} KiB",
          file=sys.stderr)


if __name__ == "__main__":
    main()
