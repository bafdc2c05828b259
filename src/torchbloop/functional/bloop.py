r"""Bloop with K auxiliary losses in priority order (method.md sections 2, 3 and 7).

.. math::  d = g_0 + \sum_{k=1}^{K} \lambda_k P_k g_k, \qquad
           e_j \leftarrow (1 - \rho_j) e_j + \rho_j g_j \quad (j = 0..K-1)

``g_0`` is the main loss's gradient, ``g_k`` the k-th auxiliary loss's (highest priority first),
``lam`` the weights :math:`\lambda_k \ge 0`, ``e_j`` an EMA of the raw mini-batch gradients
``g_j`` with weight :math:`\rho_j \in (0, 1]` of the new gradient, and :math:`P_k` the
orthogonal projection off :math:`\mathrm{span}(e_0, \dots, e_{k-1})`. ``K = 1`` is the paper's
Bloop (Hsieh et al., ICML 2024, Eq. 5): :math:`d = g_0 + \lambda \pi(g_1; e_0)`.

EMA order: ``"paper"`` (Algorithm 1) projects on the EMAs of the previous steps, then updates
them; ``"code"`` (the authors' code) updates first and projects on the new EMAs. The code order
is written through the Gram matrix of the OLD vectors (the new EMA is
:math:`(1-\rho) e + \rho g`), so both orders are one Gram pass and one linear-combination pass.

The span is handled by Gram-Schmidt on the EMAs' small Gram matrix with a scale-free rank test:
an EMA whose squared norm is zero or not finite, or whose residual after the EMAs before it is
at most ``rank_rtol`` times its own norm, adds no direction (reported in ``"skipped"``); no
epsilon is added anywhere. The lazy start of the EMAs (from the first gradient) is the caller's
job (the surgeon's): this formula only updates buffers it is given.

Info scalars (no host sync; first dimension the block): ``"coef"`` ``[K, K]``, the coefficient
of the EMA ``b_j`` (``e_j``, or the updated one in code order) in :math:`P_k g_k = g_k - \sum_j
\mathrm{coef}_{k-1,j} b_j`; ``"skipped"`` ``[K]``, EMA j added no direction; ``"leak"`` ``[K]``,
:math:`\lambda_k \langle P_k g_k, g_0\rangle / \|g_0\|^2` (0: the main loss descends as without
the aux loss, -1: the aux loss cancels its descent; 0 when ``g_0 = 0``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from .._validation import check_lam, check_rho
from ._reference import flat64, unflat
from ._types import TensorList
from .contract import Coefficients

EmaOrder = Literal["paper", "code"]

RANK_RTOL = 1e-3
"""An EMA whose residual (after projecting off the EMAs before it) is at most this fraction of
its own norm adds no direction."""


class BloopFormula:
    """K-level Bloop as a :class:`~torchbloop.functional.contract.Formula`.

    Vectors: ``g_0..g_K`` (indices ``0..K``), then the EMAs ``e_0..e_{K-1}`` (``K+1..2K``).
    Hyperparameters: ``lam`` (one value, or one per level) and ``rho`` (one value, or one per EMA).

    Args:
        ema_order: ``"paper"`` or ``"code"`` (see the module docstring).
        update_ema: False leaves the EMAs unchanged (a projection-only step).
        rank_rtol: the rank test's relative tolerance on the residual norm.

    Example:
        >>> import torch
        >>> from torchbloop.functional import BloopFormula, SurgeryStep
        >>> g = [[torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])], [torch.tensor([0.0, 1.0])]]
        >>> emas = [[torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])]]
        >>> step = SurgeryStep(BloopFormula(), g, emas, hyper={"lam": [1.0, 1.0], "rho": 0.5})
        >>> step.apply().direction  # level 2's gradient lies in span(e_0, e_1): removed
        [tensor([1., 1.])]
    """

    name = "bloop"

    def __init__(
        self,
        ema_order: EmaOrder = "paper",
        *,
        update_ema: bool = True,
        rank_rtol: float = RANK_RTOL,
    ) -> None:
        if ema_order not in ("paper", "code"):
            raise ValueError(f"Invalid ema_order={ema_order!r}: must be 'paper' or 'code'")
        self.ema_order: EmaOrder = ema_order
        self.update_ema = bool(update_ema)
        self.rank_rtol = float(rank_rtol)

    def num_state(self, k: int) -> int:
        return k

    def pairs(self, k: int) -> list[tuple[int, int]]:
        if self.ema_order == "code":
            return [(i, j) for i in range(2 * k + 1) for j in range(i, 2 * k + 1)]
        emas = range(k + 1, 2 * k + 1)
        out = [(i, j) for i in emas for j in emas if i <= j]
        out += [(g, e) for g in range(k + 1) for e in emas]
        out += [(0, g) for g in range(k + 1)]
        return out

    def reads(self, k: int) -> list[Sequence[int] | None]:
        state: list[Sequence[int] | None] = [
            (j, k + 1 + j) if self.update_ema else None for j in range(k)
        ]
        return [range(2 * k + 1), *state]

    def gram_hyper(self, k: int) -> tuple[str, ...]:
        """Hyperparameters applied to the Gram itself: equal within a Gram block."""
        return ("rho",) if self.ema_order == "code" else ()

    def check(self, hyper: Mapping[str, object], k: int) -> None:
        """Validates ``lam`` and ``rho`` given as numbers (tensors are not read: no sync)."""
        for name, checker in (("lam", check_lam), ("rho", check_rho)):
            if name not in hyper:
                raise ValueError(f"Missing hyperparameter {name!r} for {self.name}")
            _check_numbers(hyper[name], checker)

    def coefficients(self, gram: Tensor, k: int, hyper: Mapping[str, Tensor]) -> Coefficients:
        b, n = gram.shape[0], gram.shape[-1]
        lam, rho = _levels(hyper["lam"], b, k), _levels(hyper["rho"], b, k)
        keep = 1.0 - rho
        g, e = slice(0, k + 1), slice(k + 1, 2 * k + 1)
        gee, gge, g0e = gram[:, e, e], gram[:, 1 : k + 1, e], gram[:, 0, e]
        mix = gram.new_zeros((b, k, n))  # b_j = sum_i mix[j, i] v_i
        idx = torch.arange(k, device=gram.device)
        if self.ema_order == "code":
            low = gram[:, :k, :k]  # <g_i, g_j>, levels below the last
            cross = gram[:, :k, e]  # <g_i, e_j>
            gb = (
                keep[:, :, None] * keep[:, None, :] * gee
                + keep[:, :, None] * rho[:, None, :] * cross.transpose(1, 2)
                + rho[:, :, None] * keep[:, None, :] * cross
                + rho[:, :, None] * rho[:, None, :] * low
            )
            c = keep[:, None, :] * gge + rho[:, None, :] * gram[:, 1 : k + 1, :k]
            b0 = keep * g0e + rho * gram[:, 0, :k]
            mix[:, idx, k + 1 + idx] = keep
            mix[:, idx, idx] += rho
        else:
            gb, c, b0 = gee, gge, g0e
            mix[:, idx, k + 1 + idx] = 1.0
        r, skipped = _orthonormalise(gb, self.rank_rtol)
        c, b0 = _finite_or_zero(c), _finite_or_zero(b0)
        tril = torch.ones(k, k, dtype=torch.bool, device=gram.device).tril()
        t = (c @ r.transpose(1, 2)) * tril  # <g_k, q_j>, j < k
        beta = t @ r  # coefficient of b_l in P_k g_k = g_k - sum_l beta[k-1, l] b_l
        direction = gram.new_zeros((b, n))
        direction[:, 0] = 1.0
        direction[:, 1 : k + 1] += lam
        direction -= ((lam[:, :, None] * beta).sum(1)[:, None, :] @ mix)[:, 0, :]
        state = gram.new_zeros((b, k, n))
        state[:, idx, k + 1 + idx] = keep
        state[:, idx, idx] += rho
        g00 = gram[:, 0, 0]
        valid = torch.isfinite(g00) & (g00 > 0)
        along = gram[:, 1 : k + 1, 0] - (beta * b0[:, None, :]).sum(-1)  # <P_k g_k, g_0>
        leak = torch.where(valid[:, None], lam * along / torch.where(valid, g00, 1.0)[:, None], 0.0)
        del g
        return Coefficients(direction, state, {"coef": beta, "skipped": skipped, "leak": leak})


def _orthonormalise(gb: Tensor, rank_rtol: float) -> tuple[Tensor, Tensor]:
    """Gram-Schmidt on a batch of Gram matrices ``[B, K, K]`` of vectors ``b_j``.

    Returns ``(R, skipped)``: ``q_j = sum_l R[j, l] b_l`` orthonormal (a zero row where ``b_j``
    adds no direction), and ``skipped`` ``[B, K]``.
    """
    bsz, k = gb.shape[0], gb.shape[-1]
    diag = gb.diagonal(dim1=1, dim2=2)
    safe = _finite_or_zero(gb)
    r = gb.new_zeros((bsz, k, k))
    eye = torch.eye(k, dtype=gb.dtype, device=gb.device)
    skipped = []
    for j in range(k):
        p = (r @ safe[:, :, j : j + 1])[:, :, 0]  # <q_i, b_j>
        u = eye[j] - (p[:, :, None] * r).sum(1)
        res = diag[:, j] - (p * p).sum(-1)  # ||b_j - sum_i <q_i, b_j> q_i||^2
        good = (
            torch.isfinite(diag[:, j])
            & (diag[:, j] > 0)
            & torch.isfinite(res)
            & (res > rank_rtol**2 * diag[:, j])
        )
        scale = torch.where(good, torch.where(good, res, 1.0).rsqrt(), 0.0)
        r[:, j, :] = u * scale[:, None]
        skipped.append(~good)
    return r, torch.stack(skipped, dim=-1)


def _finite_or_zero(x: Tensor) -> Tensor:
    """Entries that involve a skipped (non-finite) EMA are only ever multiplied by 0."""
    return torch.where(torch.isfinite(x), x, 0.0)


def _levels(value: Tensor, blocks: int, k: int) -> Tensor:
    """A per-block hyperparameter as ``[blocks, K]`` (one value applies to every level)."""
    flat = value.reshape(blocks, -1)
    if flat.shape[1] not in (1, k):
        raise ValueError(f"Invalid hyperparameter: {flat.shape[1]} values for {k} levels")
    return flat.expand(blocks, k)


def _check_numbers(value: object, checker: object) -> None:
    if isinstance(value, Tensor):
        return
    if isinstance(value, Sequence) and not isinstance(value, str):
        for v in value:
            _check_numbers(v, checker)
        return
    checker(value)  # type: ignore[operator]


# --------------------------------------------------------------------------- reference


class BloopReference(NamedTuple):
    """What :func:`bloop_reference` returns (float64 arithmetic, inputs' dtypes)."""

    direction: list[Tensor]
    emas: list[list[Tensor]]
    """The EMAs after the step (unchanged inputs are not modified)."""
    coef: Tensor
    """``[n_blocks, K, K]``."""
    skipped: Tensor
    """``[n_blocks, K]``."""
    leak: Tensor
    """``[n_blocks, K]``: ``<sum_k lam_k P_k g_k restricted to the block, g_0> / ||g_0||^2`` per level."""


def _per_element(
    value: object, grads: TensorList, k: int, coef_blocks: Sequence[int] | None
) -> Tensor:
    """``[K, N]``: a hyperparameter for every level and element of the flattened vector."""
    sizes = [t.numel() for t in grads]
    blocks = coef_blocks if coef_blocks is not None else [0] * len(grads)
    per_block = coef_blocks is not None and isinstance(value, Sequence)
    cols = []
    for t, size in enumerate(sizes):
        v = value[blocks[t]] if per_block else value  # type: ignore[index]
        levels = torch.as_tensor(v, dtype=torch.float64).reshape(-1).expand(k)
        cols.append(levels[:, None].expand(k, size))
    return torch.cat(cols, dim=1) if cols else torch.zeros(k, 0, dtype=torch.float64)


def bloop_reference(
    grads: Sequence[TensorList],
    emas: Sequence[TensorList],
    *,
    lam: object,
    rho: object,
    ema_order: EmaOrder = "paper",
    gram_blocks: Sequence[int] | None = None,
    coef_blocks: Sequence[int] | None = None,
    rank_rtol: float = RANK_RTOL,
) -> BloopReference:
    """Slow float64 reference of K-level Bloop: one flat vector per list, Gram-Schmidt on the
    EMAs themselves, the formula as written in method.md section 7.

    ``lam``/``rho`` follow :class:`~torchbloop.functional.contract.SurgeryStep`'s conventions;
    ``gram_blocks`` is one block id per tensor (None: global).
    """
    k = len(grads) - 1
    g = [flat64(x) for x in grads]
    e = [flat64(x) for x in emas]
    lam_el = _per_element(lam, grads[0], k, coef_blocks)
    rho_el = _per_element(rho, grads[0], k, coef_blocks)
    new_e = [(1 - rho_el[j]) * e[j] + rho_el[j] * g[j] for j in range(k)]
    basis = new_e if ema_order == "code" else e
    sizes = [t.numel() for t in grads[0]]
    ids = list(gram_blocks) if gram_blocks is not None else [0] * len(sizes)
    owner = (
        torch.cat([torch.full((s,), b) for s, b in zip(sizes, ids)]) if sizes else torch.zeros(0)
    )
    n_blocks = max(ids, default=-1) + 1
    d = g[0].clone()
    coefs, skips, leaks = [], [], []
    for blk in range(n_blocks):
        m = owner == blk
        qs: list[Tensor] = []
        rows: list[Tensor] = []
        skip = []
        for j in range(k):
            bj = basis[j][m]
            nb2 = float(bj @ bj)
            res = bj.clone()
            row = torch.zeros(k, dtype=torch.float64)
            row[j] = 1.0
            for q, rq in zip(qs, rows):
                p = float(q @ bj)
                res -= p * q
                row -= p * rq
            nr2 = float(res @ res)
            good = math.isfinite(nb2) and nb2 > 0 and nr2 > rank_rtol**2 * nb2
            skip.append(not good)
            qs.append(res / math.sqrt(nr2) if good else torch.zeros_like(bj))
            rows.append(row / math.sqrt(nr2) if good else torch.zeros(k, dtype=torch.float64))
        beta = torch.zeros(k, k, dtype=torch.float64)
        g0 = g[0][m]
        g00 = float(g0 @ g0)
        leak = torch.zeros(k, dtype=torch.float64)
        for lev in range(1, k + 1):
            pg = g[lev][m].clone()
            for j in range(lev):
                t = float(g[lev][m] @ qs[j])
                pg -= t * qs[j]
                beta[lev - 1] += t * rows[j]
            term = lam_el[lev - 1][m] * pg
            d[m] += term
            if g00 > 0 and math.isfinite(g00):
                leak[lev - 1] = float(term @ g0) / g00
        coefs.append(beta)
        skips.append(torch.tensor(skip))
        leaks.append(leak)
    return BloopReference(
        unflat(d, grads[0]),
        [unflat(x, like) for x, like in zip(new_e, emas)],
        torch.stack(coefs) if coefs else torch.zeros(0, k, k),
        torch.stack(skips) if skips else torch.zeros(0, k, dtype=torch.bool),
        torch.stack(leaks) if leaks else torch.zeros(0, k),
    )


__all__ = ["RANK_RTOL", "BloopFormula", "BloopReference", "EmaOrder", "bloop_reference"]
