"""Target 3 of issue 5: peak memory of Bloop training against Mixed's, measured per process.

torch's CPU allocator keeps no statistics (``torch.cuda.max_memory_allocated`` has no CPU
twin) and ``tracemalloc`` does not see tensor memory, so each method trains in a fresh
subprocess and the kernel's high-water mark of its resident set (``VmHWM``) is read. The
mark is reset (``/proc/self/clear_refs``) after a warm-up (a forward/backward of the model, and
two steps of *both* methods on a tiny throwaway model, so that the code pages of every kernel
either method runs are already resident), so the figure is the peak *during training* above that resting state: the
activations, both gradients, the direction, the method's state and any temporaries. On CUDA
the same child reports ``torch.cuda.max_memory_allocated`` instead.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def child(task_name: str, method: str, steps: int, threads: int) -> dict[str, float]:
    """Train ``steps`` steps of ``method`` on ``task_name``; the peak memory in bytes."""
    sys.path.insert(0, str(HERE))
    from training import make_task, step_fn

    torch.set_num_threads(threads)
    task = make_task(task_name, batch=256 if task_name.startswith("mlp") else 32)
    params = list(task.model.parameters())
    main, aux = task.losses()  # warm-up: libraries, thread pools, allocator
    torch.autograd.grad(main, params, retain_graph=True)
    torch.autograd.grad(aux, params)
    del main, aux
    for other in ("Mixed", "Bloop"):  # fault in the code pages of every kernel either method runs
        tiny = make_task("mlp", batch=4)
        for _ in range(2):
            step_fn(tiny, other)()
    del tiny
    gc.collect()
    step = step_fn(task, method)
    Path("/proc/self/clear_refs").write_text("5")
    rest = _status("VmRSS")
    for _ in range(steps):
        step()
    peak = _status("VmHWM")
    n = sum(p.numel() for p in params)
    return {"params": n, "rest": rest, "peak": peak, "delta": peak - rest}


def measure_peak(task_name: str, method: str, steps: int, threads: int) -> dict[str, float]:
    """Run :func:`child` in a fresh interpreter and return its result."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__)), task_name, method, str(steps), str(threads)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run_memory(
    tasks: list[str], steps: int, threads: int, rounds: int = 1
) -> list[dict[str, object]]:
    """Peak training memory of Mixed and Bloop per task (the smaller of ``rounds`` runs each)."""
    rows = []
    for task in tasks:
        res = {}
        for method in ("Mixed", "Bloop"):
            runs = [measure_peak(task, method, steps, threads) for _ in range(rounds)]
            res[method] = min(runs, key=lambda r: r["delta"])
        ema = 4 * res["Bloop"]["params"]
        mixed = res["Mixed"]
        budget = mixed["delta"] + ema + 0.02 * mixed["peak"]
        for method, r in res.items():
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "params": r["params"],
                    "delta_mb": r["delta"] / 2**20,
                    "peak_mb": r["peak"] / 2**20,
                    "extra_over_mixed_mb": (r["delta"] - mixed["delta"]) / 2**20,
                    "ema_mb": ema / 2**20,
                    "budget_mb": budget / 2**20,
                    "met": r["delta"] <= budget,
                }
            )
    return rows


if __name__ == "__main__":
    name, meth, n_steps, n_threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(child(name, meth, n_steps, n_threads)))
