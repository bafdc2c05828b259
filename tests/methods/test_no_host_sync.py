"""Every formula's coefficient computation runs without a host synchronisation.

A host sync is what ``.item()``, ``float(t)``, ``bool(t)`` (a Python ``if`` on a tensor) and
data-dependent shapes (boolean-mask indexing, ``nonzero``) cost on an accelerator. They all go
through a few aten ops; a dispatch mode refuses those ops while the coefficients are computed
(on CPU tensors, so the check runs everywhere). The first test shows the check catches them.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from torchbloop.functional.agem import AGEMFormula
from torchbloop.functional.cosine_gating import CosineGatingFormula
from torchbloop.functional.gradvac import GradVacFormula
from torchbloop.functional.metabalance import MetaBalanceFormula
from torchbloop.functional.mgda import MGDAFormula
from torchbloop.functional.original_dynamic_barrier import OriginalDynamicBarrierFormula

_SYNC_OPS = {
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.nonzero.default,
    torch.ops.aten.masked_select.default,
}


class NoHostSync(TorchDispatchMode):
    """Raises on the aten ops behind host synchronisations."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _SYNC_OPS:
            raise RuntimeError(f"host synchronisation: {func}")
        if func is torch.ops.aten.index.Tensor:
            for idx in args[1]:
                if idx is not None and idx.dtype == torch.bool:
                    raise RuntimeError("host synchronisation: boolean-mask indexing")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "offender",
    [
        lambda t: t.sum().item(),
        lambda t: t * 2 if bool((t > 0).any()) else t,
        lambda t: float(t.max()),
        lambda t: t[t > 0],
        lambda t: torch.nonzero(t),
    ],
)
def test_the_check_catches_host_syncs(offender):
    with pytest.raises(RuntimeError, match="host synchronisation"), NoHostSync():
        offender(torch.randn(5))


def _gram(n_blocks: int, n: int) -> torch.Tensor:
    x = torch.randn(n_blocks, n, 6, dtype=torch.float64)
    g = x @ x.transpose(1, 2)
    g[0] = 0.0  # a block of zero gradients: the degenerate branches are traced too
    return g


def _h(n_blocks: int, **values: float) -> dict[str, torch.Tensor]:
    return {k: torch.full((n_blocks,), v, dtype=torch.float64) for k, v in values.items()}


CASES = {
    "agem": (AGEMFormula(), 1, dict(lam=0.5)),
    "mgda": (MGDAFormula(), 1, dict(lam=0.5)),
    "cosine_gating": (CosineGatingFormula(), 1, dict(lam=0.5)),
    "cosine_gating_unweighted": (CosineGatingFormula(weighted=False), 1, dict(lam=0.5)),
    "gradvac": (GradVacFormula(), 1, dict(lam=0.5, beta=0.01, phi_hat=0.3)),
    "metabalance": (MetaBalanceFormula(), 1, dict(r=0.7, beta=0.9, norm_main=1.0, norm_aux=2.0)),
    "original_dynamic_barrier": (
        OriginalDynamicBarrierFormula(),
        1,
        dict(alpha=1.0, beta=1.0, lower_bound=0.0, main_loss=0.7),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_coefficients_without_host_sync(name):
    formula, k, values = CASES[name]
    gram = _gram(3, k + 1)
    with NoHostSync():
        coefs = formula.coefficients(gram, k, _h(3, **values))
    assert coefs.direction.shape == (3, k + 1)
    assert torch.isfinite(coefs.direction).all()


@pytest.mark.parametrize("k", [2, 3, 5])
def test_mgda_face_solver_without_host_sync(k):
    gram = _gram(2, k + 1)
    hyper = {"lam": torch.full((2, k), 0.5, dtype=torch.float64)}
    with NoHostSync():
        coefs = MGDAFormula().coefficients(gram, k, hyper)
    assert coefs.direction.shape == (2, k + 1) and torch.isfinite(coefs.direction).all()
