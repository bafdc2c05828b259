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
from collections.abc import Sequence
from pathlib import Path

from .analysis.plots import group_records
from .analysis.report import pareto_summary, write_report
from .sweep.registry import BUDGETS, METHODS, get, names
from .sweep.results import read_records
from .sweep.runner import run_sweep

DEMO_EXPERIMENTS: tuple[str, ...] = ("quadratic", "smooth_mlp")


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchbloop", description="Bloop experiment suite.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments (name, title, paper reference)")
    r = sub.add_parser("run", help="run a sweep of one experiment (resumable)")
    r.add_argument("name", help="experiment name (see `torchbloop list`)")
    r.add_argument(
        "--methods",
        nargs="+",
        help=f"methods (default: the experiment's); valid: {', '.join(METHODS)}",
    )
    r.add_argument(
        "--lams", nargs="+", type=float, help="lam values >= 0 (default: the budget's grid)"
    )
    r.add_argument(
        "--rho",
        nargs="+",
        type=float,
        help="Bloop EMA weight(s) in (0, 1] (default: the experiment's)",
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
        "demo", help="quadratic + smooth MLP, all methods, small budget, with a report"
    )
    d.add_argument(
        "--out", default="results/demo", help="results directory (default: results/demo)"
    )
    d.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="worker processes")
    return p


def _check_jobs(jobs: int) -> None:
    if jobs < 1:
        raise _UsageError(f"Invalid --jobs={jobs}: must be an integer >= 1")


def _validate_run(args: argparse.Namespace) -> None:
    valid = names()
    if args.name not in valid:
        raise _UsageError(f"Unknown experiment {args.name!r}: valid names are {', '.join(valid)}")
    bad = [m for m in args.methods or [] if m not in METHODS]
    if bad:
        raise _UsageError(f"Invalid --methods {bad}: valid methods are {', '.join(METHODS)}")
    if args.budget not in BUDGETS:
        raise _UsageError(
            f"Invalid --budget={args.budget!r}: valid budgets are {', '.join(BUDGETS)}"
        )
    bad_lams = [x for x in args.lams or [] if not (math.isfinite(x) and x >= 0)]
    if bad_lams:
        raise _UsageError(f"Invalid --lams {bad_lams}: each lam must be finite and >= 0")
    bad_rhos = [x for x in args.rho or [] if not (0 < x <= 1)]
    if bad_rhos:
        raise _UsageError(f"Invalid --rho {bad_rhos}: each rho must be in (0, 1]")
    bad_seeds = [s for s in args.seeds or [] if s < 0]
    if bad_seeds:
        raise _UsageError(f"Invalid --seeds {bad_seeds}: each seed must be an integer >= 0")
    _check_jobs(args.jobs)


def _cmd_list() -> int:
    rows = [(n, get(n)) for n in names()]
    width = max((len(n) for n, _ in rows), default=0)
    for n, e in rows:
        print(f"{n:<{width}}  {e.title} ({e.paper_ref})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    exp = get(args.name)
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
        for bg, og, k, n, rk, rn in summary[s]["dominance"]:
            lines.append(
                f"  {s}: {bg}'s front dominates {k}/{n} of {og}'s end points ({og}'s dominates {rk}/{rn} of {bg}'s)"
            )
    return lines


def _cmd_demo(args: argparse.Namespace) -> int:
    _check_jobs(args.jobs)
    out = Path(args.out)
    available = set(names())
    ran, ok = [], True
    for name in DEMO_EXPERIMENTS:
        if name not in available:
            print(f"demo: experiment {name!r} is not available yet; skipped", file=sys.stderr)
            continue
        exp = get(name)
        budget = exp.demo_budget
        result = run_sweep(
            name,
            exp.methods,
            exp.lams_for(budget),
            exp.rhos_default(),
            exp.seeds[:1],
            budget,
            args.jobs,
            out,
        )
        ok = ok and result.ok
        if result.completed or result.skipped:
            ran.append(name)
    if not ran:
        print("demo: nothing ran", file=sys.stderr)
        return 1
    readme = write_report(out, ran)
    for name in ran:
        print("\n".join(_demo_table(out, name)))
    print(f"Report: {readme}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``torchbloop`` console script; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code) if isinstance(e.code, int) else 2
    try:
        if args.command == "list":
            return _cmd_list()
        if args.command == "run":
            _validate_run(args)
            return _cmd_run(args)
        if args.command == "report":
            if not Path(args.out).is_dir():
                raise _UsageError(f"Invalid results directory {args.out!r}: not a directory")
            try:
                print(write_report(args.out))
            except ValueError as e:
                raise _UsageError(str(e)) from None
            return 0
        return _cmd_demo(args)
    except _UsageError as e:
        print(f"torchbloop: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
