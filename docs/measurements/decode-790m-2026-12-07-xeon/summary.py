#!/usr/bin/env python3
"""The table of run.sh's rounds: per format, decoding tokens/s (median and range over the
rounds), the weight bytes a token reads, the bytes/s that makes and its share of the read
bandwidth measured in the same rounds; ssm against llama.cpp.

    python3 summary.py RAW_DIR ROUNDS
"""
import json
import re
import statistics
import sys

raw, rounds = sys.argv[1], int(sys.argv[2])
D, L, E, N, R, V = 1536, 48, 3072, 16, 96, 50280
# Every layer's projections and the (tied) head: what one decoding token reads.
weights = L * (2 * E * D + (R + 2 * N) * E + E * R + D * E) + D * V
bytes_per_weight = {"int8": 36 / 32, "int8-activations": 36 / 32, "bf16": 2.0,  # ssm
                    "q8_0": 34 / 32, "llama-bf16": 2.0}                           # llama.cpp


def median_range(xs):
    return statistics.median(xs), min(xs), max(xs)


read = []
for r in range(1, rounds + 1):
    runs = json.load(open(f"{raw}/read-r{r}.json"))["benchmarks"]
    read += [b["bytes/s"] for b in runs if b.get("run_type") == "iteration"]
rows = []
for fmt in ("int8", "int8-activations", "bf16"):
    ts = []
    for r in range(1, rounds + 1):
        text = open(f"{raw}/ssm-{fmt}-r{r}.txt").read()
        ms = float(re.search(r"new tokens: ([0-9.]+) ms/token", text).group(1))
        ts.append(1e3 / ms)
    rows.append((f"ssm {fmt}", fmt, ts))
for fmt in ("q8_0", "bf16"):
    ts = [json.load(open(f"{raw}/llama-{fmt}-r{r}.json"))[-1]["avg_ts"] for r in range(1, rounds + 1)]
    rows.append((f"llama.cpp {fmt.upper()}", "q8_0" if fmt == "q8_0" else "llama-bf16", ts))

rm, rlo, rhi = median_range(read)
print(f"read bandwidth (bench_model BM_MemoryRead, 512 MiB, 2 threads): median {rm / 1e9:.1f} GB/s "
      f"({rlo / 1e9:.1f}-{rhi / 1e9:.1f}), {len(read)} runs\n")
print(f"{weights / 1e6:.1f} M weights read per token (48 layers' projections and the tied head)\n")
print("| run | tokens/s (median, range) | GB of weights a token | GB/s | of read bandwidth |")
print("|---|---:|---:|---:|---:|")
med = {}
for name, fmt, ts in rows:
    m, lo, hi = median_range(ts)
    med[name] = m
    gb = weights * bytes_per_weight[fmt] / 1e9
    print(f"| {name} | {m:.2f} ({lo:.2f}-{hi:.2f}) | {gb:.3f} | {m * gb:.1f} | {100 * m * gb * 1e9 / rm:.0f}% |")
print()
print(f"ssm int8 / llama.cpp Q8_0: {med['ssm int8'] / med['llama.cpp Q8_0']:.2f}x; "
      f"ssm int8-activations / Q8_0: {med['ssm int8-activations'] / med['llama.cpp Q8_0']:.2f}x; "
      f"ssm bf16 / llama.cpp BF16: {med['ssm bf16'] / med['llama.cpp BF16']:.2f}x")
