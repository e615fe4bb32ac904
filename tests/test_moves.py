"""Relaxed models and strategies survive moves, casts, copies and state dicts after ``attach``.

Every strategy of :data:`equirelax.strategies.STRATEGIES` (ACE in its three modes, and with its
other level rule and a spectral norm bound) is attached to the toy relaxed E-MLP, then the
model is cast (float64, float16, the "meta" device), deep-copied or pickled together with its
strategy, and trained for one step as the engine trains it. Free branches exist (or are held
by the optimiser) from ``relax`` on, and a trained model's state dict loads into a freshly
built ``relax()`` copy.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import equirelax
from _toy import vector_model, vector_task
from equirelax.free_branches import DenseFreeBranch, LazyDenseFreeBranch
from equirelax.strategies import ACE, RECM, STRATEGIES, Strategy

TASK = vector_task()

CASES = {
    **{name: (name, {}) for name in STRATEGIES if name != "ace"},
    "ace-equality": ("ace", {"mode": "equality"}),
    "ace-inequality": ("ace", {"mode": "inequality"}),
    "ace-resilient": ("ace", {"mode": "resilient"}),
    "ace-gradient-rule": ("ace", {"level_rule": "gradient"}),  # levels: buffers with grad
    "ace-spectral": ("ace", {"norm_bound": "spectral"}),  # parametrised free branches
}


def attached(case: str, model: nn.Module | None = None) -> tuple[nn.Module, Strategy, tuple]:
    """The toy relaxed model with the case's strategy attached, and the data to train on."""
    name, options = CASES[case]
    strategy = STRATEGIES[name](**options)
    model = strategy.attach(
        vector_model() if model is None else model,
        action_in=TASK.action_in,
        action_out=TASK.action_out,
        epochs=2,
        generator=torch.Generator().manual_seed(0),
        loss_fn=TASK.loss,
    )
    return model, strategy, strategy.split_training_data(*TASK.train)


def steps(strategy: Strategy) -> int:
    """One step, or as many as RECM takes to run its first probe (its rule's step)."""
    return strategy.every if isinstance(strategy, RECM) else 1


def train_steps(
    model: nn.Module,
    strategy: Strategy,
    data: tuple,
    count: int,
    optimiser_type: type[torch.optim.Optimizer] = torch.optim.Adam,
) -> list[torch.Tensor]:
    """``count`` steps in the engine's hook order (batch transform, task loss, the strategy's
    objective, backward, the primal step, the strategy's step) with an optimiser built now
    (Adam, as the engine's); the objectives."""
    like = next(model.parameters())
    x, y = (part.to(device=like.device, dtype=like.dtype) for part in data)
    optimiser = optimiser_type([*model.parameters(), *strategy.parameters()], lr=1e-3)
    objectives = []
    strategy.on_epoch_start(0)
    for _ in range(count):
        inputs, targets = strategy.transform_batch(x, y)
        outputs = model(inputs)
        objective = strategy.loss(TASK.loss(outputs, targets), model, inputs, outputs)
        optimiser.zero_grad()
        objective.backward()
        optimiser.step()
        strategy.after_step()
        objectives.append(objective.detach())
    return objectives


def strategy_tensors(strategy: Strategy) -> list[torch.Tensor]:
    """What the strategy keeps beside the model: ACE's multipliers and slacks."""
    if not isinstance(strategy, ACE):
        return []
    assert strategy.problem is not None
    slacks = [strategy.slacks] if strategy.slacks is not None else []
    return [*strategy.problem.dual_parameters(), *slacks]


def check_levels_trained_as_before(model: nn.Module, strategy: Strategy) -> None:
    """ACE's levels stay leaves that its rule steps: parameters of the model (the optimiser
    rule) or buffers that require grad (the gradient rule)."""
    if not isinstance(strategy, ACE):
        return
    for layer in equirelax.relaxed_layers(model).values():
        assert layer.level.is_leaf
        assert layer.level.requires_grad
        assert layer.level_is_learnable == (strategy.level_rule == "optimizer")


def cast_double(model: nn.Module, strategy: Strategy) -> tuple[nn.Module, Strategy]:
    return model.double(), strategy


def deep_copied(model: nn.Module, strategy: Strategy) -> tuple[nn.Module, Strategy]:
    return copy.deepcopy((model, strategy))


def pickled(model: nn.Module, strategy: Strategy) -> tuple[nn.Module, Strategy]:
    buffer = io.BytesIO()
    torch.save((model, strategy), buffer)  # pickle
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


MOVES = {"double": cast_double, "deepcopy": deep_copied, "pickle": pickled}


@pytest.mark.parametrize("move", MOVES)
@pytest.mark.parametrize("case", CASES)
def test_a_strategy_trains_on_after_its_model_is_cast_copied_or_pickled(case, move):
    model, strategy, data = attached(case)
    train_steps(model, strategy, data, 1)  # optimiser and dual states exist before the move
    before = [p.detach().clone() for p in model.parameters()]
    moved, strategy = MOVES[move](model, strategy)
    assert strategy.model is moved  # the strategy follows the copy, not the original
    objectives = train_steps(moved, strategy, data, steps(strategy))
    dtype = torch.float64 if move == "double" else torch.float32
    assert all(torch.isfinite(o).all() and o.dtype == dtype for o in objectives)
    for tensor in [*moved.parameters(), *moved.buffers(), *strategy_tensors(strategy)]:
        if tensor.is_floating_point():
            assert tensor.dtype == dtype
            assert torch.isfinite(tensor).all()
    check_levels_trained_as_before(moved, strategy)
    if isinstance(strategy, RECM):
        assert strategy.probes == 1
    if move != "double":  # the copy trained; the original did not move
        for old, new in zip(before, model.parameters(), strict=True):
            torch.testing.assert_close(old, new.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES)
def test_a_strategy_follows_its_model_to_half_precision(case):
    model, strategy, data = attached(case)
    model = model.half()
    # SGD: Adam's eps (1e-8) is 0 in float16, so Adam divides 0 by 0 where a gradient is 0
    objectives = train_steps(model, strategy, data, steps(strategy), torch.optim.SGD)
    assert all(torch.isfinite(o).all() and o.dtype == torch.float16 for o in objectives)
    for tensor in [*model.parameters(), *strategy_tensors(strategy)]:
        assert tensor.dtype == torch.float16
    check_levels_trained_as_before(model, strategy)


# rpp and penalty record a float of their penalty at every step, which meta tensors do not have
META_CASES = [case for case in CASES if CASES[case][0] not in ("rpp", "penalty")]


@pytest.mark.parametrize("case", META_CASES)
def test_a_strategy_follows_its_model_to_another_device(case):
    model, strategy, data = attached(case)
    model = model.to("meta")
    objectives = train_steps(model, strategy, data, 1)
    assert all(o.device.type == "meta" for o in objectives)
    for tensor in [*model.parameters(), *model.buffers(), *strategy_tensors(strategy)]:
        assert tensor.device.type == "meta"
    check_levels_trained_as_before(model, strategy)


@pytest.mark.parametrize("case", ["ace-equality", "ace-gradient-rule"])
def test_a_float64_ace_model_projects_to_an_equivariant_model(case):
    model, strategy, data = attached(case)
    model = model.double()  # then project() deep-copies the cast model
    train_steps(model, strategy, data, 1)
    x = data[0][:16].double()
    assert equirelax.equivariance_error(model, x, TASK.action_in, TASK.action_out).mean > 1e-3
    projected = strategy.evaluation_model(model)
    assert not equirelax.relaxed_layers(projected)
    equirelax.assert_equivariant(projected, x, TASK.action_in, TASK.action_out, atol=1e-12)


def test_an_ace_strategy_copied_between_its_loss_and_its_step_trains_on():
    model, strategy, data = attached("ace-equality")
    x, y = data
    outputs = model(x)
    strategy.loss(TASK.loss(outputs, y), model, x, outputs)  # a step in flight
    model, strategy = copy.deepcopy((model, strategy))  # leaves that step out
    objectives = train_steps(model, strategy, data, 1)
    assert torch.isfinite(objectives[0])


def test_a_model_cast_before_the_optimiser_is_built_gives_it_the_moved_slacks():
    model, strategy, data = attached("ace-resilient")
    slacks = strategy.slacks
    model = model.double()
    (given,) = strategy.parameters()
    assert given is slacks  # moved in place
    assert given.dtype == torch.float64
    train_steps(model, strategy, data, 1)
    assert strategy.slacks is slacks


# ---------------------------------------------------------------------- no lazy trap


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def one_step(model: nn.Module, optimiser: torch.optim.Optimizer, x: torch.Tensor) -> None:
    optimiser.zero_grad()
    model(x).pow(2).mean().backward()
    optimiser.step()


def test_an_optimiser_built_right_after_relax_trains_every_free_branch():
    model = equirelax.relax(mlp(), select=nn.Linear)  # no example_input
    layers = equirelax.relaxed_layers(model).values()
    assert all(type(layer.free) is DenseFreeBranch for layer in layers)  # shapes stated
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    free = [p for layer in layers for p in layer.free.parameters()]
    held = {id(p) for group in optimiser.param_groups for p in group["params"]}
    assert free
    assert all(id(p) in held for p in free)
    before = [p.detach().clone() for p in free]
    one_step(model, optimiser, torch.randn(16, 4))
    assert all(not torch.equal(b, p.detach()) for b, p in zip(before, free, strict=True))


def test_a_lazy_free_branch_is_held_by_an_optimiser_built_before_its_first_call():
    conv = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh())
    model = equirelax.relax(conv, select=nn.Conv1d, feature_dims=2)  # shapes: from the input
    layer = equirelax.relaxed_layers(model)["0"]
    assert layer.free_is_lazy
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model = model.double()  # a cast before the first call: the lazy weights follow it
    free = list(layer.free.parameters())
    x = torch.randn(4, 2, 10, dtype=torch.float64)
    with torch.no_grad():
        model(x)  # materialised in place: the optimiser's objects get their values
    assert type(layer.free) is DenseFreeBranch
    assert all(p.dtype == torch.float64 for p in free)
    assert [id(p) for p in layer.free.parameters()] == [id(p) for p in free]
    before = [p.detach().clone() for p in free]
    one_step(model, optimiser, x)
    assert all(not torch.equal(b, p.detach()) for b, p in zip(before, free, strict=True))


def test_a_lazy_free_branch_gets_its_init_and_norm_bound_at_its_first_call():
    relaxed = equirelax.Relaxed(nn.Tanh(), level=1.0)
    relaxed.configure_free(init="small", init_scale=1e-3, norm_bound="frobenius")
    assert relaxed.free_is_lazy
    relaxed(torch.randn(3, 5))
    linear = relaxed.free.linear
    assert torch.nn.utils.parametrize.is_parametrized(linear, "weight")
    assert torch.nn.utils.parametrize.is_parametrized(linear, "bias")
    assert float(torch.linalg.matrix_norm(linear.weight.detach())) == pytest.approx(1.0)
    original = linear.parametrizations.weight.original.detach()
    assert 0 < float(original.abs().max()) < 1e-3  # PyTorch's init (|w| < 0.45) times 1e-3


def test_a_lazy_free_branch_cannot_be_called_before_it_has_shapes():
    with pytest.raises(RuntimeError, match="free: this LazyDenseFreeBranch has no shapes yet"):
        LazyDenseFreeBranch()(torch.randn(2, 3))


# ---------------------------------------------------------------------- save and load


def saved(model: nn.Module) -> dict:
    """``model.state_dict()`` through ``torch.save`` and ``torch.load(weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("case", CASES)
def test_a_trained_state_dict_loads_into_a_fresh_relax_copy(case):
    model, strategy, data = attached(case)
    train_steps(model, strategy, data, steps(strategy))
    state = saved(model)
    fresh = vector_model(seed=1)  # built as the trained model was, other weights
    x = data[0][:8]
    model.eval()
    fresh.eval()
    assert not torch.allclose(fresh(x), model(x))
    random_state = torch.get_rng_state()
    fresh.load_state_dict(state)
    assert torch.equal(torch.get_rng_state(), random_state)  # loading draws nothing
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    fresh.train()
    model.train()
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)  # spectral state too


def test_a_lazy_norm_bounded_model_loads_into_a_fresh_lazy_copy():
    def lazy_model() -> nn.Module:
        return equirelax.relax(nn.Sequential(nn.Tanh(), nn.Linear(5, 2)), select=nn.Tanh)

    model = lazy_model()
    strategy = ACE(norm_bound="spectral")
    model = strategy.attach(model)
    x = torch.randn(8, 5)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    objective = strategy.loss(model(x).pow(2).mean(), model, x, None)
    optimiser.zero_grad()
    objective.backward()
    optimiser.step()
    strategy.after_step()
    fresh = lazy_model()
    assert equirelax.relaxed_layers(fresh)["0"].free_is_lazy
    fresh.load_state_dict(saved(model))
    assert equirelax.relaxed_layers(fresh)["0"].norm_bound == "spectral"
    model.eval()
    fresh.eval()
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


def test_a_projected_state_dict_loads_into_a_relaxed_copy_at_level_zero():
    model, strategy, data = attached("cr")
    train_steps(model, strategy, data, 1)
    projected = equirelax.project(model)
    fresh = vector_model(seed=1)
    fresh.load_state_dict(projected.state_dict())
    assert all(float(layer.level) == 0.0 for layer in equirelax.relaxed_layers(fresh).values())
    x = data[0][:8]
    torch.testing.assert_close(fresh(x), projected(x), rtol=0, atol=0)
