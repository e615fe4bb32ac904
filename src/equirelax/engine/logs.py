"""What a run logs beside ``metrics.jsonl``: ``metrics.csv`` (always, one row per epoch) and,
when asked for (``TrainConfig(loggers=["tensorboard"])``) and installed, TensorBoard event
files under ``tensorboard/``."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from equirelax._constants import LOGGERS

__all__ = [
    "LOGGERS",
    "METRICS_CSV",
    "TENSORBOARD_DIR",
    "TensorBoardLog",
    "flat_record",
    "write_csv",
]

METRICS_CSV = "metrics.csv"
"""The table of every epoch's record a run writes beside ``metrics.jsonl``."""
TENSORBOARD_DIR = "tensorboard"
"""Where ``loggers=["tensorboard"]`` writes its event files (under the run's directory)."""


def flat_record(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of one epoch's record, lists spread as ``key/0``, ``key/1``, ..."""
    flat: dict[str, float] = {}
    for key, value in record.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for i, item in enumerate(values):
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                flat[f"{key}/{i}" if values is value else key] = item
    return flat


def write_csv(path: Path, history: Iterable[dict[str, Any]]) -> None:
    """Write the records as a CSV table (columns in order of first appearance, empty cells
    where an epoch has no value, e.g. between validations), atomically."""
    rows = [flat_record(record) for record in history]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


class TensorBoardLog:
    """TensorBoard scalars of every epoch's record (step: the 1-based epoch) in
    ``directory`` (``torch.utils.tensorboard``; needs ``pip install 'equirelax[tensorboard]'``)."""

    def __init__(self, directory: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError(
                "loggers: 'tensorboard' needs the tensorboard package; install it with pip "
                "install 'equirelax[tensorboard]'",
                name=error.name,
            ) from None
        self.writer = SummaryWriter(log_dir=str(directory))

    def log(self, record: dict[str, Any]) -> None:
        """Add the record's finite numbers as scalars at step ``epoch + 1``."""
        step = int(record["epoch"]) + 1
        for key, value in flat_record(record).items():
            if key != "epoch" and math.isfinite(value):
                self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
