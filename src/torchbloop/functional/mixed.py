r"""Mixed, the usual regulariser, with K auxiliary losses: :math:`d = g_0 + \sum_k \lambda_k g_k`.

The gradient of :math:`L_0 + \sum_k \lambda_k L_k` (method.md sections 2 and 7): no inner
products, no state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .._validation import check_lam
from ._reference import flat64, unflat
from ._types import TensorList
from .contract import Coefficients, SurgeryStep


class MixedFormula:
    """Mixed as a :class:`~torchbloop.functional.contract.Formula`; hyperparameter ``lam``
    (one value, or one per level).

    Example:
        >>> import torch
        >>> from torchbloop.functional import MixedFormula, SurgeryStep
        >>> g = [[torch.tensor([1.0])], [torch.tensor([2.0])], [torch.tensor([4.0])]]
        >>> SurgeryStep(MixedFormula(), g, [], hyper={"lam": [0.5, 0.25]}).apply().direction
        [tensor([3.])]
    """

    name = "mixed"

    def num_state(self, k: int) -> int:
        return 0

    def pairs(self, k: int) -> list[tuple[int, int]]:
        return []

    def reads(self, k: int) -> list[Sequence[int] | None]:
        return [range(k + 1)]

    def check(self, hyper: Mapping[str, object], k: int) -> None:
        if "lam" not in hyper:
            raise ValueError("Missing hyperparameter 'lam' for mixed")
        _check_lams(hyper["lam"])

    def coefficients(self, gram: Tensor, k: int, hyper: Mapping[str, Tensor]) -> Coefficients:
        b = gram.shape[0]
        lam = hyper["lam"].reshape(b, -1)
        if lam.shape[1] not in (1, k):
            raise ValueError(f"Invalid lam: {lam.shape[1]} values for {k} levels")
        direction = torch.cat([gram.new_ones((b, 1)), lam.expand(b, k).to(gram.dtype)], dim=1)
        return Coefficients(direction, gram.new_zeros((b, 0, k + 1)), {})


def _check_lams(value: object) -> None:
    if isinstance(value, Tensor):
        return
    if isinstance(value, Sequence) and not isinstance(value, str):
        for v in value:
            _check_lams(v)
        return
    check_lam(value)


def mixed_direction(
    main_grads: TensorList,
    aux_grads: TensorList,
    *,
    lam: float,
    out: list[Tensor] | None = None,
    foreach: bool = True,
) -> list[Tensor]:
    """The gradient of ``L_main + lam * L_aux``: ``g_main + lam * g_aux``.

    Args:
        main_grads: ``g_main``. aux_grads: ``g_aux``. lam: ``lam >= 0``.
        out: where to write the result (may alias either input). foreach: multi-tensor kernels.

    Raises:
        TypeError, ValueError: ``lam`` is not a finite number >= 0.

    Example:
        >>> import torch
        >>> mixed_direction([torch.tensor([1.0])], [torch.tensor([2.0])], lam=0.5)
        [tensor([2.])]
    """
    step = SurgeryStep(
        MixedFormula(), [main_grads, aux_grads], [], hyper={"lam": lam}, out=out, foreach=foreach
    )
    return step.apply().direction


def mixed_direction_reference(
    main_grads: TensorList, aux_grads: TensorList, *, lam: float
) -> list[Tensor]:
    """Slow reference for :func:`mixed_direction`."""
    return unflat(flat64(main_grads) + lam * flat64(aux_grads), main_grads)


def mixed_reference(grads: Sequence[TensorList], *, lam: float | Sequence[float]) -> list[Tensor]:
    """Slow float64 reference of K-level Mixed: ``g_0 + sum_k lam_k g_k``."""
    k = len(grads) - 1
    lams = [float(lam)] * k if not isinstance(lam, Sequence) else [float(x) for x in lam]
    d = flat64(grads[0])
    for level in range(1, k + 1):
        d = d + lams[level - 1] * flat64(grads[level])
    return unflat(d, grads[0])


__all__ = ["MixedFormula", "mixed_direction", "mixed_direction_reference", "mixed_reference"]
