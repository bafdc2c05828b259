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
the aux loss, -1: the aux loss cancels its descent; 0 when ``g_0 = 0``; only with
``leak=True``, the default).
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
        leak: compute the ``"leak"`` diagnostic (it needs ``<g_k, g_0>`` and ``<e_j, g_0>``:
            in "paper" order pass 1 then also reads ``g_0``).
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
        leak: bool = True,
        rank_rtol: float = RANK_RTOL,
    ) -> None:
        if ema_order not in ("paper", "code"):
            raise ValueError(f"Invalid ema_order={ema_order!r}: must be 'paper' or 'code'")
        self.ema_order: EmaOrder = ema_order
        self.update_ema = bool(update_ema)
        self.leak = bool(leak)
        self.rank_rtol = float(rank_rtol)

    def num_state(self, k: int) -> int:
        return k

    def pairs(self, k: int) -> list[tuple[int, int]]:
        if self.ema_order == "code":
            return [(i, j) for i in range(2 * k + 1) for j in range(i, 2 * k + 1)]
        emas = range(k + 1, 2 * k + 1)
        out = [(i, j) for i in emas for j in emas if i <= j]
        out += [(g, e) for g in range(1, k + 1) for e in emas]
        if self.leak:
            out += [(0, e) for e in emas] + [(0, g) for g in range(k + 1)]
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
        b = gram.shape[0]
        lam, rho = _levels(hyper["lam"], b, k), _levels(hyper["rho"], b, k)
        own, ema, level, first = _selectors(k, gram.dtype, gram.device)
        # The new EMAs, e_j <- (1 - rho_j) e_j + rho_j g_j, as rows of coefficients over v.
        state = rho[:, :, None] * own + (1.0 - rho)[:, :, None] * ema
        mix = state if self.ema_order == "code" else ema.expand(b, k, -1)  # the b_j projected on
        diag = gram.diagonal(dim1=1, dim2=2)
        finite = torch.isfinite(diag[:, k + 1 :])
        if self.ema_order == "code":
            finite = finite & torch.isfinite(diag[:, :k])
        safe = _finite_or_zero(gram)  # non-finite entries only meet skipped EMAs (times 0)
        mix_t = mix.transpose(1, 2)
        cross = safe[:, : k + 1, :] @ mix_t  # [B, K+1, K]: <g_i, b_j>
        r, skipped = _orthonormalise(mix @ safe @ mix_t, finite, self.rank_rtol)
        t = (cross[:, 1:, :] @ r.transpose(1, 2)) * _lower(k, gram.dtype, gram.device)
        beta = t @ r  # P_k g_k = g_k - sum_l beta[k-1, l] b_l
        direction = first + lam @ level - ((lam[:, None, :] @ beta) @ mix)[:, 0, :]
        info = {"coef": beta, "skipped": skipped}
        if self.leak:
            g00 = gram[:, 0, 0]
            valid = torch.isfinite(g00) & (g00 > 0)
            along = safe[:, 1 : k + 1, 0] - (beta @ cross[:, 0, :, None])[..., 0]  # <P g_k, g_0>
            info["leak"] = torch.where(
                valid[:, None], lam * along / torch.where(valid, g00, 1.0)[:, None], 0.0
            )
        return Coefficients(direction, state, info)


_CONSTANTS: dict[tuple[object, ...], tuple[Tensor, ...]] = {}


def _selectors(k: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
    """Constant ``[K, n]`` rows selecting ``g_j`` and ``e_j``, ``[K, n]`` placing ``lam_k`` on
    ``g_k``, and the ``[n]`` row of ``g_0`` (cached per K, dtype and device)."""
    key = ("sel", k, dtype, device)
    if key not in _CONSTANTS:
        n = 2 * k + 1
        own = torch.zeros(k, n, dtype=dtype)
        ema = torch.zeros(k, n, dtype=dtype)
        level = torch.zeros(k, n, dtype=dtype)
        for j in range(k):
            own[j, j] = ema[j, k + 1 + j] = level[j, j + 1] = 1.0
        first = torch.zeros(n, dtype=dtype)
        first[0] = 1.0
        _CONSTANTS[key] = tuple(x.to(device) for x in (own, ema, level, first))
    return _CONSTANTS[key]


def _lower(k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    key = ("tril", k, dtype, device)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = (torch.ones(k, k, dtype=dtype).tril().to(device),)
    return _CONSTANTS[key][0]


def _orthonormalise(gb: Tensor, finite: Tensor, rank_rtol: float) -> tuple[Tensor, Tensor]:
    """Gram-Schmidt on a batch of Gram matrices ``[B, K, K]`` of vectors ``b_j``.

    ``finite`` ``[B, K]`` says whether the inputs of ``b_j``'s norm were finite (``gb`` itself
    holds 0 in place of non-finite entries). Returns ``(R, skipped)``: ``q_j = sum_l R[j, l]
    b_l`` orthonormal (a zero row where ``b_j`` adds no direction), and ``skipped`` ``[B, K]``.
    """
    bsz, k = gb.shape[0], gb.shape[-1]
    diag = gb.diagonal(dim1=1, dim2=2)
    r = gb.new_zeros((bsz, k, k))
    eye = torch.eye(k, dtype=gb.dtype, device=gb.device)
    skipped = []
    for j in range(k):
        p = (r @ gb[:, :, j : j + 1])[:, :, 0]  # <q_i, b_j>
        res = diag[:, j] - (p * p).sum(-1)  # ||b_j - sum_i <q_i, b_j> q_i||^2
        good = finite[:, j] & (diag[:, j] > 0) & (res > rank_rtol**2 * diag[:, j])
        scale = torch.where(good, res, 1.0).rsqrt() * good
        r[:, j, :] = (eye[j] - (p[:, None, :] @ r)[:, 0, :]) * scale[:, None]
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
