"""Equivariant linear maps and nonlinearities are equivariant; unconstrained ones are not."""

import pytest
import torch

from _tolerances import ATOL
from equirelax import assert_equivariant, equivariance_error
from equirelax.actions import RepresentationAction
from equirelax.commutant import EquivariantProjector
from equirelax.groups import O3, SO3, DihedralGroup, SymmetricGroup
from equirelax.nn import EquivariantLinear, GatedNonlinearity, NormNonlinearity

REPRESENTATIONS = {
    "O3-irreps": lambda: (O3().irreps("2x0e + 1x0o + 2x1o + 1x2e"), O3().irreps("3x0e + 2x1o")),
    "SO3-tensor": lambda: (
        SO3().standard_representation().tensor(SO3().standard_representation()),
        SO3().irreps("1x0e + 1x1o"),
    ),
    "S5-perm": lambda: (
        2 * SymmetricGroup(5).standard_representation(),
        SymmetricGroup(5).standard_representation(),
    ),
    "D4-regular": lambda: (
        DihedralGroup(4).regular_representation(),
        DihedralGroup(4).standard_representation() + DihedralGroup(4).regular_representation(),
    ),
}


@pytest.mark.parametrize("parametrisation", ["basis", "projected"])
@pytest.mark.parametrize("name", REPRESENTATIONS)
def test_equivariant_linear_is_equivariant(name, parametrisation, dtype, generator):
    rep_in, rep_out = REPRESENTATIONS[name]()
    layer = EquivariantLinear(rep_in, rep_out, parametrisation=parametrisation).to(dtype)
    with torch.no_grad():
        for p in layer.parameters():  # a nonzero bias too, so the bias basis is tested
            p.normal_(generator=generator)
    x = torch.randn(8, rep_in.dim, dtype=dtype, generator=generator)
    err = assert_equivariant(layer, x, generator=generator, atol=ATOL[dtype] * 10)
    assert err.output_norm > 0.1


def test_unconstrained_linear_is_not_equivariant(generator):
    rep_in, rep_out = REPRESENTATIONS["O3-irreps"]()
    dense = torch.nn.Linear(rep_in.dim, rep_out.dim).double()
    x = torch.randn(8, rep_in.dim, dtype=torch.float64, generator=generator)
    err = equivariance_error(
        dense, x, RepresentationAction(rep_in), RepresentationAction(rep_out), generator=generator
    )
    assert err.mean > 0.1


def test_linear_has_the_commutant_dimension_of_parameters():
    layer = EquivariantLinear(SO3().irreps("4x0e + 2x1o"), SO3().irreps("3x0e + 5x1o"), bias=False)
    assert sum(p.numel() for p in layer.parameters()) == 4 * 3 + 2 * 5


def test_projected_linear_is_the_official_emlp_linear():
    """``W = P(W0)``, ``b = P(b0)`` with ``W0`` semi-orthogonal and ``b0`` uniform on
    ``[0, 1/sqrt(d_out))``, the dense matrices trained (the official ``emlp.nn.Linear``)."""
    rep_in, rep_out = REPRESENTATIONS["O3-irreps"]()
    torch.manual_seed(0)
    layer = EquivariantLinear(rep_in, rep_out, parametrisation="projected").double()
    dense, dense_bias = layer.weight_dense, layer.bias_dense
    assert dense.shape == (rep_out.dim, rep_in.dim)
    gram = dense @ dense.T  # d_out <= d_in: orthonormal rows
    torch.testing.assert_close(gram, torch.eye(rep_out.dim, dtype=torch.float64), atol=1e-6, rtol=0)
    assert float(dense_bias.min()) >= 0
    assert float(dense_bias.max()) < rep_out.dim**-0.5
    torch.testing.assert_close(layer.weight(), layer.projector(dense))
    trivial = rep_out.group.trivial_representation()
    expected_bias = EquivariantProjector(trivial, rep_out)(dense_bias[:, None])[:, 0]
    torch.testing.assert_close(layer.bias(), expected_bias)
    assert layer.projector.distance(dense) > 0.1  # the dense matrix itself is not equivariant
    assert sum(p.numel() for p in layer.parameters()) == rep_out.dim * (rep_in.dim + 1)
    x = torch.randn(4, rep_in.dim, dtype=torch.float64)
    layer(x).square().sum().backward()
    # the gradient reaching the dense matrix lies in the equivariant subspace
    torch.testing.assert_close(layer.projector(dense.grad), dense.grad)


def test_linear_rejects_an_unknown_parametrisation():
    with pytest.raises(ValueError, match=r"parametrisation: expected one of \('basis', "):
        EquivariantLinear(SO3().irreps("1x1o"), SO3().irreps("1x1o"), parametrisation="dense")


def test_linear_rejects_wrong_feature_size():
    layer = EquivariantLinear(SO3().irreps("1x1o"), SO3().irreps("1x1o"))
    with pytest.raises(ValueError, match="x: expected size 3 along dimension -1"):
        layer(torch.zeros(4, 5))


@pytest.mark.parametrize("group", [O3(), SO3()], ids=str)
def test_gated_and_norm_nonlinearities_are_equivariant(group, dtype, generator):
    gated = group.irreps("2x1o + 1x2e")
    gate = GatedNonlinearity(3, gated).to(dtype)
    x = torch.randn(6, 4, gate.representation_in.dim, dtype=dtype, generator=generator)
    assert_equivariant(gate, x, generator=generator, atol=ATOL[dtype])
    norm = NormNonlinearity(gated).to(dtype)
    with torch.no_grad():
        norm.bias.uniform_(-1, 1, generator=generator)
    x = torch.randn(6, gated.dim, dtype=dtype, generator=generator)
    assert_equivariant(norm, x, generator=generator, atol=ATOL[dtype])


def test_gated_nonlinearity_multiplies_each_copy_by_its_gate():
    rep = SO3().irreps("2x1o")
    gate = GatedNonlinearity(1, rep)
    x = torch.tensor([[0.5, 0.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    out = gate(x)
    torch.testing.assert_close(out[0, 0], torch.nn.functional.silu(torch.tensor(0.5)))
    torch.testing.assert_close(out[0, 1:4], 0.5 * x[0, 3:6])
    torch.testing.assert_close(out[0, 4:], torch.sigmoid(torch.tensor(2.0)) * x[0, 6:])


def test_norm_nonlinearity_rescales_without_rotating():
    norm = NormNonlinearity(SO3().irreps("1x1o"))
    x = torch.randn(5, 3)
    out = norm(x)
    cosine = torch.nn.functional.cosine_similarity(out, x, dim=1)
    torch.testing.assert_close(cosine, torch.ones(5))
