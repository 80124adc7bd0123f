#!/usr/bin/env bash
# Encoding throughput with 1 and 2 ranks on one machine (docs/scale-out.md): ssm-embed on a
# mamba-130m-shaped random checkpoint, the same corpus of random token ids, the same cores
# used three ways, and a check that every run wrote the same file.
#   benchmarks/scale_out/run_encoding.sh BUILD_DIR [SCRATCH_DIR] [PASSAGES]
set -euo pipefail
build=${1:?usage: run_encoding.sh BUILD_DIR [SCRATCH_DIR] [PASSAGES]}
dir=${2:-/tmp/ssm-scale-out-encoding}
passages=${3:-150}
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/make_inputs.py" "$dir" --passages "$passages" >/dev/null
embed="$build/examples/ssm-embed --model $dir/mamba-130m-shape --input $dir/corpus.jsonl --batch-tokens 4096"
mpirun=(mpirun --oversubscribe --bind-to none)
[[ $(id -u) == 0 ]] && mpirun+=(--allow-run-as-root)
lscpu | grep -E "Model name|^CPU\(s\)" | sed 's/  */ /g'
echo "== 1 process, 1 thread";  $embed --threads 1 --out "$dir/t1.npy"
echo "== 1 process, 2 threads"; $embed --threads 2 --out "$dir/t2.npy"
echo "== 2 ranks, 1 thread each"; OMPI_MCA_btl_vader_single_copy_mechanism=none "${mpirun[@]}" -np 2 $embed --threads 1 --out "$dir/r2.npy"
cmp "$dir/t1.npy" "$dir/r2.npy" && echo "2 ranks × 1 thread wrote the same bytes as 1 process × 1 thread"
