"""The run logs beside metrics.jsonl (issue 21): metrics.csv always, TensorBoard on request."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

import equirelax
from _toy import vector_model, vector_task
from equirelax.engine.logs import METRICS_CSV, TENSORBOARD_DIR
from equirelax.strategies import RECM


def _train(out: Path | None, **settings: object) -> None:
    model = equirelax.relax(vector_model())
    equirelax.train(model, RECM(), vector_task(48, 16), epochs=3, batch_size=16, eval_every=2,
                    out_dir=out, progress=False, **settings)  # fmt: skip


def test_every_run_writes_a_csv_with_the_records_of_metrics_jsonl(tmp_path: Path) -> None:
    _train(tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    with open(tmp_path / METRICS_CSV, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert [float(row["train_loss"]) for row in rows] == [r["train_loss"] for r in records]
    assert rows[0]["val"] == ""  # validated every 2 epochs and after the last
    assert float(rows[1]["val"]) == records[1]["val"]
    levels = [key for key in rows[0] if key.startswith("levels/")]
    assert levels  # one column per relaxed layer
    assert [float(rows[2][key]) for key in levels] == records[2]["levels"]


def test_tensorboard_logs_each_epoch_when_asked(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _train(tmp_path, loggers=["tensorboard"])
    events = EventAccumulator(str(tmp_path / TENSORBOARD_DIR))
    events.Reload()
    assert [e.step for e in events.Scalars("train_loss")] == [1, 2, 3]
    assert [e.step for e in events.Scalars("val")] == [2, 3]


def test_loggers_are_checked_and_a_missing_package_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="loggers: expected one of"):
        equirelax.TrainConfig(loggers=["wandb"])
    with pytest.raises(TypeError, match="loggers: expected a list of names"):
        equirelax.TrainConfig(loggers="tensorboard")
    with pytest.raises(ValueError, match="loggers: 'tensorboard' writes to out_dir"):
        _train(None, loggers=["tensorboard"])
    for name in [m for m in sys.modules if m.split(".")[0] == "tensorboard" or
                 m.startswith("torch.utils.tensorboard")]:  # fmt: skip
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'equirelax\[tensorboard\]'"):
        _train(tmp_path, loggers=["tensorboard"])


def test_the_cli_logs_to_tensorboard_with_logger(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from equirelax.experiments.cli import main

    words = [
        "train", "inertia", "--train-size", "20", "--val-size", "10", "--test-size", "10",
        "--epochs", "2", "--quiet", "--logger", "tensorboard", "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(words) == 0
    assert list((tmp_path / TENSORBOARD_DIR).glob("events.out.tfevents.*"))
    assert (tmp_path / METRICS_CSV).exists()
