#!/usr/bin/env python3
"""Golden run for ssm-retrieve: examples/data/mini-beir ranked with tests/data/mamba-tiny.

Independent of the library: HF transformers' MambaModel (float64, CPU) embeds every
document ("title text", or the text alone when the title is empty) and every query,
tokenized by HF `tokenizers` from the checkpoint's tokenizer.json with eos_token_id
appended; the embedding is the final hidden state (after norm_f) at the EOS, L2
normalised; documents are ranked by cosine, ties by corpus order. Writes the top 10 of
every query with its score to mini-beir-mamba-tiny.json beside this script.

The checkpoint has random weights, so the ranking means nothing about retrieval; it
depends on every part of the model, the tokenizer and the pooling, which is the point.
    python3 tests/data/retrieval/make_mini_beir_run.py
"""
import json
import os

import torch
from tokenizers import Tokenizer
from transformers import MambaModel

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
MODEL = os.path.join(ROOT, "tests", "data", "mamba-tiny")
BEIR = os.path.join(ROOT, "examples", "data", "mini-beir")
TOP = 10


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    model = MambaModel.from_pretrained(MODEL).to(torch.float64).eval()
    eos = model.config.eos_token_id
    tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))

    def embed(text):
        ids = tok.encode(text, add_special_tokens=False).ids + [eos]
        with torch.no_grad():
            h = model(torch.tensor([ids])).last_hidden_state[0, -1]
        return h / h.norm()

    corpus = read_jsonl(os.path.join(BEIR, "corpus.jsonl"))
    queries = read_jsonl(os.path.join(BEIR, "queries.jsonl"))
    docs = torch.stack([embed(f"{d['title']} {d['text']}" if d.get("title") else d["text"]) for d in corpus])
    run = {}
    for q in queries:
        scores = (docs @ embed(q["text"])).tolist()
        order = sorted(range(len(corpus)), key=lambda i: (-scores[i], i))[:TOP]
        run[q["_id"]] = [[corpus[i]["_id"], scores[i]] for i in order]
    out = {"model": "tests/data/mamba-tiny", "beir": "examples/data/mini-beir", "top": TOP,
           "made_by": "tests/data/retrieval/make_mini_beir_run.py (transformers MambaModel, float64)",
           "run": run}
    with open(os.path.join(HERE, "mini-beir-mamba-tiny.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
