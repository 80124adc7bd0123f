#!/usr/bin/env python3
"""A mamba-790m-shaped checkpoint with random weights (D 1536, 48 layers, E 3072, N 16,
dt_rank 96, conv 4, vocab 50280, tied head), in HF's safetensors layout, for decoding
benchmarks whose weights do not fit in the last-level cache (int8: ~0.9 GB, bf16 ~1.6 GB).
The value ranges are those of benchmarks/mamba_130m_checkpoint.hpp; speed does not
depend on them.

    python3 make_checkpoint.py OUT_DIR
"""
import json
import os
import struct
import sys

import numpy as np

D, L, E, N, R, K, V = 1536, 48, 3072, 16, 96, 4, 50280


def tensors():
    yield "backbone.embeddings.weight", (V, D), -0.05, 0.05
    for l in range(L):
        p = f"backbone.layers.{l}"
        yield p + ".norm.weight", (D,), 0.9, 1.1
        yield p + ".mixer.in_proj.weight", (2 * E, D), -0.036, 0.036
        yield p + ".mixer.conv1d.weight", (E, 1, K), -0.5, 0.5
        yield p + ".mixer.conv1d.bias", (E,), -0.1, 0.1
        yield p + ".mixer.x_proj.weight", (R + 2 * N, E), -0.025, 0.025
        yield p + ".mixer.dt_proj.weight", (E, R), -0.14, 0.14
        yield p + ".mixer.dt_proj.bias", (E,), -6.9, -2.3
        yield p + ".mixer.A_log", (E, N), 0.0, 2.77
        yield p + ".mixer.D", (E,), 0.5, 1.5
        yield p + ".mixer.out_proj.weight", (D, E), -0.018, 0.018
    yield "backbone.norm_f.weight", (D,), 0.9, 1.1


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    header, offset, specs = {}, 0, list(tensors())
    for name, shape, _, _ in specs:
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(42)
    tmp = os.path.join(out, "model.safetensors.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, shape, lo, hi in specs:
            f.write(rng.uniform(lo, hi, size=shape).astype("<f4").tobytes())
    os.replace(tmp, os.path.join(out, "model.safetensors"))
    config = {"architectures": ["MambaForCausalLM"], "model_type": "mamba", "vocab_size": V,
              "hidden_size": D, "state_size": N, "num_hidden_layers": L, "expand": 2,
              "conv_kernel": K, "time_step_rank": R, "intermediate_size": E, "use_bias": False,
              "use_conv_bias": True, "tie_word_embeddings": True, "layer_norm_epsilon": 1e-05,
              "eos_token_id": 0}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)


if __name__ == "__main__":
    main()
