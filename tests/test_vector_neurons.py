"""Tests of the Vector Neuron layers: SO(3) equivariance, the leaky-ReLU formula, validation
and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from _tolerances import ATOL, F64
from equirelax import assert_equivariant
from equirelax.actions import VectorAction
from equirelax.groups import O3, SO3
from equirelax.nn.vector_neurons import VNLeakyReLU, VNLinear


def _features(shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = F64) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _assert_equivariant(module: nn.Module, v: Tensor, group=None, seed: int = 1) -> None:
    """``assert_equivariant`` under the rotations (default SO(3)) of the 3-vector axis, to
    ``ATOL`` of ``v``'s dtype."""
    action = VectorAction(group or SO3(), dim=2)
    generator = torch.Generator().manual_seed(seed)
    assert_equivariant(module, v, action, action, generator=generator, atol=ATOL[v.dtype])


def test_vn_linear_equivariance_and_shape(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    layer = VNLinear(4, 6).to(dtype)
    v = _features((5, 4, 3, 10), dtype=dtype)
    assert layer(v).shape == (5, 6, 3, 10)
    assert (layer.in_channels, layer.out_channels) == (4, 6)
    _assert_equivariant(layer, v)
    # no trailing axis and two trailing axes
    _assert_equivariant(layer, _features((3, 4, 3), dtype=dtype))
    _assert_equivariant(layer, _features((3, 4, 3, 2, 5), dtype=dtype))


@pytest.mark.parametrize("share_direction", [False, True])
def test_vn_leaky_relu_equivariance(share_direction: bool, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    layer = VNLeakyReLU(4, share_direction=share_direction).to(dtype)
    assert layer.direction.shape == ((1, 4) if share_direction else (4, 4))
    assert (layer.in_channels, layer.out_channels) == (4, 4)
    v = _features((6, 4, 3, 20), dtype=dtype)
    out = layer(v)
    assert out.shape == v.shape
    # Both branches are exercised, so the test covers the projection.
    q = torch.einsum("oc,bcdn->bodn", layer.weight, v)
    k = torch.einsum("oc,bcdn->bodn", layer.direction, v)
    dot = (q * k).sum(dim=2)
    assert bool((dot < 0).any())
    assert bool((dot > 0).any())
    _assert_equivariant(layer, v)
    _assert_equivariant(layer, v, group=O3())  # reflections commute as well


def test_stack_equivariance_and_nonlinearity(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        VNLinear(2, 8),
        VNLeakyReLU(8),
        VNLinear(8, 8),
        VNLeakyReLU(8, negative_slope=0.0, share_direction=True),
        VNLinear(8, 3),
    ).to(dtype)
    v = _features((4, 2, 3, 16), dtype=dtype)
    _assert_equivariant(net, v)
    _assert_equivariant(net, v, seed=2)
    # the stack is not linear (the leaky ReLUs bend): f(a + b) != f(a) + f(b)
    # (it is odd and positively homogeneous, as VN layers are, so test additivity)
    w = _features((4, 2, 3, 16), seed=3, dtype=dtype)
    with torch.no_grad():
        assert float((net(v + w) - net(v) - net(w)).abs().max()) > 1e-3


def test_vn_leaky_relu_hand_made_case() -> None:
    layer = VNLeakyReLU(2, negative_slope=0.25).double()
    with torch.no_grad():
        layer.weight.copy_(torch.eye(2, dtype=torch.float64))  # q = V
        layer.direction.copy_(torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64))
    q0 = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    k = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)  # U picks channel 1 as direction
    q1 = torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64)  # <q1, k> = 6 >= 0
    v = torch.stack([q0, k]).unsqueeze(0)  # (1, 2, 3)
    out = layer(v)
    dot = torch.dot(q0, k)
    assert float(dot) == -1.0
    projected = q0 - dot / (k.dot(k) + layer.eps) * k
    expected0 = 0.25 * q0 + 0.75 * projected
    torch.testing.assert_close(out[0, 0], expected0, atol=1e-12, rtol=0)
    # the projected part is (almost) orthogonal to k
    assert abs(float(projected.dot(k))) < 1e-5
    # channel 1: q = k, <k, k> > 0, kept unchanged
    torch.testing.assert_close(out[0, 1], k, atol=1e-12, rtol=0)
    # a positive case through the same layer
    v2 = torch.stack([q1, k]).unsqueeze(0)
    torch.testing.assert_close(layer(v2)[0, 0], q1, atol=1e-12, rtol=0)


def test_gradients_flow() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(VNLinear(3, 5), VNLeakyReLU(5), VNLeakyReLU(5, share_direction=True))
    v = torch.randn(2, 3, 3, 7, requires_grad=True)
    net(v).square().sum().backward()
    assert v.grad is not None
    assert bool(torch.isfinite(v.grad).all())
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().sum()) > 0, name


def test_zero_direction_stays_finite() -> None:
    layer = VNLeakyReLU(2)
    with torch.no_grad():
        layer.direction.zero_()
    out = layer(torch.randn(1, 2, 3, 4))
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize(
    ("module", "shape", "match"),
    [
        (VNLinear(4, 2), (2, 4, 2, 5), r"v: expected vector-neuron features \(B, 4, 3, \.\.\.\)"),
        (VNLinear(4, 2), (2, 3, 3, 5), r"received shape \(2, 3, 3, 5\)"),
        (VNLinear(4, 2), (4, 3), r"received shape \(4, 3\)"),
        (VNLeakyReLU(4), (2, 4, 4), r"v: expected vector-neuron features \(B, 4, 3, \.\.\.\)"),
    ],
)
def test_input_validation(module: nn.Module, shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        module(torch.randn(*shape))


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="in_channels"):
        VNLinear(0, 2)
    with pytest.raises(TypeError, match="out_channels"):
        VNLinear(2, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative_slope"):
        VNLeakyReLU(2, negative_slope=float("nan"))
    with pytest.raises(TypeError, match="negative_slope"):
        VNLeakyReLU(2, negative_slope="0.2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eps"):
        VNLeakyReLU(2, eps=-1.0)
    with pytest.raises(ValueError, match="floating-point"):
        VNLinear(2, 2)(torch.ones(1, 2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"v: expected a torch\.Tensor"):
        VNLinear(2, 2)([[0.0] * 3] * 2)


def test_declared_actions_let_assert_equivariant_check_without_arguments():
    layer = VNLeakyReLU(4).double()
    x = torch.randn(3, 4, 3, 7, dtype=torch.float64)
    err = assert_equivariant(layer, x, atol=ATOL[F64])
    assert err.num_elements == 16
