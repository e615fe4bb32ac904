"""The arms x seeds skeleton shared by the experiment runners (:mod:`~.adapt`,
:mod:`~.breaking`; :mod:`~.compare` shares its atomic JSON writes): run every arm for every
seed, write ``results.json`` atomically after every run, and summarise the records as one
Markdown row per arm (mean ± standard deviation over seeds)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from equirelax._checks import check_positive_int
from equirelax.experiments.names import MAX_SEEDS
from equirelax.experiments.report import mean_std

__all__ = [
    "LOCK",
    "MAX_SEEDS",
    "RESULTS_JSON",
    "Column",
    "arm_table",
    "check_arms",
    "check_seeds",
    "exclusive",
    "read_json",
    "run_arms",
    "write_json",
]

LOCK = ".equirelax.lock"
"""The lock file of an output directory in use (:func:`exclusive`); ``LOCK + ".holder"``
names the process that holds it."""

RESULTS_JSON = "results.json"
"""The records of a comparison in its output directory."""


def check_seeds(seeds: object) -> int:
    """``seeds`` if it is an int in [1, :data:`MAX_SEEDS`]; a ``ValueError`` naming it
    otherwise."""
    count = check_positive_int("seeds", seeds)
    if count > MAX_SEEDS:
        raise ValueError(f"seeds: expected at most {MAX_SEEDS} seeds per arm, received {count}")
    return count


Column = tuple[str, str, float, int]
"""A table column: ``(header, record key, scale, decimal places)``."""


def check_arms(arms: Sequence[str], known: Sequence[str]) -> list[str]:
    """``arms`` as a list if they are distinct names from ``known``; a ``ValueError`` naming
    the argument otherwise."""
    unknown = [arm for arm in arms if arm not in known]
    if unknown or not arms or len(set(arms)) != len(arms):
        raise ValueError(f"arms: expected distinct names from {list(known)}, received {list(arms)}")
    return list(arms)


@contextmanager
def exclusive(directory: str | os.PathLike) -> Iterator[Path]:
    """Hold ``directory`` (created if needed) for this process: a second process that asks for
    it while it is held gets a ``RuntimeError`` naming the holder, so two runs never write into
    one directory (an exclusive :class:`filelock.FileLock` on ``directory/.equirelax.lock``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(directory / LOCK)
    holder = directory / f"{LOCK}.holder"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        who = holder.read_text().strip() if holder.exists() else "another process"
        raise RuntimeError(
            f"out_dir: {directory} is in use by {who}; wait for it to finish (then --resume "
            "continues it) or write to another directory"
        ) from None
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        holder.write_text(f"process {os.getpid()} on {socket.gethostname()} since {started}\n")
        yield directory
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def read_json(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; a ``ValueError`` that starts with ``what`` and names the
    file when it is not one (e.g. cut short)."""
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{what}: {path} is not valid JSON ({error}); it may have been cut short: delete "
            "it and run again with --resume (finished runs keep their own result.json)"
        ) from None
    if not isinstance(content, dict):
        raise ValueError(f"{what}: {path} holds a {type(content).__name__}, not a JSON object")
    return content


def write_json(path: Path, content: dict[str, Any]) -> None:
    """Write ``content`` to ``path`` atomically: a temporary file of this process, then a
    rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(temporary, path)


def run_arms(
    arms: Sequence[str],
    seeds: int,
    run: Callable[[str, int, Path | None], dict[str, Any]],
    *,
    out_dir: str | os.PathLike | None = None,
    setup: dict[str, Any] | None = None,
    seeds_of: Callable[[str], int] | None = None,
) -> list[dict[str, Any]]:
    """``{"arm", "seed", **run(arm, seed, run_dir)}`` for every arm and seed, in order, with
    torch's global generator seeded by ``seed`` before each run. With ``out_dir`` each run gets
    ``out_dir/<arm>/seed<k>`` and the records so far go to ``out_dir/results.json``
    (``{"setup": setup, "runs": records}``) after every run; the directory is held
    (:func:`exclusive`) until the last run ends. ``seeds_of(arm)`` overrides the
    number of seeds of an arm (e.g. 1 for one that trains nothing)."""
    check_seeds(seeds)
    root = Path(out_dir) if out_dir is not None else None
    records: list[dict[str, Any]] = []
    with exclusive(root) if root is not None else nullcontext():
        for arm in arms:
            for seed in range(seeds if seeds_of is None else seeds_of(arm)):
                torch.manual_seed(seed)
                run_dir = root / arm / f"seed{seed}" if root is not None else None
                records.append({"arm": arm, "seed": seed, **run(arm, seed, run_dir)})
                if root is not None:
                    write_json(root / RESULTS_JSON, {"setup": setup or {}, "runs": records})
    return records


def arm_table(records: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A Markdown table with one row per arm (in the order of first appearance): every
    column's ``scale * record[key]`` as mean ± std over the arm's seeds (``-`` where every
    value is ``None``), then the mean ``seconds`` and the number of seeds."""
    header = " | ".join(name for name, *_ in columns)
    lines = [
        f"| arm | {header} | seconds | seeds |",
        "|---" * (len(columns) + 3) + "|",
    ]
    for arm in dict.fromkeys(record["arm"] for record in records):
        runs = [r for r in records if r["arm"] == arm]
        cells = [_cell([r[key] for r in runs], scale, digits) for _, key, scale, digits in columns]
        seconds = mean_std([r["seconds"] for r in runs])[0]
        lines.append(f"| {arm} | {' | '.join(cells)} | {seconds:.1f} | {len(runs)} |")
    return "\n".join(lines)


def _cell(values: list[Any], scale: float, digits: int) -> str:
    if all(v is None for v in values):
        return "-"
    mean, std = mean_std([scale * v for v in values if v is not None])
    spread = f" ± {std:.{digits}f}" if len(values) > 1 else ""
    return f"{mean:.{digits}f}{spread}"
