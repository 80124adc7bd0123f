#!/usr/bin/env python3
"""(Re)create the Mamba-1 reference checkpoints and outputs in tests/data/.

The C++ tests compare `ssm` against HuggingFace transformers' `MambaForCausalLM`.
This script is how that reference data is made, so the project does not depend on
anything outside its own tree.  There are three cases, one folder each:

  mamba-tiny               vocab 1000, hidden 64, 3 layers, N 16, dt rank 4, tied head,
                           float32, one model.safetensors; sequences of 1/17/64/300
                           tokens and a long one of 2048
  mambabyte-tiny           vocab 256 (byte level), hidden 48, 2 layers, N 16,
                           dt rank 3, tied head, float32; sequences of 5/120 tokens
  mamba-tiny-bf16-sharded  vocab 500, hidden 32, 2 layers, N 8, dt rank 2, untied
                           lm_head, stored as bfloat16 in 4 shards plus
                           model.safetensors.index.json; sequences of 9/40 tokens

Modes
-----
default
    For every case folder that holds a checkpoint: load it, convert it to float64
    (`model.to(torch.float64)`, exact, since the saved values are float32 or bf16),
    run it on the CPU and (re)write `reference.safetensors` and `reference.json`.
    Inputs (token ids, the generation prompt, the reranker head) are read back from
    the existing `reference.safetensors` when there is one, so rerunning reproduces
    the shipped files; new seeded inputs are drawn only when the file does not exist
    or with --new-inputs.

--checkpoints-from-scratch
    First build each model with seeded random weights, push every parameter off its
    tidy initial value (A_log, D, norm weights, conv/dt biases, all projections,
    embeddings and the untied head get seeded noise) so a wrong name mapping or a
    wrong formula shows, and save it with `save_pretrained` (safetensors; the bf16
    one with a `max_shard_size` that splits it into exactly 4 shards).  Then write
    the references as in the default mode, from the weights just saved.

--check
    Recompute everything in memory, in the same way, and compare with the existing
    `reference.safetensors` (nothing is written).  For each tensor it prints the
    max-norm relative error max|new - ref| / max|ref| and the L2 relative error
    ||new - ref|| / ||ref||; it exits with status 1 if any max-norm relative error
    exceeds --tol (1e-6), if an integer tensor (input ids, `generate.output`) differs
    in any element, or if a tensor is missing, extra or of another shape.  The inputs
    (ids, generate.prompt, the rerank head) are taken from the file, so they match by
    construction; generate.output and every float tensor are recomputed.

Tensors written to reference.safetensors (i indexes sequences, k the four embed inputs)
-------------------------------------------------------------------------------------
  seq{i}.input_ids       I64 [L]
  seq{i}.logits          F32 [L, vocab]
  seq{i}.hidden.{j}      F32 [L, hidden]; j < n_layers: the residual stream after
                         layer j (the output of backbone.layers[j]); j == n_layers:
                         the final hidden state after norm_f.  This is what
                         transformers' MambaModel returns as `hidden_states` (one entry
                         per layer output, then the norm_f output; no embedding entry).
                         The script captures the tensors with forward hooks and checks
                         that they agree with `output_hidden_states=True`.
  long.input_ids, long.last_hidden (after norm_f), long.logits_tail (last 8
                         positions) -- mamba-tiny only, 2048 tokens
  generate.prompt        I64 [12]
  generate.output        I64 [36]: the prompt and 24 greedy tokens from
                         `model.generate` with the recurrent cache (EOS stopping off)
  generate.full_logits   F32 [36, vocab]: one full forward over generate.output
  embed{k}.input_ids     I64: ids with eos_token_id appended
  embed.embeddings       F32 [4, hidden]: final hidden state (after norm_f) at the EOS
                         position, L2-normalised
  embed.cosine           F32 [4, 4]: cosine similarities of those embeddings
  rerank.score.weight    F32 [1, hidden] and rerank.score.bias F32 [1]: a seeded
                         random linear head
  rerank.scores          F32 [4]: w . h_EOS + b, h_EOS the unnormalised final hidden
                         state at the EOS position of embed{k}

Note on precision: transformers' Mamba code casts some intermediates to float32 even
in a float64 model (RMSNorm, the residual with residual_in_fp32, A = -exp(A_log),
dt*B and the state update in generation, and the logits), so the "float64"
reference carries float32 roundings of about 1e-7 relative.

Requirements: torch, transformers (>= 5, where MambaModel returns the hidden states
described above), safetensors, numpy.  Runs on the CPU, offline.

Examples:
  python3 tests/data/generate_reference.py --check
  python3 tests/data/generate_reference.py --data-dir /tmp/copy-of-tests-data
  python3 tests/data/generate_reference.py --checkpoints-from-scratch --new-inputs
"""

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import zlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

DEFAULT_SEED = 1234
PROMPT_LENGTH = 12
NEW_TOKENS = 24
EMBED_TEXT_LENGTHS = (5, 9, 31, 14)  # ids per text before eos is appended
LOGITS_TAIL = 8
RERANK_STD = 0.1
RERANK_BIAS = 0.05

# MambaConfig values shared by all cases (as in the shipped config.json files).
COMMON_CONFIG = dict(
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
    conv_kernel=4,
    expand=2,
    hidden_act="silu",
    initializer_range=0.1,
    layer_norm_epsilon=1e-5,
    rescale_prenorm_residual=False,
    residual_in_fp32=True,
    time_step_floor=1e-4,
    time_step_init_scheme="random",
    time_step_max=0.1,
    time_step_min=0.001,
    time_step_scale=1.0,
    use_associative_scan=True,
    use_bias=False,
    use_cache=True,
    use_conv_bias=True,
    use_mambapy=False,
)

# Mamba2Config values shared by the Mamba-2 cases.
MAMBA2_COMMON_CONFIG = dict(
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
    conv_kernel=4,
    expand=2,
    hidden_act="silu",
    initializer_range=0.1,
    layer_norm_epsilon=1e-5,
    rescale_prenorm_residual=False,
    residual_in_fp32=True,
    time_step_floor=1e-4,
    time_step_max=0.1,
    time_step_min=0.001,
    use_cache=True,
)

# Every case names its family ("mamba" when absent): which transformers classes build it.
FAMILIES = {
    "mamba": ("MambaConfig", "MambaForCausalLM", COMMON_CONFIG),
    "mamba2": ("Mamba2Config", "Mamba2ForCausalLM", MAMBA2_COMMON_CONFIG),
    "falcon_mamba": ("FalconMambaConfig", "FalconMambaForCausalLM", COMMON_CONFIG),
}

CASES = {
    "mamba-tiny": dict(
        config=dict(vocab_size=1000, hidden_size=64, num_hidden_layers=3, state_size=16,
                    time_step_rank=4, tie_word_embeddings=True),
        dtype="float32", shards=1, seq_lengths=(1, 17, 64, 300), long_length=2048),
    "mambabyte-tiny": dict(
        config=dict(vocab_size=256, hidden_size=48, num_hidden_layers=2, state_size=16,
                    time_step_rank=3, tie_word_embeddings=True),
        dtype="float32", shards=1, seq_lengths=(5, 120), long_length=None),
    "mamba-tiny-bf16-sharded": dict(
        config=dict(vocab_size=500, hidden_size=32, num_hidden_layers=2, state_size=8,
                    time_step_rank=2, tie_word_embeddings=False),
        dtype="bfloat16", shards=4, seq_lengths=(9, 40), long_length=None),
    # Mamba-2: 4 heads of 16, chunk 16; sequences below, at and across a chunk boundary.
    "mamba2-tiny": dict(
        family="mamba2",
        config=dict(vocab_size=256, hidden_size=32, num_hidden_layers=2, state_size=16,
                    num_heads=4, head_dim=16, n_groups=1, chunk_size=16,
                    tie_word_embeddings=True),
        dtype="float32", shards=1, seq_lengths=(1, 16, 17, 50), long_length=None),
    # Mamba-2: 2 heads of 32, chunk 32, untied, in/out biases and no conv bias, Δ clamped
    # by a finite time_step_limit, stored as bfloat16 in 3 shards; a 1600-token sequence.
    "mamba2-tiny-long": dict(
        family="mamba2",
        config=dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, state_size=8,
                    num_heads=2, head_dim=32, n_groups=1, chunk_size=32,
                    tie_word_embeddings=False, use_bias=True, use_conv_bias=False,
                    time_step_limit=(0.004, 0.05)),
        dtype="bfloat16", shards=3, seq_lengths=(31, 32, 33), long_length=1600,
        greedy_without_cache=True),
    # Falcon-Mamba: Mamba-1 with the weightless RMS norm of dt, B and C.
    "falcon-mamba-tiny": dict(
        family="falcon_mamba",
        config=dict(vocab_size=256, hidden_size=32, num_hidden_layers=2, state_size=8,
                    time_step_rank=3, tie_word_embeddings=True, mixer_rms_eps=1e-6),
        dtype="float32", shards=1, seq_lengths=(5, 40), long_length=None),
}

CHECKPOINT_FILES = ("config.json", "generation_config.json", "model.safetensors",
                    "model.safetensors.index.json")


def case_generator(seed, name, purpose):
    """A torch.Generator seeded from the global seed, the case and the purpose."""
    g = torch.Generator()
    g.manual_seed(seed * 1_000_003 + zlib.crc32(f"{name}/{purpose}".encode()))
    return g


# --------------------------------------------------------------------------- checkpoints

def perturb_(model, g):
    """Push every parameter off its tidy initial value with seeded noise (in place)."""
    with torch.no_grad():
        for pname, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if pname.endswith("A_log"):  # log(1..N) -> irregular, still > 0 decay rates
                p.add_(0.3 * noise)
            elif pname.endswith(".D"):  # ones
                p.add_(0.5 * noise)
            elif pname.endswith("norm.weight") or pname.endswith("norm_f.weight"):  # ones
                p.add_(0.2 * noise)
            elif pname.endswith("conv1d.bias"):  # zeros
                p.add_(0.1 * noise)
            elif pname.endswith("dt_proj.bias") or pname.endswith("dt_bias"):  # inverse softplus of dt in [1e-3, 0.1]
                p.add_(0.3 * noise)
            elif pname.endswith("bias"):
                p.add_(0.1 * noise)
            else:  # projections, conv weight, embeddings, untied lm_head
                scale = max(float(p.float().std()), 0.02)
                p.add_(0.2 * scale * noise)


def family_classes(case):
    """(config class, model class, shared config values) of a case's family."""
    import transformers

    config_name, model_name, common = FAMILIES[case.get("family", "mamba")]
    return getattr(transformers, config_name), getattr(transformers, model_name), common


def build_checkpoint(name, case, folder, seed):
    """Build one model with seeded random, perturbed weights and save it into folder."""
    config_class, model_class, common = family_classes(case)
    config = config_class(**common, **case["config"])
    torch.manual_seed(seed + zlib.crc32(name.encode()))
    model = model_class(config).eval()
    perturb_(model, case_generator(seed, name, "weights"))
    if case["dtype"] == "bfloat16":
        model = model.to(torch.bfloat16)

    os.makedirs(folder, exist_ok=True)
    for f in CHECKPOINT_FILES:
        if os.path.exists(os.path.join(folder, f)):
            os.remove(os.path.join(folder, f))
    for f in glob.glob(os.path.join(folder, "model-*-of-*.safetensors")):
        os.remove(f)

    if case["shards"] == 1:
        model.save_pretrained(folder)
    else:
        # Find a max_shard_size for which save_pretrained makes exactly `shards` files.
        total = sum(p.numel() * p.element_size() for p in model.parameters())
        chosen = None
        with tempfile.TemporaryDirectory() as tmp:
            for size in range(total // case["shards"], total + 1, 64):
                out = os.path.join(tmp, str(size))
                model.save_pretrained(out, max_shard_size=size)
                shards = sorted(glob.glob(os.path.join(out, "model-*-of-*.safetensors")))
                if len(shards) == case["shards"]:
                    chosen = size
                    for f in os.listdir(out):
                        shutil.copy2(os.path.join(out, f), os.path.join(folder, f))
                    break
                shutil.rmtree(out)
        if chosen is None:
            raise RuntimeError(f"{name}: no max_shard_size gave {case['shards']} shards")
        print(f"{name}: saved as {case['shards']} shards (max_shard_size={chosen} bytes)")
    for f in glob.glob(os.path.join(folder, "model*.safetensors")):
        os.chmod(f, 0o644)  # safetensors creates files 0600
    print(f"{name}: checkpoint written to {folder}")


# --------------------------------------------------------------------------- references

class Runner:
    """Runs a float64 copy of a checkpoint and captures the per-layer hidden states."""

    def __init__(self, folder, case):
        _, model_class, _ = family_classes(case)
        self.model = model_class.from_pretrained(folder).to(torch.float64).eval()
        self.greedy_without_cache = case.get("greedy_without_cache", False)
        self.config = self.model.config
        self.n_layers = self.config.num_hidden_layers
        self._captured = {}
        self._warned = False
        backbone = self.model.backbone
        for j, layer in enumerate(backbone.layers):
            layer.register_forward_hook(self._hook(j))
        backbone.norm_f.register_forward_hook(self._hook(self.n_layers))

    def _hook(self, j):
        def hook(_module, _inputs, output):
            self._captured[j] = output[0] if isinstance(output, tuple) else output
        return hook

    @torch.no_grad()
    def forward(self, ids):
        """Returns logits [L, V] (float32, as transformers returns them) and
        hidden [n_layers + 1] x [L, H] (float64)."""
        self._captured = {}
        out = self.model(torch.as_tensor(ids, dtype=torch.long)[None],
                         output_hidden_states=True, use_cache=False)
        hidden = [self._captured[j][0].to(torch.float64) for j in range(self.n_layers + 1)]
        # The README defines hidden.j as the output of layer j (j < n_layers) and the
        # norm_f output (j == n_layers); make sure transformers agrees.
        hf = out.hidden_states
        if len(hf) != len(hidden) or any(not torch.equal(a[0], b) for a, b in zip(hf, hidden)):
            if not self._warned:
                print("  warning: transformers' output_hidden_states do not match the per-layer "
                      "outputs captured by hooks; the hook values (README definition) are used",
                      file=sys.stderr)
                self._warned = True
        # transformers computes the logits in float64 and returns them cast to float32.
        return out.logits[0], hidden

    @torch.no_grad()
    def generate(self, prompt, new_tokens):
        if self.greedy_without_cache:
            # transformers' Mamba-2 one-token update does not clamp Δ to time_step_limit
            # (its chunked prefill does); greedy decoding by full forwards keeps one
            # definition of the model.
            out = np.asarray(prompt, np.int64)
            for _ in range(new_tokens):
                logits, _ = self.forward(out)
                out = np.append(out, np.int64(int(logits[-1].argmax())))
            return out
        gc = self.model.generation_config
        eos = gc.eos_token_id
        gc.eos_token_id = None  # always produce new_tokens tokens
        try:
            out = self.model.generate(torch.as_tensor(prompt, dtype=torch.long)[None],
                                      max_new_tokens=new_tokens,
                                      do_sample=False, num_beams=1, use_cache=True,
                                      pad_token_id=self.config.pad_token_id)
        finally:
            gc.eos_token_id = eos
        out = out[0].numpy().astype(np.int64)
        if len(out) != len(prompt) + new_tokens:
            raise RuntimeError(f"generate returned {len(out) - len(prompt)} new tokens, "
                               f"expected {new_tokens}")
        return out


def draw_inputs(name, case, vocab, eos, seed):
    """Fresh seeded inputs (ids avoid the eos/pad id 0)."""
    g = case_generator(seed, name, "inputs")

    def ids(n):
        return torch.randint(1, vocab, (n,), generator=g).numpy().astype(np.int64)

    inputs = {f"seq{i}.input_ids": ids(n) for i, n in enumerate(case["seq_lengths"])}
    if case["long_length"]:
        inputs["long.input_ids"] = ids(case["long_length"])
    inputs["generate.prompt"] = ids(PROMPT_LENGTH)
    for k, n in enumerate(EMBED_TEXT_LENGTHS):
        inputs[f"embed{k}.input_ids"] = np.concatenate([ids(n), np.array([eos], np.int64)])
    hidden = case["config"]["hidden_size"]
    gh = case_generator(seed, name, "rerank")
    inputs["rerank.score.weight"] = (torch.randn(1, hidden, generator=gh) * RERANK_STD).numpy().astype(np.float32)
    inputs["rerank.score.bias"] = np.array([RERANK_BIAS], np.float32)
    return inputs


INPUT_KEYS_SUFFIXES = (".input_ids",)
INPUT_KEYS = ("generate.prompt", "rerank.score.weight", "rerank.score.bias")


def read_inputs(existing):
    return {k: v for k, v in existing.items() if k.endswith(INPUT_KEYS_SUFFIXES) or k in INPUT_KEYS}


def compute(folder, inputs, case):
    """All reference tensors (numpy; F32 / I64) and the reference.json dict."""
    runner = Runner(folder, case)
    cfg = runner.config
    eos = cfg.eos_token_id
    f32 = lambda t: t.detach().to(torch.float64).numpy().astype(np.float32)  # noqa: E731
    out = {}
    sequences = []
    i = 0
    while f"seq{i}.input_ids" in inputs:
        ids = inputs[f"seq{i}.input_ids"]
        logits, hidden = runner.forward(ids)
        out[f"seq{i}.input_ids"] = ids
        out[f"seq{i}.logits"] = f32(logits)
        for j, h in enumerate(hidden):
            out[f"seq{i}.hidden.{j}"] = f32(h)
        sequences.append({"length": int(len(ids)), "n_hidden": len(hidden)})
        i += 1

    config = cfg.to_dict()
    config["_name_or_path"] = ""  # not the local folder this run happened to load from
    meta = {"config": config, "sequences": sequences}
    if "long.input_ids" in inputs:
        ids = inputs["long.input_ids"]
        logits, hidden = runner.forward(ids)
        out["long.input_ids"] = ids
        out["long.last_hidden"] = f32(hidden[-1])
        out["long.logits_tail"] = f32(logits[-LOGITS_TAIL:])
        meta["long_length"] = int(len(ids))

    prompt = inputs["generate.prompt"]
    generated = runner.generate(prompt, NEW_TOKENS)
    full_logits, _ = runner.forward(generated)
    out["generate.prompt"] = prompt
    out["generate.output"] = generated
    out["generate.full_logits"] = f32(full_logits)
    # Sanity check: the cached greedy path should agree with the argmax of one full pass.
    teacher = full_logits[len(prompt) - 1:-1].argmax(-1).numpy()
    if not np.array_equal(teacher, generated[len(prompt):]):
        print(f"  warning: cached greedy tokens differ from argmax of the full forward",
              file=sys.stderr)

    w = torch.from_numpy(inputs["rerank.score.weight"]).to(torch.float64)
    b = torch.from_numpy(inputs["rerank.score.bias"]).to(torch.float64)
    h_eos = []
    k = 0
    while f"embed{k}.input_ids" in inputs:
        ids = inputs[f"embed{k}.input_ids"]
        if int(ids[-1]) != eos:
            raise ValueError(f"embed{k}.input_ids does not end with eos_token_id {eos}")
        _, hidden = runner.forward(ids)
        h_eos.append(hidden[-1][-1])
        out[f"embed{k}.input_ids"] = ids
        k += 1
    h_eos = torch.stack(h_eos)
    emb = h_eos / h_eos.norm(dim=-1, keepdim=True)
    out["embed.embeddings"] = f32(emb)
    out["embed.cosine"] = f32(emb @ emb.T)
    out["rerank.score.weight"] = inputs["rerank.score.weight"]
    out["rerank.score.bias"] = inputs["rerank.score.bias"]
    out["rerank.scores"] = f32(h_eos @ w[0] + b[0])
    return out, meta


def compare(new, ref, tol):
    """Print a per-tensor comparison; returns True when everything is within tolerance."""
    ok = True
    for key in sorted(set(new) | set(ref)):
        if key not in ref or key not in new:
            print(f"  {key:24s} {'missing from reference' if key not in ref else 'not recomputed'}  FAIL")
            ok = False
            continue
        a, b = new[key], ref[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            print(f"  {key:24s} shape/dtype {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}  FAIL")
            ok = False
            continue
        if np.issubdtype(b.dtype, np.integer):
            bad = int((a != b).sum())
            status = "ok" if bad == 0 else "FAIL"
            ok &= bad == 0
            print(f"  {key:24s} {b.dtype!s:8s} {str(list(b.shape)):12s} exact: "
                  f"{'equal' if bad == 0 else f'{bad} elements differ'}  {status}")
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        scale = np.abs(b64).max()
        rel_max = np.abs(a64 - b64).max() / scale if scale > 0 else np.abs(a64).max()
        nb = np.linalg.norm(b64)
        rel_l2 = np.linalg.norm(a64 - b64) / nb if nb > 0 else np.linalg.norm(a64)
        status = "ok" if rel_max <= tol else "FAIL"
        ok &= bool(rel_max <= tol)
        print(f"  {key:24s} {b.dtype!s:8s} {str(list(b.shape)):12s} max rel {rel_max:.3e}  "
              f"L2 rel {rel_l2:.3e}  {status}")
    return ok


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring (or tests/data/README.md) for the tensors written.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.dirname(os.path.abspath(__file__)),
                        help="folder holding the case folders (default: this script's folder)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES),
                        help="cases to process (default: all)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="recompute in memory and compare with the existing reference.safetensors; "
                           "writes nothing, exits 1 on a mismatch")
    mode.add_argument("--checkpoints-from-scratch", action="store_true",
                      help="first build new seeded random checkpoints (overwrites the model files), "
                           "then write the references")
    parser.add_argument("--new-inputs", action="store_true",
                        help="draw new seeded inputs even when reference.safetensors exists")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"seed for weights and inputs (default {DEFAULT_SEED})")
    parser.add_argument("--tol", type=float, default=1e-6,
                        help="--check: largest accepted max-norm relative error (default 1e-6)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.check and args.new_inputs:
        parser.error("--check compares against the existing inputs; --new-inputs makes no sense")
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers
    transformers.utils.logging.disable_progress_bar()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"numpy {np.__version__}")

    all_ok = True
    for name in args.cases:
        case = CASES[name]
        folder = os.path.join(args.data_dir, name)
        ref_path = os.path.join(folder, "reference.safetensors")
        if args.checkpoints_from_scratch:
            build_checkpoint(name, case, folder, args.seed)
        if not os.path.exists(os.path.join(folder, "config.json")):
            print(f"{name}: no checkpoint in {folder}; skipped "
                  f"(use --checkpoints-from-scratch to build one)")
            all_ok = False
            continue

        existing = load_file(ref_path) if os.path.exists(ref_path) else None
        if args.check and existing is None:
            print(f"{name}: no {ref_path} to check against  FAIL")
            all_ok = False
            continue
        if existing is not None and not args.new_inputs:
            inputs = read_inputs(existing)
            source = "inputs read from the existing reference.safetensors"
        else:
            cfg = family_classes(case)[0].from_pretrained(folder)
            inputs = draw_inputs(name, case, cfg.vocab_size, cfg.eos_token_id, args.seed)
            source = f"new inputs drawn with seed {args.seed}"
        print(f"{name}: {source}")

        tensors, meta = compute(folder, inputs, case)
        if args.check:
            ok = compare(tensors, existing, args.tol)
            ref_json = os.path.join(folder, "reference.json")
            if os.path.exists(ref_json):
                with open(ref_json) as fh:
                    old = json.load(fh)
                if old.get("sequences") != meta["sequences"] or old.get("long_length") != meta.get("long_length"):
                    print("  reference.json: sequence lengths differ  FAIL")
                    ok = False
            print(f"{name}: {'OK' if ok else 'MISMATCH'}")
            all_ok &= ok
        else:
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, ref_path)
            os.chmod(ref_path, 0o644)  # safetensors creates files 0600
            with open(os.path.join(folder, "reference.json"), "w") as fh:
                json.dump(meta, fh, indent=1)
            print(f"{name}: wrote {ref_path} ({len(tensors)} tensors) and reference.json")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
