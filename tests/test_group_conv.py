"""Tests of the lifting convolution, group convolution and group pooling layers."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from _tolerances import ATOL, F64
from equirelax import assert_equivariant, equivariance_error
from equirelax.actions import ImageAction
from equirelax.groups import SO2, CyclicGroup, DihedralGroup, FiniteGroup
from equirelax.nn.group_conv import GroupConv2d, GroupPool, LiftingConv2d

GROUPS = [CyclicGroup(4), DihedralGroup(4)]
GROUP_IDS = ["C4", "D4"]
SIZES = [9, 8]


def _error(module, x: Tensor, g: Tensor, action_in=None, action_out=None) -> float:
    """The largest ``||f(g . x) - g . f(x)||`` over the elements ``g`` (the library's metric)."""
    action_in = action_in or module.action_in
    action_out = action_out or module.action_out
    return equivariance_error(module, x, action_in, action_out, elements=g).max_absolute


def _image(channels: int, size: int, seed: int = 0, dtype: torch.dtype = F64) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, channels, size, size, generator=gen, dtype=dtype)


def _features(
    channels: int, group: FiniteGroup, size: int, seed: int = 0, dtype: torch.dtype = F64
) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (1, channels, group.order, size, size)
    return torch.randn(*shape, generator=gen, dtype=dtype)


# --------------------------------------------------------------------------- equivariance


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group", GROUPS, ids=GROUP_IDS)
def test_lifting_conv_is_equivariant(group: FiniteGroup, size: int, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    layer = LiftingConv2d(2, 3, 3, group).to(dtype)
    x = _image(2, size, dtype=dtype)
    assert layer(x).shape == (1, 3, group.order, size, size)
    assert_equivariant(layer, x, elements=group.elements(), atol=ATOL[dtype])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group", GROUPS, ids=GROUP_IDS)
def test_group_conv_is_equivariant(group: FiniteGroup, size: int, dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    layer = GroupConv2d(2, 3, 3, group).to(dtype)
    x = _features(2, group, size, dtype=dtype)
    assert layer(x).shape == (1, 3, group.order, size, size)
    assert_equivariant(layer, x, elements=group.elements(), atol=ATOL[dtype])


@pytest.mark.parametrize("reduction", ["max", "mean"])
@pytest.mark.parametrize("group", GROUPS, ids=GROUP_IDS)
def test_group_pool_is_equivariant(group: FiniteGroup, reduction: str, dtype: torch.dtype) -> None:
    pool = GroupPool(group, reduction, channels=2)
    x = _features(2, group, 7, dtype=dtype)
    assert pool(x).shape == (1, 2, 7, 7)
    assert_equivariant(pool, x, elements=group.elements(), atol=ATOL[dtype])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("group", GROUPS, ids=GROUP_IDS)
def test_stack_is_invariant_after_pooling(group: FiniteGroup, size: int) -> None:
    torch.manual_seed(2)
    model = nn.Sequential(
        LiftingConv2d(1, 4, 5, group),
        nn.ReLU(),
        GroupConv2d(4, 3, 3, group),
        nn.ReLU(),
        GroupConv2d(3, 2, 3, group, padding=0),
        GroupPool(group, "max"),
    ).double()
    x = _image(1, size)
    out = model(x)
    assert out.shape == (1, 2, size - 2, size - 2)
    image = ImageAction(group)
    assert_equivariant(model, x, image, image, elements=group.elements(), atol=ATOL[F64])
    # Spatially pooled features are invariant.
    g = group.elements()
    pooled = model(ImageAction(group)(g, x.expand(g.shape[0], -1, -1, -1))).mean(dim=(-2, -1))
    torch.testing.assert_close(pooled, pooled[:1].expand_as(pooled), atol=ATOL[F64], rtol=0)


@pytest.mark.parametrize("size", SIZES)
def test_padding_zero_stays_equivariant(size: int) -> None:
    group = DihedralGroup(4)
    torch.manual_seed(3)
    lift = LiftingConv2d(2, 2, 3, group, padding=0).double()
    conv = GroupConv2d(2, 2, 5, group, padding=0, bias=False).double()
    assert lift(_image(2, size)).shape[-1] == size - 2
    assert_equivariant(lift, _image(2, size), elements=group.elements(), atol=ATOL[F64])
    assert_equivariant(conv, _features(2, group, size), elements=group.elements(), atol=ATOL[F64])


@pytest.mark.parametrize("size", SIZES)
def test_c8_is_exact_for_quarter_turns(size: int) -> None:
    group = CyclicGroup(8)
    quarter_turns = torch.arange(0, 8, 2)
    torch.manual_seed(4)
    lift = LiftingConv2d(2, 3, 5, group).double()
    conv = GroupConv2d(3, 2, 3, group).double()
    assert_equivariant(lift, _image(2, size), elements=quarter_turns, atol=ATOL[F64])
    assert_equivariant(conv, _features(3, group, size), elements=quarter_turns, atol=ATOL[F64])
    # The 45-degree elements rotate by interpolation: equivariance is only approximate.
    odd = torch.arange(1, 8, 2)
    assert _error(lift, _image(2, size), odd) > 1e-6


def test_lifting_filters_follow_the_image_rotation_convention() -> None:
    # C4 element k rotates by k * 90 degrees counter-clockwise as displayed, like torch.rot90.
    group = CyclicGroup(4)
    layer = LiftingConv2d(2, 3, 3, group).double()
    bank = layer.filter_bank().reshape(3, 4, 2, 3, 3)
    for k in range(4):
        torch.testing.assert_close(bank[:, k], torch.rot90(layer.weight, k, dims=(-2, -1)))


def test_group_conv_filter_at_identity_is_the_base_filter() -> None:
    group = DihedralGroup(4)
    layer = GroupConv2d(2, 3, 3, group).double()
    bank = layer.filter_bank().reshape(3, 8, 2, 8, 3, 3)
    torch.testing.assert_close(bank[:, 0], layer.weight)


def test_group_conv_matches_the_definition() -> None:
    # [f * psi](h, x) = sum_{h'} sum_y f(h', x + y) psi(h^-1 h', h^-1 y), built here from
    # torch.rot90 and the multiplication table instead of the action.
    group = CyclicGroup(4)
    torch.manual_seed(5)
    layer = GroupConv2d(2, 3, 3, group, bias=False).double()
    x = _features(2, group, 6)
    table = group.multiplication_table
    inverse = group.inverse(group.elements())
    out = layer(x)
    for h in range(4):
        rotated = torch.rot90(layer.weight, h, dims=(-2, -1))  # psi(., h^-1 y)
        source = table[inverse[h]]  # index(h^-1 h') for every h'
        weight = rotated[:, :, source]
        expected = nn.functional.conv2d(x.flatten(1, 2), weight.flatten(1, 2), padding=1)
        torch.testing.assert_close(out[:, :, h], expected, atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- negative controls


def test_plain_conv_is_not_equivariant() -> None:
    group = CyclicGroup(4)
    torch.manual_seed(6)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    action = ImageAction(group)
    assert _error(conv, _image(2, 9), group.elements(), action, action) > 1e-2


def test_untied_filter_bank_is_not_equivariant() -> None:
    # The same flattened conv2d as GroupConv2d, with independent (untransformed) filters.
    group = DihedralGroup(4)
    torch.manual_seed(7)
    conv = nn.Conv2d(2 * 8, 3 * 8, 3, padding=1).double()

    def untied(x: Tensor) -> Tensor:
        return conv(x.flatten(1, 2)).unflatten(1, (3, 8))

    action = ImageAction(group, "regular")
    assert _error(untied, _features(2, group, 8), group.elements(), action, action) > 1e-2


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("group", [DihedralGroup(4), CyclicGroup(8)], ids=["D4", "C8"])
def test_gradient_reaches_the_weights(group: FiniteGroup) -> None:
    lift = LiftingConv2d(2, 3, 3, group).double()
    conv = GroupConv2d(3, 2, 3, group).double()
    loss = GroupPool(group, "mean")(conv(torch.relu(lift(_image(2, 7))))).square().sum()
    loss.backward()
    for param in [*lift.parameters(), *conv.parameters()]:
        assert param.grad is not None
        assert bool(torch.isfinite(param.grad).all())
        assert float(param.grad.abs().sum()) > 0


def test_float32_and_initialisation() -> None:
    group = DihedralGroup(4)
    layer = GroupConv2d(4, 5, 3, group)
    bound = 1 / (4 * 8 * 9) ** 0.5
    assert layer.weight.dtype == torch.float32
    assert float(layer.weight.detach().abs().max()) <= bound
    assert layer.bias is not None
    assert float(layer.bias.detach().abs().max()) <= bound
    assert layer(torch.randn(2, 4, 8, 6, 6)).dtype == torch.float32
    assert layer.group == group
    assert (layer.in_channels, layer.out_channels) == (4, 5)


# --------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.zeros(2, 3, 9), r"x: expected a tensor with 4 dimensions.*\(2, 3, 9\)"),
        (torch.zeros(2, 4, 9, 9), r"x: expected size 3 along dimension 1.*\(2, 4, 9, 9\)"),
        (torch.zeros(2, 3, 9, 8), r"x: expected square images \(B, C, H, W\).*\(2, 3, 9, 8\)"),
    ],
)
def test_lifting_conv_rejects_bad_inputs(x: Tensor, match: str) -> None:
    layer = LiftingConv2d(3, 2, 3, CyclicGroup(4))
    with pytest.raises(ValueError, match=match):
        layer(x)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.zeros(2, 3, 9, 9), r"x: expected a tensor with 5 dimensions.*\(2, 3, 9, 9\)"),
        (torch.zeros(2, 4, 8, 9, 9), r"x: expected size 3 along dimension 1.*\(2, 4, 8, 9, 9\)"),
        (torch.zeros(2, 3, 4, 9, 9), r"x: expected size 8 along dimension 2.*\(2, 3, 4, 9, 9\)"),
        (
            torch.zeros(2, 3, 8, 9, 7),
            r"x: expected square images \(B, C, 8, H, W\).*\(2, 3, 8, 9, 7\)",
        ),
    ],
)
def test_group_conv_and_pool_reject_bad_inputs(x: Tensor, match: str) -> None:
    group = DihedralGroup(4)
    with pytest.raises(ValueError, match=match):
        GroupConv2d(3, 2, 3, group)(x)
    with pytest.raises(ValueError, match=match):
        GroupPool(group, channels=3)(x)


@pytest.mark.parametrize("basis", ["pixel", "steerable"])
def test_images_smaller_than_the_filter_are_refused(basis: str) -> None:
    lifting = LiftingConv2d(1, 2, 5, CyclicGroup(8), basis=basis)
    with pytest.raises(ValueError, match=r"x: expected images at least as large as the 5x5"):
        lifting(torch.zeros(1, 1, 4, 4))
    assert lifting(torch.zeros(1, 1, 5, 5)).shape == (1, 2, 8, 5, 5)
    group = GroupConv2d(2, 2, 5, CyclicGroup(8), basis=basis)
    with pytest.raises(ValueError, match=r"\(1, 2, 8, 3, 3\)"):
        group(torch.zeros(1, 2, 8, 3, 3))


def test_constructor_rejects_bad_arguments() -> None:
    group = CyclicGroup(4)
    with pytest.raises(ValueError, match=r"kernel_size: expected an odd size.*received 4"):
        LiftingConv2d(1, 1, 4, group)
    with pytest.raises(ValueError, match="in_channels: expected a positive int"):
        GroupConv2d(0, 1, 3, group)
    with pytest.raises(ValueError, match="padding: expected a non-negative int"):
        GroupConv2d(1, 1, 3, group, padding=-1)
    with pytest.raises(ValueError, match="group: expected a finite group"):
        LiftingConv2d(1, 1, 3, SO2())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="group: expected an equirelax FiniteGroup"):
        GroupConv2d(1, 1, 3, "C4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduction: expected 'max' or 'mean'"):
        GroupPool(group, "sum")
