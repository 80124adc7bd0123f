#!/usr/bin/env python3
"""(Re)create the training references in tests/data/: what PyTorch does, for the C++
tests to match.

  adamw   tests/data/train/adamw.safetensors — `torch.optim.AdamW` for 5 steps on four
          small parameter tensors with fixed seeded gradients, in two configurations,
          plus transformers' learning-rate schedule factors.
  grad    <case>/grad/ — inputs in `ssm-grad`'s format and PyTorch autograd gradients
          (float64) of the three training losses w.r.t. every parameter of
          transformers' `MambaForCausalLM` loaded from <case>.

Needs torch, transformers (5.x), safetensors and numpy; runs on the CPU, no network.
Both modes are deterministic (seeded); rerunning rewrites the same files (the grad
inputs are read back from <case>/grad/ when present, unless --new-inputs).

    python3 tests/data/make_training_reference.py adamw
    python3 tests/data/make_training_reference.py grad [--cases mambabyte-tiny] [--new-inputs]
    python3 tests/data/make_training_reference.py grad --check   # recompute, compare, write nothing

See tests/data/README.md ("Training references") for every tensor written.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------------------
# AdamW
# ---------------------------------------------------------------------------------------

# name, shape, weight decay applies
ADAMW_PARAMS = [("w", (3, 4), True), ("b", (4,), False), ("A_log", (2, 3), False), ("emb", (5, 2), True)]
ADAMW_STEPS = 5

# Two configurations. Gradient scales per step make the global norm cross max_grad_norm
# on some steps and not on others.
ADAMW_CONFIGS = {
    "a": dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, max_grad_norm=2.0,
              schedule="cosine", warmup_steps=2, total_steps=6, floor=0.1, accumulation=2,
              scales=[0.2, 1.5, 0.25, 0.05, 0.6]),
    "b": dict(lr=3e-3, beta1=0.8, beta2=0.999, eps=1e-6, weight_decay=0.05, max_grad_norm=0.0,
              schedule="linear", warmup_steps=1, total_steps=5, floor=0.0, accumulation=1,
              scales=[1.0, 0.5, 2.0, 1.0, 0.3]),
}

# (name, kind, warmup, total, floor) for the schedule factor table, steps 0..12
SCHEDULES = [
    ("constant_warmup3", "constant", 3, 0, 0.0),
    ("linear_w3_t10", "linear", 3, 10, 0.0),
    ("linear_w0_t10", "linear", 0, 10, 0.0),
    ("cosine_w3_t10", "cosine", 3, 10, 0.0),
    ("cosine_w2_t10_floor0.1", "cosine", 2, 10, 0.1),
]
SCHEDULE_STEPS = 13


def lr_lambda(kind, warmup, total, floor):
    import transformers.optimization as opt
    from functools import partial

    if kind == "constant":
        return partial(opt._get_constant_schedule_with_warmup_lr_lambda, num_warmup_steps=warmup)
    if kind == "linear":
        assert floor == 0.0, "transformers' linear schedule has no floor"
        return partial(opt._get_linear_schedule_with_warmup_lr_lambda, num_warmup_steps=warmup,
                       num_training_steps=total)
    if kind == "cosine":
        return partial(opt._get_cosine_schedule_with_warmup_lr_lambda, num_warmup_steps=warmup,
                       num_training_steps=total, num_cycles=0.5, min_lr_rate=floor)
    raise ValueError(kind)


def make_adamw():
    out = {}
    meta = {"steps": str(ADAMW_STEPS), "params": ",".join(n for n, _, _ in ADAMW_PARAMS),
            "decay": ",".join("1" if d else "0" for _, _, d in ADAMW_PARAMS)}
    for tag, cfg in ADAMW_CONFIGS.items():
        gen = torch.Generator().manual_seed(1234 if tag == "a" else 5678)
        params = {}
        for name, shape, _ in ADAMW_PARAMS:
            params[name] = torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float32))
            out[f"{tag}.init.{name}"] = params[name].detach().clone()
        decay = [params[n] for n, _, d in ADAMW_PARAMS if d]
        no_decay = [params[n] for n, _, d in ADAMW_PARAMS if not d]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"], foreach=False)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(cfg["schedule"], cfg["warmup_steps"], cfg["total_steps"], cfg["floor"]))
        lrs, norms = [], []
        for k in range(ADAMW_STEPS):
            opt.zero_grad(set_to_none=True)
            accum = cfg["accumulation"]
            for m in range(accum):
                for name, shape, _ in ADAMW_PARAMS:
                    g = torch.randn(shape, generator=gen, dtype=torch.float32) * cfg["scales"][k]
                    out[f"{tag}.grad.{k}.{m}.{name}"] = g
                    # as (loss / accumulation).backward() would add it
                    contrib = g * (1.0 / accum)
                    p = params[name]
                    p.grad = contrib.clone() if p.grad is None else p.grad + contrib
            all_params = [params[n] for n, _, _ in ADAMW_PARAMS]
            if cfg["max_grad_norm"] > 0:
                norm = torch.nn.utils.clip_grad_norm_(all_params, cfg["max_grad_norm"]).item()
            else:
                norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in all_params)).item()
            norms.append(norm)
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
            for name, _, _ in ADAMW_PARAMS:
                out[f"{tag}.after.{k}.{name}"] = params[name].detach().clone()
        out[f"{tag}.lr"] = torch.tensor(lrs, dtype=torch.float64)
        out[f"{tag}.grad_norm"] = torch.tensor(norms, dtype=torch.float64)
        for key, value in cfg.items():
            if key != "scales":
                meta[f"{tag}.{key}"] = repr(value) if isinstance(value, float) else str(value)
    for name, kind, warmup, total, floor in SCHEDULES:
        f = lr_lambda(kind, warmup, total, floor)
        out[f"schedule.{name}"] = torch.tensor([float(f(s)) for s in range(SCHEDULE_STEPS)], dtype=torch.float64)
        meta[f"schedule.{name}"] = f"{kind},{warmup},{total},{floor!r}"
    folder = os.path.join(HERE, "train")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "adamw.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata=meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(out)} tensors)")


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    sub.add_parser("adamw", help="write tests/data/train/adamw.safetensors")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.mode == "adamw":
        make_adamw()


if __name__ == "__main__":
    main()
