"""Tests of the steerable building blocks (SteerableLinear, SteerableGate, SEGNNLayer) and the
N-body SEGNN: agreement with e3nn, O(3) / E(3) and permutation equivariance, relaxation and
projection, Lie derivatives of the free branches, and input validation."""

from __future__ import annotations

import copy
import functools
import io
import math
import subprocess
import sys

import pytest
import torch
from e3nn import o3
from torch import Tensor

import equirelax
from _tolerances import ATOL, F64
from equirelax.actions import (
    Action,
    DirectSumAction,
    PermutationAction,
    PointAction,
    RepresentationAction,
    TrivialAction,
    VectorAction,
)
from equirelax.free_branches import SteerableFreeBranch
from equirelax.groups import O3, Euclidean, SymmetricGroup
from equirelax.metrics import equivariance_error, lie_derivative
from equirelax.models.segnn import NBodySEGNN, _spherical_harmonics
from equirelax.nn import SEGNNLayer, SteerableGate, SteerableLinear
from equirelax.strategies.cr import free_branch_terms

ATTR = "1x0e + 1x1o"
E3 = Euclidean(O3())
PARTICLES_IN = DirectSumAction(PointAction(E3), VectorAction(E3), TrivialAction(E3))
PARTICLES_OUT = PointAction(E3)

# (irreps_in, irreps_attr, irreps_out): elementwise paths, l = 2, odd scalars, attr mul > 1.
CASES = [
    ("4x0e + 2x1o + 3x0e + 1x1e", ATTR, "3x0e + 2x1o + 1x1e + 2x2e"),
    ("2x0e + 2x1o", "2x0e + 1x1o + 1x2e", "3x0e + 2x1o + 2x2o + 1x2e"),
    ("3x0o + 2x1e + 1x0e", ATTR, "2x0e + 2x1o + 1x1e + 2x0o"),
]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64)


def _apply(irreps: str | o3.Irreps, g: Tensor, x: Tensor) -> Tensor:
    """``D(g) x`` with the library's representation matrices of ``irreps`` (one g per row)."""
    matrices = O3().irreps(irreps)(g, torch.float64)
    return torch.einsum("bij,b...j->b...i", matrices, x)


def _particles(batch: int = 3, n: int = 5, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    gen = _gen(seed)
    x = torch.randn(batch, n, 3, generator=gen, dtype=torch.float64)
    v = torch.randn(batch, n, 3, generator=gen, dtype=torch.float64)
    q = torch.randint(0, 2, (batch, n, 1), generator=gen).double() * 2 - 1
    return x, v, q


def _model(seed: int = 0, **kwargs) -> NBodySEGNN:
    """A small float64 model whose output layer is O(1), so its displacement is visible."""
    torch.manual_seed(seed)
    model = NBodySEGNN(kwargs.pop("hidden_irreps", "8x0e + 4x1o"), **kwargs).double()
    with torch.no_grad():
        model.head_2.weight.normal_()
    return model


def _e3nn_product(irreps_in: str, irreps_attr: str, irreps_out: str) -> o3.TensorProduct:
    """e3nn's ``FullyConnectedTensorProduct`` in float64 (its coefficients are buffers of the
    default dtype at construction)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return o3.FullyConnectedTensorProduct(irreps_in, irreps_attr, irreps_out)
    finally:
        torch.set_default_dtype(previous)


# --------------------------------------------------------------------------- SteerableLinear


@pytest.mark.parametrize(("irreps_in", "irreps_attr", "irreps_out"), CASES)
def test_steerable_linear_is_e3nns_fully_connected_tensor_product(
    irreps_in: str, irreps_attr: str, irreps_out: str
) -> None:
    layer = SteerableLinear(irreps_in, irreps_attr, irreps_out, bias=False).double()
    reference = _e3nn_product(irreps_in, irreps_attr, irreps_out)
    with torch.no_grad():
        layer.weight.copy_(reference.weight)
    x, a = _randn(7, layer.in_features, seed=1), _randn(7, layer.attr_features, seed=2)
    assert layer.weight_numel == reference.weight_numel
    torch.testing.assert_close(layer(x, a), reference(x, a), atol=1e-12, rtol=0)


@pytest.mark.parametrize(("irreps_in", "irreps_attr", "irreps_out"), CASES)
def test_linear_parametrization_is_segnns_rescaled_tensor_product(
    irreps_in: str, irreps_attr: str, irreps_out: str
) -> None:
    """SEGNN's O3TensorProduct: e3nn's product times sqrt(fan-in) per output block, weights and
    biases U(-1/sqrt(fan-in), 1/sqrt(fan-in)), the bias added after the rescaling."""
    torch.manual_seed(0)
    layer = SteerableLinear(irreps_in, irreps_attr, irreps_out, parametrization="linear")
    layer = layer.double()
    reference = _e3nn_product(irreps_in, irreps_attr, irreps_out)
    with torch.no_grad():
        reference.weight.copy_(layer.weight)
    fan_in = {
        i_out: sum(
            reference.irreps_in1[i].mul * reference.irreps_in2[j].mul
            for i, j, k, *_ in reference.instructions
            if k == i_out
        )
        for _, _, i_out, *_ in reference.instructions
    }
    gain = torch.cat(
        [
            torch.full((mul * ir.dim,), math.sqrt(fan_in[k]), dtype=torch.float64)
            for k, (mul, ir) in enumerate(reference.irreps_out)
        ]
    )
    for weight, (_, _, k, *_) in zip(reference.weight_views(), reference.instructions, strict=True):
        assert weight.abs().max() <= 1 / math.sqrt(fan_in[k])
    x, a = _randn(7, layer.in_features, seed=1), _randn(7, layer.attr_features, seed=2)
    expected = reference(x, a) * gain
    scalars = [
        (k, sl)
        for k, ((_, ir), sl) in enumerate(
            zip(reference.irreps_out, reference.irreps_out.slices(), strict=True)
        )
        if ir == o3.Irrep("0e")
    ]
    if layer.bias is not None:
        biases = layer.bias.split([sl.stop - sl.start for _, sl in scalars])
        for (k, sl), bias in zip(scalars, biases, strict=True):
            assert bias.abs().max() <= 1 / math.sqrt(fan_in[k])
            assert bias.abs().max() > 0
            expected[:, sl] += bias
    torch.testing.assert_close(layer(x, a), expected, atol=1e-12, rtol=0)


def test_an_adam_step_moves_the_linear_parametrization_by_sqrt_fan_in_more() -> None:
    """Same function class, different optimisation: one Adam step from the same function
    moves the output of the ``"linear"`` layer about sqrt(fan-in) times more."""
    irreps = "16x0e + 8x1o"
    x, a = _randn(64, o3.Irreps(irreps).dim, seed=1), _randn(64, 4, seed=2)
    change = {}
    for parametrization in ("e3nn", "linear"):
        torch.manual_seed(0)
        layer = SteerableLinear(irreps, ATTR, irreps, bias=False, parametrization=parametrization)
        layer = layer.double()
        before = layer(x, a).detach()
        optimiser = torch.optim.Adam(layer.parameters(), lr=1e-3)
        layer(x, a).pow(2).sum().backward()
        optimiser.step()
        change[parametrization] = float((layer(x, a).detach() - before).norm())
    fan_in = 16 + 8  # every output block: 16 scalars x 1 + 8 vectors x 1 (attribute 0e + 1o)
    ratio = change["linear"] / change["e3nn"]
    assert 0.5 * math.sqrt(fan_in) < ratio < 2 * math.sqrt(fan_in)


def test_input_in_broadcast_parts_equals_the_concatenation() -> None:
    whole = SteerableLinear("4x0e + 2x1o + 4x0e + 2x1o + 2x0e", ATTR, "3x0e + 2x1o + 2x0e")
    parts = SteerableLinear(["4x0e + 2x1o", "4x0e + 2x1o", "2x0e"], ATTR, "3x0e + 2x1o + 2x0e")
    whole, parts = whole.double(), parts.double()
    parts.load_state_dict(whole.state_dict())
    h, e, a = _randn(2, 5, 10, seed=1), _randn(2, 5, 5, 2, seed=2), _randn(2, 5, 5, 4, seed=3)
    cat = torch.cat([h.unsqueeze(2).expand(2, 5, 5, 10), h.unsqueeze(1).expand(2, 5, 5, 10), e], -1)
    torch.testing.assert_close(parts(h.unsqueeze(2), h.unsqueeze(1), e, a), whole(cat, a))


@pytest.mark.parametrize(("irreps_in", "irreps_attr", "irreps_out"), CASES)
def test_steerable_linear_is_o3_equivariant(
    irreps_in: str, irreps_attr: str, irreps_out: str
) -> None:
    layer = SteerableLinear(irreps_in, irreps_attr, irreps_out).double()
    with torch.no_grad():
        layer.bias.normal_()
    batch = 16
    x, a = _randn(batch, layer.in_features, seed=1), _randn(batch, layer.attr_features, seed=2)
    g = O3().sample(batch, _gen(3), dtype=torch.float64)  # rotations and reflections
    assert (torch.linalg.det(g) < 0).any()
    assert (torch.linalg.det(g) > 0).any()
    moved = layer(_apply(irreps_in, g, x), _apply(irreps_attr, g, a))
    assert torch.allclose(moved, _apply(irreps_out, g, layer(x, a)), atol=ATOL[F64], rtol=0)
    # The same through the library's metric and the layer's own actions.
    err = equivariance_error(layer, (x, a), layer.action_in, layer.action_out, generator=_gen())
    assert err.max_absolute < ATOL[F64]


def test_steerable_linear_broadcasts_and_runs_in_float32() -> None:
    layer = SteerableLinear(["4x0e + 2x1o", "1x0e"], ATTR, "3x0e + 2x1o")
    y = layer(torch.randn(2, 1, 10), torch.randn(1, 5, 1), torch.randn(2, 5, 4))
    assert y.shape == (2, 5, 9)
    assert y.dtype == torch.float32
    y.sum().backward()
    assert layer.weight.grad is not None
    assert torch.isfinite(layer.weight.grad).all()


def test_bias_only_on_even_scalars() -> None:
    layer = SteerableLinear("2x0e + 1x1o + 1x0o", ATTR, "3x0e + 1x1o + 2x0o + 2x0e").double()
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.arange(1.0, 6.0))
    y = layer(_randn(1, 6), _randn(1, 4))
    expected = torch.tensor([[1.0, 2, 3, 0, 0, 0, 0, 0, 4, 5]], dtype=torch.float64)
    torch.testing.assert_close(y, expected)


# --------------------------------------------------------------------------- SteerableGate


def test_gate_layout_and_equivariance() -> None:
    gate = SteerableGate("3x0e + 2x1o + 1x0o + 1x2e").double()
    assert str(gate.irreps_in) == "3x0e+1x0o+3x0e+2x1o+1x2e"
    x = _randn(16, gate.in_features, seed=1)
    assert gate(x).shape == (16, gate.out_features)
    err = equivariance_error(gate, x, gate.action_in, gate.action_out, generator=_gen())
    assert err.max_absolute < ATOL[F64]


def test_gate_activations_have_unit_second_moment() -> None:
    gate = SteerableGate("1000x0e + 1000x1o")
    z = torch.randn(200, gate.in_features, generator=_gen(), dtype=torch.float64)
    y = gate.double()(z)
    assert abs(float(y[:, :1000].pow(2).mean()) - 1) < 0.02  # c SiLU(z)
    # c sigmoid(g) v with independent g, v: E[(c s)^2] E[v^2] = 1.
    assert abs(float(y[:, 1000:].pow(2).mean()) - 1) < 0.02


# --------------------------------------------------------------------------- every layer


def _steerable_linear() -> tuple[torch.nn.Module, tuple[Tensor, ...], Action, Action]:
    layer = SteerableLinear(*CASES[0])
    with torch.no_grad():
        layer.bias.normal_(generator=_gen(4))
    x = (_randn(4, layer.in_features, seed=1), _randn(4, layer.attr_features, seed=2))
    return layer, x, layer.action_in, layer.action_out


def _steerable_gate() -> tuple[torch.nn.Module, Tensor, Action, Action]:
    layer = SteerableGate("3x0e + 2x1o + 1x0o + 1x2e")
    return layer, _randn(4, layer.in_features, seed=1), layer.action_in, layer.action_out


def _segnn_layer() -> tuple[torch.nn.Module, tuple[Tensor, ...], Action, Action]:
    """O(3) acts on the node features and both attributes; the edge features are invariant."""
    layer = SEGNNLayer("4x0e + 2x1o", ATTR, edge_features=1)
    hidden, attr = (RepresentationAction(O3().irreps(i)) for i in ("4x0e + 2x1o", ATTR))
    x = (
        _randn(2, 4, 10, seed=1),
        _randn(2, 4, 4, 4, seed=2),
        _randn(2, 4, 4, seed=3),
        _randn(2, 4, 4, 1, seed=4),
    )
    return layer, x, DirectSumAction(hidden, attr, attr, TrivialAction(O3())), hidden


LAYERS = {
    "SteerableLinear": _steerable_linear,
    "SteerableGate": _steerable_gate,
    "SEGNNLayer": _segnn_layer,
}


@pytest.mark.parametrize("name", LAYERS)
def test_every_layer_passes_assert_equivariant(name: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    layer, x, action_in, action_out = LAYERS[name]()
    x = tuple(t.to(dtype) for t in x) if isinstance(x, tuple) else x.to(dtype)
    err = equirelax.assert_equivariant(
        layer.to(dtype), x, action_in, action_out, generator=_gen(5), atol=ATOL[dtype]
    )
    assert err.output_norm > 0.1


# --------------------------------------------------------------------------- SEGNN


def test_spherical_harmonics_are_e3nns_and_zero_vectors_give_no_nan() -> None:
    vectors = torch.cat([_randn(20, 3, seed=1), torch.zeros(1, 3, dtype=torch.float64)])
    vectors.requires_grad_(True)
    y = _spherical_harmonics(vectors)
    reference = o3.spherical_harmonics(ATTR, vectors, normalize=True, normalization="component")
    torch.testing.assert_close(y, reference, atol=1e-14, rtol=0)
    torch.testing.assert_close(y[-1], torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    (grad,) = torch.autograd.grad(y.sum(), vectors)
    (expected,) = torch.autograd.grad(reference.sum(), vectors)
    torch.testing.assert_close(grad, expected, atol=1e-12, rtol=0)


EARLIER_INPUTS = {
    "harmonics_normalization": "component",
    "relative_position": "x_i - x_j",
    "edge_distance": "squared",
}


@pytest.mark.parametrize("inputs", [{}, EARLIER_INPUTS], ids=["defaults", "earlier-inputs"])
def test_model_is_e3_equivariant(inputs: dict[str, str]) -> None:
    model = _model(**inputs)
    x, v, q = _particles()
    out = model(x, v, q)
    assert out.shape == x.shape
    assert (out - x).abs().max() > 1e-2
    err = equivariance_error(model, (x, v, q), PARTICLES_IN, PARTICLES_OUT, generator=_gen())
    assert err.max_absolute < ATOL[F64]
    assert repr(model.action_in) == repr(PARTICLES_IN)
    assert repr(model.action_out) == repr(PARTICLES_OUT)


def _first_layer_inputs(model: NBodySEGNN, particles: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The ``(h, a_ij, a_i, edge_features)`` the model hands its first message-passing layer."""
    seen: list[tuple[Tensor, ...]] = []
    handle = model.layers[0].register_forward_hook(lambda _m, args, _out: seen.append(args))
    model(*particles)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize(
    ("inputs", "normalization", "sign", "node_factor", "power"),
    [({}, "integral", -1.0, 1.0, 1), (EARLIER_INPUTS, "component", 1.0, 0.5, 2)],
    ids=["defaults", "earlier-inputs"],
)
def test_attributes_and_edge_invariants_match_e3nn(
    inputs: dict[str, str], normalization: str, sign: float, node_factor: float, power: int
) -> None:
    """a_ij = Y(s (x_i - x_j)), a_i = c (mean_{j != i} a_ij + Y(v_i)) and |x_i - x_j|^p from
    e3nn's spherical harmonics: the defaults are the official SEGNN's transform (``integral``,
    ``x_j - x_i``, summed node terms, the distance)."""
    x, v, q = _particles(batch=2, n=4)
    _, edge_attr, node_attr, edge_features = _first_layer_inputs(_model(**inputs), (x, v, q))
    relative = sign * (x[:, :, None] - x[:, None])
    harmonics = functools.partial(
        o3.spherical_harmonics, ATTR, normalize=True, normalization=normalization
    )
    off = ~torch.eye(4, dtype=torch.bool)
    torch.testing.assert_close(edge_attr[:, off], harmonics(relative)[:, off])
    mean = harmonics(relative)[:, off].reshape(2, 4, 3, 4).mean(dim=2)
    torch.testing.assert_close(node_attr, node_factor * (mean + harmonics(v)))
    distance = relative.norm(dim=-1) ** power
    torch.testing.assert_close(edge_features[..., 0][:, off], distance[:, off])
    torch.testing.assert_close(edge_features[..., 1], q * q.transpose(1, 2))


def test_model_is_permutation_equivariant() -> None:
    model = _model(num_layers=2)
    s5 = SymmetricGroup(5)
    per_particle = PermutationAction(s5)
    action_in = DirectSumAction(per_particle, per_particle, per_particle)
    err = equivariance_error(model, _particles(batch=2), action_in, per_particle)
    assert err.num_elements == 120
    assert err.max_absolute < ATOL[F64]


def test_layer_uses_no_self_loops_and_sums_or_averages() -> None:
    torch.manual_seed(0)
    layers = {
        agg: SEGNNLayer("4x0e + 2x1o", edge_features=1, aggregation=agg) for agg in ("sum", "mean")
    }
    layers["mean"].load_state_dict(layers["sum"].state_dict())
    h, a_ij, a_i, e = (
        torch.randn(2, 4, 10),
        torch.randn(2, 4, 4, 4),
        torch.randn(2, 4, 4),
        torch.randn(2, 4, 4, 1),
    )
    out = {agg: layer(h, a_ij, a_i, e) for agg, layer in layers.items()}
    diagonal = torch.eye(4, dtype=torch.bool)[None, :, :, None]
    changed = {
        agg: layer(h, torch.where(diagonal, 1e3, a_ij), a_i, torch.where(diagonal, 7.0, e))
        for agg, layer in layers.items()
    }
    for agg in layers:  # self loops do not exist: the diagonal of the edge tensors is unused
        torch.testing.assert_close(changed[agg], out[agg])
    assert not torch.allclose(out["sum"], out["mean"])


def test_model_float32_gradients_and_single_particle() -> None:
    model = NBodySEGNN()
    x, v, q = (t.float() for t in _particles(batch=4))
    out = model(x, v, q)
    assert out.dtype == torch.float32
    assert out.shape == (4, 5, 3)
    # The untrained model barely moves the particles (small output layer, as EGNN).
    assert float((out - x).detach().abs().max()) < 0.1
    out.square().sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    single = model(x[:, :1], v[:, :1], q[:, :1])
    assert single.shape == (4, 1, 3)
    assert torch.isfinite(single).all()


def test_model_state_dict_round_trip() -> None:
    model = _model()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other = NBodySEGNN("8x0e + 4x1o").double()
    other.load_state_dict(torch.load(buffer, weights_only=True))
    x, v, q = _particles()
    torch.testing.assert_close(other(x, v, q), model(x, v, q))


# --------------------------------------------------------------------------- relaxation


def test_relax_wraps_the_update_maps_and_project_restores_equivariance() -> None:
    model = _model()
    relaxed = equirelax.relax(model)
    layers = equirelax.relaxed_layers(relaxed)
    # the official CR / ACE placement: the two update maps of each message-passing layer
    assert list(layers) == [f"layers.{i}.update_{k}" for i in range(4) for k in (1, 2)]
    steerable = [n for n, m in model.named_modules() if isinstance(m, SteerableLinear)]
    assert len(steerable) == 3 + 4 * 4
    every = equirelax.relaxed_layers(equirelax.relax(model, placement="linear"))
    assert sorted(every) == sorted(steerable)
    assert all(isinstance(layer.free, SteerableFreeBranch) for layer in layers.values())
    x = _particles()
    err = equivariance_error(relaxed, x, PARTICLES_IN, PARTICLES_OUT, generator=_gen())
    assert err.max > 1e-3  # levels at 1 with dense free branches
    projected = equirelax.project(relaxed)
    assert not equirelax.relaxed_layers(projected)
    err = equivariance_error(projected, x, PARTICLES_IN, PARTICLES_OUT, generator=_gen())
    assert err.max_absolute < ATOL[F64]
    torch.testing.assert_close(projected(*x), model(*x))


def test_free_branch_is_a_dense_map_on_the_concatenation() -> None:
    layer = SteerableLinear(["2x0e + 1x1o", "1x0e"], ATTR, "2x0e + 1x1o").double()
    free = equirelax.Relaxed(layer).free.double()
    x1, x2, a = _randn(3, 1, 5, seed=1), _randn(3, 4, 1, seed=2), _randn(3, 4, 4, seed=3)
    cat = torch.cat([x1.expand(3, 4, 5), x2, a], dim=-1)
    torch.testing.assert_close(free(x1, x2, a), free.linear(cat))


def test_lie_derivatives_of_layer_and_free_branches() -> None:
    layer = SteerableLinear("4x0e + 2x1o + 1x1e", ATTR, "3x0e + 2x1o + 1x2e").double()
    x = (_randn(6, layer.in_features, seed=1), _randn(6, 4, seed=2))
    assert isinstance(layer.action_in, DirectSumAction)
    derivative = lie_derivative(layer, x, layer.action_in, layer.action_out)
    assert derivative.shape == (3, 6, layer.out_features)
    assert derivative.abs().max() < ATOL[F64]
    random_free = equirelax.Relaxed(layer)
    zero_free = equirelax.Relaxed(layer, init="zero")
    equivariant_free = equirelax.Relaxed(layer, free=copy.deepcopy(layer))
    terms = {
        name: free_branch_terms(r.free, x, {}, r.action_in, r.action_out)
        for name, r in (("random", random_free), ("zero", zero_free), ("eq", equivariant_free))
    }
    assert lie_derivative(random_free.free, x, layer.action_in, layer.action_out).abs().max() > 0.1
    assert terms["random"][0] > 1e-2
    assert terms["zero"][0] == 0
    assert terms["zero"][1] == 0
    assert terms["eq"][0] < 1e-20
    assert terms["eq"][1] > 1


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: SteerableLinear("3xfoo", ATTR, "1x0e"), "^irreps_in:"),
        (lambda: SteerableLinear("1x0e", "nonsense", "1x0e"), "^irreps_attr:"),
        (lambda: SteerableLinear("1x0e", "1x0e", "1x1o"), "^irreps_out:.*cannot be reached"),
        (lambda: SteerableLinear(["1x0e", ""], ATTR, "1x0e"), r"^irreps_in\[1\]:"),
        (lambda: SteerableGate("2y1o"), "^irreps:"),
        (lambda: SEGNNLayer("4x0e", aggregation="max"), "^aggregation:"),
        (lambda: SEGNNLayer("4x0e", edge_features=-1), "^edge_features:"),
        (lambda: NBodySEGNN("1x0e + 2"), "^hidden_irreps:"),
        (lambda: NBodySEGNN(num_layers=0), "^num_layers:"),
        (lambda: NBodySEGNN(harmonics_normalization="norm"), "^harmonics_normalization:"),
        (lambda: NBodySEGNN(relative_position="x_j-x_i"), "^relative_position:"),
        (lambda: NBodySEGNN(edge_distance="l1"), "^edge_distance:"),
    ],
)
def test_constructor_validation(build, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_forward_validation() -> None:
    layer = SteerableLinear("2x0e + 1x1o", ATTR, "1x0e")
    x, a = torch.randn(3, 5), torch.randn(3, 4)
    for args, match in [
        ((torch.randn(3, 4), a), "^x:.*5"),
        ((x, torch.randn(3, 3)), "^a:.*4"),
        ((x,), "^inputs:"),
        ((x, torch.randn(2, 4)), "^a:.*broadcast"),
        ((x, a.double()), "^a:.*dtype"),
    ]:
        with pytest.raises(ValueError, match=match):
            layer(*args)
    seg = SEGNNLayer("4x0e + 2x1o", edge_features=2)
    h, a_ij, a_i, e = (
        torch.randn(2, 5, 10),
        torch.randn(2, 5, 5, 4),
        torch.randn(2, 5, 4),
        torch.randn(2, 5, 5, 2),
    )
    for args, match in [
        ((torch.randn(2, 5, 9), a_ij, a_i, e), "^h:"),
        ((h, a_ij[:, :, :4], a_i, e), "^edge_attr:"),
        ((h, a_ij, a_i[..., :3], e), "^node_attr:"),
        ((h, a_ij, a_i, None), "^edge_features:"),
    ]:
        with pytest.raises(ValueError, match=match):
            seg(*args)
    model = NBodySEGNN("4x0e + 2x1o", num_layers=1)
    x, v, q = (t.float() for t in _particles())
    for args, match in [
        ((x[..., :2], v, q), "^positions:"),
        ((x, v[:, :4], q), "^velocities:"),
        ((x, v, q.squeeze(-1)), "^charges:"),
    ]:
        with pytest.raises(ValueError, match=match):
            model(*args)


def test_importing_the_modules_first_creates_no_cycle() -> None:
    code = (
        "import equirelax.nn.steerable as s, equirelax.relaxed as r; "
        "assert r._factory_for(s.SteerableLinear('1x0e', '1x0e', '1x0e')) is not None"
    )
    for first in ("import equirelax.models.segnn", "import equirelax.relaxed"):
        subprocess.run([sys.executable, "-c", f"{first}; {code}"], check=True)
