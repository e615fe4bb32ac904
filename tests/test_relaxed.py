"""The relaxed layer, relax / relaxed_layers / project on models built from the blocks."""

import io

import pytest
import torch
from torch import nn

import equirelax
from equirelax import Relaxed, assert_equivariant, equivariance_error, project, relax
from equirelax.actions import (
    DirectSumAction,
    ImageAction,
    PointAction,
    RepresentationAction,
    TrivialAction,
    VectorAction,
)
from equirelax.free_branches import DenseFreeBranch
from equirelax.groups import O3, SO3, DihedralGroup, Euclidean
from equirelax.nn import (
    EGNN,
    EGNNLayer,
    EquivariantLinear,
    GatedNonlinearity,
    GroupConv2d,
    GroupPool,
    LiftingConv2d,
    VNLeakyReLU,
    VNLinear,
)


def emlp():
    """A small O(3) E-MLP: linear -> gate -> linear."""
    group = O3()
    gated = group.irreps("4x1o")
    gate = GatedNonlinearity(4, gated)
    return nn.Sequential(
        EquivariantLinear(group.irreps("2x0e + 2x1o"), gate.representation_in),
        gate,
        EquivariantLinear(gate.representation_out, group.irreps("1x0e + 1x1o")),
    )


def emlp_actions():
    group = O3()
    return (
        RepresentationAction(group.irreps("2x0e + 2x1o")),
        RepresentationAction(group.irreps("1x0e + 1x1o")),
    )


class ThreeLayerEGNN(nn.Module):
    """Three EGNN layers on (h, x); output (h, x)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(EGNNLayer(4, 16) for _ in range(3))

    def forward(self, h, x):
        for layer in self.layers:
            h, x = layer(h, x)
        return h, x


def egnn_actions():
    group = Euclidean(O3())
    action = DirectSumAction(TrivialAction(group), PointAction(group))
    return action, action


def randomise(model, generator, scale=1.0):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, scale, generator=generator)
    return model


def test_level_zero_is_exactly_equivariant_and_level_positive_is_not(generator):
    group = O3()
    layer = EquivariantLinear(group.irreps("2x0e + 2x1o"), group.irreps("3x1o")).double()
    relaxed = Relaxed(layer, level=0.0).double()
    x = torch.randn(16, 8, dtype=torch.float64, generator=generator)
    relaxed(x)  # builds the free branch
    assert_equivariant(relaxed, x, generator=generator, atol=1e-10)
    relaxed.level.fill_(0.5)
    err = equivariance_error(relaxed, x, relaxed.action_in, relaxed.action_out, generator=generator)
    assert err.mean > 0.05
    assert_equivariant(relaxed, x, bound="levels", generator=generator)


def test_level_bound_rejects_error_beyond_the_level(generator):
    group = SO3()
    layer = EquivariantLinear(group.irreps("1x1o"), group.irreps("1x1o")).double()
    relaxed = Relaxed(layer, level=0.1).double()
    x = torch.randn(8, 3, dtype=torch.float64, generator=generator)
    relaxed(x)
    assert_equivariant(relaxed, x, bound="levels", generator=generator)
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(relaxed, x, generator=generator)


@pytest.mark.parametrize("kind", ["emlp", "egnn", "gcnn", "vn"])
def test_relax_then_project_gives_exact_equivariance(kind, generator):
    if kind == "emlp":
        model, (a_in, a_out) = emlp().double(), emlp_actions()
        x = torch.randn(6, 8, dtype=torch.float64, generator=generator)
        expected = 2
    elif kind == "egnn":
        model, (a_in, a_out) = ThreeLayerEGNN().double(), egnn_actions()
        x = (
            torch.randn(4, 5, 4, dtype=torch.float64, generator=generator),
            torch.randn(4, 5, 3, dtype=torch.float64, generator=generator),
        )
        expected = 3
    elif kind == "gcnn":
        group = DihedralGroup(4)
        model = nn.Sequential(
            LiftingConv2d(1, 3, 3, group), nn.ReLU(), GroupConv2d(3, 2, 3, group), GroupPool(group)
        ).double()
        a_in, a_out = ImageAction(group), ImageAction(group)
        x = torch.randn(2, 1, 9, 9, dtype=torch.float64, generator=generator)
        expected = 2
    else:
        model = nn.Sequential(VNLinear(2, 4), VNLeakyReLU(4), VNLinear(4, 1)).double()
        a_in = a_out = VectorAction(SO3(), dim=2)
        x = torch.randn(3, 2, 3, 10, dtype=torch.float64, generator=generator)
        expected = 2
    randomise(model, generator, 0.3)
    relaxed = relax(model, level=0.5, example_input=x)
    randomise(relaxed, generator, 0.3)
    assert len(equirelax.relaxed_layers(relaxed)) == expected
    err = equivariance_error(relaxed, x, a_in, a_out, generator=generator)
    assert err.mean > 1e-3, "a relaxed model with random free branches must be measurably off"
    projected = project(relaxed)
    assert not equirelax.relaxed_layers(projected)
    assert not any(isinstance(m, Relaxed | DenseFreeBranch) for m in projected.modules())
    # relative: random O(1) weights make some outputs large
    assert_equivariant(projected, x, a_in, a_out, generator=generator, bound=1e-12)
    # projection is the same function as the relaxed model with every level at 0
    for layer in equirelax.relaxed_layers(relaxed).values():
        layer.level.zero_()
    torch.testing.assert_close(_flat(relaxed, x), _flat(projected, x))


def _flat(model, x):
    y = model(*x) if isinstance(x, tuple) else model(x)
    return torch.cat([t.flatten() for t in y]) if isinstance(y, tuple) else y


def test_projected_model_is_plain_pytorch():
    relaxed = relax(emlp(), example_input=torch.randn(2, 8))
    projected = project(relaxed)
    modules = {type(m).__module__ for m in projected.modules()}
    assert not any(name.startswith("equirelax.relaxed") for name in modules)
    restored = emlp()  # the projected state dict loads into the unrelaxed architecture
    restored.load_state_dict(projected.state_dict())
    x = torch.randn(3, 8)
    torch.testing.assert_close(restored(x), projected(x))
    buffer = io.BytesIO()  # and the whole module saves and loads (no closures inside)
    torch.save(projected, buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.load(buffer, weights_only=False)(x), projected(x))
    assert len(equirelax.relaxed_layers(relaxed)) == 2, "project must not change its input"


def test_relax_selects_by_type_and_by_predicate_and_leaves_the_input_alone():
    model = emlp()
    by_type = relax(model, EquivariantLinear)
    assert list(equirelax.relaxed_layers(by_type)) == ["0", "2"]
    by_name = relax(model, lambda name, m: name == "2")
    assert list(equirelax.relaxed_layers(by_name)) == ["2"]
    assert not equirelax.relaxed_layers(model)
    with pytest.raises(ValueError, match=r"select: .*Conv3d.* matched no layer"):
        relax(model, nn.Conv3d)
    with pytest.raises(TypeError, match="select"):
        relax(model, 3)


class _Scale(nn.Module):
    """A layer type the library does not know, which owns its free branch."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x

    def free_branch(self) -> nn.Module:
        return nn.Linear(3, 3, bias=False)


def test_a_layer_type_owns_its_free_branch_and_a_registered_factory_overrides_it():
    model = nn.Sequential(_Scale(), nn.ReLU(), _Scale())
    relaxed = relax(model)  # selected by default: the type has a free_branch method
    assert list(equirelax.relaxed_layers(relaxed)) == ["0", "2"]
    assert all(
        isinstance(layer.free, nn.Linear) for layer in equirelax.relaxed_layers(relaxed).values()
    )
    for layer_type in (EquivariantLinear, LiftingConv2d, GroupConv2d, EGNNLayer, VNLinear):
        assert callable(getattr(layer_type, "free_branch", None)), layer_type
    equirelax.register_free_branch(_Scale, lambda layer: nn.Linear(3, 3))
    try:
        layers = equirelax.relaxed_layers(relax(model))
        assert all(layer.free.bias is not None for layer in layers.values())
    finally:
        equirelax.relaxed._FACTORIES.pop(_Scale)


def test_default_free_branch_is_built_from_stated_shapes_else_at_the_first_call():
    linear = Relaxed(nn.Linear(4, 6), level=1.0)  # nn.Linear states its shapes: built at once
    assert type(linear.free) is DenseFreeBranch
    assert (linear.free.in_shape, linear.free.out_shape) == ((4,), (6,))
    assert linear(torch.randn(2, 5, 4)).shape == (2, 5, 6)
    conv = Relaxed(nn.Conv1d(2, 3, 3), level=1.0, feature_dims=2)  # shapes: from the input
    assert conv.free_is_lazy
    assert conv(torch.randn(5, 2, 10)).shape == (5, 3, 8)
    assert type(conv.free) is DenseFreeBranch
    assert (conv.free.in_shape, conv.free.out_shape) == ((2, 10), (3, 8))


@pytest.mark.parametrize(("init", "expected"), [("zero", 0.0), ("small", 1e-3)])
def test_free_branch_init_options(init, expected):
    torch.manual_seed(0)
    reference = nn.Linear(10, 10)
    free = nn.Linear(10, 10)
    free.load_state_dict(reference.state_dict())
    Relaxed(nn.Identity(), free, init=init)
    torch.testing.assert_close(free.weight, reference.weight * expected)


def test_norm_bounds():
    spectral = Relaxed(nn.Identity(), nn.Linear(8, 8), norm_bound="spectral")
    for _ in range(20):  # power iterations converge while training
        spectral(torch.randn(4, 8))
    sigma = torch.linalg.matrix_norm(spectral.free.weight.detach(), ord=2)
    assert abs(float(sigma) - 1.0) < 1e-2
    frobenius = Relaxed(nn.Identity(), nn.Linear(8, 8), norm_bound="frobenius")
    norm = torch.linalg.matrix_norm(frobenius.free.weight.detach())
    assert abs(float(norm) - 1.0) < 1e-6


def test_learnable_level_gets_gradients():
    layer = Relaxed(nn.Linear(3, 3), nn.Linear(3, 3), level=0.5)
    assert not layer.level_is_learnable
    layer.set_level_learnable()
    assert layer.level_is_learnable
    assert any(p is layer.level for p in layer.parameters())
    layer(torch.randn(4, 3)).sum().backward()
    assert layer.level.grad is not None
    layer.set_level_learnable(False)
    assert "level" in dict(layer.named_buffers())
    assert float(layer.level) == 0.5


def test_relaxed_rejects_bad_arguments():
    with pytest.raises(TypeError, match="equivariant"):
        Relaxed("not a module")
    with pytest.raises(ValueError, match="init: expected one of"):
        Relaxed(nn.Identity(), init="ones")
    with pytest.raises(ValueError, match="norm_bound: expected one of"):
        Relaxed(nn.Identity(), norm_bound="l1")
    layer = Relaxed(nn.Linear(3, 3), nn.Linear(3, 4))
    with pytest.raises(ValueError, match=r"free: expected .* output shape \(2, 3\)"):
        layer(torch.randn(2, 3))


def test_readme_quickstart_runs():
    """The README's example, kept in step with it: relax an EGNN, measure, project."""
    e3 = Euclidean(O3())
    action = DirectSumAction(TrivialAction(e3), PointAction(e3))
    h, x = torch.randn(32, 5, 16), torch.randn(32, 5, 3)
    relaxed = relax(EGNN(16, 32, num_layers=4), level=1.0, example_input=(h, x))
    errors = [
        equivariance_error(model, (h, x), action, action, dtype=torch.float64)
        for model in (relaxed, project(relaxed))
    ]
    assert errors[0].mean > 1e-3
    assert errors[1].max < 1e-9
