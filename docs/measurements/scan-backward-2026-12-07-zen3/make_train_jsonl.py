"""Tevatron-style training lines from examples/data/manpages-mini (50 queries, each with its
positive and 30 random other passages): the input of ssm_train_step.sh.
usage: python3 make_train_jsonl.py examples/data/manpages-mini out.jsonl"""
import json, random, sys

random.seed(0)
d, out = sys.argv[1], sys.argv[2]
corpus = {}
for line in open(f'{d}/corpus.jsonl'):
    x = json.loads(line)
    corpus[x['_id']] = x
queries = {json.loads(l)['_id']: json.loads(l)['text'] for l in open(f'{d}/queries.jsonl')}
qrels = [l.split('\t') for l in open(f'{d}/qrels/test.tsv').read().splitlines()[1:]]
ids = list(corpus)
with open(out, 'w') as f:
    for qid, did, _ in qrels:
        negs = random.sample([i for i in ids if i != did], 30)
        f.write(json.dumps({"query_id": qid, "query": queries[qid],
                            "positive_passages": [{"docid": did, "title": "", "text": corpus[did]['text']}],
                            "negative_passages": [{"docid": n, "title": "", "text": corpus[n]['text']} for n in negs]}) + "\n")
