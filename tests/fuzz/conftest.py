"""Fuzz tests: this folder goes on ``sys.path`` so the test modules import ``_world``."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
