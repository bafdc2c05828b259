"""CLI checks made before any work (issue 11): output folder, datasets, extras, Ctrl-C, texts.

Each test failed on the CLI before these checks (a sweep ran, then died on ``mkdir``; one
traceback per run for a missing dataset; a traceback on Ctrl-C; ``list`` needed matplotlib;
the quadratic smoke report stated the default lam grid and repeated "(authors' notebook)").
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from torchbloop.experiments import cli
from torchbloop.experiments.cli import INTERRUPTED, main
from torchbloop.experiments.data import DATASETS
from torchbloop.experiments.sweep import registry
from torchbloop.experiments.sweep.registry import Experiment, RunSpec, get, names, register
from torchbloop.experiments.sweep.results import complete_record, write_record


@pytest.fixture
def no_sweep(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """``run_sweep`` replaced by a recorder: a test fails if the CLI starts any work."""
    calls: list[Any] = []

    def record(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        raise AssertionError("a sweep started")

    monkeypatch.setattr(cli, "run_sweep", record)
    return calls


def test_unwritable_out_is_refused_before_any_run(
    tmp_path: Path, no_sweep: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out in (blocker / "out", blocker):
        assert main(["run", "quadratic", "--budget", "smoke", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"Invalid --out {str(out)!r}: cannot write there" in err
    assert no_sweep == []


def test_missing_datasets_are_reported_once_before_any_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_sweep: list[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TORCHBLOOP_DATA", str(tmp_path / "empty"))
    for info in DATASETS.values():
        monkeypatch.delenv(info.env, raising=False)
    assert main(["run", "multitask", "--budget", "smoke", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("Missing dataset(s) fashion_mnist, mnist5k") == 1 and "Traceback" not in err
    assert "python -m torchbloop.experiments.data fetch fashion_mnist mnist5k" in err
    assert no_sweep == [] and not (tmp_path / "o").exists()


def _interrupting_run(spec: RunSpec) -> dict[str, Any]:
    raise KeyboardInterrupt


def test_ctrl_c_in_process_prints_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register(
        Experiment(name="_ctrl_c", title="t", paper_ref="-", kind="sweep", run=_interrupting_run)
    )
    try:
        args = ["run", "_ctrl_c", "--methods", "mixed", "--lams", "1", "--out", str(tmp_path)]
        assert main(args) == cli.EXIT_INTERRUPTED
    finally:
        registry._REGISTRY.pop("_ctrl_c", None)
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == INTERRUPTED and "Traceback" not in err


@pytest.mark.slow
def test_ctrl_c_with_worker_processes_ends_them_without_tracebacks(tmp_path: Path) -> None:
    """A real SIGINT to the whole process group (what a terminal's Ctrl-C sends).

    This test hung now and then under load (three times up to 2026-11-30, once in CI): a
    Ctrl-C that fell while a worker was being started orphaned it; the deterministic form of
    that case is the next test."""
    cmd = [sys.executable, "-m", "torchbloop.experiments", "run", "quadratic", "--budget"]
    cmd += ["paper", "--methods", "mixed", "--lams", "0", "1", "--jobs", "2"]
    cmd += ["--out", str(tmp_path / "o")]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    runs = tmp_path / "o" / "quadratic" / "runs"
    deadline = time.monotonic() + 120
    while not (tmp_path / "o").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # the parent checks --out once its imports are done, then starts
    time.sleep(1.0)  # the workers: spawned, importing torch or training
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == cli.EXIT_INTERRUPTED, err
    assert err.strip().splitlines()[-1] == INTERRUPTED and "Traceback" not in err, err
    assert not list(runs.glob("*.json"))  # a paper-budget run cannot have finished
    with pytest.raises(ProcessLookupError):  # no worker left behind in the group
        for _ in range(50):
            os.killpg(proc.pid, 0)
            time.sleep(0.1)


SLOW_SPAWN = """
import sys, time
import multiprocessing.popen_spawn_posix as P
launch = P.Popen._launch
def slow_launch(self, process_obj):
    launch(self, process_obj)  # the worker process runs from here on
    sys.stderr.write("spawned\\n"); sys.stderr.flush()
    time.sleep(2.0)  # before the pool registers it: the window a Ctrl-C fell into
if __name__ == "__main__":
    P.Popen._launch = slow_launch
    from torchbloop.experiments.cli import main
    sys.exit(main(["run", "quadratic", "--budget", "paper", "--methods", "mixed", "--lams",
                   "0", "1", "--jobs", "2", "--out", sys.argv[1]]))
"""


@pytest.mark.slow
def test_ctrl_c_while_a_worker_starts_leaves_no_worker_behind(tmp_path: Path) -> None:
    """Ctrl-C between the start of a worker process and its registration in the pool.

    Failed before the fix: SIGINT, blocked in the main thread while workers start, was taken by
    another thread of the process (a BLAS thread), so ``KeyboardInterrupt`` was raised inside
    ``ProcessPoolExecutor.submit``; the started worker was in no list, was never ended, and ran
    the paper-budget run on with the pipes open: ``communicate`` timed out with the parent gone
    and the worker alive (the intermittent hang of the test above). The window is widened here
    by a parent-side sleep right after the worker process starts."""
    script = tmp_path / "slow_spawn.py"
    script.write_text(SLOW_SPAWN)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "o")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    try:
        first = proc.stderr.readline()  # the first worker is running, not yet registered
        assert first.strip() == "spawned", first
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None or _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == cli.EXIT_INTERRUPTED, err
    assert err.strip().splitlines()[-1] == INTERRUPTED and "Traceback" not in err, err
    for _ in range(50):  # the resource tracker leaves once every worker has gone
        if not _group_alive(proc.pid):
            break
        time.sleep(0.1)
    assert not _group_alive(proc.pid), "a process of the run is still alive"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


BLOCK_MATPLOTLIB = """
import json, sys
sys.modules["matplotlib"] = None  # import matplotlib -> ImportError, as without the extra
from torchbloop.experiments.cli import main
codes = {}
for name, argv in [("help", ["--help"]), ("list", ["list"]),
                   ("run", ["run", "quadratic", "--budget", "smoke", "--out", sys.argv[1]]),
                   ("report", ["report", sys.argv[2]])]:
    codes[name] = main(argv)
print("CODES " + json.dumps(codes))
"""


def test_help_and_list_work_without_matplotlib_and_run_says_what_to_install(
    tmp_path: Path,
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_MATPLOTLIB, str(tmp_path / "o"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    codes = json.loads(proc.stdout.split("CODES ")[-1])
    assert codes == {"help": 0, "list": 0, "run": 2, "report": 2}
    assert "quadratic" in proc.stdout and "usage: torchbloop" in proc.stdout
    assert proc.stderr.count('pip install "torchbloop[experiments]"') == 2, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


def test_report_describes_the_run_it_comes_from(tmp_path: Path) -> None:
    """A 4-lam smoke run of the quadratic: the report lists those lams, not another grid."""
    lams = (0.0, 0.01, 1.0, 100.0)
    for method in ("bloop", "mixed"):
        for lam in lams:
            spec = RunSpec("quadratic", method, lam, 0.01, 0, "smoke")
            x = 1.0 + lam + (method == "mixed")
            final = {"train_main": x, "train_aux": 1 / x, "eval_main": x, "eval_aux": 1 / x}
            final["dist_to_bilevel_opt"] = x
            write_record(tmp_path, complete_record(spec, {"final": final}, 0.25))
    assert main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "quadratic" / "report.md").read_text()
    assert "8 run(s): methods Bloop, Mixed; lam in {0, 1e-02, 1e+00, 1e+02}" in text
    assert "seeds {0}; budget smoke; total run time 2.0 s" in text
    assert "torchbloop run quadratic --budget smoke --methods bloop mixed --out OUT" in text
    assert "lam in logspace" not in text
    assert text.count("(authors' notebook") == 1  # once, in the paper reference line


@pytest.mark.parametrize("name", names())
def test_titles_do_not_repeat_the_paper_reference(name: str) -> None:
    exp = get(name)
    for part in exp.paper_ref.split(";"):
        assert f"({part.strip()})" not in exp.title


def test_report_reproduce_command_gives_the_non_default_values(tmp_path: Path) -> None:
    for lam, seed in ((0.5, 3), (2.0, 3)):
        spec = RunSpec("quadratic", "pcgrad", lam, 0.01, seed, "smoke")
        final = {"train_main": lam, "train_aux": 1 / lam, "eval_main": lam, "eval_aux": 1 / lam}
        final["dist_to_bilevel_opt"] = lam
        write_record(tmp_path, complete_record(spec, {"final": final}, 0.1))
    assert main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "quadratic" / "report.md").read_text()
    cmd = "torchbloop run quadratic --budget smoke --methods pcgrad --lams 0.5 2.0 --seeds 3"
    assert cmd in text
    assert math.isclose(float(text.split("total run time ")[1].split(" s")[0]), 0.2)
