#!/usr/bin/env python3
"""(Re)create the SAMBA hybrid test checkpoints and their reference outputs in tests/data/.

SAMBA checkpoints come from lit-gpt training code: a `lit_config.json` with the lit-gpt
`Config` fields and a `lit_model.pth` (torch.save of {"model": state_dict, ...}) whose
tensors are named `transformer.wte.weight`, `transformer.h.{i}.norm_1.weight`,
`transformer.h.{i}.attn.*` (Mamba-1 tensors on Mamba layers; the fused, per-group
`attn.attn.weight` and `attn.proj.weight` on attention layers), `transformer.h.{i}.norm_2.weight`,
`transformer.h.{i}.mlp.swiglu.{w1,w2,w3}.weight`, `transformer.ln_f.weight` and a tied
`lm_head.weight`.

Two cases, one folder each, both with seeded random weights:

  samba-tiny      lit_config.json + lit_model.pth (as lit-gpt saves them); vocab 300
                  padded to 320, n_embd 64, 4 layers (Mamba, attention, Mamba, attention),
                  4 query heads sharing 2 key/value groups of head size 16, RoPE on the
                  whole head, window 8 (so every sequence longer than 8 tokens, and the
                  generation, run past it), SwiGLU 96; sequences of 1/7/8/9/40/300 tokens
  samba-tiny-mha  config.json (the same lit-gpt fields) + model.safetensors in lit-gpt
                  names without the tied lm_head; n_embd 48, 3 layers (M, A, M), 3 heads
                  of 16 (multi-head), RoPE on half of each head, window 2048 (wider than
                  every sequence), SwiGLU 80; sequences of 5/70 tokens

The reference forward is written here in PyTorch, float64, from the definitions: RMSNorm
x·rsqrt(mean(x²)+eps)·w; each block x += mixer(norm_1(x)); x += w3(silu(w1 h)·(w2 h)) with
h = norm_2(x); the Mamba layers are transformers' `MambaMixer` (its sequential CPU path); the
attention layers split the fused projection as lit-gpt does (view(T, groups, q_per_kv + 2,
head_size)), rotate the first rotary_percentage·head_size features of q and k "rotate half"
style at positions 0, 1, ... with theta = 1/10000^(2i/n) and the angles computed in float32
(as lit-gpt's rope cache does), and attend causally to the last `local_window` tokens
(itself included) with scale 1/sqrt(head_size).

Tensors written to reference.safetensors (the names the Mamba references use):
  seq{i}.input_ids     I64 [L]
  seq{i}.hidden.{j}    F32 [L, n_embd]: the residual stream after block j; j == n_layer: after ln_f
  seq{i}.logits        F32 [L, padded vocab]
  generate.prompt      I64 [12]
  generate.output      I64 [36]: the prompt and 24 greedy tokens (each from a full forward)
  generate.full_logits F32 [36, padded vocab]: one full forward over generate.output

Modes: default (re)writes both folders; --check recomputes everything from the shipped
checkpoints and compares with reference.safetensors (max-norm relative error ≤ --tol,
integer tensors exactly), writing nothing.

Requirements: torch, transformers, safetensors, numpy. CPU only, offline.
  python3 tests/data/make_samba_reference.py
  python3 tests/data/make_samba_reference.py --check
"""

import argparse
import json
import math
import os
import sys
import zlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

SEED = 4321
PROMPT_LENGTH = 12
NEW_TOKENS = 24

LIT_COMMON = dict(block_size=4096, padding_multiple=64, parallel_residual=False, bias=False,
                  _norm_class="FusedRMSNorm", norm_eps=1e-5, _mlp_class="LLaMAMLP",
                  mb_per_layer=2, mamba_init=True, full_per_layer=1000000, condense_ratio=1)

CASES = {
    "samba-tiny": dict(
        lit=dict(name="samba-tiny", vocab_size=300, padded_vocab_size=320, n_layer=4, n_head=4,
                 n_query_groups=2, n_embd=64, head_size=16, rotary_percentage=1.0,
                 intermediate_size=96, local_window=8),
        format="lit", seq_lengths=(1, 7, 8, 9, 40, 300)),
    "samba-tiny-mha": dict(
        lit=dict(name="samba-tiny-mha", vocab_size=256, padded_vocab_size=256, n_layer=3, n_head=3,
                 n_query_groups=3, n_embd=48, head_size=16, rotary_percentage=0.5,
                 intermediate_size=80, local_window=2048),
        format="safetensors", seq_lengths=(5, 70)),
}


def generator(name, purpose):
    g = torch.Generator()
    g.manual_seed(SEED * 1_000_003 + zlib.crc32(f"{name}/{purpose}".encode()))
    return g


def is_mamba(cfg, i):
    return cfg["mb_per_layer"] > 0 and i % cfg["mb_per_layer"] == 0


def mamba_sizes(cfg):
    d = cfg["n_embd"]
    return dict(d=d, e=2 * d, n=16, k=4, r=math.ceil(d / 16))


# ------------------------------------------------------------------------------ weights

def make_weights(name, cfg):
    """A lit-gpt state dict with seeded random float32 weights, nothing at a tidy value."""
    g = generator(name, "weights")

    def randn(*shape, std=1.0, mean=0.0):
        return (mean + std * torch.randn(*shape, generator=g, dtype=torch.float32)).contiguous()

    d, V = cfg["n_embd"], cfg["padded_vocab_size"]
    H, G, hs, I = cfg["n_head"], cfg["n_query_groups"], cfg["head_size"], cfg["intermediate_size"]
    sd = {"transformer.wte.weight": randn(V, d, std=0.3)}
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        sd[p + "norm_1.weight"] = randn(d, std=0.2, mean=1.0)
        sd[p + "norm_2.weight"] = randn(d, std=0.2, mean=1.0)
        if is_mamba(cfg, i):
            m = mamba_sizes(cfg)
            e, n, k, r = m["e"], m["n"], m["k"], m["r"]
            sd[p + "attn.in_proj.weight"] = randn(2 * e, d, std=d ** -0.5)
            sd[p + "attn.conv1d.weight"] = randn(e, 1, k, std=k ** -0.5)
            sd[p + "attn.conv1d.bias"] = randn(e, std=0.1)
            sd[p + "attn.x_proj.weight"] = randn(r + 2 * n, e, std=e ** -0.5)
            sd[p + "attn.dt_proj.weight"] = randn(e, r, std=r ** -0.5)
            dt = torch.exp(torch.rand(e, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            sd[p + "attn.dt_proj.bias"] = (dt + torch.log(-torch.expm1(-dt))).float() + randn(e, std=0.3)
            a = torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(e, 1)
            sd[p + "attn.A_log"] = (a + randn(e, n, std=0.3)).contiguous()
            sd[p + "attn.D"] = randn(e, std=0.5, mean=1.0)
            sd[p + "attn.out_proj.weight"] = randn(d, e, std=e ** -0.5)
        else:
            sd[p + "attn.attn.weight"] = randn((H + 2 * G) * hs, d, std=1.5 * d ** -0.5)
            sd[p + "attn.proj.weight"] = randn(d, H * hs, std=(H * hs) ** -0.5)
        sd[p + "mlp.swiglu.w1.weight"] = randn(I, d, std=d ** -0.5)
        sd[p + "mlp.swiglu.w2.weight"] = randn(I, d, std=d ** -0.5)
        sd[p + "mlp.swiglu.w3.weight"] = randn(d, I, std=I ** -0.5)
    sd["transformer.ln_f.weight"] = randn(d, std=0.2, mean=1.0)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # tied: one storage
    return sd


def save_case(folder, case, cfg, sd):
    os.makedirs(folder, exist_ok=True)
    for f in ("lit_config.json", "lit_model.pth", "config.json", "model.safetensors"):
        if os.path.exists(os.path.join(folder, f)):
            os.remove(os.path.join(folder, f))
    if case["format"] == "lit":
        with open(os.path.join(folder, "lit_config.json"), "w") as f:
            json.dump(cfg, f, indent=1, sort_keys=True)
        torch.save({"model": sd, "iter_num": 0, "step_count": 0}, os.path.join(folder, "lit_model.pth"))
    else:
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1, sort_keys=True)
        arrays = {k: v.numpy() for k, v in sd.items() if k != "lm_head.weight"}
        save_file(arrays, os.path.join(folder, "model.safetensors"))


def load_case(folder, case):
    if case["format"] == "lit":
        with open(os.path.join(folder, "lit_config.json")) as f:
            cfg = json.load(f)
        sd = torch.load(os.path.join(folder, "lit_model.pth"), weights_only=True)["model"]
    else:
        with open(os.path.join(folder, "config.json")) as f:
            cfg = json.load(f)
        sd = {k: torch.from_numpy(v.copy()) for k, v in load_file(os.path.join(folder, "model.safetensors")).items()}
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
    return cfg, sd


# ------------------------------------------------------------------------------ reference

def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_tables(T, n_elem):
    """cos, sin (T, n_elem/2) in float64 of the float32 angles lit-gpt's rope cache uses."""
    theta = 1.0 / (10000 ** (torch.arange(0, n_elem, 2) / n_elem))  # float32
    angles = torch.outer(torch.arange(T, dtype=torch.float32), theta)  # float32
    return torch.cos(angles.double()), torch.sin(angles.double())


def apply_rope(t, cos, sin, n_elem):
    """t (T, heads, hs): rotate-half RoPE on the first n_elem features."""
    if n_elem == 0:
        return t
    r, rest = t[..., :n_elem], t[..., n_elem:]
    x1, x2 = r.chunk(2, dim=-1)
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s, rest), dim=-1)


def attention(x, w_attn, w_proj, cfg):
    T = x.shape[0]
    H, G, hs = cfg["n_head"], cfg["n_query_groups"], cfg["head_size"]
    q_per_kv = H // G
    qkv = (x @ w_attn.T).view(T, G, q_per_kv + 2, hs)
    q = qkv[:, :, :q_per_kv].reshape(T, H, hs)  # head h = g * q_per_kv + j
    k = qkv[:, :, q_per_kv]
    v = qkv[:, :, q_per_kv + 1]
    n_elem = int(cfg["rotary_percentage"] * hs)
    cos, sin = rope_tables(T, n_elem)
    q, k = apply_rope(q, cos, sin, n_elem), apply_rope(k, cos, sin, n_elem)
    k = k.repeat_interleave(q_per_kv, dim=1)
    v = v.repeat_interleave(q_per_kv, dim=1)
    scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hs)
    t = torch.arange(T)[:, None]
    s = torch.arange(T)[None, :]
    allowed = s <= t
    if cfg["local_window"] > 0:
        allowed &= (t - s) < cfg["local_window"]
    p = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    y = torch.einsum("hts,shd->thd", p, v).reshape(T, H * hs)
    return y @ w_proj.T


class Reference:
    def __init__(self, cfg, sd):
        from transformers import MambaConfig
        from transformers.models.mamba.modeling_mamba import MambaMixer

        self.cfg = cfg
        self.sd = {k: v.double() for k, v in sd.items()}
        self.mixers = {}
        m = mamba_sizes(cfg)
        hf = MambaConfig(hidden_size=m["d"], state_size=m["n"], conv_kernel=m["k"], expand=2,
                         time_step_rank=m["r"], use_conv_bias=True, use_bias=False, hidden_act="silu",
                         layer_norm_epsilon=cfg["norm_eps"], use_mambapy=False)
        for i in range(cfg["n_layer"]):
            if not is_mamba(cfg, i):
                continue
            mixer = MambaMixer(hf, layer_idx=i).double().eval()
            p = f"transformer.h.{i}.attn."
            mixer.load_state_dict({k[len(p):]: v for k, v in self.sd.items() if k.startswith(p)}, strict=True)
            self.mixers[i] = mixer

    @torch.no_grad()
    def forward(self, ids):
        cfg, sd, eps = self.cfg, self.sd, self.cfg["norm_eps"]
        x = sd["transformer.wte.weight"][torch.tensor(ids, dtype=torch.long)]
        hidden = []
        for i in range(cfg["n_layer"]):
            p = f"transformer.h.{i}."
            h = rms_norm(x, sd[p + "norm_1.weight"], eps)
            if is_mamba(cfg, i):
                x = x + self.mixers[i](h[None])[0]
            else:
                x = x + attention(h, sd[p + "attn.attn.weight"], sd[p + "attn.proj.weight"], cfg)
            h = rms_norm(x, sd[p + "norm_2.weight"], eps)
            a = F.silu(h @ sd[p + "mlp.swiglu.w1.weight"].T) * (h @ sd[p + "mlp.swiglu.w2.weight"].T)
            x = x + a @ sd[p + "mlp.swiglu.w3.weight"].T
            hidden.append(x)
        x = rms_norm(x, sd["transformer.ln_f.weight"], eps)
        hidden.append(x)
        return hidden, x @ sd["lm_head.weight"].T


def compute(name, case, cfg, sd, inputs):
    ref = Reference(cfg, sd)
    out = {}
    for i, ids in enumerate(inputs["seqs"]):
        hidden, logits = ref.forward(ids)
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
    out["generate.full_logits"] = ref.forward(tokens)[1].float().numpy()
    return out


def draw_inputs(name, case, cfg):
    g = generator(name, "inputs")
    vocab = cfg["vocab_size"]  # ids from the real vocabulary, not the padding rows
    seqs = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in case["seq_lengths"]]
    prompt = torch.randint(0, vocab, (PROMPT_LENGTH,), generator=g).tolist()
    return dict(seqs=seqs, prompt=prompt)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--check", action="store_true", help="recompute and compare; write nothing")
    ap.add_argument("--tol", type=float, default=1e-6)
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    failed = False
    for name, case in CASES.items():
        folder = os.path.join(args.data_dir, name)
        if args.check:
            cfg, sd = load_case(folder, case)
            old = load_file(os.path.join(folder, "reference.safetensors"))
            inputs = dict(seqs=[old[f"seq{i}.input_ids"].tolist() for i in range(len(case["seq_lengths"]))],
                          prompt=old["generate.prompt"].tolist())
            new = compute(name, case, cfg, sd, inputs)
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
        cfg = dict(LIT_COMMON, **case["lit"])
        sd = make_weights(name, cfg)
        save_case(folder, case, cfg, sd)
        cfg, sd = load_case(folder, case)  # the reference is made from what was saved
        out = compute(name, case, cfg, sd, draw_inputs(name, case, cfg))
        save_file(out, os.path.join(folder, "reference.safetensors"))
        print(f"{name}: wrote {folder} ({len(out)} reference tensors)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
