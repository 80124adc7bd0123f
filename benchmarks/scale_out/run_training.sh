#!/usr/bin/env bash
# Data-parallel training throughput on one machine (docs/scale-out.md): ssm-train lm on a
# mamba-130m-shaped random checkpoint, the same sequences of random token ids, the same
# cores used two ways (1 process × T threads, T ranks × 1 thread), and a check that both
# runs logged the same losses.
#   benchmarks/scale_out/run_training.sh BUILD_DIR [SCRATCH_DIR] [STEPS] [SEQ_LEN]
set -euo pipefail
build=${1:?usage: run_training.sh BUILD_DIR [SCRATCH_DIR] [STEPS] [SEQ_LEN]}
dir=${2:-/tmp/ssm-scale-out-training}
steps=${3:-3}
seq_len=${4:-256}
cores=$(nproc)
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/make_inputs.py" "$dir" --passages 1 >/dev/null   # the checkpoint
python3 - "$dir/train.jsonl" "$seq_len" <<'PY'
import json, sys
import numpy as np
rng = np.random.default_rng(7)
with open(sys.argv[1], "w") as f:
    for _ in range(64):
        f.write(json.dumps({"ids": rng.integers(1, 50280, size=int(sys.argv[2])).tolist()}) + "\n")
PY
train="$build/examples/ssm-train lm --model $dir/mamba-130m-shape --train $dir/train.jsonl --batch-size 4 --steps $steps --lr 1e-4"
mpirun=(mpirun --oversubscribe --bind-to none)
[[ $(id -u) == 0 ]] && mpirun+=(--allow-run-as-root)
lscpu | grep -E "Model name|^CPU\(s\)" | sed 's/  */ /g'
rm -rf "$dir/one" "$dir/many" "$dir/one.jsonl" "$dir/many.jsonl"
echo "== 1 process, $cores threads"
$train --threads "$cores" --out "$dir/one" --log "$dir/one.jsonl" | grep -E "trained steps"
echo "== $cores ranks, 1 thread each"
OMPI_MCA_btl_vader_single_copy_mechanism=none "${mpirun[@]}" -np "$cores" $train --threads 1 --out "$dir/many" \
  --log "$dir/many.jsonl" | grep -E "trained steps"
python3 - "$dir/one.jsonl" "$dir/many.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
for x, y in zip(a, b):
    print(f"step {x['step']}: loss {x['loss']:.6f} / {y['loss']:.6f}, {x['tokens_per_s']:.1f} / {y['tokens_per_s']:.1f} tokens/s")
PY
