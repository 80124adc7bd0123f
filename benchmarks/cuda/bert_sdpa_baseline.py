#!/usr/bin/env python3
"""A BERT-base encoder on PyTorch's scaled_dot_product_attention: the transformer baseline
that the CUDA Mamba encoding figures (ssm_bench_cuda_model) stand beside.

BERT-base's shape: 12 layers, hidden 768, 12 heads of 64, FFN 3072 with GELU, post-LayerNorm
(x = LN(x + attention(x)); x = LN(x + FFN(x))), word + learned position + token-type
embeddings followed by a LayerNorm, the position table extended to 32768 positions. Random
weights in bf16, no padding mask (every sequence is full length), no dropout, under
torch.inference_mode(). For each length L in 512, 2048, 8192, 32768 it runs batches of
max(1, 65536 // L) sequences — the same ~64k tokens per batch as the Mamba benchmark —
after warm-up, timed with CUDA events, and prints tokens/s and the achieved TFLOP/s beside
a bf16 matmul ceiling measured in the same run. Attention may use only PyTorch's fused
kernels (flash, memory-efficient, cuDNN), so the baseline never falls back to materialising
the L × L scores unnoticed (--allow-math lets it).

Needs only PyTorch (no transformers):

    python3 benchmarks/cuda/bert_sdpa_baseline.py [--repeats 5] [--lengths 512 2048 ...]
"""

import argparse
import contextlib
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 30522


class EncoderLayer(nn.Module):
    def __init__(self, hidden, heads, ffn):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden, eps=1e-12)
        self.up = nn.Linear(hidden, ffn)
        self.down = nn.Linear(ffn, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x):  # x: (B, L, hidden)
        B, L, H = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, head_dim), no mask
        x = self.norm1(x + self.out(a.transpose(1, 2).reshape(B, L, H)))
        return self.norm2(x + self.down(F.gelu(self.up(x))))


class BertEncoder(nn.Module):
    def __init__(self, layers=12, hidden=768, heads=12, ffn=3072, positions=32768):
        super().__init__()
        self.word = nn.Embedding(VOCAB, hidden)
        self.position = nn.Embedding(positions, hidden)
        self.token_type = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(EncoderLayer(hidden, heads, ffn) for _ in range(layers))

    def forward(self, ids):  # ids: (B, L) -> (B, L, hidden)
        L = ids.shape[1]
        pos = torch.arange(L, device=ids.device)
        x = self.word(ids) + self.position(pos)[None] + self.token_type.weight[0]
        x = self.norm(x)
        for layer in self.layers:
            x = layer(x)
        return x


def flops_per_token(L, layers, hidden, ffn):
    """Multiply-adds × 2 per token: the projections and the FFN, plus QKᵀ and PV over L keys."""
    dense = 2 * (4 * hidden * hidden + 2 * hidden * ffn)
    attention = 4 * L * hidden
    return layers * (dense + attention)


class Clock:
    """CUDA events on a GPU; wall time (after a synchronize) elsewhere."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def start(self):
        if self.cuda:
            self.begin = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)
            self.begin.record()
        else:
            self.t0 = time.perf_counter()

    def seconds(self):
        if self.cuda:
            self.end.record()
            self.end.synchronize()
            return self.begin.elapsed_time(self.end) / 1e3
        return time.perf_counter() - self.t0


def matmul_ceiling(device, n, repeats=5):
    """FLOP/s of an n × n × n bf16 matmul: what the dense layers could reach here."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a @ b  # warm-up
    clock = Clock(device)
    clock.start()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / clock.seconds()


def fused_attention_only(device, allow_math):
    """On a GPU, a context that lets scaled_dot_product_attention use only its fused kernels
    (flash, memory-efficient, cuDNN where this PyTorch has them), so a baseline that would
    silently fall back to materialising the L × L scores fails instead."""
    if device.type != "cuda" or allow_math:
        return contextlib.nullcontext()
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # older PyTorch: its default choice stands
        return contextlib.nullcontext()
    names = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")
    return sdpa_kernel([getattr(SDPBackend, n) for n in names if hasattr(SDPBackend, n)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192, 32768])
    ap.add_argument("--tokens", type=int, default=65536, help="tokens per batch (default 65536)")
    ap.add_argument("--repeats", type=int, default=5, help="timed batches per length")
    ap.add_argument("--warmup", type=int, default=2, help="untimed batches per length")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--allow-math", action="store_true",
                    help="let attention fall back to its unfused (L x L) path")
    ap.add_argument("--device", default="cuda",
                    help="cuda (default), or cpu for a quick check of the script")
    args = ap.parse_args()
    if args.repeats < 1 or args.warmup < 0 or args.tokens < 1 or min(args.lengths) < 1:
        sys.exit("error: --repeats, --tokens and the lengths must be positive")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("SKIPPED: no CUDA device")
        sys.exit(77)

    hidden, heads, ffn = 768, 12, 3072
    torch.manual_seed(0)
    model = BertEncoder(args.layers, hidden, heads, ffn, positions=max(32768, max(args.lengths)))
    model = model.to(device=device, dtype=torch.bfloat16).eval()

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    with torch.inference_mode(), fused_attention_only(device, args.allow_math):
        ceiling = matmul_ceiling(device, 8192 if device.type == "cuda" else 512)
        print(f"BERT-base encoder ({args.layers} layers, hidden {hidden}, {heads} heads, "
              f"FFN {ffn}, GELU, post-LayerNorm), random bf16 weights, "
              f"scaled_dot_product_attention")
        print(f"torch {torch.__version__}, device: {name}; "
              f"bf16 matmul ceiling measured in this run: {ceiling / 1e12:.1f} TFLOP/s\n")
        print("|      L | batch | ms / batch |     tokens/s |  TFLOP/s | of matmul ceiling |")
        print("|--------|-------|------------|--------------|----------|-------------------|")
        clock = Clock(device)
        for L in args.lengths:
            batch = max(1, args.tokens // L)
            ids = torch.randint(0, VOCAB, (batch, L), device=device)
            for _ in range(args.warmup):
                model(ids)
            clock.start()
            for _ in range(args.repeats):
                model(ids)
            sec = clock.seconds() / args.repeats
            tokens = batch * L
            flops = flops_per_token(L, args.layers, hidden, ffn) * tokens
            print(f"| {L:6d} | {batch:5d} | {sec * 1e3:10.2f} | {tokens / sec:12.3e} | "
                  f"{flops / sec / 1e12:8.1f} | {100 * flops / sec / ceiling:16.1f}% |")
            del ids
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
