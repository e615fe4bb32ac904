"""Property tests of groups and representations: group axioms, finite-group tables, closure,
representation homomorphisms, Lie algebras, Haar sampling and input validation."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from _tolerances import ATOL, F64
from equirelax.groups import (
    O2,
    O3,
    SO2,
    SO3,
    CyclicGroup,
    DihedralGroup,
    Euclidean,
    FiniteGroup,
    Group,
    MatrixGroup,
    Orthogonal,
    SpecialOrthogonal,
    SymmetricGroup,
)
from equirelax.representations import DirectSum, Representation


def _signed_permutations() -> Tensor:
    """A 3-cycle, a transposition and a sign flip: they generate the 48 signed permutations."""
    cycle = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    swap = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    flip = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    return torch.stack([cycle, swap, flip])


def _d4_matrices() -> Tensor:
    quarter = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    mirror = torch.diag(torch.tensor([-1.0, 1.0]))
    return torch.stack([quarter, mirror])


GROUPS: dict[str, Callable[[], Group]] = {
    "C1": lambda: CyclicGroup(1),
    "C5": lambda: CyclicGroup(5),
    "D1": lambda: DihedralGroup(1),
    "D4": lambda: DihedralGroup(4),
    "D6": lambda: DihedralGroup(6),
    "S4": lambda: SymmetricGroup(4),
    "B3": lambda: MatrixGroup(_signed_permutations()),
    "D4-matrices": lambda: MatrixGroup(_d4_matrices()),
    "SO2": SO2,
    "O2": O2,
    "SO3": SO3,
    "O3": O3,
    "E-SO3": lambda: Euclidean(SO3()),
    "E-O2": lambda: Euclidean(O2()),
    "SO4": lambda: SpecialOrthogonal(4),
    "O5": lambda: Orthogonal(5),
}
FINITE = ["C1", "C5", "D1", "D4", "D6", "S4", "B3", "D4-matrices"]
CONTINUOUS = ["SO2", "O2", "SO3", "O3", "E-SO3", "E-O2", "SO4", "O5"]
ORDERS = {"C1": 1, "C5": 5, "D1": 2, "D4": 8, "D6": 12, "S4": 24, "B3": 48, "D4-matrices": 8}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sample(group: Group, n: int, seed: int = 0) -> Tensor:
    return group.sample(n, _gen(seed), dtype=F64)


def _identity(group: Group, n: int, like: Tensor) -> Tensor:
    # identity() of a matrix group is in the default dtype; elements here are float64.
    return group.identity(n).to(like.dtype)


def _eye(n: int, d: int) -> Tensor:
    return torch.eye(d, dtype=F64).expand(n, d, d)


# ---------------------------------------------------------------------------------------------
# group axioms


@pytest.mark.parametrize("name", list(GROUPS))
def test_group_axioms(name: str) -> None:
    group = GROUPS[name]()
    a, b, c = (_sample(group, 32, seed) for seed in (1, 2, 3))
    e = _identity(group, 32, a)
    assert group.equal(
        group.compose(group.compose(a, b), c), group.compose(a, group.compose(b, c))
    ).all()
    assert group.equal(group.compose(e, a), a).all()
    assert group.equal(group.compose(a, e), a).all()
    assert group.equal(group.compose(a, group.inverse(a)), e).all()
    assert group.equal(group.compose(group.inverse(a), a), e).all()
    assert group.equal(group.inverse(group.inverse(a)), a).all()
    # (ab)^-1 = b^-1 a^-1
    assert group.equal(
        group.inverse(group.compose(a, b)), group.compose(group.inverse(b), group.inverse(a))
    ).all()
    assert group == GROUPS[name]()
    assert hash(group) == hash(GROUPS[name]())


@pytest.mark.parametrize("name", list(GROUPS))
def test_compose_broadcasts_a_batch_of_one(name: str) -> None:
    group = GROUPS[name]()
    a, b = _sample(group, 6, 1), _sample(group, 1, 2)
    many = b.expand(6, *b.shape[1:])
    assert group.equal(group.compose(a, b), group.compose(a, many)).all()
    assert group.equal(group.compose(b, a), group.compose(many, a)).all()


def test_non_abelian_groups_do_not_commute() -> None:
    """The axioms alone pass for a commutative fake; these groups must not commute."""
    for name in [
        *["D4", "D6", "S4", "B3", "D4-matrices", "O2", "SO3", "O3", "E-SO3", "E-O2", "SO4", "O5"]
    ]:
        group = GROUPS[name]()
        a, b = _sample(group, 64, 1), _sample(group, 64, 2)
        assert not group.equal(group.compose(a, b), group.compose(b, a)).all(), name


def test_dihedral_relations() -> None:
    group = DihedralGroup(6)
    r, s = torch.tensor([[1, 0]]), torch.tensor([[0, 1]])
    power = group.identity(1)
    for _ in range(6):
        power = group.compose(power, r)
    assert group.equal(power, group.identity(1)).all()
    assert group.equal(group.compose(s, s), group.identity(1)).all()
    # s r = r^-1 s
    assert group.equal(group.compose(s, r), group.compose(group.inverse(r), s)).all()


def test_symmetric_composition_convention() -> None:
    group = SymmetricGroup(3)
    a, b = torch.tensor([[1, 2, 0]]), torch.tensor([[0, 2, 1]])
    # (a b)[i] = a[b[i]]
    assert group.compose(a, b).tolist() == [[1, 0, 2]]
    assert group.inverse(a).tolist() == [[2, 0, 1]]


# ---------------------------------------------------------------------------------------------
# finite groups


@pytest.mark.parametrize("name", FINITE)
def test_finite_group_enumeration(name: str) -> None:
    group = GROUPS[name]()
    assert isinstance(group, FiniteGroup)
    n = ORDERS[name]
    assert group.order == n
    el = group.elements()
    assert el.shape[0] == n
    pairs = group.equal(el.repeat_interleave(n, dim=0), el.repeat(n, *([1] * (el.ndim - 1))))
    assert torch.equal(pairs.reshape(n, n), torch.eye(n, dtype=torch.bool))  # all distinct
    assert torch.equal(group.index(el), torch.arange(n))
    assert group.equal(el[group.index(_identity(group, 1, el))], _identity(group, 1, el)).all()


@pytest.mark.parametrize("name", FINITE)
def test_multiplication_table(name: str) -> None:
    group: FiniteGroup = GROUPS[name]()  # type: ignore[assignment]
    table = group.multiplication_table
    n = group.order
    assert table.shape == (n, n)
    arange = torch.arange(n).expand(n, n)
    assert torch.equal(table.sort(dim=1).values, arange)  # Latin square: rows
    assert torch.equal(table.sort(dim=0).values, arange.T)  # and columns
    el = group.elements()
    i = torch.arange(n).repeat_interleave(n)
    j = torch.arange(n).repeat(n)
    products = group.compose(el[i], el[j])
    assert group.equal(el[table[i, j]], products).all()


@pytest.mark.parametrize("name", ["C5", "D4", "D6", "S4", "B3"])
def test_discrete_generators_generate_the_group(name: str) -> None:
    """The closure of the generators' regular (faithful) matrices has ``|G|`` elements."""
    group: FiniteGroup = GROUPS[name]()  # type: ignore[assignment]
    gens = group.regular_representation()(group.discrete_generators())
    assert MatrixGroup(gens).order == group.order


def test_matrix_group_closure_orders() -> None:
    gens = _signed_permutations()
    assert MatrixGroup(gens).order == 48
    assert MatrixGroup(gens[[0, 2]]).order == 24  # sign flips and 3-cycles: Z2^3 x| C3
    assert MatrixGroup(gens[:2]).order == 6  # permutation matrices: S3
    assert MatrixGroup(_d4_matrices()).order == 8
    group = MatrixGroup(gens)
    el = group.elements()
    assert torch.allclose(el @ el.transpose(-1, -2), _eye(48, 3))
    assert group.equal(el[:1], _eye(1, 3)).all()  # identity first


def test_matrix_group_infinite_generator_raises() -> None:
    angle = torch.tensor(1.0, dtype=F64)  # 1 radian: infinite order
    rotation = torch.stack(
        [torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])]
    ).unsqueeze(0)
    with pytest.raises(ValueError, match="max_order"):
        MatrixGroup(rotation, max_order=100)


def test_symmetric_index_is_lexicographic_rank() -> None:
    group = SymmetricGroup(4)
    assert group.index(torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 2, 3]])).tolist() == [
        0,
        23,
        6,
    ]


# ---------------------------------------------------------------------------------------------
# representations

IRREPS = "1x0e+1x0o+2x1o+1x1e+1x2e+1x3o"


def _reps() -> dict[str, Callable[[], Representation]]:
    reps: dict[str, Callable[[], Representation]] = {}
    for name in GROUPS:
        reps[f"{name}-standard"] = lambda name=name: GROUPS[name]().standard_representation()
    for name in FINITE:
        reps[f"{name}-regular"] = lambda name=name: GROUPS[name]().regular_representation()  # type: ignore[attr-defined]
    reps.update(
        {
            "SO3-irreps": lambda: SO3().irreps(IRREPS),
            "O3-irreps": lambda: O3().irreps(IRREPS),
            "SO3-tensor": lambda: SO3().irreps("1x1o").tensor(SO3().irreps("1x2e")),
            "O3-tensor": lambda: O3().irreps("1x1o").tensor(O3().irreps("1x0o + 1x1e")),
            "D6-tensor": lambda: (
                DihedralGroup(6)
                .standard_representation()
                .tensor(DihedralGroup(6).regular_representation())
            ),
            "S4-tensor": lambda: (
                SymmetricGroup(4)
                .standard_representation()
                .tensor(SymmetricGroup(4).standard_representation())
            ),
            "SO3-dual": lambda: SO3().irreps("1x2e + 1x1o").dual(),
            "S4-dual": lambda: SymmetricGroup(4).regular_representation().dual(),
            "D4-dual-tensor": lambda: (
                DihedralGroup(4)
                .standard_representation()
                .tensor(DihedralGroup(4).regular_representation())
                .dual()
            ),
            "O2-sum": lambda: O2().standard_representation() + O2().trivial_representation(),
            "D4-sum": lambda: (
                DihedralGroup(4).standard_representation()
                + DihedralGroup(4).regular_representation()
                + DihedralGroup(4).trivial_representation()
            ),
            "SO3-times-3": lambda: 3 * SO3().irreps("1x2e"),
            "C5-times-3": lambda: 3 * CyclicGroup(5).standard_representation(),
            "E-SO3-sum": lambda: (
                2 * Euclidean(SO3()).standard_representation()
                + Euclidean(SO3()).trivial_representation()
            ),
            "SO2-irrep0": lambda: SO2().irrep(0),
            "SO2-irrep1": lambda: SO2().irrep(1),
            "SO2-irrep3": lambda: SO2().irrep(3),
            "SO2-irrep-2": lambda: SO2().irrep(-2),
        }
    )
    return reps


REPS = _reps()
TRIVIAL_REPS = {"C1-standard", "C1-regular", "SO2-irrep0"}


@pytest.mark.parametrize("name", list(REPS))
def test_representation_is_homomorphism(name: str) -> None:
    rep = REPS[name]()
    group = rep.group
    a, b = _sample(group, 16, 1), _sample(group, 16, 2)
    ra, rb, rab = rep(a), rep(b), rep(group.compose(a, b))
    assert ra.shape == (16, rep.dim, rep.dim)
    assert ra.dtype == F64
    assert torch.allclose(rab, ra @ rb, atol=ATOL[F64])
    assert torch.allclose(rep(_identity(group, 1, a)), _eye(1, rep.dim), atol=ATOL[F64])
    assert torch.allclose(rep(group.inverse(a)), torch.linalg.inv(ra), atol=1e-8)
    assert rep(a, torch.float32).dtype == torch.float32
    if name not in TRIVIAL_REPS:  # a test that rho(g) = I everywhere would pass vacuously
        assert not torch.allclose(ra, _eye(16, rep.dim), atol=1e-3)


def test_direct_sum_blocks_and_multiplicity() -> None:
    vec, scalar = SO3().irreps("1x1o"), SO3().trivial_representation()
    rep = 2 * vec + scalar + vec
    irrep = vec.blocks[0][1]
    assert [(m, r.key) for m, r in rep.blocks] == [(2, irrep.key), (1, scalar.key), (1, irrep.key)]
    assert rep.dim == 10
    g = _sample(SO3(), 4)
    out = rep(g)
    assert torch.allclose(out[:, :3, :3], vec(g))
    assert torch.allclose(out[:, 3:6, 3:6], vec(g))
    assert torch.allclose(out[:, 6:7, 6:7], torch.ones(4, 1, 1, dtype=F64))
    assert torch.allclose(out[:, 7:, 7:], vec(g))
    assert torch.equal(out[:, :3, 3:], torch.zeros(4, 3, 7, dtype=F64))
    assert (3 * (vec + vec)).blocks[0][0] == 6  # merged, then multiplied


def test_tensor_and_dual_formulas() -> None:
    group = DihedralGroup(6)
    a, b = group.standard_representation(), group.regular_representation()
    g = _sample(group, 8)
    ab = a.tensor(b)
    assert ab.dim == 24
    expected = torch.stack([torch.kron(x, y) for x, y in zip(a(g), b(g), strict=True)])
    assert torch.allclose(ab(g), expected)
    assert torch.allclose(a.dual()(g), a(group.inverse(g)).transpose(-1, -2))


def test_o3_parity_matters() -> None:
    rep = O3().irreps(IRREPS)
    assert rep.dim == 1 + 1 + 6 + 3 + 5 + 7
    minus = -torch.eye(3, dtype=F64).unsqueeze(0)
    expected = torch.cat(
        [
            torch.ones(1),
            -torch.ones(1),
            -torch.ones(6),
            torch.ones(3),
            torch.ones(5),
            -torch.ones(7),
        ]
    ).to(F64)
    assert torch.allclose(rep(minus)[0], torch.diag(expected), atol=ATOL[F64])
    assert torch.allclose(O3().irreps("1x1o")(minus), -torch.eye(3, dtype=F64))
    assert torch.allclose(O3().irreps("1x1e")(minus), torch.eye(3, dtype=F64))
    assert torch.allclose(O3().irreps("1x0o")(minus), -torch.ones(1, 1, 1, dtype=F64))
    # SO(3) ignores parity: its reps agree with O(3)'s on proper rotations
    g = _sample(SO3(), 8)
    assert torch.allclose(SO3().irreps(IRREPS)(g), rep(g), atol=ATOL[F64])
    # an improper element -R acts as parity times D(R)
    parity = torch.diag(expected)
    assert torch.allclose(rep(-g), parity @ rep(g), atol=ATOL[F64])


def test_l1_irrep_is_the_rotation_matrix() -> None:
    """e3nn's real basis makes D_1(R) = R; float64 round-off, also near gimbal lock."""
    rep = SO3().irreps("1x1o")
    g = _sample(SO3(), 256)
    algebra = SO3().lie_algebra()
    near_poles = SO3().exp(
        torch.cat([t * algebra for t in (1e-9, 1e-5, math.pi - 1e-7, math.pi)], dim=0)
    )
    for rot in (g, near_poles):
        assert torch.allclose(rep(rot), rot, atol=1e-12)
    for degree in (2, 3):
        d = SO3().irreps(f"1x{degree}e")(g)
        assert torch.allclose(d @ d.transpose(-1, -2), _eye(256, 2 * degree + 1), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Lie algebras

LIE_DIMS = {"SO2": 1, "O2": 1, "SO3": 3, "O3": 3, "E-SO3": 6, "E-O2": 3, "SO4": 6, "O5": 10}


@pytest.mark.parametrize("name", CONTINUOUS)
def test_exp_of_lie_algebra_is_in_the_group(name: str) -> None:
    group = GROUPS[name]()
    algebra = group.lie_algebra()
    k = LIE_DIMS[name]
    m = algebra.shape[-1]
    assert algebra.shape == (k, m, m)
    assert algebra.dtype == F64
    assert torch.linalg.matrix_rank(algebra.flatten(1)) == k  # a basis
    t = torch.tensor([-2.0, -0.3, 0.7, 3.0], dtype=F64)
    g = group.exp((t[:, None, None, None] * algebra).reshape(-1, m, m))
    group.check(g)
    d = m - 1 if name.startswith("E") else m
    rot = g[:, :d, :d]
    assert torch.allclose(rot @ rot.transpose(-1, -2), _eye(g.shape[0], d), atol=ATOL[F64])
    assert torch.allclose(torch.linalg.det(rot), torch.ones(g.shape[0], dtype=F64), atol=ATOL[F64])
    if name.startswith("E"):
        bottom = torch.zeros(d + 1, dtype=F64)
        bottom[d] = 1.0
        assert torch.allclose(g[:, d], bottom.expand(g.shape[0], d + 1), atol=ATOL[F64])
    assert group.equal(group.exp(torch.zeros(1, m, m, dtype=F64)), _eye(1, m)).all()


@pytest.mark.parametrize("name", FINITE)
def test_finite_groups_have_no_lie_algebra(name: str) -> None:
    group = GROUPS[name]()
    assert group.lie_algebra().shape[0] == 0
    with pytest.raises(TypeError, match="finite"):
        group.exp(torch.zeros(1, 2, 2, dtype=F64))


LIE_REPS: dict[str, Callable[[], Representation]] = {
    "SO2-standard": lambda: SO2().standard_representation(),
    "SO2-irrep3": lambda: SO2().irrep(3),
    "SO2-irrep-2": lambda: SO2().irrep(-2),
    "O2-standard": lambda: O2().standard_representation(),
    "SO3-standard": lambda: SO3().standard_representation(),
    "SO3-l2": lambda: SO3().irreps("1x2e"),
    "SO3-irreps": lambda: SO3().irreps(IRREPS),
    "O3-irreps": lambda: O3().irreps("1x0o + 1x1e + 2x2e + 1x3o"),
    "SO3-tensor": lambda: SO3().irreps("1x1o").tensor(SO3().irreps("1x2e")),
    "SO3-dual-l2": lambda: SO3().irreps("1x2e").dual(),
    "SO3-dual-tensor": lambda: SO3().standard_representation().tensor(SO3().irreps("1x2e")).dual(),
    "SO3-sum": lambda: 2 * SO3().irreps("1x1o") + SO3().trivial_representation(),
    "E-SO3-standard": lambda: Euclidean(SO3()).standard_representation(),
    "E-O2-tensor": lambda: (
        Euclidean(O2()).standard_representation().tensor(Euclidean(O2()).standard_representation())
    ),
}


@pytest.mark.parametrize("name", list(LIE_REPS))
def test_representation_lie_algebra_matches_finite_difference(name: str) -> None:
    rep = LIE_REPS[name]()
    group = rep.group
    algebra = group.lie_algebra()
    d_rho = rep.lie_algebra()
    assert d_rho.shape == (algebra.shape[0], rep.dim, rep.dim)
    assert d_rho.dtype == F64
    t = 1e-5
    g = _sample(group, 3, seed=5)
    for k in range(algebra.shape[0]):
        plus, minus = group.exp(t * algebra[k : k + 1]), group.exp(-t * algebra[k : k + 1])
        at_identity = (rep(plus) - rep(minus)) / (2 * t)
        assert torch.allclose(at_identity[0], d_rho[k], atol=1e-6), (k, at_identity[0], d_rho[k])
        # d/dt rho(g exp(tA)) = rho(g) d rho(A): the same at non-identity points
        n = g.shape[0]
        at_g = (
            rep(group.compose(g, plus.expand(n, -1, -1)))
            - rep(group.compose(g, minus.expand(n, -1, -1)))
        ) / (2 * t)
        assert torch.allclose(at_g, rep(g) @ d_rho[k], atol=1e-6)
    assert d_rho.abs().max() > 0.5  # not vacuously zero


def test_so3_lie_algebra_is_the_cross_product_basis() -> None:
    """``A_k v = e_k x v``: infinitesimal rotations about x, y and z, to float64 round-off."""
    eye = torch.eye(3, dtype=F64)
    cross = torch.stack([torch.linalg.cross(eye[k].expand(3, 3), eye, dim=1).T for k in range(3)])
    assert torch.allclose(SO3().lie_algebra(), cross, rtol=0, atol=1e-15)
    assert torch.allclose(O3().lie_algebra(), cross, rtol=0, atol=1e-15)


def test_lie_algebra_tensors_are_not_shared() -> None:
    """Changing a returned basis must not change the group or its representations."""
    basis = SO3().lie_algebra()
    basis.zero_()
    assert SO3().lie_algebra().abs().max() > 0.5
    d_rho = SO3().irreps("1x2e").lie_algebra()
    d_rho.zero_()
    assert SO3().irreps("1x2e").lie_algebra().abs().max() > 0.5


# ---------------------------------------------------------------------------------------------
# Haar sampling


def _rotation_angles(rot: Tensor) -> Tensor:
    cos = (rot.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.arccos(cos.clamp(-1.0, 1.0))


def _ks_statistic(samples: Tensor, cdf: Callable[[Tensor], Tensor]) -> float:
    """Kolmogorov-Smirnov distance between the empirical CDF of ``samples`` and ``cdf``."""
    x = samples.sort().values
    n = x.shape[0]
    f = cdf(x)
    i = torch.arange(1, n + 1, dtype=F64)
    return max(float((i / n - f).max()), float((f - (i - 1) / n).max()))


def _haar_angle_cdf(theta: Tensor) -> Tensor:
    """CDF of the rotation angle of a Haar-random rotation: density (1 - cos t) / pi."""
    return (theta - torch.sin(theta)) / math.pi


def _euler_zyz(alpha: Tensor, beta: Tensor, gamma: Tensor) -> Tensor:
    def about(axis: int, angle: Tensor) -> Tensor:
        algebra = SO3().lie_algebra()[axis]
        return torch.linalg.matrix_exp(angle[:, None, None] * algebra)

    return about(2, alpha) @ about(1, beta) @ about(2, gamma)


KS_BOUND = 0.02  # false alarm ~2 exp(-2 n 0.02^2) ~ 2e-7 at n = 20000 (5% critical value: 0.0096)


def test_so3_haar_sampling() -> None:
    n = 20000
    rot = SO3().sample(n, _gen(11), dtype=F64)
    assert torch.allclose(rot @ rot.transpose(-1, -2), _eye(n, 3), atol=ATOL[F64])
    assert torch.allclose(torch.linalg.det(rot), torch.ones(n, dtype=F64), atol=ATOL[F64])
    assert rot.mean(dim=0).abs().max() < 0.03
    assert _ks_statistic(_rotation_angles(rot), _haar_angle_cdf) < KS_BOUND


def test_ks_statistic_catches_a_non_haar_sampler() -> None:
    """Negative control: uniform Euler angles over-weight small rotations; the statistic used
    above must reject them (so the Haar test is not vacuous)."""
    n = 20000
    gen = _gen(12)
    alpha = torch.rand(n, generator=gen, dtype=F64) * 2 * math.pi
    beta = torch.rand(n, generator=gen, dtype=F64) * math.pi
    gamma = torch.rand(n, generator=gen, dtype=F64) * 2 * math.pi
    rot = _euler_zyz(alpha, beta, gamma)
    assert torch.allclose(rot @ rot.transpose(-1, -2), _eye(n, 3), atol=ATOL[F64])
    assert _ks_statistic(_rotation_angles(rot), _haar_angle_cdf) > 3 * KS_BOUND


@pytest.mark.parametrize("name", ["SO4", "O5"])
def test_orthogonal_n_haar_moments(name: str) -> None:
    """Haar moments of O(n) / SO(n), n >= 3: E[g] = 0, E[g_ij^2] = 1/n and E[tr(g)^2] = 1
    (the defining representation is irreducible); O(n) has both determinants equally often."""
    group, n = GROUPS[name](), 20000
    g = group.sample(n, _gen(14), dtype=F64)
    d = g.shape[-1]
    assert torch.allclose(g @ g.transpose(-1, -2), _eye(n, d), atol=ATOL[F64])
    assert g.mean(dim=0).abs().max() < 0.03
    assert (g.pow(2).mean(dim=0) - 1 / d).abs().max() < 0.01
    trace = g.diagonal(dim1=-2, dim2=-1).sum(-1)
    assert abs(float(trace.pow(2).mean()) - 1.0) < 0.05
    det = torch.linalg.det(g)
    if group.special:
        assert torch.allclose(det, torch.ones(n, dtype=F64), atol=ATOL[F64])
    else:
        assert abs(float((det > 0).double().mean()) - 0.5) < 0.02
    # negative control: rotations near the identity fail the trace moment
    near = group.exp(
        0.1
        * (
            torch.randn(n, group.lie_algebra().shape[0], dtype=F64, generator=_gen(15))
            @ group.lie_algebra().flatten(1)
        ).reshape(n, d, d)
    )
    assert float(near.diagonal(dim1=-2, dim2=-1).sum(-1).pow(2).mean()) > 10


def test_so2_and_o2_haar_sampling() -> None:
    n = 20000
    rot = SO2().sample(n, _gen(13), dtype=F64)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(n, dtype=F64), atol=ATOL[F64])
    angle = torch.atan2(rot[:, 1, 0], rot[:, 0, 0])  # (-pi, pi]
    assert _ks_statistic(angle, lambda t: (t + math.pi) / (2 * math.pi)) < KS_BOUND
    # negative control: a squeezed angle distribution is rejected
    assert _ks_statistic(angle / 2, lambda t: (t + math.pi) / (2 * math.pi)) > 3 * KS_BOUND
    o2 = O2().sample(n, _gen(14), dtype=F64)
    assert torch.allclose(o2 @ o2.transpose(-1, -2), _eye(n, 2), atol=ATOL[F64])
    det = torch.linalg.det(o2)
    assert torch.allclose(det.abs(), torch.ones(n, dtype=F64))
    assert abs(float((det < 0).to(F64).mean()) - 0.5) < 0.02
    first_column = torch.atan2(o2[:, 1, 0], o2[:, 0, 0])
    assert _ks_statistic(first_column, lambda t: (t + math.pi) / (2 * math.pi)) < KS_BOUND


def test_o3_haar_sampling() -> None:
    n = 20000
    g = O3().sample(n, _gen(15), dtype=F64)
    det = torch.linalg.det(g)
    assert torch.allclose(det.abs(), torch.ones(n, dtype=F64))
    assert abs(float((det < 0).to(F64).mean()) - 0.5) < 0.02
    proper = g * det[:, None, None]
    assert _ks_statistic(_rotation_angles(proper), _haar_angle_cdf) < KS_BOUND
    assert g.mean(dim=0).abs().max() < 0.03


def test_euclidean_sampling() -> None:
    n = 20000
    group = Euclidean(SO3(), translation_scale=2.0)
    g = group.sample(n, _gen(16), dtype=F64)
    assert torch.equal(g[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=F64).expand(n, 4))
    shift = group.translation(g)
    assert shift.mean(dim=0).abs().max() < 0.06
    assert (shift.std(dim=0) - 2.0).abs().max() < 0.06
    assert _ks_statistic(_rotation_angles(group.rotation(g)), _haar_angle_cdf) < KS_BOUND


def test_symmetric_group_sampling_is_uniform() -> None:
    group = SymmetricGroup(3)
    n = 6000
    counts = torch.bincount(group.index(group.sample(n, _gen(17))), minlength=6).to(F64)
    expected = n / 6
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 25.0  # 5 degrees of freedom: P(chi2 > 25) ~ 1e-4
    # negative control: the same statistic rejects a sampler that favours one permutation
    skewed = counts.clone()
    skewed[0] += 150
    skewed[1] -= 150
    assert float(((skewed - expected) ** 2 / expected).sum()) > 25.0


@pytest.mark.parametrize("name", ["C5", "D6", "S4", "B3"])
def test_finite_sampling_covers_every_element(name: str) -> None:
    group: FiniteGroup = GROUPS[name]()  # type: ignore[assignment]
    idx = group.index(group.sample(40 * group.order, _gen(18)))
    assert torch.equal(idx.unique(), torch.arange(group.order))


@pytest.mark.parametrize("name", list(GROUPS))
def test_generator_makes_sampling_reproducible(name: str) -> None:
    group = GROUPS[name]()
    first = group.sample(8, _gen(19), dtype=F64)
    again = group.sample(8, _gen(19), dtype=F64)
    assert torch.equal(first, again)
    group.check(first)
    if name not in ("C1",):
        other = group.sample(8, _gen(20), dtype=F64)
        assert not torch.equal(first, other)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_sample_dtype(name: str) -> None:
    group = GROUPS[name]()
    assert group.sample(3, _gen(), dtype=F64).dtype == F64
    assert group.sample(3, _gen(), dtype=torch.float32).dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# devices: every tensor a representation creates follows g's device. The meta device stands in
# for CUDA (mixing meta and CPU tensors raises, like mixing CUDA and CPU).

META_REPS: dict[str, Callable[[], Representation]] = {
    "SO2-standard": lambda: SO2().standard_representation(),
    "SO2-irrep2": lambda: SO2().irrep(2),
    "O2-sum": lambda: O2().standard_representation() + O2().trivial_representation(),
    "SO3-irreps": lambda: SO3().irreps(IRREPS),
    "O3-irreps": lambda: O3().irreps(IRREPS),
    "SO3-tensor-dual": lambda: SO3().irreps("1x1o").tensor(SO3().irreps("1x2e")).dual(),
    "E-SO3-standard": lambda: Euclidean(SO3()).standard_representation(),
}


@pytest.mark.parametrize("name", list(META_REPS))
def test_representations_stay_on_the_device_of_g(name: str) -> None:
    rep = META_REPS[name]()
    g = rep.group.sample(4, _gen(), device="meta", dtype=F64)
    assert g.device.type == "meta"
    out = rep(g)
    assert out.device.type == "meta"
    assert out.shape == (4, rep.dim, rep.dim)


@pytest.mark.parametrize(
    "rep_factory",
    [
        lambda: SO3().trivial_representation(),
        lambda: DihedralGroup(4).standard_representation(),
        lambda: SymmetricGroup(4).standard_representation(),
    ],
    ids=["trivial", "D4-standard", "S4-standard"],
)
def test_matrices_are_created_on_the_device_of_g(rep_factory) -> None:
    """Representations that build new tensors (ones, zeros) build them on g's device. Finite
    groups' checks read values, which meta tensors lack, so the matrix function is called
    directly on already valid elements."""
    rep = rep_factory()
    g = rep.group.sample(3, _gen(), dtype=F64)
    expected = rep(g)
    out = rep._matrices(g.to("meta"))
    assert out.device.type == "meta"
    assert out.shape == expected.shape


def test_finite_sampling_device() -> None:
    group = DihedralGroup(4)
    g = group.sample(5, _gen(21), device="meta")
    assert g.device.type == "meta"
    assert g.shape == (5, 2)
    assert torch.equal(group.sample(5, _gen(21), device="cpu"), group.sample(5, _gen(21)))


# ---------------------------------------------------------------------------------------------
# input validation

BAD_ELEMENTS: list[tuple[str, Callable[[], Group], object]] = [
    ("C5-float", lambda: CyclicGroup(5), torch.tensor([1.0, 2.0])),
    ("C5-2d", lambda: CyclicGroup(5), torch.tensor([[1, 2]])),
    ("C5-too-large", lambda: CyclicGroup(5), torch.tensor([0, 5])),
    ("C5-negative", lambda: CyclicGroup(5), torch.tensor([-1])),
    ("D4-shape", lambda: DihedralGroup(4), torch.tensor([[1, 0, 0]])),
    ("D4-float", lambda: DihedralGroup(4), torch.tensor([[1.0, 0.0]])),
    ("D4-k", lambda: DihedralGroup(4), torch.tensor([[4, 0]])),
    ("D4-f", lambda: DihedralGroup(4), torch.tensor([[1, 2]])),
    ("S4-not-permutation", lambda: SymmetricGroup(4), torch.tensor([[0, 0, 1, 2]])),
    ("S4-shape", lambda: SymmetricGroup(4), torch.tensor([[0, 1, 2]])),
    ("S4-float", lambda: SymmetricGroup(4), torch.tensor([[0.0, 1.0, 2.0, 3.0]])),
    ("SO2-3x3", SO2, torch.eye(3).expand(2, 3, 3)),
    ("SO2-unbatched", SO2, torch.eye(2)),
    ("SO2-integer", SO2, torch.eye(2, dtype=torch.long).expand(2, 2, 2)),
    ("SO3-2x2", SO3, torch.eye(2).expand(2, 2, 2)),
    ("O3-2x2", O3, torch.eye(2).expand(2, 2, 2)),
    ("E-SO3-3x3", lambda: Euclidean(SO3()), torch.eye(3).expand(2, 3, 3)),
    ("B3-2x2", lambda: MatrixGroup(_signed_permutations()), torch.eye(2).expand(1, 2, 2)),
]


@pytest.mark.parametrize(
    ("group_factory", "bad"), [c[1:] for c in BAD_ELEMENTS], ids=[c[0] for c in BAD_ELEMENTS]
)
def test_bad_elements_raise_naming_the_argument(group_factory, bad) -> None:
    group = group_factory()
    good = group.identity(1)
    with pytest.raises(ValueError, match=r"^g:"):
        group.check(bad)
    with pytest.raises(ValueError, match=r"^a:"):
        group.compose(bad, good)
    with pytest.raises(ValueError, match=r"^b:"):
        group.compose(good, bad)
    with pytest.raises(ValueError, match=r"^a:"):
        group.inverse(bad)
    with pytest.raises(ValueError, match=r"^g:"):
        group.standard_representation()(bad)


@pytest.mark.parametrize("name", list(GROUPS))
def test_non_tensor_elements_raise_type_error(name: str) -> None:
    group = GROUPS[name]()
    with pytest.raises(TypeError, match=r"^g:"):
        group.check([0, 1])
    with pytest.raises(TypeError, match=r"^a:"):
        group.inverse([0, 1])


def test_matrix_group_index_rejects_non_members() -> None:
    group = MatrixGroup(_d4_matrices())
    angle = torch.tensor(0.3, dtype=F64)
    rot = torch.stack(
        [torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])]
    ).unsqueeze(0)
    with pytest.raises(ValueError, match=r"^g:"):
        group.index(rot)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match=r"^n:"):
        CyclicGroup(0)
    with pytest.raises(ValueError, match=r"^n:"):
        DihedralGroup(-2)
    with pytest.raises(TypeError, match=r"^n:"):
        SymmetricGroup(3.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^n:"):
        CyclicGroup(True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^n:"):
        SymmetricGroup(9).elements()
    with pytest.raises(TypeError, match=r"^base:"):
        Euclidean(CyclicGroup(4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^generators:"):
        MatrixGroup(torch.ones(2, 2, 3))
    with pytest.raises(TypeError, match=r"^generators:"):
        MatrixGroup([[1.0]])  # type: ignore[arg-type]


def test_bad_representation_arguments() -> None:
    so3, o3 = SO3().standard_representation(), O3().standard_representation()
    with pytest.raises(ValueError, match=r"^blocks:"):
        so3 + o3
    with pytest.raises(ValueError, match=r"^blocks:"):
        DirectSum([(1, so3), (2, O3().irreps("1x1o"))])
    with pytest.raises(ValueError, match=r"^blocks:"):
        DirectSum([])
    with pytest.raises(ValueError, match=r"^other:"):
        so3.tensor(o3)
    with pytest.raises(ValueError, match=r"^multiplicity:"):
        0 * so3
    with pytest.raises(TypeError, match=r"^multiplicity:"):
        2.0 * so3  # type: ignore[operator]
    with pytest.raises(ValueError, match=r"^dim:"):
        Representation(SO3(), 0, lambda g: g, key="bad")
    with pytest.raises(ValueError, match=r"^g:"):
        SO3().irreps("1x2e")(torch.eye(2, dtype=F64).unsqueeze(0))
