"""The strict, noise and relaxed arms of the symmetry-breaking models, the runner and the CLI
(Kaba & Ravanbakhsh 2023, arXiv:2312.09016)."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from equirelax.actions import DirectSumAction, PointAction, TrivialAction, VectorAction
from equirelax.breaking import is_relaxed_equivariant, keeps_stabiliser
from equirelax.engine import TrainConfig
from equirelax.engine.evaluation import split_means
from equirelax.experiments import model_registry
from equirelax.experiments.breaking import compare_breaking, format_breaking_table, symmetry_checks
from equirelax.experiments.cli import main
from equirelax.groups import O2
from equirelax.metrics import equivariance_error
from equirelax.models.breaking import ARMS, ColouringGNN, PolygonPointer, SetDecoder
from equirelax.tasks.breaking import bipartite_task, polygon_task, set_decoding_task

TASKS = {
    "polygon": (lambda: polygon_task(64, 16, 32), "polygon-net"),
    "bipartite": (
        lambda: bipartite_task(64, 16, 32, families=("cycle", "cube", "ladder", "path")),
        "colouring-gnn",
    ),
    "set-decoding": (lambda: set_decoding_task(64, 16, 32), "set-decoder"),
}


def _float64(inputs):
    return tuple(p.double() for p in inputs) if isinstance(inputs, tuple) else inputs.double()


def _checks(task, model, count: int = 6):
    spec = task.extra["relaxed_check"]
    inputs = task.test[0]
    x = _float64(tuple(p[:count] for p in inputs) if isinstance(inputs, tuple) else inputs[:count])
    if spec.get("prepare"):
        x = spec["prepare"](x)
    stabilisers = spec["stabilisers"](x) if spec.get("stabilisers") else None
    group = spec.get("elements")
    options = {"atol": 1e-6, "as_set": spec.get("as_set", False), "stabilisers": stabilisers}
    net = copy.deepcopy(model).double().eval()
    report = is_relaxed_equivariant(
        net, x, spec["action_in"].group if group is None else group, spec["action_in"],
        spec["action_out"], **options,
    )  # fmt: skip
    kept = keeps_stabiliser(net, x, spec["action_in"], spec["action_out"], **options)
    return report, kept


@pytest.mark.parametrize("name", list(TASKS))
def test_strict_models_keep_every_stabiliser_so_they_cannot_answer(name: str) -> None:
    """The equivariant limit, checked directly: every element fixing a symmetric input fixes
    the strict model's output, and the output is exactly equivariant."""
    build, model_name = TASKS[name]
    task = build()
    torch.manual_seed(0)
    model = model_registry.build(model_name, task, breaking="strict")
    report, kept = _checks(task, model)
    assert bool((report.stabiliser_orders > 1).all())  # every checked input is symmetric
    assert report.equivariant
    assert bool(kept.all())
    net = model.double().eval()
    x = _float64(task.test[0])
    failure = task.metric(net(*x) if isinstance(x, tuple) else net(x), task.test[1])
    assert float(failure) == 1.0


@pytest.mark.parametrize("name", list(TASKS))
@pytest.mark.parametrize("tie_break", ["first", "random"])
def test_relaxed_models_pass_the_checker_and_break_the_symmetry(name: str, tie_break: str) -> None:
    build, model_name = TASKS[name]
    task = build()
    torch.manual_seed(0)
    model = model_registry.build(model_name, task, breaking="relaxed", tie_break=tie_break)
    report, kept = _checks(task, model)
    assert report.holds, report.violations[:3]
    assert not bool(kept.any())
    # The polygon group turns points without reordering the rows, so breaking ties by the lowest
    # row index makes the same choice on x and g x: exactly equivariant there.
    assert report.equivariant == (name == "polygon" and tie_break == "first")


@pytest.mark.parametrize("name", list(TASKS))
def test_noise_injection_is_not_relaxed_equivariant_pointwise(name: str) -> None:
    build, model_name = TASKS[name]
    task = build()
    torch.manual_seed(0)
    report, _ = _checks(task, model_registry.build(model_name, task, breaking="noise"))
    assert not report.holds


def test_strict_polygon_model_is_o2_and_permutation_equivariant() -> None:
    torch.manual_seed(0)
    model = PolygonPointer(5, "strict").double()
    generator = torch.Generator().manual_seed(1)
    points = torch.randn(8, 5, 2, generator=generator, dtype=torch.float64)
    mask = (torch.rand(8, 5, generator=generator) > 0.3).double()
    action = DirectSumAction(PointAction(O2()), TrivialAction(O2()))
    error = equivariance_error(model, (points, mask), action, VectorAction(O2()), num_samples=8,
                               generator=generator)  # fmt: skip
    assert error.max < 1e-12
    perm = torch.randperm(5, generator=generator)
    assert torch.allclose(model(points[:, perm], mask[:, perm]), model(points, mask), atol=1e-12)


def test_strict_graph_and_set_models_are_permutation_equivariant() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(2)
    upper = (torch.rand(4, 7, 7, generator=generator) < 0.4).double().triu(1)
    adjacency = upper + upper.transpose(1, 2)
    gnn = ColouringGNN("strict").double()
    perm = torch.randperm(7, generator=generator)
    assert torch.allclose(gnn(adjacency[:, perm][:, :, perm]), gnn(adjacency)[:, perm], atol=1e-10)
    decoder = SetDecoder(4, 6, "strict").double()
    slots = torch.randn(3, 4, 6, generator=generator, dtype=torch.float64)
    order = torch.randperm(4, generator=generator)
    assert torch.allclose(decoder(slots[:, order]), decoder(slots)[:, order], atol=1e-12)


def test_model_argument_errors() -> None:
    with pytest.raises(ValueError, match="breaking: expected one of"):
        PolygonPointer(6, "soft")
    with pytest.raises(ValueError, match="points, mask: expected"):
        PolygonPointer()(torch.zeros(2, 3, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="slots: expected"):
        SetDecoder(3, 8)(torch.zeros(2, 4, 8))
    with pytest.raises(ValueError, match="task: model 'colouring-gnn' needs"):
        model_registry.build("colouring-gnn", polygon_task(8, 4, 4))


@pytest.mark.slow
def test_compare_breaking_relaxed_solves_what_strict_cannot(tmp_path) -> None:
    """A short run of every arm on each task: the strict arm fails every symmetric input, the
    relaxed arm solves (almost) all of them and passes the checker."""
    config = TrainConfig(epochs=20, batch_size=25, lr=3e-3, lr_schedule="cosine")
    for name, build, model in (
        ("polygon", lambda: polygon_task(500, 100, 200), "polygon-net"),
        ("bipartite", lambda: bipartite_task(500, 100, 200, families=("cycle", "ladder")),
         "colouring-gnn"),
        ("set-decoding", lambda: set_decoding_task(500, 100, 200), "set-decoder"),
    ):  # fmt: skip
        records = compare_breaking(
            build(), model, ("strict", "relaxed"), seeds=1, config=config, check_samples=8,
            out_dir=tmp_path / name, progress=False,
        )  # fmt: skip
        strict, relaxed = records
        assert strict["failure"] == 1.0, name
        assert strict["keeps_stabiliser"] == 1.0
        assert relaxed["failure"] < 0.05, (name, relaxed)
        assert relaxed["relaxed_equivariant"] == 1.0
        assert relaxed["keeps_stabiliser"] == 0.0
        assert relaxed["loss"] < strict["loss"]
        saved = json.loads((tmp_path / name / "results.json").read_text())
        assert [r["arm"] for r in saved["runs"]] == ["strict", "relaxed"]
    table = format_breaking_table(records)
    assert "| relaxed |" in table


def test_symmetry_checks_need_the_task_spec() -> None:
    task = polygon_task(8, 4, 4)
    task.extra.pop("relaxed_check")
    with pytest.raises(ValueError, match="relaxed_check"):
        symmetry_checks(PolygonPointer(), task, task.test[0])


def test_compare_breaking_rejects_unknown_arms() -> None:
    with pytest.raises(ValueError, match="arms: expected distinct names"):
        compare_breaking(polygon_task(8, 4, 4), "polygon-net", ("strict", "soft"))
    assert set(ARMS) == {"strict", "noise", "relaxed"}


def test_cli_break_writes_the_table(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["break", "set-decoding", "--seeds", "1", "--epochs", "1", "--train-size", "50",
            "--val-size", "10", "--test-size", "20", "--check-samples", "4", "--quiet"]  # fmt: skip
    assert main([*argv, "--out", str(out)]) == 0
    assert "| relaxed |" in (out / "results.md").read_text()
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 3
    with pytest.raises(SystemExit):
        main(["break", "nbody", "--quiet"])
    assert "task: expected one of polygon" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["break", "polygon", "--arms", "strict,soft", "--quiet"])


def test_compare_breaking_measures_the_model_of_the_best_validation_epoch(monkeypatch) -> None:
    """The record's loss is the best validation epoch's model's; the final model here is a
    copy with every weight zeroed."""
    import equirelax.experiments.breaking as breaking_module

    real_train, kept = breaking_module.train, []

    def train_then_spoil(model, *args, **kwargs):
        result = real_train(model, *args, **kwargs)
        spoiled = copy.deepcopy(result.model)
        for parameter in spoiled.parameters():
            parameter.data.zero_()
        kept.append(result.model)
        return dataclasses.replace(
            result, model=spoiled, evaluation_model=spoiled, best_model=result.model, best_epoch=0
        )

    monkeypatch.setattr(breaking_module, "train", train_then_spoil)
    task = polygon_task(40, 20, 20)
    config = TrainConfig(epochs=1, batch_size=20)
    (record,) = compare_breaking(task, "polygon-net", ("relaxed",), seeds=1, config=config,
                                 check_samples=4, progress=False)  # fmt: skip
    torch.manual_seed(0)
    loss, _ = split_means(kept[0], task.test, [task.loss, task.metric], config.eval_batch_size)
    assert record["best_epoch"] == 0
    assert record["loss"] == pytest.approx(loss)
