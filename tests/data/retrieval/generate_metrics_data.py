#!/usr/bin/env python3
"""(Re)create the retrieval test data in tests/data/retrieval/: a run, qrels and the metric
values pytrec_eval computes for them, plus small .npy files written by numpy.

The C++ tests (tests/retrieval/test_metrics.cpp, test_npy.cpp) compare `ssm` against these
files, so the reference values come from trec_eval itself, not from a second
implementation of ours.

Setup (pytrec_eval's own sdist downloads trec_eval from GitHub while it builds; the
pytrec-eval-terrier wheel bundles it and has the same Python API):

    python3 -m venv /tmp/trecenv
    /tmp/trecenv/bin/pip install pytrec-eval-terrier numpy     # or: pytrec_eval numpy
    /tmp/trecenv/bin/python tests/data/retrieval/generate_metrics_data.py

The shipped files were made with pytrec-eval-terrier 0.5.11 and numpy 2.4.6. Output is
deterministic: one seeded generator (numpy.random.default_rng(SEED)) draws everything,
in a fixed order, and nothing depends on set or hash ordering.

What it writes
--------------
metrics/run.trec       TREC run, "qid Q0 docid rank score tag"; ranks follow trec_eval's
                       own order (score as float32 descending, ties by doc id descending)
metrics/qrels.tsv      BEIR qrels (header "query-id<TAB>corpus-id<TAB>score")
metrics/qrels.trec     the same judgments as TREC qrels ("qid 0 docid rel")
metrics/expected.json  {"cutoffs": {"ndcg", "mrr", "recall"}, "queries": N,
                        "per_query": {qid: {"ndcg@K", "mrr@K", "recall@K": value}},
                        "mean": {measure: value}, "cases": [...], "generated_by": {...}}
npy/*.npy              arrays written by numpy (see NPY below)

The run: 50 queries x up to 150 documents (ids mix "d12"-style and digit strings of
different lengths, so byte order differs from numeric order) with graded qrels (0, 1, 2,
some -1), and on purpose: queries whose judgments are all 0 (evaluated, score 0), queries
whose judged documents were not retrieved, queries scored from three values only (many
ties, also across the cutoffs), queries with pairs of scores that differ as float64 but
are equal as float32 (trec_eval keeps scores as float, so they tie), a query with a
relevance gap (only 2s), a 3-document query; plus 3 queries only in the qrels and 3
only in the run (pytrec_eval skips both).

Measures: ndcg@K is pytrec_eval's "ndcg_cut_K", recall@K is "recall_K", and mrr@K is
"recip_rank" evaluated on the run cut to its top K in trec_eval's order (pytrec_eval has
no cut reciprocal rank). That the cut is made in trec_eval's order is checked here:
ndcg_cut_K and recall_K of the cut run must equal those of the full run for every query.
Means are plain averages over the evaluated queries (math.fsum / count).

"cases" are small hand-made situations (ties, float32 ties, +inf scores, negative
relevance, empty runs, missing queries, ...), each with the per-query values pytrec_eval
gives at cutoffs CASE_K.
"""

import importlib.metadata
import json
import math
from pathlib import Path

import numpy as np
import pytrec_eval

SEED = 20240611
HERE = Path(__file__).resolve().parent
NDCG_K = [1, 3, 5, 10, 100]
MRR_K = [1, 10, 1000]
RECALL_K = [1, 10, 100, 1000]
CASE_K = [1, 2, 3]
TAG = "ssm-test"


def trec_order(entries):
    """(doc, score) pairs in trec_eval's order: float32 score descending, doc id descending."""
    with np.errstate(over="ignore"):  # scores beyond float32 range become +-inf, as in C
        return sorted(entries, key=lambda e: (np.float32(e[1]), e[0]), reverse=True)


def measures_for(ndcg_k, recall_k):
    return {
        "ndcg_cut." + ",".join(map(str, ndcg_k)),
        "recall." + ",".join(map(str, recall_k)),
        "recip_rank",
    }


def pytrec_values(qrels, run, ndcg_k, mrr_k, recall_k):
    """Per-query values under our measure names. `run`: qid -> list of (doc, score)."""
    as_dict = {q: {d: float(s) for d, s in entries} for q, entries in run.items()}
    full = pytrec_eval.RelevanceEvaluator(qrels, measures_for(ndcg_k, recall_k)).evaluate(as_dict)
    out = {q: {} for q in full}
    for q, v in full.items():
        for k in ndcg_k:
            out[q][f"ndcg@{k}"] = v[f"ndcg_cut_{k}"]
        for k in recall_k:
            out[q][f"recall@{k}"] = v[f"recall_{k}"]
    for k in mrr_k:
        cut = {q: dict(trec_order(entries)[:k]) for q, entries in run.items()}
        check = measures_for([k], [k])
        on_cut = pytrec_eval.RelevanceEvaluator(qrels, check).evaluate(cut)
        on_full = pytrec_eval.RelevanceEvaluator(qrels, check).evaluate(as_dict)
        assert on_cut.keys() == on_full.keys() == full.keys()
        for q in on_cut:
            # The cut kept exactly trec_eval's top k: the cut measures did not change.
            assert on_cut[q][f"ndcg_cut_{k}"] == on_full[q][f"ndcg_cut_{k}"], (q, k)
            assert on_cut[q][f"recall_{k}"] == on_full[q][f"recall_{k}"], (q, k)
            out[q][f"mrr@{k}"] = on_cut[q]["recip_rank"]
    return out


def make_metrics_data(rng):
    doc_ids = [str(7 * i) if i % 3 == 0 else f"d{i}" for i in range(150)]
    numeric = [str(x) for x in rng.choice(np.arange(1, 5000), size=40, replace=False)]
    qids = numeric + [f"q{i}" for i in range(10)]
    qrels, run = {}, {}
    for qi, q in enumerate(qids):
        judged_n = int(rng.integers(3, 30))
        judged = [str(d) for d in rng.choice(doc_ids, size=judged_n, replace=False)]
        if qi < 5:  # only non-relevant judgments
            rels = [0] * judged_n
            if qi == 0:
                rels[0] = -1
        elif qi == 13:  # a gap in the relevance levels: 2s and 0s only
            rels = [int(r) for r in rng.choice([0, 2], size=judged_n)]
        else:
            rels = [int(r) for r in rng.choice([0, 1, 2], size=judged_n, p=[0.5, 0.3, 0.2])]
            if qi % 7 == 3:
                rels[int(rng.integers(judged_n))] = -1
        qrels[q] = dict(zip(judged, rels))

        pool = [d for d in doc_ids if d not in qrels[q]] if qi in (5, 6) else doc_ids
        n_ret = 3 if qi == 12 else int(rng.integers(20, len(pool) + 1))
        retrieved = [str(d) for d in rng.choice(pool, size=n_ret, replace=False)]
        if 7 <= qi <= 9:  # three score values only: ties everywhere
            scores = [float(s) for s in rng.choice([0.0, 0.25, 0.5], size=n_ret)]
        else:
            scores = [float(s) for s in rng.normal(size=n_ret)]
            boost = rng.random(n_ret) < 0.7
            scores = [s + (1.5 * max(qrels[q].get(d, 0), 0) if b else 0.0)
                      for s, d, b in zip(scores, retrieved, boost)]
            if qi % 3 == 1:
                scores = [round(s, 1) for s in scores]  # coarse: some ties
        if qi in (10, 11):  # float64-distinct, float32-equal pairs
            for i in range(0, min(n_ret, 40) - 1, 2):
                base = float(np.float32(scores[i]))
                if base == 0.0:
                    continue
                scores[i] = base
                scores[i + 1] = base + abs(base) * 1e-12
                assert np.float32(scores[i + 1]) == np.float32(base) and scores[i + 1] != base
        run[q] = list(zip(retrieved, scores))

    for i in range(3):
        judged = [str(d) for d in rng.choice(doc_ids, size=5, replace=False)]
        qrels[f"only-qrels-{i}"] = {d: 1 for d in judged}
        retrieved = [str(d) for d in rng.choice(doc_ids, size=10, replace=False)]
        run[f"only-run-{i}"] = [(d, float(s)) for d, s in zip(retrieved, rng.normal(size=10))]
    return qrels, run


def write_metrics_data(qrels, run):
    out = HERE / "metrics"
    out.mkdir(exist_ok=True)
    with open(out / "run.trec", "w") as f:
        for q in sorted(run):
            for rank, (d, s) in enumerate(trec_order(run[q]), start=1):
                f.write(f"{q} Q0 {d} {rank} {s!r} {TAG}\n")
    with open(out / "qrels.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in sorted(qrels):
            for d in sorted(qrels[q]):
                f.write(f"{q}\t{d}\t{qrels[q][d]}\n")
    with open(out / "qrels.trec", "w") as f:
        for q in sorted(qrels):
            for d in sorted(qrels[q]):
                f.write(f"{q} 0 {d} {qrels[q][d]}\n")

    per_query = pytrec_values(qrels, run, NDCG_K, MRR_K, RECALL_K)
    assert set(per_query) == {q for q in qrels if qrels[q]} & set(run)
    names = [f"ndcg@{k}" for k in NDCG_K] + [f"mrr@{k}" for k in MRR_K] + [f"recall@{k}" for k in RECALL_K]
    mean = {m: math.fsum(per_query[q][m] for q in per_query) / len(per_query) for m in names}
    return {
        "cutoffs": {"ndcg": NDCG_K, "mrr": MRR_K, "recall": RECALL_K},
        "queries": len(per_query),
        "per_query": {q: per_query[q] for q in sorted(per_query)},
        "mean": mean,
    }


def make_cases():
    def case(name, qrels, run):
        values = pytrec_values(qrels, run, CASE_K, CASE_K, CASE_K)
        return {"name": name, "qrels": qrels, "run": {q: [[d, s] for d, s in e] for q, e in run.items()},
                "queries": len(values), "per_query": values}

    return [
        case("equal scores: higher doc id ranks first", {"q": {"a": 1, "b": 0}}, {"q": [("a", 1.0), ("b", 1.0)]}),
        case("doc ids compare as bytes, not numbers", {"q": {"d12": 1, "d7": 0}},
             {"q": [("d12", 0.5), ("d7", 0.5)]}),
        case("digit-string ids compare as bytes", {"q": {"100": 1, "99": 0}}, {"q": [("100", 2.0), ("99", 2.0)]}),
        case("scores equal as float32 tie", {"q": {"a": 1, "b": 0}}, {"q": [("a", 1.0 + 5e-8), ("b", 1.0)]}),
        case("scores apart as float32 do not tie", {"q": {"a": 1, "b": 0}},
             {"q": [("a", 1.0 + 6.5e-8), ("b", 1.0)]}),
        case("scores beyond float32 range tie at +inf", {"q": {"a": 1, "b": 0}},
             {"q": [("a", 1e39), ("b", 1e40)]}),
        case("-0.0 ties 0.0", {"q": {"a": 1, "b": 0}}, {"q": [("a", -0.0), ("b", 0.0)]}),
        case("negative scores", {"q": {"a": 1, "b": 0, "c": 2}}, {"q": [("a", -1.0), ("b", -0.5), ("c", -3.0)]}),
        case("negative relevance is non-relevant, no gain", {"q": {"a": -1, "b": 2, "c": 1}},
             {"q": [("a", 3.0), ("b", 2.0), ("c", 1.0)]}),
        case("relevance levels with a gap", {"q": {"a": 3, "b": 1, "c": 0}},
             {"q": [("c", 3.0), ("b", 2.0), ("a", 1.0)]}),
        case("only non-relevant judgments: evaluated as 0", {"q": {"a": 0}, "r": {"a": 1}},
             {"q": [("a", 1.0)], "r": [("a", 1.0)]}),
        case("judged query missing from the run is skipped", {"q": {"a": 1}, "r": {"a": 1}},
             {"q": [("a", 1.0)]}),
        case("run query without entries is evaluated as 0", {"q": {"a": 1}, "r": {"a": 1}},
             {"q": [("a", 1.0)], "r": []}),
        case("run query without judgments is skipped", {"q": {"a": 1}}, {"q": [("a", 1.0)], "x": [("a", 1.0)]}),
        case("query with an empty judgment list is skipped", {"q": {"a": 1}, "e": {}},
             {"q": [("a", 1.0)], "e": [("a", 1.0)]}),
        case("relevant documents beyond the cutoffs", {"q": {"a": 2, "b": 1}},
             {"q": [("x", 5.0), ("y", 4.0), ("z", 3.0), ("a", 2.0), ("b", 1.0)]}),
        case("more relevant documents than the cutoff", {"q": {"a": 1, "b": 1, "c": 2, "d": 1, "e": 2}},
             {"q": [("a", 5.0), ("x", 4.0), ("c", 3.0), ("e", 2.0)]}),
    ]


NPY = {
    # name: (array factory, how the file is written); the C++ test knows the formulas
    "f4_c.npy": lambda: np.arange(12, dtype=np.float32).reshape(3, 4) * np.float32(0.5) - np.float32(1),
    "f8_c.npy": lambda: np.arange(10, dtype=np.float64).reshape(2, 5) / 3.0,
    "f4_fortran.npy": lambda: np.asfortranarray(
        (10 * np.arange(4)[:, None] + np.arange(3)[None, :] - 7.25).astype(np.float32)),
    "f8_fortran.npy": lambda: np.asfortranarray((np.arange(6, dtype=np.float64).reshape(3, 2) + 0.1) * -2.0),
    "f4_1d.npy": lambda: np.arange(5, dtype=np.float32) * np.float32(1.5),
    "f4_empty.npy": lambda: np.zeros((0, 3), dtype=np.float32),
    "i4.npy": lambda: np.arange(6, dtype=np.int32).reshape(2, 3),
    "f4_big_endian.npy": lambda: np.arange(6, dtype=">f4").reshape(2, 3),
    "f4_3d.npy": lambda: np.zeros((2, 2, 2), dtype=np.float32),
    "f4_0d.npy": lambda: np.array(1.5, dtype=np.float32),
}


def write_npy():
    out = HERE / "npy"
    out.mkdir(exist_ok=True)
    for name, make in NPY.items():
        np.save(out / name, make())
    assert np.load(out / "f4_fortran.npy").flags.f_contiguous
    c = NPY["f4_c.npy"]()
    for version in [(2, 0), (3, 0)]:
        with open(out / f"f4_v{version[0]}.npy", "wb") as f:
            np.lib.format.write_array(f, c, version=version)
    data = (out / "f4_c.npy").read_bytes()
    (out / "f4_truncated.npy").write_bytes(data[:-5])


def pytrec_eval_version():
    for dist in ("pytrec-eval-terrier", "pytrec_eval"):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            pass
    return "unknown"


def main():
    rng = np.random.default_rng(SEED)
    qrels, run = make_metrics_data(rng)
    expected = write_metrics_data(qrels, run)
    expected["cases"] = make_cases()
    expected["case_cutoffs"] = CASE_K
    expected["generated_by"] = {
        "script": "tests/data/retrieval/generate_metrics_data.py",
        "seed": SEED,
        "numpy": np.__version__,
        "pytrec_eval": pytrec_eval_version(),
    }
    with open(HERE / "metrics" / "expected.json", "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    write_npy()
    print(f"{expected['queries']} queries evaluated; wrote {HERE / 'metrics'} and {HERE / 'npy'}")


if __name__ == "__main__":
    main()
