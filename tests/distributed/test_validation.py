"""Argument checks of the distributed options (no process group needed)."""

from __future__ import annotations

import pytest
import torch

from torchbloop import Bloop, Mixed
from torchbloop.distributed import data_parallel_group, is_sharded


def test_process_group_values() -> None:
    w = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="Invalid process_group='everywhere'"):
        Bloop([w], lam=0.1, process_group="everywhere")  # type: ignore[arg-type]
    assert data_parallel_group(None) is None
    assert data_parallel_group("auto") is None  # nothing initialised in this process
    for surgeon in (
        Bloop([w], lam=0.1, process_group=None),
        Mixed([w], lam=0.1, process_group=None),
    ):
        surgeon.backward(
            main=w.sum(), aux=w.pow(2).sum(), aux_replicated=True
        )  # single process: a no-op flag
        assert surgeon.step_count == 1


def test_plain_parameters_are_not_sharded() -> None:
    assert not is_sharded([torch.zeros(1), torch.zeros(2)])
    assert not is_sharded([])
