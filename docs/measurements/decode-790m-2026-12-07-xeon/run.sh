#!/usr/bin/env bash
# Decoding with weights that do not fit in the last-level cache: a mamba-790m-shaped random
# checkpoint (int8 ~0.89 GB, bf16 ~1.58 GB of weights read per token; this VM reports a
# 260 MiB L3, which the 130m model's int8 weights, 0.14 GB, fit in). ssm's ssm-generate
# against llama.cpp's llama-bench (tg128) on the same checkpoint, beside bench_model's read
# bandwidth, in interleaved rounds on an otherwise idle machine (Intel Xeon, family 6
# model 207, 2 vCPUs). Run from the repository root:
#   LLAMA=path/to/llama.cpp (its sources, with build/bin/llama-bench and llama-quantize)
#   bash docs/measurements/decode-790m-2026-12-07-xeon/run.sh
# OUTDIR=folder writes raw/ and summary.md there instead of beside this script (a rerun).
set -euo pipefail
here=docs/measurements/decode-790m-2026-12-07-xeon
ckpt=${CKPT:-/tmp/ssm-bench-mamba-790m-shape}
gguf=${GGUF:-/tmp/ssm-bench-mamba-790m-gguf}
rounds=${ROUNDS:-3}
out=${OUTDIR:-$here}
[[ -f $ckpt/model.safetensors ]] || python3 $here/make_checkpoint.py "$ckpt"
mkdir -p "$gguf" "$out/raw"
if [[ ! -f $gguf/q8_0.gguf ]]; then
  python3 "$LLAMA/convert_hf_to_gguf.py" "$ckpt" --outtype f32 --outfile "$gguf/f32.gguf" >/dev/null 2>&1
  python3 "$LLAMA/convert_hf_to_gguf.py" "$ckpt" --outtype bf16 --outfile "$gguf/bf16.gguf" >/dev/null 2>&1
  "$LLAMA/build/bin/llama-quantize" "$gguf/f32.gguf" "$gguf/q8_0.gguf" Q8_0 >/dev/null 2>&1
  rm -f "$gguf/f32.gguf"
fi
lscpu >"$out/raw/lscpu.txt"
for ((r = 1; r <= rounds; ++r)); do
  echo "== round $r of $rounds" >&2
  build-bench/benchmarks/bench_model --benchmark_filter='BM_MemoryRead' --benchmark_repetitions=3 \
    --benchmark_format=json --benchmark_out="$out/raw/read-r$r.json" --benchmark_out_format=json >/dev/null
  for fmt in int8 int8-activations bf16; do
    flags=(--$fmt); [[ $fmt == int8-activations ]] && flags=(--int8 --int8-activations)
    build/examples/ssm-generate --model "$ckpt" --ids 1,2,3 --max-new-tokens 128 --no-eos-stop \
      --format ids --threads 2 "${flags[@]}" >/dev/null 2>"$out/raw/ssm-$fmt-r$r.txt"
  done
  for fmt in q8_0 bf16; do
    "$LLAMA/build/bin/llama-bench" -m "$gguf/$fmt.gguf" -p 0 -n 128 -t 2 -r 1 -o json \
      >"$out/raw/llama-$fmt-r$r.json" 2>/dev/null
  done
done
python3 $here/summary.py "$out/raw" "$rounds" | tee "$out/summary.md"
