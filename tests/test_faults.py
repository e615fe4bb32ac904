"""Bad inputs the library must refuse with a message naming the culprit (issue 20), rather than
compute something wrong: integer data under rotations, non-finite training data."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import equirelax
from _toy import vector_model, vector_task
from equirelax import Relaxed
from equirelax.actions import ImageAction, PermutationAction, TrivialAction, VectorAction
from equirelax.engine import CHECKPOINT, METRICS, NonFiniteLossError
from equirelax.groups import O3, CyclicGroup, SymmetricGroup
from equirelax.strategies import ACE, RPP, Free
from equirelax.tasks import Task, inertia_task, nbody_task


def test_rotations_refuse_integer_data_that_they_would_round() -> None:
    integers = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"x: expected a floating-point tensor .*torch.int64"):
        VectorAction(O3())(O3().sample(2), integers)
    images = torch.ones(2, 1, 5, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"x: expected a floating-point tensor for C8"):
        ImageAction(CyclicGroup(8))(torch.tensor([1, 1]), images)
    # exact actions move integer data without rounding it
    quarter = ImageAction(CyclicGroup(4))(torch.tensor([1, 1]), images)
    assert quarter.dtype == torch.long
    assert torch.equal(quarter, images)
    labels = torch.arange(6).reshape(2, 3)
    moved = PermutationAction(SymmetricGroup(3), dims=(1,))(
        SymmetricGroup(3).elements()[:2], labels
    )
    assert sorted(moved[1].tolist()) == [3, 4, 5]


@pytest.mark.parametrize(
    ("split", "field", "value"),
    [("train", "targets", float("nan")), ("val", "inputs[1]", float("inf"))],
)
def test_a_task_with_non_finite_data_names_the_split_and_the_field(
    split: str, field: str, value: float
) -> None:
    inputs = (torch.zeros(4, 3), torch.zeros(4, 2))
    targets = torch.zeros(4, 1)
    splits = {"train": (inputs, targets), "val": (inputs, targets)}
    if field == "targets":
        bad_targets = targets.clone()
        bad_targets[2, 0] = value
        splits[split] = (inputs, bad_targets)
    else:
        bad = inputs[1].clone()
        bad[0, 1] = value
        splits[split] = ((inputs[0], bad), targets)
    expected = re.escape(f"{split}: expected finite {field}, received 1 NaN or infinite")
    with pytest.raises(ValueError, match=expected):
        Task.from_splits("toy", splits, action_in=TrivialAction(O3()))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("kp", -5.0, "kp: expected a finite number >= 0"),
        ("initial_level", float("nan"), "initial_level: expected a finite number"),
        ("dual_lr", float("inf"), "dual_lr: expected a positive finite number"),
        ("epsilon", 0.0, "epsilon: expected a positive finite number"),
    ],
)
def test_ace_refuses_settings_that_cannot_be_meant(option: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ACE(**{option: value})


# --------------------------------------------------------------------------- run files


def _one_epoch(out: Path, **options: object) -> None:
    model = equirelax.relax(vector_model(**options))
    equirelax.train(model, Free(), vector_task(32, 16), epochs=1, batch_size=16,
                    out_dir=out, progress=False)  # fmt: skip


def _resume(out: Path, **options: object) -> None:
    model = equirelax.relax(vector_model(**options))
    equirelax.train(model, Free(), vector_task(32, 16), epochs=2, batch_size=16,
                    out_dir=out, resume=True, progress=False)  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda path: path.write_bytes(path.read_bytes()[:100]), "is not a readable checkpoint"),
        (lambda path: path.write_bytes(b""), "is not a readable checkpoint"),
        (lambda path: torch.save({"weights": 1}, path), "is not an equirelax checkpoint"),
    ],
    ids=["truncated", "empty", "foreign"],
)
def test_a_damaged_checkpoint_is_named_on_resume(
    tmp_path: Path, damage: Callable[[Path], object], message: str
) -> None:
    _one_epoch(tmp_path)
    damage(tmp_path / CHECKPOINT)
    with pytest.raises(ValueError, match=re.escape(f"resume: {tmp_path / CHECKPOINT} {message}")):
        _resume(tmp_path)


def test_resuming_another_model_names_the_checkpoint(tmp_path: Path) -> None:
    _one_epoch(tmp_path, hidden=8)
    expected = f"resume: {tmp_path / CHECKPOINT} holds the model state of another run"
    with pytest.raises(ValueError, match=re.escape(expected)):
        _resume(tmp_path, hidden=4)


def test_a_records_file_cut_mid_line_is_resumed_from_the_checkpoint(tmp_path: Path) -> None:
    _one_epoch(tmp_path)
    metrics = tmp_path / METRICS
    metrics.write_text(metrics.read_text() + '{"epoch": 1, "train_lo')
    _resume(tmp_path)
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == [0, 1]


def test_a_diverged_run_names_only_a_checkpoint_that_exists(tmp_path: Path) -> None:
    task = vector_task(32, 16)
    model = equirelax.relax(vector_model())
    with pytest.raises(NonFiniteLossError, match="no checkpoint yet"):
        equirelax.train(model, Free(), task, epochs=1, batch_size=16, lr=1e30, out_dir=tmp_path,
                        progress=False)  # fmt: skip
    assert not (tmp_path / CHECKPOINT).exists()


def test_the_cli_names_a_damaged_checkpoint_without_a_traceback(tmp_path: Path) -> None:
    argv = [
        sys.executable, "-m", "equirelax", "train", "inertia", "--train-size", "20",
        "--val-size", "10", "--test-size", "10", "--epochs", "1", "--quiet", "--out", str(tmp_path),
    ]  # fmt: skip
    assert subprocess.run(argv, capture_output=True, check=False).returncode == 0
    (tmp_path / CHECKPOINT).write_bytes(b"\x00" * 10)
    result = subprocess.run(
        [*argv[:-4], "2", "--quiet", "--resume", "--out", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"{tmp_path / CHECKPOINT} is not a readable checkpoint" in result.stderr


def test_absurd_split_sizes_are_refused_before_any_data_is_made() -> None:
    with pytest.raises(ValueError, match="train_size: expected at most"):
        inertia_task(train_size=10**12, val_size=10, test_size=10)


def test_a_free_branch_that_does_not_fit_the_layer_is_named() -> None:
    layer = Relaxed(nn.Linear(4, 3), nn.Linear(5, 3), level=1.0)
    with pytest.raises(ValueError, match=r"free: the free branch Linear of Linear does not accept"):
        layer(torch.randn(2, 4))


def test_a_relaxed_layer_refuses_a_level_that_is_not_a_finite_number() -> None:
    for level in (float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="level: expected a finite number"):
            Relaxed(nn.Linear(2, 2), nn.Linear(2, 2), level=level)


def test_resuming_with_another_strategy_names_the_checkpoint(tmp_path: Path) -> None:
    _one_epoch(tmp_path)
    model = equirelax.relax(vector_model())
    expected = f"resume: {tmp_path / CHECKPOINT} was trained with strategy 'free', received 'rpp'"
    with pytest.raises(ValueError, match=re.escape(expected)):
        equirelax.train(model, RPP(), vector_task(32, 16), epochs=2, batch_size=16,
                        out_dir=tmp_path, resume=True, progress=False)  # fmt: skip


def test_a_cache_path_that_is_a_file_is_named(tmp_path: Path) -> None:
    taken = tmp_path / "cache"
    taken.write_text("a file")
    with pytest.raises(OSError, match=re.escape(f"cache_dir: {taken} cannot hold the data cache")):
        nbody_task(train_size=4, val_size=2, test_size=0, cache_dir=taken, progress=False)


@pytest.mark.slow
def test_a_comparison_killed_mid_run_resumes_to_the_uninterrupted_results(tmp_path: Path) -> None:
    argv = [
        sys.executable, "-m", "equirelax", "compare", "gap-dial", "--strategies", "strict,rpp",
        "--seeds", "1", "--epochs", "40", "--train-size", "64", "--val-size", "16",
        "--test-size", "16", "--batch-size", "16", "--model-option", "num_layers=1", "--jobs", "1",
        "--quiet",
    ]  # fmt: skip
    reference = tmp_path / "reference"
    subprocess.run([*argv, "--out", str(reference)], check=True, capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [*argv, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    checkpoint = killed / "runs" / "rpp" / "seed0" / CHECKPOINT
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # mid-run: strict done, rpp part-way
    process.wait()
    assert not (killed / "runs" / "rpp" / "seed0" / "result.json").exists()
    resumed = subprocess.run([*argv, "--out", str(killed), "--resume"], capture_output=True,
                             text=True, check=False)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr

    def finals(root: Path) -> list[dict]:
        runs = json.loads((root / "results.json").read_text())["runs"]
        return [{k: v for k, v in r["final"].items() if "seconds" not in k} for r in runs]

    assert finals(killed) == finals(reference)
