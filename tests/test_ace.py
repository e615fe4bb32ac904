"""ACE's defining properties (SPEC 2.2): equality drives every level to 0 while multipliers
move, the projected model loses nothing; resilient keeps relaxation where the data breaks the
symmetry, with slacks u = lambda / rho at the optimum; the official step rules (levels and
slacks under the training loop's optimiser, an Adam dual fed -violation)."""

import pytest
import torch

from _toy import train_plain, vector_model, vector_task
from equirelax import relaxed_layers
from equirelax.strategies import ACE

# equirelax's gradient-descent level rule with a fast nuPI dual on spectrally bounded branches:
# the game settles in 1500 steps
GAME = {
    "level_rule": "gradient",
    "norm_bound": "spectral",
    "dual_lr": 0.05,
    "dual_optimizer": "nupi",
    "kp": 5.0,
    "level_lr": 0.1,
}


def _val_loss(model, task):
    x, y = task.val
    with torch.no_grad():
        return float(((model(x) - y) ** 2).mean())


@pytest.mark.slow
def test_equality_drives_levels_to_zero_and_projection_keeps_the_loss():
    task = vector_task()
    ace = ACE("equality", **GAME)
    model, largest_multiplier = train_plain(vector_model(), ace, task, steps=1500)
    levels = ace.log()["levels"]
    assert len(levels) == 2
    assert max(abs(v) for v in levels) < 1e-3, levels
    assert largest_multiplier > 0.1
    relaxed, projected = _val_loss(model, task), _val_loss(ace.evaluation_model(model), task)
    assert not relaxed_layers(ace.evaluation_model(model))
    # stated margin: the projected model is within 1% of the relaxed one
    assert abs(projected - relaxed) <= 0.01 * relaxed


@pytest.mark.slow
def test_resilient_keeps_the_break_and_slacks_equal_multipliers_over_rho():
    rho = 2.0
    task = vector_task(offset=0.5)  # a constant e_z offset: only a free branch can produce it
    ace = ACE("resilient", rho=rho, **GAME)
    model, _ = train_plain(vector_model(), ace, task, steps=1500)
    state = ace.log()
    output_level = state["levels"][-1]
    assert abs(output_level) > 0.05, state
    assert "2" in ace.relaxed_layer_names()  # the output layer (module index 2)
    slacks, multipliers = torch.tensor(state["slacks"]), torch.tensor(state["multipliers"])
    torch.testing.assert_close(slacks, multipliers / rho, atol=2e-3, rtol=0)
    # the constraint |gamma| <= u holds at the end (to the same tolerance)
    assert torch.all(torch.tensor(state["levels"]).abs() <= slacks + 2e-3)
    # resilient ACE keeps the relaxation at evaluation time
    assert ace.evaluation_model(model) is model


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="measured: at the class defaults (levels under Adam, dual Adam 8e-4, no norm bound) "
    "the equality game oscillates on this toy; after 1500 cosine steps the levels are ~0.8, after "
    "6000 still 0.06 and -0.15 (see the ACE module docstring)",
)
def test_equality_at_class_defaults_drives_levels_below_1e_3_in_1500_steps():
    task = vector_task()
    ace = ACE("equality")
    model, _ = train_plain(vector_model(), ace, task, steps=1500)
    assert max(abs(v) for v in ace.log()["levels"]) < 1e-3, ace.log()["levels"]
    relaxed, projected = _val_loss(model, task), _val_loss(ace.evaluation_model(model), task)
    assert abs(projected - relaxed) <= 0.01 * relaxed


def test_inequality_multipliers_stay_non_negative():
    """Inequality multipliers are projected onto lambda >= 0 after every dual step: with every
    |gamma| inside epsilon the violation is negative and plain ascent would go below 0."""
    ace = ACE("inequality", epsilon=0.5, initial_level=0.0, dual_lr=0.05, dual_optimizer="sgd")
    train_plain(vector_model(), ace, vector_task(), steps=5)
    assert ace.log()["multipliers"] == [0.0, 0.0]
    assert all(abs(v) <= 0.5 for v in ace.log()["levels"])


def test_attach_makes_levels_parameters_of_the_model_at_one_and_leaves_branches_unbounded():
    model = ACE().attach(vector_model())
    levels = [layer.level for layer in relaxed_layers(model).values()]
    for layer in relaxed_layers(model).values():
        assert layer.level_is_learnable  # the training loop's optimiser steps it
        assert float(layer.level.detach()) == 1.0
        assert layer.norm_bound is None  # the official N-body code bounds nothing
    parameters = list(model.parameters())
    assert all(any(p is level for p in parameters) for level in levels)


def test_levels_and_slacks_move_with_the_loops_optimiser_and_clipping_bounds_the_step():
    """The official rule: gamma is stepped by the primal Adam (at most ~lr per step whatever
    dL/dgamma is: the divergence of the old unbounded rule cannot happen); slacks likewise,
    clamped at u >= 0."""
    model = vector_model()
    ace = ACE("resilient")
    model = ace.attach(model)
    assert ace.parameters() == [ace.slacks]
    optimiser = torch.optim.Adam([*model.parameters(), *ace.parameters()], lr=1e-3)
    x = torch.randn(8, 12)
    objective = ace.loss(1e6 * model(x).pow(2).mean(), model, x, None)  # a huge dL/dgamma
    optimiser.zero_grad()
    objective.backward()
    optimiser.step()
    ace.after_step()
    levels = torch.tensor(ace.log()["levels"])
    assert torch.all((levels - 1.0).abs() <= 1.1e-3), levels
    assert torch.all(ace.slacks >= 0)


def test_gradient_level_rule_keeps_levels_buffers_stepped_by_ace():
    model = ACE(level_rule="gradient", level_lr=0.1).attach(vector_model())
    for layer in relaxed_layers(model).values():
        assert not layer.level_is_learnable
        assert layer.level.requires_grad


def test_norm_bound_option_bounds_free_branches():
    model = ACE(norm_bound="spectral").attach(vector_model())
    for layer in relaxed_layers(model).values():
        weight = layer.free.linear.weight
        assert torch.linalg.matrix_norm(weight.detach(), ord=2) == pytest.approx(1.0, abs=1e-2)


def test_default_dual_step_is_adam_ascent_on_the_violation():
    """Adam's first step moves each multiplier by dual_lr in the direction of its violation
    (ascent: grad = -violation), equality multipliers free in sign."""
    model = vector_model()
    ace = ACE("equality", initial_level=1.0)
    model = ace.attach(model)
    with torch.no_grad():
        relaxed_layers(model)["2"].level.fill_(-0.5)
    x = torch.randn(8, 12)
    ace.loss(model(x).pow(2).mean(), model, x, None).backward()
    ace.after_step()
    torch.testing.assert_close(ace.multipliers(), torch.tensor([8e-4, -8e-4]))


def test_dual_step_is_gradient_ascent_on_the_violation():
    """Simultaneous update with SGD: lambda_i += eta_dual * gamma_i (gamma before the step)."""
    model = vector_model()
    ace = ACE("equality", dual_lr=0.5, dual_optimizer="sgd", level_rule="gradient", level_lr=0.1)
    model = ace.attach(model)
    x = torch.randn(8, 12)
    objective = ace.loss(model(x).pow(2).mean(), model, x, None)
    objective.backward()
    before = torch.tensor(ace.log()["levels"])
    ace.after_step()
    torch.testing.assert_close(ace.multipliers(), 0.5 * before)


def test_alternating_uses_the_violation_after_the_level_step():
    model = vector_model()
    ace = ACE(
        "equality",
        dual_lr=0.5,
        dual_optimizer="sgd",
        level_rule="gradient",
        level_lr=0.1,
        update="alternating",
    )
    model = ace.attach(model)
    x = torch.randn(8, 12)
    ace.loss(model(x).pow(2).mean(), model, x, None).backward()
    ace.after_step()
    after = torch.tensor(ace.log()["levels"])
    torch.testing.assert_close(ace.multipliers(), 0.5 * after)


def test_state_dict_round_trip_restores_multipliers_and_slacks():
    task = vector_task(offset=0.5)
    ace = ACE("resilient", **GAME)
    train_plain(vector_model(), ace, task, steps=20)
    state = ace.state_dict()
    other = ACE("resilient", **GAME)
    other.attach(vector_model())
    other.load_state_dict(state)
    torch.testing.assert_close(other.multipliers(), ace.multipliers())
    torch.testing.assert_close(other.slacks, ace.slacks)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"mode": "exact"}, "mode"),
        ({"update": "sideways"}, "update"),
        ({"dual_optimizer": "rmsprop"}, "dual_optimizer"),
        ({"level_rule": "clip"}, "level_rule"),
        ({"rho": 0.0}, "rho"),
        ({"dual_lr": -1.0}, "dual_lr"),
        ({"norm_bound": "l2"}, "norm_bound"),
    ],
)
def test_bad_options_are_rejected_by_name(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ACE(**kwargs)


def test_attach_needs_relaxed_layers_and_steps_need_a_loss():
    with pytest.raises(ValueError, match="Relaxed"):
        ACE().attach(torch.nn.Linear(3, 3))
    ace = ACE()
    ace.attach(vector_model())
    with pytest.raises(RuntimeError, match="loss"):
        ace.after_step()
