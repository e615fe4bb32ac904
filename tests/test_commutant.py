"""The projector onto equivariant linear maps: idempotent, symmetric, commuting, right size."""

import pytest
import torch

from equirelax.commutant import EquivariantProjector, equivariant_basis
from equirelax.groups import O3, SO3, DihedralGroup, SymmetricGroup
from equirelax.metrics import weight_distance

CASES = [
    # (rep_in, rep_out, dimension of Hom_G by Schur's lemma / known counts)
    (lambda: SO3().irreps("1x1o"), lambda: SO3().irreps("1x1o"), 1),
    (lambda: SO3().irreps("2x0e + 1x1o"), lambda: SO3().irreps("1x0e + 3x1o"), 5),
    (lambda: SO3().irreps("1x1o"), lambda: SO3().irreps("1x2e"), 0),
    (lambda: O3().irreps("1x1o"), lambda: O3().irreps("1x1e"), 0),
    (lambda: SymmetricGroup(5).standard_representation(),) * 2 + (2,),
    (lambda: DihedralGroup(4).regular_representation(),) * 2 + (8,),
    (
        lambda: SO3().standard_representation().tensor(SO3().standard_representation()),
        lambda: SO3().trivial_representation(),
        1,
    ),
]


@pytest.mark.parametrize(("rep_in", "rep_out", "dimension"), CASES)
def test_projector_dimension_idempotent_and_commuting(rep_in, rep_out, dimension):
    rep_in, rep_out = rep_in(), rep_out()
    proj = EquivariantProjector(rep_in, rep_out)
    assert proj.dimension == dimension
    weight = torch.randn(6, rep_out.dim, rep_in.dim, dtype=torch.float64)
    once = proj(weight)
    torch.testing.assert_close(proj(once), once, atol=1e-12, rtol=0)
    group = rep_in.group
    g = group.sample(6, torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(rep_out(g) @ once, once @ rep_in(g), atol=1e-10, rtol=0)
    matrix = proj.matrix()
    torch.testing.assert_close(matrix @ matrix, matrix, atol=1e-12, rtol=0)
    torch.testing.assert_close(matrix, matrix.T, atol=1e-12, rtol=0)
    assert int(torch.linalg.matrix_rank(matrix)) == dimension


def test_random_weight_is_far_and_projected_weight_is_at_zero_distance():
    rep = SO3().irreps("2x0e + 2x1o")
    weight = torch.randn(rep.dim, rep.dim, dtype=torch.float64)
    assert float(weight_distance(weight, rep, rep, relative=True)) > 0.3
    projected = EquivariantProjector(rep, rep)(weight)
    assert float(weight_distance(projected, rep, rep)) < 1e-12


def test_basis_is_cached_and_orthonormal():
    a = SO3().irreps("1x1o")
    first = equivariant_basis(a, a)
    assert equivariant_basis(SO3().irreps("1x1o"), SO3().irreps("1x1o")) is first
    gram = torch.einsum("nij,mij->nm", first, first)
    torch.testing.assert_close(gram, torch.eye(first.shape[0], dtype=torch.float64))


def test_projector_rejects_wrong_weight_shape_and_mixed_groups():
    rep = SO3().irreps("1x1o")
    with pytest.raises(ValueError, match=r"weight: expected shape \(\.\.\., 3, 3\)"):
        EquivariantProjector(rep, rep)(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="rep_out"):
        EquivariantProjector(rep, O3().irreps("1x1o"))
