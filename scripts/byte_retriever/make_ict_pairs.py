#!/usr/bin/env python3
"""More training pairs from the same pages: inverse-cloze queries (a sentence taken out of a
passage asks for the rest of it), appended to Tevatron JSONL training data.

Usage: make_ict_pairs.py --train train.jsonl --out train-ict.jsonl
                         [--per-page 2] [--first-sentences 6] [--min-words 4]
                         [--max-words 40] [--min-rest-words 12] [--boilerplate-min 5] [--seed 0]

Every line of --train is copied to --out unchanged. Then, for each line, up to --per-page
sentences of its first positive passage are drawn (seeded) among its first
--first-sentences sentences, each with --min-words to --max-words words and found in fewer
than --boilerplate-min passages of the file ("For more information, see the EXAMPLES
section."). Each drawn sentence becomes one more line:

  {"query_id": "<query_id>#ict<k>", "query": <the sentence>,
   "positive_passages": [the passage with that sentence taken out, same docid and title],
   "negative_passages": the line's own negatives (passages of other pages)}

A sentence is only drawn when at least --min-rest-words words stay behind. The pages are
the training pages alone: nothing of a held-out page enters, because the input holds none.
The extra pairs ask for what a page is about in other words than its NAME line, which is
what a query of another page's NAME line needs from the model too.
"""

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import read_jsonl  # noqa: E402

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")
WORD = re.compile(r"\w+")


def split_sentences(text):
    return [s for s in SENTENCE_END.split(text.strip()) if s]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", required=True, type=Path, help="Tevatron JSONL (make_training_data.py)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--per-page", type=int, default=2, help="most extra queries a line gives")
    ap.add_argument("--first-sentences", type=int, default=6,
                    help="draw among this many leading sentences of the passage")
    ap.add_argument("--min-words", type=int, default=4)
    ap.add_argument("--max-words", type=int, default=40)
    ap.add_argument("--min-rest-words", type=int, default=12,
                    help="fewest words the passage keeps once the sentence is out")
    ap.add_argument("--boilerplate-min", type=int, default=5,
                    help="a sentence in this many passages or more is never drawn")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.per_page < 1 or args.first_sentences < 1 or args.min_words < 1:
        ap.error("--per-page, --first-sentences and --min-words must be at least 1")
    if args.max_words < args.min_words:
        ap.error("--max-words cannot be below --min-words")
    if args.out.resolve() == args.train.resolve():
        ap.error("--out must differ from --train")

    lines = list(read_jsonl(args.train))
    for number, line in enumerate(lines, 1):
        if not line.get("positive_passages") or not line.get("query_id"):
            sys.exit(f"{args.train}:{number}: a line needs a query_id and a positive passage")
    counts = Counter()
    for line in lines:
        counts.update(set(split_sentences(line["positive_passages"][0]["text"])))

    rng = random.Random(args.seed)
    extra, pages_with = [], 0
    for line in lines:
        pos = line["positive_passages"][0]
        sents = split_sentences(pos["text"])
        candidates = [i for i, s in enumerate(sents[: args.first_sentences])
                      if args.min_words <= len(WORD.findall(s)) <= args.max_words
                      and counts[s] < args.boilerplate_min]
        rng.shuffle(candidates)
        drawn = 0
        for i in candidates:
            if drawn == args.per_page:
                break
            rest = " ".join(sents[:i] + sents[i + 1:])
            if len(WORD.findall(rest)) < args.min_rest_words:
                continue
            drawn += 1
            extra.append({
                "query_id": f"{line['query_id']}#ict{drawn}",
                "query": sents[i],
                "positive_passages": [{"docid": pos["docid"], "title": pos.get("title", ""), "text": rest}],
                "negative_passages": line.get("negative_passages", []),
            })
        pages_with += drawn > 0

    tmp = args.out.with_name(args.out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in lines + extra:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(args.out)
    print(f"wrote {len(lines)} lines and {len(extra)} inverse-cloze lines to {args.out} "
          f"({pages_with} of {len(lines)} pages gave at least one)", file=sys.stderr)


if __name__ == "__main__":
    main()
