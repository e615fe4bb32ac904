"""Tests of the dense, batched EGNN layer: equations, E(d) and permutation equivariance,
padding, validation and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from _tolerances import ATOL, F64
from equirelax import assert_equivariant, equivariance_error
from equirelax.actions import (
    DirectSumAction,
    PermutationAction,
    PointAction,
    TrivialAction,
    VectorAction,
)
from equirelax.groups import O2, O3, Euclidean, SymmetricGroup
from equirelax.nn.egnn import EGNN, EGNNLayer

F_IN, HIDDEN, E = 5, 16, 2


def _make_layer(seed: int = 0, **kwargs) -> EGNNLayer:
    """A float64 layer whose weights are all O(1), so coordinates move measurably."""
    torch.manual_seed(seed)
    layer = EGNNLayer(F_IN, HIDDEN, **kwargs).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 0.4)
    return layer


def _inputs(batch: int, n: int, d: int = 3, seed: int = 1) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    kw = {"generator": gen, "dtype": torch.float64}
    return {
        "h": torch.randn(batch, n, F_IN, **kw),
        "x": torch.randn(batch, n, d, **kw),
        "v": torch.randn(batch, n, d, **kw),
        "edge_attr": torch.randn(batch, n, n, E, **kw),
    }


def _padding_mask(batch: int, n: int) -> Tensor:
    """Graph sizes n, n - 2, n - 3, ... (at least 1), real nodes first."""
    sizes = torch.tensor([max(n - 2 * b - (b > 0), 1) for b in range(batch)])
    return torch.arange(n).unsqueeze(0) < sizes.unsqueeze(1)


def _euclidean_error(layer: EGNNLayer, group: Euclidean, use_v: bool, seed: int = 2) -> float:
    """The largest ``||f(g . in) - g . f(in)||`` over ``(h', x')`` (``h'`` invariant, ``x'``
    points) for sampled ``g``, on padded graphs (the library's metric; padding nodes keep ``x``
    and get ``h' = 0``, so they add no error)."""
    batch, n = 3, 6
    data = _inputs(batch, n, group.d)
    mask = _padding_mask(batch, n)

    def f(h: Tensor, x: Tensor, v: Tensor | None = None) -> tuple[Tensor, Tensor]:
        copies = h.shape[0] // batch  # the metric stacks moved copies of the batch
        kw = {"mask": mask.repeat(copies, 1)}
        if layer.edge_features:
            kw["edge_attr"] = data["edge_attr"].repeat(copies, 1, 1, 1)
        return layer(h, x, v, **kw)

    nodes = [TrivialAction(group), PointAction(group)]
    inputs = (data["h"], data["x"], data["v"]) if use_v else (data["h"], data["x"])
    action_in = DirectSumAction(*nodes, VectorAction(group)) if use_v else DirectSumAction(*nodes)
    generator = torch.Generator().manual_seed(seed)
    err = equivariance_error(
        f, inputs, action_in, DirectSumAction(*nodes), num_samples=4, generator=generator
    )
    return err.max_absolute


CONFIGS = [
    {},
    {"edge_features": E, "attention": True},
    {"normalize": True, "tanh": True, "coordinate_aggregation": "sum"},
    {"velocity": True, "out_features": 7},
]


@pytest.mark.parametrize("config", CONFIGS)
def test_e3_equivariance(config: dict) -> None:
    layer = _make_layer(**config)
    err = _euclidean_error(layer, Euclidean(O3()), use_v=layer.velocity)
    assert err < ATOL[F64]


@pytest.mark.parametrize("config", [{}, {"velocity": True, "edge_features": E}])
def test_e2_equivariance_in_the_plane(config: dict) -> None:
    layer = _make_layer(**config)
    assert _euclidean_error(layer, Euclidean(O2()), use_v=layer.velocity) < ATOL[F64]


@pytest.mark.parametrize("velocity", [False, True])
def test_layer_and_stack_pass_assert_equivariant(velocity: bool, dtype: torch.dtype) -> None:
    group = Euclidean(O3())
    torch.manual_seed(0)
    layer = EGNNLayer(F_IN, HIDDEN, velocity=velocity, group=group)
    stack = EGNN(F_IN, HIDDEN, num_layers=2, velocity=velocity, group=group)
    with torch.no_grad():  # O(1) coordinate updates (they start near 0)
        for egnn_layer in (layer, *stack.layers):
            egnn_layer.phi_x[-1].weight.normal_(0.0, 0.3)
    data = _inputs(3, 5)
    x = tuple(data[k].to(dtype) for k in ("h", "x", "v")[: 3 if velocity else 2])
    generator = torch.Generator().manual_seed(3)
    err = assert_equivariant(layer.to(dtype), x, generator=generator, atol=ATOL[dtype])
    assert err.output_norm > 0.1
    stack, first = stack.to(dtype), stack.layers[0]  # the stack has its layers' actions
    assert_equivariant(
        stack, x, first.action_in, first.action_out, generator=generator, atol=ATOL[dtype]
    )


def test_coordinates_actually_move() -> None:
    layer = _make_layer(velocity=True)
    data = _inputs(2, 5)
    with torch.no_grad():
        h2, x2 = layer(data["h"], data["x"], data["v"])
    assert float((x2 - data["x"]).abs().max()) > 1e-2
    assert float((h2 - data["h"]).abs().max()) > 1e-2


def test_raw_coordinates_in_h_update_break_equivariance() -> None:
    """The checker can fail: feeding raw coordinates into the feature update is detected."""

    class LeakyEGNN(EGNNLayer):
        def forward(self, h: Tensor, x: Tensor, v: Tensor | None = None, **kwargs):  # type: ignore[override]
            return super().forward(h + x[..., :1], x, v, **kwargs)

    torch.manual_seed(0)
    layer = LeakyEGNN(F_IN, HIDDEN).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 0.4)
    assert _euclidean_error(layer, Euclidean(O3()), use_v=False) > 1e-3


def test_permutation_equivariance() -> None:
    batch, n = 3, 6
    layer = _make_layer(edge_features=E, velocity=True, attention=True)
    data = _inputs(batch, n)
    gen = torch.Generator().manual_seed(5)
    mask = torch.rand(batch, n, generator=gen) > 0.3
    adjacency = torch.rand(batch, n, n, generator=gen) > 0.4
    group = SymmetricGroup(n)
    g = group.sample(batch, gen)
    nodes, pairs = PermutationAction(group, dims=(1,)), PermutationAction(group, dims=(1, 2))

    h1, x1 = layer(
        data["h"], data["x"], data["v"], edge_attr=data["edge_attr"], mask=mask, adjacency=adjacency
    )
    h2, x2 = layer(
        nodes(g, data["h"]),
        nodes(g, data["x"]),
        nodes(g, data["v"]),
        edge_attr=pairs(g, data["edge_attr"]),
        mask=nodes(g, mask),
        adjacency=pairs(g, adjacency),
    )
    torch.testing.assert_close(h2, nodes(g, h1), atol=ATOL[F64], rtol=0)
    torch.testing.assert_close(x2, nodes(g, x1), atol=ATOL[F64], rtol=0)


def test_padding_matches_unpadded_graphs() -> None:
    """Each padded graph gives its real nodes the outputs of the graph run alone; padding
    (filled with NaN) keeps x, gets h' = 0 and never leaks into real nodes."""
    batch, n = 3, 7
    layer = _make_layer(edge_features=E, velocity=True, normalize=True)
    data = _inputs(batch, n)
    mask = torch.ones(batch, n, dtype=torch.bool)
    mask[1, [1, 4, 5]] = False  # holes in the middle
    mask[2, 3:] = False
    padded = {key: value.clone() for key, value in data.items()}
    for key in ("h", "x", "v"):
        padded[key][~mask] = float("nan")
    pair_mask = mask.unsqueeze(1) & mask.unsqueeze(2)
    padded["edge_attr"][~pair_mask] = float("nan")

    h_out, x_out = layer(
        padded["h"], padded["x"], padded["v"], edge_attr=padded["edge_attr"], mask=mask
    )
    for b in range(batch):
        idx = mask[b].nonzero().squeeze(1)
        h_alone, x_alone = layer(
            data["h"][b : b + 1, idx],
            data["x"][b : b + 1, idx],
            data["v"][b : b + 1, idx],
            edge_attr=data["edge_attr"][b : b + 1, idx][:, :, idx],
        )
        torch.testing.assert_close(h_out[b, idx], h_alone[0], atol=ATOL[F64], rtol=0)
        torch.testing.assert_close(x_out[b, idx], x_alone[0], atol=ATOL[F64], rtol=0)
    assert bool((h_out[~mask] == 0).all())
    assert bool(x_out[~mask].isnan().all())  # the padded input coordinates, kept as they were
    assert bool(torch.isfinite(h_out).all())


def _loop_reference(layer: EGNNLayer, h: Tensor, x: Tensor, v: Tensor, a: Tensor, adj: Tensor):
    """Eqs. (3)-(6) and the velocity term, one graph, node by node and edge by edge."""
    n = h.shape[0]
    h_new, x_new = [], []
    for i in range(n):
        m_i = torch.zeros(layer.hidden_features, dtype=h.dtype)
        shift = torch.zeros_like(x[i])
        count = 0
        for j in range(n):
            if not adj[i, j]:
                continue
            r = (x[i] - x[j]).square().sum().reshape(1)
            m_ij = layer.phi_e(torch.cat([h[i], h[j], r, a[i, j]]))
            if layer.phi_inf is not None:
                m_ij = m_ij * layer.phi_inf(m_ij)
            m_i = m_i + m_ij
            shift = shift + (x[i] - x[j]) * layer.phi_x(m_ij)
            count += 1
        if layer.coordinate_aggregation == "mean":
            shift = shift / max(count, 1)
        x_new.append(x[i] + shift + layer.phi_v(h[i]) * v[i])
        out = layer.phi_h(torch.cat([h[i], m_i]))
        h_new.append(out + h[i] if layer.residual else out)
    return torch.stack(h_new), torch.stack(x_new)


@pytest.mark.parametrize("aggregation", ["mean", "sum"])
def test_matches_edge_by_edge_equations(aggregation: str) -> None:
    layer = _make_layer(
        edge_features=E, velocity=True, attention=True, coordinate_aggregation=aggregation
    )
    data = _inputs(2, 5)
    adjacency = torch.rand(2, 5, 5, generator=torch.Generator().manual_seed(3)) > 0.5
    adjacency[0] = ~torch.eye(5, dtype=torch.bool)
    adjacency[1, 2] = False  # node 2 of graph 1 has no neighbours
    h_out, x_out = layer(
        data["h"], data["x"], data["v"], edge_attr=data["edge_attr"], adjacency=adjacency
    )
    for b in range(2):
        h_ref, x_ref = _loop_reference(
            layer, data["h"][b], data["x"][b], data["v"][b], data["edge_attr"][b], adjacency[b]
        )
        torch.testing.assert_close(h_out[b], h_ref, atol=ATOL[F64], rtol=0)
        torch.testing.assert_close(x_out[b], x_ref, atol=ATOL[F64], rtol=0)


def test_coordinate_clamp_clips_each_edge_term_as_the_official_code() -> None:
    """``coordinate_clamp=c`` clips every edge's ``(x_i - x_j) phi_x(m_ij)`` to ``[-c, c]``
    before the mean (the official E_GCL clips at 100); below the clip it changes nothing."""
    data = _inputs(2, 5)
    args = (data["h"], 30.0 * data["x"])  # far-apart nodes: edge terms of order 10-100
    plain, clamped = _make_layer(), _make_layer(coordinate_clamp=2.0)
    _, x_plain = plain(*args)
    _, x_clamped = clamped(*args)
    x = args[1]
    terms = (x.unsqueeze(2) - x.unsqueeze(1)) * plain.phi_x(
        _messages(plain, data["h"], x)
    )  # (B, N, N, 3)
    off_diagonal = ~torch.eye(5, dtype=torch.bool).unsqueeze(-1)
    expected = x + (terms.clamp(-2.0, 2.0) * off_diagonal).sum(dim=2) / 4
    assert (terms.abs() > 2.0).any()
    torch.testing.assert_close(x_clamped, expected, atol=ATOL[F64], rtol=0)
    assert not torch.allclose(x_clamped, x_plain)
    assert ((x_clamped - x).abs() <= 2.0 + ATOL[F64]).all()  # the mean of clipped terms
    _, x_loose = _make_layer(coordinate_clamp=1e9)(*args)
    torch.testing.assert_close(x_loose, x_plain, atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"coordinate_clamp.*-1"):
        EGNNLayer(4, 8, coordinate_clamp=-1)


def _messages(layer: EGNNLayer, h: Tensor, x: Tensor) -> Tensor:
    """``m_ij = phi_e(h_i, h_j, |x_i - x_j|^2)`` for every pair, without edge attributes."""
    n = h.shape[1]
    radial = (x.unsqueeze(2) - x.unsqueeze(1)).square().sum(-1, keepdim=True)
    pairs = torch.cat(
        [h.unsqueeze(2).expand(-1, -1, n, -1), h.unsqueeze(1).expand(-1, n, -1, -1), radial],
        dim=-1,
    )
    return layer.phi_e(pairs)


@pytest.mark.parametrize("nodes", [1, 2, 4])
@pytest.mark.parametrize("aggregation", ["mean", "sum"])
def test_default_graph_is_fully_connected_without_self_loops(nodes: int, aggregation: str) -> None:
    """The default graph is the full adjacency without self loops, exactly, edge attributes and
    velocities included."""
    layer = _make_layer(
        edge_features=E, velocity=True, attention=True, coordinate_aggregation=aggregation
    )
    data = _inputs(2, nodes)
    full = ~torch.eye(nodes, dtype=torch.bool).expand(2, nodes, nodes)
    args, edge_attr = (data["h"], data["x"], data["v"]), data["edge_attr"]
    torch.testing.assert_close(
        layer(*args, edge_attr=edge_attr),
        layer(*args, edge_attr=edge_attr, adjacency=full),
        atol=0,
        rtol=0,
    )


def test_options_shapes_and_float32() -> None:
    layer = EGNNLayer(F_IN, HIDDEN, out_features=3, update_coordinates=False)
    assert layer.phi_x is None
    assert not layer.residual  # shapes differ: no residual
    h, x = torch.randn(2, 4, F_IN), torch.randn(2, 4, 3)
    h2, x2 = layer(h, x)
    assert h2.shape == (2, 4, 3)
    assert h2.dtype == torch.float32
    assert x2.dtype == torch.float32
    assert torch.equal(x2, x)
    h3, x3 = EGNNLayer(F_IN, HIDDEN, normalize=True)(h, torch.randn(2, 4, 5))  # d = 5
    assert h3.shape == (2, 4, F_IN)
    assert x3.shape == (2, 4, 5)
    assert "hidden_features=16" in repr(layer)


def test_gradients_flow_and_stay_finite() -> None:
    layer = _make_layer(edge_features=E, velocity=True, attention=True, normalize=True, tanh=True)
    data = _inputs(2, 5)
    x = data["x"].clone()
    x[0, 1] = x[0, 0]  # coincident points: the normalisation must stay finite
    x.requires_grad_(True)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    h_out, x_out = layer(data["h"], x, data["v"], edge_attr=data["edge_attr"], mask=mask)
    (h_out.square().sum() + x_out.square().sum()).backward()
    assert x.grad is not None
    assert bool(torch.isfinite(x.grad).all())
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().sum()) > 0, name


@pytest.mark.parametrize(
    ("kwargs", "call", "match"),
    [
        ({}, {"h": torch.randn(2, 4, 3)}, r"h: expected size 5 along dimension 2"),
        ({}, {"h": torch.randn(4, F_IN)}, r"h: expected a tensor with 3 dimensions"),
        ({}, {"x": torch.randn(2, 3, 3)}, r"x: expected coordinates of shape \(2, 4, d\)"),
        ({}, {"x": torch.randn(2, 4, 3, dtype=torch.float64)}, r"x: expected dtype"),
        ({}, {"v": torch.randn(2, 4, 3)}, r"v: expected None"),
        ({"velocity": True}, {}, r"v: expected velocities"),
        ({"velocity": True}, {"v": torch.randn(2, 4, 2)}, r"v: expected velocities of shape"),
        ({"edge_features": 2}, {}, r"edge_attr: expected a \(2, 4, 4, 2\) tensor"),
        (
            {"edge_features": 2},
            {"edge_attr": torch.randn(2, 4, 4, 3)},
            r"edge_attr: expected shape \(2, 4, 4, 2\)",
        ),
        ({}, {"edge_attr": torch.randn(2, 4, 4, 1)}, r"edge_attr: expected None"),
        ({}, {"mask": torch.ones(2, 4)}, r"mask: expected a bool tensor of shape \(2, 4\)"),
        (
            {},
            {"adjacency": torch.ones(2, 4, 5, dtype=torch.bool)},
            r"adjacency: expected a bool tensor of shape \(2, 4, 4\)",
        ),
        ({}, {"adjacency": torch.ones(3, 4, 4, dtype=torch.bool)}, r"adjacency: expected a lead"),
    ],
)
def test_forward_validation(kwargs: dict, call: dict, match: str) -> None:
    layer = EGNNLayer(F_IN, 8, **kwargs)
    args = {"h": torch.randn(2, 4, F_IN), "x": torch.randn(2, 4, 3), **call}
    with pytest.raises(ValueError, match=match):
        layer(**args)


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="coordinate_aggregation"):
        EGNNLayer(4, 8, coordinate_aggregation="max")
    with pytest.raises(ValueError, match="velocity"):
        EGNNLayer(4, 8, update_coordinates=False, velocity=True)
    with pytest.raises(ValueError, match="edge_features"):
        EGNNLayer(4, 8, edge_features=-1)
    with pytest.raises(TypeError, match="hidden_features"):
        EGNNLayer(4, 8.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"x: expected a torch\.Tensor"):
        EGNNLayer(4, 8)(torch.randn(1, 2, 4), [[0.0, 0.0, 0.0]] * 2)


@pytest.mark.parametrize("velocity", [False, True])
def test_layer_actions_give_zero_lie_derivative_and_a_finite_check(velocity: bool) -> None:
    """With ``group=E(3)`` the layer declares its actions; the exact equivariant layer has a
    zero Lie derivative (rotations and translations) and passes the sampled check, and a
    relaxed copy with a raw-coordinate free branch does not."""
    from equirelax import metrics, relax

    group = Euclidean(O3())
    layer = _make_layer(edge_features=E, velocity=velocity, group=group)
    data = _inputs(4, 5)
    x = (data["h"], data["x"], data["v"]) if velocity else (data["h"], data["x"])
    kwargs = {"edge_attr": data["edge_attr"]}
    derivative = metrics.lie_derivative(layer, x, layer.action_in, layer.action_out, kwargs=kwargs)
    assert derivative.shape[0] == 6  # three rotations and three translations
    assert derivative.abs().max() < ATOL[F64]
    g = group.sample(1, torch.Generator().manual_seed(3), dtype=torch.float64).expand(4, -1, -1)
    moved = layer(*layer.action_in(g, x), **kwargs)
    expected = layer.action_out(g, layer(*x, **kwargs))
    for a, b in zip(moved, expected, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL[F64], rtol=0)
    relaxed = relax(layer)
    assert relaxed.action_in is relaxed.equivariant.action_in
    free = relaxed.free
    broken = metrics.lie_derivative(free, x, layer.action_in, layer.action_out, kwargs=kwargs)
    assert broken.abs().max() > 1e-3


def test_group_must_be_a_group() -> None:
    with pytest.raises(TypeError, match="group"):
        EGNNLayer(4, 8, group="E3")  # type: ignore[arg-type]


def test_nbody_egnn_clips_its_coordinate_terms_at_100_as_the_official_model() -> None:
    from equirelax.models.egnn import NBodyEGNN

    assert [layer.coordinate_clamp for layer in NBodyEGNN(hidden_features=8).layers] == [100.0] * 4
