#!/usr/bin/env python3
"""Recall/QPS curves from bench_ann's CSV: one line per index, one point per setting.

usage: plot_recall_qps.py results.csv out.png [--title TEXT]
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rows = list(csv.DictReader(open(sys.argv[1])))
    title = sys.argv[sys.argv.index("--title") + 1] if "--title" in sys.argv else ""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    styles = {"exact": ("black", "*"), "flat": ("grey", "s"), "hnsw": ("tab:blue", "o"), "ivfpq": ("tab:orange", "^")}
    for ax, k in zip(axes, ("10", "100")):
        for name, (color, marker) in styles.items():
            pts = [r for r in rows if r["index"] == name]
            if not pts:
                continue
            x = [float(r[f"recall_at_{k}"]) for r in pts]
            y = [float(r[f"qps_k{k}"]) for r in pts]
            label = {"exact": "exact (ssm::ExactIndex)", "flat": "FAISS Flat", "hnsw": "FAISS HNSW32 (efSearch 16–512)",
                     "ivfpq": "FAISS " + pts[0]["setting"].split(" ")[0] + " (nprobe 1–256)"}[name]
            ax.plot(x, y, marker=marker, color=color, label=label, linestyle="-" if len(pts) > 1 else "none")
        ax.set_yscale("log")
        ax.set_xlabel(f"recall@{k} (against the exact top-{k})")
        ax.set_ylabel(f"queries/s (k = {k})")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlim(0, 1.02)
    axes[0].legend(fontsize=8, loc="lower left")
    r0 = rows[0]
    fig.suptitle(title or f"{int(r0['docs']):,} × {r0['dim']} seeded vectors, {r0['queries']} queries")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)
    print("wrote", sys.argv[2])


if __name__ == "__main__":
    main()
