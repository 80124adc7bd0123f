#!/usr/bin/env python3
"""PyTorch eager baseline for one causal-LM training step of a Mamba model on the CPU.

Builds transformers' ``MambaForCausalLM`` in the mamba-130m shape (hidden 768, 24 layers,
intermediate 1536, state 16, conv 4, dt_rank 48, vocab 50280, tied embeddings) with seeded
random float32 weights and times, for each sequence length L (batch 1):

  forward  no grad, logits for all L positions (what an LM training forward computes);
  step     forward + causal-LM cross-entropy (mean over the L - 1 predicted positions)
           + backward + torch.optim.AdamW step + zero_grad.

Each is run ``--warmup`` times, then ``--repeats`` timed times; the median, min and max
seconds, tokens/s, the step/forward ratio and the peak resident memory per token are
printed, with the machine, the library versions and the code path transformers took.
Run it beside the library's own training-step benchmark (build/benchmarks/bench_train, same shape,
same thread count) on the same machine in the same session: figures from different
machines or sessions do not compare. On the CPU transformers runs its eager "torch" path
(the fused mamba_ssm / causal_conv1d kernels are CUDA-only); the script reports which
functions ran so a different path cannot go unnoticed.

    python3 benchmarks/torch_train_step.py                       # L = 512 and 2048, 2 threads
    python3 benchmarks/torch_train_step.py --lengths 512 --repeats 1 --json torch_step.json
    python3 benchmarks/torch_train_step.py --tiny                # a smoke run in seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--lengths", default=None,
                   help="comma-separated sequence lengths (default 512,2048; 32 with --tiny)")
    p.add_argument("--repeats", type=int, default=3, help="timed iterations per measurement (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed for the weights and the tokens")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON (one object per length)")
    p.add_argument("--tiny", action="store_true",
                   help="smoke run: hidden 64, 2 layers, vocab 1000, L = 32")
    args = p.parse_args(argv)
    if args.lengths is None:
        args.lengths = "32" if args.tiny else "512,2048"
    try:
        args.lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    except ValueError:
        p.error(f"--lengths: expected comma-separated integers, got {args.lengths!r}")
    if not args.lengths or any(n < 2 for n in args.lengths):
        p.error("--lengths: every length must be at least 2 (one predicted position)")
    if args.threads < 1:
        p.error("--threads must be at least 1")
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be at least 1 and --warmup at least 0")
    return args


# ---------------------------------------------------------------------------- the machine

def cpu_description() -> dict:
    model, flags, family, number = None, set(), None, None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                elif key == "cpu family" and family is None:
                    family = value.strip()
                elif key == "model" and number is None:
                    number = value.strip()
    except OSError:
        pass
    if model is None or not flags:
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
            for line in out.splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "Model name" and model is None:
                    model = value.strip()
                elif key.strip() == "Flags" and not flags:
                    flags = set(value.split())
        except (OSError, subprocess.SubprocessError):
            pass
    isa = {name: name in flags for name in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")}
    return {
        "model": (model or platform.processor() or "unknown")
        + (f" (family {family}, model {number})" if family is not None and number is not None else ""),
        "logical_cpus": os.cpu_count(),
        "isa": isa,
    }


# ---------------------------------------------------------------------------- memory

def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class PeakRss:
    """Peak resident set size over a region of code.

    Linux keeps the peak in /proc/self/status (VmHWM) and resets it when 5 is written to
    /proc/self/clear_refs: that is exact and costs nothing. Otherwise psutil's RSS is
    sampled every millisecond in a thread; otherwise the process-wide ru_maxrss is used,
    which only shows a region's peak when it exceeds every earlier one.
    """

    def __init__(self) -> None:
        self.method = self._pick()
        self._stop = threading.Event()
        self._thread = None
        self._peak = 0

    @staticmethod
    def _vm_hwm() -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            return None
        return None

    def _pick(self) -> str:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            if self._vm_hwm() is not None:
                return "VmHWM (reset through /proc/self/clear_refs)"
        except OSError:
            pass
        try:
            import psutil  # noqa: F401
            return "psutil RSS sampled every 1 ms"
        except ImportError:
            return "ru_maxrss (process-wide peak; a region shows only when it exceeds earlier peaks)"

    def __enter__(self) -> "PeakRss":
        if self.method.startswith("VmHWM"):
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        elif self.method.startswith("psutil"):
            import psutil
            proc = psutil.Process()
            self._peak = proc.memory_info().rss
            self._stop.clear()

            def sample() -> None:
                while not self._stop.wait(0.001):
                    self._peak = max(self._peak, proc.memory_info().rss)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.method.startswith("VmHWM"):
            self._peak = self._vm_hwm() or 0
        elif self.method.startswith("psutil"):
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, current_rss_bytes())
        else:
            self._peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @property
    def peak(self) -> int:
        return self._peak


# ---------------------------------------------------------------------------- code path

def trace_mamba_calls(fn) -> list[str]:
    """Runs fn() and returns, in order of first call, the functions it entered that live in
    transformers' Mamba modelling file, in the fused-kernel packages or in Hub kernels."""
    seen: list[str] = []
    # transformers' own file, the fused-kernel packages, and kernels fetched from the Hub
    # (the `kernels` package's dispatch layer itself is left out: it runs either way).
    marks = ("modeling_mamba", "mamba_ssm", "causal_conv1d", "mambapy", f"huggingface{os.sep}hub")

    def profiler(frame, event, arg):
        if event == "call":
            code = frame.f_code
            if any(m in code.co_filename for m in marks):
                name = f"{os.path.basename(os.path.dirname(code.co_filename))}/" \
                       f"{os.path.basename(code.co_filename)}:{code.co_qualname if hasattr(code, 'co_qualname') else code.co_name}"
                if name not in seen:
                    seen.append(name)

    sys.setprofile(profiler)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return seen


def describe_path(calls: list[str]) -> str:
    names = [c.rsplit(":", 1)[-1] for c in calls]
    fused = [c for c in calls if not c.split(":", 1)[0].endswith("modeling_mamba.py")]
    if fused:
        return "fused kernels ran: " + ", ".join(fused)
    if "MambaMixer.cuda_kernels_forward" in names:
        return "MambaMixer.cuda_kernels_forward (fused CUDA kernels)"
    if "MambaMixer.slow_forward" in names:
        return "torch path: MambaMixer.slow_forward (sequential selective scan in eager PyTorch)"
    if "mamba_selective_scan" in names:
        return ("torch path: MambaMixer.forward -> causal_conv1d_fn (nn.functional conv1d) -> "
                "mamba_scan_forward -> mamba_selective_scan (one eager step per token); "
                "no fused kernel replaced them")
    return "unrecognised: " + ", ".join(calls)


# ---------------------------------------------------------------------------- timing

def summarise(times: list[float], tokens: int) -> dict:
    med = statistics.median(times)
    return {
        "seconds": {"median": med, "min": min(times), "max": max(times), "all": times},
        "tokens_per_s": {"median": tokens / med, "min": tokens / max(times), "max": tokens / min(times)},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import MambaConfig, MambaForCausalLM

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    if args.tiny:
        shape = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, state_size=16,
                     conv_kernel=4, time_step_rank=4, vocab_size=1000)
    else:
        shape = dict(hidden_size=768, num_hidden_layers=24, intermediate_size=1536, state_size=16,
                     conv_kernel=4, time_step_rank=48, vocab_size=50280)
    config = MambaConfig(**shape, tie_word_embeddings=True, use_cache=False, use_mambapy=False,
                         layer_norm_epsilon=1e-5, residual_in_fp32=True)

    torch.manual_seed(args.seed)
    model = MambaForCausalLM(config).to(dtype=torch.float32, device="cpu")
    tied = model.lm_head.weight.data_ptr() == model.backbone.embeddings.weight.data_ptr()
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)

    cpu = cpu_description()
    try:
        import mamba_ssm  # noqa: F401
        have_mamba_ssm = True
    except ImportError:
        have_mamba_ssm = False
    try:
        import causal_conv1d  # noqa: F401
        have_causal_conv1d = True
    except ImportError:
        have_causal_conv1d = False

    def forward_only(ids):
        model.eval()
        with torch.no_grad():
            return model(input_ids=ids, use_cache=False).logits  # (1, L, V)

    def train_step(ids):
        model.train()
        logits = model(input_ids=ids, use_cache=False).logits  # (1, L, V)
        loss = F.cross_entropy(logits[0, :-1].float(), ids[0, 1:])  # mean over L - 1 positions
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    # Which code path transformers takes, on a short sequence of the same model (the path
    # does not depend on L). The optimizer state this creates is what the timed steps use.
    probe = torch.randint(0, config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(args.seed))
    forward_calls = trace_mamba_calls(lambda: forward_only(probe))
    step_calls = trace_mamba_calls(lambda: train_step(probe))

    peak_tool = PeakRss()
    print("machine")
    print(f"  cpu              {cpu['model']} ({cpu['logical_cpus']} logical CPUs)")
    print("  isa              " + " ".join(f"{k}={'yes' if v else 'no'}" for k, v in cpu["isa"].items()))
    print(f"  python           {platform.python_version()}  torch {torch.__version__}  "
          f"transformers {transformers.__version__}")
    print(f"  torch threads    {torch.get_num_threads()} (interop {torch.get_num_interop_threads()})")
    print("model")
    print(f"  shape            {'tiny smoke shape' if args.tiny else 'mamba-130m'}: hidden {config.hidden_size}, "
          f"layers {config.num_hidden_layers}, intermediate {config.intermediate_size}, "
          f"state {config.state_size}, conv {config.conv_kernel}, dt_rank {config.time_step_rank}, "
          f"vocab {config.vocab_size}")
    print(f"  parameters       {n_params:,} float32, embeddings tied: {'yes' if tied else 'NO'}")
    print(f"  optimizer        torch.optim.AdamW lr={args.lr} weight_decay={args.weight_decay} "
          f"(foreach={optimizer.defaults.get('foreach')}, fused={optimizer.defaults.get('fused')})")
    print("code path")
    print(f"  mamba_ssm        {'installed' if have_mamba_ssm else 'not installed'}; "
          f"causal_conv1d {'installed' if have_causal_conv1d else 'not installed'}")
    print(f"  forward          {describe_path(forward_calls)}")
    print(f"  training step    {describe_path(step_calls)}")
    print("  (on the CPU the slow eager \"torch\" path is expected: the fused kernels are CUDA-only)")
    print(f"  peak memory via  {peak_tool.method}")
    sys.stdout.flush()

    results = []
    for L in args.lengths:
        ids = torch.randint(0, config.vocab_size, (1, L),
                            generator=torch.Generator().manual_seed(args.seed + L))
        row: dict = {"length": L, "tokens": L}
        for phase, fn in (("forward", forward_only), ("step", train_step)):
            for _ in range(args.warmup):
                out = fn(ids)
                del out
            times = []
            base = current_rss_bytes()
            with PeakRss() as peak:
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    out = fn(ids)
                    times.append(time.perf_counter() - t0)
                    del out
            entry = summarise(times, L)
            entry["rss_before_bytes"] = base
            entry["peak_rss_bytes"] = peak.peak
            entry["peak_rss_above_before_per_token_bytes"] = max(peak.peak - base, 0) / L
            row[phase] = entry
            s = entry["seconds"]
            print(f"L={L:6d} {phase:8s} median {s['median']:9.3f} s  (min {s['min']:.3f}, max {s['max']:.3f})  "
                  f"{entry['tokens_per_s']['median']:10.1f} tokens/s  peak RSS {peak.peak / 2**20:8.1f} MiB, "
                  f"{entry['peak_rss_above_before_per_token_bytes'] / 2**10:8.1f} KiB/token above the "
                  f"{base / 2**20:.1f} MiB before")
            sys.stdout.flush()
        row["step_over_forward"] = row["step"]["seconds"]["median"] / row["forward"]["seconds"]["median"]
        print(f"L={L:6d} step / forward = {row['step_over_forward']:.2f}")
        row.update({
            "machine": {"cpu": cpu["model"], "logical_cpus": cpu["logical_cpus"], "isa": cpu["isa"]},
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": torch.get_num_threads(),
            "shape": "tiny" if args.tiny else "mamba-130m",
            "config": shape,
            "tied_embeddings": tied,
            "parameters": n_params,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "forward_path": describe_path(forward_calls),
            "step_path": describe_path(step_calls),
            "step_calls": step_calls,
            "memory_method": peak_tool.method,
        })
        results.append(row)

    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
        os.replace(args.json + ".tmp", args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
