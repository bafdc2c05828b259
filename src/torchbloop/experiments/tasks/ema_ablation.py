"""EMA ablation (the paper's Sec. 5.5): Bloop's rho on the joint LM task, lam = 0.2.

Same data, model, optimizer and batches as :mod:`.joint_lm` (its budget's configuration, with
:data:`STEPS_FACTOR` times as many steps so that the slowest EMA, ``rho = 0.001``, averages
over a window comparable to the run), lam = 0.2, Bloop with ``rho`` in {0.001, 0.01, 0.1, 0.9},
and Mixed at the same lam as the reference. The rho grid is the experiment's default ``rhos``
(``torchbloop run ema_ablation --rho ...`` overrides it); the runner gives Mixed one run.

Paper's claim: rho = 0.001 is stale (bad on both losses), rho = 0.9 behaves like Mixed, and
0.01-0.1 trade one loss against the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..analysis.plots import curve_plot, group_records
from ..sweep.registry import Experiment, Record, RunSpec, register
from .joint_lm import LM_CONFIGS, lm_run

LAM = 0.2
RHOS = (0.001, 0.01, 0.1, 0.9)
STEPS_FACTOR = 3


def run(spec: RunSpec) -> Record:
    """One run: the joint LM setup of ``spec.budget`` with ``STEPS_FACTOR`` x the steps."""
    base = LM_CONFIGS[spec.budget]
    cfg = replace(base, steps=STEPS_FACTOR * base.steps, eval_points=2 * base.eval_points)
    return lm_run(spec, cfg, note=f"joint_lm setup with {STEPS_FACTOR}x the steps")


def plot(records: Sequence[Record], out_dir: Path) -> list[Path]:
    """Eval (and train) main and aux losses over training: a colour per rho (Mixed in black),
    one line per seed."""
    groups = group_records(records)
    curves = []
    for gi, (label, recs) in enumerate(groups.items()):
        color = "k" if recs[0]["spec"]["method"] != "bloop" else f"C{gi}"
        n = len({r["spec"].get("seed", 0) for r in recs})
        for i, r in enumerate(recs):
            t = r["trajectory"]
            for key, panel in (
                ("eval_main", "eval main loss (Austen)"),
                ("eval_aux", "eval aux loss (Shakespeare)"),
                ("train_aux", "train aux loss (Shakespeare)"),
            ):
                # Skip step 0 (loss ~ln 256 for all) so the differences stay visible.
                curves.append(
                    {
                        "x": t["step"][1:],
                        "y": t[key][1:],
                        # one legend entry per group, however many seeds it has
                        "label": (f"{label} ({n} seeds)" if n > 1 else label) if i == 0 else None,
                        "color": color,
                        "panel": panel,
                        "xlabel": "step",
                        "ylabel": "nats per byte",
                    }
                )
    return [
        curve_plot(
            curves,
            out_dir / "ema_curves.png",
            f"EMA ablation (lam = {LAM:g}): losses over training per rho, one line per seed",
        )
    ]


register(
    Experiment(
        name="ema_ablation",
        title="EMA ablation on the joint LM task: Bloop's rho swept at lam = 0.2",
        paper_ref="Sec. 5.5",
        kind="sweep",
        run=run,
        methods=("bloop", "mixed"),
        lams={"smoke": (LAM,), "default": (LAM,), "paper": (LAM,)},
        rhos=RHOS,
        datasets=("austen", "shakespeare"),
        plot=plot,
        description=(
            "The joint LM experiment (`joint_lm`: Austen main, Shakespeare aux, same model, "
            "Adam lr 2e-3, batches) at lam = 0.2 with 3x its steps (default budget: 1200), Bloop "
            "with rho in {0.001, 0.01, 0.1, 0.9} by default and Mixed at lam = 0.2 as the reference. "
            "`ema_curves.png` shows the losses over training. Paper's claim: rho = 0.001 is "
            "stale (bad on both losses), rho = 0.9 is close to Mixed, 0.01-0.1 trade off."
        ),
    )
)
