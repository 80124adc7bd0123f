#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz with clang (AddressSanitizer + UBSan) and
# runs each for SECONDS, one after the other; exits 1 when any of them finds something
# (a crash, a sanitizer report, an exception other than ssm::Error, a timeout, or memory
# past the limit). See docs/reliability.md.
#   scripts/fuzz.sh SECONDS [HARNESS...]     (default: every harness the build has; fuzz_faiss_index needs FAISS)
#   SSM_FUZZ_BUILD=DIR  build folder (default build-fuzz); its corpus/ keeps what earlier
#                       runs found and grows across runs; findings/ gets the crashing inputs
#   SSM_JOBS=N          parallel build jobs (default: number of cores)
# The seed corpora are made from the bundled files of tests/data on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: scripts/fuzz.sh SECONDS [HARNESS...]}
shift
build=${SSM_FUZZ_BUILD:-build-fuzz}
jobs=${SSM_JOBS:-$(nproc)}
data=tests/data
all=(fuzz_safetensors fuzz_safetensors_index fuzz_config fuzz_torch_file fuzz_tokenizer_json
     fuzz_tokenizer_encode fuzz_jsonl fuzz_beir fuzz_trec fuzz_npy fuzz_tevatron fuzz_beir_training
     fuzz_faiss_index)
harnesses=("$@")

cxx=${SSM_FUZZ_CXX:-$(command -v clang++ || command -v clang++-14 || true)}
[[ -n "$cxx" ]] || { echo "fuzz.sh: clang++ not found (scripts/install-deps.sh installs it)" >&2; exit 1; }
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" "${launcher[@]}" \
      -DSSM_BUILD_FUZZERS=ON -DSSM_BUILD_TESTS=OFF -DSSM_BUILD_EXAMPLES=OFF -DSSM_BUILD_BENCHMARKS=OFF \
      -DSSM_INSTALL=OFF -DSSM_USE_OPENMP=OFF -DSSM_SANITIZE=OFF -DSSM_BUILD_CUDA=OFF >/dev/null
mapfile -t built < "$build/fuzzers.txt"   # fuzz_faiss_index only where FAISS was found
if ((${#harnesses[@]} == 0)); then
  harnesses=("${built[@]}")
  for h in "${all[@]}"; do
    [[ " ${built[*]} " == *" $h "* ]] || echo "fuzz.sh: $h is not built here (it needs FAISS, not found): skipped"
  done
else
  for h in "${harnesses[@]}"; do
    [[ " ${built[*]} " == *" $h "* ]] || { echo "fuzz.sh: no harness $h in this build (harnesses: ${built[*]})" >&2; exit 2; }
  done
fi
cmake --build "$build" -j "$jobs" --target "${harnesses[@]}"

# ---- seed corpora from tests/data -----------------------------------------------------
seeds="$build/seeds"
rm -rf "$seeds"
sep=$'\n=====\n'   # tests/fuzz/fuzz_util.hpp: kFileSeparator
seed() { mkdir -p "$seeds/$1"; cp "${@:2}" "$seeds/$1/"; }
seed_text() { mkdir -p "$seeds/$1"; printf '%s' "$3" >"$seeds/$1/$2"; }
seed fuzz_safetensors "$data"/mamba-tiny-bf16-sharded/model-0000*.safetensors "$data"/torch/*.expected.safetensors
seed fuzz_safetensors_index "$data"/mamba-tiny-bf16-sharded/model.safetensors.index.json
mkdir -p "$seeds/fuzz_config"
for f in $(find "$data" -name '*config.json' | sort); do   # HF, mamba_ssm original, lit-gpt
  cp "$f" "$seeds/fuzz_config/$(echo "${f#"$data"/}" | tr / _)"
done
seed fuzz_torch_file "$data"/torch/*.pt
seed fuzz_tokenizer_json "$data"/tokenizer/tokenizer_split.json "$data"/tokenizer/tokenizer_llama.json \
     "$data"/mamba-tiny/tokenizer.json
mkdir -p "$seeds/fuzz_tokenizer_encode"
cases=(cases.jsonl cases_llama.jsonl cases_split.jsonl)   # first byte: which tokenizer
n=0
for k in 0 1 2; do
  while IFS= read -r line; do   # the tokenizer test cases, one JSON line each
    { printf "\\x0$k"; printf '%s' "$line"; } >"$seeds/fuzz_tokenizer_encode/case$n"
    n=$((n + 1))
  done < <(head -n 40 "$data/tokenizer/${cases[k]}")
done
seed fuzz_jsonl "$data"/retrieval/beir-tiny/corpus.jsonl "$data"/retrieval/beir-tiny/queries.jsonl
seed_text fuzz_beir beir "$(cat "$data"/retrieval/beir-tiny/corpus.jsonl)$sep$(cat "$data"/retrieval/beir-tiny/queries.jsonl)$sep$(cat "$data"/retrieval/beir-tiny/qrels/test.tsv)"
seed_text fuzz_trec run-qrels "$(head -n 60 "$data"/retrieval/metrics/run.trec)$sep$(head -n 60 "$data"/retrieval/metrics/qrels.trec)"
seed_text fuzz_trec run-tsv "$(head -n 60 "$data"/retrieval/metrics/run.trec)$sep$(head -n 60 "$data"/retrieval/metrics/qrels.tsv)"
seed fuzz_npy "$data"/retrieval/npy/*.npy
seed fuzz_tevatron "$data"/train/retrieval.jsonl
seed fuzz_faiss_index "$data"/retrieval/faiss/*.ssmfaiss
beir="$data"/retrieval/beir-tiny
seed_text fuzz_beir_training beir "$(cat "$beir"/corpus.jsonl)$sep$(cat "$beir"/queries.jsonl)$sep$(cat "$beir"/qrels/test.tsv)$sep$(
  tail -n +2 "$beir"/qrels/test.tsv | awk '{ print $1, "Q0", $2, NR, 10 - NR / 10, "seed" }')"

dict() {  # JSON tokens for the harnesses that read JSON
  case $1 in
    fuzz_safetensors|fuzz_safetensors_index|fuzz_config|fuzz_tokenizer_json|fuzz_jsonl|fuzz_beir|fuzz_tevatron|fuzz_beir_training)
      echo "-dict=tests/fuzz/json.dict" ;;
  esac
}
max_len() {
  case $1 in
    fuzz_safetensors|fuzz_torch_file|fuzz_tokenizer_json) echo 65536 ;;
    fuzz_tokenizer_encode) echo 4096 ;;
    fuzz_npy) echo 1024 ;;
    *) echo 16384 ;;
  esac
}

# ---- run -------------------------------------------------------------------------------
mkdir -p "$build/corpus" "$build/findings" "$build/logs"
failed=()
for h in "${harnesses[@]}"; do
  mkdir -p "$build/corpus/$h"
  log="$build/logs/$h.log"
  start=$SECONDS
  rc=0
  "$build/tests/fuzz/$h" -max_total_time="$seconds" -max_len="$(max_len "$h")" -rss_limit_mb=2048 \
      -timeout=10 -print_final_stats=1 $(dict "$h") -artifact_prefix="$build/findings/$h-" \
      "$build/corpus/$h" "$seeds/$h" >"$log" 2>&1 || rc=$?
  final=$(grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -n 1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  printf '%-24s %4ss  execs %-10s %s\n' "$h" "$((SECONDS - start))" "${execs:-?}" \
         "$(echo "$final" | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9a-zA-Z]+' || true)"
  if ((rc != 0)); then
    echo "  FINDING ($h, exit $rc): $(grep -m1 -E 'ERROR: |SUMMARY: |terminate called|==[0-9]+==' "$log" || true)"
    echo "  input: $(ls -t "$build/findings/$h-"* 2>/dev/null | head -n 1); log: $log"
    failed+=("$h")
  fi
done
if ((${#failed[@]})); then
  echo "fuzz.sh: findings in ${failed[*]}" >&2
  exit 1
fi
