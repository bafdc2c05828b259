"""Shared test set-up: fixed seeds for the core tests, and ``tests/`` on ``sys.path``.

Test modules import the shared helpers as ``import _asserts``, whatever pytest's import mode.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

_CORE = {"functional", "surgeons"}


@pytest.fixture(autouse=True)
def _core_test_setup(request: pytest.FixtureRequest) -> Iterator[None]:
    """Core tests start from the same global RNG state and run on one intra-op thread.

    The core tests use tiny tensors: one thread is faster, and on a loaded machine far faster
    (thread hand-offs dominated the run time: ~15x slower with 2 threads). Restored afterwards.
    """
    if not _CORE & set(Path(str(request.node.path)).parts):
        yield
        return
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
