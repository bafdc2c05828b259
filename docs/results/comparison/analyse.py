"""The comparison's front reports (public API only): fronts.md + fronts_*.png per experiment,
and a gap figure per experiment (each method's aux gap to Bloop at matched main loss, seeds)."""
import sys
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from torchbloop.experiments.analysis import fronts as F
from torchbloop.experiments.sweep.results import read_records
from torchbloop.methods import METHODS

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/comparison")
TITLES = {"quadratic": "quadratic (smoke budget)", "smooth_mlp_mnist": "smooth_mlp_mnist (default budget)"}
for exp in sys.argv[2:] or ["quadratic", "smooth_mlp_mnist"]:
    recs = read_records(OUT, exp)
    present = {r["spec"]["method"] for r in recs}
    others = [m for m in METHODS if m != "bloop" and m in present]
    pairs = [("bloop", "mixed")] + [(m, "bloop") for m in others if m != "mixed"]
    # the methods without lam are single points, maybe beyond Bloop's front: also against Mixed
    pairs += [(m, "mixed") for m in others if not METHODS[m].takes_lam]
    print(F.write_front_report(recs, OUT / exp, title=TITLES[exp], pairs=pairs))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, split in zip(axes, ("train", "eval")):
        points = F.end_points(recs, split)
        ys = []
        for i, m in enumerate(others):
            r = F.compare(points, m, "bloop")
            unit = "log10 aux" if r.space.log_aux else "aux"
            vals = [v for v in r.gap.values if np.isfinite(v)]
            ax.scatter([i] * len(vals), vals, color=METHODS[m].colour, s=18, zorder=3)
            if vals:
                ax.errorbar([i], [r.gap.mean], yerr=[[2 * (r.gap.se if r.gap.n > 1 else 0)]] * 2,
                            color="k", marker="_", ms=14, capsize=3, zorder=2)
            else:
                ax.text(i, 0, "n/a:\nno overlap", ha="center", va="bottom", fontsize=7)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xticks(range(len(others)), [METHODS[m].label for m in others], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(f"{unit}: method - Bloop (< 0: method lower)")
        ax.set_title(f"{exp} ({split}): gap to Bloop, dots = seeds, bar = mean ± 2 se", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / exp / "gaps_vs_bloop.png", dpi=110)
    plt.close(fig)
    print(OUT / exp / "gaps_vs_bloop.png")
