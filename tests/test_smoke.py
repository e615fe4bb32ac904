"""The smoke-plume task and its models (Wang, Walters & Yu 2022), without PhiFlow: the task is
built from small synthetic velocity frames; the generator's own checks run only where PhiFlow
is installed."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from equirelax import project
from equirelax.actions import ImageAction
from equirelax.engine import TrainConfig
from equirelax.experiments import model_registry
from equirelax.experiments.cli import main
from equirelax.experiments.compare import run_one
from equirelax.experiments.task_registry import get
from equirelax.groups import CyclicGroup
from equirelax.metrics import equivariance_error
from equirelax.models import SmokeCNN, SmokeGroupCNN, SmokeRelaxedGroupCNN
from equirelax.outputs import PenalizedOutput, split_output
from equirelax.tasks.smoke import (
    Plume,
    plumes,
    rollout,
    simulate_plumes,
    smoke_task,
    smoke_task_from_frames,
)

F64 = torch.float64
C4 = CyclicGroup(4)
FIELDS = ImageAction(C4, fibre="vector")
HAS_PHIFLOW = importlib.util.find_spec("phi") is not None


def _frames(simulations: int = 4, steps: int = 170, size: int = 8, seed: int = 0) -> torch.Tensor:
    """Smooth synthetic velocity frames ``(S, steps, 2, size, size)``: drifting waves."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(steps, dtype=torch.float32).reshape(1, steps, 1, 1, 1) / 10
    phase = torch.rand(simulations, 1, 2, 1, 1, generator=g) * 6.28
    grid = torch.linspace(-1, 1, size)
    wave = torch.sin(3 * grid.reshape(1, 1, 1, 1, size) + t + phase)
    return wave * torch.cos(2 * grid.reshape(1, 1, 1, size, 1) - t)


def test_plumes_dial_between_the_papers_strengths_and_exact_symmetry() -> None:
    paper = plumes(9, breaking=1.0)
    assert len(paper) == 36
    for k, plume in enumerate(paper, start=1):  # edge (k - 1) mod 4, strength k * base
        assert plume.edge == (k - 1) % 4
        expected = 0.01 * k * (1.1 if plume.edge == 2 else 1.0)
        assert plume.strength == pytest.approx(expected)
    exact = plumes(3, breaking=0.0)
    by_edge = {e: sorted(p.strength for p in exact if p.edge == e) for e in range(4)}
    assert by_edge[0] == by_edge[1] == by_edge[2] == by_edge[3]  # every edge, same strengths
    assert len({p.strength for p in paper}) == 36  # the paper's: no two alike


def test_task_windows_splits_and_shapes() -> None:
    frames = _frames(simulations=4, steps=170)
    task = smoke_task_from_frames(frames, domain=[3])
    x, y = task.train
    # 3 training simulations x round(160 * 170 / 310) starts, 10 input frames, 1 target
    assert x.shape == (3 * 88, 10, 2, 8, 8)
    assert y.shape == (3 * 88, 2, 8, 8)
    assert task.val[1].shape[1] == 6
    assert task.test[1].shape[1] == 20
    domain_x, domain_y = task.test_splits["domain"]
    assert domain_x.shape[0] == 55
    assert domain_y.shape[1:] == (20, 2, 8, 8)
    # window s of simulation 0 is frames 2 + s .. 2 + s + 9, its target frame 2 + s + 10
    assert torch.equal(x[5], frames[0, 7:17])
    assert torch.equal(y[5], frames[0, 17])
    assert torch.equal(domain_y[0], frames[3, 12:32])
    assert task.metric_name == "rmse"
    assert task.predict is rollout


def test_rollout_feeds_predictions_back() -> None:
    def shift(window: torch.Tensor) -> torch.Tensor:  # predicts the mean of the last 2 frames
        return window[:, -2:].mean(dim=1)

    x = torch.randn(3, 10, 2, 4, 4)
    out = rollout(shift, x, torch.zeros(3, 4, 2, 4, 4))
    assert out.shape == (3, 4, 2, 4, 4)
    assert torch.allclose(out[:, 0], x[:, -2:].mean(1))
    assert torch.allclose(out[:, 1], (x[:, -1] + out[:, 0]) / 2)
    assert torch.allclose(out[:, 2], (out[:, 0] + out[:, 1]) / 2)
    assert torch.equal(rollout(shift, x, torch.zeros(3, 2, 4, 4)), shift(x))


@pytest.mark.parametrize("model_type", [SmokeGroupCNN, SmokeRelaxedGroupCNN])
def test_group_cnn_is_c4_equivariant_on_vector_fields(model_type: type) -> None:
    torch.manual_seed(0)
    model = model_type(hidden=4, layers=3).to(F64)
    x = torch.randn(3, 10, 2, 9, 9, dtype=F64)

    def predict(v: torch.Tensor) -> torch.Tensor:
        return split_output(model(v))[0]

    for k in range(4):
        g = torch.tensor([k])
        assert torch.allclose(predict(FIELDS(g, x)), FIELDS(g, predict(x)), atol=1e-12)
    # and the rollout of an equivariant one-step model is equivariant
    horizon = torch.zeros(3, 5, 2, 9, 9, dtype=F64)
    g = torch.tensor([1])
    assert torch.allclose(
        rollout(predict, FIELDS(g, x), horizon), FIELDS(g, rollout(predict, x, horizon)), atol=1e-12
    )


def test_cnn_is_not_equivariant() -> None:
    torch.manual_seed(0)
    model = SmokeCNN(hidden=8, layers=3).to(F64)
    x = torch.randn(4, 10, 2, 9, 9, dtype=F64)
    assert equivariance_error(model, x, FIELDS, FIELDS, num_samples=4).mean > 0.1


def test_relaxed_group_cnn_breaks_symmetry_when_weights_differ_and_projects_back() -> None:
    torch.manual_seed(0)
    model = SmokeRelaxedGroupCNN(hidden=4, layers=3, alpha=0.5).to(F64).requires_grad_(False)
    x = torch.randn(4, 10, 2, 9, 9, dtype=F64)
    out = model(x)
    assert isinstance(out, PenalizedOutput)
    assert float(out.penalty) == 0.0
    assert float(model.level()) == 0.0
    with torch.no_grad():
        weights = model.layers[1].relaxed_weights
        weights.add_(0.3 * torch.randn_like(weights))

    def predict(v: torch.Tensor) -> torch.Tensor:
        return split_output(model(v))[0]

    assert equivariance_error(predict, x, FIELDS, FIELDS, num_samples=4).mean > 1e-3
    assert float(model(x).penalty) > 0
    assert float(model.level()) > 0
    projected = project(model)
    assert float(projected.level()) == 0.0
    assert float(projected(x).penalty) == 0.0
    for k in range(4):
        g = torch.tensor([k])
        moved = split_output(projected(FIELDS(g, x)))[0]
        assert torch.allclose(moved, FIELDS(g, split_output(projected(x))[0]), atol=1e-12)


def test_models_refuse_wrong_inputs_with_the_argument_named() -> None:
    with pytest.raises(ValueError, match="x: expected square velocity windows"):
        SmokeGroupCNN(hidden=2, layers=2)(torch.randn(2, 10, 3, 8, 8))
    with pytest.raises(ValueError, match="H = W >= 3"):
        SmokeCNN(hidden=2, layers=2)(torch.randn(2, 10, 2, 2, 2))
    with pytest.raises(ValueError, match="kernel_size: expected an odd size"):
        SmokeGroupCNN(kernel_size=4)
    task = smoke_task_from_frames(_frames(), domain=[0])
    inertia = get("inertia", train_size=4, val_size=4, test_size=0)
    with pytest.raises(ValueError, match="task: model SmokeCNN needs velocity windows"):
        model_registry.build("smoke-cnn", inertia)
    assert isinstance(
        model_registry.build("smoke-rgcnn", task, hidden=2, layers=2), SmokeRelaxedGroupCNN
    )


def test_task_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="steps: expected at least 158 frames"):
        smoke_task_from_frames(_frames(steps=120), domain=[0])
    with pytest.raises(ValueError, match="frames: expected square velocity frames"):
        smoke_task_from_frames(torch.zeros(2, 170, 3, 8, 8), domain=[0])
    with pytest.raises(ValueError, match="domain: expected some but not all"):
        smoke_task_from_frames(_frames(simulations=2), domain=[0, 1])
    with pytest.raises(ValueError, match="breaking: expected a number in \\[0, 1\\]"):
        plumes(2, breaking=1.5)
    with pytest.raises(ValueError, match="resolution"):
        smoke_task(resolution=4)
    with pytest.raises(ValueError, match="simulations: expected a non-empty sequence"):
        simulate_plumes([Plume(5, 0.1)], resolution=16, steps=2)


def _hide_phiflow(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("phi", "phi.torch", "phiml"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ModuleNotFoundError


def test_missing_phiflow_names_the_install_command(tmp_path, monkeypatch, capsys) -> None:
    _hide_phiflow(monkeypatch)
    with pytest.raises(ModuleNotFoundError, match=r'pip install "equirelax\[flow\]"'):
        smoke_task(resolution=16, steps=170, per_edge=1, cache_dir=tmp_path)
    monkeypatch.setenv("EQUIRELAX_CACHE", str(tmp_path))
    with pytest.raises(SystemExit) as refused:
        main(["compare", "smoke", "--epochs", "1", "--out", str(tmp_path / "out")])
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("equirelax compare: error: smoke: generating the smoke-plume data")
    assert "Traceback" not in error


@pytest.mark.skipif(not HAS_PHIFLOW, reason="needs PhiFlow (pip install 'equirelax[flow]')")
def test_phiflow_plumes_are_c4_images_of_one_another_at_zero_breaking() -> None:
    """With the same strength on every edge, the four simulations are rotations of one another
    (measured: identical in float32): the data's symmetry is exact at breaking = 0."""
    frames = torch.from_numpy(simulate_plumes([Plume(e, 0.2) for e in range(4)], 16, steps=8))
    scale = frames[0].abs().max()
    for edge in range(1, 4):
        moved = FIELDS(torch.tensor([edge]), frames[0:1])[0]
        assert (moved - frames[edge]).abs().max() < 1e-5 * scale


@pytest.mark.slow
def test_quick_training_on_synthetic_frames_reports_both_test_splits(tmp_path) -> None:
    task = smoke_task_from_frames(_frames(simulations=3, steps=170), domain=[2])
    config = TrainConfig(epochs=2, batch_size=64, lr_schedule="exponential")
    record = run_one(
        task,
        "smoke-rgcnn",
        "free",
        seed=0,
        config=config,
        out_dir=tmp_path,
        progress=False,
        model_options={"hidden": 2, "layers": 2},
    )
    final = record["final"]
    for key in ("test", "test_final", "test_domain", "test_domain_final"):
        assert key in final
        assert final[key] > 0


def test_relaxed_group_cnn_levels_are_read_like_relaxed_layers() -> None:
    from equirelax.strategies.base import levels

    model = SmokeRelaxedGroupCNN(hidden=2, layers=3)
    assert levels(model) == [0.0, 0.0, 0.0]
    with torch.no_grad():
        model.layers[2].relaxed_weights[0, 1] += 0.25
    assert levels(model)[:2] == [0.0, 0.0]
    assert levels(model)[2] == pytest.approx(float(model.layers[2].level()))
    assert levels(model)[2] > 0
    assert levels(project(model)) == []
