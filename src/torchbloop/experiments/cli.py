"""``torchbloop`` command line: list, run, report, demo.

Examples::

    torchbloop list
    torchbloop run quadratic --budget smoke --out results/smoke
    torchbloop run quadratic --methods bloop mixed --lams 0 0.1 1 --seeds 0 1 --jobs 2 --out results/q
    torchbloop report results/q
    torchbloop demo --out results/demo

Every argument is validated before any work starts; invalid ones exit with status 2 and a
message listing the valid choices. ``run`` exits with 1 when a run failed (the others still
run and are saved), 0 otherwise.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import methods as method_table
from . import data
from .analysis.groups import group_records
from .analysis.plots import EXTRA_HINT, MissingExtraError
from .analysis.summary import dominance_sentence, pareto_summary
from .sweep.registry import BUDGETS, Experiment, Lam, as_lam, get, lam_levels, names
from .sweep.results import RecordError, experiments_in, read_records
from .sweep.runner import run_sweep

DEMO_EXPERIMENTS: tuple[str, ...] = ("smooth_mlp", "quadratic")
"""What ``torchbloop demo`` runs, first the clearest claim reproduced on real data (the smooth
MLP on Fashion-MNIST, Bloop's front below Mixed's with 3 seeds at the demo budget), then the
paper notebook's quadratic."""
DEMO_METHODS: tuple[str, ...] = ("bloop", "mixed")
DEMO_SEEDS: dict[str, tuple[int, ...]] = {"smooth_mlp": (0, 1, 2)}
"""Seeds per demo experiment (default: the experiment's first seed)."""
DEMO_CLAIMS: dict[str, tuple[str, ...]] = {
    "quadratic": ("3a", "3b"),
    "smooth_mlp": ("4Da", "4Db", "4Fa", "4Fb"),
}
"""The scoreboard rows (``docs/results/scoreboard.md``) each demo experiment is a small version
of: the demo prints them, from a repository checkout, beside its own numbers."""
SCOREBOARD = Path("docs") / "results" / "scoreboard.md"
INTERRUPTED = "interrupted; run the same command again to resume"
EXIT_INTERRUPTED = 130


class _UsageError(Exception):
    pass


def _lam_arg(text: str) -> Lam:
    """``--lams`` value: a number, or comma-separated numbers (one weight per aux loss)."""
    try:
        return as_lam([float(x) for x in text.split(",")])
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"invalid float value(s) {text!r}: give a number, or comma-separated numbers "
            "(one weight per aux loss, highest priority first)"
        ) from None


def _methods_help() -> str:
    rows = [f"{n} ({i.label})" for n, i in method_table.METHODS.items()]
    return f"methods (default: the experiment's); valid: {', '.join(rows)}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchbloop", description="Bloop experiment suite.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments (name, title, paper reference)")
    r = sub.add_parser("run", help="run a sweep of one experiment (resumable)")
    r.add_argument("name", help="experiment name (see `torchbloop list`)")
    r.add_argument("--methods", nargs="+", help=_methods_help())
    r.add_argument(
        "--lams",
        nargs="+",
        type=_lam_arg,
        help="lam values >= 0 (default: the budget's grid); with several aux losses, "
        "comma-separated weights per run, e.g. 0.1,0.01. Methods without lam ("
        + ", ".join(n for n, i in method_table.METHODS.items() if not i.takes_lam)
        + f") run once per seed at their defaults, recorded at lam {method_table.FIXED_LAM:g}",
    )
    r.add_argument(
        "--rho",
        nargs="+",
        type=float,
        help="EMA weight(s) in (0, 1] of the methods that take rho (default: the experiment's)",
    )
    r.add_argument("--seeds", nargs="+", type=int, help="seeds >= 0 (default: the experiment's)")
    r.add_argument(
        "--budget", default="default", help=f"one of {', '.join(BUDGETS)} (default: default)"
    )
    r.add_argument("--jobs", type=int, default=1, help="worker processes (default: 1)")
    r.add_argument("--out", required=True, help="results directory (records go to OUT/NAME/runs/)")
    rep = sub.add_parser(
        "report", help="write Markdown reports with figures from the records in DIR"
    )
    rep.add_argument("out", help="results directory")
    d = sub.add_parser(
        "demo",
        help="Bloop vs Mixed: smooth MLP on Fashion-MNIST (3 seeds) and the quadratic, small "
        "budgets, with a report and the scoreboard's test",
    )
    d.add_argument(
        "--out", default="results/demo", help="results directory (default: results/demo)"
    )
    d.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="worker processes")
    return p


def _check_jobs(jobs: int) -> None:
    if jobs < 1:
        raise _UsageError(f"Invalid --jobs={jobs}: must be an integer >= 1")


def _check_extra(command: str) -> None:
    """``run``, ``report`` and ``demo`` need the ``experiments`` extra (matplotlib)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise _UsageError(
            f"`torchbloop {command}` needs matplotlib, which is not installed: {EXTRA_HINT}"
        ) from None


def _check_lams(exp: Experiment, methods: Sequence[str], lams: Sequence[Lam]) -> None:
    bad = [x for x in lams if not all(math.isfinite(v) and v >= 0 for v in lam_levels(x))]
    if bad:
        raise _UsageError(f"Invalid --lams {bad}: each lam must be finite and >= 0")
    k = max((len(lam_levels(x)) for x in lams), default=1)
    if k > exp.max_levels:
        raise _UsageError(
            f"Invalid --lams with {k} weights: {exp.name!r} has {exp.max_levels} aux loss(es)"
        )
    for m in methods:
        max_aux = method_table.get_method(m).max_aux
        if max_aux is not None and k > max_aux:
            raise _UsageError(
                f"Invalid --methods {m!r} with {k} aux weights per lam: it takes at most "
                f"{max_aux} aux loss(es)"
            )


def _validate_run(args: argparse.Namespace) -> None:
    valid = names()
    if args.name not in valid:
        raise _UsageError(f"Unknown experiment {args.name!r}: valid names are {', '.join(valid)}")
    exp = get(args.name)
    table = method_table.METHODS
    bad = [m for m in args.methods or [] if m not in table]
    if bad:
        raise _UsageError(f"Invalid --methods {bad}: valid methods are {', '.join(table)}")
    if args.budget not in BUDGETS:
        raise _UsageError(
            f"Invalid --budget={args.budget!r}: valid budgets are {', '.join(BUDGETS)}"
        )
    lams = args.lams if args.lams is not None else exp.lams_for(args.budget)
    _check_lams(exp, args.methods or exp.methods, lams)
    bad_rhos = [x for x in args.rho or [] if not (0 < x <= 1)]
    if bad_rhos:
        raise _UsageError(f"Invalid --rho {bad_rhos}: each rho must be in (0, 1]")
    bad_seeds = [s for s in args.seeds or [] if s < 0]
    if bad_seeds:
        raise _UsageError(f"Invalid --seeds {bad_seeds}: each seed must be an integer >= 0")
    _check_jobs(args.jobs)


def missing_datasets(experiments: Sequence[Experiment]) -> dict[str, Path]:
    """``{dataset: a missing file}`` over the datasets the experiments need."""
    needed = dict.fromkeys(d for e in experiments for d in e.datasets)
    found = {d: data.missing_file(d) for d in needed}
    return {d: path for d, path in found.items() if path is not None}


def _check_datasets(experiments: Sequence[Experiment]) -> None:
    """Every dataset the experiments need is on disk, checked once before any run."""
    missing = missing_datasets(experiments)
    if missing:
        where = "; ".join(f"{d}: {path} does not exist" for d, path in missing.items())
        raise _UsageError(
            f"Missing dataset(s) {', '.join(missing)} ({where}). Fetch them with "
            f"`python -m torchbloop.experiments.data fetch {' '.join(missing)}` (or `make data`), "
            "or point TORCHBLOOP_DATA at a copy."
        )


def _check_out(out: str | Path) -> None:
    """``out`` is (or can be made) a directory this process can write into."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".torchbloop-write-check-"):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise _UsageError(f"Invalid --out {str(out)!r}: cannot write there ({reason})") from None


def _cmd_list() -> int:
    rows = [(n, get(n)) for n in names()]
    width = max((len(n) for n, _ in rows), default=0)
    for n, e in rows:
        print(f"{n:<{width}}  {e.title} ({e.paper_ref})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    exp = get(args.name)
    _check_extra("run")
    _check_datasets([exp])
    _check_out(args.out)
    result = run_sweep(
        exp.name,
        methods=args.methods or exp.methods,
        lams=args.lams if args.lams is not None else exp.lams_for(args.budget),
        rhos=args.rho or exp.rhos_default(),
        seeds=args.seeds if args.seeds is not None else exp.seeds,
        budget=args.budget,
        jobs=args.jobs,
        out_dir=args.out,
    )
    print(
        f"{exp.name}: {len(result.completed)} run(s) done, {len(result.skipped)} skipped, "
        f"{len(result.failed)} failed; records in {Path(args.out) / exp.name / 'runs'}"
    )
    return 0 if result.ok else 1


def _demo_table(out: Path, name: str) -> list[str]:
    records = read_records(out, name)
    summary = pareto_summary(records)
    lines = [f"{name}: hypervolume of each method's end points (higher is better)"]
    splits = list(summary)
    lines.append(
        f"  {'method':<18}"
        + "".join(f"{'HV ' + s + ' (' + summary[s]['space'] + ')':>22}" for s in splits)
    )
    for g in summary[splits[0]]["hv"] if splits else []:
        lines.append(f"  {g:<18}" + "".join(f"{summary[s]['hv'][g]:>22.4g}" for s in splits))
    best: dict[str, float] = {}
    for label, recs in group_records(records).items():
        dists = [
            r["final"]["dist_to_bilevel_opt"] for r in recs if "dist_to_bilevel_opt" in r["final"]
        ]
        if dists:
            best[label] = min(dists)
    if best:
        lines.append(
            "  closest end point to the bilevel optimum (over lam): "
            + ", ".join(f"{g} {d:.3g}" for g, d in best.items())
        )
    for s in splits:
        for d in summary[s]["dominance"]:
            lines.append(f"  {s}: {dominance_sentence(*d)}")
    lines += _demo_claims(records, name, splits)
    return lines


def _demo_claims(records: Sequence[dict[str, Any]], name: str, splits: Sequence[str]) -> list[str]:
    """The scoreboard's test on this run (Bloop vs Mixed at matched main loss), then the
    committed rows of the same claim, which have the seeds and budgets this run has not."""
    from .analysis import fronts as F
    from .analysis.scoreboard import front_claim

    pair = [r for r in records if r["spec"]["method"] in ("bloop", "mixed")]
    methods = {r["spec"]["method"] for r in pair}
    lines = []
    if methods == {"bloop", "mixed"}:
        seeds = len({r["spec"]["seed"] for r in pair})
        lines.append(
            f"  the scoreboard's test on this run (Bloop vs Mixed at matched main loss, "
            f"{seeds} seed{'s' if seeds != 1 else ''}):"
        )
        for split in splits:
            c = front_claim("", "", F.end_points(pair, split), budget="", report="")
            lines.append(f"    {split}: {c.number}: {c.verdict}")
    rows = DEMO_CLAIMS.get(name, ())
    if rows and SCOREBOARD.is_file():
        lines.append(f"  the same claim in {SCOREBOARD} (seeds and budgets of the evidence runs):")
        for line in SCOREBOARD.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if len(cells) >= 6 and cells[0] in rows:
                verdict = cells[4].strip("*")
                lines.append(f"    {cells[0]} {cells[1]}: {cells[3]}: {verdict} ({cells[5]})")
    return lines


def _cmd_demo(args: argparse.Namespace) -> int:
    _check_jobs(args.jobs)
    out = Path(args.out)
    available = set(names())
    for name in DEMO_EXPERIMENTS:
        if name not in available:
            print(f"demo: experiment {name!r} is not available yet; skipped", file=sys.stderr)
    experiments = [get(n) for n in DEMO_EXPERIMENTS if n in available]
    _check_extra("demo")
    _check_datasets(experiments)
    _check_out(out)
    ran, ok = [], True
    for exp in experiments:
        budget = exp.demo_budget
        result = run_sweep(
            exp.name,
            [m for m in exp.methods if m in DEMO_METHODS] or exp.methods,
            exp.lams_for(budget),
            exp.rhos_default(),
            DEMO_SEEDS.get(exp.name, exp.seeds[:1]),
            budget,
            args.jobs,
            out,
        )
        ok = ok and result.ok
        if result.completed or result.skipped:
            ran.append(exp.name)
    if not ran:
        print("demo: nothing ran", file=sys.stderr)
        return 1
    from .analysis.report import write_report

    readme = write_report(out, ran)
    for name in ran:
        print("\n".join(_demo_table(out, name)))
    print(f"Report: {readme}")
    return 0 if ok else 1


def _cmd_report(args: argparse.Namespace) -> int:
    if not Path(args.out).is_dir():
        raise _UsageError(f"Invalid results directory {args.out!r}: not a directory")
    _check_extra("report")
    if not experiments_in(args.out):
        raise _UsageError(f"Invalid results directory {args.out!r}: it holds no records")
    from .analysis.report import write_report

    print(write_report(args.out))
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "list":
        return _cmd_list()
    if args.command == "run":
        _validate_run(args)
        return _cmd_run(args)
    if args.command == "report":
        return _cmd_report(args)
    return _cmd_demo(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``torchbloop`` console script; returns the exit status.

    0: done; 1: a run failed (the others still ran and are saved) or a record on disk is not
    usable; 2: invalid arguments, a missing extra or dataset, or an unwritable ``--out``
    (all checked before any work); 130: interrupted (Ctrl-C), finished runs are kept.
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code) if isinstance(e.code, int) else 2
    try:
        return _dispatch(args)
    except _UsageError as e:
        print(f"torchbloop: error: {e}", file=sys.stderr)
        return 2
    except (RecordError, MissingExtraError) as e:
        print(f"torchbloop: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(("\n" if sys.stderr.isatty() else "") + INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
