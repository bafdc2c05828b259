"""Experiment definitions: importing a module registers its experiment (one module each).

To add an experiment: write ``<name>.py`` that calls ``register(Experiment(...))``, import it
below and add it to ``__all__`` (``torchbloop list`` shows them in import order).
"""

from . import (
    conditioning,
    ema_ablation,
    hierarchy,
    joint_lm,
    multitask,
    negative_case,
    projection_bias,
    quadratic,
    regime,
    small_weights,
    smooth_mlp,
    translation,
)

__all__ = [
    "conditioning",
    "ema_ablation",
    "hierarchy",
    "joint_lm",
    "multitask",
    "negative_case",
    "projection_bias",
    "quadratic",
    "regime",
    "small_weights",
    "smooth_mlp",
    "translation",
]
