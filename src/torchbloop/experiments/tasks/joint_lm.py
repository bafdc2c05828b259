"""Joint training of a byte-level language model on two domains (the paper's Sec. 5.4, Fig. 5-6).

Main loss: next-byte cross-entropy on a large corpus, Jane Austen's six novels (3.95 M bytes).
Aux loss: next-byte cross-entropy on a small corpus of another domain, two Shakespeare tragedies
(Hamlet and Macbeth, 0.28 M bytes): verse drama with Early Modern English ("thou", "'d"),
speaker tags and stage directions, against Regency prose. Held-out text of each domain: the
last 5% of every novel and the last 10% of each play. Losses are nats per byte, averaged over
fixed, evenly spaced held-out windows (the same bytes at every eval point and in every run).

A decoder-only transformer (``models.CausalLM``) is trained with Adam (lr 2e-3 as in the
paper, linear warm-up then cosine decay to 0), the same for every method and lam; each step
draws one batch of main windows and one of aux windows (the batch order depends on the seed
only). :func:`mixed_loss_plot` draws the paper's Fig. 6: for every t in [0, 1], the lowest
``(1 - t) L_main + t L_aux`` over each method's end points (eval losses).

:func:`lm_run` is shared with the EMA ablation (:mod:`.ema_ablation`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import data as datasets
from ..analysis.plots import curve_plot, group_records, method_colour
from ..data.text_batches import WindowSampler, encode, eval_windows, holdout_split
from ..models import CausalLM, count_parameters
from ..sweep.registry import Experiment, Record, RunSpec, register
from ..sweep.training import cosine_with_warmup, set_seed, train

AUX_PLAYS = ("hamlet", "macbeth")
MAIN_EVAL_FRACTION = 0.05
AUX_EVAL_FRACTION = 0.10


@dataclass(frozen=True)
class LMConfig:
    """Model, batch and schedule of one budget (recorded in each run's ``config``)."""

    d_model: int
    n_layers: int
    n_heads: int
    seq_len: int
    batch_size: int
    steps: int
    eval_points: int
    eval_windows: int
    lr: float = 2e-3
    warmup_fraction: float = 0.05


LM_CONFIGS = {
    "smoke": LMConfig(
        d_model=32,
        n_layers=1,
        n_heads=2,
        seq_len=32,
        batch_size=8,
        steps=12,
        eval_points=3,
        eval_windows=16,
    ),
    "default": LMConfig(
        d_model=64,
        n_layers=2,
        n_heads=4,
        seq_len=64,
        batch_size=16,
        steps=400,
        eval_points=8,
        eval_windows=64,
    ),
    "paper": LMConfig(
        d_model=128,
        n_layers=4,
        n_heads=4,
        seq_len=128,
        batch_size=32,
        steps=5000,
        eval_points=50,
        eval_windows=512,
    ),
}
LAMS = {
    "smoke": (0.0, 1.0),
    "default": (0.0, *np.logspace(-3, 1, 6).tolist()),
    "paper": (0.0, *np.logspace(-4, 1, 16).tolist()),
}


_CACHE: dict[tuple[object, ...], dict[str, torch.Tensor]] = {}


def load_corpora() -> dict[str, torch.Tensor]:
    """``{"train_main", "eval_main", "train_aux", "eval_aux"}`` as flat uint8 byte tensors.

    Cached per process (a sweep worker runs many runs), keyed by the loader functions.
    """
    key = (datasets.load_austen, datasets.load_shakespeare)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = _build_corpora()
    return _CACHE[key]


def _build_corpora() -> dict[str, torch.Tensor]:
    books = datasets.load_austen()
    plays = datasets.load_shakespeare()
    missing = [p for p in AUX_PLAYS if p not in plays]
    if missing:
        raise ValueError(f"Invalid Shakespeare data: plays {missing} absent; re-fetch the dataset")
    parts: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("train_main", "eval_main", "train_aux", "eval_aux")
    }
    for text in books.values():
        tr, ev = holdout_split(encode(text + "\n\n"), MAIN_EVAL_FRACTION)
        parts["train_main"].append(tr)
        parts["eval_main"].append(ev)
    for name in AUX_PLAYS:
        tr, ev = holdout_split(encode(plays[name] + "\n\n"), AUX_EVAL_FRACTION)
        parts["train_aux"].append(tr)
        parts["eval_aux"].append(ev)
    return {k: torch.cat(v) for k, v in parts.items()}


def _mean_loss(model: CausalLM, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Token-weighted mean next-byte loss over fixed batches."""
    total, count = 0.0, 0
    for x, y in batches:
        total += float(model.loss(x, y)) * y.numel()
        count += y.numel()
    return total / count


def lm_run(spec: RunSpec, cfg: LMConfig, note: str = "") -> Record:
    """Train the byte-level LM of ``cfg`` with the surgeon of ``spec`` and return the record."""
    generator = set_seed(spec.seed)
    corpora = load_corpora()
    model = CausalLM(
        d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads, max_len=cfg.seq_len
    )
    main_sampler = WindowSampler(
        corpora["train_main"], batch_size=cfg.batch_size, seq_len=cfg.seq_len, generator=generator
    )
    aux_sampler = WindowSampler(
        corpora["train_aux"],
        batch_size=cfg.batch_size,
        seq_len=cfg.seq_len,
        generator=torch.Generator().manual_seed(1_000_003 + spec.seed),
    )
    fixed = {
        k: eval_windows(v, n_windows=cfg.eval_windows, seq_len=cfg.seq_len, batch_size=64)
        for k, v in corpora.items()
    }
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = cosine_with_warmup(
        optimizer, total_steps=cfg.steps, warmup_steps=round(cfg.warmup_fraction * cfg.steps)
    )
    config: dict[str, Any] = {
        **asdict(cfg),
        "parameters": count_parameters(model),
        "main": "Jane Austen, 6 novels (last 5% of each held out)",
        "aux": f"Shakespeare {', '.join(AUX_PLAYS)} (last 10% of each held out)",
        "bytes": {k: len(v) for k, v in corpora.items()},
        "optimizer": "Adam",
        "schedule": "linear warm-up, cosine to 0",
        "loss_unit": "nats per byte",
    }
    if note:
        config["note"] = note
    return train(
        spec,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        batches=zip(main_sampler, aux_sampler, strict=False),
        main_loss=lambda m, batch: model.loss(*batch[0]),
        aux_loss=lambda m, batch: model.loss(*batch[1]),
        steps=cfg.steps,
        evaluate=lambda: {k: _mean_loss(model, b) for k, b in fixed.items()},
        eval_every=max(1, cfg.steps // cfg.eval_points),
        config=config,
    )


def run(spec: RunSpec) -> Record:
    """One run of the joint LM experiment under ``spec.budget``."""
    return lm_run(spec, LM_CONFIGS[spec.budget])


def mixed_loss_envelopes_by_seed(
    records: Sequence[Record], ts: Sequence[float], split: str = "eval"
) -> dict[str, dict[int, list[float]]]:
    """Per method group and seed: ``min over the seed's end points of (1 - t) L_main + t L_aux``.

    Example:
        >>> r = {"spec": {"method": "mixed", "rho": 0.01, "lam": 0.0, "seed": 3},
        ...      "final": {"eval_main": 1.0, "eval_aux": 3.0}}
        >>> mixed_loss_envelopes_by_seed([r], [0.0, 0.5, 1.0])
        {'Mixed': {3: [1.0, 2.0, 3.0]}}
    """
    out: dict[str, dict[int, list[float]]] = {}
    for label, recs in group_records(records).items():
        by_seed: dict[int, list[tuple[float, float]]] = {}
        for r in recs:
            p = (r["final"][f"{split}_main"], r["final"][f"{split}_aux"])
            if math.isfinite(p[0]) and math.isfinite(p[1]):
                by_seed.setdefault(int(r["spec"].get("seed", 0)), []).append(p)
        out[label] = {
            seed: [min((1 - t) * a + t * b for a, b in pts) for t in ts]
            for seed, pts in sorted(by_seed.items())
        }
    return out


def mixed_loss_envelopes(
    records: Sequence[Record], ts: Sequence[float], split: str = "eval"
) -> dict[str, list[float]]:
    """Per method group: the seed mean of :func:`mixed_loss_envelopes_by_seed` for each t.

    With one seed, ``min over the end points of (1 - t) L_main + t L_aux``; with several, each
    seed's envelope first (a minimum over more end points would favour nothing but the seed
    count), then their mean.

    Example:
        >>> r = {"spec": {"method": "mixed", "rho": 0.01, "lam": 0.0},
        ...      "final": {"eval_main": 1.0, "eval_aux": 3.0}}
        >>> mixed_loss_envelopes([r], [0.0, 0.5, 1.0])
        {'Mixed': [1.0, 2.0, 3.0]}
    """
    out = {}
    for label, seeds in mixed_loss_envelopes_by_seed(records, ts, split).items():
        rows = np.array(list(seeds.values()), dtype=np.float64).reshape(-1, len(ts))
        out[label] = rows.mean(axis=0).tolist() if len(rows) else [math.nan] * len(ts)
    return out


def mixed_loss_plot(records: Sequence[Record], out_dir: Path) -> list[Path]:
    """The paper's Fig. 6: best mixed eval loss per method vs t, and its gap to Mixed's.

    With several seeds: the mean of the per-seed envelopes, and a band from the smallest to
    the largest seed's (the difference panel pairs each seed with Mixed's same seed).
    """
    ts = np.linspace(0, 1, 41).tolist()
    env = mixed_loss_envelopes_by_seed(records, ts)
    groups = group_records(records)
    ref = env.get("Mixed")
    curves: list[dict[str, Any]] = []
    n = max((len(v) for v in env.values()), default=0)
    for label, seeds in env.items():
        if not seeds:
            continue
        color = method_colour(groups[label][0]["spec"]["method"])
        common = {"x": ts, "label": label, "color": color, "xlabel": "t"}
        rows = np.array(list(seeds.values()), dtype=np.float64)
        curves.append(
            {
                **common,
                "y": rows.mean(axis=0).tolist(),
                "band": (rows.min(axis=0).tolist(), rows.max(axis=0).tolist()),
                "panel": "min over lam of (1-t) L_main + t L_aux (eval)",
                "ylabel": "mixed eval loss (nats/byte)",
            }
        )
        paired = sorted(set(seeds) & set(ref or {}))
        if ref is not None and paired:
            diff = np.array([np.subtract(seeds[s], ref[s]) for s in paired])
            curves.append(
                {
                    **common,
                    "y": diff.mean(axis=0).tolist(),
                    "band": (diff.min(axis=0).tolist(), diff.max(axis=0).tolist()),
                    "panel": "same, minus Mixed's (below 0 = better than Mixed)",
                    "ylabel": "difference (nats/byte)",
                }
            )
    title = "Mixed loss of the end points vs t (paper's Fig. 6)"
    if n > 1:
        title += f"; mean of {n} seeds' envelopes, band: min-max over seeds"
    return [curve_plot(curves, out_dir / "mixed_loss.png", title)]


register(
    Experiment(
        name="joint_lm",
        title="Joint training of a byte-level LM: Jane Austen (main) + Shakespeare (aux)",
        paper_ref="Sec. 5.4, Fig. 5-6",
        kind="sweep",
        run=run,
        lams=LAMS,
        datasets=("austen", "shakespeare"),
        plot=mixed_loss_plot,
        description=(
            "Decoder-only byte-level transformer. Main: next-byte loss on Jane Austen's six novels "
            "(3.95 M bytes); aux: next-byte loss on a small corpus of another domain, Shakespeare's "
            "Hamlet + Macbeth (0.25 M training bytes). Eval: held-out tails (5% of each novel, 10% "
            "of each play). Default budget: d_model 64, 2 layers, 4 heads, 0.14 M parameters, "
            "context 64 bytes, batch 16 main + 16 aux windows, 400 Adam steps (lr 2e-3, 5% warm-up, "
            "cosine to 0; about 0.4 M main bytes seen, the aux corpus about 1.6 times), identical for every method and lam; default lam grid: 0 and logspace(-3, 1, 6); Bloop "
            "rho = 0.01; one seed. The paper used a 12-layer model, 16 lams in [1e-4, 10]. "
            "Paper's claim: Bloop's front is clearly better, also on eval losses. `mixed_loss.png` "
            "is Fig. 6: for each t, the best (1-t) L_main + t L_aux over a method's end points."
        ),
    )
)
