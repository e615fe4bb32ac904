"""``compare(..., jobs=N)``: worker processes give every run the numbers of ``jobs=1``, in the
same order; an exception in a worker names its run and stops the others; resume after an
interrupted parallel comparison reads back finished runs and continues interrupted ones; a
non-finite loss is recorded as with ``jobs=1``; invalid ``jobs`` are refused.

One module-scoped comparison with ``jobs=1`` and one with ``jobs=2`` are shared; the first
worker pool starts the fork server (a few seconds), later pools fork from it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from _toy import InterruptError, interrupt_at
from equirelax.engine import CHECKPOINT, METRICS, TrainConfig
from equirelax.experiments import compare as compare_module
from equirelax.experiments.compare import RESULTS_JSON, RUN_RESULT, compare, run_one
from equirelax.experiments.runner import exclusive
from equirelax.tasks.base import Task
from equirelax.tasks.synthetic import gap_dial_task

LABELS = ("augment", "ace-resilient")
SEEDS = 2
CONFIG = TrainConfig(epochs=2, batch_size=8)
MODEL_OPTIONS = {"num_layers": 1}
PLAN = [(label, seed) for label in LABELS for seed in range(SEEDS)]


def _timing(key: str) -> bool:
    """Wall times (``wall_seconds``, ``epoch_seconds``, ``eval_seconds``, ...): they differ."""
    return key == "seconds_per_epoch" or key.endswith("_seconds")


def _compare(task: Task, out: Path, **options: Any) -> dict[str, Any]:
    return compare(
        task, "emlp", LABELS, seeds=SEEDS, config=CONFIG, out_dir=out, progress=False,
        model_options=MODEL_OPTIONS, **options,
    )  # fmt: skip


def _numbers(run: dict[str, Any]) -> dict[str, Any]:
    """A run's record without its timings and its directory."""
    kept = {key: value for key, value in run.items() if not _timing(key) and key != "history"}
    kept["final"] = {key: value for key, value in run["final"].items() if not _timing(key)}
    return kept


def _history(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / METRICS).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not _timing(k)} for line in lines]


def _results(root: Path) -> dict[str, Any]:
    return json.loads((root / RESULTS_JSON).read_text())


@pytest.fixture(scope="module")
def task() -> Task:
    return gap_dial_task(0.5, train_size=24, val_size=8, test_size=8, progress=False)


def _two_jobs_on_this_many_threads(patch: pytest.MonkeyPatch) -> None:
    """Give ``jobs=2`` workers this process's torch threads (1 under conftest): a run's numbers
    depend on its thread count (float reductions split by thread; see compare's docstring)."""
    patch.setattr(compare_module, "_cores", lambda: 2 * torch.get_num_threads())


@pytest.fixture(scope="module")
def serial_and_parallel(task: Task, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("compare-jobs")
    _compare(task, root / "serial", jobs=1)
    with pytest.MonkeyPatch.context() as patch:
        _two_jobs_on_this_many_threads(patch)
        _compare(task, root / "parallel", jobs=2)
    return root / "serial", root / "parallel"


def test_workers_give_every_run_the_numbers_of_one_process_in_the_same_order(
    serial_and_parallel: tuple[Path, Path],
) -> None:
    serial, parallel = (_results(root) for root in serial_and_parallel)
    assert [(r["strategy"], r["seed"]) for r in parallel["runs"]] == PLAN
    assert [(r["strategy"], r["seed"]) for r in serial["runs"]] == PLAN
    for one, two in zip(serial["runs"], parallel["runs"], strict=True):
        assert "error" not in one
        assert _numbers(two) == _numbers(one)  # bitwise: floats compared with ==
        run = Path("runs") / one["strategy"] / f"seed{one['seed']}"
        assert _history(serial_and_parallel[1] / run) == _history(serial_and_parallel[0] / run)
    assert parallel["setup"] == serial["setup"]
    assert (serial["machine"]["jobs"], parallel["machine"]["jobs"]) == (1, 2)
    assert parallel["machine"]["threads_per_job"] == serial["machine"]["threads_per_job"]
    assert "2 worker processes x" in (serial_and_parallel[1] / "results.md").read_text()


def test_a_failing_worker_names_its_run_and_resume_finishes_the_interrupted_comparison(
    task: Task,
    serial_and_parallel: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    serial, parallel = serial_and_parallel
    _two_jobs_on_this_many_threads(monkeypatch)
    out = tmp_path / "out"
    shutil.copytree(parallel, out)
    before = {(r["strategy"], r["seed"]): r for r in _results(parallel)["runs"]}
    # ace-resilient seed 0 was interrupted after its first epoch: checkpoint, no result
    interrupted = out / "runs" / "ace-resilient" / "seed0"
    shutil.rmtree(interrupted)
    original = compare_module.make_strategy
    with monkeypatch.context() as patch:
        patch.setattr(
            compare_module, "make_strategy", lambda *a, **k: interrupt_at(original(*a, **k), 1)
        )
        with pytest.raises(InterruptError):
            run_one(
                task, "emlp", "ace-resilient", seed=0, config=CONFIG, out_dir=interrupted,
                progress=False, model_options=MODEL_OPTIONS,
            )  # fmt: skip
    assert torch.load(interrupted / CHECKPOINT, weights_only=True)["epoch"] == 0
    # ace-resilient seed 1 has a corrupt checkpoint: its worker raises
    broken = out / "runs" / "ace-resilient" / "seed1"
    (broken / RUN_RESULT).unlink()
    (broken / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(
        ValueError, match=f"{broken / CHECKPOINT} is not a readable checkpoint"
    ) as caught:
        _compare(task, out, resume=True, jobs=2)
    if hasattr(caught.value, "add_note"):  # notes: Python 3.11+
        assert any("'ace-resilient' seed 1" in note for note in caught.value.__notes__)
    partial = _results(out)["runs"]  # the finished runs, read back unchanged, in order
    assert [(r["strategy"], r["seed"]) for r in partial][:2] == PLAN[:2]
    for run in partial[:2]:
        assert run == before[(run["strategy"], run["seed"])]  # wall_seconds too: not retrained
    # without the corrupt checkpoint that run starts over; the interrupted one continues
    (broken / CHECKPOINT).unlink()
    resumed = _compare(task, out, resume=True, jobs=2)
    assert [(r["strategy"], r["seed"]) for r in resumed["runs"]] == PLAN
    assert resumed["runs"] == _results(out)["runs"]
    for run, reference in zip(resumed["runs"], _results(serial)["runs"], strict=True):
        assert _numbers(run) == _numbers(reference)
    for run in resumed["runs"][:2]:
        assert run == before[(run["strategy"], run["seed"])]
    history = _history(interrupted)
    assert [record["epoch"] for record in history] == [0, 1]
    assert history == _history(serial / "runs" / "ace-resilient" / "seed0")


def test_jobs_are_capped_by_the_runs_left_to_do(
    task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = []
    original = compare_module.run_one

    def counting(*args: Any, **kwargs: Any) -> dict[str, Any]:
        trained.append((args[2], kwargs["seed"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(compare_module, "run_one", counting)  # seen in this process only
    results = compare(
        task, "mlp", ["free"], seeds=1, config=CONFIG, out_dir=tmp_path, progress=False, jobs=8
    )
    assert results["machine"]["jobs"] == 1
    assert trained == [("free", 0)]


def test_a_non_finite_loss_in_a_worker_is_recorded_as_in_one_process(
    task: Task, tmp_path: Path
) -> None:
    inputs, targets = task.train
    poisoned = Task(
        # finite targets whose squared error overflows float32: the loss diverges
        name=task.name, train=(inputs, torch.full_like(targets, 1e30)), val=task.val,
        test=task.test, action_in=task.action_in, action_out=task.action_out,
    )  # fmt: skip
    runs = {
        jobs: compare(
            poisoned, "mlp", ["free"], seeds=2, config=CONFIG, out_dir=tmp_path / str(jobs),
            progress=False, jobs=jobs,
        )["runs"]
        for jobs in (1, 2)
    }  # fmt: skip
    assert [(r["strategy"], r["seed"], r["final"]) for r in runs[2]] == [
        ("free", 0, {}),
        ("free", 1, {}),
    ]
    assert [r["error"] for r in runs[2]] == [r["error"].replace("/1/", "/2/") for r in runs[1]]


def test_a_task_that_does_not_pickle_is_refused_before_any_worker_starts(
    task: Task, tmp_path: Path
) -> None:
    local = Task(
        name="local", train=task.train, val=task.val, action_in=task.action_in,
        action_out=task.action_out, loss=lambda outputs, targets: (outputs - targets).abs().mean(),
    )  # fmt: skip
    with pytest.raises(TypeError, match=r"expected a picklable task .* use jobs=1"):
        compare(local, "mlp", ["free"], seeds=2, config=CONFIG, out_dir=tmp_path, jobs=2)
    assert not (tmp_path / RESULTS_JSON).exists()


@pytest.mark.parametrize("jobs", [0, -2, 1.5, True, "2"])
def test_invalid_jobs_are_refused(task: Task, tmp_path: Path, jobs: Any) -> None:
    with pytest.raises(ValueError, match=rf"jobs: expected a positive int .*received {jobs!r}"):
        _compare(task, tmp_path / "out", jobs=jobs)
    assert not (tmp_path / "out").exists()


def test_a_second_comparison_into_a_held_directory_is_refused_and_changes_nothing(
    task: Task, tmp_path: Path
) -> None:
    _compare(task, tmp_path, jobs=1)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with exclusive(tmp_path):
        with pytest.raises(RuntimeError, match=rf"in use by process {os.getpid()} on"):
            _compare(task, tmp_path, jobs=1)
        with pytest.raises(RuntimeError, match="in use by process"):
            run_one(task, "emlp", "strict", seed=0, config=TrainConfig(epochs=1), out_dir=tmp_path)
        result = subprocess.run(
            [sys.executable, "-m", "equirelax", "compare", "gap-dial", "--epochs", "1",
             "--train-size", "24", "--val-size", "8", "--test-size", "8", "--quiet",
             "--strategies", "strict", "--seeds", "1", "--out", str(tmp_path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{tmp_path} is in use by process {os.getpid()}" in result.stderr
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert {p: after.get(p) for p in before} == before
    with exclusive(tmp_path):  # released by the refused processes and by the holder
        pass


def test_a_results_file_cut_short_is_named_and_a_run_result_cut_short_is_trained_again(
    task: Task, tmp_path: Path
) -> None:
    first = _compare(task, tmp_path, jobs=1)
    results = tmp_path / RESULTS_JSON
    results.write_text(results.read_text()[:50])
    with pytest.raises(ValueError, match=re.escape(f"resume: {results} is not valid JSON")):
        _compare(task, tmp_path, jobs=1, resume=True)
    results.unlink()
    run = next(tmp_path.rglob(RUN_RESULT))
    run.write_text(run.read_text()[:30])
    again = _compare(task, tmp_path, jobs=1, resume=True)
    assert [_numbers(r) for r in again["runs"]] == [_numbers(r) for r in first["runs"]]
