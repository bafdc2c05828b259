"""
DDP with torchrun
=================

Build the surgeon on the DDP model's parameters and write the same lines as in one process.
The surgeon computes the gradients with ``torch.autograd.grad``, which never runs DDP's
all-reduce hooks, so whenever a process group with several ranks is initialised it averages the
gradients itself, in **one** coalesced ``all_reduce`` per step. Every rank then gets the
direction of the concatenated batch and ends with the same parameters and EMA.
``aux_replicated=True`` declares an auxiliary loss that is the same on every rank (weight decay
here), whose gradient is then not communicated.

The repository's example, ``examples/ddp_train.py``:

.. literalinclude:: /../../examples/ddp_train.py
   :language: python

Below it runs on two CPU processes (gloo) under ``torchrun``, as you would run it yourself::

    torchrun --nproc_per_node=2 examples/ddp_train.py --steps 20
"""

import subprocess
import sys
from pathlib import Path

# The repository: the first folder up from here that holds examples/.
root = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "examples").is_dir())
command = [
    sys.executable,
    "-m",
    "torch.distributed.run",
    "--standalone",
    "--nproc_per_node=2",
    str(root / "examples" / "ddp_train.py"),
    "--steps",
    "20",
]
run = subprocess.run(command, capture_output=True, text=True, timeout=300)
print(run.stdout)
if run.returncode != 0:
    raise RuntimeError(f"torchrun failed:\n{run.stderr}")

# %%
# Run without ``torchrun`` (``python examples/ddp_train.py``), the same script trains in one
# process. ``process_group=None`` turns the surgeon's averaging off (independent runs on each
# rank); a ``ProcessGroup`` averages over that group only, e.g. the data-parallel group of a
# 2-D mesh. With gradient accumulation the surgeon averages once, on the last micro-batch.
