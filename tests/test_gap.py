"""Symmetry-gap estimation: the group average is an equivariant projection, and the dataset
estimate is about 0 (inside its interval) on symmetric data and grows with the gap knob."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from equirelax.actions import RepresentationAction, TrivialAction, VectorAction
from equirelax.gap import group_average, symmetry_gap
from equirelax.groups import O3, CyclicGroup
from equirelax.metrics import equivariance_error
from equirelax.tasks import gap_dial_task

F64 = torch.float64


def _vector_actions() -> tuple[RepresentationAction, RepresentationAction]:
    v = O3().standard_representation()
    return RepresentationAction(2 * v), RepresentationAction(v)


def test_group_average_is_equivariant_and_fixes_equivariant_maps() -> None:
    action_in, action_out = _vector_actions()
    torch.manual_seed(0)
    dense = nn.Linear(6, 3).double()
    x = torch.randn(16, 6, dtype=F64)
    gen = torch.Generator().manual_seed(1)
    elements = O3().sample(64, gen, dtype=F64)

    def averaged(inputs: torch.Tensor) -> torch.Tensor:
        return group_average(dense, inputs, action_in, action_out, elements=elements)

    before = equivariance_error(dense, x, action_in, action_out, generator=gen)
    after = equivariance_error(averaged, x, action_in, action_out, generator=gen)
    assert before.mean > 0.3
    # a Monte-Carlo average over 64 fixed elements is equivariant up to its sampling error
    assert after.mean_absolute < 0.2 * before.mean_absolute

    def equivariant(inputs: torch.Tensor) -> torch.Tensor:
        x1, x2 = inputs[:, :3], inputs[:, 3:]
        return (x1 * x2).sum(1, keepdim=True) * x1 + x2

    kept = group_average(equivariant, x, action_in, action_out, elements=elements)
    assert torch.allclose(kept, equivariant(x), atol=1e-10)


def test_group_average_over_a_finite_group_is_exactly_invariant() -> None:
    group = CyclicGroup(4)
    action = RepresentationAction(group.standard_representation())
    torch.manual_seed(0)
    f = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    x = torch.randn(10, 2, dtype=F64)
    out = TrivialAction(group)

    def average(inputs: torch.Tensor) -> torch.Tensor:
        return group_average(f, inputs, action, out)  # all 4 elements

    assert equivariance_error(average, x, action, out).max < 1e-12
    assert not torch.allclose(average(x), f(x))


def test_vector_action_tuple_inputs_are_supported() -> None:
    group = O3()
    action = VectorAction(group)
    x = torch.randn(5, 3, dtype=F64)
    y = group_average(lambda v: v, x, action, action, num_elements=8)
    assert torch.allclose(y, x, atol=1e-12)  # the identity map is equivariant


def _gap(delta: float, seed: int = 0) -> object:
    task = gap_dial_task(delta=delta, train_size=800, val_size=2, test_size=2, seed=seed)
    inputs, targets = task.train
    return symmetry_gap(
        inputs, targets, task.action_in, task.action_out, steps=600, seed=seed, resamples=500
    )


@pytest.mark.slow
def test_gap_is_about_zero_on_symmetric_data_and_grows_with_delta() -> None:
    results = {delta: _gap(delta) for delta in (0.0, 1.0, 2.0, 4.0)}
    symmetric = results[0.0]
    assert symmetric.low <= 0.0 <= symmetric.high + 1e-12
    assert symmetric.estimate < 5e-3
    estimates = [results[d].estimate for d in (0.0, 1.0, 2.0, 4.0)]
    assert estimates[0] <= estimates[1] < estimates[2] < estimates[3], estimates
    big = results[4.0]
    assert big.low > 0.0  # a clear gap is detected with confidence
    # a lower bound: not above the exact gap relative to the target scale (with sampling slack)
    extra = gap_dial_task(delta=4.0, train_size=2, val_size=2, test_size=2).extra
    exact = extra["symmetry_gap"] / extra["target_energy"]
    assert big.estimate < 1.2 * exact


def test_bad_arguments_are_rejected() -> None:
    action_in, action_out = _vector_actions()
    x, y = torch.randn(20, 6), torch.randn(20, 3)
    with pytest.raises(ValueError, match="targets: expected 20 samples"):
        symmetry_gap(x, y[:10], action_in, action_out)
    with pytest.raises(ValueError, match="confidence"):
        symmetry_gap(x, y, action_in, action_out, confidence=1.5)
    with pytest.raises(ValueError, match="heldout_fraction"):
        symmetry_gap(x, y, action_in, action_out, heldout_fraction=0.0)
    with pytest.raises(ValueError, match="predictor: fit=False"):
        symmetry_gap(x, y, action_in, action_out, fit=False)
    bad = y.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="targets"):
        symmetry_gap(x, bad, action_in, action_out)


@pytest.mark.slow
def test_the_gap_command_measures_a_task_and_names_the_family_that_fits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from equirelax.experiments.cli import main

    words = ["gap", "gap-dial", "--task-option", "train_size=400", "--steps", "200", "--quiet"]
    assert main([*words, "--task-option", "delta=0.0"]) == 0  # exact O(3) symmetry
    shown = capsys.readouterr().out
    assert "no gap detectable" in shown
    assert "(strict;" in shown
    assert main([*words, "--task-option", "delta=2.0", "--json"]) == 0  # exact gap 0.095
    measured = json.loads(capsys.readouterr().out)
    assert measured["detected"] is True
    assert 0.02 < measured["estimate"] < 0.2


def test_the_gap_command_refuses_a_classification_task() -> None:
    from equirelax.experiments.cli import main

    with pytest.raises(SystemExit) as refused:
        main(["gap", "glyphs", "--steps", "1", "--quiet"])
    assert refused.value.code == 2
