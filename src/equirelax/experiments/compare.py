"""Run strategies side by side on one task and model: the ``equirelax compare`` job.

:func:`run_one` trains one (strategy, seed) with :func:`equirelax.train` in its own directory
and returns a plain record; :func:`compare` runs every (strategy, seed), skips finished runs
and continues interrupted ones with ``resume=True``, and writes ``results.json``,
``results.md`` and the plots of :mod:`equirelax.experiments.report` after every run, so an
interrupted comparison still leaves its results so far.

``compare(..., jobs=N)`` runs the (strategy, seed) pairs in ``N`` worker processes (default:
one per available core, at most one per run left to do); each worker runs on
``cores // N`` torch threads (and one inter-op thread). Workers are started by a fork server
that imports equirelax once (the ``"forkserver"`` start method of :mod:`multiprocessing`,
``"spawn"`` where it is missing; never a plain ``fork`` of a process that has run torch), so a
script that calls :func:`compare` with ``jobs > 1`` must guard its entry point with
``if __name__ == "__main__":``. The task is pickled once and unpickled in every worker. A
worker is a fresh process: it gets the caller's default dtype and deterministic-algorithms
setting, nothing else of its global torch state. Every run seeds itself (:func:`run_one`), so
a run in a worker gives bitwise the numbers of the same run with ``jobs=1`` under the same
number of torch threads (``torch.set_num_threads(cores // N)``). The thread count itself can
change the last bits: ATen splits a reduction over more than its grain size (32768 elements)
into one partial sum per thread, so 1 and 2 threads differ by rounding (measured: the same
inertia/EMLP run's test MSE 11.223681 vs 11.223680). ``results.json`` lists the runs in the
same order (strategy-major, then seed) whatever order they finish in, and is rewritten after
each one. ``jobs=1`` runs everything in the calling process, on its threads.

Strategy labels are the names of :data:`equirelax.strategies.STRATEGIES` plus the ACE modes
``ace-equality``, ``ace-inequality`` and ``ace-resilient`` (see :data:`STRATEGY_PRESETS`).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import pickle
import platform
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict
from multiprocessing import forkserver
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from equirelax import strategies
from equirelax.engine import NonFiniteLossError, TrainConfig, check_continuation, train
from equirelax.experiments import model_registry
from equirelax.experiments.names import DEFAULT_STRATEGIES
from equirelax.experiments.report import write_report
from equirelax.experiments.runner import (
    RESULTS_JSON,
    check_seeds,
    exclusive,
    read_json,
    write_json,
)
from equirelax.relaxed import relax
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

RUN_RESULT = "result.json"
"""A finished run's record in its directory (what :func:`run_one` returns)."""
RUN_SETUP = "setup.json"
"""What a run of :func:`run_one` is (task, model, strategy and their options), written when it
starts and compared on ``resume``."""

STRATEGY_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    **{name: (name, {}) for name in strategies.STRATEGIES},
    "ace-equality": ("ace", {"mode": "equality"}),
    "ace-inequality": ("ace", {"mode": "inequality"}),
    "ace-resilient": ("ace", {"mode": "resilient"}),
}
"""Label -> (strategy name, options) for the command line."""


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
                f"strategy {label!r}: the label means {key}={preset[key]!r}, received "
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
    progress_position: int | None = None,
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
    model = model_registry.build(model_name, task, **model_options)
    if model_registry.MODELS[model_name].equivariant:
        model = relax(model, placement=strategy.placement)
    identity = {
        "task": task.name,
        "model": model_name,
        "model_options": model_options,
        "strategy": label,
        "strategy_options": {**STRATEGY_PRESETS[label][1], **strategy_options},
    }
    with exclusive(out_dir):
        _check_run_identity(Path(out_dir) / RUN_SETUP, identity, resume)
        started = time.perf_counter()
        result = train(
            model,
            strategy,
            task,
            config,
            out_dir=out_dir,
            resume=resume,
            progress=progress,
            progress_position=progress_position,
        )
        wall = time.perf_counter() - started
        epoch_seconds = [record["epoch_seconds"] for record in result.history]
        final = {key: value for key, value in result.final.items() if _is_plain(value)}
        record = {
            **identity,
            "seed": seed,
            "config": asdict(config),
            "metric": task.metric_name,
            "final": final,
            "wall_seconds": wall,
            "seconds_per_epoch": sum(epoch_seconds) / max(len(epoch_seconds), 1),
            "parameters": sum(p.numel() for p in result.evaluation_model.parameters()),
            "history": str(Path(out_dir) / "metrics.jsonl"),
        }
        write_json(Path(out_dir) / RUN_RESULT, record)
    return record


def _check_run_identity(path: Path, identity: dict[str, Any], resume: bool) -> None:
    """Refuse to resume a run that was started as another task, model, strategy or with other
    options (:data:`RUN_SETUP`); record ``identity`` otherwise."""
    ours = json.loads(json.dumps(identity, default=repr))
    if resume and path.exists():
        recorded = read_json(path, "resume")
        changed = sorted(k for k in {*recorded, *ours} if recorded.get(k) != ours.get(k))
        if changed:
            described = ", ".join(f"{k}={recorded.get(k)!r} -> {ours.get(k)!r}" for k in changed)
            raise ValueError(
                f"resume: {path.parent} is a run of another setup ({described}); resume with "
                "the setup it was started with, or start a new run elsewhere"
            )
    write_json(path, ours)


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
    jobs: int | None = None,
) -> dict[str, Any]:
    """Run every (strategy, seed) and write the report into ``out_dir``.

    Runs go to ``out_dir/runs/<label>/seed<k>``. A run whose loss becomes non-finite is
    recorded with its ``error`` (and no metrics) and the comparison goes on; ``--resume``
    retries it. With ``resume=True`` a run with a
    ``result.json`` is read back instead of trained again and an interrupted run continues
    from its checkpoint; ``resume`` refuses a directory made by a different configuration.

    ``jobs`` worker processes train the runs left to do side by side (``None``: one per
    available core; never more than the runs left to do), each on ``cores // jobs`` torch
    threads; ``jobs=1`` (or a single run left) trains them one after the other in this
    process. A run gives bitwise the same numbers for every ``jobs`` at the same number of
    torch threads per run (see the module docstring: the thread count can change the last
    bits), the runs of ``results.json`` are in the same order, and ``results.json`` and the
    report are rewritten after each finished run. An exception of a worker other than a
    non-finite loss stops the other workers (their runs keep their checkpoints for
    ``resume``) and is raised here, with a note (Python 3.11+) naming its run. Under
    ``torchrun`` (``WORLD_SIZE > 1``) only ``jobs=1`` is possible, and ``None`` means 1.
    ``machine`` in ``results.json`` records ``jobs`` and ``threads_per_job``.

    Returns the content of ``results.json``.
    """
    for label in labels:
        make_strategy(label, **(strategy_options or {}).get(label, {}))  # names checked up front
    if model_registry.MODELS.get(model_name) is None:
        raise ValueError(
            f"model: expected one of {sorted(model_registry.MODELS)}, received {model_name!r}"
        )
    check_seeds(seeds)
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs: expected a positive int (or None: every core), received {jobs!r}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and jobs not in (None, 1):
        raise ValueError(
            f"jobs: under torchrun (WORLD_SIZE={world}) the processes train every run "
            f"together; expected 1 or None, received {jobs!r}"
        )
    with exclusive(out_dir) as root:
        return _compare_held(
            task, model_name, labels, root=root, seeds=seeds, config=config, resume=resume,
            progress=progress, model_options=model_options, strategy_options=strategy_options,
            task_options=task_options, command=command, reference=reference, jobs=jobs,
            world=world,
        )  # fmt: skip


def _compare_held(
    task: Task,
    model_name: str,
    labels: Sequence[str],
    *,
    root: Path,
    seeds: int,
    config: TrainConfig,
    resume: bool,
    progress: bool,
    model_options: dict[str, Any] | None,
    strategy_options: dict[str, dict[str, Any]] | None,
    task_options: dict[str, Any] | None,
    command: str | None,
    reference: dict[str, float] | None,
    jobs: int | None,
    world: int,
) -> dict[str, Any]:
    """:func:`compare` in the directory ``root`` it holds."""
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
    _check_resumable(root / RESULTS_JSON, setup, resume, config, strategy_options or {})
    plan = [(label, seed) for label in labels for seed in range(seeds)]
    pending = [
        i
        for i, (label, seed) in enumerate(plan)
        if not (resume and _finished(_run_dir(root, label, seed), config.epochs))
    ]
    cores = _cores()
    workers = 1 if world > 1 else min(jobs or cores, max(len(pending), 1))
    threads = torch.get_num_threads() if workers == 1 else max(1, cores // workers)
    results: dict[str, Any] = {
        "setup": setup,
        "command": command,
        "machine": _machine(config.device, jobs=workers, threads=threads),
        "reference": reference or {},
        "runs": [],
    }
    records = _finished_earlier(plan, pending, root, progress)
    if records:
        _publish(results, records, root)
    if workers > 1:
        _compare_in_workers(
            task,
            model_name,
            plan,
            pending,
            workers=workers,
            threads=threads,
            root=root,
            results=results,
            records=records,
            config=config,
            resume=resume,
            progress=progress,
            model_options=model_options,
            strategy_options=strategy_options or {},
        )
        return results
    total = len(plan)
    for i in pending:
        label, seed = plan[i]
        _say(progress, f"[{i + 1}/{total}] {label} seed {seed}")
        records[i] = _run_or_record_failure(
            task,
            model_name,
            label,
            seed=seed,
            config=config,
            out_dir=_run_dir(root, label, seed),
            resume=resume,
            progress=progress,
            progress_position=None,
            model_options=model_options,
            strategy_options=(strategy_options or {}).get(label),
        )
        if "error" in records[i]:  # one diverged run must not end the comparison
            _say(progress, f"  {label} seed {seed} failed: {records[i]['error']}")
        _publish(results, records, root)
    return results


def _compare_in_workers(
    task: Task,
    model_name: str,
    plan: list[tuple[str, int]],
    pending: list[int],
    *,
    workers: int,
    threads: int,
    root: Path,
    results: dict[str, Any],
    records: dict[int, dict[str, Any]],
    config: TrainConfig,
    resume: bool,
    progress: bool,
    model_options: dict[str, Any] | None,
    strategy_options: dict[str, dict[str, Any]],
) -> None:
    """:func:`compare`'s loop with ``workers`` processes: at most ``workers`` runs are handed
    out at a time, each with a free slot number (its line in the progress output), so a run
    starts when it is handed out; each finished run joins ``records`` (plan index -> record)
    and ``results["runs"]`` is rebuilt in plan order."""
    total = len(plan)
    queue = deque(pending)
    try:  # ~1 MB and ~10 ms for N-body's full splits
        payload = pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise TypeError(
            f"task: jobs > 1 sends the task to worker processes by pickle; expected a "
            f"picklable task (module-level functions, no lambdas), received {task.name!r}, "
            f"which is not ({error}); use jobs=1"
        ) from error
    deterministic = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_context(),
        initializer=_start_worker,
        initargs=(payload, threads, torch.get_default_dtype(), deterministic),
    )
    running: dict[Future[dict[str, Any]], tuple[int, int]] = {}
    free = list(range(workers))
    finished_cleanly = False
    try:
        while queue or running:
            while queue and free:
                i, slot = queue.popleft(), free.pop(0)
                label, seed = plan[i]
                _say(progress, f"[{i + 1}/{total}] {label} seed {seed} (worker {slot + 1})")
                future = executor.submit(
                    _run_in_worker,
                    model_name,
                    label,
                    seed=seed,
                    config=config,
                    out_dir=str(_run_dir(root, label, seed).resolve()),
                    resume=resume,
                    model_options=model_options,
                    strategy_options=strategy_options.get(label),
                    progress=progress,
                    slot=slot,
                )
                running[future] = (i, slot)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            failure: tuple[BaseException, int] | None = None
            for future in sorted(done, key=lambda f: running[f][0]):
                i, slot = running.pop(future)
                free.append(slot)
                label, seed = plan[i]
                try:
                    record = future.result()
                except BaseException as error:  # raised below, after the other finished runs
                    failure = failure or (error, i)
                    continue
                records[i] = record
                if "error" in record:
                    _say(progress, f"  {label} seed {seed} failed: {record['error']}")
                else:
                    _say(
                        progress,
                        f"[{i + 1}/{total}] {label} seed {seed}: finished in "
                        f"{record['wall_seconds']:.1f} s ({len(records)}/{total} done)",
                    )
                _publish(results, records, root)
            free.sort()
            if failure is not None:
                error, i = failure
                label, seed = plan[i]
                _say(
                    progress,
                    f"[{i + 1}/{total}] {label} seed {seed} raised {type(error).__name__}: "
                    f"{error}; stopping the other workers",
                )
                if hasattr(error, "add_note"):  # Python 3.11+
                    error.add_note(
                        f"raised by the run {label!r} seed {seed} of equirelax.compare "
                        f"({_run_dir(root, label, seed)}) in a worker process"
                    )
                raise error
        finished_cleanly = True
    finally:
        if not finished_cleanly:
            _stop_workers(executor)
        executor.shutdown(wait=True, cancel_futures=True)


def _run_dir(root: Path, label: str, seed: int) -> Path:
    return root / "runs" / label / f"seed{seed}"


def _finished_earlier(
    plan: list[tuple[str, int]], pending: list[int], root: Path, progress: bool
) -> dict[int, dict[str, Any]]:
    """The records of the runs of ``plan`` not in ``pending`` (finished by an earlier call),
    read back from their ``result.json``, by plan index."""
    waiting, records = set(pending), {}
    for i, (label, seed) in enumerate(plan):
        if i not in waiting:
            records[i] = read_json(_run_dir(root, label, seed) / RUN_RESULT, "resume")
            _say(
                progress, f"[{i + 1}/{len(plan)}] {label} seed {seed}: finished earlier, read back"
            )
    return records


def _run_or_record_failure(task: Task, model_name: str, label: str, **run: Any) -> dict[str, Any]:
    """:func:`run_one` (``run``: its keyword arguments); a non-finite loss gives the failed
    run's record instead, so that one diverged run does not end the comparison."""
    try:
        return run_one(task, model_name, label, **run)
    except NonFiniteLossError as error:
        return _failed_run(label, run["seed"], error)


def _failed_run(label: str, seed: int, error: BaseException) -> dict[str, Any]:
    return {"strategy": label, "seed": seed, "final": {}, "error": str(error)}


def _publish(results: dict[str, Any], records: dict[int, dict[str, Any]], root: Path) -> None:
    """``results["runs"]`` in plan order, then the report and ``results.json``."""
    results["runs"] = [records[i] for i in sorted(records)]
    write_report(results, root)
    write_json(root / RESULTS_JSON, results)


def _cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "process_cpu_count"):  # Python 3.13+
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _context() -> BaseContext:
    """``forkserver`` preloading this module (workers fork from a clean process that has
    imported torch and equirelax once, instead of importing them each), else ``spawn``."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    server = getattr(forkserver, "_forkserver", None)
    preload = list(getattr(server, "_preload_modules", None) or ["__main__"])
    if __name__ not in preload:  # no effect once the server runs: then workers import it
        context.set_forkserver_preload([*preload, __name__])
    return context


_WORKER_TASK: Task | None = None


def _start_worker(
    payload: bytes, threads: int, dtype: torch.dtype, deterministic: tuple[bool, bool]
) -> None:
    """Initializer of a worker process: its share of threads first, then the task."""
    global _WORKER_TASK
    # tqdm's default lock is a multiprocessing RLock: a named semaphore that a worker ended by
    # _stop_workers leaves behind ("leaked semaphore" warning); no other process shares it
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # refused once inter-op work has started
        torch.set_num_interop_threads(1)
    torch.set_default_dtype(dtype)
    torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
    _WORKER_TASK = pickle.loads(payload)


def _run_in_worker(
    model_name: str,
    label: str,
    *,
    seed: int,
    config: TrainConfig,
    out_dir: str,
    resume: bool,
    model_options: dict[str, Any] | None,
    strategy_options: dict[str, Any] | None,
    progress: bool,
    slot: int,
) -> dict[str, Any]:
    """:func:`run_one` on the worker's task, its progress bar on line ``slot`` of the
    terminal; a non-finite loss gives the failed run's record, as in :func:`compare`."""
    if _WORKER_TASK is None:
        raise RuntimeError("_run_in_worker: the worker was started without a task")
    return _run_or_record_failure(
        _WORKER_TASK,
        model_name,
        label,
        seed=seed,
        config=config,
        out_dir=out_dir,
        resume=resume,
        progress=progress,
        progress_position=slot,
        model_options=model_options,
        strategy_options=strategy_options,
    )


def _stop_workers(executor: ProcessPoolExecutor) -> None:
    """End the worker processes now (an interrupted run continues from its checkpoint)."""
    terminate = getattr(executor, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.terminate()


def _check_resumable(
    path: Path,
    setup: dict[str, Any],
    resume: bool,
    config: TrainConfig,
    strategy_options: dict[str, dict[str, Any]],
) -> None:
    """Refuse to resume a comparison of another setup; its training settings may differ as
    :func:`~equirelax.engine.check_continuation` allows (more epochs at a constant learning
    rate, without CR; compile, device)."""
    if not (resume and path.exists()):
        return
    previous = read_json(path, "resume").get("setup") or {}
    ours = json.loads(json.dumps(setup))
    if {k: v for k, v in previous.items() if k != "config"} != {
        k: v for k, v in ours.items() if k != "config"
    } or not isinstance(previous.get("config"), dict):
        raise ValueError(
            f"resume: {path} was written by a different comparison; expected setup "
            f"{previous}, received {setup} (use another --out or drop --resume)"
        )
    for label in setup["strategies"]:
        check_continuation(
            {**previous["config"], "seed": config.seed},
            config,
            make_strategy(label, **strategy_options.get(label, {})),
            where=str(path),
        )


def _finished(run_dir: Path, epochs: int) -> bool:
    """Whether the run in ``run_dir`` has a result of at least ``epochs`` epochs (a shorter
    one is continued from its checkpoint by a comparison that asks for more)."""
    path = run_dir / RUN_RESULT
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text())["config"]["epochs"] >= epochs
    except (json.JSONDecodeError, KeyError, TypeError):  # cut short: train it again (resumes)
        return False


def _machine(device: str, *, jobs: int, threads: int) -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": threads,
        "jobs": jobs,
        "threads_per_job": threads,
        "torch": torch.__version__,
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _is_plain(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool, list)) or value is None


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)
