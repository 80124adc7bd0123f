#!/usr/bin/env python3
"""How far bf16 weights on the device should move the bundled models' outputs.

`ssm::cuda::MambaModel::store_weights_bf16()` keeps the large matrices (embedding, in_proj,
x_proj, dt_proj, out_proj, LM head) in bf16; cuBLAS multiplies bf16 only by bf16, so every
GEMM input activation is rounded to bf16 first, while everything else stays float32. The
decoding step computes x_proj and dt_proj itself on float32 activations. This script
emulates that arithmetic in float32 with PyTorch on the CPU and prints, for each reference
checkpoint in tests/data:

  - the relative error (||out - ref|| / ||ref||) of every hidden state and of the logits
    against the float64 references, for the emulation and for a float32 forward on the same
    (bf16-rounded) weights without activation rounding;
  - the relative difference that the activation rounding alone makes (what the CUDA model
    test compares against the CPU's bf16 model), also over the 2048-token sequence;
  - along generate.output: the reference's smallest gap between its best and second-best
    logits, and the smallest gap left after the rounding (greedy decoding keeps the
    reference's tokens while that is positive).

A Mamba-2 checkpoint (HF `Mamba2ForCausalLM` form) is run through transformers' own
`Mamba2ForCausalLM` in float32 instead, with in_proj, out_proj, the embedding and the head
rounded to bf16 and the inputs of in_proj, out_proj and the head rounded by forward hooks
(the device's Mamba-2 layers round every GEMM input, decoding too).

These are the figures behind the bf16 tolerances in tests/cuda/test_cuda_model.cu. Needs
torch and safetensors (and transformers for Mamba-2):

    python3 tests/cuda/bf16_rounding_estimate.py [--data-dir tests/data] [CASE ...]
"""

import argparse
import json
import pathlib
import sys

import torch
from safetensors.torch import load_file

BF16_MATRICES = ("embeddings.weight", "in_proj.weight", "x_proj.weight", "dt_proj.weight",
                 "out_proj.weight", "lm_head.weight")


def load_weights(folder):
    """Every tensor of a checkpoint folder (one file or shards), as float32; the large
    matrices rounded to bf16 as store_weights_bf16() rounds them."""
    weights = {}
    for f in sorted(folder.glob("*.safetensors")):
        if f.name == "reference.safetensors":
            continue
        for name, t in load_file(str(f)).items():
            t = t.float()
            if name.endswith(BF16_MATRICES):
                t = t.to(torch.bfloat16).float()
            weights[name] = t
    return weights


class Emulation:
    def __init__(self, folder):
        cfg = json.loads((folder / "config.json").read_text())
        self.D, self.E = cfg["hidden_size"], cfg["intermediate_size"]
        self.N, self.K, self.R = cfg["state_size"], cfg["conv_kernel"], cfg["time_step_rank"]
        self.layers = cfg["num_hidden_layers"]
        self.eps = cfg["layer_norm_epsilon"]
        if not cfg.get("rms_norm", True):
            sys.exit(f"{folder}: only RMSNorm checkpoints are emulated")
        self.w = load_weights(folder)
        self.head = self.w.get("lm_head.weight", self.w["backbone.embeddings.weight"])

    def norm(self, x, weight):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + self.eps) * weight

    @staticmethod
    def gemm_input(x, rounded):
        return x.to(torch.bfloat16).float() if rounded else x

    def forward(self, ids, rounded, decode=False):
        """Residual stream after every layer, hidden state after norm_f, logits. `rounded`:
        activations rounded to bf16 before each GEMM; `decode`: x_proj and dt_proj on float32
        activations, as the fused decoding step computes them."""
        w, E, N, K, R = self.w, self.E, self.N, self.K, self.R
        T = len(ids)
        res = w["backbone.embeddings.weight"][ids]
        outs = []
        for layer in range(self.layers):
            p = f"backbone.layers.{layer}."
            m = p + "mixer."
            h = self.norm(res, w[p + "norm.weight"])
            xz = self.gemm_input(h, rounded) @ w[m + "in_proj.weight"].T
            x, z = xz[:, :E], xz[:, E:]
            taps = w[m + "conv1d.weight"][:, 0, :]  # (E, K)
            padded = torch.cat([torch.zeros(K - 1, E), x])
            xc = sum(taps[:, k] * padded[k:k + T] for k in range(K))
            if m + "conv1d.bias" in w:
                xc = xc + w[m + "conv1d.bias"]
            u = xc * torch.sigmoid(xc)
            small = rounded and not decode
            xdbl = self.gemm_input(u, small) @ w[m + "x_proj.weight"].T
            dt = self.gemm_input(xdbl[:, :R], small) @ w[m + "dt_proj.weight"].T
            dt = dt + w[m + "dt_proj.bias"]
            dt = torch.where(dt > 20, dt, torch.log1p(torch.exp(dt)))
            B, C = xdbl[:, R:R + N], xdbl[:, R + N:]
            A = -torch.exp(w[m + "A_log"])
            s = torch.zeros(E, N)
            ys = []
            for t in range(T):
                s = torch.exp(dt[t][:, None] * A) * s + (dt[t] * u[t])[:, None] * B[t][None, :]
                ys.append(s @ C[t] + w[m + "D"] * u[t])
            y = torch.stack(ys) * (z * torch.sigmoid(z))
            res = res + self.gemm_input(y, rounded) @ w[m + "out_proj.weight"].T
            outs.append(res)
        hidden = self.norm(res, w["backbone.norm_f.weight"])
        return outs, hidden, self.gemm_input(hidden, rounded) @ self.head.T


class Mamba2Emulation:
    """transformers' Mamba2ForCausalLM in float32 on the bf16-rounded matrices; with
    `rounded`, the inputs of in_proj, out_proj and the head rounded to bf16 too."""

    def __init__(self, folder):
        from transformers import Mamba2ForCausalLM
        self.model = Mamba2ForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        self.layers = self.model.config.num_hidden_layers
        self.rounded = False
        for name, param in self.model.named_parameters():
            if name.endswith(("in_proj.weight", "out_proj.weight", "embeddings.weight", "lm_head.weight")):
                param.data = param.data.to(torch.bfloat16).float()
        for name, module in self.model.named_modules():
            if name.endswith(("in_proj", "out_proj", "lm_head")):
                module.register_forward_pre_hook(self._round_input)
        self.outs = []  # the residual stream after every layer, as the references hold it
        for block in self.model.backbone.layers:
            block.register_forward_hook(lambda _m, _args, out: self.outs.append(out[0]))

    def _round_input(self, _module, args):
        if not self.rounded:
            return None
        return (args[0].to(torch.bfloat16).float(),) + tuple(args[1:])

    def forward(self, ids, rounded, decode=False):
        del decode  # every GEMM input is rounded in decoding as in prefill
        self.rounded = rounded
        self.outs = []
        out = self.model(ids[None, :], output_hidden_states=True)
        return self.outs, out.hidden_states[-1][0], out.logits[0]


def rel(a, b):
    return float((a - b).norm() / b.norm())


def smallest_gap(logits, tokens, start):
    """The smallest (logit of tokens[i]) - (best other logit) over the rows that predict
    tokens[start:]."""
    rows = logits[start - 1:len(tokens) - 1]
    chosen = rows.gather(1, tokens[start:, None])[:, 0]
    others = rows.clone()
    others.scatter_(1, tokens[start:, None], float("-inf"))
    return float((chosen - others.max(1).values).min())


def report(folder):
    config = json.loads((folder / "config.json").read_text())
    emu = Mamba2Emulation(folder) if config.get("model_type") == "mamba2" else Emulation(folder)
    ref = load_file(str(folder / "reference.safetensors"))
    print(f"== {folder.name}")
    i = 0
    while f"seq{i}.input_ids" in ref:
        ids = ref[f"seq{i}.input_ids"].long()
        outs_r, hidden_r, logits_r = emu.forward(ids, rounded=True)
        outs_f, hidden_f, logits_f = emu.forward(ids, rounded=False)
        refs = [ref[f"seq{i}.hidden.{j}"] for j in range(emu.layers + 1)]
        print(f"seq{i} ({len(ids)} tokens)")
        print("  vs reference, rounded activations: hidden "
              + " ".join(f"{rel(o, r):.1e}" for o, r in zip(outs_r + [hidden_r], refs))
              + f", logits {rel(logits_r, ref[f'seq{i}.logits']):.1e}")
        print("  vs reference, fp32 activations:    hidden "
              + " ".join(f"{rel(o, r):.1e}" for o, r in zip(outs_f + [hidden_f], refs))
              + f", logits {rel(logits_f, ref[f'seq{i}.logits']):.1e}")
        print("  rounding alone (rounded vs fp32):  hidden "
              + " ".join(f"{rel(a, b):.1e}" for a, b in zip(outs_r + [hidden_r], outs_f + [hidden_f]))
              + f", logits {rel(logits_r, logits_f):.1e}")
        i += 1
    if "long.input_ids" in ref:
        ids = ref["long.input_ids"].long()
        _, hidden_r, logits_r = emu.forward(ids, rounded=True)
        _, hidden_f, logits_f = emu.forward(ids, rounded=False)
        print(f"long ({len(ids)} tokens), rounding alone: hidden {rel(hidden_r, hidden_f):.1e}, "
              f"last logits {rel(logits_r[-1], logits_f[-1]):.1e}")
    if "generate.output" in ref:
        out = ref["generate.output"].long()
        full = ref["generate.full_logits"]
        start = len(ref["generate.prompt"])
        print(f"generate.output: reference's smallest top-1 gap {smallest_gap(full, out, start):.2e}")
        for decode in (False, True):
            _, _, logits = emu.forward(out, rounded=True, decode=decode)
            what = "x_proj/dt_proj fp32 (decoding)" if decode else "every GEMM input rounded (prefill)"
            print(f"  {what}: logits {rel(logits, full):.1e} (largest error "
                  f"{float((logits - full).abs().max()):.1e}), smallest gap left "
                  f"{smallest_gap(logits, out, start):.2e}")


def main():
    here = pathlib.Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=pathlib.Path, default=here.parent / "data")
    ap.add_argument("cases", nargs="*",
                    default=["mamba-tiny-bf16-sharded", "mamba-tiny"])
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    for case in args.cases:
        report(args.data_dir / case)


if __name__ == "__main__":
    main()
