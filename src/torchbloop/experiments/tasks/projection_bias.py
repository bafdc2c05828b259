"""Projection bias (the paper's Fig. 2): projecting on a noisy gradient drifts to Mixed.

With ``g`` the true main gradient (unit norm, p = 100), ``a`` the aux gradient (unit norm,
cosine -0.5 with ``g``) and a noisy batch gradient ``g_n = g + sigma * xi`` with
``xi ~ N(0, I / p)`` (so ``||g_n - g|| ~ sigma``: sigma is the noise-to-signal ratio), the
direction without EMA is ``d_simple = g_n + lam * pi(a; g_n)``. A Monte Carlo estimate of
``E[d_simple]`` is compared with ``d_bloop = g + lam * pi(a; g)`` and
``d_mixed = g + lam * a``, vs sigma on a log grid. ``t`` is the position of ``E[d_simple]``
along the segment from ``d_bloop`` (t = 0) to ``d_mixed`` (t = 1); for sigma -> inf it tends
to ``1 - 1/p``. (Projecting on an EMA ``e`` that does not depend on the batch gives
``E[d] = g + lam * pi(a; e)`` exactly, i.e. ``d_bloop`` when ``e = g``: nothing to estimate.)
Only the bounded term ``lam * pi(a; g_n)`` is sampled (``E[g_n] = g`` exactly), so the Monte
Carlo error stays below ``lam / sqrt(samples)``. Claim: switch near sigma ~ 1.
Computed in float64 with torch directly (a diagnostic of the maths, not of the library).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..sweep.registry import Experiment, Record, RunSpec, register
from ..sweep.training import torch_threads

P = 100
COSINE = -0.5
SIGMAS = {"smoke": (-2, 2, 9), "default": (-2, 2, 33), "paper": (-3, 3, 61)}
SAMPLES = {"smoke": 4_000, "default": 50_000, "paper": 400_000}
CHUNK = 50_000


def _project(a: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``pi(a; e) = a - <a, e> / ||e||^2 e`` for each row ``e``."""
    coef = (e @ a) / (e * e).sum(dim=-1)
    return a - coef.unsqueeze(-1) * e


def _run(spec: RunSpec) -> Record:
    """Monte Carlo estimate of ``E[d_simple]`` over the sigma grid of ``spec.budget``."""
    gen = torch.Generator().manual_seed(spec.seed)
    g = torch.randn(P, generator=gen, dtype=torch.float64)
    g /= g.norm()
    v = torch.randn(P, generator=gen, dtype=torch.float64)
    v -= (v @ g) * g
    v /= v.norm()
    a = COSINE * g + math.sqrt(1 - COSINE**2) * v
    lam = spec.lam
    d_bloop = g + lam * _project(a, g.unsqueeze(0))[0]
    d_mixed = g + lam * a
    seg = d_mixed - d_bloop
    sigmas = np.logspace(*SIGMAS[spec.budget]).tolist()
    n = SAMPLES[spec.budget]
    to_bloop, to_mixed, t_simple, stderr = [], [], [], []
    for sigma in sigmas:
        # E[d_simple] = g + E[noise] + lam E[pi(a; g_n)] with E[noise] = 0 exactly: only the
        # bounded projection term is estimated (||pi|| <= ||a||), so the MC error stays small.
        total = torch.zeros(P, dtype=torch.float64)
        total_sq = torch.zeros(P, dtype=torch.float64)
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            gn = g + sigma / math.sqrt(P) * torch.randn(m, P, generator=gen, dtype=torch.float64)
            proj = _project(a, gn)
            total += proj.sum(0)
            total_sq += (proj * proj).sum(0)
        mean_proj = total / n
        var = (total_sq / n - mean_proj * mean_proj).clamp_min(0)
        mean = g + lam * mean_proj
        stderr.append(float(lam * var.sum().sqrt() / math.sqrt(n) / seg.norm()))
        to_bloop.append(float((mean - d_bloop).norm() / seg.norm()))
        to_mixed.append(float((mean - d_mixed).norm() / seg.norm()))
        t_simple.append(float((mean - d_bloop) @ seg / (seg @ seg)))
    diff = np.array(to_bloop) - np.array(to_mixed)
    cross = np.flatnonzero(np.diff(np.sign(diff)) != 0)
    switch = math.nan
    if cross.size:
        i = int(cross[0])
        ls = np.log10(sigmas)
        switch = float(10 ** (ls[i] - diff[i] * (ls[i + 1] - ls[i]) / (diff[i + 1] - diff[i])))
    common = {"x": sigmas, "xlabel": "noise level sigma (||g_n - g|| / ||g||)", "xscale": "log"}
    dist = {
        **common,
        "ylabel": "||E[d] - d_ref|| / ||d_mixed - d_bloop||",
        "panel": "distance of the MC mean",
    }
    return {
        "config": {
            "p": P,
            "cosine_main_aux": COSINE,
            "samples": n,
            "sigmas": sigmas,
            "dtype": "float64",
        },
        "curves": {
            "to_bloop": {**dist, "y": to_bloop, "label": "E[d_simple] to d_bloop"},
            "to_mixed": {**dist, "y": to_mixed, "label": "E[d_simple] to d_mixed"},
            "t_limit": {
                **common,
                "y": [1 - 1 / P] * len(sigmas),
                "label": "limit 1 - 1/p (isotropic noise)",
                "panel": "position t (0 = Bloop, 1 = Mixed)",
                "ylabel": "t (0 = d_bloop, 1 = d_mixed)",
                "linestyle": "--",
            },
            "mc_stderr": {**dist, "y": stderr, "label": "MC standard error", "linestyle": ":"},
            "t": {
                **common,
                "y": t_simple,
                "label": "E[d_simple]",
                "panel": "position t (0 = Bloop, 1 = Mixed)",
                "ylabel": "t (0 = d_bloop, 1 = d_mixed)",
            },
        },
        "extra": {"sigma_switch": switch, "t_limit_large_sigma": 1 - 1 / P},
    }


def run(spec: RunSpec) -> Record:
    """One run of this experiment (single torch thread: the problem is tiny)."""
    with torch_threads(1):
        return _run(spec)


register(
    Experiment(
        name="projection_bias",
        title="Projection bias of gradient surgery without EMA (Monte Carlo)",
        paper_ref="Fig. 2",
        kind="analysis",
        run=run,
        methods=("bloop",),
        lams={"smoke": (1.0,), "default": (1.0,), "paper": (1.0,)},
        description=(
            "Monte Carlo estimate of E[g_n + lam pi(g_aux; g_n)] for a noisy main gradient g_n "
            "(p = 100, unit gradients at cosine -0.5, lam = 1), compared with Bloop's direction "
            "(projection on the true g_main) and Mixed's. The method and lam of a run only label "
            "it; every run computes all curves. `sigma_switch` is where the MC mean becomes closer "
            "to d_mixed than to d_bloop. Paper's claim: the switch happens near sigma ~ 1."
        ),
    )
)
