r"""MGDA, the min-norm point of the objectives' gradients (Desideri, 2012; Sener and Koltun, 2018).

method.md section 6. With :math:`a = g_m` and :math:`b = \lambda g_a`:

.. math::
    \gamma = \operatorname{clip}\left(\frac{\langle b - a, b\rangle}{\|a - b\|^2}, 0, 1\right),
    \qquad d = \gamma a + (1 - \gamma) b,

the point of the segment :math:`[a, b]` closest to 0. For K aux losses, :math:`d` is the min-norm
point of the convex hull of :math:`g_m, \lambda_1 g_1, \dots, \lambda_K g_K`, found from their
Gram matrix. It satisfies :math:`\langle d, v\rangle \ge \|d\|^2` for every objective's vector
:math:`v`: a step along :math:`-d` decreases every objective to first order (a common descent
direction; :math:`d = 0` at a Pareto-stationary point). :math:`\lambda` scales the aux objective,
so a sweep over :math:`\lambda` traces a front.

The Bloop paper's Table 1 writes the two-objective coefficient with the wrong sign and without
the clip to :math:`[0, 1]`; this is the correct min-norm form. When :math:`\|a - b\| = 0` the two
points coincide and :math:`d = a`.

K objectives (K + 1 <= :data:`MAX_OBJECTIVES`): the min-norm point lies in the relative interior
of one face of the simplex of weights, where it is the min-norm point of that face's affine hull
(one small linear system). All :math:`2^{K+1} - 1` faces are solved in one batched call on the
device, each candidate is clipped into the simplex (so it is a true point of the hull) and the
one of smallest norm is kept: a fixed amount of work, exact up to rounding, no iteration count to
tune and no host synchronisation.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from ._reference import flat64, unflat
from ._types import Reducer, TensorList
from .contract import Coefficients, SurgeryStep

MAX_OBJECTIVES = 8
"""The most objectives (main + aux losses) the K-objective solver takes (255 faces at 8)."""


def mgda_segment_weight(mm: Tensor, am: Tensor, aa: Tensor, *, lam: float | Tensor) -> Tensor:
    r"""``gamma``, the weight of ``g_m`` in ``d = gamma g_m + (1 - gamma) lam g_a``.

    ``gamma = clip(<b - a, b> / ||a - b||^2, 0, 1)`` with ``a = g_m``, ``b = lam g_a``, from the
    Gram entries. Everything is first taken relative to the larger of ``||a||`` and ``||b||``,
    so nothing overflows where the Gram entries themselves are finite. ``gamma = 1`` where
    ``||a - b|| = 0``. Elementwise; no host synchronisation.

    Args:
        mm: ``||g_m||^2``. am: ``<g_a, g_m>``. aa: ``||g_a||^2``. lam: :math:`\lambda \ge 0`.

    Example:
        >>> import torch
        >>> t = torch.tensor
        >>> mgda_segment_weight(t(1.0), t(0.0), t(1.0), lam=1.0)  # orthogonal, equal norms
        tensor(0.5000)
    """
    n_a = torch.sqrt(mm)
    n_b = lam * torch.sqrt(aa)
    top = torch.maximum(n_a, n_b)
    ok = torch.isfinite(top) & (top > 0)
    s = torch.where(ok, top, torch.ones_like(top))
    x, y = n_a / s, n_b / s  # ||a||, ||b|| relative to the larger: no overflow below
    ab = (am / s) * (lam / s)
    num = y * y - ab
    den = x * x - 2.0 * ab + y * y
    valid = torch.isfinite(den) & (den > 0)
    safe = torch.where(valid, den, torch.ones_like(den))
    gamma = torch.where(valid, num / safe, torch.ones_like(num))
    return torch.clamp(gamma, 0.0, 1.0)


def _faces(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """All non-empty subsets of ``range(n)`` as 0/1 rows ``[2^n - 1, n]``."""
    codes = torch.arange(1, 2**n, device=device)
    bits = 2 ** torch.arange(n, device=device)
    return ((codes[:, None] & bits) != 0).to(dtype)


def min_norm_weights(gram: Tensor, scales: Tensor | None = None) -> Tensor:
    r"""Simplex weights :math:`w` of the min-norm point of the hull of :math:`v_i = s_i g_i`.

    ``gram`` ``[..., n, n]`` is the Gram matrix of the ``g_i``, ``scales`` ``[n]`` (default
    ones) the non-negative :math:`s_i`; ``sum_i w_i v_i`` is the point of the convex hull of the
    ``v_i`` closest to 0 (the coefficient of ``g_i`` is ``w_i s_i``). Leading dimensions are
    batch dimensions (one problem per block). The scaled Gram matrix is formed relative to the
    largest ``||v_i||``, so nothing overflows where ``gram`` is finite. See the module docstring
    for the method. No host synchronisation.

    Raises:
        ValueError: more than :data:`MAX_OBJECTIVES` vectors.

    Example:
        >>> import torch
        >>> min_norm_weights(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 4.0]]))
        tensor([0.4444, 0.4444, 0.1111])
    """
    n = gram.shape[-1]
    if n > MAX_OBJECTIVES:
        raise ValueError(
            f"Invalid number of objectives {n}: MGDA takes at most {MAX_OBJECTIVES} (main + aux)"
        )
    if scales is None:
        scales = torch.ones(n, dtype=gram.dtype, device=gram.device)
    norms = torch.sqrt(torch.diagonal(gram, dim1=-2, dim2=-1)) * scales  # [..., n]
    top = norms.amax(-1, keepdim=True)
    ok = torch.isfinite(top) & (top > 0)
    rel = scales / torch.where(ok, top, torch.ones_like(top))  # [..., n]
    g = (gram * rel[..., :, None]) * rel[..., None, :]
    faces = _faces(n, gram.device, gram.dtype)  # [F, n]
    outer = faces[:, :, None] * faces[:, None, :]  # [F, n, n]
    f = faces.shape[0]
    kkt = torch.zeros((*g.shape[:-2], f, n + 1, n + 1), dtype=g.dtype, device=g.device)
    kkt[..., :n, :n] = g[..., None, :, :] * outer + torch.diag_embed(1.0 - faces)
    kkt[..., :n, n] = faces
    kkt[..., n, :n] = faces
    rhs = torch.zeros((*kkt.shape[:-1], 1), dtype=g.dtype, device=g.device)
    rhs[..., n, 0] = 1.0
    sol, _ = torch.linalg.solve_ex(kkt, rhs)
    w = torch.clamp(sol[..., :n, 0] * faces, min=0.0)  # [..., F, n], clipped into the simplex
    total = w.sum(-1, keepdim=True)
    good = torch.isfinite(total) & (total > 0)
    w = torch.where(good, w / torch.where(good, total, torch.ones_like(total)), 0.0)
    value = torch.einsum("...fi,...ij,...fj->...f", w, g, w)
    value = torch.where(good[..., 0] & torch.isfinite(value), value, torch.inf)
    best = value.argmin(-1, keepdim=True)[..., None]  # [..., 1, 1]
    chosen = torch.take_along_dim(w, best.expand(*best.shape[:-1], n), dim=-2)[..., 0, :]
    # All vectors zero (or the Gram not finite): any point is the answer; take the main one.
    first = torch.zeros_like(chosen)
    first[..., 0] = 1.0
    return torch.where(ok, chosen, first)


class MGDAFormula:
    """MGDA as a :class:`~torchbloop.functional.contract.Formula` (any K up to
    ``MAX_OBJECTIVES - 1``; ``lam`` one value or one per aux loss).

    One aux loss: the segment formula (:func:`mgda_segment_weight`); several: the face solver
    (:func:`min_norm_weights`) on the Gram matrix. Info: ``"weights"`` ``[K + 1]``, the simplex
    weights of ``g_0, lam_1 g_1, ...`` in ``d``.

    Example:
        >>> import torch
        >>> from torchbloop.functional import SurgeryStep
        >>> g = [[torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 1.0])]]
        >>> SurgeryStep(MGDAFormula(), g, [], hyper={"lam": 1.0}).apply().direction
        [tensor([0.5000, 0.5000])]
    """

    name = "mgda"

    def num_state(self, k: int) -> int:
        return 0

    def pairs(self, k: int) -> list[tuple[int, int]]:
        return [(i, j) for i in range(k + 1) for j in range(i, k + 1)]

    def check(self, hyper: Mapping[str, object], k: int) -> None:
        if k + 1 > MAX_OBJECTIVES:
            raise ValueError(
                f"Invalid number of auxiliary losses for mgda: {k}; at most {MAX_OBJECTIVES - 1}"
            )

    def coefficients(self, gram: Tensor, k: int, hyper: Mapping[str, Tensor]) -> Coefficients:
        n_blocks = gram.shape[0]
        lam = hyper["lam"].reshape(n_blocks, -1).expand(n_blocks, k)
        g = gram[:, : k + 1, : k + 1]
        scales = torch.cat([torch.ones_like(lam[:, :1]), lam], dim=1)
        if k == 1:
            gamma = mgda_segment_weight(g[:, 0, 0], g[:, 0, 1], g[:, 1, 1], lam=lam[:, 0])
            weights = torch.stack([gamma, 1.0 - gamma], dim=1)
        else:
            weights = min_norm_weights(g, scales)
        direction = weights * scales
        return Coefficients(direction, gram.new_zeros((n_blocks, 0, k + 1)), {"weights": weights})


def mgda_direction(
    main_grads: TensorList,
    aux_grads: TensorList | Sequence[TensorList],
    *,
    lam: float | Sequence[float],
    out: list[Tensor] | None = None,
    foreach: bool = True,
    reduce: Reducer | None = None,
) -> list[Tensor]:
    """MGDA's direction through the surgery contract.

    Args:
        main_grads: ``g_m``. aux_grads: ``g_a``, or a list of K aux gradient lists.
        lam: ``lam >= 0``, or K of them (one per aux list).
        out: where to write the result (may alias an input). foreach: multi-tensor kernels.
        reduce: sums the local inner products when the lists are shards.

    Example:
        >>> import torch
        >>> mgda_direction([torch.tensor([1.0, 0.0])], [torch.tensor([0.0, 1.0])], lam=1.0)
        [tensor([0.5000, 0.5000])]
    """
    several = not isinstance(lam, (int, float))
    auxes = list(aux_grads) if several else [aux_grads]
    step = SurgeryStep(
        MGDAFormula(),
        [main_grads, *auxes],  # type: ignore[list-item]
        [],
        hyper={"lam": lam},  # type: ignore[dict-item]
        out=out,
        foreach=foreach,
        reduce=reduce,
    )
    return step.apply().direction


def mgda_direction_reference(
    main_grads: TensorList,
    aux_grads: TensorList | Sequence[TensorList],
    *,
    lam: float | Sequence[float],
) -> list[Tensor]:
    """Slow float64 reference.

    One aux loss: the closed form of method.md section 6 as written. K aux losses (``aux_grads``
    a list of K lists, ``lam`` K floats): every face of the hull is solved by least squares on
    the flattened vectors themselves (not their Gram matrix), and the smallest-norm candidate
    whose weights are all non-negative is kept.
    """
    if isinstance(lam, (int, float)):
        g_m, g_a = flat64(main_grads), flat64(aux_grads)  # type: ignore[arg-type]
        a, b = g_m, float(lam) * g_a
        den = float((a - b) @ (a - b))
        gamma = 1.0 if den == 0.0 else min(1.0, max(0.0, float((b - a) @ b) / den))
        return unflat(gamma * a + (1.0 - gamma) * b, main_grads)
    vectors = [flat64(main_grads)] + [
        float(w) * flat64(g)  # type: ignore[arg-type]
        for w, g in zip(lam, aux_grads)
    ]
    best: Tensor | None = None
    for size in range(1, len(vectors) + 1):
        for face in itertools.combinations(vectors, size):
            base = face[0]
            if size == 1:
                point = base
            else:
                span = torch.stack([v - base for v in face[1:]], dim=1)
                t = torch.linalg.lstsq(span, -base[:, None], driver="gelsd").solution[:, 0]
                if float(t.sum()) > 1.0 or bool((t < 0).any()):
                    continue
                point = base + span @ t
            if best is None or float(point @ point) < float(best @ best):
                best = point
    assert best is not None
    return unflat(best, main_grads)


__all__ = [
    "MAX_OBJECTIVES",
    "MGDAFormula",
    "mgda_direction",
    "mgda_direction_reference",
    "mgda_segment_weight",
    "min_norm_weights",
]
