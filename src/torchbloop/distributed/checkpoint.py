"""Surgeon state in ``torch.distributed.checkpoint`` (DCP), sharded or not.

DCP loads *in place*: it asks each object for a template ``state_dict()`` with every tensor
already allocated, reads the checkpoint into it, and hands it back through
``load_state_dict``. A fresh :class:`~torchbloop.Bloop` has no EMA yet (it is created from the
first gradient), so :class:`SurgeonState` presents the surgeon's declared template
(:meth:`~torchbloop.Surgeon.state_template`: zeros with the dtype, device and sharding the
surgeon would give them, one per buffer of every level) and a flag that says
whether the state was real. Under FSDP2 the EMA is a ``DTensor`` and every rank reads and writes
its own shard. A method's scalar state (GradVac's target cosine, MetaBalance's per-tensor norm
averages, under ``"scalars"``) is a plain tensor, the same on every rank: DCP writes it once and
every rank, or a plain process, reads it back (tested at world size 2 with FSDP2 and DDP). Integer
state keys become strings for DCP and back.

Example:
    >>> import tempfile, torch
    >>> import torch.distributed.checkpoint as dcp
    >>> from torchbloop import Bloop
    >>> from torchbloop.distributed.checkpoint import SurgeonState
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> surgeon = Bloop([w], lam=0.5)
    >>> surgeon.backward(main=w.sum(), aux=w.pow(2).sum())
    >>> path = tempfile.mkdtemp()
    >>> _ = dcp.save({"surgeon": SurgeonState(surgeon)}, checkpoint_id=path, no_dist=True)
    >>> fresh = Bloop([w], lam=0.5)
    >>> dcp.load({"surgeon": SurgeonState(fresh)}, checkpoint_id=path, no_dist=True)
    >>> torch.equal(fresh.ema[0], surgeon.ema[0]), fresh.step_count
    (True, 1)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch.distributed.checkpoint.stateful import Stateful

if TYPE_CHECKING:
    from ..surgeons import Surgeon

__all__ = ["SurgeonState"]

_HAS_STATE = "has_state"
_STATE = "state"


class SurgeonState(Stateful):
    """A :class:`torch.distributed.checkpoint.stateful.Stateful` view of a surgeon.

    Put it in the dict given to ``dcp.save`` / ``dcp.load`` next to the model and optimizer
    (``{"model": ..., "optim": ..., "surgeon": SurgeonState(surgeon)}``). Loading validates the
    state exactly as :meth:`Surgeon.load_state_dict` does (EMA kept in float32 for bf16/fp16
    parameters).

    Args:
        surgeon: the surgeon whose state is saved or restored.
    """

    def __init__(self, surgeon: Surgeon) -> None:
        self.surgeon = surgeon

    def state_dict(self) -> dict[str, Any]:
        """The surgeon's state with string keys and every state tensor allocated."""
        sd = self.surgeon.state_dict()
        state = sd[_STATE]
        has_state = bool(state)
        if not has_state:
            state = _template_state(self.surgeon)
        sd[_STATE] = {str(i): dict(entry) for i, entry in state.items()}
        sd[_HAS_STATE] = has_state
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state DCP read into the template of :meth:`state_dict`."""
        sd = dict(state_dict)
        has_state = bool(sd.pop(_HAS_STATE, True))
        state = sd.get(_STATE, {})
        sd[_STATE] = {int(i): dict(entry) for i, entry in state.items()} if has_state else {}
        self.surgeon.load_state_dict(sd)


def _template_state(surgeon: Surgeon) -> dict[int, dict[str, Any]]:
    """Zero state tensors shaped as the surgeon would create them (none for stateless ones)."""
    return surgeon.state_template()
