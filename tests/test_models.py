"""The particle models of :mod:`equirelax.models`: E(3) and permutation equivariance of EGNN
(strict and projected), the relaxation breaking it, the MLP baseline, and the registry."""

from __future__ import annotations

import re

import pytest
import torch

import equirelax
from equirelax import metrics
from equirelax.actions import (
    DirectSumAction,
    PermutationAction,
    PointAction,
    TrivialAction,
    VectorAction,
)
from equirelax.experiments import model_registry
from equirelax.groups import O3, Euclidean, SymmetricGroup
from equirelax.models import NBodyEGNN, NBodyMLP
from equirelax.strategies import CR
from equirelax.tasks import Task

E3 = Euclidean(O3())
ACTION_IN = DirectSumAction(PointAction(E3), VectorAction(E3), TrivialAction(E3))
ACTION_OUT = PointAction(E3)
S5 = SymmetricGroup(5)
PERMUTE = PermutationAction(S5)
PERMUTE_IN = DirectSumAction(PERMUTE, PERMUTE, PERMUTE)


def _systems(batch: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64):
    gen = torch.Generator().manual_seed(seed)
    positions = torch.randn(batch, 5, 3, generator=gen, dtype=dtype)
    velocities = 0.5 * torch.randn(batch, 5, 3, generator=gen, dtype=dtype)
    charges = torch.randint(0, 2, (batch, 5, 1), generator=gen).to(dtype) * 2 - 1
    return positions, velocities, charges


def _egnn(seed: int = 0) -> NBodyEGNN:
    torch.manual_seed(seed)
    model = NBodyEGNN(hidden_features=16, num_layers=2).double()
    with torch.no_grad():  # O(1) coordinate weights, so the layers really move the particles
        for layer in model.layers:
            layer.phi_x[-1].weight.normal_(0.0, 0.3)
    return model


def _error(model, action_in=ACTION_IN, action_out=ACTION_OUT) -> float:
    gen = torch.Generator().manual_seed(1)
    return metrics.equivariance_error(
        model, _systems(), action_in, action_out, num_samples=8, generator=gen
    ).max


def test_egnn_is_e3_and_permutation_equivariant_in_float64() -> None:
    model = _egnn()
    x = _systems()
    assert (model(*x) - x[0]).abs().max() > 1e-2  # it predicts a real displacement
    assert _error(model) < 1e-12
    assert _error(model, PERMUTE_IN, PERMUTE) < 1e-12


def test_relaxed_egnn_breaks_symmetry_and_its_projection_restores_it() -> None:
    relaxed = equirelax.relax(_egnn())
    assert len(equirelax.relaxed_layers(relaxed)) == 2
    assert _error(relaxed) > 1e-3
    projected = equirelax.project(relaxed)
    assert not equirelax.relaxed_layers(projected)
    assert _error(projected) < 1e-12
    assert _error(projected, PERMUTE_IN, PERMUTE) < 1e-12


def test_cr_regulariser_runs_on_the_relaxed_egnn() -> None:
    """The layers declare E(3) actions, so CR attaches and its Lie-derivative term is finite,
    positive for raw-coordinate free branches, and has gradients."""
    relaxed = equirelax.relax(_egnn())
    strategy = CR(weight=1.0)
    relaxed = strategy.attach(relaxed, action_in=ACTION_IN, action_out=ACTION_OUT, epochs=4)
    strategy.on_epoch_start(1)
    x = _systems()
    out = relaxed(*x)
    objective = strategy.loss(out.square().mean(), relaxed, x, out)
    penalty = strategy.log()["r_ld"]
    assert torch.isfinite(objective)
    assert penalty > 0
    objective.backward()
    free_grads = [
        p.grad
        for layer in equirelax.relaxed_layers(relaxed).values()
        for p in layer.free.parameters()
    ]
    assert any(g is not None and g.abs().sum() > 0 for g in free_grads)


def test_mlp_baseline_has_no_symmetry_and_checks_its_inputs() -> None:
    torch.manual_seed(0)
    model = NBodyMLP().double()
    assert _error(model) > 1e-3
    with pytest.raises(ValueError, match="positions: expected 5 particles"):
        model(*(t[:, :4] for t in _systems()))
    with pytest.raises(ValueError, match="velocities: expected shape"):
        model(torch.zeros(2, 5, 3), torch.zeros(2, 4, 3), torch.zeros(2, 5, 1))


def test_registry_builds_models_and_rejects_other_tasks() -> None:
    x = _systems(batch=4, dtype=torch.float32)
    task = Task("particles", train=(x, x[0]), val=(x, x[0]), action_in=ACTION_IN,
                action_out=ACTION_OUT)  # fmt: skip
    assert isinstance(model_registry.build("egnn", task, hidden_features=8), NBodyEGNN)
    assert model_registry.build("mlp", task).num_particles == 5
    names = ["canon-mlp", "cnn", "colouring-gnn", "egnn", "emlp", "mlp", "polygon-net", "segnn",
             "set-decoder", "smoke-cnn", "smoke-gcnn", "smoke-rgcnn"]  # fmt: skip
    expected = re.escape(f"model: expected one of {names}")
    with pytest.raises(ValueError, match=expected):
        model_registry.build("resnet", task)
    other = Task("vectors", train=(torch.zeros(4, 3), torch.zeros(4, 3)),
                 val=(torch.zeros(4, 3), torch.zeros(4, 3)),
                 action_in=VectorAction(O3()), action_out=VectorAction(O3()))  # fmt: skip
    with pytest.raises(ValueError, match="task: model 'egnn' needs"):
        model_registry.build("egnn", other)


def test_canonicalized_mlp_is_exactly_e3_equivariant_but_not_permutation_equivariant() -> None:
    x = _systems(batch=4, dtype=torch.float32)
    task = Task("particles", train=(x, x[0]), val=(x, x[0]), action_in=ACTION_IN,
                action_out=ACTION_OUT)  # fmt: skip
    torch.manual_seed(0)
    model = model_registry.build("canon-mlp", task, hidden_features=32).double()
    assert model.prior_weight == 0.0  # trained from scratch: no pose to prefer by default
    output = model(*_systems()).output
    assert (output - _systems()[0]).abs().max() > 1e-2  # it predicts a real displacement
    only_output = equirelax.outputs.TaskOutput(model)
    assert _error(only_output) < 1e-10
    assert _error(only_output, PERMUTE_IN, PERMUTE) > 1e-3  # the flattening orders particles
    with pytest.raises(ValueError, match="inputs: expected several tensors"):
        model.canonicalizer(x[0])
