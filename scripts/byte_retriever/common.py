"""Readers for BEIR folders and TREC runs shared by the scripts in this folder."""

import json
from collections import defaultdict
from pathlib import Path


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise SystemExit(f"{path}:{number}: {e}") from None


def read_corpus(beir):
    """{doc id: {"title", "text"}} in file order."""
    return {str(d["_id"]): {"title": d.get("title") or "", "text": d["text"]}
            for d in read_jsonl(Path(beir) / "corpus.jsonl")}


def read_queries(beir):
    """{query id: text} in file order."""
    return {str(q["_id"]): q["text"] for q in read_jsonl(Path(beir) / "queries.jsonl")}


def read_qrels(beir, split):
    """{query id: {doc id: relevance}} from DIR/qrels/SPLIT.tsv (header line skipped)."""
    path = Path(beir) / "qrels" / f"{split}.tsv"
    qrels = defaultdict(dict)
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if not line.strip():
                continue
            if len(fields) != 3:
                raise SystemExit(f"{path}:{number}: expected query-id<TAB>corpus-id<TAB>score")
            try:
                score = int(fields[2])
            except ValueError:
                if number == 1:
                    continue  # the header
                raise SystemExit(f"{path}:{number}: score {fields[2]!r} is not an integer")
            qrels[fields[0]][fields[1]] = score
    return dict(qrels)


def read_run(path):
    """{query id: {doc id: score}} from a TREC run "qid Q0 docid rank score tag"."""
    run = defaultdict(dict)
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise SystemExit(f"{path}:{number}: expected \"qid Q0 docid rank score tag\"")
            qid, _, docid, _, score, _ = fields
            if docid in run[qid]:
                raise SystemExit(f"{path}:{number}: {docid} listed twice for {qid}")
            run[qid][docid] = float(score)
    return dict(run)


def ranked(scores):
    """Doc ids best first, as trec_eval orders them: score descending, ties by doc id
    descending."""
    return sorted(scores, key=lambda d: (scores[d], d), reverse=True)


def write_run(path, run, tag):
    """Writes {query id: {doc id: score}} as a TREC run, queries in id order."""
    with open(path, "w", encoding="utf-8") as f:
        for qid in sorted(run):
            for rank, docid in enumerate(ranked(run[qid]), 1):
                f.write(f"{qid} Q0 {docid} {rank} {run[qid][docid]!r} {tag}\n")
