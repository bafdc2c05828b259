"""
Hugging Face Trainer
====================

Subclass ``Trainer`` and override ``training_step``: compute the main loss with
``compute_loss``, your auxiliary loss, and call ``surgeon.backward`` with
``accumulate=not self.accelerator.sync_gradients`` so that gradient accumulation works. The
Trainer then clips, steps the optimizer and the scheduler, and zeroes the gradients as usual.
With ``lam=0`` and gradient accumulation it equals the stock ``Trainer`` (tested). Save
``trainer.surgeon.state_dict()`` beside the Trainer's checkpoints to resume the EMA.

The repository's example, ``examples/hf_trainer.py``: a tiny GPT-2 built from a config (no
download), trained on sequences that repeat a random prefix, with the distance of the weights
to their initial values as the auxiliary loss.

.. literalinclude:: /../../examples/hf_trainer.py
   :language: python

Below it runs for four steps, as ``python examples/hf_trainer.py --steps 4``.
"""

import os
import subprocess
import sys
from pathlib import Path

# The repository: the first folder up from here that holds examples/.
root = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "examples").is_dir())
env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
command = [sys.executable, str(root / "examples" / "hf_trainer.py"), "--steps", "4"]
run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
print(run.stdout)
if run.returncode != 0:
    raise RuntimeError(f"the Trainer example failed:\n{run.stderr}")

# %%
# ``accumulate=not self.accelerator.sync_gradients`` maps the Trainer's gradient accumulation
# onto the surgeon's: the direction is combined once per optimizer step, from the summed
# gradients of all micro-batches.
