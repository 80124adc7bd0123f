#!/usr/bin/env bash
# ssm-train's own speed in the mamba-130m shape, beside the forward alone, in one run:
#
#   bash benchmarks/ssm_train_130m.sh [L=512] [STEPS=4] [THREADS=2]
#
# A 130m-shape model (D 768, 24 layers, vocab 50280, N 16) is initialised from a seed
# (`ssm-train lm --init`), trained for STEPS optimizer steps on one random sequence of L
# token ids a step, and the median tokens/s of the steps after the first is printed beside
# `ssm-forward`'s tokens/s over one sequence of the same length (every position's logits).
# A step costs about 3 forwards in FLOPs. Name the machine beside any figure quoted
# (`lscpu`), and run it on a quiet machine: other work on the cores changes both numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
L=${1:-512}
STEPS=${2:-4}
THREADS=${3:-2}
BIN=${BIN:-build/examples}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cat > "$WORK/config.json" <<'EOF'
{"architectures": ["MambaForCausalLM"], "model_type": "mamba", "vocab_size": 50280,
 "hidden_size": 768, "num_hidden_layers": 24, "state_size": 16, "conv_kernel": 4, "expand": 2,
 "intermediate_size": 1536, "time_step_rank": 48, "use_bias": false, "use_conv_bias": true,
 "tie_word_embeddings": true, "layer_norm_epsilon": 1e-05, "eos_token_id": 0}
EOF
python3 - "$WORK/ids.jsonl" "$L" "$STEPS" <<'EOF'
import json, random, sys
path, length, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(0)
with open(path, "w") as f:
    for _ in range(steps):
        f.write(json.dumps({"ids": [rng.randrange(50280) for _ in range(length)]}) + "\n")
EOF

"$BIN/ssm-train" lm --init "$WORK/config.json" --train "$WORK/ids.jsonl" --out "$WORK/model" --steps "$STEPS" \
  --batch-size 1 --lr 1e-4 --threads "$THREADS" --log "$WORK/log.jsonl" >/dev/null
IDS=$(python3 -c "import json; print(','.join(map(str, json.loads(open('$WORK/ids.jsonl').readline())['ids'])))")
FWD=$("$BIN/ssm-forward" --model "$WORK/model" --ids "$IDS" --threads "$THREADS" --out "$WORK/fwd.safetensors")
python3 - "$WORK/log.jsonl" "$L" "$THREADS" <<EOF
import json, re, statistics, sys
log = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
step_tps = statistics.median(x["tokens_per_s"] for x in log[1:]) if len(log) > 1 else log[0]["tokens_per_s"]
fwd = """$FWD"""
m = re.search(r"([0-9.]+) (ms|s)\b", fwd)
print(fwd.strip())
if not m:
    sys.exit("could not read ssm-forward's time")
secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
fwd_tps = int(sys.argv[2]) / secs
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {cpu}, {sys.argv[3]} threads")
print(f"mamba-130m shape, L = {sys.argv[2]}: ssm-train step {step_tps:,.0f} tokens/s, "
      f"forward {fwd_tps:,.0f} tokens/s, step = {fwd_tps / step_tps:.2f} forwards")
EOF
