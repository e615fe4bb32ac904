"""Equivariance metrics: sampled errors, per-layer errors, Lie derivatives, input checks."""

import pytest
import torch
from torch import nn

from equirelax import Relaxed, assert_equivariant, equivariance_error, invariance_error, relax
from equirelax.actions import ImageAction, PointAction, RepresentationAction, VectorAction
from equirelax.groups import O3, SO2, SO3, CyclicGroup, Euclidean
from equirelax.metrics import layer_equivariance_errors, lie_derivative
from equirelax.nn import EquivariantLinear, VNLinear


def test_error_is_zero_for_equivariant_and_matches_a_hand_computation(generator):
    group = SO3()
    action = VectorAction(group)
    x = torch.randn(5, 3, dtype=torch.float64, generator=generator)
    assert equivariance_error(lambda v: 2.0 * v, x, action, action).max_absolute < 1e-12
    # f(v) = v + c is not equivariant: ||f(gx) - g f(x)|| = ||c - g c||
    c = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    g = group.sample(4, generator, dtype=torch.float64)
    err = equivariance_error(lambda v: v + c, x, action, action, elements=g)
    expected = torch.linalg.vector_norm(c - g @ c, dim=1)  # one value per element
    scale = torch.linalg.vector_norm(x + c, dim=1).mean()
    assert err.mean == pytest.approx(float(expected.mean() / scale), rel=1e-9)
    assert err.max_absolute == pytest.approx(float(expected.max()), rel=1e-9)
    assert err.num_elements == 4


def test_finite_groups_use_every_element():
    action = ImageAction(CyclicGroup(4))
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    seen = []

    def f(images):
        seen.append(images.shape[0])
        return images

    err = equivariance_error(f, x, action, action)
    assert err.num_elements == 4
    assert seen == [2, 8]
    assert err.max_absolute < 1e-12


def test_invariance_error_of_a_norm_and_of_a_coordinate(generator):
    action = PointAction(Euclidean(SO3()))
    x = torch.randn(6, 4, 3, dtype=torch.float64, generator=generator)

    def pairwise(points):
        return torch.cdist(points, points).flatten(1)

    assert invariance_error(pairwise, x, action, generator=generator).max_absolute < 1e-10
    assert invariance_error(lambda p: p[:, 0, :], x, action, generator=generator).mean > 0.1


def test_float64_on_request_converts_module_and_input(generator):
    layer = EquivariantLinear(SO3().irreps("3x1o"), SO3().irreps("3x1o"))
    x = torch.randn(4, 9, generator=generator)
    err32 = equivariance_error(layer, x, layer.action_in, layer.action_out, generator=generator)
    err64 = equivariance_error(
        layer, x, layer.action_in, layer.action_out, generator=generator, dtype=torch.float64
    )
    assert err64.max_absolute < 1e-12 < err32.max_absolute
    assert next(layer.parameters()).dtype == torch.float32, "the module itself is not changed"


def test_per_layer_errors_find_the_relaxed_layer(generator):
    group = O3()
    rep_a, rep_b = group.irreps("2x0e + 2x1o"), group.irreps("4x1o")
    model = nn.Sequential(EquivariantLinear(rep_a, rep_b), EquivariantLinear(rep_b, rep_b))
    model = relax(model, level=0.0, example_input=torch.randn(2, rep_a.dim)).double()
    model[1].level.fill_(1.0)
    x = torch.randn(8, rep_a.dim, dtype=torch.float64, generator=generator)
    errors = layer_equivariance_errors(model, x, generator=generator)
    assert set(errors) == {"0", "1"}
    assert errors["0"].max_absolute < 1e-10
    assert errors["1"].mean > 1e-2
    with pytest.raises(ValueError, match="layers: no module named 'nope'"):
        layer_equivariance_errors(model, x, {"nope": (model[0].action_in, model[0].action_out)})


@torch.no_grad()
def path_difference(f, x, action_in, action_out, algebra, t=1e-5):
    """Central differences of ``t -> A_out(exp(-tA)) f(A_in(exp(tA)) x)`` at 0, ``(k, B, D)``."""
    out = []
    for a in algebra:
        plus, minus = torch.linalg.matrix_exp(t * a)[None], torch.linalg.matrix_exp(-t * a)[None]

        def moved(gp, gm):
            return action_out(gm, f(action_in(gp, x))).flatten(1)

        out.append((moved(plus, minus) - moved(minus, plus)) / (2 * t))
    return torch.stack(out)


def test_lie_derivative_matches_finite_difference_and_vanishes_when_equivariant(generator):
    group = SO3()
    action = VectorAction(group, dim=2)
    x = torch.randn(3, 2, 3, 5, dtype=torch.float64, generator=generator)
    layer = VNLinear(2, 2).double()
    assert lie_derivative(layer, x, action, action).abs().max() < 1e-12
    dense = Relaxed(layer, level=1.0).double()
    dense(x)
    derivative = lie_derivative(dense, x, action, action)
    assert derivative.shape == (3, 3, 2 * 3 * 5)
    assert derivative.abs().max() > 1e-3
    expected = path_difference(dense, x, action, action, group.lie_algebra())
    torch.testing.assert_close(derivative, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("group", [SO3(), O3()], ids=["SO3", "O3"])
def test_lie_derivative_between_so3_irreps_is_finite_and_exact(group, generator):
    """Irreps with l = 1 and 2: Wigner matrices are not differentiated at the identity (their
    atan2 / hypot made the derivative NaN), the closed-form d rho(A) x is used instead."""
    rep_in, rep_out = group.irreps("2x0e + 1x1o + 1x2e"), group.irreps("1x0e + 2x1o + 1x2e")
    a_in, a_out = RepresentationAction(rep_in), RepresentationAction(rep_out)
    x = torch.randn(6, rep_in.dim, dtype=torch.float64, generator=generator)
    torch.manual_seed(3)
    equivariant = EquivariantLinear(rep_in, rep_out).double()
    derivative = lie_derivative(equivariant, x, a_in, a_out)
    assert derivative.shape == (3, 6, rep_out.dim)
    assert torch.isfinite(derivative).all()
    assert derivative.abs().max() < 1e-10
    generic = lie_derivative(nn.Linear(rep_in.dim, rep_out.dim).double(), x, a_in, a_out)
    assert torch.isfinite(generic).all()
    assert generic.abs().max() > 1e-2
    mlp = nn.Sequential(nn.Linear(rep_in.dim, 16), nn.Tanh(), nn.Linear(16, rep_out.dim)).double()
    derivative = lie_derivative(mlp, x, a_in, a_out)
    expected = path_difference(mlp, x, a_in, a_out, group.lie_algebra())
    assert expected.abs().max() > 1e-2
    torch.testing.assert_close(derivative, expected, atol=1e-8, rtol=1e-6)


def test_lie_derivative_along_a_given_algebra(generator):
    """Combinations of the basis use the closed form; a matrix outside so(3) takes the path:
    for f(x) = W x + b and a symmetric S, d/dt exp(-tS) f(exp(tS) x) = W S x - S (W x + b)."""
    group = SO3()
    action = RepresentationAction(group.irreps("1x1o + 1x2e"))
    x = torch.randn(4, 8, dtype=torch.float64, generator=generator)
    f = nn.Sequential(nn.Linear(8, 8), nn.Tanh()).double()
    basis = lie_derivative(f, x, action, action)
    algebra = torch.stack([2 * group.lie_algebra()[0] - group.lie_algebra()[2]])
    combined = lie_derivative(f, x, action, action, algebra=algebra)
    torch.testing.assert_close(combined, 2 * basis[:1] - basis[2:], atol=1e-12, rtol=0)
    vectors, linear = VectorAction(group), nn.Linear(3, 3).double()
    s = torch.randn(3, 3, dtype=torch.float64, generator=generator)
    s = (s + s.T)[None]
    v = x[:, :3]
    derivative = lie_derivative(linear, v, vectors, vectors, algebra=s)
    expected = linear(v @ s[0].T) - linear.bias - linear(v) @ s[0].T
    torch.testing.assert_close(derivative[0], expected.detach(), atol=1e-12, rtol=0)


class ScaledTanh(nn.Module):
    """A nonlinear map of vectors with a per-sample keyword tensor ``scale`` ``(B, 1, 1)``."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, points, *, scale):
        return self.net(points) * scale


def test_lie_derivative_with_batched_keywords_and_a_given_output(generator):
    group = Euclidean(SO3())
    a_in, a_out = PointAction(group), VectorAction(group)
    x = torch.randn(5, 4, 3, dtype=torch.float64, generator=generator)
    scale = torch.rand(5, 1, 1, dtype=torch.float64, generator=generator) + 0.5
    f = ScaledTanh().double()
    derivative = lie_derivative(f, x, a_in, a_out, kwargs={"scale": scale})
    assert derivative.shape == (6, 5, 12)  # three rotations, three translations
    expected = path_difference(lambda p: f(p, scale=scale), x, a_in, a_out, group.lie_algebra())
    torch.testing.assert_close(derivative, expected, atol=1e-8, rtol=1e-6)
    y = f(x, scale=scale)
    given = lie_derivative(f, x, a_in, a_out, kwargs={"scale": scale}, output=y, check=False)
    torch.testing.assert_close(given, derivative, atol=0, rtol=0)
    (weight,) = torch.autograd.grad(given.pow(2).sum(), f.net[0].weight)
    assert torch.isfinite(weight).all()
    assert weight.abs().sum() > 0


def test_lie_derivative_of_translations_for_points(generator):
    group = Euclidean(SO2())
    action = PointAction(group)
    x = torch.randn(4, 6, 2, dtype=torch.float64, generator=generator)
    centred = lie_derivative(lambda p: p - p.mean(1, keepdim=True), x, action, VectorAction(group))
    assert centred.abs().max() < 1e-12  # relative positions: rotate, ignore translations
    shifted = lie_derivative(lambda p: p + 1.0, x, action, action)
    assert shifted.shape[0] == 3  # one rotation and two translations
    assert shifted[0].abs().max() > 0.5  # rotating the constant shift
    assert shifted[1:].abs().max() < 1e-12


def test_lie_derivative_rejects_finite_groups():
    action = ImageAction(CyclicGroup(4))
    with pytest.raises(ValueError, match="no Lie algebra"):
        lie_derivative(lambda x: x, torch.zeros(1, 1, 4, 4), action, action)


def test_assert_equivariant_fails_on_a_broken_module(generator):
    layer = nn.Linear(3, 3).double()
    action = VectorAction(SO3())
    x = torch.randn(4, 3, dtype=torch.float64, generator=generator)
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(layer, x, action, action)
    with pytest.raises(ValueError, match="action_in"):
        assert_equivariant(layer, x)
    with pytest.raises(ValueError, match="bound: expected a number or 'levels'"):
        assert_equivariant(layer, x, action, action, bound="lots")


def test_bad_inputs_are_named():
    action = VectorAction(SO3())
    with pytest.raises(ValueError, match="x: expected finite values"):
        equivariance_error(lambda v: v, torch.tensor([[float("nan"), 0.0, 0.0]]), action, action)
    with pytest.raises(ValueError, match="x: expected size 3 along dimension -1"):
        equivariance_error(lambda v: v, torch.zeros(2, 4), action, action)
    with pytest.raises(ValueError, match="action_out: expected an action of SO"):
        equivariance_error(lambda v: v, torch.zeros(2, 3), action, VectorAction(O3()))
    with pytest.raises(TypeError, match="action_in: expected an Action"):
        equivariance_error(lambda v: v, torch.zeros(2, 3), "rotations")
    rep = RepresentationAction(SO3().irreps("1x1o"))
    with pytest.raises(ValueError, match="elements"):
        equivariance_error(lambda v: v, torch.zeros(2, 3), rep, rep, elements=torch.zeros(2, 2))
