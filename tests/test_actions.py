"""Property tests of group actions: homomorphism, identity, conventions (rotation direction,
mirrors, permutations, regular fibres), broadcasting and input validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from _tolerances import ATOL, F64
from equirelax.actions import (
    Action,
    DirectSumAction,
    ImageAction,
    PermutationAction,
    PointAction,
    RepresentationAction,
    TrivialAction,
    VectorAction,
    _pixel_grid,
    _pixel_permutation,
    _rotate_bilinear,
    increment_action,
)
from equirelax.groups import (
    O3,
    SO2,
    SO3,
    CyclicGroup,
    DihedralGroup,
    Euclidean,
    FiniteGroup,
    Group,
    SymmetricGroup,
)
from equirelax.representations import Representation

B = 4


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=F64)


def _identity(group: Group, n: int) -> Tensor:
    e = group.identity(n)
    return e.to(F64) if e.is_floating_point() else e


def _close(x: Any, y: Any, atol: float) -> bool:
    if isinstance(x, tuple):
        return all(_close(a, b, atol) for a, b in zip(x, y, strict=True))
    return torch.allclose(x, y, rtol=0, atol=atol)


# name -> (action factory, input factory, nontrivial?)
CASES: dict[str, tuple[Callable[[], Action], Callable[[], Any], bool]] = {
    "trivial": (lambda: TrivialAction(SO3()), lambda: _randn(B, 5), False),
    "irreps-last": (
        lambda: RepresentationAction(SO3().irreps("2x0e + 1x1o + 1x2e")),
        lambda: _randn(B, 6, 10),
        True,
    ),
    "irreps-dim1": (
        lambda: RepresentationAction(O3().irreps("1x0o + 2x1o + 1x2e"), dim=1),
        lambda: _randn(B, 12, 6),
        True,
    ),
    "vector-O3": (lambda: VectorAction(O3()), lambda: _randn(B, 7, 3), True),
    "point-E3": (lambda: PointAction(Euclidean(SO3())), lambda: _randn(B, 7, 3), True),
    "point-SO3": (lambda: PointAction(SO3()), lambda: _randn(B, 7, 3), True),
    "image-C4-8": (lambda: ImageAction(CyclicGroup(4)), lambda: _randn(B, 2, 8, 8), True),
    "image-C4-9": (lambda: ImageAction(CyclicGroup(4)), lambda: _randn(B, 2, 9, 9), True),
    "image-D4-8": (lambda: ImageAction(DihedralGroup(4)), lambda: _randn(B, 2, 8, 8), True),
    "image-D4-9": (lambda: ImageAction(DihedralGroup(4)), lambda: _randn(B, 2, 9, 9), True),
    "image-C4-regular": (
        lambda: ImageAction(CyclicGroup(4), fibre="regular"),
        lambda: _randn(B, 2, 4, 9, 9),
        True,
    ),
    "image-D4-regular": (
        lambda: ImageAction(DihedralGroup(4), fibre="regular"),
        lambda: _randn(B, 2, 8, 8, 8),
        True,
    ),
    "image-C4-vector": (
        lambda: ImageAction(CyclicGroup(4), fibre="vector"),
        lambda: _randn(B, 3, 2, 9, 9),
        True,
    ),
    "image-D4-vector": (
        lambda: ImageAction(DihedralGroup(4), fibre="vector"),
        lambda: _randn(B, 2, 8, 8),
        True,
    ),
    "set": (lambda: PermutationAction(SymmetricGroup(5)), lambda: _randn(B, 5, 3), True),
    "graph": (
        lambda: PermutationAction(SymmetricGroup(5), dims=(1, 2)),
        lambda: _randn(B, 5, 5, 2),
        True,
    ),
    "particles-E-O3": (
        lambda: DirectSumAction(
            PointAction(Euclidean(O3())),
            VectorAction(Euclidean(O3())),
            TrivialAction(Euclidean(O3())),
        ),
        lambda: (_randn(B, 6, 3, seed=1), _randn(B, 6, 3, seed=2), _randn(B, 6, seed=3)),
        True,
    ),
}
EXACT_ACTIONS = {name for name in CASES if name.startswith(("image", "set", "graph", "trivial"))}


@pytest.mark.parametrize("name", list(CASES))
def test_action_is_homomorphism(name: str) -> None:
    make_action, make_x, nontrivial = CASES[name]
    action, x = make_action(), make_x()
    group = action.group
    a, b = group.sample(B, _gen(1), dtype=F64), group.sample(B, _gen(2), dtype=F64)
    # pixel and index permutations are exact; the rest is float64 round-off
    atol = 0.0 if name in EXACT_ACTIONS else ATOL[F64]
    assert _close(action(a, action(b, x)), action(group.compose(a, b), x), atol)
    assert _close(action(_identity(group, B), x), x, atol)
    assert _close(action(group.inverse(a), action(a, x)), x, atol)
    if nontrivial:
        assert not _close(action(a, x), x, 1e-3)


def test_homomorphism_test_detects_a_wrong_composition_order() -> None:
    """Negative control for non-commuting groups: ``a (b x)`` must differ from ``(b a) x``."""
    for name in ["image-D4-9", "set", "graph", "vector-O3", "image-D4-regular"]:
        make_action, make_x, _ = CASES[name]
        action, x = make_action(), make_x()
        group = action.group
        a, b = group.sample(B, _gen(1), dtype=F64), group.sample(B, _gen(2), dtype=F64)
        assert not _close(action(a, action(b, x)), action(group.compose(b, a), x), 1e-6), name


# ---------------------------------------------------------------------------------------------
# semantics


def test_representation_action_matches_the_matrices() -> None:
    rep = SO3().irreps("2x0e + 1x1o + 1x2e")
    g = SO3().sample(B, _gen(3), dtype=F64)
    x = _randn(B, 6, 10)
    expected = torch.einsum("bij,bnj->bni", rep(g), x)
    assert torch.allclose(RepresentationAction(rep)(g, x), expected, atol=ATOL[F64])
    # dim=1 on (B, d, N) is the same map applied to the transposed tensor
    moved = RepresentationAction(rep, dim=1)(g, x.transpose(1, 2))
    assert torch.allclose(moved, expected.transpose(1, 2), atol=ATOL[F64])
    # float32 input stays float32
    assert RepresentationAction(rep)(g, x.float()).dtype == torch.float32


def test_vector_and_point_actions() -> None:
    group = Euclidean(SO3())
    g = group.sample(B, _gen(4), dtype=F64)
    x = _randn(B, 7, 3)
    rot, shift = group.rotation(g), group.translation(g)
    rotated = torch.einsum("bij,bnj->bni", rot, x)
    assert torch.allclose(PointAction(group)(g, x), rotated + shift[:, None], atol=ATOL[F64])
    assert torch.allclose(VectorAction(group)(g, x), rotated, atol=ATOL[F64])  # vectors: no shift
    # a pure translation moves points and leaves vectors alone
    pure = Euclidean.from_parts(torch.eye(3, dtype=F64).expand(B, 3, 3), shift)
    assert torch.allclose(PointAction(group)(pure, x), x + shift[:, None], atol=ATOL[F64])
    assert torch.allclose(VectorAction(group)(pure, x), x, atol=ATOL[F64])
    # without translations, points rotate about the origin
    rot_only = SO3().sample(B, _gen(5), dtype=F64)
    assert torch.allclose(
        PointAction(SO3())(rot_only, x), torch.einsum("bij,bnj->bni", rot_only, x), atol=ATOL[F64]
    )


def test_image_c4_generator_is_counter_clockwise_rot90() -> None:
    action = ImageAction(CyclicGroup(4))
    for size in (8, 9):
        x = _randn(2, 3, size, size)
        for k in range(4):
            g = torch.tensor([k])
            assert torch.equal(action(g, x), torch.rot90(x, k, dims=(-2, -1)))
    # as displayed (row 0 on top): the top-right corner moves to the top-left
    x = torch.zeros(1, 1, 3, 3, dtype=F64)
    x[0, 0, 0, 2] = 1.0
    assert action(torch.tensor([1]), x)[0, 0, 0, 0] == 1.0


def test_image_d4_mirror_is_left_right_flip() -> None:
    action = ImageAction(DihedralGroup(4))
    for size in (8, 9):
        x = _randn(2, 3, size, size)
        assert torch.equal(action(torch.tensor([[0, 1]]), x), torch.flip(x, dims=(-1,)))
        # r^k s: flip first, then rotate
        for k in range(4):
            expected = torch.rot90(torch.flip(x, dims=(-1,)), k, dims=(-2, -1))
            assert torch.equal(action(torch.tensor([[k, 1]]), x), expected)


@pytest.mark.parametrize("group", [CyclicGroup(4), DihedralGroup(4), CyclicGroup(2)], ids=str)
@pytest.mark.parametrize("size", [8, 9])
def test_exact_path_agrees_with_bilinear(group: FiniteGroup, size: int) -> None:
    action = ImageAction(group)
    assert action.exact
    x = _randn(group.order, 2, size, size)
    g = group.elements()
    interpolated = _rotate_bilinear(x, group.standard_representation()(g))
    assert torch.allclose(action(g, x), interpolated, atol=1e-12)


def test_regular_fibre_permutes_the_group_axis() -> None:
    """``(g . f)(h) = f(g^-1 h)``, with each group channel also moved in the plane."""
    for group in (CyclicGroup(4), DihedralGroup(4)):
        spatial = ImageAction(group)
        regular = ImageAction(group, fibre="regular")
        n = group.order
        x = _randn(n, 2, n, 9, 9)
        g = group.elements()  # every element once
        out = regular(g, x)
        el = group.elements()
        for i in range(n):
            for j in range(n):
                source = int(group.index(group.compose(group.inverse(g[i : i + 1]), el[j : j + 1])))
                expected = spatial(g[i : i + 1], x[i : i + 1, :, source])
                assert torch.equal(out[i : i + 1, :, j], expected)


def test_interpolated_rotations_are_approximately_homomorphic() -> None:
    """C8 and SO(2) use bilinear interpolation: on a smooth blob, inside a central disk, the
    homomorphism error is small compared with the motion itself."""
    size = 33
    centre = (size - 1) / 2
    r = torch.arange(size, dtype=F64)
    rows, cols = torch.meshgrid(r, r, indexing="ij")
    blob = torch.exp(-((cols - centre - 2) ** 2 + (rows - centre + 1.5) ** 2) / (2 * 4.0**2))
    x = blob.expand(16, 1, size, size).clone()
    disk = (cols - centre) ** 2 + (rows - centre) ** 2 <= (centre - 2) ** 2
    for group in (CyclicGroup(8), SO2()):
        action = ImageAction(group)
        assert not action.exact
        a, b = group.sample(16, _gen(6), dtype=F64), group.sample(16, _gen(7), dtype=F64)
        error = (action(a, action(b, x)) - action(group.compose(a, b), x))[..., disk]
        motion = (action(a, x) - x)[..., disk]
        assert error.abs().max() < 0.04
        assert motion.abs().max() > 0.3
        assert torch.allclose(action(_identity(group, 16), x), x, atol=1e-12)


def test_c8_quarter_turns_match_c4() -> None:
    x = _randn(2, 3, 9, 9)
    c8, c4 = ImageAction(CyclicGroup(8)), ImageAction(CyclicGroup(4))
    for k in range(4):
        assert torch.allclose(c8(torch.tensor([2 * k]), x), c4(torch.tensor([k]), x), atol=1e-12)
    # and SO(2) at 90 degrees, in float32 as well
    quarter = torch.tensor([[[0.0, -1.0], [1.0, 0.0]]])
    assert torch.allclose(
        ImageAction(SO2())(quarter, x.float()), torch.rot90(x.float(), 1, (-2, -1)), atol=1e-5
    )


def test_permutation_semantics() -> None:
    group = SymmetricGroup(5)
    g = group.sample(B, _gen(8))
    x = _randn(B, 5, 3)
    out = PermutationAction(group)(g, x)
    adjacency = _randn(B, 5, 5, 2, seed=1)
    moved = PermutationAction(group, dims=(1, 2))(g, adjacency)
    for b in range(B):
        for i in range(5):
            assert torch.equal(out[b, g[b, i]], x[b, i])  # (g . x)[g[i]] = x[i]
            for j in range(5):
                assert torch.equal(moved[b, g[b, i], g[b, j]], adjacency[b, i, j])
    # the action agrees with the standard (permutation-matrix) representation
    assert torch.allclose(out, torch.einsum("bij,bjc->bic", group.standard_representation()(g), x))


def test_direct_sum_action_parts() -> None:
    group = Euclidean(O3())
    action = DirectSumAction(PointAction(group), VectorAction(group), TrivialAction(group))
    g = group.sample(B, _gen(9), dtype=F64)
    pos, vel, charge = _randn(B, 6, 3, seed=1), _randn(B, 6, 3, seed=2), _randn(B, 6, seed=3)
    out = action(g, (pos, vel, charge))
    assert isinstance(out, tuple)
    assert len(out) == 3
    assert torch.allclose(out[0], PointAction(group)(g, pos), atol=ATOL[F64])
    assert torch.allclose(out[1], VectorAction(group)(g, vel), atol=ATOL[F64])
    assert torch.equal(out[2], charge)
    assert action(g, [pos, vel, charge])[2] is charge  # lists are accepted too


# ---------------------------------------------------------------------------------------------
# broadcasting and devices


@pytest.mark.parametrize(
    "name", ["irreps-dim1", "point-E3", "image-D4-9", "image-D4-regular", "graph", "particles-E-O3"]
)
def test_one_element_broadcasts_over_the_batch(name: str) -> None:
    make_action, make_x, _ = CASES[name]
    action, x = make_action(), make_x()
    one = action.group.sample(1, _gen(10), dtype=F64)
    many = one.expand(B, *one.shape[1:]).clone()  # B separate copies of the element
    assert _close(action(one, x), action(many, x), 0.0)


def test_one_shared_element_has_its_matrices_computed_once() -> None:
    """A representation acting with one element on a batch builds ``rho(g)`` for one element,
    not for each sample (CR moves every batch and every recorded layer input this way)."""
    group = O3()
    sizes: list[int] = []

    def matrices(g: Tensor) -> Tensor:
        sizes.append(g.shape[0])
        return g.to(torch.float64)

    action = RepresentationAction(Representation(group, 3, matrices, key="counted"))
    x = _randn(B, 4, 3)
    one = group.sample(1, _gen(3), dtype=F64)
    moved = action(one, x)
    assert sizes == [1]
    torch.testing.assert_close(moved, x @ one[0].T, rtol=0, atol=1e-14)
    action(one.expand(B, 3, 3).clone(), x)
    assert sizes == [1, B]


@pytest.mark.parametrize("name", ["trivial", "irreps-last", "image-C4-9", "set", "particles-E-O3"])
def test_wrong_number_of_elements_raises_naming_g(name: str) -> None:
    make_action, make_x, _ = CASES[name]
    action, x = make_action(), make_x()
    with pytest.raises(ValueError, match=r"^g:"):
        action(action.group.sample(B + 1, _gen(), dtype=F64), x)
    with pytest.raises(ValueError, match=r"^g:"):
        action(action.group.sample(2, _gen(), dtype=F64), x)


def test_elements_of_the_wrong_group_raise_naming_g() -> None:
    with pytest.raises(ValueError, match=r"^g:"):
        VectorAction(SO3())(torch.eye(2, dtype=F64).expand(B, 2, 2), _randn(B, 3))
    with pytest.raises(ValueError, match=r"^g:"):
        ImageAction(CyclicGroup(4))(torch.tensor([4]), _randn(1, 1, 5, 5))
    with pytest.raises(ValueError, match=r"^g:"):
        PermutationAction(SymmetricGroup(3))(torch.tensor([[0, 0, 1]]), _randn(1, 3))


def test_pixel_helpers_follow_the_device_of_the_matrices() -> None:
    """The cached CPU pixel grid is moved to the matrices' device (meta stands in for CUDA)."""
    matrices = torch.tensor([[[0, -1], [1, 0]]]).to("meta")
    assert _pixel_permutation(matrices, 5).device.type == "meta"
    assert _pixel_grid(5, "meta").device.type == "meta"


def test_pixel_grid_cache_is_not_shared() -> None:
    grid = _pixel_grid(5)
    grid.zero_()
    x = _randn(1, 1, 5, 5)
    assert torch.equal(
        ImageAction(CyclicGroup(4))(torch.tensor([1]), x), torch.rot90(x, 1, (-2, -1))
    )


def test_continuous_actions_stay_on_the_device_of_x() -> None:
    group = Euclidean(SO3())
    g = group.sample(B, _gen(), device="meta", dtype=F64)
    x = torch.zeros(B, 7, 3, dtype=F64, device="meta")
    assert PointAction(group)(g, x).device.type == "meta"
    h = SO3().sample(B, _gen(), device="meta", dtype=F64)
    rep = RepresentationAction(SO3().irreps("1x0e + 1x1o + 1x2e"), dim=1)
    assert rep(h, torch.zeros(B, 9, 2, dtype=F64, device="meta")).device.type == "meta"


# ---------------------------------------------------------------------------------------------
# input validation

BAD_INPUTS: list[tuple[str, Callable[[], Action], Any, str]] = [
    ("trivial-scalar", lambda: TrivialAction(SO3()), torch.tensor(1.0), "x:"),
    ("rep-size", lambda: RepresentationAction(SO3().irreps("1x1o")), _randn(B, 4), "x:"),
    ("rep-dim1", lambda: RepresentationAction(SO3().irreps("1x1o"), dim=1), _randn(B, 5, 3), "x:"),
    ("rep-1d", lambda: RepresentationAction(SO3().irreps("1x0e")), _randn(B), "x:"),
    ("vector-size", lambda: VectorAction(SO3()), _randn(B, 5, 2), "x:"),
    ("point-size", lambda: PointAction(Euclidean(SO3())), _randn(B, 5, 4), "x:"),
    ("image-not-square", lambda: ImageAction(CyclicGroup(4)), _randn(B, 1, 8, 9), "x:"),
    ("image-3d", lambda: ImageAction(CyclicGroup(4)), _randn(B, 8, 8), "x:"),
    ("image-regular-4d", lambda: ImageAction(CyclicGroup(4), "regular"), _randn(B, 2, 8, 8), "x:"),
    (
        "image-regular-channels",
        lambda: ImageAction(DihedralGroup(4), "regular"),
        _randn(B, 2, 4, 8, 8),
        "x:",
    ),
    ("set-size", lambda: PermutationAction(SymmetricGroup(5)), _randn(B, 4, 3), "x:"),
    ("graph-size", lambda: PermutationAction(SymmetricGroup(5), (1, 2)), _randn(B, 5, 4), "x:"),
    ("graph-ndim", lambda: PermutationAction(SymmetricGroup(5), (1, 2)), _randn(B, 5), "x:"),
    (
        "sum-length",
        lambda: DirectSumAction(VectorAction(SO3()), TrivialAction(SO3())),
        (_randn(B, 3),),
        "x:",
    ),
    (
        "sum-part",
        lambda: DirectSumAction(VectorAction(SO3()), VectorAction(SO3())),
        (_randn(B, 3), _randn(B, 2)),
        r"x\[1\]:",
    ),
    (
        "sum-batch",
        lambda: DirectSumAction(VectorAction(SO3()), TrivialAction(SO3())),
        (_randn(B, 3), _randn(B + 1, 2)),
        "x:",
    ),
    (
        "sum-not-tuple",
        lambda: DirectSumAction(VectorAction(SO3()), TrivialAction(SO3())),
        _randn(B, 3),
        "x:",
    ),
]


@pytest.mark.parametrize(
    ("make_action", "x", "match"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_inputs_raise_naming_x(make_action, x, match: str) -> None:
    action = make_action()
    g = action.group.identity(1)
    with pytest.raises(ValueError, match=rf"^{match}"):
        action(g, x)


def test_non_tensor_input_raises_type_error() -> None:
    with pytest.raises(TypeError, match=r"^x:"):
        VectorAction(SO3())(SO3().identity(1), [[1.0, 2.0, 3.0]])


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match=r"^actions\[1\]:"):
        DirectSumAction(VectorAction(SO3()), VectorAction(O3()))
    with pytest.raises(ValueError, match=r"^actions:"):
        DirectSumAction()
    with pytest.raises(TypeError, match=r"^actions\[0\]:"):
        DirectSumAction("not an action")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^fibre:"):
        ImageAction(CyclicGroup(4), fibre="irregular")
    with pytest.raises(ValueError, match=r"^fibre:"):
        ImageAction(SO2(), fibre="regular")
    with pytest.raises(ValueError, match=r"^group:"):
        ImageAction(SO3())
    with pytest.raises(TypeError, match=r"^group:"):
        PermutationAction(CyclicGroup(4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^dims:"):
        PermutationAction(SymmetricGroup(3), dims=(0,))
    with pytest.raises(ValueError, match=r"^dims:"):
        PermutationAction(SymmetricGroup(3), dims=())
    with pytest.raises(TypeError, match=r"^group:"):
        TrivialAction("SO3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^representation:"):
        RepresentationAction(SO3())  # type: ignore[arg-type]


def test_increment_action_moves_differences_of_points() -> None:
    """``increment_action``: a point part becomes a vector part (``g (x - y) = R (x - y)``);
    actions without a point part come back as they are."""
    group = Euclidean(O3())
    points = DirectSumAction(TrivialAction(group), PointAction(group))
    increments = increment_action(points)
    g = group.sample(4, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    y = torch.randn(4, 5, 3, dtype=torch.float64)
    h = torch.randn(4, 5, 2, dtype=torch.float64)
    moved = points(g, (h, x))[1] - points(g, (h, y))[1]
    torch.testing.assert_close(increments(g, (h, x - y))[1], moved)
    assert (points(g, (h, x - y))[1] - moved).abs().max() > 0.1  # the translation
    vectors = DirectSumAction(TrivialAction(group), VectorAction(group))
    assert increment_action(vectors) is vectors


@pytest.mark.parametrize("group", [CyclicGroup(4), DihedralGroup(4), CyclicGroup(8)])
def test_vector_fibre_turns_positions_and_vectors_alike(group: Any) -> None:
    """The radial field ``v(p) = p`` (``x`` right, ``y`` up) is invariant under every rotation
    and mirror; a uniform field turns with the element. Fails if pixels and vectors are turned
    in different senses."""
    size = 9
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = (size - 1) / 2
    radial = torch.stack([cols - centre, centre - rows]).to(F64)
    radial = radial.expand(len(group.elements()), 2, size, size)
    action = ImageAction(group, fibre="vector")
    g = group.elements()
    moved = action(g, radial)
    inside = (cols - centre) ** 2 + (rows - centre) ** 2 <= (centre - 1) ** 2
    atol = 0.0 if action.exact else 0.05
    assert torch.allclose(moved[..., inside], radial[..., inside], rtol=0, atol=atol)
    uniform = torch.zeros(len(g), 2, size, size, dtype=F64)
    uniform[:, 0] = 1.0  # pointing right
    turned = action(g, uniform)[..., size // 2, size // 2]
    expected = group.standard_representation()(g).to(F64)[:, :, 0]
    assert torch.allclose(turned, expected, rtol=0, atol=1e-12)
