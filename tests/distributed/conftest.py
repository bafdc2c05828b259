"""Multi-process tests: this folder goes on ``sys.path`` so spawned ranks can import the workers.

Worker functions live in plain modules (``_launch``, ``_ddp_workers``, ...) rather than in the test
files: ``torch.multiprocessing.spawn`` pickles them by reference, and a rank can only import a
module by a name that ``sys.path`` (which spawned processes inherit) resolves.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
