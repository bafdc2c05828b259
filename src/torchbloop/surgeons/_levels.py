"""K-level Bloop on torch ops (method.md section 7): one Gram matrix, then one combination.

``d = g_0 + sum_k lam_k P_k g_k`` with ``P_k`` the projection off ``span(e_0, .., e_{k-1})``,
computed from the Gram matrix of the vectors ``[g_0, .., g_K, e_0, .., e_{K-1}]`` by
Gram-Schmidt on the EMAs in coefficient space (an EMA whose residual is zero or below a
relative tolerance of its own squared norm adds no direction). All scalar work happens on the
device in float64, without host synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from ..functional import Reducer, add_scaled_, ema_update_, global_dots

_TOL = 64.0
"""Residual test: an EMA is independent when ``||r||^2 > _TOL * eps * ||e||^2``."""


class LevelsResult(NamedTuple):
    direction: list[Tensor]
    diagnostics: tuple[Tensor, ...] | None


def level_coefficients(gram: Tensor, k: int, eps: float) -> tuple[Tensor, Tensor]:
    """``(C, skipped)``: ``P_j g_j = g_j - sum_l C[j-1, l] e_l`` for the levels ``j = 1..k``.

    ``gram`` is the ``[2k+1, 2k+1]`` Gram matrix over ``[g_0..g_k, e_0..e_{k-1}]`` (float64).
    ``skipped[j-1]``: no EMA above level j adds a direction (nothing projected out).
    """
    n_g = k + 1
    g_ee = gram[n_g:, n_g:]
    dev, dt = gram.device, gram.dtype
    basis = torch.zeros(k, k, dtype=dt, device=dev)  # rows: u_j in terms of e_0..e_{k-1}
    inv_norm = torch.zeros(k, dtype=dt, device=dev)  # 1 / ||u_j||^2, 0 when u_j is dropped
    for j in range(k):
        t = torch.zeros(k, dtype=dt, device=dev)
        t[j] = 1.0
        for i in range(j):  # modified Gram-Schmidt, in coefficient space
            t = t - (t @ g_ee @ basis[i]) * inv_norm[i] * basis[i]
        uu = t @ g_ee @ t
        ee = g_ee[j, j]
        keep = torch.isfinite(uu) & (ee > 0) & (uu > _TOL * eps * ee)
        basis[j] = t
        inv_norm[j] = torch.where(keep, 1.0 / torch.where(keep, uu, torch.ones_like(uu)), 0.0)
    coefs = torch.zeros(k, k, dtype=dt, device=dev)
    skipped = torch.zeros(k, dtype=torch.bool, device=dev)
    for level in range(1, k + 1):
        b = gram[level, n_g:]  # <g_level, e_l>
        c = torch.zeros(k, dtype=dt, device=dev)
        for i in range(level):
            c = c + (basis[i] @ b) * inv_norm[i] * basis[i]
        coefs[level - 1] = c
        skipped[level - 1] = (inv_norm[:level] == 0).all()
    return coefs, skipped


def bloop_levels_(
    grads: Sequence[list[Tensor]],
    emas: Sequence[list[Tensor]],
    *,
    lams: Sequence[float],
    rhos: Sequence[float],
    ema_order: Literal["paper", "code"],
    out: list[Tensor] | None,
    foreach: bool,
    reduce: Reducer | None,
    diagnostics: bool = False,
) -> LevelsResult:
    """The K-level direction; updates the EMAs in place (level k takes ``g_k``)."""
    k = len(lams)
    if ema_order == "code":
        for e, g, rho in zip(emas, grads, rhos):
            ema_update_(e, g, rho=rho, foreach=foreach)
    vectors = [*grads, *emas]
    pairs = [(a, b) for a in range(len(vectors)) for b in range(a, len(vectors))]
    dots = global_dots([(vectors[a], vectors[b]) for a, b in pairs], reduce=reduce).double()
    gram = torch.zeros(len(vectors), len(vectors), dtype=torch.float64, device=dots.device)
    for n, (a, b) in enumerate(pairs):
        gram[a, b] = gram[b, a] = dots[n]
    eps = torch.finfo(grads[0][0].dtype if grads[0] else torch.float32).eps
    coefs, skipped = level_coefficients(gram, k, float(eps))
    lam_t = torch.tensor(lams, dtype=torch.float64, device=gram.device)
    e_coef = -(lam_t[:, None] * coefs).sum(0)  # direction's coefficient of each e_l
    # direction = g_0 + sum lam_k g_k + sum_l e_coef[l] e_l
    direction = [g.clone() for g in grads[0]] if out is None else out
    if out is not None:  # out aliases grads[-1]: start from lam_K g_K
        for t in direction:
            t.mul_(lams[-1])
        add_scaled_(direction, 1.0, grads[0], foreach=foreach)
        rest = range(1, k)
    else:
        rest = range(1, k + 1)
    for level in rest:
        add_scaled_(direction, lams[level - 1], grads[level], foreach=foreach)
    for level in range(k):
        add_scaled_(direction, e_coef[level], emas[level], foreach=foreach)
    diag = _diagnostics(gram, coefs, skipped, lam_t) if diagnostics else None
    if ema_order == "paper":
        for e, g, rho in zip(emas, grads, rhos):
            ema_update_(e, g, rho=rho, foreach=foreach)
    return LevelsResult(direction, diag)


def _diagnostics(gram: Tensor, coefs: Tensor, skipped: Tensor, lams: Tensor) -> tuple[Tensor, ...]:
    k = lams.numel()
    n_g = k + 1
    g00 = gram[0, 0]
    levels = torch.arange(1, k + 1, device=gram.device)
    g_ee = gram[n_g:, n_g:]
    e_diag = torch.diagonal(g_ee)
    prev = levels - 1  # the EMA just above each level
    g_prev = gram[prev, prev]
    cos = gram[prev, n_g + prev] / (g_prev.sqrt() * e_diag.sqrt())
    cos = torch.where(torch.isfinite(cos), cos, torch.zeros_like(cos))
    own = gram[levels, n_g + prev]
    coef = torch.where(e_diag > 0, own / torch.where(e_diag > 0, e_diag, 1.0), 0.0)
    g_kk = gram[levels, levels]
    # ||P_k g_k||^2 = ||g_k||^2 - c^T G_ee c (c the projection's coefficients)
    removed_sq = (coefs * (coefs @ g_ee)).sum(1)
    removed = torch.where(g_kk > 0, removed_sq / torch.where(g_kk > 0, g_kk, 1.0), 0.0)
    along = gram[levels, 0] - (coefs * gram[0, n_g:]).sum(1)  # <P_k g_k, g_0>
    leak = torch.where(g00 > 0, lams * along / torch.where(g00 > 0, g00, 1.0), 0.0)
    return (cos, coef, removed, skipped, leak, torch.zeros_like(skipped))
