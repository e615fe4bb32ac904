"""Relaxed group convolution and relaxed translation (Wang, Walters & Yu 2022; issue 18)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from _tolerances import ATOL, F64
from equirelax import assert_equivariant, equivariance_error, project
from equirelax.actions import ImageAction, PermutationAction
from equirelax.groups import CyclicGroup, DihedralGroup, FiniteGroup, SymmetricGroup
from equirelax.nn import (
    GroupConv2d,
    GroupPool,
    LiftingConv2d,
    RelaxedGroupConv2d,
    RelaxedLiftingConv2d,
    RelaxedTranslationConv2d,
)

GROUPS = [CyclicGroup(4), DihedralGroup(4)]


def _error(module: nn.Module, x: Tensor, group: FiniteGroup, regular_in: bool) -> float:
    """The largest ``||f(g . x) - g . f(x)||`` over all elements ``g`` (the library's metric)."""
    action_in = ImageAction(group, "regular" if regular_in else "trivial")
    action_out = ImageAction(group, "regular")
    return equivariance_error(module, x, action_in, action_out).max_absolute


def _layers(group: FiniteGroup) -> list[tuple[nn.Module, Tensor, bool]]:
    torch.manual_seed(0)
    lift = RelaxedLiftingConv2d(2, 3, 3, group, num_banks=3).double()
    conv = RelaxedGroupConv2d(3, 2, 3, group, num_banks=3).double()
    return [
        (lift, torch.randn(1, 2, 9, 9, dtype=F64), False),
        (conv, torch.randn(1, 3, group.order, 9, 9, dtype=F64), True),
    ]


@pytest.mark.parametrize("group", GROUPS, ids=str)
def test_equivariant_at_initialisation_and_equal_to_its_projection(group: FiniteGroup) -> None:
    for layer, x, regular in _layers(group):
        assert torch.allclose(layer.relaxed_weights, torch.full_like(layer.relaxed_weights, 1 / 3))
        assert layer.level().item() == 0.0
        assert _error(layer, x, group, regular) < ATOL[F64]
        with torch.no_grad():
            torch.testing.assert_close(layer.to_equivariant()(x), layer(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("group", GROUPS, ids=str)
def test_weights_that_differ_break_equivariance_and_projection_restores_it(group) -> None:
    for layer, x, regular in _layers(group):
        with torch.no_grad():
            layer.relaxed_weights.add_(0.3 * torch.randn_like(layer.relaxed_weights))
        assert layer.level().item() > 0.05
        assert _error(layer, x, group, regular) > 1e-2
        projected = project(layer)
        assert type(projected) is (GroupConv2d if regular else LiftingConv2d)
        assert _error(projected, x, group, regular) < ATOL[F64]


@pytest.mark.parametrize("group", GROUPS, ids=str)
def test_relaxed_group_convolutions_pass_assert_equivariant_at_initialisation(
    group: FiniteGroup, dtype: torch.dtype
) -> None:
    for layer, x, _ in _layers(group):
        assert_equivariant(layer.to(dtype), x.to(dtype), atol=ATOL[dtype])


def test_project_replaces_relaxed_group_convolutions_inside_a_model() -> None:
    group = CyclicGroup(4)
    torch.manual_seed(1)
    model = nn.Sequential(
        RelaxedLiftingConv2d(1, 4, 3, group),
        nn.ReLU(),
        RelaxedGroupConv2d(4, 2, 3, group),
        GroupPool(group),
    ).double()
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.relaxed_weights.add_(0.2 * torch.randn_like(layer.relaxed_weights))
    projected = project(model)
    assert isinstance(projected[0], LiftingConv2d)
    assert isinstance(projected[2], GroupConv2d)
    x = torch.randn(4, 1, 9, 9, dtype=F64)
    moved = ImageAction(group)(group.elements(), x)
    with torch.no_grad():
        out, out_moved = projected(x), projected(moved)
        torch.testing.assert_close(out_moved, ImageAction(group)(group.elements(), out))
        assert not torch.allclose(model(moved), ImageAction(group)(group.elements(), model(x)))


def test_regularizer_matches_its_formula_on_a_hand_computed_case() -> None:
    # C4, L = 2: w_1 = (1, 2, 4, 8), w_2 = (0, 0, 0, 1). Neighbours (a, a + 1 mod 4):
    # |1-2| + |2-4| + |4-8| + |8-1| = 14 and |0-0| + |0-0| + |0-1| + |1-0| = 2: mean 16 / 8 = 2.
    layer = RelaxedLiftingConv2d(1, 1, 3, CyclicGroup(4), num_banks=2, alpha=0.5)
    with torch.no_grad():
        layer.relaxed_weights.copy_(torch.tensor([[1.0, 2, 4, 8], [0, 0, 0, 1]]))
    assert layer.regularizer().item() == pytest.approx(0.5 * 2.0)
    # The level: |w - mean| averaged: w_1 mean 3.75 -> (2.75 + 1.75 + 0.25 + 4.25) / 4 = 2.25,
    # w_2 mean 0.25 -> (0.25 * 3 + 0.75) / 4 = 0.375; mean 1.3125.
    assert layer.level().item() == pytest.approx(1.3125)


def test_dihedral_neighbours_use_both_generators() -> None:
    layer = RelaxedLiftingConv2d(1, 1, 3, DihedralGroup(4), num_banks=1, alpha=1.0)
    with torch.no_grad():
        layer.relaxed_weights.zero_()
        layer.relaxed_weights[0, 0] = 1.0  # only the identity differs
    # Pairs (a, a s) for 2 generators and 8 elements: 16; the identity is in 2 pairs per generator.
    assert layer.regularizer().item() == pytest.approx(4 / 16)


def test_relaxed_translation_is_a_convolution_at_init_and_after_projection() -> None:
    torch.manual_seed(2)
    layer = RelaxedTranslationConv2d(2, 3, 3, size=10, num_banks=2, alpha=1.0).double()
    x = torch.randn(2, 2, 10, 10, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.to_equivariant()(x), atol=1e-12, rtol=0)
        assert layer.regularizer().item() == 0.0
        layer.relaxed_weights[0, :5] += 0.5  # bank 0's top half differs: the step costs TV
    shifted = torch.roll(x, 1, dims=-2)
    with torch.no_grad():
        out = layer(x)
        # Interior rows: translation equivariance broken by the per-pixel weights.
        difference = layer(shifted)[..., 2:-2, :] - torch.roll(out, 1, dims=-2)[..., 2:-2, :]
    assert float(difference.abs().max()) > 1e-2
    # TV: bank 0's rows 4 and 5 differ by 0.5 in 10 columns, mean over 2 x 9 x 10 row pairs.
    assert layer.regularizer().item() == pytest.approx(0.5 * 10 / 180)
    conv = project(layer)
    assert isinstance(conv, nn.Conv2d)


def test_relaxed_translation_passes_assert_equivariant_at_init_and_after_projection(
    dtype: torch.dtype,
) -> None:
    # Shifts by 0-2 rows or columns, as permutations, of images that are zero within 3 px of
    # the border: no content wraps around, so the zero-padded convolution commutes exactly.
    n = 10
    torch.manual_seed(2)
    layer = RelaxedTranslationConv2d(2, 3, 3, size=n, num_banks=2).to(dtype)
    x = torch.zeros(2, 2, n, n, dtype=dtype)
    x[..., 3:-3, 3:-3] = torch.randn(2, 2, n - 6, n - 6, dtype=dtype)
    shifts = torch.stack([torch.roll(torch.arange(n), s) for s in range(3)])
    rows, columns = (PermutationAction(SymmetricGroup(n), dims=(d,)) for d in (2, 3))
    for action in (rows, columns):
        assert_equivariant(layer, x, action, action, elements=shifts, atol=ATOL[dtype])
    with torch.no_grad():
        layer.relaxed_weights[0, :5] += 0.5  # the top half of bank 0 differs
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(layer, x, rows, rows, elements=shifts, atol=ATOL[dtype])
    conv = project(layer)
    for action in (rows, columns):
        assert_equivariant(conv, x, action, action, elements=shifts, atol=ATOL[dtype])


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="num_banks"):
        RelaxedLiftingConv2d(1, 2, 3, CyclicGroup(4), num_banks=0)
    with pytest.raises(ValueError, match="alpha"):
        RelaxedGroupConv2d(1, 2, 3, CyclicGroup(4), alpha=-1.0)
    with pytest.raises(ValueError, match="x: expected"):
        RelaxedTranslationConv2d(1, 2, 3, size=8)(torch.randn(1, 1, 9, 9))
    with pytest.raises(ValueError, match="x: expected"):
        RelaxedGroupConv2d(2, 2, 3, CyclicGroup(4))(torch.randn(1, 2, 9, 9))


def test_projection_keeps_the_group_mean_of_each_bank_weight() -> None:
    # to_equivariant's base filter is sum_l mean_a w_l(a) psi_l, not any other constant choice.
    torch.manual_seed(3)
    layer = RelaxedLiftingConv2d(2, 3, 3, CyclicGroup(4), num_banks=2).double()
    with torch.no_grad():
        layer.relaxed_weights.copy_(torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 4.0, 0.0]]))
    banks = layer.banks.weight.reshape(2, 3, 2, 3, 3)
    expected = 3.0 * banks[0] + 1.0 * banks[1]
    torch.testing.assert_close(layer.to_equivariant().weight, expected)
