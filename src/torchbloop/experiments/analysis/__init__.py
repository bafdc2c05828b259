"""The analysis of records on disk: Pareto tools, figures and reports (they never train).

* :mod:`.pareto`: non-dominated sets, hypervolumes, reference points (numpy only).
* :mod:`.plots`: figures (needs matplotlib, the ``experiments`` extra; imported on use).
* :mod:`.report`: Markdown reports with figures and tables.
"""

from .pareto import dominated_count, hypervolume_2d, nondominated, reference_point

__all__ = ["dominated_count", "hypervolume_2d", "nondominated", "reference_point"]
