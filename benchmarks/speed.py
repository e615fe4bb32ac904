"""Training speed, side by side in one process: ``python benchmarks/speed.py``.

Sections (``--sections``, default all), each a markdown table on standard output
(and in ``--out``):

``strict``
    Strict EGNN and SEGNN on N-body (batch ``--batch``) at 1 and 2 threads: median ms per
    training step (forward, strategy loss, backward, Adam), the matmul FLOPs of one step
    (``torch.utils.flop_counter``), the time the step's own matrix products take alone
    (every mm/addmm/bmm of one step, recorded with their shapes and replayed on fresh tensors:
    the matmul-bound floor), the throughput that replay reaches and the fraction of the
    matmul-bound rate the step reaches (floor / step). With ``--official-egnn PATH`` (a
    checkout of github.com/vgsatorras/egnn) the official ``EGNN_vel`` step on the same shapes
    is timed in the same rounds, and the ratio of ours to it is reported.
``strategies``
    Each strategy's step time over strict's on both models (rows interleaved step by step,
    medians), with the memory saved for backward in one step (bytes of the tensors autograd
    keeps, a device-independent measure of activation memory; with CUDA also the peak
    allocated).
``eval``
    A short ``compare`` on N-body (quick preset, ``--compare-epochs``): the share of each
    run's wall time spent evaluating (``eval_seconds`` of the engine's records), at the
    preset's cadence and at ``--eval-every 1``.
``compile``
    Compiled (``torch.compile``) over eager step time per model, with the compile time.
``jobs``
    The wall time of ``equirelax compare nbody --seeds 3`` with ``--jobs 1`` and ``--jobs N``
    (``--compare-epochs``), and their ratio.

Rows are timed in rounds (one step of every row per round, after ``--warmup`` rounds) so
that drifts of the machine fall on every row alike; run the script twice and compare.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from equirelax import relax
from equirelax._batches import call, index
from equirelax.engine import TrainConfig, make_optimiser
from equirelax.experiments import model_registry
from equirelax.experiments.compare import STRATEGY_PRESETS, make_strategy
from equirelax.experiments.task_registry import TASKS
from equirelax.outputs import split_output

STRATEGY_LABELS = (
    "strict",
    "free",
    "augment",
    "rpp",
    "ace-equality",
    "ace-resilient",
    "cr",
    "penalty",
    "recm",
)
MATMULS = {"aten.mm.default", "aten.addmm.default", "aten.bmm.default"}


def main() -> int:
    args = _arguments()
    sections = args.sections.split(",")
    unknown = set(sections) - {"strict", "strategies", "eval", "compile", "jobs"}
    if unknown:
        raise SystemExit(f"--sections: unknown {sorted(unknown)}")
    torch.set_num_interop_threads(1)
    out = [
        f"# Speed, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"`python benchmarks/speed.py {' '.join(sys.argv[1:])}`",
        "",
        _machine(args.device),
        "",
    ]
    task = TASKS["nbody"].builder(
        train_size=max(4 * args.batch, 200), val_size=200, test_size=200, progress=False
    )
    writers = {
        "strict": lambda: _strict_section(task, args),
        "strategies": lambda: _strategies_section(task, args),
        "eval": lambda: _eval_section(args),
        "compile": lambda: _compile_section(task, args),
        "jobs": lambda: _jobs_section(args),
    }
    for section in sections:
        lines = writers[section]()
        out += [*lines, ""]
        print("\n".join(lines) + "\n", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(out))
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="strict,strategies,eval,compile,jobs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--steps", type=int, default=30, help="timed rounds per row")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", default="1,2", help="thread counts of the strict section")
    parser.add_argument(
        "--strategy-threads", type=int, default=2, help="threads of the strategies section"
    )
    parser.add_argument(
        "--compare-epochs", type=int, default=60, help="epochs of the eval and jobs compares"
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--official-egnn", type=Path, help="a checkout of vgsatorras/egnn")
    parser.add_argument("--out", type=Path, help="also write the tables to this file")
    return parser.parse_args()


# ----------------------------------------------------------------------------- one step


def _step(task: Any, model_name: str, label: str, args: argparse.Namespace) -> Callable[[], Any]:
    """One training step of ``label`` on ``model_name`` as the engine runs it (preset options
    of the full N-body protocol; CR at the middle of its schedule)."""
    preset = TASKS["nbody"].full["strategies"]
    name = STRATEGY_PRESETS[label][0]
    strategy = make_strategy(label, **preset.get(name, {}))
    torch.manual_seed(0)
    model = model_registry.build(model_name, task)
    model = relax(model, placement=strategy.placement).to(args.device)
    inputs, targets = _to_device(task.train, args.device)
    epochs = 100
    model = strategy.attach(
        model,
        action_in=task.action_in,
        action_out=task.action_out,
        epochs=epochs,
        generator=torch.Generator().manual_seed(0),
        loss_fn=task.loss,
    )
    inputs, targets = strategy.split_training_data(inputs, targets)
    with torch.no_grad():
        call(model, index(inputs, torch.arange(2)))  # lazily built free branches
    optimiser = make_optimiser(model, strategy, TrainConfig(lr=5e-4))
    strategy.on_epoch_start(epochs // 4)
    count = targets.shape[0]
    position = [0]

    def step() -> Tensor:
        start = position[0] % (count - args.batch + 1)
        position[0] += args.batch
        rows = torch.arange(start, start + args.batch, device=targets.device)
        x, y = strategy.transform_batch(index(inputs, rows), targets[rows])
        outputs, _ = split_output(call(model, x))
        objective = strategy.loss(task.loss(outputs, y), model, x, outputs)
        optimiser.zero_grad(set_to_none=True)
        objective.backward()
        optimiser.step()
        strategy.after_step()
        return objective.detach()

    step.model = model  # type: ignore[attr-defined]
    return step


def _to_device(split: Any, device: str) -> Any:
    inputs, targets = split
    if isinstance(inputs, (tuple, list)):
        return tuple(part.to(device) for part in inputs), targets.to(device)
    return inputs.to(device), targets.to(device)


def _rounds(rows: dict[str, Callable[[], Any]], args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per call of every row, timed one call of each row per round."""
    times: dict[str, list[float]] = {name: [] for name in rows}
    for round_ in range(args.warmup + args.steps):
        for name, row in rows.items():
            _sync(args.device)
            started = time.perf_counter()
            row()
            _sync(args.device)
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- strict


class _MatmulRecorder(TorchDispatchMode):
    """Records the matrix products of the code it runs: (op, shapes, dtype, device, flops)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, list[tuple[int, ...]], torch.dtype, torch.device]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func) in MATMULS:
            tensors = [a for a in args if isinstance(a, Tensor)]
            self.calls.append(
                (func, [tuple(t.shape) for t in tensors], tensors[0].dtype, tensors[0].device)
            )
        return func(*args, **(kwargs or {}))


def _matmul_replay(step: Callable[[], Any], args: argparse.Namespace) -> tuple[float, float]:
    """(matmul FLOPs of one step, median seconds of its matmuls replayed on fresh tensors)."""
    recorder = _MatmulRecorder()
    counter = FlopCounterMode(display=False)
    with counter, recorder:
        step()
    flops = float(counter.get_total_flops())
    operands = [
        (func, [torch.randn(shape, dtype=dtype, device=device) for shape in shapes])
        for func, shapes, dtype, device in recorder.calls
    ]

    def replay() -> None:
        for func, tensors in operands:
            func(*tensors)

    return flops, _rounds({"replay": replay}, args)["replay"]


def _official_egnn_step(path: Path, batch: int, device: str) -> Callable[[], Any]:
    """The official EGNN_vel training step (main_nbody.py: in_node_nf 1, in_edge_nf 2, 64
    hidden, 4 layers, recurrent, Adam 5e-4 with its default kernel) on random N-body shapes."""
    sys.path.insert(0, str(path))
    try:
        from n_body_system.model import EGNN_vel  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(path))
    torch.manual_seed(0)
    model = EGNN_vel(1, 2, 64, device=device, n_layers=4, recurrent=True)
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-12)
    n = 5
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    rows = torch.tensor([b * n + i for b in range(batch) for i, _ in pairs], device=device)
    cols = torch.tensor([b * n + j for b in range(batch) for _, j in pairs], device=device)
    loc, vel = torch.randn(batch * n, 3, device=device), torch.randn(batch * n, 3, device=device)
    charges = torch.randn(batch * n, 1, device=device).sign()
    target = torch.randn(batch * n, 3, device=device)
    loss = torch.nn.MSELoss()

    def step() -> Tensor:
        nodes = vel.pow(2).sum(1, keepdim=True).sqrt()
        distance = (loc[rows] - loc[cols]).pow(2).sum(1, keepdim=True)
        edge_attr = torch.cat([charges[rows] * charges[cols], distance], 1)
        optimiser.zero_grad()
        # a fresh copy of the positions each step, as the official loader gives (the model
        # updates its coordinate argument in place)
        value = loss(model(nodes, loc.clone(), [rows, cols], vel, edge_attr), target)
        value.backward()
        optimiser.step()
        return value.detach()

    return step


def _strict_section(task: Any, args: argparse.Namespace) -> list[str]:
    lines = [
        f"## Strict models, batch {args.batch}",
        "",
        "| model | threads | ms / step | matmul GFLOP / step | matmuls alone, ms | "
        "matmul GFLOP/s | fraction of the matmul-bound rate |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        steps = {name: _step(task, name, "strict", args) for name in ("egnn", "segnn")}
        rows: dict[str, Callable[[], Any]] = dict(steps)
        if args.official_egnn is not None:
            rows["official EGNN_vel"] = _official_egnn_step(
                args.official_egnn, args.batch, args.device
            )
        medians = _rounds(rows, args)
        for name, row in rows.items():
            flops, alone = _matmul_replay(row, args)
            lines.append(
                f"| {name} | {threads} | {1e3 * medians[name]:.2f} | {flops / 1e9:.3f} | "
                f"{1e3 * alone:.2f} | {flops / alone / 1e9:.0f} | {alone / medians[name]:.0%} |"
            )
        if args.official_egnn is not None:
            ratios.append(
                f"{threads} thread(s): ours / official = "
                f"{medians['egnn'] / medians['official EGNN_vel']:.2f}"
            )
    if ratios:
        lines += ["", "EGNN step time, ours over the official code: " + "; ".join(ratios) + "."]
    return lines


# ----------------------------------------------------------------------------- strategies


def _saved_bytes(step: Callable[[], Any]) -> int:
    """Bytes of the tensors autograd saves for backward during one step (distinct storages)."""
    seen: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        try:
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        except RuntimeError:  # a functorch (jvp) wrapper: no storage of its own
            seen[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(seen.values())


def _strategies_section(task: Any, args: argparse.Namespace) -> list[str]:
    torch.set_num_threads(args.strategy_threads)
    cuda = args.device.startswith("cuda")
    lines = [
        f"## Step time over strict, batch {args.batch}, {args.strategy_threads} thread(s)",
        "",
        "| model | strategy | ms / step | x strict | MiB saved for backward"
        + (" | peak MiB allocated |" if cuda else " |"),
        "|---|---|---|---|---" + ("|---|" if cuda else "|"),
    ]
    for model_name in ("egnn", "segnn"):
        rows = {label: _step(task, model_name, label, args) for label in STRATEGY_LABELS}
        medians = _rounds(rows, args)
        for label, row in rows.items():
            memory = f"{_saved_bytes(row) / 2**20:.1f}"
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                row()
                memory += f" | {torch.cuda.max_memory_allocated() / 2**20:.1f}"
            lines.append(
                f"| {model_name} | {label} | {1e3 * medians[label]:.2f} | "
                f"{medians[label] / medians['strict']:.2f} | {memory} |"
            )
        del rows
    return lines


# ----------------------------------------------------------------------------- eval, jobs


def _equirelax(*arguments: str) -> float:
    """Run the ``equirelax`` command line in a fresh process; its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "equirelax", *arguments],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def _eval_section(args: argparse.Namespace) -> list[str]:
    lines = [
        f"## Evaluation share of a quick N-body compare ({args.compare_epochs} epochs, 1 seed)",
        "",
        "| cadence | strategy | wall s | training s | evaluation s | evaluation share |",
        "|---|---|---|---|---|---|",
    ]
    preset = TASKS["nbody"].quick["train"].get("eval_every", 1)
    for cadence in sorted({preset, 1}, reverse=True):
        with tempfile.TemporaryDirectory() as out:
            _equirelax(
                "compare", "nbody", "--strategies", "strict,free,cr,ace-equality", "--seeds", "1",
                "--epochs", str(args.compare_epochs), "--eval-every", str(cadence),
                "--jobs", "1", "--out", out, "--device", args.device,
            )  # fmt: skip
            results = json.loads((Path(out) / "results.json").read_text())
            for run in results["runs"]:
                history = [
                    json.loads(line) for line in Path(run["history"]).read_text().splitlines()
                ]
                training = sum(r["epoch_seconds"] for r in history)
                evaluation = sum(r.get("eval_seconds", 0.0) for r in history)
                wall = run["wall_seconds"]
                lines.append(
                    f"| every {cadence} | {run['strategy']} | {wall:.2f} | {training:.2f} | "
                    f"{evaluation:.2f} | {evaluation / wall:.0%} |"
                )
    return lines


def _jobs_section(args: argparse.Namespace) -> list[str]:
    walls = {}
    for jobs in (1, args.jobs):
        with tempfile.TemporaryDirectory() as out:
            walls[jobs] = _equirelax(
                "compare", "nbody", "--seeds", "3", "--epochs", str(args.compare_epochs),
                "--jobs", str(jobs), "--out", out, "--device", args.device,
            )  # fmt: skip
    return [
        f"## `equirelax compare nbody --seeds 3 --epochs {args.compare_epochs}`",
        "",
        "| --jobs | wall s | over --jobs 1 |",
        "|---|---|---|",
        *(f"| {jobs} | {wall:.1f} | {wall / walls[1]:.2f} |" for jobs, wall in walls.items()),
    ]


# ----------------------------------------------------------------------------- compile


def _compile_section(task: Any, args: argparse.Namespace) -> list[str]:
    torch.set_num_threads(args.strategy_threads)
    lines = [
        f"## torch.compile, strict, batch {args.batch}, {args.strategy_threads} thread(s)",
        "",
        "| model | eager ms / step | compiled ms / step | compiled / eager | compile s |",
        "|---|---|---|---|---|",
    ]
    for model_name in ("egnn", "segnn"):
        eager = _step(task, model_name, "strict", args)
        compiled = _step(task, model_name, "strict", args)
        module = compiled.model  # type: ignore[attr-defined]
        module.compile()
        started = time.perf_counter()
        with _quiet():
            compiled()
            compiled()  # a second call: the backward graph and recompilations
        compile_seconds = time.perf_counter() - started
        medians = _rounds({"eager": eager, "compiled": compiled}, args)
        lines.append(
            f"| {model_name} | {1e3 * medians['eager']:.2f} | {1e3 * medians['compiled']:.2f} | "
            f"{medians['compiled'] / medians['eager']:.2f} | {compile_seconds:.1f} |"
        )
    return lines


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        yield


def _machine(device: str) -> str:
    gpu = ""
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu = f", {torch.cuda.get_device_name(torch.device(device))}"
    return (
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
        f"{gpu}; torch {torch.__version__}; device {device}."
    )


if __name__ == "__main__":
    sys.exit(main())
