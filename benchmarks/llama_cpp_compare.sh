#!/usr/bin/env bash
# benchmarks/llama_cpp_compare.sh — ssm's bench_model against llama.cpp's llama-bench on the
# same random mamba-130m-shaped checkpoint, on this machine, runs interleaved: prefill of
# 512 and 2 048 tokens and decoding (128 tokens, batch 1) for float32, bfloat16 and 8-bit
# weights (llama.cpp: F32, BF16, Q8_0; ssm: float32, bf16 — on the bf16 dot-product unit
# where the CPU has one, and widened to float32 GEMMs — and int8 blocks, decoding with
# float32 activations and with int8 ones), with the
# machine's FMA peak, bf16 dot-product peak and read bandwidth measured by bench_model in
# the same runs.
#
# It fetches and builds nothing. Give it:
#   BENCH_MODEL  ssm's benchmarks/bench_model (a Release build with -DSSM_BUILD_BENCHMARKS=ON)
#   LLAMA_BIN    a folder holding llama.cpp's llama-bench
#   GGUF_DIR     a folder holding mamba-130m-f32.gguf, mamba-130m-bf16.gguf and
#                mamba-130m-q8_0.gguf, made from bench_model's checkpoint by llama.cpp's
#                own tools:
#     bench_model --benchmark_filter=BM_PeakFma   # writes the checkpoint once (SSM_BENCH_DIR,
#                                                  # default /tmp/ssm-bench-mamba-130m-shape)
#     python3 convert_hf_to_gguf.py /tmp/ssm-bench-mamba-130m-shape --outtype f32 \
#         --outfile GGUF_DIR/mamba-130m-f32.gguf          # and --outtype bf16 → -bf16.gguf
#     llama-quantize GGUF_DIR/mamba-130m-f32.gguf GGUF_DIR/mamba-130m-q8_0.gguf Q8_0
#
# usage: benchmarks/llama_cpp_compare.sh BENCH_MODEL LLAMA_BIN GGUF_DIR [ROUNDS=3] [THREADS=all]
# Writes the raw JSON of every run, the table (medians, ranges) and a picture under $OUT
# (default ./llama-cpp-compare), and prints the table.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
bench_model=$1 llama_bin=$2 gguf_dir=$3 rounds=${4:-3} threads=${5:-$(nproc)}
out=${OUT:-./llama-cpp-compare}
for f in "$bench_model" "$llama_bin/llama-bench"; do
  [[ -x $f ]] || { echo "llama_cpp_compare.sh: $f is not an executable" >&2; exit 2; }
done
models=()
for fmt in f32 bf16 q8_0; do
  m=$gguf_dir/mamba-130m-$fmt.gguf
  [[ -f $m ]] || { echo "llama_cpp_compare.sh: $m is missing (see the top of this script)" >&2; exit 2; }
  models+=("$m")
done
mkdir -p "$out"
# SUMMARY_ONLY=1 remakes the table and the picture from the JSON already under $OUT.
[[ ${SUMMARY_ONLY:-0} == 1 ]] || lscpu >"$out/lscpu.txt"
for ((r = 1; r <= rounds && ${SUMMARY_ONLY:-0} != 1; ++r)); do
  echo "== round $r of $rounds: llama-bench" >&2
  for m in "${models[@]}"; do
    "$llama_bin/llama-bench" -m "$m" -p 512,2048 -n 128 -t "$threads" -r 1 -o json \
      >"$out/llama-$(basename "$m" .gguf)-r$r.json" 2>"$out/llama-$(basename "$m" .gguf)-r$r.log"
  done
  echo "== round $r of $rounds: bench_model" >&2
  OMP_NUM_THREADS=$threads "$bench_model" \
    --benchmark_filter='BM_PeakFma|BM_PeakBf16Dot|BM_MemoryRead|BM_Prefill/(512|2048)/|BM_Decode/1/' \
    --benchmark_format=json --benchmark_out="$out/ssm-r$r.json" --benchmark_out_format=json >/dev/null
done
python3 - "$out" "$rounds" "$threads" <<'EOF'
import json, statistics, sys
out, rounds, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fmt_names = {"f32": ("F32", "float32", 0), "bf16": ("BF16", "bfloat16", 1), "q8_0": ("Q8_0", "int8 blocks", 2)}
llama, ssm, peak, peak_bf16, read = {}, {}, [], [], []
for r in range(1, rounds + 1):
    for fmt in fmt_names:
        for row in json.load(open(f"{out}/llama-mamba-130m-{fmt}-r{r}.json")):
            kind = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
            llama.setdefault((fmt, kind), []).append(row["avg_ts"])
    for b in json.load(open(f"{out}/ssm-r{r}.json"))["benchmarks"]:
        name = b["name"]
        if "BM_PeakFma" in name:
            peak.append(b["FLOP/s"])
        elif "BM_PeakBf16Dot" in name:
            if "FLOP/s" in b:  # skipped (no counters) on a CPU without the unit
                peak_bf16.append(b["FLOP/s"])
        elif "BM_MemoryRead" in name:
            read.append(b["bytes/s"])
        elif name.startswith("BM_Prefill/"):
            L, f = name.split("/")[1:3]
            ssm.setdefault((int(f), f"pp{L}"), []).append(b["items_per_second"])
        elif name.startswith("BM_Decode/1/"):
            f = int(name.split("/")[2])
            ssm.setdefault((f, "tg128"), []).append(b["items_per_second"])
def cell(v):
    return f"{statistics.median(v):.1f} ({min(v):.1f}–{max(v):.1f})"
cpu = next((l.split(":", 1)[1].strip() for l in open(f"{out}/lscpu.txt") if l.startswith("Model name")), "?")
flags = next((l.split(":", 1)[1].split() for l in open(f"{out}/lscpu.txt") if l.startswith("Flags")), [])
isa = ", ".join(x for x in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if x in flags)
bf16_peak = f"{statistics.median(peak_bf16)/1e9:.0f} GFLOP/s" if peak_bf16 else "none (no AVX512-BF16)"
lines = [f"CPU: {cpu} ({isa}); {rounds} rounds; FMA peak {statistics.median(peak)/1e9:.0f} GFLOP/s, "
         f"bf16 dot-product peak {bf16_peak}, "
         f"read bandwidth {statistics.median(read)/1e9:.1f} GB/s (medians of bench_model's runs)", "",
         "| workload | weights | llama.cpp tok/s | ssm tok/s | ssm / llama.cpp |", "|---|---|---:|---:|---:|"]
# Rows: each format, and ssm's bf16 weights with the bf16 unit held off (bench_model's
# argument 3, prefill only) against the same llama.cpp BF16 runs.
rows = [(fmt, *names) for fmt, names in fmt_names.items()]
rows.insert(2, ("bf16", "BF16", "bfloat16, widened (unit held off)", 3))
# ... and int8 weights with decoding's activations rounded to int8 too (argument 4, decode only).
rows.append(("q8_0", "Q8_0", "int8 blocks, int8 activations", 4))
for kind in ("pp512", "pp2048", "tg128"):
    for fmt, gguf_name, ssm_name, arg in rows:
        a, b = llama.get((fmt, kind)), ssm.get((arg, kind))
        if not a or not b:
            continue
        ratio = statistics.median(b) / statistics.median(a)
        lines.append(f"| {kind} | {gguf_name} / {ssm_name} | {cell(a)} | {cell(b)} | {ratio:.2f}× |")
table = "\n".join(lines)
open(f"{out}/table.md", "w").write(table + "\n")
print(table)
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(0)
kinds = [k for k in ("pp512", "pp2048", "tg128") if any((f, k) in llama for f in fmt_names)]
fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 3.8))
# One group per weight format; bf16 twice where bench_model ran both of its paths (prefill:
# on the bf16 unit, argument 1, and widened to float32 GEMMs, argument 3), since which one
# a CPU takes by default depends on the CPU (ssm/core/cpu.hpp).
groups = [("f32", "F32\nfloat32", 0), ("bf16", "BF16\nbf16 on the unit", 1),
          ("bf16", "BF16\nbf16 widened", 3), ("q8_0", "Q8_0\nint8 blocks", 2)]
for ax, kind in zip(axes, kinds):
    shown = [(f, label, arg) for f, label, arg in groups if (f, kind) in llama and (arg, kind) in ssm]
    if kind == "tg128":  # decoding never uses the bf16 unit: one bf16 group
        shown = [(f, label.replace("bf16 on the unit", "bfloat16"), arg) for f, label, arg in shown if arg != 3]
    xs = range(len(shown))
    series = (("llama.cpp", [llama[(f, kind)] for f, _, _ in shown], "tab:gray"),
              ("ssm", [ssm[(arg, kind)] for _, _, arg in shown], "tab:blue"))
    for off, (label, runs, color) in enumerate(series):
        vals = [statistics.median(v) for v in runs]
        lo = [m - min(v) for m, v in zip(vals, runs)]
        hi = [max(v) - m for m, v in zip(vals, runs)]
        ax.bar([x + (off - 0.5) * 0.38 for x in xs], vals, 0.38, yerr=[lo, hi], color=color, label=label, capsize=3)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([label for _, label, _ in shown], fontsize=8)
    ax.set_title({"pp512": "prefill 512 tokens", "pp2048": "prefill 2 048 tokens", "tg128": "decode (batch 1)"}[kind])
    ax.set_ylabel("tokens/s")
    ax.grid(True, axis="y", alpha=0.3)
axes[0].legend(fontsize=8)
fig.suptitle(f"mamba-130m shape, random weights: {cpu}, {threads} threads (medians, ranges over {rounds} rounds)", fontsize=9)
fig.tight_layout()
fig.savefig(f"{out}/compare.png", dpi=110)
print(f"wrote {out}/compare.png")
EOF
