#!/usr/bin/env python3
"""Plot training loss against step from ssm-train --log files.

Usage: plot_training_log.py LOG.jsonl [LOG2.jsonl ...] --out curve.png
                            [--smooth 0.9] [--logy] [--title TEXT]

Each log holds one JSON object a line. Lines with "step" and "loss" are training steps
({"step", "loss", "lr", "tokens_per_s"}, other keys allowed): their loss is drawn raw
(thin, faint) and smoothed (an exponential moving average, bias-corrected, weight
--smooth; 0 draws the raw curve only). Lines with "step" and a metric such as
"ndcg@10" (any key holding "@" or starting with "eval") are evaluations: when a log has any, a second panel shows
them against step; ssm-train's evaluation lines, {"step", "eval": {...}}, give their
"bits_per_byte", "loss" (as "eval ...") and "...@k" entries. Blank lines are skipped; any other line is an error naming it.
"""

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402



def is_metric(key):
    """Evaluation keys: "ndcg@10", "mrr@10", "r@100", "eval_loss", ..."""
    return "@" in key or key.startswith("eval")


def read_log(path):
    steps, losses, evals = [], [], {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{number}: not JSON: {e}")
            if not isinstance(rec, dict) or "step" not in rec:
                sys.exit(f"{path}:{number}: expected an object with a \"step\"")
            if "loss" in rec and rec["loss"] is not None:
                steps.append(float(rec["step"]))
                losses.append(float(rec["loss"]))
            items = list(rec.items())
            if isinstance(rec.get("eval"), dict):  # ssm-train: {"step", "eval": {metric: value}}
                items = [(k, v) for k, v in rec["eval"].items()
                         if k in ("bits_per_byte", "loss") or "@" in k]
                items = [("eval " + k if "@" not in k else k, v) for k, v in items]
            for key, value in items:
                if is_metric(key) and isinstance(value, (int, float)):
                    evals.setdefault(key, []).append((float(rec["step"]), float(value)))
    return steps, losses, evals


def ema(values, weight):
    """Bias-corrected exponential moving average (TensorBoard's smoothing)."""
    out, acc = [], 0.0
    for i, v in enumerate(values, 1):
        acc = weight * acc + (1 - weight) * v
        out.append(acc / (1 - weight ** i))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("logs", nargs="+", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--smooth", type=float, default=0.9, help="EMA weight in [0, 1)")
    ap.add_argument("--logy", action="store_true", help="log-scale loss axis")
    ap.add_argument("--title")
    args = ap.parse_args()
    if not 0 <= args.smooth < 1:
        ap.error("--smooth must lie in [0, 1)")

    logs = [(p, *read_log(p)) for p in args.logs]
    if not any(steps for _, steps, _, _ in logs):
        sys.exit("no training steps (lines with \"step\" and \"loss\") in the logs")
    has_evals = any(evals for *_, evals in logs)
    fig, axes = plt.subplots(2 if has_evals else 1, 1, figsize=(9, 7 if has_evals else 4.5),
                             sharex=True, squeeze=False)
    ax = axes[0][0]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (path, steps, losses, evals) in enumerate(logs):
        c = colours[i % len(colours)]
        label = path.stem if len(logs) > 1 else "loss"
        if args.smooth > 0:
            ax.plot(steps, losses, color=c, alpha=0.25, linewidth=0.8)
            ax.plot(steps, ema(losses, args.smooth), color=c, linewidth=1.8,
                    label=f"{label} (EMA {args.smooth:g})")
        else:
            ax.plot(steps, losses, color=c, linewidth=1.2, label=label)
        if has_evals:
            for j, (key, points) in enumerate(sorted(evals.items())):
                xs, ys = zip(*points)
                axes[1][0].plot(xs, ys, color=c, marker="o", markersize=3,
                                linestyle=["-", "--", ":", "-."][j % 4],
                                label=f"{path.stem} {key}" if len(logs) > 1 else key)
    ax.set_ylabel("loss")
    if args.logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if has_evals:
        axes[1][0].set_ylabel("evaluation")
        axes[1][0].grid(True, alpha=0.3)
        axes[1][0].legend()
    axes[-1][0].set_xlabel("step")
    if args.title:
        ax.set_title(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
