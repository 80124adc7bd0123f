#!/usr/bin/env python3
"""(Re)create the training references in tests/data/: what PyTorch does, for the C++
tests to match.

  adamw   tests/data/train/adamw.safetensors — `torch.optim.AdamW` for 5 steps on four
          small parameter tensors with fixed seeded gradients, in two configurations,
          plus transformers' learning-rate schedule factors.
  grad    <case>/grad/ — inputs in `ssm-grad`'s format and PyTorch autograd gradients
          (float64) of the three training losses w.r.t. every parameter of
          transformers' `MambaForCausalLM` (`FalconMambaForCausalLM`,
          `Mamba2ForCausalLM`) loaded from <case>.

Needs torch, transformers (5.x), safetensors and numpy; runs on the CPU, no network.
Both modes are deterministic (seeded); rerunning rewrites the same files (the grad
inputs are read back from <case>/grad/ when present, unless --new-inputs).

    python3 tests/data/make_training_reference.py adamw
    python3 tests/data/make_training_reference.py grad [--cases mambabyte-tiny falcon-mamba-tiny mamba2-tiny samba-tiny] [--new-inputs]
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
# Gradients of whole models
# ---------------------------------------------------------------------------------------

TEMPERATURE = 0.05  # InfoNCE temperature of the references (Tevatron recipes use 0.01)
LM_LENGTHS = [1, 9, 23, 40, 3]
N_QUERIES, GROUP = 3, 4
N_GROUPS = 3


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(", ", ": ")) + "\n")


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def make_inputs(folder, vocab, hidden, seed):
    """Seeded inputs in ssm-grad's formats."""
    rng = np.random.default_rng(seed)
    ids = lambda n: [int(x) for x in rng.integers(0, vocab, n)]
    write_jsonl(os.path.join(folder, "lm.jsonl"), [{"ids": ids(n)} for n in LM_LENGTHS])
    write_jsonl(os.path.join(folder, "infonce.jsonl"),
                [{"query": ids(int(rng.integers(3, 13))),
                  "passages": [ids(int(rng.integers(5, 31))) for _ in range(GROUP)]} for _ in range(N_QUERIES)])
    write_jsonl(os.path.join(folder, "listwise.jsonl"),
                [{"pairs": [ids(int(rng.integers(5, 31))) for _ in range(GROUP)]} for _ in range(N_GROUPS)])
    head = {"score.weight": torch.tensor(rng.normal(0, 0.3, (1, hidden)), dtype=torch.float32),
            "score.bias": torch.tensor(rng.normal(0, 0.1, (1,)), dtype=torch.float32)}
    save_file(head, os.path.join(folder, "head.safetensors"))


class Transformers:
    """The losses through transformers' MambaForCausalLM, converted to float64."""

    def __init__(self, case_dir):
        from transformers import FalconMambaForCausalLM, Mamba2ForCausalLM, MambaForCausalLM

        model_type = json.load(open(os.path.join(case_dir, "config.json")))["model_type"]
        cls = {"falcon_mamba": FalconMambaForCausalLM, "mamba2": Mamba2ForCausalLM}.get(model_type, MambaForCausalLM)
        self.model = cls.from_pretrained(case_dir).to(torch.float64).eval()
        self.params = dict(self.model.named_parameters())  # a tied lm_head appears once, as the embedding

    def hidden(self, ids):  # (L, D) after norm_f
        out = self.model.backbone(input_ids=torch.tensor([ids]), use_cache=False)
        return out.last_hidden_state[0]

    def logits(self, ids):
        return self.model.lm_head(self.hidden(ids))


def mamba_mixer_f64(h, p, R, N, mixer_eps=None):
    """One Mamba-1 mixer from the definitions, in the dtype of `h` (L, D), with a
    sequential scan: in_proj → [x | z], causal depthwise conv + SiLU, x_proj → (dt_low, B,
    C) (Falcon-Mamba: each x / sqrt(mean(x²) + mixer_eps)), Δ = softplus(dt_proj(dt_low))
    with PyTorch's threshold 20, s_t = exp(Δ_t A) s_{t-1} + Δ_t B_t u_t, y_t = C_t s_t + D u_t,
    gated by SiLU(z), out_proj. `p(name)` gives the mixer's tensor `name`."""
    L = h.shape[0]
    xz = h @ p("in_proj.weight").T
    E = xz.shape[1] // 2
    x, z = xz[:, :E], xz[:, E:]
    w = p("conv1d.weight")[:, 0, :]  # (E, K)
    K = w.shape[1]
    xp = torch.cat([torch.zeros(K - 1, E, dtype=x.dtype), x])
    xc = p("conv1d.bias") + sum(w[:, k] * xp[k:k + L] for k in range(K))
    u = xc * torch.sigmoid(xc)
    xd = u @ p("x_proj.weight").T
    dt_low, B, C = xd[:, :R], xd[:, R:R + N], xd[:, R + N:]
    if mixer_eps is not None:
        dt_low, B, C = (t * torch.rsqrt((t * t).mean(-1, keepdim=True) + mixer_eps) for t in (dt_low, B, C))
    v = dt_low @ p("dt_proj.weight").T + p("dt_proj.bias")
    dt = torch.where(v > 20, v, torch.log1p(torch.exp(torch.clamp(v, max=20))))
    A = -torch.exp(p("A_log"))
    s = torch.zeros(E, N, dtype=x.dtype)
    ys = []
    for t in range(L):
        s = torch.exp(dt[t, :, None] * A) * s + dt[t, :, None] * B[t][None, :] * u[t, :, None]
        ys.append(s @ C[t] + p("D") * u[t])
    return (torch.stack(ys) * (z * torch.sigmoid(z))) @ p("out_proj.weight").T


def mamba2_mixer_f64(h, p, cfg):
    """One Mamba-2 mixer from the definitions, in the dtype of `h` (L, D), with a
    sequential scan: in_proj → [z0 | x0 | z | xBC | dt] (z0, x0 empty unless d_ssm < inner),
    causal depthwise conv + SiLU over xBC = [x | B | C], Δ = clamp(softplus(dt + dt_bias),
    time_step_limit), per head h of group g = h // (H / G): S_h = exp(Δ A_h) S_h +
    Δ x_h B_gᵀ, y_h = S_h C_g + D_h x_h; then y · silu(z) RMS-normalised per group of
    d_ssm / G channels times norm.weight; [silu(z0) · x0 | y] through out_proj."""
    L = h.shape[0]
    H, P, N, G = cfg["num_heads"], cfg["head_dim"], cfg["state_size"], cfg["n_groups"]
    E = cfg.get("intermediate_size") or cfg["expand"] * cfg["hidden_size"]
    S = H * P
    M = E - S
    eps = cfg["layer_norm_epsilon"]
    lo, hi = cfg.get("time_step_limit", [0.0, float("inf")])
    hi = float("inf") if isinstance(hi, dict) else hi
    zx = h @ p("in_proj.weight").T
    if cfg.get("use_bias"):
        zx = zx + p("in_proj.bias")
    z0, x0, z, xbc, dt = torch.split(zx, [M, M, S, S + 2 * G * N, H], dim=-1)
    w = p("conv1d.weight")[:, 0, :]
    K = w.shape[1]
    xp = torch.cat([torch.zeros(K - 1, xbc.shape[1], dtype=h.dtype), xbc])
    xc = sum(w[:, k] * xp[k:k + L] for k in range(K))
    if cfg.get("use_conv_bias", True):
        xc = xc + p("conv1d.bias")
    xbc = xc * torch.sigmoid(xc)
    x, B, C = torch.split(xbc, [S, G * N, G * N], dim=-1)
    v = dt + p("dt_bias")
    dt = torch.clamp(torch.where(v > 20, v, torch.log1p(torch.exp(torch.clamp(v, max=20)))), lo, hi)
    A = -torch.exp(p("A_log"))
    Dh = p("D")
    states = [torch.zeros(P, N, dtype=h.dtype) for _ in range(H)]
    ys = []
    for t in range(L):
        row = []
        for hh in range(H):
            g = hh // (H // G)
            xh = x[t, hh * P:(hh + 1) * P]
            Bg, Cg = B[t, g * N:(g + 1) * N], C[t, g * N:(g + 1) * N]
            states[hh] = torch.exp(dt[t, hh] * A[hh]) * states[hh] + dt[t, hh] * torch.outer(xh, Bg)
            row.append(states[hh] @ Cg + Dh[hh] * xh)
        ys.append(torch.cat(row))
    y = torch.stack(ys) * (z * torch.sigmoid(z))
    yg = y.view(L, G, S // G)
    y = (yg * torch.rsqrt((yg * yg).mean(-1, keepdim=True) + eps)).view(L, S) * p("norm.weight")
    if M > 0:
        y = torch.cat([z0 * torch.sigmoid(z0) * x0, y], dim=-1)
    out = y @ p("out_proj.weight").T
    if cfg.get("use_bias"):
        out = out + p("out_proj.bias")
    return out


class Independent:
    """The same model written from the definitions in plain float64 torch (a sequential
    scan, no float32 step anywhere), sharing nothing with transformers but the weights."""

    def __init__(self, case_dir):
        cfg = json.load(open(os.path.join(case_dir, "config.json")))
        self.eps = cfg["layer_norm_epsilon"]
        self.n_layers = cfg["num_hidden_layers"]
        self.R, self.N = cfg.get("time_step_rank"), cfg["state_size"]
        self.tied = cfg.get("tie_word_embeddings", True)
        # Falcon-Mamba: dt_low, B and C each x / sqrt(mean(x²) + mixer_rms_eps), no weight.
        self.mixer_eps = cfg.get("mixer_rms_eps", 1e-6) if cfg["model_type"] == "falcon_mamba" else None
        self.cfg = cfg
        self.mamba2 = cfg["model_type"] == "mamba2"
        weights = load_file(os.path.join(case_dir, "model.safetensors"))
        self.params = {k: v.to(torch.float64).clone().requires_grad_(True) for k, v in weights.items()
                       if not (self.tied and k == "lm_head.weight")}

    def rms(self, x, w):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + self.eps) * w

    def hidden(self, ids):
        P = self.params
        h = P["backbone.embeddings.weight"][torch.tensor(ids)]
        L = h.shape[0]
        for i in range(self.n_layers):
            p = lambda n: P[f"backbone.layers.{i}.mixer.{n}"]
            normed = self.rms(h, P[f"backbone.layers.{i}.norm.weight"])
            if self.mamba2:
                h = h + mamba2_mixer_f64(normed, p, self.cfg)
            else:
                h = h + mamba_mixer_f64(normed, p, self.R, self.N, self.mixer_eps)
        return self.rms(h, P["backbone.norm_f.weight"])

    def logits(self, ids):
        head = self.params["backbone.embeddings.weight"] if self.tied else self.params["lm_head.weight"]
        return self.hidden(ids) @ head.T


def samba_case(case_dir):
    """A SAMBA folder's lit-gpt config and float32 state dict (lit_model.pth or
    model.safetensors in lit-gpt names; the tied lm_head is the embedding)."""
    if os.path.exists(os.path.join(case_dir, "lit_config.json")):
        cfg = json.load(open(os.path.join(case_dir, "lit_config.json")))
        sd = torch.load(os.path.join(case_dir, "lit_model.pth"), weights_only=True)["model"]
    else:
        cfg = json.load(open(os.path.join(case_dir, "config.json")))
        sd = load_file(os.path.join(case_dir, "model.safetensors"))
    sd = {k: v for k, v in sd.items() if k != "lm_head.weight"}
    return cfg, sd


class Samba:
    """A SAMBA hybrid from its lit-gpt checkpoint, float64, from the definitions (the same
    as tests/data/make_samba_reference.py's forward): x += mixer(rms(x)); x += w3(silu(w1 h)
    ⊙ w2 h) with h = rms(x); Mamba layers (i % mb_per_layer == 0) either written out with a
    sequential scan or, with `hf_mixer`, transformers' MambaMixer run on the same tensors
    (torch.func.functional_call); attention layers split lit-gpt's fused, grouped
    projection, rotate "rotate half" style with float32 angles, attend to the last
    `local_window` positions. Gradients are reported under the library's names."""

    def __init__(self, case_dir, hf_mixer=False):
        self.cfg, sd = samba_case(case_dir)
        self.params = {k: v.to(torch.float64).clone().requires_grad_(True) for k, v in sd.items()}
        self.eps = self.cfg["norm_eps"]
        d = self.cfg["n_embd"]
        self.R, self.N = math.ceil(d / 16), 16
        self.mixer = None
        if hf_mixer:
            from transformers import MambaConfig
            from transformers.models.mamba.modeling_mamba import MambaMixer

            hf = MambaConfig(hidden_size=d, state_size=self.N, conv_kernel=4, expand=2, time_step_rank=self.R,
                             use_conv_bias=True, use_bias=False, hidden_act="silu", layer_norm_epsilon=self.eps,
                             use_mambapy=False)
            self.mixer = MambaMixer(hf, layer_idx=0).double().eval()

    def is_mamba(self, i):
        return self.cfg["mb_per_layer"] > 0 and i % self.cfg["mb_per_layer"] == 0

    def rms(self, x, w):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + self.eps) * w

    def mamba(self, h, p):
        if self.mixer is not None:
            names = ("in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight",
                     "dt_proj.bias", "A_log", "D", "out_proj.weight")
            return torch.func.functional_call(self.mixer, {n: p(n) for n in names}, (h[None],))[0]
        return mamba_mixer_f64(h, p, self.R, self.N)

    def attention(self, h, w_attn, w_proj):
        cfg, T = self.cfg, h.shape[0]
        H, G, hs = cfg["n_head"], cfg["n_query_groups"], cfg["head_size"]
        qpk = H // G
        qkv = (h @ w_attn.T).view(T, G, qpk + 2, hs)
        q, k, v = qkv[:, :, :qpk].reshape(T, H, hs), qkv[:, :, qpk], qkv[:, :, qpk + 1]
        n = int(cfg["rotary_percentage"] * hs)
        theta = 1.0 / (10000 ** (torch.arange(0, n, 2) / n))  # float32, as lit-gpt's cache
        ang = torch.outer(torch.arange(T, dtype=torch.float32), theta).double()
        cos, sin = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]

        def rope(t):
            x1, x2, rest = t[..., :n // 2], t[..., n // 2:n], t[..., n:]
            return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest), dim=-1)

        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(qpk, dim=1), v.repeat_interleave(qpk, dim=1)
        scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hs)
        t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
        allowed = (s <= t) & ((t - s) < cfg["local_window"])
        prob = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        return torch.einsum("hts,shd->thd", prob, v).reshape(T, H * hs) @ w_proj.T

    def hidden(self, ids):
        P = self.params
        x = P["transformer.wte.weight"][torch.tensor(ids)]
        for i in range(self.cfg["n_layer"]):
            b = f"transformer.h.{i}."
            h = self.rms(x, P[b + "norm_1.weight"])
            if self.is_mamba(i):
                x = x + self.mamba(h, lambda n: P[b + "attn." + n])
            else:
                x = x + self.attention(h, P[b + "attn.attn.weight"], P[b + "attn.proj.weight"])
            h = self.rms(x, P[b + "norm_2.weight"])
            a = torch.nn.functional.silu(h @ P[b + "mlp.swiglu.w1.weight"].T) * (h @ P[b + "mlp.swiglu.w2.weight"].T)
            x = x + a @ P[b + "mlp.swiglu.w3.weight"].T
        return self.rms(x, P["transformer.ln_f.weight"])

    def logits(self, ids):
        return self.hidden(ids) @ self.params["transformer.wte.weight"].T

    def export(self, grads):
        """The gradients under the library's names: backbone.embeddings.weight,
        backbone.layers.{i}.{norm, mlp_norm}.weight, .mixer.<Mamba tensors> or
        .mixer.{q,k,v,o}_proj.weight (q_proj row block h = g·(H/G) + j of the grouped
        projection), .mlp.{gate,up,down}_proj.weight, backbone.norm_f.weight."""
        cfg = self.cfg
        H, G, hs = cfg["n_head"], cfg["n_query_groups"], cfg["head_size"]
        qpk = H // G
        out = {}
        for k, v in grads.items():
            if not k.startswith("transformer.h."):
                out[{"transformer.wte.weight": "backbone.embeddings.weight",
                     "transformer.ln_f.weight": "backbone.norm_f.weight"}.get(k, k)] = v
                continue
            i, rest = k[len("transformer.h."):].split(".", 1)
            b = f"backbone.layers.{i}."
            if rest == "attn.attn.weight":
                blocks = v.view(G, qpk + 2, hs, -1)
                out[b + "mixer.q_proj.weight"] = blocks[:, :qpk].reshape(H * hs, -1)
                out[b + "mixer.k_proj.weight"] = blocks[:, qpk].reshape(G * hs, -1)
                out[b + "mixer.v_proj.weight"] = blocks[:, qpk + 1].reshape(G * hs, -1)
            else:
                name = {"norm_1.weight": "norm.weight", "norm_2.weight": "mlp_norm.weight",
                        "attn.proj.weight": "mixer.o_proj.weight", "mlp.swiglu.w1.weight": "mlp.gate_proj.weight",
                        "mlp.swiglu.w2.weight": "mlp.up_proj.weight",
                        "mlp.swiglu.w3.weight": "mlp.down_proj.weight"}.get(rest)
                out[b + (name if name else "mixer." + rest[len("attn."):])] = v
        return out


def lm_loss(impl, seqs):
    total, count = 0.0, 0
    for ids in seqs:
        if len(ids) < 2:
            continue
        logits = impl.logits(ids)
        total = total + torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="sum")
        count += len(ids) - 1
    return total / count


def info_nce_loss(impl, rows, tau):
    q = torch.stack([impl.hidden(r["query"])[-1] for r in rows])
    p = torch.stack([impl.hidden(ids)[-1] for r in rows for ids in r["passages"]])
    q = torch.nn.functional.normalize(q, dim=-1)
    p = torch.nn.functional.normalize(p, dim=-1)
    g = len(rows[0]["passages"])
    scores = q @ p.T / tau
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(rows)) * g)


def listwise_loss(impl, rows, head):
    scores = torch.stack([torch.stack([impl.hidden(ids)[-1] @ head["score.weight"][0] + head["score.bias"][0]
                                       for ids in r["pairs"]]) for r in rows])
    return torch.nn.functional.cross_entropy(scores, torch.zeros(len(rows), dtype=torch.long))


def gradients(impl, loss_name, inputs, head64):
    for p in impl.params.values():
        p.grad = None
    for p in head64.values():
        p.grad = None
    if loss_name == "lm":
        loss = lm_loss(impl, [r["ids"] for r in inputs])
    elif loss_name == "infonce":
        loss = info_nce_loss(impl, inputs, TEMPERATURE)
    else:
        loss = listwise_loss(impl, inputs, head64)
    loss.backward()
    out = {"loss": loss.detach().reshape(1)}
    grads = {name: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
             for name, p in impl.params.items()}
    out.update(impl.export(grads) if hasattr(impl, "export") else grads)
    if loss_name == "listwise":
        for name, p in head64.items():
            out[name] = p.grad.detach().clone()
    if loss_name == "infonce":
        out["temperature"] = torch.tensor([TEMPERATURE], dtype=torch.float64)
    return out


def rel(a, b):
    a, b = a.double(), b.double()
    den = b.norm().item()
    return (a - b).norm().item() / den if den > 0 else (a - b).norm().item()


def make_grad(case, new_inputs, check, tol):
    case_dir = os.path.join(HERE, case)
    folder = os.path.join(case_dir, "grad")
    samba = case.startswith("samba")
    if samba:
        cfg, _ = samba_case(case_dir)
        vocab, hidden = cfg["vocab_size"], cfg["n_embd"]  # ids from the real vocabulary, not the padding
    else:
        cfg = json.load(open(os.path.join(case_dir, "config.json")))
        vocab, hidden = cfg["vocab_size"], cfg["hidden_size"]
    if not check and (new_inputs or not os.path.exists(os.path.join(folder, "lm.jsonl"))):
        os.makedirs(folder, exist_ok=True)
        make_inputs(folder, vocab, hidden, seed=4321)
    inputs = {name: read_jsonl(os.path.join(folder, f"{name}.jsonl")) for name in ("lm", "infonce", "listwise")}
    head64 = {k: v.to(torch.float64).requires_grad_(True)
              for k, v in load_file(os.path.join(folder, "head.safetensors")).items()}
    if samba:  # transformers' Mamba mixer inside the first; everything written out in the second
        hf, own = Samba(case_dir, hf_mixer=True), Samba(case_dir)
    else:
        hf, own = Transformers(case_dir), Independent(case_dir)
    assert set(hf.params) == set(own.params), (sorted(hf.params), sorted(own.params))
    if samba:  # the forward against make_samba_reference.py's stored logits
        stored = load_file(os.path.join(case_dir, "reference.safetensors"))
        with torch.no_grad():
            for i in range(5):
                ids = stored[f"seq{i}.input_ids"].tolist()
                e = rel(own.logits(ids), stored[f"seq{i}.logits"])
                print(f"{case} seq{i} ({len(ids)} tokens): logits vs reference.safetensors {e:.2e}")
                assert e < 1e-6, e
    worst = 0.0
    for loss_name in ("lm", "infonce", "listwise"):
        ref = gradients(hf, loss_name, inputs[loss_name], head64)
        ind = gradients(own, loss_name, inputs[loss_name], head64)
        agree = max(rel(ref[k], ind[k]) for k in ref if k != "score.bias")  # score.bias: 0 in exact arithmetic
        print(f"{case} {loss_name}: loss {ref['loss'].item():.10f}; the transformers-based vs the independent float64 "
              f"model: worst tensor {agree:.2e} (norm-wise relative)")
        path = os.path.join(folder, f"{loss_name}.safetensors")
        if check:
            stored = load_file(path)
            if set(stored) != set(ref):
                print(f"  tensors differ: missing {sorted(set(ref) - set(stored))}, extra {sorted(set(stored) - set(ref))}")
                worst = math.inf
                continue
            for k in ref:
                if tuple(stored[k].shape) != tuple(ref[k].shape):
                    print(f"  {k}: shape {tuple(stored[k].shape)} != {tuple(ref[k].shape)}")
                    worst = math.inf
                    continue
                e = rel(stored[k], ref[k])
                worst = max(worst, e)
                if e > tol:
                    print(f"  {k}: {e:.2e}")
        else:
            save_file({k: v.to(torch.float32).contiguous() for k, v in ref.items()}, path,
                      metadata={"loss": loss_name, "torch": torch.__version__,
                                "transformers": __import__("transformers").__version__})
            print(f"  wrote {path} ({os.path.getsize(path)} bytes)")
    if check:
        print(f"{case}: worst stored-vs-recomputed error {worst:.2e} (tol {tol})")
        return worst <= tol
    return True

# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    sub.add_parser("adamw", help="write tests/data/train/adamw.safetensors")
    g = sub.add_parser("grad", help="write <case>/grad/")
    g.add_argument("--cases", nargs="+", default=["mambabyte-tiny", "falcon-mamba-tiny", "mamba2-tiny", "samba-tiny"])
    g.add_argument("--new-inputs", action="store_true", help="draw new seeded inputs even if some exist")
    g.add_argument("--check", action="store_true", help="recompute and compare with the stored files")
    g.add_argument("--tol", type=float, default=1e-6)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.mode == "adamw":
        make_adamw()
    else:
        ok = all([make_grad(case, args.new_inputs, args.check, args.tol) for case in args.cases])
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
