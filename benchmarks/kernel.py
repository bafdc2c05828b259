"""Issues 9 and 11: the generic fused kernel for K = 1 and K = 3, and the public ``combine``.

All rows are timed side by side in one set of interleaved rounds with the yardstick
``torch._foreach_add_(g_aux, g_main)`` (read two buffers, write one).

- **K = 1 Bloop step**: what the surgery contract runs for Bloop on CPU. Pass 1
  (:func:`~torchbloop.functional._native.gram`) over ``[g_0, g_1, e_0]``: ``||g_0||^2`` and
  ``||g_1||^2`` (the finiteness check), ``<g_1, e_0>`` and ``||e_0||^2``; the projection
  coefficient on those scalars; pass 2 (:func:`~torchbloop.functional._native.lincomb`) writes the
  direction over ``g_1`` and the new EMA over ``e_0``. Traffic: 3 reads, then 3 reads and 2
  writes: 8 buffer transfers.
- **K = 3**: seven lists ``g_0..g_3, e_0..e_2``. Pass 1: the four gradient norms, the Gram matrix
  of the EMAs (6) and ``<g_k, e_j>`` for ``j < k`` (6); the coefficients of method.md section 7
  (level k projected off ``span(e_0..e_{k-1})``, a 3 x 3 solve); pass 2 writes the direction over
  ``g_1`` and the three EMAs in place. Traffic: 7 reads, then 7 reads and 4 writes: 18 transfers.
- **Memory-traffic floor** of a path = its buffer transfers / 3 (the yardstick's) x the
  yardstick's measured time: the time the path would take if it moved its bytes exactly as
  fast as ``foreach_add_`` does.
- **combine**: ``torchbloop.Bloop.combine(main_grads, aux_grads)``, the public call that
  returns the direction in new tensors and leaves its inputs untouched. In a loop that drops
  the last directions (as this one does) it writes into their memory again (see
  ``torchbloop/surgeons/_reuse.py``); ``out=buffer`` writes into the caller's tensors.
- **surgery stage** (internal, not a public call): what ``Bloop.backward`` runs between its
  captured gradients and ``.grad`` on the separate-gradient path (``Surgeon._surgery`` with
  the gradients owned, then the ``write_grad`` stage into ``.grad`` that is ``None``, as after
  ``optimizer.zero_grad()``): the finiteness check, the K = 1 step, the hand-over.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

import torchbloop
from _timing import measure
from combination import Row
from torchbloop.functional import _native, bloop_update_, projection_coefficient

LAM, RHO = 0.5, 0.01
BASE = "foreach_add_ (floor yardstick)"
K1 = "generic kernel: K=1 Bloop step (gram + lincomb)"
K3 = "generic kernel: K=3 step, 7 lists (gram + lincomb)"
K3_GRAM = "  K=3 pass 1 alone (gram: 16 products of 7 lists)"
K3_READ = "  7 lists read once, squared norms only (gram: 7 products)"
K3_LIN = "  K=3 pass 2 alone (lincomb: 7 lists in, 4 out)"
LEGACY = "bloop_update_ (Bloop's default CPU path today)"
COMBINE = "Bloop.combine(main_grads, aux_grads) (public)"
COMBINE_OUT = "Bloop.combine(main_grads, aux_grads, out=buffer) (public)"
SURGERY = "Bloop.backward's surgery stage, gradients in, .grad out (internal)"
TRAFFIC = {
    BASE: 3.0,
    K1: 8.0,
    K3: 18.0,
    K3_GRAM: 7.0,
    K3_READ: 7.0,
    K3_LIN: 11.0,
    LEGACY: 7.0,
    COMBINE: 8.0,
    COMBINE_OUT: 8.0,
    SURGERY: 8.0,
}
"""Minimum buffer transfers of each path (see the module docstring). ``bloop_update_`` reads
``g_aux`` and ``e`` for its products, so 7; ``combine`` is counted as the K = 1 step (its
inputs are read, the direction written to a new buffer, the EMA updated): 8."""

K1_PAIRS = [(0, 0), (1, 1), (1, 2), (2, 2)]
K3_PAIRS = [(0, 0), (1, 1), (2, 2), (3, 3)]  # gradient norms (finiteness)
K3_PAIRS += [(4, 4), (4, 5), (4, 6), (5, 5), (5, 6), (6, 6)]  # EMA Gram matrix
K3_PAIRS += [(1, 4), (2, 4), (2, 5), (3, 4), (3, 5), (3, 6)]  # <g_k, e_j>, j < k


def _lists(n: int, params: int, tensors: int, seed: int) -> list[list[Tensor]]:
    g = torch.Generator().manual_seed(seed)
    sizes = [params // tensors] * tensors
    sizes[0] += params - sum(sizes)
    return [[torch.randn(s, generator=g) for s in sizes] for _ in range(n)]


def k1_step(m: list[Tensor], a: list[Tensor], e: list[Tensor]) -> Callable[[], object]:
    def run() -> None:
        gram = _native.gram([m, a, e], K1_PAIRS)[0]
        coef, _ = projection_coefficient(gram[2], gram[3])
        coefs = torch.tensor(
            [[[1.0, LAM, -LAM * float(coef)], [RHO, 0.0, 1.0 - RHO]]], dtype=torch.float64
        )
        _native.lincomb([m, a, e], [a, e], coefs)

    return run


def k3_coefficients(gram: Tensor, lams: list[float], rho: float) -> Tensor:
    """Method.md section 7 on the pass-1 scalars: ``[1, 4, 7]`` coefficients over
    ``[g_0..g_3, e_0..e_2]`` for the direction and the three new EMAs (float64, on the host)."""
    ema_gram = torch.zeros(3, 3, dtype=torch.float64)
    for (i, j), v in zip(K3_PAIRS[4:10], gram[4:10]):
        ema_gram[i - 4, j - 4] = ema_gram[j - 4, i - 4] = v
    cross = {pair: v for pair, v in zip(K3_PAIRS[10:], gram[10:])}
    rows = torch.zeros(4, 7, dtype=torch.float64)
    rows[0, 0] = 1.0
    for k in (1, 2, 3):  # level k: lam_k (g_k - sum_j c_kj e_j), e_0..e_{k-1}
        rows[0, k] = lams[k - 1]
        rhs = torch.stack([cross[(k, 4 + j)] for j in range(k)])
        c = torch.linalg.solve(ema_gram[:k, :k], rhs)
        rows[0, 4 : 4 + k] -= lams[k - 1] * c
    for j in range(3):  # e_j <- (1 - rho) e_j + rho g_j
        rows[1 + j, j] = rho
        rows[1 + j, 4 + j] = 1.0 - rho
    return rows.unsqueeze(0)


def k3_step(lists: list[list[Tensor]]) -> Callable[[], object]:
    grads, emas = lists[:4], lists[4:]

    def run() -> None:
        gram = _native.gram(lists, K3_PAIRS)[0]
        coefs = k3_coefficients(gram, [0.5, 0.3, 0.2], RHO)
        _native.lincomb(lists, [grads[1], *emas], coefs)

    return run


def combine_step(
    m: list[Tensor], a: list[Tensor], out: list[Tensor] | None = None
) -> Callable[[], object]:
    """The public ``combine``: into new tensors (``out=None``) or into a buffer the caller keeps."""
    params = [torch.nn.Parameter(torch.zeros_like(t)) for t in m]
    surgeon = torchbloop.Bloop(params, lam=LAM, rho=RHO)
    if out is None:
        return lambda: surgeon.combine(m, a)
    return lambda: surgeon.combine(m, a, out=out)


def surgery_stage(m: list[Tensor], a: list[Tensor]) -> Callable[[], object]:
    """``backward``'s stages after the capture: surgery on owned gradients, then ``.grad``."""
    from torchbloop.surgeons import _stages

    params = [torch.nn.Parameter(torch.zeros_like(t)) for t in m]
    surgeon = torchbloop.Bloop(params, lam=LAM, rho=RHO)
    grads: list[list[Tensor | None]] = [list(m), list(a)]

    def run() -> None:
        for p in params:
            p.grad = None
        directions = surgeon._surgery(grads, None, owned=True)
        assert directions is not None
        _stages.write_grad(params, directions)

    return run


def run_kernel_rows(params: int, tensors: int, repeats: int) -> list[Row]:
    """The yardstick, the K = 1 and K = 3 steps and ``combine``, side by side."""
    m, a, e = _lists(3, params, tensors, 0)
    fns: dict[str, Callable[[], object]] = {BASE: lambda: torch._foreach_add_(a, m)}
    if _native.usable([m, a, e]):
        k3 = _lists(7, params, tensors, 1)
        k3[4:] = [[t * 0.5 + 0.1 * g for t, g in zip(x, k3[0])] for x in k3[4:]]
        fns[K1] = k1_step(m, [t.clone() for t in a], [t.clone() for t in e])
        fns[K3] = k3_step(k3)
        # where the K = 3 step's time goes: each pass alone, and a pass that only reads
        fns[K3_GRAM] = lambda: _native.gram(k3, K3_PAIRS)
        fns[K3_READ] = lambda: _native.gram(k3, [(i, i) for i in range(7)])
        mix = k3_coefficients(_native.gram(k3, K3_PAIRS)[0], [0.5, 0.3, 0.2], RHO)
        fns[K3_LIN] = lambda: _native.lincomb(k3, [k3[1], *k3[4:]], mix)
    a2, e2 = [t.clone() for t in a], [t.clone() for t in e]
    fns[LEGACY] = lambda: bloop_update_(m, a2, e2, lam=LAM, rho=RHO, out=a2)
    fns[COMBINE] = combine_step(m, a)
    fns[COMBINE_OUT] = combine_step(m, a, [torch.empty_like(t) for t in m])
    fns[SURGERY] = surgery_stage([t.clone() for t in m], [t.clone() for t in a])
    times = measure(fns, repeats=repeats)
    base = times[BASE]
    return [Row("kernel", k, params, tensors, v, base, TRAFFIC[k]) for k, v in times.items()]


def floor_ratio(row: Row) -> float:
    """Time over the path's memory-traffic floor (its transfers / 3 x the yardstick's time)."""
    return row.seconds / (row.buffers / TRAFFIC[BASE] * row.base_seconds)
