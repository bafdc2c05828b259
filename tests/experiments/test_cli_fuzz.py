"""Fuzzing the command line: any argument list gives an exit status, never a traceback, and
whatever reaches the sweep is valid (names in the tables, lams, rhos, seeds, jobs in range)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchbloop import methods as method_table
from torchbloop.experiments import cli
from torchbloop.experiments.sweep.registry import BUDGETS, DEMO_BUDGET, get, lam_levels, names
from torchbloop.experiments.sweep.runner import SweepResult

TOKENS = [
    "run", "list", "report", "demo", "--help", "--methods", "--lams", "--rho", "--seeds",
    "--budget", "--jobs", "--out", "out", "quadratic", "conditioning", "multitask", "nope",
    "bloop", "mixed", "pcgrad", "dynamic_barrier", "sgd", "smoke", "default", "paper", "huge",
    "0", "1", "-1", "2", "0.5", "1e308", "1e-320", "nan", "inf", "-inf", "0.1,0.01", "1,", ",",
    "0,0,0", "abc", "", "--", "-", "3.5",
]  # fmt: skip
token = st.one_of(
    st.sampled_from(TOKENS),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.,-_e", max_size=8),
)
value = st.one_of(st.sampled_from(TOKENS[17:]), st.floats().map(repr), st.integers().map(str))
option = st.tuples(
    st.sampled_from(["--methods", "--lams", "--rho", "--seeds", "--budget", "--jobs"]),
    st.lists(value, min_size=0, max_size=3),
).map(lambda o: [o[0], *o[1]])
run_commands = st.tuples(
    st.sampled_from(["quadratic", "conditioning", "projection_bias", "nope"]),
    st.lists(option, max_size=2),
).map(lambda c: ["run", c[0], *[t for o in c[1] for t in o], "--out", "out"])
argv_lists = st.one_of(st.lists(token, max_size=9), run_commands, run_commands)


def _check_sweep_args(name: str, *args: Any, **kwargs: Any) -> None:
    methods, lams, rhos, seeds, budget = (
        kwargs[k] for k in ("methods", "lams", "rhos", "seeds", "budget")
    )
    exp = get(name)
    assert name in names() and budget in (*BUDGETS, DEMO_BUDGET) and kwargs["jobs"] >= 1
    assert methods and all(m in method_table.METHODS for m in methods)
    for lam in lams:
        levels = lam_levels(lam)
        assert 1 <= len(levels) <= exp.max_levels
        assert all(math.isfinite(x) and x >= 0 for x in levels)
    assert rhos and all(0 < r <= 1 for r in rhos)
    assert all(isinstance(s, int) and s >= 0 for s in seeds)


@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(argv=argv_lists)
def test_any_arguments_give_a_status_and_only_valid_sweeps(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    calls: list[Any] = []

    def fake_sweep(*args: Any, **kwargs: Any) -> SweepResult:
        if args and not kwargs:  # demo passes the grid positionally
            keys = ("methods", "lams", "rhos", "seeds", "budget", "jobs", "out_dir")
            kwargs = dict(zip(keys, args[1:]))
            args = args[:1]
        _check_sweep_args(*args, **kwargs)
        calls.append(args)
        return SweepResult()

    monkeypatch.setattr(cli, "run_sweep", fake_sweep)
    monkeypatch.setattr(cli, "missing_datasets", lambda experiments: {})
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status in (0, 1, 2), (argv, status)
    assert "Traceback" not in err
    if status == 2:
        assert not calls
    if calls and argv and argv[0] == "run":
        assert len(calls) == 1 and status == 0
    RAN.append(bool(calls))


RAN: list[bool] = []


def test_fuzzing_reached_the_sweep() -> None:
    """The fuzz test above is not vacuous: some argument lists were valid sweeps."""
    if not RAN:
        pytest.skip("the fuzz test did not run in this session")
    assert sum(RAN) >= 10, sum(RAN)
