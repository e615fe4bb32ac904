"""Bad inputs the library must refuse with a message naming the culprit (issue 20), rather than
compute something wrong: integer data under rotations, non-finite training data."""

from __future__ import annotations

import re

import pytest
import torch

from equirelax.actions import ImageAction, PermutationAction, TrivialAction, VectorAction
from equirelax.groups import O3, CyclicGroup, SymmetricGroup
from equirelax.strategies import ACE
from equirelax.tasks import Task


def test_rotations_refuse_integer_data_that_they_would_round() -> None:
    integers = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"x: expected a floating-point tensor .*torch.int64"):
        VectorAction(O3())(O3().sample(2), integers)
    images = torch.ones(2, 1, 5, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"x: expected a floating-point tensor for C8"):
        ImageAction(CyclicGroup(8))(torch.tensor([1, 1]), images)
    # exact actions move integer data without rounding it
    quarter = ImageAction(CyclicGroup(4))(torch.tensor([1, 1]), images)
    assert quarter.dtype == torch.long
    assert torch.equal(quarter, images)
    labels = torch.arange(6).reshape(2, 3)
    moved = PermutationAction(SymmetricGroup(3), dims=(1,))(
        SymmetricGroup(3).elements()[:2], labels
    )
    assert sorted(moved[1].tolist()) == [3, 4, 5]


@pytest.mark.parametrize(
    ("split", "field", "value"),
    [("train", "targets", float("nan")), ("val", "inputs[1]", float("inf"))],
)
def test_a_task_with_non_finite_data_names_the_split_and_the_field(
    split: str, field: str, value: float
) -> None:
    inputs = (torch.zeros(4, 3), torch.zeros(4, 2))
    targets = torch.zeros(4, 1)
    splits = {"train": (inputs, targets), "val": (inputs, targets)}
    if field == "targets":
        bad_targets = targets.clone()
        bad_targets[2, 0] = value
        splits[split] = (inputs, bad_targets)
    else:
        bad = inputs[1].clone()
        bad[0, 1] = value
        splits[split] = ((inputs[0], bad), targets)
    expected = re.escape(f"{split}: expected finite {field}, received 1 NaN or infinite")
    with pytest.raises(ValueError, match=expected):
        Task.from_splits("toy", splits, action_in=TrivialAction(O3()))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("kp", -5.0, "kp: expected a finite number >= 0"),
        ("initial_level", float("nan"), "initial_level: expected a finite number"),
        ("dual_lr", float("inf"), "dual_lr: expected a positive finite number"),
        ("epsilon", 0.0, "epsilon: expected a positive finite number"),
    ],
)
def test_ace_refuses_settings_that_cannot_be_meant(option: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ACE(**{option: value})
