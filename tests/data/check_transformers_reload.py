#!/usr/bin/env python3
"""Checks that a folder saved by ssm-train opens in transformers exactly.

    python3 tests/data/check_transformers_reload.py --model DIR --forward logits.safetensors --ids 72,101,108

`--forward` is what `ssm-forward --model DIR --ids ... --out FILE` wrote. The check loads
DIR with `MambaForCausalLM.from_pretrained` (`FalconMambaForCausalLM` for a
Falcon-Mamba config, `Mamba2ForCausalLM` for a Mamba-2 one) (no missing, unexpected or mismatched keys
allowed), runs the same ids in float32 and compares the logits with the library's:
exit 0 when the largest difference is under 1e-4 of the logits' scale, 1 otherwise.
"""
import argparse
import sys

import torch
import transformers
from safetensors.torch import load_file


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--forward", required=True, help="ssm-forward --out file")
    ap.add_argument("--ids", required=True)
    args = ap.parse_args()

    import json
    import os
    with open(os.path.join(args.model, "config.json")) as f:
        model_type = json.load(f).get("model_type")
    cls = {"falcon_mamba": transformers.FalconMambaForCausalLM,
           "mamba2": transformers.Mamba2ForCausalLM}.get(model_type, transformers.MambaForCausalLM)
    model, info = cls.from_pretrained(
        args.model, output_loading_info=True, torch_dtype=torch.float32)
    problems = {k: sorted(v) for k, v in info.items() if k != "error_msgs" and v}
    if problems or info.get("error_msgs"):
        print(f"{args.model}: transformers reports {problems} {info.get('error_msgs')}")
        return 1
    ids = torch.tensor([[int(x) for x in args.ids.split(",")]])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    ref = load_file(args.forward)["logits"].float()
    if ref.shape != logits.shape:
        print(f"shapes differ: transformers {tuple(logits.shape)}, library {tuple(ref.shape)}")
        return 1
    diff = (logits - ref).abs().max().item()
    scale = ref.abs().max().item()
    print(f"{args.model}: loads with no missing or unexpected keys; "
          f"max |logit difference| {diff:.3g} (logits up to {scale:.3g})")
    return 0 if diff <= 1e-4 * max(scale, 1.0) else 1


if __name__ == "__main__":
    sys.exit(main())
