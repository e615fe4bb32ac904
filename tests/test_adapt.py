"""The adaptation protocol (Mondal et al. 2023) on the synthetic glyphs: rotated accuracies,
exact C4 invariance of the canonicalized arms, the collapse of the unadapted predictor under
rotation, the identity fraction, the ``cnn`` model, and the ``equirelax adapt`` command."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from equirelax.actions import ImageAction
from equirelax.canonical import Canonicalized, ImageCanonicalizer
from equirelax.engine import TrainConfig
from equirelax.experiments import model_registry
from equirelax.experiments.adapt import (
    ARMS,
    adapt,
    format_adapt_table,
    identity_fraction,
    rotate_test_images,
    rotated_accuracy,
)
from equirelax.experiments.cli import main
from equirelax.groups import CyclicGroup
from equirelax.tasks.images import glyphs_task


@pytest.fixture(scope="module")
def task():
    return glyphs_task(800, 100, 200, group="c4")


@pytest.fixture(scope="module")
def pretrained(task):
    from equirelax.experiments.adapt import pretrain

    torch.manual_seed(0)
    predictor = model_registry.build("cnn", task, hidden=8)
    return pretrain(task, predictor, TrainConfig(epochs=4, batch_size=50, lr=3e-3), progress=False)


def test_rotated_accuracy_is_the_mean_over_every_rotation(task) -> None:
    torch.manual_seed(0)
    model = model_registry.build("cnn", task, hidden=4).eval()
    x, y = task.test
    with torch.no_grad():
        by_hand = [
            float((model(torch.rot90(x, k, dims=(-2, -1))).argmax(-1) == y).float().mean())
            for k in range(4)
        ]
    assert rotated_accuracy(model, task.test, "c4") == pytest.approx(sum(by_hand) / 4)
    assert rotated_accuracy(model, task.test, CyclicGroup(1)) == pytest.approx(by_hand[0])
    with pytest.raises(ValueError, match="group"):
        rotated_accuracy(model, task.test, "so2")


def test_test_images_are_padded_rotated_and_cropped_back() -> None:
    # Quarter turns stay exact pixel permutations; at 45 degrees the corners repeat the image's
    # border (a constant image stays constant), where rotating without padding fills zeros.
    group = CyclicGroup(8)
    images = torch.randn(3, 1, 12, 12, dtype=torch.float64)
    for k in (0, 2, 4, 6):
        g = torch.full((3,), k)
        torch.testing.assert_close(
            rotate_test_images(images, g, group), ImageAction(group)(g, images)
        )
    constant = torch.full((2, 1, 12, 12), 0.7, dtype=torch.float64)
    g = torch.full((2,), 1)
    torch.testing.assert_close(rotate_test_images(constant, g, group), constant)
    assert float(ImageAction(group)(g, constant).min()) < 0.1


def test_identity_fraction_counts_inputs_canonicalized_to_the_identity() -> None:
    group = CyclicGroup(4)
    torch.manual_seed(0)
    model = Canonicalized(ImageCanonicalizer(group, 1), nn.Flatten())
    x = torch.randn(16, 1, 9, 9)
    elements = model.canonicalizer.eval()(x).elements
    assert identity_fraction(model, x) == pytest.approx(float((elements == 0).float().mean()))
    # turning each input by c(x)^-1 maps every one of them to the identity
    canonical = ImageAction(group)(group.inverse(elements), x)
    assert identity_fraction(model, canonical) == 1.0
    with pytest.raises(TypeError, match="model: expected a Canonicalized"):
        identity_fraction(nn.Flatten(), x)


@pytest.mark.slow
def test_adaptation_arms_keep_their_defining_properties(task, pretrained) -> None:
    state = {k: v.clone() for k, v in pretrained.state_dict().items()}
    config = TrainConfig(epochs=2, batch_size=50, lr=1e-3)
    records = adapt(task, pretrained, "c4", seeds=1, config=config, progress=False)
    by_arm = {r["arm"]: r for r in records}
    assert list(by_arm) == list(ARMS)
    for name, value in state.items():  # every arm trained a copy
        assert torch.equal(pretrained.state_dict()[name], value)
    # the unadapted predictor reads upright glyphs and fails on turned ones
    assert by_arm["pretrained"]["upright"] > 0.8
    assert by_arm["pretrained"]["c4"] < by_arm["pretrained"]["upright"] - 0.3
    for arm in ("canon", "canon-prior", "frozen-canon-prior"):  # exactly C4-invariant
        assert by_arm[arm]["c4"] == by_arm[arm]["upright"]
        assert 0.0 <= by_arm[arm]["identity"] <= 1.0
        assert by_arm[arm]["equivariance_error"] < 1e-6
    for arm in ("pretrained", "vanilla", "augment"):
        assert by_arm[arm]["identity"] is None
    assert by_arm["canon-prior"]["c4"] > by_arm["vanilla"]["c4"] + 0.2
    table = format_adapt_table(records)
    assert table.count("\n") == len(ARMS) + 1
    assert "| pretrained |" in table


def test_adapt_rejects_bad_arguments(task, pretrained) -> None:
    with pytest.raises(ValueError, match="arms: expected distinct names"):
        adapt(task, pretrained, arms=("vanilla", "finetune"))
    with pytest.raises(ValueError, match="prior_weight"):
        adapt(task, pretrained, prior_weight=-1.0)
    with pytest.raises(ValueError, match="canonicalizer_lr_scale"):
        adapt(task, pretrained, canonicalizer_lr_scale=0.0)
    with pytest.raises(TypeError, match=r"predictor: expected an nn\.Module"):
        adapt(task, "cnn")
    with pytest.raises(ValueError, match="group"):
        adapt(task, pretrained, group="o3")


def test_cnn_model_builds_for_image_tasks_only(task) -> None:
    model = model_registry.build("cnn", task)
    assert model(task.val[0][:3]).shape == (3, 10)
    with pytest.raises(ValueError, match=r"x: expected images \(B, 1, H, W\)"):
        model(torch.zeros(2, 3, 15, 15))
    data = (torch.zeros(4, 3), torch.zeros(4))
    flat = type(task)("flat", train=data, val=data, action_in=task.action_in)
    with pytest.raises(ValueError, match="task: model 'cnn' needs image inputs"):
        model_registry.build("cnn", flat)


TINY = ["--train-size", "200", "--val-size", "50", "--test-size", "50", "--epochs", "1",
        "--pretrain-epochs", "1", "--model-option", "hidden=4", "--quiet"]  # fmt: skip


def test_adapt_command_pretrains_saves_reloads_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    arms = ["--arms", "pretrained,canon-prior", "--group", "c4"]
    assert main(["adapt", "glyphs", *TINY, *arms, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pretraining cnn" in printed
    assert "| canon-prior |" in printed
    assert (out / "predictor.pt").exists()
    results = json.loads((out / "results.json").read_text())
    assert [r["arm"] for r in results["runs"]] == ["pretrained", "canon-prior"]
    assert results["setup"]["group"] == "C4"
    assert "equirelax adapt glyphs" in (out / "results.md").read_text()
    # a second run loads the saved predictor: the same pretrained accuracy
    again = tmp_path / "again"
    assert main(["adapt", "glyphs", *TINY, "--arms", "pretrained", "--group", "c4",
                 "--predictor", str(out / "predictor.pt"), "--out", str(again)]) == 0  # fmt: skip
    assert "loaded the predictor" in capsys.readouterr().out
    reloaded = json.loads((again / "results.json").read_text())["runs"][0]
    assert reloaded["upright"] == results["runs"][0]["upright"]


def test_adapt_command_errors_name_the_argument(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, message in [
        (["adapt", "nbody"], "task: expected one of glyphs"),
        (["adapt", "glyphs", "--arms", "vanilla,finetune"], "--arms: expected names"),
        (["adapt", "glyphs", "--group", "x8"], "group"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--out", str(tmp_path / "x"), "--quiet"])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    wrong = tmp_path / "wrong.pt"
    torch.save({"weight": torch.zeros(1)}, wrong)
    code = main(["adapt", "glyphs", *TINY, "--predictor", str(wrong), "--out", str(tmp_path / "y")])
    assert code == 2
    assert "--predictor: " in capsys.readouterr().err


def test_adapt_scores_the_model_of_the_best_validation_epoch(task, pretrained, monkeypatch) -> None:
    """Accuracies are the best validation epoch's model's, as the papers report them: the final
    model here is a copy that predicts one class only."""
    import equirelax.experiments.adapt as adapt_module

    real_train = adapt_module.train

    def train_then_spoil(model, *args, **kwargs):
        result = real_train(model, *args, **kwargs)
        spoiled = copy.deepcopy(result.model)
        for parameter in spoiled.parameters():
            parameter.data.zero_()
        return dataclasses.replace(result, model=spoiled, best_model=result.model, best_epoch=0)

    monkeypatch.setattr(adapt_module, "train", train_then_spoil)
    config = TrainConfig(epochs=1, batch_size=50, lr=1e-3)
    (record,) = adapt(task, pretrained, "c4", arms=("vanilla",), seeds=1, config=config,
                      progress=False)  # fmt: skip
    assert record["best_epoch"] == 0
    assert record["upright"] > 0.5  # the spoiled final model scores chance (1 / classes)
