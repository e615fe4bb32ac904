"""Run strategies side by side on one task and model: the ``equirelax compare`` job.

:func:`run_one` trains one (strategy, seed) with :func:`equirelax.train` in its own directory
and returns a plain record; :func:`compare` runs every (strategy, seed), skips finished runs
and continues interrupted ones with ``resume=True``, and writes ``results.json``,
``results.md`` and the plots of :mod:`equirelax.report` after every run, so an interrupted
comparison still leaves its results so far.

Strategy labels are the names of :data:`equirelax.strategies.STRATEGIES` plus the ACE modes
``ace-equality``, ``ace-inequality`` and ``ace-resilient`` (see :data:`STRATEGY_PRESETS`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from equirelax import models, strategies
from equirelax.engine import NonFiniteLossError, TrainConfig, train
from equirelax.relaxed import relax
from equirelax.report import write_report
from equirelax.tasks.base import Task

__all__ = [
    "DEFAULT_STRATEGIES",
    "RESULTS_JSON",
    "RUN_RESULT",
    "STRATEGY_PRESETS",
    "compare",
    "make_strategy",
    "run_one",
]

RESULTS_JSON = "results.json"
RUN_RESULT = "result.json"

STRATEGY_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    **{name: (name, {}) for name in strategies.STRATEGIES},
    "ace-equality": ("ace", {"mode": "equality"}),
    "ace-inequality": ("ace", {"mode": "inequality"}),
    "ace-resilient": ("ace", {"mode": "resilient"}),
}
"""Label -> (strategy name, options) for the command line."""

DEFAULT_STRATEGIES = ("strict", "free", "augment", "cr", "rpp", "ace-equality", "ace-resilient")


def make_strategy(label: str, **options: Any) -> strategies.Strategy:
    """The strategy of a :data:`STRATEGY_PRESETS` label, with ``options`` on top; an option
    that changes what the label is (``ace-equality`` with ``mode="resilient"``) is refused,
    so that no run is written under a label it does not deserve."""
    if label not in STRATEGY_PRESETS:
        raise ValueError(
            f"strategy: expected one of {sorted(STRATEGY_PRESETS)}, received {label!r}"
        )
    name, preset = STRATEGY_PRESETS[label]
    for key, value in options.items():
        if key in preset and value != preset[key]:
            raise ValueError(
                f"option: the label {label!r} means {key}={preset[key]!r}, received "
                f"{key}={value!r}; use the label that names it instead"
            )
    return strategies.get(name, **{**preset, **options})


def run_one(
    task: Task,
    model_name: str,
    label: str,
    *,
    seed: int,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    model_options: dict[str, Any] | None = None,
    strategy_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model_name`` on ``task`` with the strategy ``label`` and return its record.

    The model is built under ``torch.manual_seed(seed)`` and relaxed at the sites of the
    strategy's :attr:`~equirelax.strategies.Strategy.placement` when it is equivariant;
    ``strict`` then projects it back. The record holds the configuration, the metrics of the
    engine's ``final`` (``test`` at the best validation epoch, ``test_final``, ``best_epoch``,
    ``best_val``, and the final ``val``, ``val_relaxed`` and ``equivariance_error`` of the
    evaluated model), the wall time and the mean training time per epoch; it is also written
    to ``out_dir/result.json``.
    """
    model_options = dict(model_options or {})
    strategy_options = dict(strategy_options or {})
    config = TrainConfig(**{**asdict(config), "seed": seed})
    strategy = make_strategy(label, **strategy_options)
    torch.manual_seed(seed)
    model = models.build(model_name, task, **model_options)
    if models.MODELS[model_name].equivariant:
        model = relax(model, placement=strategy.placement)
    started = time.perf_counter()
    result = train(model, strategy, task, config, out_dir=out_dir, resume=resume, progress=progress)
    wall = time.perf_counter() - started
    epoch_seconds = [record["epoch_seconds"] for record in result.history]
    final = {key: value for key, value in result.final.items() if _is_plain(value)}
    record = {
        "task": task.name,
        "model": model_name,
        "strategy": label,
        "seed": seed,
        "config": asdict(config),
        "model_options": model_options,
        "strategy_options": {**STRATEGY_PRESETS[label][1], **strategy_options},
        "metric": task.metric_name,
        "final": final,
        "wall_seconds": wall,
        "seconds_per_epoch": sum(epoch_seconds) / max(len(epoch_seconds), 1),
        "parameters": sum(p.numel() for p in result.evaluation_model.parameters()),
        "history": str(Path(out_dir) / "metrics.jsonl"),
    }
    _write_json(Path(out_dir) / RUN_RESULT, record)
    return record


def compare(
    task: Task,
    model_name: str,
    labels: Sequence[str],
    *,
    seeds: int,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    model_options: dict[str, Any] | None = None,
    strategy_options: dict[str, dict[str, Any]] | None = None,
    task_options: dict[str, Any] | None = None,
    command: str | None = None,
    reference: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Run every (strategy, seed) and write the report into ``out_dir``.

    Runs go to ``out_dir/runs/<label>/seed<k>``. A run whose loss becomes non-finite is
    recorded with its ``error`` (and no metrics) and the comparison goes on; ``--resume``
    retries it. With ``resume=True`` a run with a
    ``result.json`` is read back instead of trained again and an interrupted run continues
    from its checkpoint; ``resume`` refuses a directory made by a different configuration.
    Returns the content of ``results.json``.
    """
    for label in labels:
        make_strategy(label, **(strategy_options or {}).get(label, {}))  # names checked up front
    if models.MODELS.get(model_name) is None:
        raise ValueError(f"model: expected one of {sorted(models.MODELS)}, received {model_name!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds: expected a positive int, received {seeds!r}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    setup = {
        "task": task.name,
        "task_options": task_options or {},
        "model": model_name,
        "model_options": model_options or {},
        "strategies": list(labels),
        "strategy_options": strategy_options or {},
        "seeds": seeds,
        "config": {k: v for k, v in asdict(config).items() if k != "seed"},
    }
    _check_resumable(root / RESULTS_JSON, setup, resume)
    results: dict[str, Any] = {
        "setup": setup,
        "command": command,
        "machine": _machine(config.device),
        "reference": reference or {},
        "runs": [],
    }
    total = len(labels) * seeds
    for i, (label, seed) in enumerate((lb, s) for lb in labels for s in range(seeds)):
        run_dir = root / "runs" / label / f"seed{seed}"
        finished = run_dir / RUN_RESULT
        if resume and finished.exists():
            record = json.loads(finished.read_text())
            _say(progress, f"[{i + 1}/{total}] {label} seed {seed}: finished earlier, read back")
        else:
            _say(progress, f"[{i + 1}/{total}] {label} seed {seed}")
            try:
                record = run_one(
                    task,
                    model_name,
                    label,
                    seed=seed,
                    config=config,
                    out_dir=run_dir,
                    resume=resume,
                    progress=progress,
                    model_options=model_options,
                    strategy_options=(strategy_options or {}).get(label),
                )
            except NonFiniteLossError as error:  # one diverged run must not end the comparison
                _say(progress, f"  {label} seed {seed} failed: {error}")
                record = {"strategy": label, "seed": seed, "final": {}, "error": str(error)}
        results["runs"].append(record)
        write_report(results, root)
        _write_json(root / RESULTS_JSON, results)
    return results


def _check_resumable(path: Path, setup: dict[str, Any], resume: bool) -> None:
    if not (resume and path.exists()):
        return
    previous = json.loads(path.read_text()).get("setup")
    if previous != json.loads(json.dumps(setup)):
        raise ValueError(
            f"resume: {path} was written by a different comparison; expected setup "
            f"{previous}, received {setup} (use another --out or drop --resume)"
        )


def _machine(device: str) -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _is_plain(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool, list)) or value is None


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)
