"""Peak training memory (issue 14): plain training, Mixed and Bloop, each capture, side by side.

torch's CPU allocator keeps no statistics (``torch.cuda.max_memory_allocated`` has no CPU
twin) and ``tracemalloc`` does not see tensor memory, so every row trains in a fresh
subprocess and reads the kernel's high-water mark of its resident set (``VmHWM``). The mark is
reset (``/proc/self/clear_refs``) after a warm-up (a forward/backward of the model, and two
steps of *every* path on a tiny throwaway model, so that the code pages of every kernel any
path runs are already resident), with every ``.grad`` set to ``None``: the figure is the peak
*during training* above the resting parameters (activations, gradients, the direction, the
method's state, temporaries). On CUDA the same child reports ``torch.cuda.max_memory_allocated``
above the allocated bytes at rest instead.

Paths (``lam = 0.1``, ``rho = 0.01``, SGD without momentum, ``zero_grad(set_to_none=True)``):

* ``plain``: ``(main + lam * aux).backward()``, what training without surgery costs;
* ``Mixed (separate)`` / ``Mixed (lean)``: the ``Mixed`` surgeon with ``capture="separate"``
  (one gradient list per loss) and ``capture="lean"`` (the surgery inside ``.grad``);
* ``Bloop (separate)`` / ``Bloop (lean)``: likewise for ``Bloop`` (paper order).

Tasks: ``linear`` is one ``Linear(8192, 8192)`` (P = 256 MiB of float32 parameters) on a batch
of 16, the main loss a squared error, the aux loss ``||theta||^2 / 2`` (the paper's "small
weights" experiment; issue 14's case): a parameter-dominated model. ``linear-out`` is the same
model with the aux loss on the output (the mean squared output), so that plain training
computes the weight's gradient once instead of twice. ``mlp-wide`` is the MLP 784-2048-2048-10
of ``training.py`` (5.8M parameters in 6 tensors, batch 256; aux loss the mean squared logits):
parameter-dominated, but in several tensors. ``lm`` is a small pre-norm transformer language model
(``training.CharLM``, width 256, 4 layers, context 128, batch 16; about 3.2M parameters), main
loss the next-token cross-entropy, aux loss the squared log-partition: activation-dominated.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

HERE = Path(__file__).resolve().parent
PATHS = ("plain", "Mixed (separate)", "Mixed (lean)", "Bloop (separate)", "Bloop (lean)")
LAM, RHO, LR = 0.1, 0.01, 1e-3
ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
"""Large tensors go to mmap and back to the OS at once, so that resident-set peaks track live
tensors rather than heap fragmentation (set before torch allocates anything)."""


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def make_task(
    name: str, quick: bool = False
) -> tuple[nn.Module, Callable[[], tuple[Tensor, Tensor]]]:
    """``(model, losses)``: ``losses()`` runs one forward pass and returns ``(main, aux)``."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name in ("linear", "linear-out"):
        width = 1024 if quick else 8192
        model: nn.Module = nn.Linear(width, width)
        x = torch.randn(16, width, generator=gen)
        y = torch.randn(16, width, generator=gen)

        def linear_losses() -> tuple[Tensor, Tensor]:
            out = model(x)
            if name == "linear-out":
                return (out - y).pow(2).mean(), out.pow(2).mean()
            return (out - y).pow(2).mean(), sum(p.pow(2).sum() for p in model.parameters()) / 2

        return model, linear_losses
    sys.path.insert(0, str(HERE))
    from training import VOCAB, CharLM
    from training import make_task as training_task

    if name == "mlp-wide":  # many tensors, parameter-dominated
        task = training_task("mlp-wide", batch=64 if quick else 256)
        return task.model, task.losses

    context, width = (32, 64) if quick else (128, 256)
    model = CharLM(width=width, layers=2 if quick else 4, heads=4, context=context)
    tokens = torch.randint(0, VOCAB, (16, context + 1), generator=gen)

    def lm_losses() -> tuple[Tensor, Tensor]:
        logits = model(tokens[:, :-1])
        main = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        return main, torch.logsumexp(logits, -1).pow(2).mean()

    return model, lm_losses


def step_fn(
    model: nn.Module, losses: Callable[[], tuple[Tensor, Tensor]], path: str
) -> Callable[[], None]:
    """One training step of ``path``."""
    import torchbloop

    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=LR)
    surgeon: torchbloop.Surgeon | None = None
    if path != "plain":
        method, capture = path.split(" (")
        capture = capture.rstrip(")")
        if method == "Mixed":
            surgeon = torchbloop.Mixed(params, lam=LAM, capture=capture)  # type: ignore[arg-type]
        else:
            surgeon = torchbloop.Bloop(params, lam=LAM, rho=RHO, capture=capture)  # type: ignore[arg-type]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        main, aux = losses()
        if surgeon is None:
            (main + LAM * aux).backward()
        else:
            surgeon.backward(main, aux)
        opt.step()

    return step


def child(task: str, path: str, steps: int, threads: int, quick: bool) -> dict[str, float]:
    """Train ``steps`` steps of ``path`` on ``task``; memory figures in bytes."""
    torch.set_num_threads(threads)
    model, losses = make_task(task, quick)
    params = list(model.parameters())
    main, aux = losses()  # warm-up: libraries, thread pools, allocator
    (main + aux).backward()
    del main, aux
    tiny = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    x = torch.randn(4, 8)

    def tiny_losses() -> tuple[Tensor, Tensor]:
        out = tiny(x)
        return out.pow(2).mean(), out.abs().mean()

    for other in PATHS:  # fault in the code pages of every kernel any path runs
        warm = step_fn(tiny, tiny_losses, other)
        for _ in range(2):
            warm()
    del warm
    step = step_fn(model, losses, path)
    for p in params:
        p.grad = None
    gc.collect()
    cuda = params[0].is_cuda
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        rest = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")
        rest = _status("VmRSS")
    for _ in range(steps):
        step()
    peak = torch.cuda.max_memory_allocated() if cuda else _status("VmHWM")
    size = sum(p.numel() * p.element_size() for p in params)
    return {
        "params": sum(p.numel() for p in params),
        "param_bytes": size,
        "rest": rest,
        "peak": peak,
    }


def run_timing(tasks: list[str], repeats: int, *, quick: bool = False) -> list[dict[str, object]]:
    """Seconds per training step of every path, side by side in one process (interleaved
    rounds, medians; :func:`_timing.measure`), as a ratio to the separate capture."""
    from _timing import measure

    rows: list[dict[str, object]] = []
    for task in tasks:
        model, losses = make_task(task, quick)
        fns = {path: step_fn(model, losses, path) for path in PATHS}
        times = measure(fns, repeats=repeats, warmup=2)  # type: ignore[arg-type]
        for path, t in times.items():
            base = "Bloop (separate)" if path.startswith("Bloop") else "Mixed (separate)"
            rows.append(
                {
                    "task": task,
                    "path": path,
                    "seconds": t,
                    "vs_separate": t / times[base] if path != "plain" else float("nan"),
                    "vs_plain": t / times["plain"],
                }
            )
        del fns, model
        gc.collect()
    return rows


def measure_peak(task: str, path: str, steps: int, threads: int, quick: bool) -> dict[str, float]:
    """Run :func:`child` in a fresh interpreter and return its result."""
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__)),
            task,
            path,
            str(steps),
            str(threads),
            str(int(quick)),
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run_memory(
    tasks: list[str], steps: int, threads: int, *, quick: bool = False, rounds: int = 1
) -> list[dict[str, object]]:
    """Peak over rest of every path per task (the smallest of ``rounds`` fresh processes)."""
    rows: list[dict[str, object]] = []
    for task in tasks:
        found = {}
        for path in PATHS:
            runs = [measure_peak(task, path, steps, threads, quick) for _ in range(rounds)]
            found[path] = min(runs, key=lambda r: r["peak"] - r["rest"])
        size = float(found["plain"]["param_bytes"])
        plain = found["plain"]["peak"] - found["plain"]["rest"]
        for path, r in found.items():
            delta = r["peak"] - r["rest"]
            rows.append(
                {
                    "task": task,
                    "path": path,
                    "params": int(r["params"]),
                    "param_mb": size / 2**20,
                    "delta_mb": delta / 2**20,
                    "delta_p": delta / size,
                    "over_plain_p": (delta - plain) / size,
                }
            )
    return rows


if __name__ == "__main__":
    name, meth = sys.argv[1], sys.argv[2]
    n_steps, n_threads, small = int(sys.argv[3]), int(sys.argv[4]), bool(int(sys.argv[5]))
    print(json.dumps(child(name, meth, n_steps, n_threads, small)))
