#!/usr/bin/env python3
"""Make `mamba2-grouped-torch/`: a Mamba-2 model with n_groups > 1 and d_ssm < d_inner,
as an original `mamba_ssm` checkpoint, and its float64 reference outputs.

transformers' `Mamba2ForCausalLM` has no `d_ssm` (the gated MLP beside the SSM) and older
releases normalised the gated RMSNorm over all channels instead of per group, so this
reference is made from `mamba_ssm`'s own Python sources instead: its `ssd_minimal_discrete`
(the SSD, `modules/ssd_minimal.py`) and `rms_norm_ref` (`RMSNormGated`'s reference,
`ops/triton/layernorm_gated.py`), loaded from an unpacked `mamba_ssm` source tree (no CUDA
build needed):

    pip download mamba-ssm --no-deps --no-binary :all: -d /tmp/sdist
    tar xzf /tmp/sdist/mamba_ssm-*.tar.gz -C /tmp/sdist
    python3 tests/data/make_mamba2_grouped_reference.py --mamba-ssm-src /tmp/sdist/mamba_ssm-2.3.2.post1

The rest of the block (in_proj split [z0 | x0 | z | xBC | dt], the causal conv, softplus,
D, the gated MLP, out_proj) follows `mamba_ssm/modules/mamba2.py`'s forward, written here
in float64. Model: vocab 256, d_model 32, 2 layers, d_state 8, headdim 8, ngroups 2,
d_ssm 48 of d_inner 64 (6 heads, 3 per group; a 16-wide gated MLP), chunk 8, untied
lm_head, conv bias, no in/out bias. Tensors written (as in README.md): seq{i}.input_ids,
seq{i}.logits, seq{i}.hidden.{j}, generate.prompt / output / full_logits (greedy by full
forwards). Made with torch 2.15.0 and mamba_ssm 2.3.2.post1.
"""

import argparse
import importlib.util
import json
import os
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 4321
CONFIG = {
    "d_model": 32,
    "d_intermediate": 0,
    "n_layer": 2,
    "vocab_size": 256,
    "ssm_cfg": {"layer": "Mamba2", "d_state": 8, "d_conv": 4, "expand": 2, "headdim": 8, "ngroups": 2,
                "d_ssm": 48, "chunk_size": 8, "dt_limit": [0.0, float("inf")]},
    "attn_layer_idx": [],
    "attn_cfg": {},
    "rms_norm": True,
    "residual_in_fp32": True,
    "fused_add_norm": True,
    "pad_vocab_size_multiple": 8,
    "tie_embeddings": False,
}
SEQ_LENGTHS = (5, 8, 9, 30)
PROMPT_LENGTH, NEW_TOKENS = 6, 12
EPS = 1e-5


def load_mamba_ssm_refs(src):
    """ssd_minimal_discrete and rms_norm_ref from mamba_ssm's sources, without importing
    the package (whose __init__ needs the CUDA extension)."""
    for name in ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton", "mamba_ssm.ops.triton.ssd_combined"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["mamba_ssm.ops.triton.ssd_combined"].mamba_chunk_scan_combined = None

    def load(rel, name):
        spec = importlib.util.spec_from_file_location(name, os.path.join(src, rel))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    ssd = load("mamba_ssm/modules/ssd_minimal.py", "ssd_minimal")
    norm = load("mamba_ssm/ops/triton/layernorm_gated.py", "layernorm_gated")
    return ssd.ssd_minimal_discrete, norm.rms_norm_ref


def sizes():
    c = CONFIG["ssm_cfg"]
    D = CONFIG["d_model"]
    E = c["expand"] * D
    S = c["d_ssm"]
    H = S // c["headdim"]
    G, N, K = c["ngroups"], c["d_state"], c["d_conv"]
    return dict(D=D, E=E, S=S, H=H, P=c["headdim"], G=G, N=N, K=K, M=E - S, conv=S + 2 * G * N,
                in_width=2 * E + 2 * G * N + H, V=CONFIG["vocab_size"], L=CONFIG["n_layer"])


def make_weights(g):
    s = sizes()
    randn = lambda *shape, std=1.0: (torch.randn(*shape, generator=g, dtype=torch.float64) * std).float()  # noqa: E731
    w = {"backbone.embedding.weight": randn(s["V"], s["D"], std=0.5),
         "lm_head.weight": randn(s["V"], s["D"], std=0.2),
         "backbone.norm_f.weight": 1 + randn(s["D"], std=0.2)}
    for i in range(s["L"]):
        p = f"backbone.layers.{i}."
        w[p + "norm.weight"] = 1 + randn(s["D"], std=0.2)
        w[p + "mixer.in_proj.weight"] = randn(s["in_width"], s["D"], std=s["D"] ** -0.5)
        w[p + "mixer.conv1d.weight"] = randn(s["conv"], 1, s["K"], std=0.5)
        w[p + "mixer.conv1d.bias"] = randn(s["conv"], std=0.1)
        dt = torch.exp(torch.rand(s["H"], generator=g, dtype=torch.float64) * (np.log(0.1) - np.log(1e-3)) + np.log(1e-3))
        w[p + "mixer.dt_bias"] = (dt + torch.log(-torch.expm1(-dt))).float() + randn(s["H"], std=0.3)
        w[p + "mixer.A_log"] = torch.log(torch.arange(1, s["H"] + 1, dtype=torch.float64)).float() + randn(s["H"], std=0.3)
        w[p + "mixer.D"] = 1 + randn(s["H"], std=0.5)
        w[p + "mixer.norm.weight"] = 1 + randn(s["S"], std=0.2)
        w[p + "mixer.out_proj.weight"] = randn(s["D"], s["E"], std=s["E"] ** -0.5)
    return w


def rmsnorm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w


def forward(w, ids, ssd_minimal_discrete, rms_norm_ref):
    """Float64 forward of one sequence: (logits [T, V], hidden [L + 1] x [T, D])."""
    s = sizes()
    c = CONFIG["ssm_cfg"]
    W = {k: v.double() for k, v in w.items()}
    T = len(ids)
    res = W["backbone.embedding.weight"][torch.as_tensor(ids)]
    hidden = []
    chunk = c["chunk_size"]
    pad = (chunk - T % chunk) % chunk
    for i in range(s["L"]):
        p = f"backbone.layers.{i}."
        u = rmsnorm(res, W[p + "norm.weight"])
        zxbcdt = u @ W[p + "mixer.in_proj.weight"].T
        M, S, G, N, H, P = s["M"], s["S"], s["G"], s["N"], s["H"], s["P"]
        z0, x0, z, xBC, dt = torch.split(zxbcdt, [M, M, S, S + 2 * G * N, H], dim=-1)
        conv = F.conv1d(xBC.T[None], W[p + "mixer.conv1d.weight"], W[p + "mixer.conv1d.bias"],
                        padding=s["K"] - 1, groups=s["conv"])[0, :, :T].T
        xBC = F.silu(conv)
        x, B, C = torch.split(xBC, [S, G * N, G * N], dim=-1)
        dt = F.softplus(dt + W[p + "mixer.dt_bias"])  # dt_limit (0, inf): no clamp
        A = -torch.exp(W[p + "mixer.A_log"])
        # Heads of a group are contiguous: head h uses group h // (H / G).
        Bh = B.view(T, G, 1, N).expand(T, G, H // G, N).reshape(T, H, N)
        Ch = C.view(T, G, 1, N).expand(T, G, H // G, N).reshape(T, H, N)
        xh = x.view(T, H, P)
        padded = lambda t: F.pad(t, [0, 0] * (t.dim() - 1) + [0, pad])[None]  # noqa: E731
        X = padded(xh * dt[..., None])
        Ad = padded(A * dt)
        y, _ = ssd_minimal_discrete(X, Ad, padded(Bh), padded(Ch), chunk)
        y = y[0, :T] + xh * W[p + "mixer.D"][:, None]
        y = y.reshape(T, S)
        y = rms_norm_ref(y, W[p + "mixer.norm.weight"], None, z=z, eps=1e-5, group_size=S // G,
                         norm_before_gate=False, upcast=False)
        if M > 0:
            y = torch.cat([F.silu(z0) * x0, y], dim=-1)
        res = res + y @ W[p + "mixer.out_proj.weight"].T
        hidden.append(res.clone())
    out = rmsnorm(res, W["backbone.norm_f.weight"])
    hidden.append(out)
    return out @ W["lm_head.weight"].T, hidden


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mamba-ssm-src", required=True, help="an unpacked mamba_ssm source tree")
    ap.add_argument("--out", default=os.path.join(HERE, "mamba2-grouped-torch"))
    args = ap.parse_args()
    ssd_minimal_discrete, rms_norm_ref = load_mamba_ssm_refs(args.mamba_ssm_src)
    g = torch.Generator().manual_seed(SEED)
    w = make_weights(g)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as fh:
        fh.write(json.dumps(CONFIG, indent=2) + "\n")  # dt_limit's inf is written as Infinity
    torch.save(w, os.path.join(args.out, "pytorch_model.bin"))

    f32 = lambda t: t.detach().numpy().astype(np.float32)  # noqa: E731
    ids_of = lambda n: torch.randint(1, CONFIG["vocab_size"], (n,), generator=g).numpy().astype(np.int64)  # noqa: E731
    out = {}
    with torch.no_grad():
        for i, n in enumerate(SEQ_LENGTHS):
            ids = ids_of(n)
            logits, hidden = forward(w, ids, ssd_minimal_discrete, rms_norm_ref)
            out[f"seq{i}.input_ids"] = ids
            out[f"seq{i}.logits"] = f32(logits)
            for j, h in enumerate(hidden):
                out[f"seq{i}.hidden.{j}"] = f32(h)
        seq = ids_of(PROMPT_LENGTH)
        out["generate.prompt"] = seq.copy()
        for _ in range(NEW_TOKENS):
            logits, _ = forward(w, seq, ssd_minimal_discrete, rms_norm_ref)
            seq = np.append(seq, np.int64(int(logits[-1].argmax())))
        out["generate.output"] = seq
        out["generate.full_logits"] = f32(forward(w, seq, ssd_minimal_discrete, rms_norm_ref)[0])
    path = os.path.join(args.out, "reference.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in out.items()}, path)
    os.chmod(path, 0o644)
    print(f"wrote {args.out} with torch {torch.__version__}")


if __name__ == "__main__":
    main()
