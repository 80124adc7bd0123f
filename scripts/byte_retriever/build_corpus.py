#!/usr/bin/env python3
"""Build a BEIR retrieval set from the manual pages installed on this machine.

Every page under /usr/share/man/man*/ (the English, un-localised folders) is rendered to
plain text with man-db (`man -l`, which runs the page's preprocessors and strips the
overstrikes). For each page:

  query    = the description in its NAME section ("ls - list directory contents"
             gives "list directory contents")
  passage  = its DESCRIPTION section, whitespace-normalised, cut to --max-chars
             at a word boundary; the title is the page name and section, "ls(1)"

Pages are skipped, each for the first reason that holds:

  1. symbolic links and ".so" stubs (aliases of another page);
  2. pages that fail to render or render empty, lack a NAME description or a
     DESCRIPTION section, or whose query has fewer than --min-query-words words;
  3. pages whose DESCRIPTION only restates the query: fewer than --min-novel-words
     words the query lacks, leaving out function words, leading marks such as
     "(ALPHA)" and boilerplate sentences (found in --boilerplate-min passages or more),
     words compared by their first five letters (mostly gcloud's pages:
     "manage CA pools" / "Manage CA pools.");
  4. in sorted path order, the later of two pages with the same query (compared
     case-insensitively, whitespace-normalised, without a final full stop) or the same
     passage, so every query has exactly one relevant passage and no passage an
     unjudged copy; and, unless --keep-near-duplicates, the later of two release tracks
     of one command (gcloud_alpha_X.1, gcloud_beta_X.1 and gcloud_X.1: the names agree
     without the words alpha, beta and preview) or of two passages that agree without
     leading marks and those words.

The rendered text is plain UTF-8: each paragraph on one line (the page is rendered
4000 columns wide, so nothing is hyphenated or justified), inner runs of spaces cut to
one, indentation to 32 columns, rules to 40 characters, typographic quotes, hyphens and
dashes made ASCII.

The queries are split into train and test by a seeded shuffle, or by a list of test ids
(--test-ids; test-ids.txt beside this script holds the held-out pages of the bundled
model, examples/models/byte-retriever). Written to --out:

  corpus.jsonl           {"_id", "title", "text"}: every passage, train and test
  queries.jsonl          {"_id", "text"}: every query
  queries-train.jsonl    the train queries alone
  queries-test.jsonl     the test queries alone
  qrels/train.tsv        "query-id<TAB>corpus-id<TAB>score" after a header line, score 1
  qrels/test.tsv         the same for the test queries
  pretrain.txt           the full rendered text of the train pages (no test page's
                         text), one page after another, each followed by a line holding
                         only a form feed (\\f)
  pages.tsv              corpus id, split, source file of every kept page
  skipped.tsv            source file and reason for every skipped page
  stats.json             counts, sizes, skip reasons, timings

Usage: build_corpus.py --out DIR [--seed 0] [--test-fraction 0.1] [--test-ids FILE] [--max-pages N]
"""

import argparse
import gzip
import hashlib
import json
import multiprocessing
import os
import random
import re
import statistics
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from pathlib import Path

MAN_ROOT = Path("/usr/share/man")
SECTION_DIR = re.compile(r"^man[0-9n][a-z0-9]*$")

# The separator between the names and the description in a NAME section: "\-" renders
# as "-", mdoc's Nd as an em dash; en dashes, hyphens and minus signs also occur.
NAME_SEPARATOR = re.compile(r"\s+(?:-{1,2}|\u2010|\u2011|\u2012|\u2013|\u2014|\u2212)\s+")

# Typographic characters mapped to ASCII so queries and passages spell hyphens and quotes
# the way people type them.
TYPOGRAPHY = str.maketrans({
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2212": "-",
    "\u2014": "--",
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
    "\u00b4": "'",  # an acute accent standing for a quote ("\u00b4policy.json'")
    "\u00a0": " ", "\u2002": " ", "\u2003": " ", "\u2009": " ", "\u200a": " ",
    "\u00ad": None, "\u200b": None, "\ufeff": None,
})

OVERSTRIKE = re.compile(r".\x08")          # "x\bx" bold, "_\bx" underline
SGR = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colour escapes, if a pager left any
# A word hyphenated across two lines: groff marks the break with U+2010.
HYPHEN_BREAK = re.compile(r"(\w)\u2010\n[ \t]*(\w)")
SPACES = re.compile(r"\s+")
INNER_SPACES = re.compile(r"(?<=\S) {2,}")
MAX_INDENT = 32
RULE_LENGTH = 40
RULE = re.compile(r"([\u2500\u2501\u2550\-_=~.*#+])\1{%d,}" % RULE_LENGTH)

RENDER_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
    # Wide enough that a paragraph comes out as one line: no hyphenation, no justification.
    "MANWIDTH": "4000",
    "MAN_DISABLE_SECCOMP": "1",
}


def discover(root):
    """Every file under root/man*/, sorted by path."""
    files = []
    for d in sorted(root.iterdir()):
        if not d.is_dir() or not SECTION_DIR.match(d.name):
            continue
        for dirpath, dirnames, filenames in os.walk(d):
            dirnames.sort()
            for f in filenames:
                files.append(Path(dirpath) / f)
    return sorted(files, key=str)


def page_name(path):
    """("ls", "1") for ls.1.gz; ("List::Util", "3perl") for List::Util.3perl.gz."""
    name = path.name
    for ext in (".gz", ".bz2", ".xz", ".lzma", ".zst", ".Z"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    stem, dot, section = name.rpartition(".")
    if not dot or not stem:
        return name, path.parent.name[3:]
    return stem, section


def read_source(path):
    """The page's roff source (only gzip and plain files are opened here)."""
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def is_so_stub(source):
    """True when the page only redirects (".so man3/other.3") to another page."""
    for raw in source.splitlines():
        line = raw.strip()
        if not line or line.startswith(b'.\\"') or line.startswith(b"'\\\"") or line == b".":
            continue
        return line.startswith(b".so ") or line.startswith(b".so\t")
    return False


def clean(text):
    text = SGR.sub("", text)
    text = OVERSTRIKE.sub("", text)
    text = HYPHEN_BREAK.sub(r"\1\2", text)
    return unicodedata.normalize("NFC", text).translate(TYPOGRAPHY)


def normalise(text):
    return SPACES.sub(" ", text).strip()


def sections(lines):
    """[(heading, [lines])] for the rendered page body: a heading is a line that starts
    in the first column."""
    out = []
    for line in lines:
        if line and not line[0].isspace():
            out.append((line.strip(), []))
        elif out:
            out[-1][1].append(line)
    return out


def page_text(lines):
    """The body as pretraining text: trailing blanks gone, runs of inner spaces (the
    padding of tables and tags) cut to one, runs of blank lines to one, indentation
    (centred lines are indented by half the page width) to MAX_INDENT, and rules drawn
    across the page width to RULE_LENGTH characters. Applying it twice changes nothing."""
    out, blank = [], True
    for line in lines:
        line = line.rstrip()
        if not line:
            if not blank:
                out.append("")
            blank = True
            continue
        indent = len(line) - len(line.lstrip(" "))
        rest = RULE.sub(lambda m: m.group(1) * RULE_LENGTH, INNER_SPACES.sub(" ", line[indent:]))
        out.append(" " * min(indent, MAX_INDENT) + rest)
        blank = False
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def truncate(text, limit):
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[:space] if space > limit // 2 else cut


def render(path):
    """Render one page: a dict with its path, name, section and body text ("text"), or
    with "skip" set when it is an alias or does not render."""
    path = Path(path)
    name, section = page_name(path)
    rec = {"path": str(path), "name": name, "section": section}
    if path.is_symlink():
        rec["skip"] = "symlink alias"
        return rec
    try:
        source = read_source(path)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        rec["skip"] = "unreadable: " + type(e).__name__
        return rec
    if is_so_stub(source):
        rec["skip"] = ".so stub"
        return rec
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(["man", "-l", "-P", "cat", str(path)], env=RENDER_ENV,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        rec["skip"] = "render timeout"
        return rec
    rec["render_s"] = time.perf_counter() - t0
    text = clean(proc.stdout.decode("utf-8", errors="replace"))
    lines = text.split("\n")
    nonblank = [i for i, line in enumerate(lines) if line.strip()]
    if len(nonblank) < 3:
        rec["skip"] = "render failed" if proc.returncode != 0 else "rendered empty"
        return rec
    # The first and last non-blank lines are the running header and footer.
    rec["text"] = page_text(lines[nonblank[0] + 1: nonblank[-1]])
    if not rec["text"].strip():
        rec["skip"] = "rendered empty"
    return rec


def parse(rec, max_chars, min_query_words):
    """Sets rec["query"] and rec["passage"] from the rendered text, or rec["skip"]."""
    if "skip" in rec:
        return rec
    secs = sections(rec["text"].split("\n"))
    heads = {h.upper(): ls for h, ls in reversed(secs)}  # the first of a repeated heading
    name_lines = heads.get("NAME")
    desc_lines = heads.get("DESCRIPTION")
    if name_lines is None:
        rec["skip"] = "no NAME section"
        return rec
    # The first line ("ls - list directory contents"); a NAME section may go on with
    # more entries or, on pages made by Sphinx, a table of contents. When the first line
    # has no separator, the first paragraph is tried.
    name_lines = list(name_lines)
    while name_lines and not name_lines[0].strip():
        name_lines.pop(0)
    paragraph = name_lines[: name_lines.index("")] if "" in name_lines else name_lines
    parts = NAME_SEPARATOR.split(normalise(paragraph[0] if paragraph else ""), maxsplit=1)
    if len(parts) != 2:
        parts = NAME_SEPARATOR.split(normalise("\n".join(paragraph)), maxsplit=1)
    if len(parts) != 2 or not parts[1].strip():
        rec["skip"] = "no description in NAME"
        return rec
    query = normalise(parts[1])
    if desc_lines is None:
        rec["skip"] = "no DESCRIPTION section"
        return rec
    passage = normalise("\n".join(desc_lines))
    if not passage:
        rec["skip"] = "empty DESCRIPTION"
        return rec
    if len(query.split()) < min_query_words:
        rec["skip"] = f"query under {min_query_words} words"
        return rec
    rec["query"] = query
    rec["passage"] = truncate(passage, max_chars)
    rec["passage_full_chars"] = len(passage)
    return rec


def query_key(q):
    return normalise(q).casefold().rstrip(".").rstrip()


WORD = re.compile(r"\w+")
RELEASE_MARKS = re.compile(r"^(?:\s*\([A-Z][A-Z ]*\))+")  # "(ALPHA) (DEPRECATED) ..."
TRACK_WORDS = {"alpha", "beta", "preview"}


def command_key(rec):
    """The page's name and section without release-track words: gcloud_alpha_compute.1,
    gcloud_beta_compute.1 and gcloud_compute.1 document one command."""
    parts = [p for p in rec["name"].split("_") if p.casefold() not in TRACK_WORDS]
    return "_".join(parts) + "." + rec["section"]


def near_duplicate_key(rec):
    """The passage's words, lower-cased, without leading release marks ("(ALPHA)") and
    release-track words: the same text written for another track shares it."""
    words = WORD.findall(RELEASE_MARKS.sub("", rec["passage"]).casefold())
    return " ".join(w for w in words if w not in TRACK_WORDS)


SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Function words left out when asking whether a passage says more than its query.
FUNCTION_WORDS = set(
    "a all an and are as at be but by can for from if in into is it its no not of on or "
    "such that the their then there these they this to was which will with within you "
    "your".split())


def sentences(passage):
    return SENTENCE_END.split(RELEASE_MARKS.sub("", passage).strip())


def boilerplate(records, min_passages):
    """Sentences found in at least min_passages passages ("For more examples, refer to
    the EXAMPLES section below.")."""
    counts = Counter()
    for rec in records:
        counts.update(set(sentences(rec["passage"])))
    return {s for s, n in counts.items() if n >= min_passages}


def novel_words(rec, common):
    """The passage's words that its query lacks: boilerplate sentences, release marks
    and function words left out, words compared by their first five letters (so
    "managing" repeats "manage")."""
    text = " ".join(s for s in sentences(rec["passage"]) if s not in common)
    said = {w[:5] for w in WORD.findall(rec["query"].casefold())}
    return [w for w in WORD.findall(text.casefold())
            if w not in FUNCTION_WORDS and w[:5] not in said]


def doc_id(name, section):
    """A corpus id without whitespace (TREC runs are whitespace-separated)."""
    ident = f"{name}.{section}"
    return re.sub(r"\s", "_", ident)


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def describe(values):
    if not values:
        return {}
    values = sorted(values)
    return {
        "min": values[0], "median": statistics.median(values),
        "mean": round(statistics.fmean(values), 1), "max": values[-1],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output BEIR folder")
    ap.add_argument("--seed", type=int, default=0, help="seed of the train/test shuffle")
    ap.add_argument("--test-fraction", type=float, default=0.1)
    ap.add_argument("--max-pages", type=int, default=0,
                    help="render only a seeded sample of N files (0: all)")
    ap.add_argument("--max-chars", type=int, default=2000, help="passage length cap")
    ap.add_argument("--min-query-words", type=int, default=3)
    ap.add_argument("--min-novel-words", type=int, default=3,
                    help="drop pages whose DESCRIPTION has fewer words the query lacks "
                         "(0 keeps them)")
    ap.add_argument("--boilerplate-min", type=int, default=20,
                    help="a sentence in this many passages is boilerplate, not news")
    ap.add_argument("--keep-near-duplicates", action="store_true",
                    help="keep the other release tracks of a command and passages that differ "
                         "from an earlier one only in release marks")
    ap.add_argument("--jobs", type=int, default=2, help="rendering processes")
    ap.add_argument("--man-root", type=Path, default=MAN_ROOT)
    ap.add_argument("--test-ids", type=Path,
                    help="take the test split from this file (one corpus id a line, as "
                         "test-ids.txt beside this script: the bundled model's held-out pages) "
                         "instead of the seeded shuffle; ids this machine lacks are named and "
                         "left out")
    ap.add_argument("--render-cache", type=Path,
                    help="gzip'd JSONL of rendered pages: read when it exists (skipping the "
                         "rendering), written otherwise")
    args = ap.parse_args()
    if not 0 < args.test_fraction < 1:
        ap.error("--test-fraction must lie strictly between 0 and 1")
    if args.test_ids and not args.test_ids.is_file():
        ap.error(f"--test-ids {args.test_ids}: no such file")

    t_start = time.time()
    files = discover(args.man_root)
    found = len(files)
    if args.max_pages and args.max_pages < len(files):
        files = sorted(random.Random(args.seed).sample(files, args.max_pages), key=str)
    print(f"{found} files under {args.man_root}/man*/, rendering {len(files)} "
          f"with {args.jobs} processes", file=sys.stderr)

    jobs = [str(p) for p in files]
    records = []
    cache_used = bool(args.render_cache and args.render_cache.exists())
    if cache_used:
        with gzip.open(args.render_cache, "rt", encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        for rec in records:  # keep what rendering found; parse again below
            if "text" in rec:
                rec.pop("skip", None)
                rec["text"] = page_text(rec["text"].translate(TYPOGRAPHY).split("\n"))
            for key in ("query", "passage", "passage_full_chars"):
                rec.pop(key, None)
        if [r["path"] for r in records] != jobs:
            sys.exit(f"{args.render_cache} holds other pages than these; remove it")
        print(f"read {len(records)} rendered pages from {args.render_cache}", file=sys.stderr)
    else:
        with multiprocessing.Pool(args.jobs) as pool:
            for i, rec in enumerate(pool.imap(render, jobs, chunksize=16), 1):
                records.append(rec)
                if i % 1000 == 0 or i == len(jobs):
                    print(f"  {i}/{len(jobs)} pages, {time.time() - t_start:.0f} s",
                          file=sys.stderr)
        if args.render_cache:
            args.render_cache.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(args.render_cache, "wt", encoding="utf-8") as f:
                for rec in records:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    t_render = time.time() - t_start
    for rec in records:
        parse(rec, args.max_chars, args.min_query_words)
    parsed = [rec for rec in records if "skip" not in rec]
    common = boilerplate(parsed, args.boilerplate_min) if args.min_novel_words > 0 else set()
    for rec in parsed:
        if args.min_novel_words > 0 and len(novel_words(rec, common)) < args.min_novel_words:
            rec["skip"] = "DESCRIPTION restates the query"

    # Drop repeated ids, queries and passages: the first page in path order wins.
    seen_ids, seen_queries, seen_passages, seen_near, seen_commands = {}, {}, {}, {}, {}
    kept, skipped = [], []
    for rec in records:  # already in sorted path order
        if "skip" not in rec:
            did = doc_id(rec["name"], rec["section"])
            qk = query_key(rec["query"])
            pk = hashlib.sha1(rec["passage"].casefold().encode()).hexdigest()
            nk = near_duplicate_key(rec)
            ck = command_key(rec)
            if did in seen_ids:
                rec["skip"] = "duplicate id of " + seen_ids[did]
            elif qk in seen_queries:
                rec["skip"] = "duplicate query of " + seen_queries[qk]
            elif pk in seen_passages:
                rec["skip"] = "duplicate passage of " + seen_passages[pk]
            elif not args.keep_near_duplicates and ck in seen_commands:
                rec["skip"] = "other release track of " + seen_commands[ck]
            elif not args.keep_near_duplicates and nk in seen_near:
                rec["skip"] = "near-duplicate passage of " + seen_near[nk]
            else:
                rec["id"] = did
                seen_ids[did] = seen_queries[qk] = seen_passages[pk] = rec["path"]
                seen_near[nk] = seen_commands[ck] = rec["path"]
                kept.append(rec)
                continue
        skipped.append(rec)

    # Split of the queries: seeded, or given by --test-ids.
    if args.test_ids:
        wanted = [line.strip() for line in args.test_ids.read_text(encoding="utf-8").splitlines()
                  if line.strip() and not line.startswith("#")]
        present = {r["id"] for r in kept}
        missing = [i for i in wanted if i not in present]
        if missing:
            print(f"{args.test_ids}: {len(missing)} of {len(wanted)} test ids are not among this "
                  f"machine's kept pages and are left out: {', '.join(missing[:10])}"
                  f"{' ...' if len(missing) > 10 else ''}", file=sys.stderr)
        test_ids = set(wanted) & present
        if not test_ids:
            sys.exit(f"{args.test_ids}: none of its ids is a kept page here")
        n_test = len(test_ids)
    else:
        order = [r["id"] for r in kept]
        random.Random(args.seed).shuffle(order)
        n_test = max(1, round(len(order) * args.test_fraction))
        test_ids = set(order[:n_test])
    for rec in kept:
        rec["split"] = "test" if rec["id"] in test_ids else "train"

    out = args.out
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "corpus.jsonl",
                ({"_id": r["id"], "title": f"{r['name']}({r['section']})", "text": r["passage"]}
                 for r in kept))
    queries = [{"_id": "q-" + r["id"], "text": r["query"]} for r in kept]
    write_jsonl(out / "queries.jsonl", queries)
    for split in ("train", "test"):
        rows = [r for r in kept if r["split"] == split]
        write_jsonl(out / f"queries-{split}.jsonl",
                    ({"_id": "q-" + r["id"], "text": r["query"]} for r in rows))
        with open(out / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for r in rows:
                f.write(f"q-{r['id']}\t{r['id']}\t1\n")
    with open(out / "pretrain.txt", "w", encoding="utf-8") as f:
        for r in kept:
            if r["split"] == "train":
                f.write(r["text"])
                f.write("\n\f\n")
    with open(out / "pages.tsv", "w", encoding="utf-8") as f:
        f.write("corpus-id\tsplit\tpath\n")
        for r in kept:
            f.write(f"{r['id']}\t{r['split']}\t{r['path']}\n")
    with open(out / "skipped.tsv", "w", encoding="utf-8") as f:
        f.write("path\treason\n")
        for r in skipped:
            f.write(f"{r['path']}\t{r['skip']}\n")

    def reason_class(reason):
        return reason.split(" of ")[0] if " of /" in reason else reason

    n_train = len(kept) - n_test
    gcloud = sum(1 for r in kept if r["name"].startswith("gcloud"))
    stats = {
        "man_root": str(args.man_root),
        "files_found": found,
        "files_processed": len(files),
        "seed": args.seed,
        "test_fraction": args.test_fraction,
        "test_ids": str(args.test_ids) if args.test_ids else None,
        "max_chars": args.max_chars,
        "min_query_words": args.min_query_words,
        "min_novel_words": args.min_novel_words,
        "boilerplate_sentences": len(common),
        "pages_kept": len(kept),
        "pages_skipped": len(skipped),
        "skipped_by_reason": dict(Counter(reason_class(r["skip"]) for r in skipped).most_common()),
        "corpus_passages": len(kept),
        "queries": len(kept),
        "train_queries": n_train,
        "test_queries": n_test,
        "passages_truncated": sum(1 for r in kept if r["passage_full_chars"] > args.max_chars),
        "passage_chars": describe([len(r["passage"]) for r in kept]),
        "query_words": describe([len(r["query"].split()) for r in kept]),
        "kept_by_section": dict(Counter(r["section"] for r in kept).most_common()),
        "kept_gcloud_pages": gcloud,
        "kept_other_pages": len(kept) - gcloud,
        "test_gcloud_queries": sum(1 for r in kept
                                   if r["split"] == "test" and r["name"].startswith("gcloud")),
        "bytes": {f: (out / f).stat().st_size for f in
                  ("corpus.jsonl", "queries.jsonl", "pretrain.txt")},
        "render_cpu_s": round(sum(r.get("render_s", 0) for r in records), 1),
        "render_wall_s": round(t_render, 1),
        "render_cache": str(args.render_cache) if args.render_cache else None,
        "rendered_from_cache": cache_used,
        "total_wall_s": round(time.time() - t_start, 1),
        "jobs": args.jobs,
    }
    with open(out / "stats.json", "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=2)
        f.write("\n")
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
