#!/usr/bin/env python3
"""(Re)create the original-format (mamba_ssm) LayerNorm Mamba checkpoints and their reference
outputs in tests/data/, made with `mamba_ssm`'s own Python modules.

The original state-spaces checkpoints (MambaByte's among them) are what
`mamba_ssm.models.mixer_seq_simple.MambaLMHeadModel.save_pretrained` writes: a `config.json`
holding `MambaConfig`'s fields (`d_model`, `d_intermediate`, `n_layer`, `vocab_size`,
`ssm_cfg` with the `Mamba` block's keyword arguments, `attn_layer_idx`, `attn_cfg`,
`rms_norm`, `residual_in_fp32`, `fused_add_norm`, `pad_vocab_size_multiple`,
`tie_embeddings`) and a `pytorch_model.bin` (torch.save of the state_dict) whose tensors are
named `backbone.embedding.weight`, `backbone.layers.{i}.norm.{weight,bias}`,
`backbone.layers.{i}.mixer.{in_proj.weight, in_proj.bias, conv1d.weight, conv1d.bias,
x_proj.weight, dt_proj.weight, dt_proj.bias, A_log, D, out_proj.weight, out_proj.bias}`,
`backbone.norm_f.{weight,bias}` and `lm_head.weight` (the embedding's storage when tied).

Two cases, one folder each, both LayerNorm models (`rms_norm: false`) with seeded random
weights, every parameter pushed off its initial value (norm weights and biases, Linear
biases, conv, dt bias, A_log, D):

  mamba-ssm-layernorm-bias    d_model 36, 2 layers, vocab 256 (pad_vocab_size_multiple 8:
                              no padding), d_state 16, d_conv 4, dt_rank "auto" (3),
                              `bias: true` (in_proj / out_proj biases), `conv_bias: true`,
                              tied embeddings
  mamba-ssm-layernorm-untied  d_model 32, 2 layers, vocab 250 padded to 256
                              (pad_vocab_size_multiple 16), d_state 8, d_conv 3, dt_rank 4,
                              `bias: false`, `conv_bias: false`, untied lm_head
                              (`tie_embeddings: false`)

Each folder holds `config.json` and `pytorch_model.bin` exactly as `save_pretrained` writes
them, and `reference.safetensors` (the tensor names of the other Mamba references):
  seq{i}.input_ids     I64 [L], L = 1, 7, 33 (ids from the unpadded vocabulary)
  seq{i}.hidden.{j}    F32 [L, d_model]: the residual stream after block j (mamba_ssm's
                       Block returns the mixer output and the residual before it: their sum);
                       j == n_layer: the backbone's output, after norm_f
  seq{i}.logits        F32 [L, padded vocab]
  generate.prompt      I64 [8]
  generate.output      I64 [24]: the prompt and 16 greedy tokens (argmax over the padded
                       vocabulary, each from a full forward)
  generate.full_logits F32 [24, padded vocab]: one full forward over generate.output

The reference forward is `MambaLMHeadModel.forward` itself, loaded from the saved files and
converted to float64, on the CPU. mamba_ssm's CUDA extension is not needed: the import of
`selective_scan_cuda` is satisfied by an empty module, the `selective_scan_fn` that
`mamba_ssm.modules.mamba_simple` calls is replaced by mamba_ssm's pure-PyTorch
`selective_scan_ref` (same signature), the mixers run with `use_fast_path` off (and
`causal_conv1d` absent, the convolution is the module's `nn.Conv1d`), and the models have
`fused_add_norm: false` and `rms_norm: false`, so the norms are `nn.LayerNorm` (mamba_ssm's
RMSNorm and fused add+norm are Triton kernels). Two float32 steps remain inside mamba_ssm's
float64 forward: `A = -exp(A_log.float())` and `selective_scan_ref`, which runs the scan in
float32 (as the CUDA kernel does). The blocks' `residual_in_fp32` cast is switched off for
the float64 run only: in the float32 model that the config describes it is the identity,
in a float64 one it would round the residual stream to float32 at every block.

As a check on the wiring above, the script also runs every input through an independent
float64 forward written from the definitions (LayerNorm, in_proj + bias, causal depthwise
conv, SiLU, x_proj, softplus(dt_proj + bias), sequential scan h = exp(Δ·A)·h + Δ·B·u,
y = C·h + D·u, y·silu(z), out_proj + bias, residual adds, norm_f, lm_head) and requires
agreement within --cross-tol (the float32 scan above bounds it at about 1e-6).

Modes: default (re)writes both folders; --check recomputes everything from the shipped
files and compares with reference.safetensors (max-norm relative error ≤ --tol, integer
tensors exactly), writing nothing.

Requirements: mamba_ssm (its Python sources; the CUDA extension is not used), torch,
einops, safetensors, numpy. CPU only, offline.
  python3 tests/data/make_mamba_ssm_reference.py
  python3 tests/data/make_mamba_ssm_reference.py --check
"""

import argparse
import json
import math
import os
import sys
import types
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file

SEED = 2718
SEQ_LENGTHS = (1, 7, 33)
PROMPT_LENGTH = 8
NEW_TOKENS = 16

CASES = {
    "mamba-ssm-layernorm-bias": dict(
        d_model=36, n_layer=2, vocab_size=256, pad_vocab_size_multiple=8, tie_embeddings=True,
        ssm_cfg=dict(d_state=16, d_conv=4, expand=2, dt_rank="auto", bias=True, conv_bias=True)),
    "mamba-ssm-layernorm-untied": dict(
        d_model=32, n_layer=2, vocab_size=250, pad_vocab_size_multiple=16, tie_embeddings=False,
        ssm_cfg=dict(d_state=8, d_conv=3, expand=2, dt_rank=4, bias=False, conv_bias=False)),
}
COMMON = dict(d_intermediate=0, rms_norm=False, residual_in_fp32=True, fused_add_norm=False)


# ------------------------------------------------------------------------------ mamba_ssm on the CPU

def import_mamba_ssm():
    """mamba_ssm's MambaConfig and MambaLMHeadModel, runnable on the CPU without its CUDA
    extension (see the docstring)."""
    if "selective_scan_cuda" not in sys.modules:
        try:
            import selective_scan_cuda  # noqa: F401  (the CUDA extension, when it is built)
        except ImportError:  # only selective_scan_fn's CUDA path calls into it
            sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")
    import mamba_ssm.modules.mamba_simple as mamba_simple
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
    from mamba_ssm.ops.selective_scan_interface import selective_scan_ref

    mamba_simple.selective_scan_fn = selective_scan_ref
    return MambaConfig, MambaLMHeadModel


def cpu_ready(model):
    for layer in model.backbone.layers:
        layer.mixer.use_fast_path = False
    return model


def generator(name, purpose):
    g = torch.Generator()
    g.manual_seed(SEED * 1_000_003 + zlib.crc32(f"{name}/{purpose}".encode()))
    return g


# ------------------------------------------------------------------------------ weights

def make_model(name, case):
    """A float32 MambaLMHeadModel with mamba_ssm's own initialisation (seeded), then every
    parameter moved off its initial value."""
    MambaConfig, MambaLMHeadModel = import_mamba_ssm()
    config = MambaConfig(**COMMON, **case)
    torch.manual_seed(SEED + zlib.crc32(name.encode()))
    model = cpu_ready(MambaLMHeadModel(config, dtype=torch.float32))
    g = generator(name, "weights")

    def noise(p, std):
        return std * torch.randn(p.shape, generator=g, dtype=torch.float32)

    d = case["d_model"]
    with torch.no_grad():
        for key, p in model.named_parameters():  # the tied lm_head is listed once, as the embedding
            if key == "backbone.embedding.weight":
                p.copy_(noise(p, 0.3))  # mamba_ssm's std 0.02 would leave the residual stream tiny
            elif key == "lm_head.weight":
                p.copy_(noise(p, d ** -0.5))
            elif key.endswith("norm.weight") or key.endswith("norm_f.weight"):
                p.add_(noise(p, 0.2))  # around 1
            elif key.endswith(".bias") and "dt_proj" not in key:
                p.add_(noise(p, 0.1))  # norm, in_proj, out_proj (zero at init) and conv biases
            elif key.endswith("dt_proj.bias"):
                p.add_(noise(p, 0.3))
            elif key.endswith("A_log"):
                p.add_(noise(p, 0.3))
            elif key.endswith(".D"):
                p.add_(noise(p, 0.5))  # around 1
            elif key.endswith("out_proj.weight"):
                p.mul_(2.0).add_(noise(p, 0.02))  # mamba_ssm scales it down by sqrt(n_layer)
            else:
                p.add_(noise(p, 0.02))  # in_proj, conv1d, x_proj, dt_proj weights
    return model


def load_model(folder):
    """The saved folder as mamba_ssm reads it: MambaConfig(**config.json), load_state_dict."""
    MambaConfig, MambaLMHeadModel = import_mamba_ssm()
    with open(os.path.join(folder, "config.json")) as f:
        config = MambaConfig(**json.load(f))
    model = cpu_ready(MambaLMHeadModel(config, dtype=torch.float32))
    sd = torch.load(os.path.join(folder, "pytorch_model.bin"), map_location="cpu", weights_only=True)
    model.load_state_dict(sd, strict=True)
    return model, sd


# ------------------------------------------------------------------------------ reference

class MambaSsmReference:
    """MambaLMHeadModel.forward in float64, the residual stream read by hooks."""

    def __init__(self, model):
        self.model = model.double().eval()
        for layer in self.model.backbone.layers:
            layer.residual_in_fp32 = False  # the identity in float32; keeps float64 here
        self.captured = []
        for layer in self.model.backbone.layers:
            layer.register_forward_hook(lambda _m, _a, out: self.captured.append(out[0] + out[1]))
        self.model.backbone.norm_f.register_forward_hook(lambda _m, _a, out: self.captured.append(out))

    @torch.no_grad()
    def forward(self, ids):
        self.captured = []
        logits = self.model(torch.tensor([ids], dtype=torch.long)).logits[0]
        assert logits.dtype == torch.float64
        return [h[0] for h in self.captured], logits


class DefinitionReference:
    """The same model written from the definitions, float64 throughout."""

    def __init__(self, config, sd):
        self.c = config
        self.sd = {k: v.double() for k, v in sd.items()}
        s = config["ssm_cfg"]
        self.n, self.k = s["d_state"], s["d_conv"]
        self.r = math.ceil(config["d_model"] / 16) if s["dt_rank"] == "auto" else s["dt_rank"]
        self.head = self.sd["lm_head.weight"] if "lm_head.weight" in self.sd else self.sd["backbone.embedding.weight"]

    def mixer(self, p, x):
        sd, n, K, r = self.sd, self.n, self.k, self.r
        T = x.shape[0]
        xz = x @ sd[p + "in_proj.weight"].T
        if p + "in_proj.bias" in sd:
            xz = xz + sd[p + "in_proj.bias"]
        u, z = xz.chunk(2, dim=-1)
        w = sd[p + "conv1d.weight"][:, 0, :]  # (E, K)
        padded = torch.cat([torch.zeros(K - 1, u.shape[1], dtype=u.dtype), u])
        u = sum(padded[k:k + T] * w[:, k] for k in range(K))
        if p + "conv1d.bias" in sd:
            u = u + sd[p + "conv1d.bias"]
        u = F.silu(u)
        dbc = u @ sd[p + "x_proj.weight"].T
        dt, B, C = dbc[:, :r], dbc[:, r:r + n], dbc[:, r + n:]
        delta = F.softplus(dt @ sd[p + "dt_proj.weight"].T + sd[p + "dt_proj.bias"])  # (T, E)
        A = -torch.exp(sd[p + "A_log"])  # (E, N)
        h = torch.zeros_like(A)
        ys = []
        for t in range(T):
            h = torch.exp(delta[t, :, None] * A) * h + delta[t, :, None] * B[t] * u[t, :, None]
            ys.append(h @ C[t])
        y = (torch.stack(ys) + u * sd[p + "D"]) * F.silu(z)
        out = y @ sd[p + "out_proj.weight"].T
        if p + "out_proj.bias" in sd:
            out = out + sd[p + "out_proj.bias"]
        return out

    def forward(self, ids):
        sd, d = self.sd, self.c["d_model"]

        def norm(x, prefix):
            return F.layer_norm(x, (d,), sd[prefix + ".weight"], sd[prefix + ".bias"], 1e-5)

        x = sd["backbone.embedding.weight"][torch.tensor(ids, dtype=torch.long)]
        hidden = []
        for i in range(self.c["n_layer"]):
            p = f"backbone.layers.{i}."
            x = x + self.mixer(p + "mixer.", norm(x, p + "norm"))
            hidden.append(x)
        x = norm(x, "backbone.norm_f")
        hidden.append(x)
        return hidden, x @ self.head.T


def compute(name, model, config, sd, inputs, cross_tol):
    ref = MambaSsmReference(model)
    definition = DefinitionReference(config, sd)
    out = {}
    worst = [0.0]  # the largest mamba_ssm-vs-definitions difference seen

    def forward(ids, tag):
        hidden, logits = ref.forward(ids)
        d_hidden, d_logits = definition.forward(ids)
        for what, a, b in [(f"hidden.{j}", h, dh) for j, (h, dh) in enumerate(zip(hidden, d_hidden))] + \
                [("logits", logits, d_logits)]:
            err = float((a - b).norm() / b.norm())
            if err > cross_tol:
                raise SystemExit(f"{name}: {tag}.{what}: mamba_ssm and the definitions differ by {err:.2e}")
            worst[0] = max(worst[0], err)
        return hidden, logits

    for i, ids in enumerate(inputs["seqs"]):
        hidden, logits = forward(ids, f"seq{i}")
        out[f"seq{i}.input_ids"] = np.asarray(ids, dtype=np.int64)
        for j, h in enumerate(hidden):
            out[f"seq{i}.hidden.{j}"] = h.float().numpy()
        out[f"seq{i}.logits"] = logits.float().numpy()
    tokens = list(inputs["prompt"])
    for _ in range(NEW_TOKENS):
        _, logits = ref.forward(tokens)
        tokens.append(int(torch.argmax(logits[-1])))
    out["generate.prompt"] = np.asarray(inputs["prompt"], dtype=np.int64)
    out["generate.output"] = np.asarray(tokens, dtype=np.int64)
    out["generate.full_logits"] = forward(tokens, "generate")[1].float().numpy()
    print(f"{name}: mamba_ssm vs the float64 definitions: at most {worst[0]:.2e} (norm-wise relative)")
    return out


def draw_inputs(name, case):
    g = generator(name, "inputs")
    vocab = case["vocab_size"]  # ids from the real vocabulary, not the padding rows
    seqs = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in SEQ_LENGTHS]
    prompt = torch.randint(0, vocab, (PROMPT_LENGTH,), generator=g).tolist()
    return dict(seqs=seqs, prompt=prompt)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--check", action="store_true", help="recompute and compare; write nothing")
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--cross-tol", type=float, default=5e-6,
                    help="the most mamba_ssm's forward may differ from the float64 definitions")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    failed = False
    for name, case in CASES.items():
        folder = os.path.join(args.data_dir, name)
        if args.check:
            model, sd = load_model(folder)
            with open(os.path.join(folder, "config.json")) as f:
                config = json.load(f)
            old = load_file(os.path.join(folder, "reference.safetensors"))
            inputs = dict(seqs=[old[f"seq{i}.input_ids"].tolist() for i in range(len(SEQ_LENGTHS))],
                          prompt=old["generate.prompt"].tolist())
            new = compute(name, model, config, sd, inputs, args.cross_tol)
            if set(new) != set(old):
                print(f"{name}: tensor names differ: {sorted(set(new) ^ set(old))}")
                failed = True
            for k in sorted(set(new) & set(old)):
                a, b = new[k], old[k]
                if a.shape != b.shape:
                    print(f"{name}: {k}: shape {a.shape} vs {b.shape}")
                    failed = True
                elif a.dtype.kind == "i":
                    if not np.array_equal(a, b):
                        print(f"{name}: {k}: integers differ")
                        failed = True
                else:
                    err = float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-30))
                    bad = err > args.tol
                    failed |= bad
                    print(f"{name}: {k}: max rel {err:.2e}{'  FAIL' if bad else ''}")
            continue
        os.makedirs(folder, exist_ok=True)
        make_model(name, case).save_pretrained(folder)  # config.json + pytorch_model.bin
        model, sd = load_model(folder)  # the reference is made from what was saved
        with open(os.path.join(folder, "config.json")) as f:
            config = json.load(f)
        out = compute(name, model, config, sd, draw_inputs(name, case), args.cross_tol)
        save_file(out, os.path.join(folder, "reference.safetensors"))
        print(f"{name}: wrote {folder} ({len(out)} reference tensors)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
