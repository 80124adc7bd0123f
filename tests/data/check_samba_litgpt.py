#!/usr/bin/env python3
"""Check the SAMBA references against SAMBA's own published model code (opt-in).

tests/data/samba-tiny/ and tests/data/samba-tiny-mha/ hold lit-gpt checkpoints and a
`reference.safetensors` computed by make_samba_reference.py, whose float64 forward is
written from the project's reading of SAMBA. This script checks that reading against the
model code published with SAMBA (github.com/microsoft/Samba): it imports that checkout's
`lit_gpt/model.py` (`GPT`, `Block`, `CausalSelfAttention`, `LLaMAMLP`, `build_rope_cache`),
`lit_gpt/config.py` (`Config`), `lit_gpt/mamba_simple.py` (`Mamba`),
`lit_gpt/fused_rotary_embedding.py` (`apply_rotary_emb_func`) and `lit_gpt/rmsnorm.py`
(`FusedRMSNorm`) from the directory given on the command line (nothing of SAMBA is part of
this project), builds `GPT(Config(**fields))` from each folder's config, loads the checkpoint
with `load_state_dict(strict=True)`, converts the model to float64 and runs it on the CPU:

  - every `seq{i}.input_ids`: the logits against `seq{i}.logits` (this decides the exit
    status) and, read through forward hooks, the residual stream after each block and after
    ln_f against `seq{i}.hidden.{j}` (reported, and held to the same tolerance);
  - `generate.output`: one forward, its logits against `generate.full_logits`, and the
    greedy tokens (argmax of the logits at each earlier position) against the stored ones.

The error printed is norm-wise relative, ||ours - stored||_F / ||stored||_F per tensor, with
the max-norm relative error max|ours - stored| / max|stored| beside it. Exit status 0 when
every comparison is within --tol (default 1e-5) and the greedy tokens agree, 1 otherwise.
The stored tensors are float32 and two steps inside SAMBA's code run in float32 whatever the
model's dtype (mamba_ssm's `selective_scan_ref`, and the cast of the residual stream to
float32 after each Mamba layer in `Block.forward`), so agreement is expected at the 1e-7 level.

What runs is SAMBA's code, except for these CUDA-only pieces, which this script provides
through `sys.modules` before the import (each written here from the semantics of the
kernel it stands for):

  xformers.ops.SwiGLU          xformers is GPU software; with `_pack_weights=False` (as
                               LLaMAMLP builds it) it is three nn.Linear w1, w2 (in ->
                               hidden), w3 (hidden -> out) and computes w3(silu(w1 x) * w2 x)
  rotary_emb.apply_rotary      flash-attn's rotary kernel, called by SAMBA's own
                               ApplyRotaryEmb: out1 = x1 cos - x2 sin, out2 = x1 sin + x2 cos
                               (sin negated when conj), on the halves SAMBA passes to it
  dropout_layer_norm           flash-attn's fused add + dropout + norm kernel, called by
                               SAMBA's FusedRMSNorm: only the case FusedRMSNorm uses (no
                               residual, no dropout, no scales, RMS): z = x rsqrt(mean(x^2)
                               + eps) w; any other use raises
  causal_conv1d                present with `causal_conv1d_fn = causal_conv1d_update = None`,
                               so that Mamba takes its own nn.Conv1d + SiLU path (model.py
                               imports the name unconditionally; the attention's short
                               convolution is off in these configs)
  selective_scan_cuda          an empty module, so that mamba_ssm imports without its CUDA
                               extension; `selective_scan_fn` in lit_gpt/mamba_simple.py is
                               replaced by mamba_ssm's pure-PyTorch `selective_scan_ref`
                               (same signature) and every Mamba runs with use_fast_path off
                               (`mamba_inner_fn` is CUDA-only)
  lit_gpt.gla, .multiscale_retention, .mega
                               layer types (GLA, RetNet, Mega) that model.py imports and these
                               configs never build; they need the `fla` Triton package, so
                               they are replaced by placeholders that raise if constructed
  lightning.fabric.loggers     imported by lit_gpt/utils.py for a logger this script never
                               uses (a placeholder, only when lightning is not installed)
  lightning_utilities          used by model.py only to ask whether flash-attn is installed
                               (answered "no" by a placeholder when lightning-utilities is
                               not installed; flash-attn is not used on the CPU either way)

`lit_gpt/__init__.py` is not run (it imports the tokenizer, a CUDA cross-entropy kernel and
insists on Lightning nightlies); `lit_gpt` is set up as a bare package over the checkout's
lit_gpt/ folder and its modules are imported from there.

Three pieces of SAMBA's code are patched, each because it cannot run or would not be
comparable on the CPU:

  1. `CausalSelfAttention.scaled_dot_product_attention`: the sliding window is applied only
     by flash-attn (`window_size=(local_window - 1, 0)`, CUDA, half precision); on the CPU
     SAMBA's code attends causally to the whole prefix. The patched method passes a boolean
     mask that admits key s for query t when s <= t and t - s < local_window to SAMBA's
     original method (which then calls torch's SDPA with it), for a local layer whose
     sequence is longer than the window; otherwise SAMBA's method runs unchanged. samba-tiny
     (window 8, sequences up to 300 tokens) needs the mask; samba-tiny-mha (window 2048)
     runs SAMBA's unpatched path.
  2. `Block`'s Mamba layers are built with `device="cuda"` hard-coded; `lit_gpt.model.Mamba`
     is replaced by a subclass of SAMBA's Mamba that builds on the CPU with
     use_fast_path off.
  3. `GPT.build_rope_cache` asks for the cos/sin table in bfloat16 (the precision of the fused
     kernel it feeds on the GPU); it is made to call SAMBA's `build_rope_cache` with float32
     instead, so the table is SAMBA's float32 angles and cos/sin. With --published-rope-dtype
     the bfloat16 table is kept, which shows how far that rounding alone moves the logits
     (about 1e-3; not expected to meet the default tolerance).

Checked with Samba at commit ed3ed5424dbb (2025-02-18), torch 2.15.0, mamba_ssm 2.3.2.

Requirements: torch, einops, typing_extensions, safetensors, numpy, mamba_ssm (its Python
sources; the CUDA extension is not needed), optionally lightning-utilities. A checkout of
SAMBA:
  git clone https://github.com/microsoft/Samba /path/to/Samba
  python3 tests/data/check_samba_litgpt.py --samba-repo /path/to/Samba
"""

import argparse
import dataclasses
import importlib
import json
import os
import sys
import time
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import load_file

CASES = ("samba-tiny", "samba-tiny-mha")


# ------------------------------------------------------------------------------ stand-ins

def _module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def _importable(name):
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


class _SwiGLU(nn.Module):
    """xformers.ops.SwiGLU with unpacked weights: w3(silu(w1 x) * w2 x)."""

    def __init__(self, in_features, hidden_features, out_features=None, bias=True, *, _pack_weights=True):
        super().__init__()
        if _pack_weights:
            raise NotImplementedError("only the unpacked form (w1, w2, w3) that LLaMAMLP builds")
        out_features = out_features or in_features
        self.w1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.w2 = nn.Linear(in_features, hidden_features, bias=bias)
        self.w3 = nn.Linear(hidden_features, out_features, bias=bias)

    def forward(self, x):
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


def _apply_rotary(x1, x2, cos, sin, out1, out2, conj):
    """flash-attn's rotary_emb.apply_rotary: rotate the pair (x1, x2) by the angle; out may alias x."""
    c, s = cos.to(x1.dtype), sin.to(x1.dtype)
    if conj:
        s = -s
    y1 = x1 * c - x2 * s
    y2 = x1 * s + x2 * c
    out1.copy_(y1)
    out2.copy_(y2)


def _dropout_add_ln_fwd(x0, residual, gamma, beta, rowscale, colscale, x0_subset, z_subset,
                        dropout_p, epsilon, rowscale_const, z_numrows, gen, residual_in_fp32,
                        is_rms_norm):
    """flash-attn's dropout_layer_norm.dropout_add_ln_fwd, the plain RMSNorm case only."""
    unused = (residual, beta, rowscale, colscale, x0_subset, z_subset)
    if any(t is not None for t in unused) or dropout_p != 0.0 or not is_rms_norm:
        raise NotImplementedError("only RMSNorm without residual, dropout or scales")
    rsigma = torch.rsqrt(x0.pow(2).mean(dim=-1) + epsilon)
    z = x0 * rsigma[:, None] * gamma
    return z, None, None, None, rsigma


def _unused_layer(kind):
    class Unused(nn.Module):
        def __init__(self, *args, **kwargs):
            raise NotImplementedError(f"{kind} layers are not part of these checkpoints")
    Unused.__name__ = kind
    return Unused


class _RequirementCache:
    """lightning_utilities' RequirementCache, answering that the requirement is missing."""

    def __init__(self, requirement, *args, **kwargs):
        self.requirement = requirement

    def __bool__(self):
        return False

    def __str__(self):
        return f"{self.requirement} (not checked: lightning-utilities is not installed)"


def import_samba(repo):
    """Import SAMBA's lit_gpt model code from `repo` with the stand-ins above; returns (model, config, mamba_simple)."""
    pkg_dir = os.path.join(os.path.abspath(repo), "lit_gpt")
    for f in ("model.py", "config.py", "mamba_simple.py", "fused_rotary_embedding.py", "rmsnorm.py"):
        if not os.path.isfile(os.path.join(pkg_dir, f)):
            sys.exit(f"{pkg_dir}/{f} not found: --samba-repo must be a checkout of github.com/microsoft/Samba")

    _module("xformers")
    _module("xformers.ops", SwiGLU=_SwiGLU)
    sys.modules["xformers"].ops = sys.modules["xformers.ops"]
    _module("rotary_emb", apply_rotary=_apply_rotary)
    _module("dropout_layer_norm", dropout_add_ln_fwd=_dropout_add_ln_fwd)
    _module("causal_conv1d", causal_conv1d_fn=None, causal_conv1d_update=None)
    if not _importable("selective_scan_cuda"):
        _module("selective_scan_cuda")
    if not _importable("lightning.fabric.loggers"):
        _module("lightning")
        _module("lightning.fabric")
        _module("lightning.fabric.loggers", CSVLogger=object)
    if not _importable("lightning_utilities.core.imports"):
        _module("lightning_utilities")
        _module("lightning_utilities.core")
        _module("lightning_utilities.core.imports", RequirementCache=_RequirementCache)

    for name in [n for n in sys.modules if n == "lit_gpt" or n.startswith("lit_gpt.")]:
        del sys.modules[name]
    pkg = _module("lit_gpt")
    pkg.__path__ = [pkg_dir]
    pkg.__file__ = os.path.join(pkg_dir, "__init__.py")
    _module("lit_gpt.gla", GatedLinearAttention=_unused_layer("GatedLinearAttention"))
    _module("lit_gpt.multiscale_retention", MultiScaleRetention=_unused_layer("MultiScaleRetention"))
    _module("lit_gpt.mega", S6GatedAttention=_unused_layer("S6GatedAttention"))

    model = importlib.import_module("lit_gpt.model")
    config = importlib.import_module("lit_gpt.config")
    mamba_simple = importlib.import_module("lit_gpt.mamba_simple")
    from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
    mamba_simple.selective_scan_fn = selective_scan_ref
    return model, config, mamba_simple


def patch_samba(model, mamba_simple, published_rope_dtype):
    """The three patches described at the top of this file."""
    # 1. the sliding window, which SAMBA applies only through flash-attn on CUDA
    original_sdpa = model.CausalSelfAttention.scaled_dot_product_attention

    def windowed_sdpa(self, q, k, v, mask=None):
        T_q, T_k = q.shape[1], k.shape[1]
        window = self.config.local_window
        if mask is None and self.local and window > -1 and T_k > window:
            t = torch.arange(T_k - T_q, T_k, device=q.device)[:, None]
            s = torch.arange(T_k, device=q.device)[None, :]
            mask = (s <= t) & (t - s < window)
        return original_sdpa(self, q, k, v, mask=mask)

    model.CausalSelfAttention.scaled_dot_product_attention = windowed_sdpa

    # 2. Mamba layers on the CPU, without the CUDA fast path
    class CpuMamba(mamba_simple.Mamba):
        def __init__(self, *args, device=None, dtype=None, **kwargs):
            super().__init__(*args, device="cpu", dtype=dtype, **kwargs)
            self.use_fast_path = False

    model.Mamba = CpuMamba

    # 3. the rope table in float32 rather than bfloat16
    if not published_rope_dtype:
        def build_rope_cache_f32(self, idx, seq_len):
            return model.build_rope_cache(
                seq_len=seq_len,
                n_elem=int(self.config.rotary_percentage * self.config.head_size),
                dtype=torch.float32,
                device=idx.device,
                condense_ratio=self.config.condense_ratio,
            )

        model.GPT.build_rope_cache = build_rope_cache_f32


# ------------------------------------------------------------------------------ the check

def load_checkpoint(folder):
    if os.path.exists(os.path.join(folder, "lit_config.json")):
        with open(os.path.join(folder, "lit_config.json")) as f:
            fields = json.load(f)
        sd = torch.load(os.path.join(folder, "lit_model.pth"), map_location="cpu", weights_only=True)["model"]
    else:
        with open(os.path.join(folder, "config.json")) as f:
            fields = json.load(f)
        sd = {k: torch.from_numpy(v.copy()) for k, v in load_file(os.path.join(folder, "model.safetensors")).items()}
        sd.setdefault("lm_head.weight", sd["transformer.wte.weight"])  # tied, not stored
    return fields, sd


def build_model(config_mod, model_mod, fields, sd):
    Config = config_mod.Config
    known = {f.name for f in dataclasses.fields(Config)}
    fields = dict(fields)
    head_size = fields.pop("head_size", None)  # a property of Config, derived from n_embd / n_head
    unknown = sorted(set(fields) - known)
    if unknown:
        raise SystemExit(f"config fields SAMBA's Config does not take: {unknown}")
    config = Config(**fields)
    if head_size is not None and head_size != config.head_size:
        raise SystemExit(f"head_size {head_size} in the config, SAMBA derives {config.head_size}")
    gpt = model_mod.GPT(config)
    gpt = gpt.double().eval()
    gpt.load_state_dict(sd, strict=True)
    if gpt.lm_head.weight is not gpt.transformer.wte.weight:
        raise SystemExit("lm_head is not tied to the embedding")
    return gpt


@torch.no_grad()
def run(gpt, ids):
    """Logits and the residual stream after each block and after ln_f, for one sequence."""
    hidden = []
    hooks = [block.register_forward_hook(lambda mod, inp, out: hidden.append(out[0][0]))
             for block in gpt.transformer.h]
    hooks.append(gpt.transformer.ln_f.register_forward_hook(lambda mod, inp, out: hidden.append(out[0])))
    try:
        logits = gpt(torch.as_tensor(ids, dtype=torch.long)[None]).logits[0]
    finally:
        for h in hooks:
            h.remove()
    return logits.double().numpy(), [h.double().numpy() for h in hidden]


def errors(ours, stored):
    stored = stored.astype(np.float64)
    diff = ours - stored
    norm = float(np.linalg.norm(diff) / max(np.linalg.norm(stored), 1e-300))
    mx = float(np.abs(diff).max() / max(np.abs(stored).max(), 1e-300))
    return norm, mx


def check_case(name, folder, model_mod, config_mod, tol):
    fields, sd = load_checkpoint(folder)
    gpt = build_model(config_mod, model_mod, fields, sd)
    ref = load_file(os.path.join(folder, "reference.safetensors"))
    ok = True
    i = 0
    while f"seq{i}.input_ids" in ref:
        ids = ref[f"seq{i}.input_ids"]
        logits, hidden = run(gpt, ids)
        norm, mx = errors(logits, ref[f"seq{i}.logits"])
        bad = not norm <= tol
        ok &= not bad
        line = f"{name}: seq{i} ({len(ids):3d} tokens) logits rel {norm:.2e} (max-norm {mx:.2e})"
        h_norms = []
        while f"seq{i}.hidden.{len(h_norms)}" in ref:
            j = len(h_norms)
            if j >= len(hidden):
                print(f"{name}: seq{i}: reference has hidden.{j}, the model gives {len(hidden)} states")
                ok = False
                break
            h_norms.append(errors(hidden[j], ref[f"seq{i}.hidden.{j}"])[0])
            if not h_norms[-1] <= tol:
                print(f"{name}: seq{i}: hidden.{j} rel {h_norms[-1]:.2e}  FAIL")
                ok = False
        if h_norms:
            line += f", hidden states (worst of {len(h_norms)}) rel {max(h_norms):.2e}"
        print(line + ("  FAIL" if bad else ""))
        i += 1
    if i == 0:
        print(f"{name}: no seq0.input_ids in reference.safetensors")
        ok = False
    if "generate.output" in ref:
        out = ref["generate.output"]
        n_prompt = len(ref["generate.prompt"]) if "generate.prompt" in ref else 1
        logits, _ = run(gpt, out)
        norm, mx = errors(logits, ref["generate.full_logits"])
        greedy = logits[n_prompt - 1:-1].argmax(-1)
        same = int((greedy == out[n_prompt:]).sum())
        bad = not norm <= tol or same != len(out) - n_prompt
        ok &= not bad
        print(f"{name}: generate ({len(out)} tokens) full_logits rel {norm:.2e} (max-norm {mx:.2e}), "
              f"greedy tokens {same}/{len(out) - n_prompt} reproduced" + ("  FAIL" if bad else ""))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samba-repo", required=True, help="a checkout of github.com/microsoft/Samba")
    ap.add_argument("--data-dir", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--tol", type=float, default=1e-5, help="norm-wise relative tolerance (default 1e-5)")
    ap.add_argument("--published-rope-dtype", action="store_true",
                    help="keep SAMBA's bfloat16 rope table (informational; exceeds the default tolerance)")
    ap.add_argument("--case", action="append", choices=CASES, help="only this folder (repeatable)")
    args = ap.parse_args()

    start = time.time()
    torch.set_num_threads(1)
    model_mod, config_mod, mamba_simple = import_samba(args.samba_repo)
    patch_samba(model_mod, mamba_simple, args.published_rope_dtype)
    ok = True
    for name in args.case or CASES:
        ok &= check_case(name, os.path.join(args.data_dir, name), model_mod, config_mod, args.tol)
    print(f"{'OK' if ok else 'FAILED'}: SAMBA's lit_gpt model against the stored references, "
          f"tolerance {args.tol:g} ({time.time() - start:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
