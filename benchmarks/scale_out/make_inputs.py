#!/usr/bin/env python3
"""Inputs for the encoding benchmark (run_encoding.sh): a mamba-130m-shaped checkpoint with
random weights (the shape bench_model uses; speed does not depend on the values) and a
JSON Lines corpus of random token ids, lengths uniform in [MIN, MAX].

usage: make_inputs.py DIR [--passages 400] [--min-len 32] [--max-len 256]
"""
import argparse
import json
import os

import numpy as np
from safetensors.numpy import save_file

D, LAYERS, E, N, R, K, VOCAB = 768, 24, 1536, 16, 48, 4, 50280


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--passages", type=int, default=400)
    ap.add_argument("--min-len", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=256)
    a = ap.parse_args()
    model = os.path.join(a.dir, "mamba-130m-shape")
    os.makedirs(model, exist_ok=True)
    rng = np.random.default_rng(42)
    if not os.path.exists(os.path.join(model, "model.safetensors")):
        u = lambda shape, lo, hi: rng.uniform(lo, hi, size=shape).astype(np.float32)  # noqa: E731
        t = {"backbone.embeddings.weight": u((VOCAB, D), -0.05, 0.05), "backbone.norm_f.weight": u((D,), 0.9, 1.1)}
        for layer in range(LAYERS):
            p = f"backbone.layers.{layer}"
            t[p + ".norm.weight"] = u((D,), 0.9, 1.1)
            t[p + ".mixer.in_proj.weight"] = u((2 * E, D), -0.036, 0.036)
            t[p + ".mixer.conv1d.weight"] = u((E, 1, K), -0.5, 0.5)
            t[p + ".mixer.conv1d.bias"] = u((E,), -0.1, 0.1)
            t[p + ".mixer.x_proj.weight"] = u((R + 2 * N, E), -0.025, 0.025)
            t[p + ".mixer.dt_proj.weight"] = u((E, R), -0.14, 0.14)
            t[p + ".mixer.dt_proj.bias"] = u((E,), -6.9, -2.3)
            t[p + ".mixer.A_log"] = u((E, N), 0.0, 2.77)
            t[p + ".mixer.D"] = u((E,), 0.5, 1.5)
            t[p + ".mixer.out_proj.weight"] = u((D, E), -0.025, 0.025)
        save_file(t, os.path.join(model, "model.safetensors"))
        json.dump({"model_type": "mamba", "vocab_size": VOCAB, "hidden_size": D, "state_size": N,
                   "num_hidden_layers": LAYERS, "expand": 2, "conv_kernel": K, "time_step_rank": R,
                   "intermediate_size": E, "use_bias": False, "use_conv_bias": True,
                   "tie_word_embeddings": True, "layer_norm_epsilon": 1e-5, "eos_token_id": 0},
                  open(os.path.join(model, "config.json"), "w"))
    with open(os.path.join(a.dir, "corpus.jsonl"), "w") as f:
        for i in range(a.passages):
            n = int(rng.integers(a.min_len, a.max_len + 1))
            f.write(json.dumps({"id": i, "input_ids": rng.integers(1, VOCAB, size=n).tolist()}) + "\n")
    print("wrote", model, "and", os.path.join(a.dir, "corpus.jsonl"))


if __name__ == "__main__":
    main()
