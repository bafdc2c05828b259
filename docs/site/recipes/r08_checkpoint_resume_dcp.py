"""
Checkpoint and resume with torch.distributed.checkpoint
=======================================================

:class:`torchbloop.distributed.checkpoint.SurgeonState` is a DCP ``Stateful``: save it next to
the model and the optimizer. It works sharded too (under FSDP2 every rank writes and reads its
own shard of the EMA). Resuming is bit-identical on CPU; this recipe checks it against an
uninterrupted run. For a single file, ``torch.save(surgeon.state_dict())`` and
``surgeon.load_state_dict(torch.load(path, weights_only=True))`` do the same.
"""

import tempfile

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.stateful import Stateful

import torchbloop
from torchbloop.distributed.checkpoint import SurgeonState


class TrainState(Stateful):
    """The model and the optimizer, in DCP's form."""

    def __init__(self, model, opt):
        self.model, self.opt = model, opt

    def state_dict(self):
        model_sd, optim_sd = get_state_dict(self.model, self.opt)
        return {"model": model_sd, "optim": optim_sd}

    def load_state_dict(self, state_dict):
        set_state_dict(
            self.model,
            self.opt,
            model_state_dict=state_dict["model"],
            optim_state_dict=state_dict["optim"],
        )


torch.manual_seed(0)
data = [(torch.randn(32, 8), torch.randn(32, 1)) for _ in range(20)]


def build():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    return model, opt, torchbloop.Bloop(model.parameters(), lam=0.1, rho=0.05)


def train(model, opt, surgeon, batches):
    for x, y in batches:
        main = nn.functional.mse_loss(model(x), y)
        aux = sum(p.pow(2).sum() for p in model.parameters()) / 2
        opt.zero_grad()
        surgeon.backward(main=main, aux=aux)
        opt.step()


# Uninterrupted: 20 steps.
model, opt, surgeon = build()
train(model, opt, surgeon, data)
reference = [p.detach().clone() for p in model.parameters()]

# 10 steps, a checkpoint, then a fresh process's worth of objects resumes for 10 more.
path = tempfile.mkdtemp()
model, opt, surgeon = build()
train(model, opt, surgeon, data[:10])
dcp.save(
    {"train": TrainState(model, opt), "surgeon": SurgeonState(surgeon)},
    checkpoint_id=path,
    no_dist=True,
)

model, opt, surgeon = build()
dcp.load(
    {"train": TrainState(model, opt), "surgeon": SurgeonState(surgeon)},
    checkpoint_id=path,
    no_dist=True,
)
print(f"restored surgeon at step {surgeon.step_count}")
train(model, opt, surgeon, data[10:])
same = all(torch.equal(a, b) for a, b in zip(reference, model.parameters()))
print(f"resumed run equals the uninterrupted one bit for bit: {same}")
assert same

# %%
# A checkpoint taken before the first step restores "no EMA yet". DCP's ``get_state_dict``
# initialises a *fresh* optimizer's state by stepping it once with zero gradients (a DCP
# behaviour): checkpoint after at least one step if you need bitwise resumption of Adam-like
# optimizers.
