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


class _DivergedAfterTheLastStep(nn.Module):
    """Finite outputs while training, NaN when evaluated: weights that a last step of an epoch
    sent to infinity, which no training loss has seen yet."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = vector_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        return y if self.training else y * float("nan")


def test_a_model_that_diverges_on_an_epochs_last_step_stops_as_a_diverged_run(
    tmp_path: Path,
) -> None:
    """The validation after the epoch finds the non-finite model and stops the run with the
    diverged-run error (which a comparison records as a failed run), naming the checkpoint."""
    task = vector_task(32, 16)
    with pytest.raises(NonFiniteLossError, match=r"val: non-finite validation .* epoch 0.*"
                       r"no checkpoint yet"):  # fmt: skip
        equirelax.train(_DivergedAfterTheLastStep(), Free(), task, epochs=2, batch_size=16,
                        out_dir=tmp_path, progress=False)  # fmt: skip


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


def test_resuming_on_other_training_data_names_the_checkpoint(tmp_path: Path) -> None:
    _one_epoch(tmp_path)
    model = equirelax.relax(vector_model())
    expected = f"resume: {tmp_path / CHECKPOINT} was trained on other training data"
    with pytest.raises(ValueError, match=re.escape(expected)):
        equirelax.train(model, Free(), vector_task(48, 16), epochs=2, batch_size=16,
                        out_dir=tmp_path, resume=True, progress=False)  # fmt: skip


def test_the_cli_refuses_to_resume_a_run_as_another_setup(tmp_path: Path) -> None:
    words = ["train", "inertia", "--strategy", "ace-resilient", *_QUICK, "--out", str(tmp_path)]
    assert _cli(*words).returncode == 0
    before = (tmp_path / "result.json").read_text()
    result = _cli(*words, "--resume", "--option", "kp=2.0")
    assert (result.returncode, "Traceback" in result.stderr) == (2, False)
    assert f"resume: {tmp_path} is a run of another setup (strategy_options=" in result.stderr
    result = _cli(*words, "--resume", "--task-option", "num_masses=4")
    assert (result.returncode, "Traceback" in result.stderr) == (2, False)
    assert "was trained on other training data" in result.stderr
    assert (tmp_path / "result.json").read_text() == before


def test_a_cache_path_that_is_a_file_is_named(tmp_path: Path) -> None:
    taken = tmp_path / "cache"
    taken.write_text("a file")
    with pytest.raises(OSError, match=re.escape(f"cache_dir: {taken} cannot hold the data cache")):
        nbody_task(train_size=4, val_size=2, test_size=0, cache_dir=taken, progress=False)


@pytest.mark.slow
def test_a_comparison_killed_mid_run_resumes_to_the_uninterrupted_results(tmp_path: Path) -> None:
    argv = [
        sys.executable, "-m", "equirelax", "compare", "gap-dial", "--strategies", "strict,rpp",
        "--seeds", "1", "--epochs", "12", "--train-size", "64", "--val-size", "16",
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


# --------------------------------------------------------------------------- the command line

_QUICK = ["--train-size", "20", "--val-size", "10", "--test-size", "10", "--epochs", "1", "--quiet"]


def _cli(*words: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "equirelax", *words], capture_output=True,
                          text=True, check=False, cwd=cwd)  # fmt: skip


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["train", "inertia", "--strategy", "ace", "--option", "banana=1"],
         "--option: strategy 'ace': expected options from mode, epsilon"),
        (["train", "inertia", "--task-option", "banana=1"],
         "--task-option: task 'inertia' has no option 'banana'; its options are train_size"),
        (["train", "inertia", "--model-option", "banana=1"],
         "--model-option: model 'emlp' has no option 'banana'"),
        (["compare", "inertia", "--strategies", "strict", "--seeds", str(10**9)],
         "--seeds: expected a positive integer of at most 10000, received 1000000000"),
        (["train", "inertia", "--seed", str(2**70)],
         "--seed: expected a non-negative integer of at most 9223372036854775807"),
        (["train", "inertia", "--compile", "banana"], "--compile: expected one of"),
        (["adapt", "glyphs", "--canonicalizer-option", "banana=1"],
         "--canonicalizer-option: expected options from group, in_channels, hidden"),
    ],
    ids=["strategy-option", "task-option", "model-option", "seeds", "seed", "compile-backend",
         "canonicalizer-option"],
)  # fmt: skip
def test_the_cli_names_a_refused_setting_and_what_it_accepts(
    tmp_path: Path, words: list[str], message: str
) -> None:
    result = _cli(*words, *_QUICK, "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_the_cli_refuses_an_output_path_that_is_a_file_or_under_one(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    result = _cli("train", "inertia", *_QUICK, "--out", str(taken))
    assert (result.returncode, "Traceback" in result.stderr) == (2, False)
    assert f"--out: expected a directory, received {taken}, which is a file" in result.stderr
    result = _cli("compare", "inertia", "--strategies", "strict", *_QUICK, "--out",
                  str(taken / "below"))  # fmt: skip
    assert (result.returncode, "Traceback" in result.stderr) == (2, False)
    assert f"--out: cannot create the directory {taken / 'below'}" in result.stderr
    assert taken.read_text() == "not a directory"


# --------------------------------------------------------------------------- non-finite models


def test_metrics_and_projection_name_a_model_with_non_finite_weights() -> None:
    task = vector_task(8, 4)
    model = equirelax.relax(vector_model())
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    inputs = task.val[0]
    with pytest.raises(ValueError, match=r"f: expected finite outputs on finite inputs"):
        equirelax.equivariance_error(model, inputs, task.action_in, task.action_out)
    with pytest.raises(ValueError, match=r"model: .*weight.*: expected finite values \(did"):
        equirelax.project(model)


# --------------------------------------------------------------------------- the data cache


def test_processes_that_need_the_same_data_at_once_generate_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from equirelax.tasks import nbody

    calls: list[list[str]] = []
    generate = nbody._generate

    def slow_generate(*args: object, **kwargs: object) -> object:
        calls.append(list(args[0]))  # type: ignore[call-overload]
        time.sleep(0.5)  # the second caller arrives while the first generates
        return generate(*args, **kwargs)

    monkeypatch.setattr(nbody, "_generate", slow_generate)
    made: list[Task] = []

    def make() -> None:
        made.append(nbody_task(train_size=4, val_size=2, test_size=0, cache_dir=tmp_path,
                               progress=False))  # fmt: skip

    threads = [threading.Thread(target=make) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [["train", "val"]]  # generated by one, read by the other
    assert torch.equal(made[0].train[1], made[1].train[1])


# --------------------------------------------------------------------------- kill mid-write

_KILL_AT_WRITE = """
import os, signal, sys
from pathlib import Path
target, nth = sys.argv[1], int(sys.argv[2])
replace, seen = os.replace, []
def killing_replace(source, destination, *args, **kwargs):
    if Path(destination).name == target:
        seen.append(destination)
        if len(seen) == nth:  # the temporary file is written; die before it is renamed
            os.kill(os.getpid(), signal.SIGKILL)
    return replace(source, destination, *args, **kwargs)
os.replace = killing_replace
from equirelax.experiments.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("target", "nth"), [(CHECKPOINT, 3), ("results.json", 1)])
def test_a_kill_in_the_middle_of_a_write_resumes_to_the_uninterrupted_results(
    tmp_path: Path, target: str, nth: int
) -> None:
    words = [
        "compare", "gap-dial", "--strategies", "strict,rpp", "--seeds", "1", "--epochs", "5",
        "--train-size", "64", "--val-size", "16", "--test-size", "16", "--batch-size", "16",
        "--model-option", "num_layers=1", "--jobs", "1", "--quiet",
    ]  # fmt: skip
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert _cli(*words, "--out", str(reference)).returncode == 0
    dying = subprocess.run(
        [sys.executable, "-c", _KILL_AT_WRITE, target, str(nth), *words, "--out", str(killed)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert dying.returncode == -signal.SIGKILL, dying.stderr
    assert list(killed.rglob(f"{target}.*.tmp"))  # the write it died in
    resumed = _cli(*words, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr

    def finals(root: Path) -> list[dict]:
        runs = json.loads((root / "results.json").read_text())["runs"]
        return [{k: v for k, v in r["final"].items() if "seconds" not in k} for r in runs]

    assert finals(killed) == finals(reference)
