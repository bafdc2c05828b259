"""
PyTorch Lightning
=================

Use Lightning's manual optimization: the surgeon replaces ``self.manual_backward(loss)``,
``opt.step()`` then goes through Lightning's precision and strategy plugins as usual. Create
the surgeon in ``__init__`` so that ``on_load_checkpoint`` can restore its EMA when resuming,
and store its state in the ``.ckpt`` with ``on_save_checkpoint``. Under a DDP strategy the
surgeon averages the gradients over the ranks itself; under ``precision="16-mixed"`` pass
Lightning's ``GradScaler``. Lightning training equals a plain loop bit for bit (tested).

The repository's example, ``examples/lightning_train.py``:

.. literalinclude:: /../../examples/lightning_train.py
   :language: python

Below it runs for five steps, as ``python examples/lightning_train.py --steps 5``.
"""

import subprocess
import sys
from pathlib import Path

# The repository: the first folder up from here that holds examples/.
root = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "examples").is_dir())
command = [sys.executable, str(root / "examples" / "lightning_train.py"), "--steps", "5"]
run = subprocess.run(command, capture_output=True, text=True, timeout=300)
print(run.stdout)
if run.returncode != 0:
    raise RuntimeError(f"the Lightning example failed:\n{run.stderr}")

# %%
# With ``precision="16-mixed"`` on a GPU the example passes Lightning's scaler,
# ``self.trainer.precision_plugin.scaler``, to ``surgeon.backward``; under a DDP strategy no
# change is needed.
