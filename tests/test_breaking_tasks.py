"""The symmetry-breaking tasks of :mod:`equirelax.tasks.breaking`: the symmetric inputs, the
degenerate answers accepted by the losses and metrics, and the failure of equivariant models."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from equirelax.tasks.base import Task
from equirelax.tasks.breaking import (
    FAMILIES,
    bipartite_graph,
    bipartite_task,
    colouring_failure,
    colouring_loss,
    polygon_failure,
    polygon_loss,
    polygon_task,
    set_decoding_failure,
    set_decoding_loss,
    set_decoding_task,
)

SMALL = {"train_size": 64, "val_size": 32, "test_size": 32}
BUILDERS: dict[str, Callable[..., Task]] = {
    "polygon": polygon_task,
    "bipartite": bipartite_task,
    "set-decoding": set_decoding_task,
}
# (shapes of the input tensors, shape of the targets, dtype of the targets), after the batch
LAYOUT = {
    "polygon": ([(6, 2), (6,)], (6, 2), torch.float32),
    "bipartite": ([(8, 8)], (8,), torch.float32),
    "set-decoding": ([(3, 8)], (3,), torch.int64),
}
BREAKING = ("cycle", "cube", "ladder", "complete-bipartite", "path")  # all swap colours at n = 8


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _parts(inputs: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return inputs if isinstance(inputs, tuple) else (inputs,)


def _rotation(theta: float) -> Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[[c, -s], [s, c]]], dtype=torch.float64)


def _real_vertices(points: Tensor, mask: Tensor, k: int) -> Tensor:
    """The ``k`` real rows ``(N, k, 2)`` of samples that all have ``k`` real vertices."""
    rows = torch.argsort(mask, dim=1, descending=True, stable=True)[:, :k]
    return points.gather(1, rows.unsqueeze(-1).expand(-1, k, 2))


def _improper_edges(adjacency: Tensor, colours: Tensor) -> Tensor:
    """Per graph, the number of edges whose two ends have one colour."""
    same = colours.unsqueeze(2) == colours.unsqueeze(1)
    return (adjacency * same).sum((1, 2)) / 2


# --- all tasks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILDERS)
def test_splits_have_the_documented_shapes_and_dtypes(name: str) -> None:
    options = {"vertices": (3, 6)} if name == "polygon" else {}
    task = BUILDERS[name](**SMALL, **options)
    input_shapes, target_shape, target_dtype = LAYOUT[name]
    assert task.name == name
    assert task.metric_name == "failure"
    assert task.description
    for split, size in (("train", 64), ("val", 32), ("test", 32)):
        inputs, targets = getattr(task, split)
        parts = _parts(inputs)
        assert [tuple(x.shape) for x in parts] == [(size, *shape) for shape in input_shapes]
        assert all(x.dtype == torch.float32 for x in parts)
        assert targets.shape == (size, *target_shape)
        assert targets.dtype == target_dtype
    assert BUILDERS[name](train_size=4, val_size=2, test_size=0).test is None


@pytest.mark.parametrize("name", BUILDERS)
def test_splits_are_reproducible_and_depend_on_the_seed_and_split(name: str) -> None:
    first, again = BUILDERS[name](**SMALL, seed=3), BUILDERS[name](**SMALL, seed=3)
    other = BUILDERS[name](**SMALL, seed=4)
    for split in ("train", "val", "test"):
        (x1, y1), (x2, y2), (x3, _) = (getattr(t, split) for t in (first, again, other))
        assert all(torch.equal(a, b) for a, b in zip(_parts(x1), _parts(x2), strict=True))
        assert torch.equal(y1, y2)
        assert not torch.equal(_parts(x1)[0], _parts(x3)[0])
    # val and test have one size but their own streams
    assert not torch.equal(_parts(first.val[0])[0], _parts(first.test[0])[0])


@pytest.mark.parametrize(
    ("builder", "options", "error", "match"),
    [
        (polygon_task, {"train_size": 0}, ValueError, r"^train_size: expected a positive int"),
        (polygon_task, {"test_size": -1}, ValueError, r"^test_size: expected an int >= 0"),
        (polygon_task, {"seed": -1}, ValueError, r"^seed: expected an int >= 0, received -1"),
        (polygon_task, {"jitter": -0.1}, ValueError, r"^jitter: expected a finite number >= 0"),
        (polygon_task, {"vertices": 2}, ValueError, r"^vertices: expected an int >= 3, rec"),
        (polygon_task, {"vertices": (3, 2)}, ValueError, r"^vertices\[1\]: expected an int >= 3"),
        (
            polygon_task,
            {"vertices": ()},
            TypeError,
            r"^vertices: expected an int >= 3 or a non-empty",
        ),
        (polygon_task, {"vertices": 3.0}, TypeError, r"^vertices: expected .* received 3.0"),
        (polygon_task, {"progress": 1}, TypeError, r"^progress: expected a bool, received 1"),
        (bipartite_task, {"nodes": 1}, ValueError, r"^nodes: expected an int >= 2, received 1"),
        (bipartite_task, {"nodes": 6}, ValueError, r"^families: family 'cube' expected 8 nodes"),
        (
            bipartite_task,
            {"nodes": 7, "families": ("path", "cycle")},
            ValueError,
            r"^families: family 'cycle' expected an even number >= 4 of nodes, received nodes=7",
        ),
        (
            bipartite_task,
            {"families": ("cycle", "moon")},
            ValueError,
            r"^families\[1\]: expected one of \('cycle', .*received 'moon'",
        ),
        (
            bipartite_task,
            {"families": []},
            TypeError,
            r"^families: expected a family name or a non-empty",
        ),
        (set_decoding_task, {"slots": 7}, ValueError, r"^slots: expected at most 6 .*received 7"),
        (set_decoding_task, {"slots": 1}, ValueError, r"^slots: expected an int >= 2, received 1"),
        (
            set_decoding_task,
            {"slots": 4, "alphabet": 3},
            ValueError,
            r"^alphabet: expected an int >= 4, received 3",
        ),
        (set_decoding_task, {"val_size": 0}, ValueError, r"^val_size: expected a positive int"),
    ],
)
def test_builders_reject_bad_arguments_naming_them(builder, options, error, match) -> None:
    with pytest.raises(error, match=match):
        builder(**options)


@pytest.mark.parametrize(
    ("function", "outputs", "targets"),
    [
        (polygon_loss, torch.zeros(4, 3), torch.zeros(4, 5, 2)),
        (polygon_failure, torch.zeros(3, 2), torch.zeros(4, 5, 2)),
        (colouring_loss, torch.zeros(4, 7), torch.zeros(4, 8)),
        (colouring_failure, torch.zeros(4, 8, 1), torch.zeros(4, 8)),
        (set_decoding_loss, torch.zeros(4, 2, 8), torch.zeros(4, 3, dtype=torch.long)),
        (set_decoding_failure, torch.zeros(4, 3), torch.zeros(4, 3, dtype=torch.long)),
    ],
)
def test_losses_and_metrics_reject_bad_output_shapes(function, outputs, targets) -> None:
    with pytest.raises(ValueError, match=r"^outputs: expected .*received .*shape"):
        function(outputs, targets)


# --- polygon ------------------------------------------------------------------------------------


def test_polygon_inputs_are_regular_polygons_centred_at_the_origin() -> None:
    task = polygon_task(train_size=400, val_size=2, test_size=0)
    (points, mask), targets = task.train
    points, targets = points.double(), targets.double()
    counts = mask.sum(1)
    assert set(counts.tolist()) == {3.0, 4.0, 5.0, 6.0}
    for k in (3, 4, 5, 6):
        chosen = counts == k
        real = _real_vertices(points[chosen], mask[chosen], k)
        radius = torch.linalg.vector_norm(real, dim=-1)
        torch.testing.assert_close(radius, radius[:, :1].expand_as(radius), rtol=1e-6, atol=0)
        assert bool(((radius >= 0.5) & (radius <= 1.5)).all())
        torch.testing.assert_close(real.sum(1), torch.zeros_like(real[:, 0]), atol=1e-5, rtol=0)
        angles = torch.atan2(real[..., 1], real[..., 0]).sort(dim=1).values
        gaps = torch.diff(torch.cat([angles, angles[:, :1] + 2 * math.pi], dim=1), dim=1)
        torch.testing.assert_close(gaps, torch.full_like(gaps, 2 * math.pi / k), atol=1e-5, rtol=0)
        # targets: the unit vectors towards the vertices, in the rows of the vertices
        directions = _real_vertices(targets[chosen], mask[chosen], k)
        torch.testing.assert_close(directions, real / radius.unsqueeze(-1), atol=1e-6, rtol=0)


def test_polygon_padding_rows_are_zeros_and_never_an_answer() -> None:
    task = polygon_task(train_size=200, val_size=2, test_size=0, vertices=(3, 6))
    (points, mask), targets = task.train
    padded = mask == 0
    assert set(mask.sum(1).tolist()) == {3.0, 6.0}
    assert bool((points[padded] == 0).all())
    assert bool((targets[padded] == 0).all())
    # the rows are shuffled: padding is not always at the end
    assert bool(padded[:, 0].any())
    # the zero output is at distance 0 from every padding row, but 1 from every answer
    zero = torch.zeros(200, 2)
    assert float(polygon_loss(zero, targets)) == pytest.approx(1.0, abs=1e-6)
    assert float(polygon_failure(zero, targets)) == 1.0
    hand = torch.tensor([[[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    assert float(polygon_loss(torch.zeros(1, 2), hand)) == 1.0


def test_polygon_loss_is_the_squared_distance_to_the_nearest_vertex_direction() -> None:
    task = polygon_task(train_size=50, val_size=2, test_size=0, vertices=(3, 5))
    (_, mask), targets = task.train
    targets = targets.double()
    outputs = torch.randn(50, 2, generator=_generator(), dtype=torch.float64)
    expected = torch.tensor(
        [
            min(float(((outputs[b] - targets[b, i]) ** 2).sum()) for i in range(5) if mask[b, i])
            for b in range(50)
        ],
        dtype=torch.float64,
    ).mean()
    outputs.requires_grad_(True)
    loss = polygon_loss(outputs, targets)
    torch.testing.assert_close(loss, expected, atol=1e-12, rtol=0)
    loss.backward()  # d/dy of ||y - t_nearest||^2 / B; the padding rows get no gradient
    squared = ((outputs.detach().unsqueeze(1) - targets) ** 2).sum(-1).masked_fill(mask == 0, 9.0)
    nearest = targets[torch.arange(50), squared.argmin(1)]
    torch.testing.assert_close(outputs.grad, 2 * (outputs.detach() - nearest) / 50)
    # each real target direction is an exact answer; the zero vector is at distance 1 from all
    first_real = targets.gather(1, mask.argmax(1).reshape(-1, 1, 1).expand(-1, 1, 2))[:, 0]
    assert float(polygon_loss(first_real, targets)) == 0.0
    assert float(polygon_failure(first_real, targets)) == 0.0
    zero = torch.zeros(50, 2, dtype=torch.float64)
    assert float(polygon_loss(zero, targets)) == pytest.approx(1.0, abs=1e-6)  # float32 units
    assert float(polygon_failure(zero, targets)) == 1.0
    # failure threshold 0.3: just inside and just outside
    assert float(polygon_failure(0.71 * first_real, targets)) == 0.0
    assert float(polygon_failure(0.69 * first_real, targets)) == 1.0


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_polygon_turn_by_two_pi_over_k_maps_each_vertex_set_to_itself(k: int) -> None:
    task = polygon_task(train_size=20, val_size=2, test_size=0, vertices=k)
    (points, mask), targets = task.train
    assert bool((mask == 1).all())
    inputs = (points.double(), mask.double())
    turned, turned_mask = task.action_in(_rotation(2 * math.pi / k), inputs)
    assert torch.equal(turned_mask, inputs[1])
    distance = torch.cdist(turned, inputs[0])  # (N, k, k)
    assert float(distance.amin(2).max()) < 1e-5
    matched = distance.argmin(2).sort(1).values
    assert torch.equal(matched, torch.arange(k).expand(20, k))  # a bijection of the vertices
    # a half step is no symmetry; the answers turn with the vertices (action_out)
    half, _ = task.action_in(_rotation(math.pi / k), inputs)
    assert float(torch.cdist(half, inputs[0]).amin(2).min()) > 0.2  # 2 r sin(pi / 2k) >= 0.25
    moved = task.action_out(_rotation(2 * math.pi / k), targets[:, 0].double())
    assert float(polygon_loss(moved, targets.double())) < 1e-10


def test_polygon_jitter_only_moves_the_vertices() -> None:
    clean = polygon_task(train_size=100, val_size=2, test_size=0)
    noisy = polygon_task(train_size=100, val_size=2, test_size=0, jitter=0.05)
    (p0, m0), _ = clean.train
    (p1, m1), t1 = noisy.train
    assert torch.equal(m0, m1)
    shift = torch.linalg.vector_norm(p1 - p0, dim=-1)[m0 == 1]
    assert 0.0 < float(shift.max()) < 0.5
    real = m1 == 1
    torch.testing.assert_close(t1[real], F.normalize(p1[real], dim=-1))


def test_an_o2_equivariant_model_fails_every_polygon() -> None:
    task = polygon_task(**SMALL)
    (points, mask), targets = task.test

    def centroid(points: Tensor, mask: Tensor) -> Tensor:  # O(2)-equivariant
        return (points * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)

    assert float(polygon_failure(centroid(points, mask), targets)) == 1.0
    g = task.action_in.group.sample(32, _generator(), dtype=torch.float64)
    moved = task.action_in(g, (points.double(), mask.double()))
    expected = task.action_out(g, centroid(points.double(), mask.double()))
    torch.testing.assert_close(centroid(*moved), expected, atol=1e-12, rtol=0)


# --- bipartite ----------------------------------------------------------------------------------


@pytest.mark.parametrize("nodes", [6, 8, 10])
def test_canonical_graphs_have_the_known_edges_and_are_connected_bipartite(nodes: int) -> None:
    edges = {
        "cycle": nodes,
        "cube": 12,
        "ladder": 3 * nodes // 2 - 2,
        "complete-bipartite": nodes**2 // 4,
        "path": nodes - 1,
        "star": nodes - 1,
        "tree": nodes - 1,
    }
    for family in FAMILIES:
        if family == "cube" and nodes != 8:
            continue
        adjacency = bipartite_graph(family, nodes, _generator(nodes)).double()
        assert adjacency.shape == (nodes, nodes)
        assert torch.equal(adjacency, adjacency.T)
        assert set(adjacency.unique().tolist()) <= {0.0, 1.0}
        assert float(adjacency.diagonal().abs().sum()) == 0.0
        assert float(adjacency.sum()) / 2 == edges[family], family
        reach = torch.linalg.matrix_power(torch.eye(nodes) + adjacency, nodes - 1)
        assert bool((reach > 0).all()), f"{family} is not connected"
        for length in range(1, nodes + 1, 2):  # bipartite: no closed walk of odd length
            walks = torch.linalg.matrix_power(adjacency, length).trace()
            assert float(walks) == 0.0, family


def test_cube_joins_labels_that_differ_in_one_bit() -> None:
    cube = bipartite_graph("cube", 8)
    for i, j in itertools.product(range(8), repeat=2):
        assert float(cube[i, j]) == float((i ^ j).bit_count() == 1)


def test_random_trees_are_uniform_over_labelled_trees() -> None:
    # Cayley: 4^2 = 16 labelled trees on 4 nodes, drawn with probability 1/16 each
    generator = _generator(5)
    counts: dict[bytes, int] = {}
    for _ in range(1600):
        tree = bipartite_graph("tree", 4, generator).to(torch.uint8).numpy().tobytes()
        counts[tree] = counts.get(tree, 0) + 1
    assert len(counts) == 16
    assert all(55 <= count <= 150 for count in counts.values())


def test_bipartite_targets_are_proper_colourings_of_the_inputs() -> None:
    task = bipartite_task(train_size=300, val_size=2, test_size=0)
    adjacency, colours = task.train
    assert set(colours.unique().tolist()) == {0.0, 1.0}
    assert bool((colours[:, 0] == 0).all())
    assert float(_improper_edges(adjacency, colours).max()) == 0.0
    # every family occurs and the graphs are relabelled (not all canonical)
    edges = set((adjacency.sum((1, 2)) / 2).tolist())
    assert edges == {7.0, 8.0, 10.0, 12.0, 16.0}
    canonical = torch.stack([bipartite_graph(f, 8) for f in BREAKING])
    assert int((adjacency.unsqueeze(1) == canonical).all((2, 3)).any(1).sum()) < 15


def test_colouring_loss_and_metric_accept_both_colourings_only() -> None:
    task = bipartite_task(train_size=100, val_size=2, test_size=0)
    _, colours = task.train
    colours = colours.double()
    for logits in (20 * (2 * colours - 1), 20 * (1 - 2 * colours)):
        assert float(colouring_loss(logits, colours)) < 1e-8
        assert float(colouring_failure(logits, colours)) == 0.0
    assert float(colouring_failure(torch.ones_like(colours), colours)) == 1.0
    assert float(colouring_failure(-torch.ones_like(colours), colours)) == 1.0
    # one wrong node makes a colouring improper
    one_off = 20 * (2 * colours - 1)
    one_off[:, 3] *= -1
    assert float(colouring_failure(one_off, colours)) == 1.0
    logits = torch.randn(100, 8, generator=_generator(), dtype=torch.float64)
    bce = [
        F.binary_cross_entropy_with_logits(logits, c, reduction="none").mean(1)
        for c in (colours, 1 - colours)
    ]
    expected = torch.minimum(*bce).mean()
    torch.testing.assert_close(colouring_loss(logits, colours), expected, atol=1e-12, rtol=0)


def test_relabelling_a_sample_gives_a_valid_sample_and_the_same_loss() -> None:
    task = bipartite_task(train_size=100, val_size=2, test_size=0)
    adjacency, colours = task.train
    g = task.action_in.group.sample(100, _generator())
    moved, moved_colours = task.action_in(g, adjacency), task.action_out(g, colours)
    assert torch.equal(moved, moved.transpose(1, 2))
    assert torch.equal(moved.sum((1, 2)), adjacency.sum((1, 2)))
    assert float(_improper_edges(moved, moved_colours).max()) == 0.0
    assert not torch.equal(moved, adjacency)
    logits = torch.randn(100, 8, generator=_generator(1), dtype=torch.float64)
    torch.testing.assert_close(
        colouring_loss(task.action_out(g, logits), moved_colours.double()),
        colouring_loss(logits, colours.double()),
        atol=1e-12,
        rtol=0,
    )


@pytest.mark.parametrize("nodes", [7, 8])
def test_breaking_families_are_those_with_a_colour_swapping_automorphism(nodes: int) -> None:
    families = ("path", "star") if nodes == 7 else tuple(f for f in FAMILIES if f != "tree")
    task = bipartite_task(train_size=4, val_size=2, test_size=0, nodes=nodes, families=families)
    elements = task.action_in.group.elements()  # all of S_n
    swapping = []
    for family in families:
        adjacency = bipartite_graph(family, nodes)
        colours = _odd_distance_from_node_0(adjacency)
        moved = task.action_in(elements, adjacency.expand(len(elements), nodes, nodes))
        automorphism = (moved == adjacency).all((1, 2))
        swapped = task.action_out(elements, colours.expand(len(elements), nodes)) == 1 - colours
        if bool((automorphism & swapped.all(1)).any()):
            swapping.append(family)
    assert tuple(swapping) == task.extra["breaking_families"]
    assert swapping == ([f for f in families if f != "star"] if nodes == 8 else [])


def _odd_distance_from_node_0(adjacency: Tensor) -> Tensor:
    """1 for the nodes that a walk of odd length from node 0 reaches (in a connected bipartite
    graph: the nodes at odd distance), else 0."""
    nodes = adjacency.shape[0]
    odd = torch.zeros(nodes, dtype=torch.bool)
    walk = torch.eye(nodes)[0]
    for _ in range(1, nodes, 2):
        walk = walk @ adjacency
        odd |= walk > 0
        walk = walk @ adjacency
    return odd.float()


def test_an_equivariant_model_fails_graphs_with_a_colour_swapping_automorphism() -> None:
    task = bipartite_task(train_size=200, val_size=2, test_size=0, families=BREAKING)
    adjacency, colours = task.train
    ones = torch.ones(200, 8, 1)

    def degrees(adjacency: Tensor) -> Tensor:  # S_n-equivariant
        first = adjacency @ ones
        return (adjacency @ first - 2.5 * first).squeeze(-1)

    assert float(colouring_failure(degrees(adjacency), colours)) == 1.0


def test_bipartite_graph_rejects_bad_arguments_naming_them() -> None:
    with pytest.raises(ValueError, match=r"^family: expected one of \('cycle'.*received 'moon'"):
        bipartite_graph("moon", 8)
    with pytest.raises(ValueError, match=r"^nodes: expected 8 nodes \(the 3-cube\) for family"):
        bipartite_graph("cube", 6)
    with pytest.raises(ValueError, match=r"^nodes: expected an even number of nodes for family"):
        bipartite_graph("ladder", 5)
    with pytest.raises(ValueError, match=r"^nodes: expected an int >= 2, received 1"):
        bipartite_graph("path", 1)
    odd_path = bipartite_task(train_size=4, val_size=2, test_size=0, nodes=5, families="path")
    assert odd_path.extra["families"] == ("path",)
    assert odd_path.extra["breaking_families"] == ()


# --- set decoding -------------------------------------------------------------------------------


def test_set_decoding_targets_are_the_sorted_distinct_symbols_of_the_code() -> None:
    task = set_decoding_task(train_size=200, val_size=2, test_size=0, slots=4, alphabet=9)
    inputs, targets = task.train
    assert bool((torch.diff(targets, dim=1) > 0).all())
    assert int(targets.min()) >= 0
    assert int(targets.max()) < 9
    code = F.one_hot(targets, 9).sum(1).float()
    assert torch.equal(inputs, code.unsqueeze(1).expand(200, 4, 9))
    assert len({tuple(t) for t in targets.tolist()}) > 50  # many different sets


def test_set_decoding_loss_takes_the_best_slot_order() -> None:
    task = set_decoding_task(train_size=40, val_size=2, test_size=0)
    _, targets = task.train
    logits = torch.randn(40, 3, 8, generator=_generator(), dtype=torch.float64)
    expected = torch.tensor(
        [
            min(
                float(F.cross_entropy(logits[b], targets[b, list(order)]))
                for order in itertools.permutations(range(3))
            )
            for b in range(40)
        ],
        dtype=torch.float64,
    ).mean()
    torch.testing.assert_close(set_decoding_loss(logits, targets), expected, atol=1e-12, rtol=0)
    for order in itertools.permutations(range(3)):
        torch.testing.assert_close(
            set_decoding_loss(logits[:, list(order)], targets), expected, atol=1e-12, rtol=0
        )
        confident = 30 * F.one_hot(targets[:, list(order)], 8).double()
        assert float(set_decoding_loss(confident, targets)) < 1e-10
        assert float(set_decoding_failure(confident, targets)) == 0.0


def test_set_decoding_failure_counts_wrong_multisets() -> None:
    task = set_decoding_task(train_size=40, val_size=2, test_size=0)
    _, targets = task.train
    repeated = targets.clone()
    repeated[:, 2] = repeated[:, 0]  # one slot repeats another's symbol
    assert float(set_decoding_failure(F.one_hot(repeated, 8).float(), targets)) == 1.0
    assert float(set_decoding_loss(20 * F.one_hot(repeated, 8).float(), targets)) > 1.0


def test_an_equivariant_model_fails_every_set() -> None:
    task = set_decoding_task(**SMALL)
    inputs, targets = task.test
    weight = torch.randn(8, 8, generator=_generator())
    logits = inputs @ weight  # slot-wise: S_slots-equivariant, one prediction in every slot
    assert float(set_decoding_failure(logits, targets)) == 1.0
    # equal slot distributions p: mean_s -log p(t_s) >= -log(mean_s p(t_s)) >= log(slots)
    assert float(set_decoding_loss(logits, targets)) >= math.log(3) - 1e-6
