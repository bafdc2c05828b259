"""Benchmarks: the surgery's fused CPU kernel, Bloop's step and its alternatives, training steps, memory.

Usage::

    python benchmarks/run.py                               # full run, prints the tables
    python benchmarks/run.py --write docs/benchmarks.md    # ... and writes the report + plot
    python benchmarks/run.py --quick                       # every benchmark at tiny sizes (CI smoke)

Every table compares paths measured side by side in one run (interleaved rounds, medians), as
ratios; nothing here asserts a time. Optional comparisons (JAX, TorchJD) run only where those
packages are installed (``--install-optional`` runs ``pip install jax torchjd`` with the installed
torch pinned) and are skipped otherwise.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Large tensors go to mmap and come back to the OS at once, so that the memory children's
# resident-set peaks track live tensors (set before torch allocates anything).
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", "131072")

import torch  # noqa: E402

import _timing  # noqa: E402
import combination  # noqa: E402
import kernel  # noqa: E402
from combination import Row, run_alternatives, run_scaling, run_small_tensors  # noqa: E402
from memory import run_memory, run_timing  # noqa: E402
from torchbloop.functional import cpu_kernel_status  # noqa: E402
from training import make_task, run_steps, run_vjp  # noqa: E402

FULL = {
    "kernel_params": 20_000_000,
    "alt_params": 20_000_000,
    "small_params": 1_000_000,
    "scaling": [1_000_000, 10_000_000, 100_000_000],
    "repeats": 15,
    "step_repeats": 30,
    "mem_steps": 3,
    "mem_repeats": 10,
}
QUICK = {
    "kernel_params": 200_000,
    "alt_params": 200_000,
    "small_params": 100_000,
    "scaling": [100_000, 400_000],
    "repeats": 3,
    "step_repeats": 3,
    "mem_steps": 1,
    "mem_repeats": 2,
}


def environment(threads: int) -> list[str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    versions = [f"torch {torch.__version__}"]
    for name in ("jax", "torchjd"):
        try:
            __import__(name)
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except ImportError:
            versions.append(f"{name} not installed (skipped)")
    return [
        f"- {', '.join(versions)}, Python {platform.python_version()}",
        f"- CPU: {cpu}, {os.cpu_count()} logical cores; torch threads: {threads} (`torch.set_num_threads`); "
        f"timer: {'process CPU time' if _timing.CLOCK is time.process_time else 'wall clock'}",
        f"- load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (other processes share the machine)",
        f"- CUDA: {'yes, ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}",
        f"- {cpu_kernel_status()}",
    ]


def _ms(s: float) -> str:
    return f"{s * 1e3:.3f}" if s < 0.01 else f"{s * 1e3:.1f}"


def rows_table(rows: list[Row], *, with_tensors: bool) -> list[str]:
    head = (
        "| path | params | tensors | ms | x foreach_add_ | GB/s |"
        if with_tensors
        else ("| path | params | ms | x foreach_add_ | GB/s |")
    )
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [r.path, f"{r.params / 1e6:g}M"]
        if with_tensors:
            cells.append(str(r.tensors))
        cells += [_ms(r.seconds), f"{r.ratio:.2f}", f"{r.gbps:.1f}"]
        out.append("| " + " | ".join(cells) + " |")
    return out


def kernel_table(rows: list[Row]) -> list[str]:
    """The kernel section: time, ratio to the yardstick, transfers, floor and ratio to it."""
    out = [
        "| path | ms | x foreach_add_ | buffer transfers | floor (x foreach_add_) | x floor |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        floor = r.buffers / kernel.TRAFFIC[kernel.BASE]
        out.append(
            f"| {r.path} | {_ms(r.seconds)} | {r.ratio:.2f} | {r.buffers:g} | {floor:.2f} | "
            f"{kernel.floor_ratio(r):.2f} |"
        )
    return out


def dict_table(rows: list[dict[str, object]], cols: list[tuple[str, str, str]]) -> list[str]:
    out = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append(
            "| "
            + " | ".join(format(r.get(k, ""), f) if r.get(k, "") != "" else "" for k, _, f in cols)
            + " |"
        )
    return out


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name in dict.fromkeys(r.path for r in rows):
        pts = sorted((r.params, r.seconds * 1e3) for r in rows if r.path == name)
        ax.plot([p for p, _ in pts], [t for _, t in pts], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters (float32, 50 tensors)")
    ax.set_ylabel("time per combination step (ms, median)")
    ax.set_title("Bloop's combination step vs parameter count")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, few repeats (CI smoke test)"
    )
    parser.add_argument(
        "--write", type=Path, help="write the markdown report (and its plot beside it)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (default 1: on a small machine shared with other processes, "
        "multi-threaded kernels measure the other processes more than the kernels)",
    )
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu (default): CPU time of this process, which leaves out the time other processes "
        "hold the core (equal to wall time on an idle machine with one thread); wall: wall-clock time",
    )
    parser.add_argument(
        "--install-optional",
        action="store_true",
        help="pip-install the optional comparisons (jax, torchjd) first, keeping this torch",
    )
    parser.add_argument(
        "--sections",
        default="kernel,alt,small,scaling,steps,vjp,memory",
        help="comma-separated subset",
    )
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.install_optional:
        install_optional()
    torch.set_num_threads(args.threads)
    if args.threads == 1:  # JAX (imported later, if installed) on one thread too
        os.environ.setdefault(
            "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        )
    _timing.CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    sections = set(args.sections.split(","))
    start = time.perf_counter()
    command = (
        "python benchmarks/run.py"
        + (" --quick" if args.quick else "")
        + (f" --write {args.write}" if args.write else "")
        + f" --threads {args.threads} --clock {args.clock}"
    )
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
    ]
    lines += [*environment(args.threads), ""]

    def emit(block: list[str]) -> None:
        print("\n".join(block), flush=True)
        lines.extend(block)

    print("\n".join(lines), flush=True)
    scaling: list[Row] = []
    found: dict[str, object] = {}
    if "kernel" in sections:
        rows = kernel.run_kernel_rows(cfg["kernel_params"], 50, cfg["repeats"])
        found["kernel"] = rows
        emit(
            [
                f"## Generic fused kernel and `combine`, {cfg['kernel_params'] / 1e6:g}M float32 "
                "parameters in 50 tensors",
                "",
                *kernel_table(rows),
                "",
            ]
        )
    if "alt" in sections:
        rows = run_alternatives(cfg["alt_params"], 50, cfg["repeats"], quick=args.quick)
        found["alt"] = rows
        emit(
            [
                f"## Combination step, {cfg['alt_params'] / 1000000.0:g}M float32 parameters in 50 tensors",
                "",
                *rows_table(rows, with_tensors=False),
                "",
            ]
        )
    if "small" in sections:
        rows = run_small_tensors(cfg["small_params"], cfg["repeats"])
        found["small"] = rows
        emit(
            [
                "## Per-tensor overhead: the same size in 50 and in 500 tensors",
                "",
                *rows_table(rows, with_tensors=True),
                "",
                *_small_summary(rows),
                "",
            ]
        )
    if "scaling" in sections:
        scaling = run_scaling(cfg["scaling"], max(3, cfg["repeats"] // 2))
        emit(
            [
                "## Scaling with the parameter count (50 tensors)",
                "",
                *rows_table(scaling, with_tensors=False),
                "",
            ]
        )
    tasks = None
    if sections & {"steps", "vjp"}:
        tasks = [
            make_task("mlp", batch=256),
            make_task("lm", batch=8 if args.quick else 32, context=32 if args.quick else 128),
        ]
    if "steps" in sections and tasks:
        rows_s = run_steps(tasks, cfg["step_repeats"])
        found["steps"] = rows_s
        emit(
            [
                "## Training step: Bloop vs Mixed (same forward, same two backward passes)",
                "",
                *dict_table(
                    rows_s,
                    [
                        ("task", "task", ""),
                        ("path", "path", ""),
                        ("seconds", "s", ".4f"),
                        ("vs_mixed", "x Mixed", ".3f"),
                    ],
                ),
                "",
            ]
        )
    if "vjp" in sections and tasks:
        rows_v = run_vjp(tasks, cfg["step_repeats"])
        found["vjp"] = rows_v
        emit(
            [
                "## Two gradients from one forward: two backward passes vs one batched VJP",
                "",
                *dict_table(
                    rows_v,
                    [
                        ("task", "task", ""),
                        ("path", "path", ""),
                        ("seconds", "s", ".4f"),
                        ("vs_two", "x two passes", ".3f"),
                        ("note", "note", ""),
                    ],
                ),
                "",
            ]
        )
    if "memory" in sections:
        mem_tasks = ["linear", "lm"] if args.quick else ["linear", "linear-out", "mlp-wide", "lm"]
        rows_m = run_memory(mem_tasks, cfg["mem_steps"], args.threads, quick=args.quick)
        found["memory"] = rows_m
        emit(
            [
                "## Peak training memory (fresh process per row; VmHWM above the warmed-up resting "
                "parameters)",
                "",
                *dict_table(
                    rows_m,
                    [
                        ("task", "task", ""),
                        ("path", "path", ""),
                        ("params", "params", ",d"),
                        ("param_mb", "P (MiB)", ".1f"),
                        ("delta_mb", "peak over rest (MiB)", ".1f"),
                        ("delta_p", "peak over rest (x P)", ".2f"),
                        ("over_plain_p", "over plain (x P)", "+.2f"),
                    ],
                ),
                "",
            ]
        )
        rows_t = run_timing(["linear", "mlp-wide", "lm"], cfg["mem_repeats"], quick=args.quick)
        found["memory_time"] = rows_t
        emit(
            [
                "## Training step time of the same paths (one process, interleaved rounds)",
                "",
                *dict_table(
                    rows_t,
                    [
                        ("task", "task", ""),
                        ("path", "path", ""),
                        ("seconds", "s", ".4f"),
                        ("vs_separate", "x separate capture", ".3f"),
                        ("vs_plain", "x plain", ".3f"),
                    ],
                ),
                "",
            ]
        )
    found["scaling"] = scaling
    emit(["## Targets in this run", "", *targets(found), ""])
    emit([f"Total benchmark time: {time.perf_counter() - start:.0f} s.", ""])
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        if scaling:
            png = args.write.with_name(args.write.stem + "_scaling.png")
            plot(scaling, png)
            lines.insert(4, f"![time vs size per path]({png.name})\n")
        notes = HERE / "NOTES.md"
        if notes.exists():
            lines += ["", notes.read_text()]
        args.write.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.write}")
    return 0


EAGER = "bloop_update_ (fused C kernel, default)"
TORCH_OPS = "bloop_update_ (torch ops, no C kernel)"
TWO_CALLS = "bloop_direction + ema_update_ (eager)"
COMPILED = combination.COMPILED
COMPILED_LOOPS = combination.COMPILED_LOOPS


def _verdict(value: float, limit: float) -> str:
    return "met" if value <= limit else f"missed ({value:.3f} > {limit:g})"


def targets(found: dict[str, Any]) -> list[str]:
    """One line per target: the measured figure, the limit, met or missed by how much."""
    out = []
    if "kernel" in found:
        r = {row.path: row for row in found["kernel"]}
        for path, limit, what in (
            (kernel.K1, 2.8, "issue 9: K = 1 no slower than today"),
            (kernel.COMBINE, 3.5, "issue 11: combine"),
            (kernel.COMBINE_OUT, 3.5, "issue 11: combine into a kept buffer"),
            (kernel.SURGERY, 3.5, "issue 11: backward's surgery stage (internal)"),
            (kernel.LEGACY, 2.8, "Bloop's default CPU path on this branch"),
        ):
            if path in r:
                out.append(
                    f"- {path} ({what}): {r[path].ratio:.2f}x foreach_add_ at "
                    f"{r[path].params / 1e6:g}M (limit {limit}x; floor "
                    f"{r[path].buffers:g}/3 = {r[path].buffers / 3:.2f}x): "
                    f"{_verdict(r[path].ratio, limit)}"
                )
        if kernel.K3 in r:
            q = kernel.floor_ratio(r[kernel.K3])
            out.append(
                f"- {kernel.K3} (issue 9: within 1.2x of its memory-traffic floor): "
                f"{r[kernel.K3].ratio:.2f}x foreach_add_ = {q:.2f}x its floor of 18/3 x "
                f"foreach_add_ (limit 1.2x): {_verdict(q, 1.2)}"
            )
    if "alt" in found:
        r = {row.path: row for row in found["alt"]}
        for path, limit, kind in (
            (EAGER, 3.0, "fused path"),
            (COMPILED, 3.0, "compiled path"),
            (COMPILED_LOOPS, 3.0, "compiled, Inductor's code"),
            (TORCH_OPS, 3.5, "eager without a C compiler"),
            (TWO_CALLS, 3.5, "two public calls"),
        ):
            if path in r:
                out.append(
                    f"- {path} ({kind}): {r[path].ratio:.2f}x foreach_add_ at "
                    f"{r[path].params / 1e6:g}M (limit {limit}x; traffic floor 7/3 = 2.33x): "
                    f"{_verdict(r[path].ratio, limit)}"
                )
    if "small" in found:
        t = {(row.path, row.tensors): row.seconds for row in found["small"]}
        for path in (EAGER, TORCH_OPS):
            if (path, 50) in t and (path, 500) in t:
                q = t[path, 500] / t[path, 50]
                out.append(
                    f"- {path}: 500 tensors / 50 tensors = {q:.2f}x (limit 2x): {_verdict(q, 2.0)}"
                )
        base = "foreach_add_ (floor yardstick)"
        if (base, 50) in t and (base, 500) in t:
            out.append(f"  (the yardstick itself: {t[base, 500] / t[base, 50]:.2f}x)")
    for row in found.get("steps", []):
        if str(row["path"]).startswith("Bloop"):
            v = float(row["vs_mixed"])  # type: ignore[arg-type]
            out.append(
                f"- {row['path']} on {row['task']}: {v:.3f}x Mixed (limit 1.05x): {_verdict(v, 1.05)}"
            )
    for row in found.get("memory", []):
        if row["path"] == "Bloop (lean)" and row["task"] == "linear":
            over = float(row["over_plain_p"])  # type: ignore[arg-type]
            out.append(
                f"- memory (issue 14), {row['task']}: Bloop (lean) peak = plain training "
                f"{over:+.2f} P (limit +1.1 P): {_verdict(over, 1.1)}"
            )
    for row in found.get("memory_time", []):
        if str(row["path"]).endswith("(lean)"):
            v = float(row["vs_separate"])  # type: ignore[arg-type]
            out.append(
                f"- time, {row['task']}: {row['path']} step = {v:.3f}x the separate capture's "
                f"({'slower' if v > 1 else 'not slower'})"
            )
    for row in found.get("vjp", []):
        if row["path"] == "one batched VJP":
            v = float(row["vs_two"])  # type: ignore[arg-type]
            faster = "faster" if v < 1 else "slower"
            out.append(
                f"- {row['task']}: one batched VJP is {v:.2f}x two backward passes ({faster})"
            )
    for path in (EAGER, TORCH_OPS):
        rows = sorted(
            (r for r in found.get("scaling", []) if r.path == path), key=lambda r: r.params
        )
        if len(rows) < 2:
            continue
        desc = ", ".join(
            f"{r.params / 1e6:g}M: {r.seconds / r.params * 1e9:.2f} ns/param" for r in rows
        )
        # Linear: from the second-largest size to the largest, time grows no faster than the
        # parameter count (+15% for noise). The smallest size may sit in the last-level cache.
        small, large = rows[-2], rows[-1]
        growth = (large.seconds / small.seconds) / (large.params / small.params)
        out.append(
            f"- scaling, {path}: {desc}; {small.params / 1e6:g}M -> {large.params / 1e6:g}M: time grew "
            f"{growth:.2f}x as fast as the parameter count (limit 1.15x): {_verdict(growth, 1.15)}"
        )
    return out


def install_optional() -> None:
    """``pip install jax torchjd`` with the installed torch pinned (never replaced)."""
    import subprocess
    import tempfile

    pin = f"torch=={torch.__version__.split('+')[0]}\n"
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write(pin)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "-c", constraints.name, "jax", "torchjd"],
        check=True,
    )


def _small_summary(rows: list[Row]) -> list[str]:
    out = []
    for path in dict.fromkeys(r.path for r in rows):
        t = {r.tensors: r.seconds for r in rows if r.path == path}
        if 50 in t and 500 in t:
            out.append(f"- {path}: 500 tensors take {t[500] / t[50]:.2f}x the time of 50 tensors")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
