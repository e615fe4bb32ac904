"""The comparison protocol (SPEC 2.7): model selection by validation. The engine keeps the
evaluated model's weights at the best validation epoch (``best.pt``, atomic, weights_only),
reports the test metric there and at the final epoch, validates every ``eval_every`` epochs,
stops after ``patience`` epochs without improvement, and resumes all of it."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import equirelax
from _toy import InterruptError, interrupt_at, vector_model, vector_target, vector_task
from equirelax.engine import BEST, CHECKPOINT, split_means
from equirelax.losses import mean_squared_error
from equirelax.strategies import CR, Free
from equirelax.tasks import Task

SMALL = {"batch_size": 32, "lr": 3e-2, "progress": False}


def _task_with_test() -> Task:
    base = vector_task(offset=0.3)
    gen = torch.Generator().manual_seed(7)
    x_test = torch.randn(64, 12, generator=gen)
    return Task(
        name=base.name,
        train=base.train,
        val=base.val,
        test=(x_test, vector_target(x_test, 0.3)),
        action_in=base.action_in,
        action_out=base.action_out,
        metric=mean_squared_error,
    )


def _metric(model, split) -> float:
    return split_means(model, split, [mean_squared_error])[0]


def test_reported_test_is_the_metric_of_the_saved_best_weights_at_the_best_val_epoch(tmp_path):
    task = _task_with_test()
    options = {**SMALL, "lr": 0.3, "batch_size": 8}  # large steps: the best epoch is early
    result = equirelax.train(vector_model(), CR(), task, epochs=8, out_dir=tmp_path, **options)
    vals = [record["val"] for record in result.history]
    best_epoch = min(range(len(vals)), key=vals.__getitem__)
    assert best_epoch < 7  # so that the final epoch's test differs from the best epoch's
    assert result.final["best_epoch"] == result.best_epoch == best_epoch
    assert result.final["best_val"] == vals[best_epoch]
    # best.pt holds the evaluated (projected) model's weights and loads with weights_only
    saved = torch.load(tmp_path / BEST, weights_only=True)
    assert saved["epoch"] == best_epoch
    fresh = equirelax.project(vector_model(seed=1))
    fresh.load_state_dict(saved["model"])
    assert _metric(fresh, task.val) == result.final["best_val"]
    assert _metric(fresh, task.test) == result.final["test"] != result.final["test_final"]
    assert not equirelax.relaxed_layers(fresh)
    # the final-epoch figure beside it, from the final evaluated model
    assert result.final["test_final"] == _metric(result.evaluation_model, task.test)
    # val and the curves are the evaluated (projected) model's; the relaxed one is labelled
    assert result.history[-1]["val"] == _metric(result.evaluation_model, task.val)
    assert result.history[-1]["val_relaxed"] == _metric(result.model, task.val)
    # the trained (relaxed) model's test at the evaluated model's best epoch and at the end
    relaxed = vector_model(seed=1)
    relaxed.load_state_dict(saved["relaxed"])
    assert _metric(relaxed, task.test) == result.final["test_relaxed"]
    assert result.final["test_relaxed"] != result.final["test"]
    assert result.final["test_relaxed_final"] == _metric(result.model, task.test)
    assert result.final["test_relaxed_final"] != result.final["test_relaxed"]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_model_evaluated_as_trained_keeps_a_copy_not_the_live_model(tmp_path):
    task = _task_with_test()
    result = equirelax.train(vector_model(), Free(), task, epochs=6, out_dir=tmp_path, **SMALL)
    assert result.best_model is not result.model
    assert _metric(result.best_model, task.test) == result.final["test"]
    if result.best_epoch != 5:  # the live model moved on after the best epoch
        assert result.final["test"] != result.final["test_final"]


def test_eval_every_validates_every_k_epochs_and_after_the_last():
    task = _task_with_test()
    result = equirelax.train(vector_model(), Free(), task, epochs=5, eval_every=2, **SMALL)
    assert [r["epoch"] for r in result.history if "val" in r] == [1, 3, 4]
    assert result.final["best_epoch"] in (1, 3, 4)
    assert len(result.history) == 5


def test_patience_stops_early_and_resume_does_not_continue_a_stopped_run(tmp_path):
    task = _task_with_test()
    options = {**SMALL, "lr": 1e-12, "epochs": 10, "patience": 2}  # val cannot improve
    result = equirelax.train(vector_model(), Free(), task, out_dir=tmp_path, **options)
    assert result.final["best_epoch"] == 0
    assert len(result.history) == 3  # epochs 0, 1, 2: two epochs without improvement
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["stopped"]
    again = equirelax.train(vector_model(), Free(), task, out_dir=tmp_path, resume=True, **options)
    assert len(again.history) == 3
    assert again.final["test"] == result.final["test"]


def test_resume_restores_the_best_model_and_reports_the_same_test(tmp_path):
    task = _task_with_test()
    options = {**SMALL, "epochs": 6, "seed": 2}
    whole = equirelax.train(vector_model(), CR(), task, out_dir=tmp_path / "a", **options)
    with pytest.raises(InterruptError):
        equirelax.train(
            vector_model(), interrupt_at(CR(), 4), task, out_dir=tmp_path / "b", **options
        )
    resumed = equirelax.train(
        vector_model(), CR(), task, out_dir=tmp_path / "b", resume=True, **options
    )
    for key in ("best_epoch", "best_val", "test", "test_final"):
        assert resumed.final[key] == whole.final[key], key


def test_bad_protocol_settings_are_rejected_by_name():
    with pytest.raises(ValueError, match="eval_every"):
        equirelax.TrainConfig(eval_every=0)
    with pytest.raises(ValueError, match="patience"):
        equirelax.TrainConfig(patience=0)
    assert math.isfinite(equirelax.TrainConfig(patience=3).patience)


@pytest.mark.parametrize("strategy", [Free, lambda: CR(epochs=3)], ids=["free", "cr"])
def test_compiled_training_forward_matches_eager(strategy):
    """``compile`` runs the training forward through torch.compile (here the aot_eager backend:
    dynamo and AOT autograd without C++ code generation); the run equals the eager one to float
    tolerance, CR's input-recording hooks included, and the evaluated model stays eager."""
    task = vector_task()
    runs = [
        equirelax.train(vector_model(), strategy(), task, epochs=3, compile=backend, **SMALL)
        for backend in (False, "aot_eager")
    ]
    eager, compiled = ([r["train_loss"] for r in run.history] for run in runs)
    assert compiled == pytest.approx(eager, rel=1e-5)
    assert runs[1].final["val"] == pytest.approx(runs[0].final["val"], rel=1e-5)
    for key in ("r_ld", "r_n"):  # CR's regulariser saw the compiled forward's layer inputs
        if key in runs[0].history[-1]:
            assert runs[1].history[-1][key] == pytest.approx(runs[0].history[-1][key], rel=1e-5)
            assert runs[1].history[-1][key] > 0
    assert not hasattr(runs[1].model, "_orig_mod")
    with pytest.raises(ValueError, match="compile"):
        equirelax.TrainConfig(compile="no-such-backend")


def test_ties_of_the_validation_metric_go_to_the_epoch_of_lower_validation_loss(tmp_path):
    """A discrete metric (a failure rate, an error rate) often ties across epochs; among tied
    epochs the engine keeps the one of lowest validation loss, not the first, and a resumed run
    keeps that rule."""
    task = dataclasses.replace(_task_with_test(), metric=lambda outputs, targets: outputs.sum() * 0)
    options = {**SMALL, "lr": 1e-3, "epochs": 6}
    result = equirelax.train(vector_model(), Free(), task, out_dir=tmp_path / "a", **options)
    losses = [record["val_loss"] for record in result.history]
    assert losses[-1] < losses[0]  # the loss moved while the metric stayed tied at 0
    assert result.final["best_epoch"] == min(range(6), key=losses.__getitem__)
    with pytest.raises(InterruptError):
        equirelax.train(
            vector_model(), interrupt_at(Free(), 3), task, out_dir=tmp_path / "b", **options
        )
    resumed = equirelax.train(
        vector_model(), Free(), task, out_dir=tmp_path / "b", resume=True, **options
    )
    assert resumed.final["best_epoch"] == result.final["best_epoch"]
