"""Continuing a finished run to more epochs, and refusing every other change on resume.

A run at a constant learning rate whose strategy does not plan over its length (every strategy
but CR) may be continued from its checkpoint to more epochs: the continued run trains the same
weights as one planned at the longer length from the start. Any other change of the training
settings on resume (the learning rate, the batch size, fewer epochs, more epochs of a cosine
schedule or of CR) is refused with a message naming the setting, in ``train`` and in
``compare``."""

from __future__ import annotations

import json

import pytest
import torch

import equirelax
from _toy import vector_model, vector_task
from equirelax.engine import METRICS, TrainConfig
from equirelax.experiments.compare import RESULTS_JSON, RUN_RESULT, compare
from equirelax.strategies import CR, Free
from equirelax.tasks.synthetic import gap_dial_task

SMALL = {"batch_size": 32, "lr": 3e-2, "progress": False}


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_finished_run_continued_to_more_epochs_equals_the_longer_run(tmp_path):
    task = vector_task(offset=0.3)
    straight = equirelax.train(vector_model(), Free(), task, epochs=5, **SMALL)
    equirelax.train(vector_model(), Free(), task, epochs=3, out_dir=tmp_path, **SMALL)
    continued = equirelax.train(
        vector_model(), Free(), task, epochs=5, out_dir=tmp_path, resume=True, **SMALL
    )
    assert [r["epoch"] for r in continued.history] == [0, 1, 2, 3, 4]
    for key, value in _weights(straight.model).items():
        torch.testing.assert_close(continued.model.state_dict()[key], value, rtol=0, atol=0)
    assert continued.history[-1]["val"] == straight.history[-1]["val"]
    lines = (tmp_path / METRICS).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("strategy", "changes", "message"),
    [
        (Free, {"lr": 0.5}, r"lr=0\.03 -> 0\.5"),
        (Free, {"batch_size": 16}, r"batch_size=32 -> 16"),
        (Free, {"epochs": 2}, r"epochs=3 -> 2"),
        (Free, {"epochs": 6, "lr_schedule": "cosine"}, r"lr_schedule='constant' -> 'cosine'"),
        (CR, {"epochs": 6}, r"planned 3 epochs and cr's schedule"),
    ],
)
def test_resume_refuses_changed_settings(tmp_path, strategy, changes, message):
    task = vector_task(offset=0.3)
    equirelax.train(vector_model(), strategy(), task, epochs=3, out_dir=tmp_path, **SMALL)
    with pytest.raises(ValueError, match=message):
        equirelax.train(
            vector_model(), strategy(), task, out_dir=tmp_path, resume=True,
            **{**SMALL, "epochs": 3, **changes},
        )  # fmt: skip


def test_resume_refuses_more_epochs_of_a_cosine_schedule(tmp_path):
    task = vector_task(offset=0.3)
    options = {**SMALL, "lr_schedule": "cosine"}
    equirelax.train(vector_model(), Free(), task, epochs=3, out_dir=tmp_path, **options)
    with pytest.raises(ValueError, match="planned 3 epochs and the cosine learning rate"):
        equirelax.train(
            vector_model(), Free(), task, epochs=4, out_dir=tmp_path, resume=True, **options
        )


def test_compare_continues_its_runs_to_more_epochs_and_refuses_cr(tmp_path):
    task = gap_dial_task(train_size=32, val_size=16, test_size=16, delta=0.5)
    options = {"seeds": 1, "progress": False, "model_options": {"num_layers": 1}, "jobs": 1}
    short, longer = TrainConfig(epochs=2, batch_size=8), TrainConfig(epochs=3, batch_size=8)
    compare(task, "emlp", ["free"], config=short, out_dir=tmp_path / "a", **options)
    result = compare(
        task, "emlp", ["free"], config=longer, out_dir=tmp_path / "a", resume=True, **options
    )
    straight = compare(task, "emlp", ["free"], config=longer, out_dir=tmp_path / "b", **options)
    run = json.loads((tmp_path / "a" / "runs" / "free" / "seed0" / RUN_RESULT).read_text())
    assert run["config"]["epochs"] == 3
    assert run["final"]["epochs_run"] == 3
    assert result["runs"][0]["final"]["test"] == straight["runs"][0]["final"]["test"]
    recorded = json.loads((tmp_path / "a" / RESULTS_JSON).read_text())
    assert recorded["setup"]["config"]["epochs"] == 3

    compare(task, "emlp", ["cr"], config=short, out_dir=tmp_path / "c", **options)
    with pytest.raises(ValueError, match="cr's schedule"):
        compare(task, "emlp", ["cr"], config=longer, out_dir=tmp_path / "c", resume=True,
                **options)  # fmt: skip
