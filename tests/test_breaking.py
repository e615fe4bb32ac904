"""Stabilisers, the relaxed-equivariance checker and the symmetry-breaking objects
(Kaba & Ravanbakhsh 2023, arXiv:2312.09016)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from equirelax.actions import ImageAction, PermutationAction, PointAction, RepresentationAction
from equirelax.breaking import (
    FrameBreaker,
    NoiseInjection,
    OrderingBreaker,
    graph_automorphisms,
    is_relaxed_equivariant,
    keeps_stabiliser,
    stabiliser,
    stabiliser_mask,
)
from equirelax.groups import CyclicGroup, DihedralGroup, SymmetricGroup


def polygon(k: int, angle: float = 0.0, radius: float = 1.0) -> torch.Tensor:
    t = angle + 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
    return radius * torch.stack([torch.cos(t), torch.sin(t)], dim=-1)


def cycle(n: int) -> torch.Tensor:
    a = torch.zeros(n, n, dtype=torch.float64)
    i = torch.arange(n)
    a[i, (i + 1) % n] = a[(i + 1) % n, i] = 1.0
    return a


def path(n: int) -> torch.Tensor:
    a = torch.zeros(n, n, dtype=torch.float64)
    i = torch.arange(n - 1)
    a[i, i + 1] = a[i + 1, i] = 1.0
    return a


def cube() -> torch.Tensor:
    nodes = torch.arange(8)
    differ = (nodes[:, None] ^ nodes[None, :]).bitwise_and(7)
    return (differ.bitwise_and(differ - 1) == 0).double() * (differ > 0).double()


def graph_action(n: int) -> tuple[PermutationAction, PermutationAction]:
    group = SymmetricGroup(n)
    return PermutationAction(group, dims=(1, 2)), PermutationAction(group, dims=(1,))


def shuffled(a: torch.Tensor, seed: int) -> torch.Tensor:
    perm = torch.randperm(a.shape[0], generator=torch.Generator().manual_seed(seed))
    return a[perm][:, perm]


# --- stabilisers of known inputs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "group", "order"),
    [
        (polygon(4), DihedralGroup(4), 8),  # the square: all of D_4
        (polygon(6), DihedralGroup(6), 12),  # the hexagon: all of D_6
        (polygon(6), DihedralGroup(12), 12),  # ... and D_6 inside D_12
        (polygon(6, angle=0.3), CyclicGroup(6), 6),  # rotated: still every rotation
        (polygon(6, angle=0.3), DihedralGroup(6), 6),  # but no mirror of D_6 fixes it
        (polygon(3), DihedralGroup(4), 2),  # a triangle in D_4: identity and the x mirror
    ],
)
def test_stabiliser_orders_of_regular_polygons(points, group, order) -> None:
    shuffled_points = points[torch.randperm(points.shape[0])]
    g = stabiliser(shuffled_points[None], PointAction(group), as_set=True, atol=1e-9)
    assert g.shape[0] == order
    # as ordered tensors (not sets) only the identity fixes the list of vertices
    assert stabiliser(points[None], PointAction(group), atol=1e-9).shape[0] == 1


@pytest.mark.parametrize("n", [4, 6, 8, 10, 12])
def test_cycle_graphs_have_dihedral_automorphism_groups(n: int) -> None:
    automorphisms = graph_automorphisms(shuffled(cycle(n), n))
    assert automorphisms.shape == (2 * n, n)
    assert len({tuple(p) for p in automorphisms.tolist()}) == 2 * n


@pytest.mark.parametrize(
    ("adjacency", "order"),
    [
        (cube(), 48),
        (path(7), 2),
        (torch.ones(6, 6, dtype=torch.float64) - torch.eye(6, dtype=torch.float64), 720),
    ],
)
def test_known_automorphism_group_orders(adjacency, order) -> None:
    assert graph_automorphisms(shuffled(adjacency, 3)).shape[0] == order


def test_graph_automorphisms_agree_with_enumerated_stabilisers() -> None:
    generator = torch.Generator().manual_seed(0)
    action, _ = graph_action(6)
    for trial in range(8):
        upper = (torch.rand(6, 6, generator=generator) < 0.4).double().triu(1)
        adjacency = upper + upper.T
        colours = torch.randint(2, (6,), generator=generator) if trial % 2 else None
        searched = graph_automorphisms(adjacency, colours)
        enumerated = stabiliser(adjacency[None], action)
        if colours is not None:
            fixed = (colours[enumerated] == colours).all(dim=1)
            enumerated = enumerated[fixed]
        assert {tuple(p) for p in searched.tolist()} == {tuple(p) for p in enumerated.tolist()}
        # every automorphism found really fixes the graph
        moved = action(searched, adjacency[None].expand(searched.shape[0], -1, -1))
        assert torch.equal(moved, adjacency.expand_as(moved))


def test_image_stabilisers() -> None:
    generator = torch.Generator().manual_seed(1)
    quarter = torch.rand(1, 1, 4, 4, generator=generator, dtype=torch.float64)
    action = ImageAction(DihedralGroup(4))
    # a C_4-symmetric image: the sum of the four rotations of a random one
    rotations = CyclicGroup(4).elements()
    symmetric = sum(ImageAction(CyclicGroup(4))(rotations[k : k + 1], quarter) for k in range(4))
    g = stabiliser(symmetric, action)
    assert g.shape[0] == 4
    assert bool((g[:, 1] == 0).all())
    mask = stabiliser_mask(torch.cat([symmetric, quarter]), action)
    assert mask.sum(dim=1).tolist() == [4, 1]


# --- the checker ----------------------------------------------------------------------------------


def test_checker_accepts_an_equivariant_function_and_it_keeps_the_stabiliser() -> None:
    action_in, action_out = graph_action(6)
    graphs = torch.stack([cycle(6), path(6), shuffled(cycle(6), 1)])

    def degree_and_triangles(a: torch.Tensor) -> torch.Tensor:  # permutation-equivariant
        return a.sum(dim=2) + 0.1 * torch.diagonal(a @ a @ a, dim1=1, dim2=2)

    report = is_relaxed_equivariant(
        degree_and_triangles, graphs, SymmetricGroup(6), action_in, action_out
    )
    assert report.holds
    assert report.equivariant
    assert report.num_violations == 0
    assert report.stabiliser_orders.tolist() == [12, 2, 12]
    assert keeps_stabiliser(degree_and_triangles, graphs, action_in, action_out).all()


def test_checker_rejects_a_function_that_is_neither_and_names_the_element() -> None:
    action_in, action_out = graph_action(6)

    def first_node(a: torch.Tensor) -> torch.Tensor:  # marks node 0 whatever the graph
        return torch.nn.functional.one_hot(torch.zeros(a.shape[0], dtype=torch.long), 6).double()

    report = is_relaxed_equivariant(first_node, path(6)[None], SymmetricGroup(6), action_in,
                                    action_out)  # fmt: skip
    assert not report.holds
    assert not report.equivariant
    assert report.num_violations > 0
    assert report.max_distance == 1.0
    sample, g = report.violations[0]
    assert sample == 0
    # the reported g really violates the coset condition: node 0 of g.x is not g h (node 0)
    # for h in the path's stabiliser {id, reversal}
    assert int(torch.argsort(g)[0]) not in (0, 5)
    # on the cycle every node is equivalent, so the same function is relaxed-equivariant there
    on_cycle = is_relaxed_equivariant(first_node, cycle(6)[None], SymmetricGroup(6), action_in,
                                      action_out)  # fmt: skip
    assert on_cycle.holds
    assert not on_cycle.equivariant


@pytest.mark.parametrize("code", ["mark", "rank"])
@pytest.mark.parametrize("tie_break", ["first", "random"])
def test_ordering_breaker_is_relaxed_equivariant_and_breaks_the_symmetry(code, tie_break) -> None:
    action_in, action_out = graph_action(6)
    breaker = OrderingBreaker(1, 1, code=code, tie_break=tie_break)
    star = torch.zeros(6, 6, dtype=torch.float64)
    star[0, 1:] = star[1:, 0] = 1.0
    graphs = torch.stack([cycle(6), shuffled(path(6), 2), star, shuffled(cube()[:6, :6], 4)])

    def code_of(a: torch.Tensor) -> torch.Tensor:
        return breaker(torch.ones(a.shape[0], 6, 1, dtype=a.dtype), a.unsqueeze(-1))

    report = is_relaxed_equivariant(code_of, graphs, SymmetricGroup(6), action_in, action_out)
    assert report.holds, report.violations[:3]
    assert not report.equivariant
    # the equivariant limit fails on the symmetric inputs: the code is less symmetric
    assert not bool(keeps_stabiliser(code_of, graphs[:1], action_in, action_out)[0])
    marked = code_of(graphs)
    if code == "mark":
        assert marked.sum(dim=(1, 2)).tolist() == [1.0] * 4
    else:
        assert torch.equal(marked.sum(dim=1), torch.ones(4, 6, dtype=marked.dtype))


def test_ordering_breaker_respects_the_mask_and_shapes() -> None:
    breaker = OrderingBreaker(2, 1)
    points = torch.cat([polygon(4), torch.zeros(2, 2, dtype=torch.float64)])[None]
    mask = torch.tensor([[1.0, 1, 1, 1, 0, 0]], dtype=torch.float64)
    items = torch.cat([points.norm(dim=-1, keepdim=True), mask.unsqueeze(-1)], dim=-1)
    distances = torch.cdist(points, points).unsqueeze(-1)
    marked = breaker(items, distances, mask)
    assert marked.shape == (1, 6, 1)
    assert marked[0, :4].sum() == 1
    assert marked[0, 4:].sum() == 0
    with pytest.raises(ValueError, match="items: expected"):
        breaker(items[..., :1], distances)
    with pytest.raises(ValueError, match="pairwise: expected"):
        breaker(items, None)
    with pytest.raises(ValueError, match="tie_break: expected"):
        OrderingBreaker(1, tie_break="middle")


def test_random_tie_breaking_is_equivariant_in_distribution() -> None:
    """Over N draws, the marked node's frequencies on ``g x`` equal those on ``x`` moved by g,
    and are uniform over the tied orbit. Each frequency has standard deviation at most
    ``sqrt(p (1 - p) / N) <= 0.0068`` for N = 3000 and p = 1/6: the tolerance 0.04 is ~6 sigma."""
    draws = 3000
    breaker = OrderingBreaker(1, 1, code="mark", tie_break="random")
    action_in, action_out = graph_action(6)
    generator = torch.Generator().manual_seed(0)
    g = SymmetricGroup(6).sample(1, generator)

    def frequencies(adjacency: torch.Tensor) -> torch.Tensor:
        batch = adjacency.expand(draws, -1, -1)
        marks = breaker(torch.ones(draws, 6, 1, dtype=batch.dtype), batch.unsqueeze(-1),
                        generator=generator)  # fmt: skip
        return marks.mean(dim=0)  # (6, 1)

    for adjacency in (cycle(6), path(6)):
        on_x = frequencies(adjacency)
        on_gx = frequencies(action_in(g, adjacency[None])[0])
        assert torch.allclose(on_gx, action_out(g, on_x[None])[0], atol=0.04)
    # on the cycle every node is tied: uniform; on the path the two ends are
    assert torch.allclose(frequencies(cycle(6)), torch.full((6, 1), 1 / 6, dtype=torch.float64),
                          atol=0.04)  # fmt: skip
    ends = frequencies(path(6)).flatten()
    assert ends[[0, 5]].sum() == 1.0 or ends[1:5].sum() == 1.0


def test_frame_breaker_code_is_relaxed_equivariant_on_symmetric_images() -> None:
    group = DihedralGroup(4)
    action = ImageAction(group)
    generator = torch.Generator().manual_seed(2)
    base = torch.rand(3, 1, 4, 4, generator=generator, dtype=torch.float64)
    rot = ImageAction(CyclicGroup(4))
    c4_symmetric = sum(rot(torch.tensor([k]), base[:1]) for k in range(4))
    images = torch.cat([c4_symmetric, base[1:]])
    regular = RepresentationAction(group.regular_representation())
    for tie_break in ("first", "random"):
        breaker = FrameBreaker(action, tie_break=tie_break)
        report = is_relaxed_equivariant(breaker, images, group, action, regular)
        assert report.holds
        assert not report.equivariant
        assert report.stabiliser_orders.tolist() == [4, 1, 1]
        assert keeps_stabiliser(breaker, images, action, regular).tolist() == [False, True, True]
    # the asymmetric images have a unique frame: the code is exactly equivariant on them
    exact = is_relaxed_equivariant(FrameBreaker(action), images[1:], group, action, regular)
    assert exact.equivariant


def test_frame_breaker_on_point_sets_and_random_frames_cover_the_coset() -> None:
    group = CyclicGroup(4)
    breaker = FrameBreaker(PointAction(group), tie_break="random", as_set=True)
    square = polygon(4, angle=0.2)[None].expand(2000, -1, -1)
    frames = breaker.frame(square, torch.Generator().manual_seed(0))
    counts = torch.bincount(frames, minlength=4).double() / 2000
    assert torch.allclose(counts, torch.full((4,), 0.25, dtype=torch.float64), atol=0.04)
    report = is_relaxed_equivariant(breaker, polygon(4, angle=0.2)[None], group,
                                    PointAction(group),
                                    RepresentationAction(group.regular_representation()),
                                    as_set=True, atol=1e-6)  # fmt: skip
    assert report.holds
    assert report.stabiliser_orders.tolist() == [4]


def test_noise_injection_shapes_and_freshness() -> None:
    noise = NoiseInjection(3)
    reference = torch.zeros(5, 4, 2)
    a, b = noise(reference), noise(reference)
    assert a.shape == (5, 4, 3)
    assert not torch.equal(a, b)


def test_checker_errors_name_the_argument() -> None:
    action_in, action_out = graph_action(6)
    with pytest.raises(ValueError, match="group: expected the actions' group"):
        is_relaxed_equivariant(lambda a: a.sum(2), cycle(6)[None], SymmetricGroup(5),
                               action_in, action_out)  # fmt: skip
    big_in, big_out = graph_action(9)
    with pytest.raises(ValueError, match="too large to enumerate"):
        is_relaxed_equivariant(lambda a: a.sum(2), cycle(9)[None], SymmetricGroup(9).sample(4),
                               big_in, big_out)  # fmt: skip
    with pytest.raises(ValueError, match="stabilisers: expected one tensor"):
        is_relaxed_equivariant(lambda a: a.sum(2), cycle(9)[None], SymmetricGroup(9).sample(4),
                               big_in, big_out, stabilisers=[])  # fmt: skip
    with pytest.raises(ValueError, match="x: expected a batch of one"):
        stabiliser(torch.stack([cycle(6), cycle(6)]), action_in)


def test_large_graphs_use_searched_stabilisers_and_sampled_elements() -> None:
    n = 12
    big_in, big_out = graph_action(n)
    breaker = OrderingBreaker(1, 1)
    adjacency = shuffled(cycle(n), 5)[None]

    def code_of(a: torch.Tensor) -> torch.Tensor:
        return breaker(torch.ones(a.shape[0], n, 1, dtype=a.dtype), a.unsqueeze(-1))

    report = is_relaxed_equivariant(
        code_of, adjacency, SymmetricGroup(n).sample(64, torch.Generator().manual_seed(0)),
        big_in, big_out, stabilisers=[graph_automorphisms(adjacency[0])],
    )  # fmt: skip
    assert report.holds
    assert report.stabiliser_orders.tolist() == [24]


def test_readme_symmetry_breaking_example_runs() -> None:
    """The README's example, executed as written."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = [b.split("```")[0] for b in readme.split("```python\n")[1:]]
    (example,) = [b for b in blocks if "is_relaxed_equivariant" in b]
    exec(compile(example, "README.md", "exec"), {})
