#!/usr/bin/env python3
"""BM25 retrieval over a BEIR folder with Xapian; writes a TREC run.

Every corpus passage (train and test) is indexed as its title followed by its text,
English-stemmed (Snowball "english", every term stemmed) with Lucene's 33 English stop
words removed; "_" in titles (gcloud_compute_instances_create) separates words. A query
is the bag of its stemmed terms, OR-ed together, ranked with xapian.BM25Weight (Xapian's
defaults unless --k1 / --b say otherwise). The queries are those judged in
DIR/qrels/SPLIT.tsv.

Usage: bm25.py --beir DIR --split test|train --out run.trec [--k 100]

Xapian's Python bindings come from Debian's python3-xapian (apt-get install -y
python3-xapian); when this interpreter cannot import them, the system's
dist-packages folder is tried as well.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import read_corpus, read_qrels, read_queries, write_run  # noqa: E402

try:
    import xapian
except ImportError:
    for folder in ("/usr/lib/python3/dist-packages", "/usr/local/lib/python3/dist-packages"):
        if (Path(folder) / "xapian").is_dir():
            sys.path.append(folder)
            break
    try:
        import xapian
    except ImportError:
        sys.exit("bm25.py needs Xapian's Python bindings: apt-get install -y python3-xapian "
                 "(and run it with /usr/bin/python3 if this interpreter cannot load them)")

# Lucene's EnglishAnalyzer stop words (the set Anserini's BM25 baselines drop).
STOP_WORDS = (
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with"
).split()


def term_generator(stemmer, stopper):
    tg = xapian.TermGenerator()
    tg.set_stemmer(stemmer)
    tg.set_stemming_strategy(xapian.TermGenerator.STEM_ALL_Z)
    tg.set_stopper(stopper)
    tg.set_stopper_strategy(xapian.TermGenerator.STOP_ALL)
    return tg


def query_terms(text, tg):
    """{term: within-query frequency}, tokenised and stemmed exactly as the index is."""
    doc = xapian.Document()
    tg.set_document(doc)
    tg.index_text(text)
    return {t.term.decode(): t.wdf for t in doc.termlist()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--beir", required=True, type=Path)
    ap.add_argument("--split", required=True, help="qrels/SPLIT.tsv names the queries (test, train)")
    ap.add_argument("--out", required=True, type=Path, help="TREC run to write")
    ap.add_argument("--k", type=int, default=100, help="documents per query")
    ap.add_argument("--k1", type=float, default=1.0, help="BM25 k1 (Xapian's default 1)")
    ap.add_argument("--b", type=float, default=0.5, help="BM25 b (Xapian's default 0.5)")
    ap.add_argument("--index", type=Path, help="keep the Xapian index in this folder "
                    "(default: a temporary one)")
    ap.add_argument("--tag", default="bm25")
    args = ap.parse_args()

    corpus = read_corpus(args.beir)
    queries = read_queries(args.beir)
    qrels = read_qrels(args.beir, args.split)
    missing = [q for q in qrels if q not in queries]
    if missing:
        sys.exit(f"{len(missing)} judged queries are not in queries.jsonl, e.g. {missing[0]}")

    stemmer = xapian.Stem("english")
    stopper = xapian.SimpleStopper()
    for w in STOP_WORDS:
        stopper.add(w)

    with tempfile.TemporaryDirectory() as tmp:
        index_dir = str(args.index or Path(tmp) / "index")
        t0 = time.perf_counter()
        db = xapian.WritableDatabase(index_dir, xapian.DB_CREATE_OR_OVERWRITE)
        tg = term_generator(stemmer, stopper)
        db.begin_transaction(False)
        for docid, d in corpus.items():
            doc = xapian.Document()
            tg.set_document(doc)
            tg.index_text(d["title"].replace("_", " "))
            tg.increase_termpos()
            tg.index_text(d["text"])
            doc.set_data(docid)
            doc.add_boolean_term("Q" + docid)
            db.replace_document("Q" + docid, doc)
        db.commit_transaction()
        db.commit()
        t_index = time.perf_counter() - t0

        t0 = time.perf_counter()
        enquire = xapian.Enquire(db)
        enquire.set_weighting_scheme(xapian.BM25Weight(args.k1, 0, 1, args.b, 0.5))
        qtg = term_generator(stemmer, stopper)
        run = {}
        empty = 0
        for qid in qrels:
            terms = query_terms(queries[qid], qtg)
            if not terms:
                empty += 1
                run[qid] = {}
                continue
            enquire.set_query(xapian.Query(xapian.Query.OP_OR,
                                           [xapian.Query(t, wqf) for t, wqf in sorted(terms.items())]))
            run[qid] = {m.document.get_data().decode(): m.weight
                        for m in enquire.get_mset(0, args.k)}
        t_search = time.perf_counter() - t0
        db.close()

    write_run(args.out, {q: r for q, r in run.items() if r}, args.tag)
    print(f"indexed {len(corpus)} passages in {t_index:.1f} s; searched {len(run)} "
          f"{args.split} queries (top {args.k}) in {t_search:.1f} s; wrote {args.out}"
          + (f"; {empty} queries had no indexable term" if empty else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
