"""Mixed: the usual regulariser, ``d = g_main + lam * g_aux``."""

from __future__ import annotations

from torch import Tensor

from ._combination import axpby
from ._reference import flat64, unflat
from ._types import TensorList


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

    Example:
        >>> import torch
        >>> mixed_direction([torch.tensor([1.0])], [torch.tensor([2.0])], lam=0.5)
        [tensor([2.])]
    """
    return axpby(1.0, main_grads, lam, aux_grads, out=out, foreach=foreach)


def mixed_direction_reference(
    main_grads: TensorList, aux_grads: TensorList, *, lam: float
) -> list[Tensor]:
    """Slow reference for :func:`mixed_direction`."""
    return unflat(flat64(main_grads) + lam * flat64(aux_grads), main_grads)
