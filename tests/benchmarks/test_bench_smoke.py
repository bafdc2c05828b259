"""Smoke test: ``benchmarks/run.py --quick`` runs every benchmark and writes its report.

No timing is asserted (the machine is shared); only that each section ran and reported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from torchbloop.functional import cpu_kernel_available

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_benchmarks_run_and_write_a_report(tmp_path: Path) -> None:
    report = tmp_path / "bench.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--write", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = report.read_text()
    for heading in (
        "Generic fused kernel and `combine`",
        "Combination step",
        "Per-tensor overhead",
        "Scaling",
        "Training step",
        "batched VJP",
        "Peak training memory",
    ):
        assert heading in text, heading
    assert "| bloop_update_ (torch ops, no C kernel) |" in text
    assert "| Bloop.combine(main_grads, aux_grads) (public) |" in text
    if cpu_kernel_available():
        assert "| bloop_update_ (fused C kernel, default) |" in text
        assert "| generic kernel: K=3 step, 7 lists (gram + lincomb) |" in text
        assert "within 1.2x of its memory-traffic floor" in text
    assert (tmp_path / "bench_scaling.png").stat().st_size > 0


def test_quick_combination_section_runs(tmp_path: Path) -> None:
    """The fast part on its own (kept out of the slow marker so ordinary CI exercises it)."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--sections",
            "kernel,small,scaling",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "500 tensors take" in result.stdout
    assert "Bloop.combine(main_grads, aux_grads) (public)" in result.stdout
    if cpu_kernel_available():
        assert "generic kernel: K=1 Bloop step" in result.stdout
