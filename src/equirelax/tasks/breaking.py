"""Symmetry-breaking tasks: symmetric inputs whose every valid answer is less symmetric.

The tasks of Kaba & Ravanbakhsh (2023, "Symmetry breaking and equivariant neural networks",
arXiv:2312.09016), at CPU size. An equivariant model ``f`` maps an input ``x`` with stabiliser
``G_x = {g : g x = x}`` to an output fixed by ``G_x`` (``f(x) = f(g x) = g f(x)``), so it cannot
produce an answer that ``G_x`` moves. Each task has several equally valid (*degenerate*)
answers, permuted by ``G_x``; the loss takes the minimum over them and the metric is the
failure rate (lower is better).

- **polygon** (O(2)): a regular ``k``-gon centred at the origin; answer: the unit vector towards
  any one vertex. ``G_x = D_k`` fixes only the zero vector, at distance 1 from every answer.
- **bipartite** (``S_n``): a connected bipartite graph; answer: a proper 2-colouring of its nodes
  (there are exactly two, ``c`` and ``1 - c``). An automorphism that swaps the colour classes
  (cycles, the cube, ladders, ``K_{n/2,n/2}``, paths with ``n`` even) maps each answer to the
  other, so an equivariant colouring is improper. Stars and most random trees have no such
  automorphism (``extra["breaking_families"]`` lists the families that always have one): they
  are controls that an equivariant model can solve.
- **set-decoding** (``S_slots``): the multi-hot code of a set of ``slots`` distinct symbols,
  repeated in every slot; answer: the symbols, one per slot, in any order. Every slot
  permutation fixes the input, so an equivariant model predicts one symbol in every slot.

Every split is drawn from its own ``torch.Generator`` seeded from ``(seed, split index)``
(vectorised draws: ``train_size=100`` is not a prefix of ``train_size=1000``). Inputs and
targets are float32, except the integer targets of set-decoding.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from equirelax._checks import (
    check_bool,
    check_choice,
    check_int,
    check_non_negative,
    check_split_sizes,
    check_tensor,
)
from equirelax.actions import (
    Action,
    DirectSumAction,
    PermutationAction,
    PointAction,
    TrivialAction,
    VectorAction,
)
from equirelax.breaking.stabilisers import graph_automorphisms
from equirelax.groups import O2, DihedralGroup, SymmetricGroup
from equirelax.tasks.base import Split, Task

__all__ = [
    "FAMILIES",
    "bipartite_graph",
    "bipartite_task",
    "colouring_failure",
    "colouring_loss",
    "polygon_failure",
    "polygon_loss",
    "polygon_task",
    "set_decoding_failure",
    "set_decoding_loss",
    "set_decoding_task",
]

REFERENCE = (
    'Kaba & Ravanbakhsh 2023, "Symmetry breaking and equivariant neural networks", arXiv:2312.09016'
)
FAMILIES = ("cycle", "cube", "ladder", "complete-bipartite", "path", "star", "tree")
"""Graph families of :func:`bipartite_graph`."""
FAILURE_DISTANCE = 0.3
"""An output of the polygon task fails if it is this far or farther from every answer."""
MAX_SLOTS = 6
"""The set-decoding loss enumerates all ``slots!`` orderings: at most ``6! = 720``."""
_SPLITS = ("train", "val", "test")
_REAL_ROW = 0.5  # polygon targets: unit vectors (real vertices) or zero rows (padding)
_Draw = Callable[[int, torch.Generator], Split]


# --- polygon ------------------------------------------------------------------------------------


def polygon_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """``mean_b min_i ||y_b - t_bi||^2`` over the real vertices ``i`` of each sample.

    ``outputs`` ``(B, 2)``; ``targets`` ``(B, m, 2)``: unit vectors towards the real vertices and
    zero rows for padding (rows of norm ``<= 0.5`` are ignored).

    Examples
    --------
    >>> targets = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    >>> polygon_loss(torch.tensor([[0.0, 1.0]]), targets), polygon_loss(torch.zeros(1, 2), targets)
    (tensor(0.), tensor(1.))
    """
    return _nearest_squared_distance(outputs, targets).mean()


@torch.no_grad()
def polygon_failure(outputs: Tensor, targets: Tensor) -> Tensor:
    """The fraction of samples whose output is at distance ``>= 0.3`` from every target row
    (the unit vectors towards the real vertices); shapes as in :func:`polygon_loss`.

    Examples
    --------
    >>> targets = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]]).expand(2, 2, 2)
    >>> polygon_failure(torch.tensor([[-0.9, 0.1], [0.0, 0.0]]), targets)
    tensor(0.5000)
    """
    nearest = _nearest_squared_distance(outputs, targets)
    return (nearest >= FAILURE_DISTANCE**2).to(outputs.dtype).mean()


def polygon_task(
    train_size: int = 1000,
    val_size: int = 500,
    test_size: int = 1000,
    *,
    vertices: int | Sequence[int] = (3, 4, 5, 6),
    jitter: float = 0.0,
    seed: int = 0,
    progress: bool = False,
) -> Task:
    """Point at one vertex of a regular polygon: O(2), degenerate answers.

    Each sample draws ``k`` uniformly from ``vertices``, a radius uniform in ``[0.5, 1.5]`` and
    an angle uniform in ``[0, 2 pi)``: the ``k`` vertices of the regular ``k``-gon of that
    radius centred at the origin, turned by that angle, each plus ``N(0, jitter^2 Id)``. They
    are padded with zero rows to ``m = max(vertices)`` and all ``m`` rows shuffled (with the
    mask), so their order carries no information. The target rows are the unit vectors towards
    the (jittered) vertices, zero for padding. Loss (:func:`polygon_loss`)

        L = mean_b min_{i real} ||y_b - t_bi||^2;

    metric (:func:`polygon_failure`): the fraction of outputs at distance ``>= 0.3`` from every
    answer. With ``jitter = 0`` the input's stabiliser contains the rotation by ``2 pi / k``,
    so an O(2)-equivariant model outputs 0: loss 1, failure rate 1 (Kaba & Ravanbakhsh 2023,
    arXiv:2312.09016).

    Parameters
    ----------
    train_size, val_size, test_size:
        Samples per split (``test_size=0``: no test split).
    vertices:
        A polygon size ``>= 3`` or a non-empty sequence of them (sampled uniformly by entry).
    jitter:
        Standard deviation of the Gaussian noise on every vertex (``0``: exactly regular;
        ``> 0``: nearly symmetric inputs).
    seed:
        Non-negative base seed; split ``s`` is drawn from ``(seed, index of s)``.
    progress:
        Unused (generation is instant); accepted because the command line passes it to every
        task builder.

    Returns
    -------
    Task
        ``inputs = (points (B, m, 2), mask (B, m))`` (mask 1 for real vertices) with action
        ``PointAction + TrivialAction`` of O(2); ``targets (B, m, 2)``; outputs ``(B, 2)``
        with ``VectorAction``.

    Examples
    --------
    >>> task = polygon_task(8, 4, 0, vertices=(3, 5))
    >>> [x.shape for x in task.train[0]], task.train[1].shape
    ([torch.Size([8, 5, 2]), torch.Size([8, 5])], torch.Size([8, 5, 2]))
    """
    sizes = check_split_sizes(train_size, val_size, test_size)
    polygons = _check_vertices(vertices)
    jitter = check_non_negative("jitter", jitter)
    seed = check_int("seed", seed, minimum=0)
    check_bool("progress", progress)
    group = O2()
    shapes = "/".join(str(k) for k in dict.fromkeys(polygons))
    return _task(
        "polygon",
        _splits(sizes, seed, functools.partial(_polygon_split, polygons=polygons, jitter=jitter)),
        DirectSumAction(PointAction(group), TrivialAction(group)),
        VectorAction(group),
        polygon_loss,
        polygon_failure,
        f"Output the unit vector towards any one vertex of a regular {shapes}-gon centred at "
        f"the origin (vertex noise {jitter:g}); symmetric inputs, degenerate answers, O(2).",
        {
            "symmetry": "O(2)",
            "vertices": polygons,
            "jitter": jitter,
            "failure_distance": FAILURE_DISTANCE,
            "seed": seed,
            "sizes": sizes,
            "relaxed_check": _polygon_check(polygons),
        },
    )


def _polygon_check(polygons: tuple[int, ...]) -> dict[str, Any]:
    """The finite actions of the symmetry checks (:func:`equirelax.breaking.compare.
    symmetry_checks`): ``D_L`` (``L`` the least common multiple of the polygon sizes), on
    inputs first turned so that their first real point lies on the positive x-axis; then
    ``D_L`` contains the whole stabiliser ``D_k`` of every regular ``k``-gon. Points are
    compared as sets."""
    group = DihedralGroup(math.lcm(*polygons))
    return {
        "action_in": DirectSumAction(PointAction(group), TrivialAction(group)),
        "action_out": VectorAction(group),
        "prepare": _align_first_vertex,
        "as_set": True,
        # Answers are unit vectors. Float32 vertices are symmetric only to ~1e-7, and training
        # a strict model amplifies that: outputs up to 7e-3 on 5-gons were measured.
        "atol": 1e-2,
    }


def _align_first_vertex(inputs: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Turn each point set about the origin so that its first real point lies on the positive
    x-axis (a rotation: the task's inputs are rotated uniformly anyway)."""
    points, mask = inputs
    first = torch.gather(points, 1, mask.argmax(dim=1)[:, None, None].expand(-1, 1, 2))[:, 0]
    angle = torch.atan2(first[:, 1], first[:, 0])
    cos, sin = torch.cos(-angle)[:, None], torch.sin(-angle)[:, None]
    turned = torch.stack(
        [cos * points[..., 0] - sin * points[..., 1], sin * points[..., 0] + cos * points[..., 1]],
        dim=-1,
    )
    return turned, mask


def _polygon_split(
    count: int, generator: torch.Generator, polygons: tuple[int, ...], jitter: float
) -> Split:
    """``count`` shuffled, zero-padded regular polygons and their vertex directions."""
    m = max(polygons)
    k = torch.tensor(polygons)[torch.randint(len(polygons), (count,), generator=generator)]
    radius = 0.5 + torch.rand(count, 1, 1, generator=generator, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(count, 1, generator=generator, dtype=torch.float64)
    noise = torch.randn(count, m, 2, generator=generator, dtype=torch.float64)
    # row j holds vertex vertex_index[j], a random permutation of 0..m-1: real iff < k
    vertex_index = torch.argsort(torch.rand(count, m, generator=generator), dim=1)
    mask = vertex_index < k[:, None]
    angle = phase + 2 * math.pi * vertex_index.double() / k[:, None]
    vertex = radius * torch.stack([torch.cos(angle), torch.sin(angle)], -1) + jitter * noise
    points = torch.where(mask.unsqueeze(-1), vertex, 0.0)
    targets = torch.where(mask.unsqueeze(-1), F.normalize(vertex, dim=-1), 0.0)
    return (points.float(), mask.float()), targets.float()


def _nearest_squared_distance(outputs: Tensor, targets: Tensor) -> Tensor:
    """``min_{i real} ||y_b - t_bi||^2`` per sample ``(B,)``, shapes checked."""
    outputs, targets = check_tensor("outputs", outputs), check_tensor("targets", targets)
    if targets.ndim != 3 or targets.shape[-1] != 2:
        raise ValueError(f"targets: expected shape (B, m, 2), received {tuple(targets.shape)}")
    if outputs.shape != (targets.shape[0], 2) or not outputs.is_floating_point():
        raise ValueError(
            f"outputs: expected floating-point vectors of shape ({targets.shape[0]}, 2) for "
            f"targets of shape {tuple(targets.shape)}, received dtype {outputs.dtype} and "
            f"shape {tuple(outputs.shape)}"
        )
    squared = ((outputs.unsqueeze(1) - targets) ** 2).sum(-1)
    real = torch.linalg.vector_norm(targets, dim=-1) > _REAL_ROW
    return squared.masked_fill(~real, math.inf).amin(dim=1)


# --- bipartite graphs ---------------------------------------------------------------------------


def colouring_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """``mean_b min(BCE(z_b, c_b), BCE(z_b, 1 - c_b))``, each BCE the mean over the nodes.

    ``outputs``: logits ``(B, n)``; ``targets``: a proper 2-colouring ``c`` ``(B, n)`` of 0/1
    (the other one is ``1 - c``).

    Examples
    --------
    >>> c = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    >>> bool(colouring_loss(20 * (1 - 2 * c), c) < 1e-8)
    True
    """
    outputs, targets = _check_colouring(outputs, targets)
    keep = F.binary_cross_entropy_with_logits(outputs, targets, reduction="none").mean(1)
    swap = F.binary_cross_entropy_with_logits(outputs, 1 - targets, reduction="none").mean(1)
    return torch.minimum(keep, swap).mean()


@torch.no_grad()
def colouring_failure(outputs: Tensor, targets: Tensor) -> Tensor:
    """The fraction of graphs whose colouring ``outputs > 0`` is not proper.

    A connected bipartite graph has exactly two proper 2-colourings, ``c`` and ``1 - c``
    (a node's colour is the parity of its distance to any fixed node), so the prediction is
    proper iff it equals the target ``c`` or ``1 - c``: no adjacency needed.

    Examples
    --------
    >>> c = torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    >>> colouring_failure(torch.tensor([[1.0, -1, 1, -1], [1.0, 1, 1, 1]]), c)
    tensor(0.5000)
    """
    outputs, targets = _check_colouring(outputs, targets)
    predicted = (outputs > 0).to(targets.dtype)
    proper = (predicted == targets).all(1) | (predicted == 1 - targets).all(1)
    return (~proper).to(outputs.dtype).mean()


def bipartite_graph(family: str, nodes: int, generator: torch.Generator | None = None) -> Tensor:
    """One connected bipartite graph of ``family`` on ``nodes`` nodes, canonically labelled.

    ``"cycle"`` ``C_n`` (``n`` even, ``>= 4``), ``"cube"`` the 3-cube (``n = 8``, nodes
    adjacent iff their binary labels differ in one bit), ``"ladder"`` ``P_{n/2} x K_2``
    (``n`` even; node ``i < n/2`` on one rail, ``i + n/2`` beside it on the other),
    ``"complete-bipartite"`` ``K_{n/2,n/2}`` (``n`` even; sides ``i < n/2`` and ``i >= n/2``),
    ``"path"`` ``P_n``, ``"star"`` ``K_{1,n-1}`` (centre 0), ``"tree"`` a uniformly random
    labelled tree (a uniformly random Prüfer sequence, drawn with ``generator``).

    Returns
    -------
    Tensor
        The adjacency matrix ``(n, n)``, float32, symmetric, zero diagonal.

    Examples
    --------
    >>> bipartite_graph("path", 3)
    tensor([[0., 1., 0.],
            [1., 0., 1.],
            [0., 1., 0.]])
    """
    check_choice("family", family, FAMILIES)
    nodes = check_int("nodes", nodes, minimum=2)
    need = _family_requirement(family, nodes)
    if need is not None:
        raise ValueError(f"nodes: expected {need} for family {family!r}, received {nodes}")
    return _graphs(family, nodes, 1, generator)[0]


def bipartite_task(
    train_size: int = 1000,
    val_size: int = 500,
    test_size: int = 1000,
    *,
    nodes: int = 8,
    families: str | Sequence[str] = FAMILIES,
    seed: int = 0,
    progress: bool = False,
) -> Task:
    """2-colour connected bipartite graphs with automorphisms: ``S_n``, degenerate answers.

    Each sample draws a family uniformly from ``families``, builds its graph on ``nodes`` nodes
    (:func:`bipartite_graph`) and relabels the nodes by a uniformly random permutation. The
    target is the proper 2-colouring ``c`` that gives node 0 colour 0 (the other one is
    ``1 - c``). Loss (:func:`colouring_loss`)

        L = mean_b min(BCE(z_b, c_b), BCE(z_b, 1 - c_b));

    metric (:func:`colouring_failure`): the fraction of improper colourings ``z > 0``. An
    automorphism that swaps the colour classes fixes the graph and maps ``c`` to ``1 - c``, so an
    ``S_n``-equivariant model cannot output a proper colouring of such a graph (Kaba &
    Ravanbakhsh 2023, arXiv:2312.09016); every graph of the families in
    ``extra["breaking_families"]`` has one, stars with ``n >= 3`` and paths with ``n`` odd
    have none, random trees mostly none.

    Parameters
    ----------
    train_size, val_size, test_size:
        Graphs per split (``test_size=0``: no test split).
    nodes:
        ``n >= 2``, the same for every graph; each family must allow it (e.g. ``"cube"``
        needs 8).
    families:
        A family of :data:`FAMILIES` or a non-empty sequence of them (sampled uniformly by
        entry).
    seed:
        Non-negative base seed; split ``s`` is drawn from ``(seed, index of s)``.
    progress:
        Unused (generation is instant); accepted because the command line passes it to every
        task builder.

    Returns
    -------
    Task
        ``inputs``: adjacency ``(B, n, n)`` with ``PermutationAction(S_n, dims=(1, 2))``;
        ``targets`` ``(B, n)`` of 0/1; outputs: logits ``(B, n)`` with
        ``PermutationAction(S_n, dims=(1,))``.

    Examples
    --------
    >>> task = bipartite_task(8, 4, 0, nodes=6, families=("cycle", "path"))
    >>> task.train[0].shape, task.train[1].shape, task.extra["breaking_families"]
    (torch.Size([8, 6, 6]), torch.Size([8, 6]), ('cycle', 'path'))
    """
    sizes = check_split_sizes(train_size, val_size, test_size)
    nodes = check_int("nodes", nodes, minimum=2)
    families = _check_families(families, nodes)
    seed = check_int("seed", seed, minimum=0)
    check_bool("progress", progress)
    group = SymmetricGroup(nodes)
    action_in = PermutationAction(group, dims=(1, 2))
    draw = functools.partial(_bipartite_split, nodes=nodes, families=families, action=action_in)
    unique = tuple(dict.fromkeys(families))
    return _task(
        "bipartite",
        _splits(sizes, seed, draw),
        action_in,
        PermutationAction(group, dims=(1,)),
        colouring_loss,
        colouring_failure,
        f"Properly 2-colour randomly labelled connected bipartite graphs on {nodes} nodes "
        f"({', '.join(unique)}); two degenerate answers, S_{nodes}.",
        {
            "symmetry": f"S_{nodes}",
            "nodes": nodes,
            "families": families,
            "breaking_families": tuple(f for f in unique if _swaps_colours(f, nodes)),
            "seed": seed,
            "sizes": sizes,
            "relaxed_check": _graph_check(group, action_in),
        },
    )


def _graph_check(group: SymmetricGroup, action_in: PermutationAction) -> dict[str, Any]:
    """The symmetry checks' actions: the automorphism groups found exactly by search, and every
    permutation of up to 7 nodes, else 512 fixed random ones."""
    elements = group.sample(512, torch.Generator().manual_seed(0)) if group.n > 7 else None
    return {
        "action_in": action_in,
        "action_out": PermutationAction(group, dims=(1,)),
        "elements": elements,
        "stabilisers": _automorphisms,
    }


def _automorphisms(adjacency: Tensor) -> list[Tensor]:
    return [graph_automorphisms(a) for a in adjacency]


def _bipartite_split(
    count: int,
    generator: torch.Generator,
    nodes: int,
    families: tuple[str, ...],
    action: PermutationAction,
) -> Split:
    """``count`` relabelled graphs of random families and their 2-colourings."""
    which = torch.randint(len(families), (count,), generator=generator)
    adjacency = torch.zeros(count, nodes, nodes)
    for i, family in enumerate(families):
        chosen = which == i
        adjacency[chosen] = _graphs(family, nodes, int(chosen.sum()), generator)
    relabelled = action(action.group.sample(count, generator), adjacency)
    return relabelled, _two_colouring(relabelled)


def _graphs(family: str, nodes: int, count: int, generator: torch.Generator | None) -> Tensor:
    """``count`` canonical graphs ``(count, n, n)`` of ``family`` (random ones for trees)."""
    if family == "tree":
        return _random_trees(count, nodes, generator)
    index = torch.arange(nodes)
    half = nodes // 2
    if family == "cycle":
        ends = (index, (index + 1) % nodes)
    elif family == "cube":
        source = index.repeat_interleave(3)
        ends = (source, source ^ (1 << torch.arange(3)).repeat(nodes))  # flip one of 3 bits
    elif family == "ladder":
        rail = index[: half - 1]
        ends = (
            torch.cat([index[:half], rail, rail + half]),
            torch.cat([index[:half] + half, rail + 1, rail + 1 + half]),
        )
    elif family == "complete-bipartite":
        ends = (index[:half].repeat_interleave(half), index[half:].repeat(half))
    elif family == "path":
        ends = (index[:-1], index[1:])
    else:  # star
        ends = (torch.zeros(nodes - 1, dtype=torch.long), index[1:])
    adjacency = torch.zeros(nodes, nodes)
    adjacency[ends] = 1.0
    adjacency[ends[::-1]] = 1.0
    return adjacency.expand(count, nodes, nodes)


def _random_trees(count: int, nodes: int, generator: torch.Generator | None) -> Tensor:
    """``count`` uniformly random labelled trees ``(count, n, n)``: uniform Prüfer sequences,
    decoded for all trees at once (each step joins the smallest leaf to the next entry)."""
    sequences = torch.randint(nodes, (count, nodes - 2), generator=generator)
    degree = torch.ones(count, nodes, dtype=torch.long)
    degree.scatter_add_(1, sequences, torch.ones_like(sequences))
    adjacency = torch.zeros(count, nodes, nodes)
    rows = torch.arange(count)
    for step in range(nodes - 2):
        leaf = (degree == 1).to(torch.int8).argmax(1)  # the first (smallest) leaf
        parent = sequences[:, step]
        adjacency[rows, leaf, parent] = adjacency[rows, parent, leaf] = 1.0
        degree[rows, leaf] -= 1
        degree[rows, parent] -= 1
    last = (degree == 1).nonzero()[:, 1].reshape(count, 2)  # the two nodes left
    adjacency[rows, last[:, 0], last[:, 1]] = adjacency[rows, last[:, 1], last[:, 0]] = 1.0
    return adjacency


def _two_colouring(adjacency: Tensor) -> Tensor:
    """The 2-colouring ``(B, n)`` of connected bipartite graphs ``(B, n, n)`` that gives node 0
    colour 0: the parity of each node's distance to node 0 (breadth-first, all graphs at once)."""
    count, nodes = adjacency.shape[:2]
    frontier = torch.zeros(count, nodes, dtype=torch.bool)
    frontier[:, 0] = True
    seen = frontier.clone()
    colour = torch.zeros(count, nodes)
    for distance in range(1, nodes):
        frontier = (adjacency @ frontier.unsqueeze(-1).to(adjacency.dtype)).squeeze(-1) > 0
        frontier &= ~seen
        colour[frontier] = float(distance % 2)
        seen |= frontier
    return colour


def _family_requirement(family: str, nodes: int) -> str | None:
    """What ``family`` needs of the node count, or ``None`` if ``nodes`` fits."""
    if family == "cube" and nodes != 8:
        return "8 nodes (the 3-cube)"
    if family == "cycle" and (nodes < 4 or nodes % 2):
        return "an even number >= 4 of nodes"
    if family in ("ladder", "complete-bipartite") and nodes % 2:
        return "an even number of nodes"
    return None


def _swaps_colours(family: str, nodes: int) -> bool:
    """Whether every graph of ``family`` on ``nodes`` nodes has an automorphism that swaps its
    two colour classes (a turn of the cycle, a bit flip of the cube, the swap of the ladder's
    rails or of the sides of ``K_{n/2,n/2}``, the reversal of a path with an even node count; a
    star or tree only as the single edge ``n = 2``)."""
    if family in ("path", "star", "tree"):
        return nodes % 2 == 0 and (family == "path" or nodes == 2)
    return True


def _check_colouring(outputs: object, targets: object) -> tuple[Tensor, Tensor]:
    outputs, targets = check_tensor("outputs", outputs), check_tensor("targets", targets)
    if targets.ndim != 2 or not targets.is_floating_point():
        raise ValueError(
            f"targets: expected a float 0/1 colouring of shape (B, n), received dtype "
            f"{targets.dtype} and shape {tuple(targets.shape)}"
        )
    if outputs.shape != targets.shape or not outputs.is_floating_point():
        raise ValueError(
            f"outputs: expected floating-point logits of the targets' shape "
            f"{tuple(targets.shape)}, received dtype {outputs.dtype} and shape "
            f"{tuple(outputs.shape)}"
        )
    return outputs, targets


def _check_families(families: object, nodes: int) -> tuple[str, ...]:
    check = functools.partial(check_choice, choices=FAMILIES)
    out = _check_entries("families", families, str, "a family name", check)
    for family in dict.fromkeys(out):
        need = _family_requirement(family, nodes)
        if need is not None:
            raise ValueError(f"families: family {family!r} expected {need}, received nodes={nodes}")
    return out


# --- set decoding -------------------------------------------------------------------------------


def set_decoding_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """``mean_b min_p CE(z_b, t_b[p])``: the slot-mean cross-entropy under the best ordering.

    ``outputs``: logits ``(B, slots, alphabet)``; ``targets``: symbols ``(B, slots)``; ``p``
    runs over all ``slots!`` orderings (``slots <= 6``), all evaluated at once.

    Examples
    --------
    >>> logits = 20 * F.one_hot(torch.tensor([[2, 0]]), 3).float()
    >>> bool(set_decoding_loss(logits, torch.tensor([[0, 2]])) < 1e-8)
    True
    """
    outputs, targets = _check_set_decoding(outputs, targets)
    slots = targets.shape[1]
    log_probs = F.log_softmax(outputs, dim=-1)
    # cost[b, s, t] = -log p(slot s = symbol t of sample b)
    cost = -log_probs.gather(2, targets.unsqueeze(1).expand(-1, slots, -1))
    orderings = _orderings(slots).to(targets.device)  # (P, slots)
    per_ordering = cost[:, torch.arange(slots, device=targets.device), orderings]  # (B, P, slots)
    return per_ordering.mean(-1).amin(-1).mean()


@torch.no_grad()
def set_decoding_failure(outputs: Tensor, targets: Tensor) -> Tensor:
    """The fraction of samples whose per-slot argmax symbols, as a multiset, differ from the
    targets (sorted predictions against sorted targets).

    Examples
    --------
    >>> logits = F.one_hot(torch.tensor([[1, 0], [0, 0]]), 3).float()
    >>> set_decoding_failure(logits, torch.tensor([[0, 1], [0, 1]]))
    tensor(0.5000)
    """
    outputs, targets = _check_set_decoding(outputs, targets)
    predicted = outputs.argmax(-1).sort(1).values
    wrong = (predicted != targets.sort(1).values).any(1)
    return wrong.to(outputs.dtype).mean()


def set_decoding_task(
    train_size: int = 1000,
    val_size: int = 500,
    test_size: int = 1000,
    *,
    slots: int = 3,
    alphabet: int = 8,
    seed: int = 0,
    progress: bool = False,
) -> Task:
    """Decode a set from its multi-hot code, repeated in every slot: ``S_slots``, degenerate
    answers.

    Each sample is a uniformly random set of ``slots`` distinct symbols of
    ``{0, ..., alphabet - 1}``; the input is its multi-hot code ``(alphabet,)`` in every slot,
    the target its symbols in ascending order. Loss (:func:`set_decoding_loss`)

        L = mean_b min_p (1 / slots) sum_s CE(z_bs, t_b,p(s)),

    the minimum over the ``slots!`` orderings ``p``; metric (:func:`set_decoding_failure`): the
    fraction of samples whose predicted symbols are not the set. Every permutation of the slots
    fixes the input, so an ``S_slots``-equivariant model predicts one symbol in every slot
    (Kaba & Ravanbakhsh 2023, arXiv:2312.09016).

    Parameters
    ----------
    train_size, val_size, test_size:
        Samples per split (``test_size=0``: no test split).
    slots:
        Set size, ``2 <= slots <= 6`` (the loss enumerates ``slots!`` orderings).
    alphabet:
        Number of symbols, ``>= slots``.
    seed:
        Non-negative base seed; split ``s`` is drawn from ``(seed, index of s)``.
    progress:
        Unused (generation is instant); accepted because the command line passes it to every
        task builder.

    Returns
    -------
    Task
        ``inputs (B, slots, alphabet)`` and targets ``(B, slots)`` (int64); outputs: logits
        ``(B, slots, alphabet)``; ``PermutationAction(S_slots, dims=(1,))`` on both.

    Examples
    --------
    >>> task = set_decoding_task(8, 4, 0, slots=2, alphabet=5)
    >>> task.train[0].shape, task.train[1].dtype
    (torch.Size([8, 2, 5]), torch.int64)
    """
    sizes = check_split_sizes(train_size, val_size, test_size)
    slots = check_int("slots", slots, minimum=2)
    if slots > MAX_SLOTS:
        raise ValueError(
            f"slots: expected at most {MAX_SLOTS} (the loss enumerates slots! orderings, "
            f"{math.factorial(MAX_SLOTS)} at most), received {slots}"
        )
    alphabet = check_int("alphabet", alphabet, minimum=slots)
    seed = check_int("seed", seed, minimum=0)
    check_bool("progress", progress)
    action = PermutationAction(SymmetricGroup(slots), dims=(1,))
    draw = functools.partial(_set_decoding_split, slots=slots, alphabet=alphabet)
    return _task(
        "set-decoding",
        _splits(sizes, seed, draw),
        action,
        action,
        set_decoding_loss,
        set_decoding_failure,
        f"Decode {slots} distinct symbols of {alphabet}, one per slot, from their multi-hot "
        f"code repeated in every slot; degenerate answers, S_{slots}.",
        {
            "symmetry": f"S_{slots}",
            "slots": slots,
            "alphabet": alphabet,
            "seed": seed,
            "sizes": sizes,
            "relaxed_check": {"action_in": action, "action_out": action},
        },
    )


def _set_decoding_split(count: int, generator: torch.Generator, slots: int, alphabet: int) -> Split:
    """``count`` random sets: the code in every slot, the symbols in ascending order."""
    scores = torch.rand(count, alphabet, generator=generator)
    symbols = torch.argsort(scores, dim=1)[:, :slots].sort(dim=1).values
    code = torch.zeros(count, alphabet).scatter_(1, symbols, 1.0)
    return code.unsqueeze(1).repeat(1, slots, 1), symbols


@functools.lru_cache(maxsize=MAX_SLOTS)
def _orderings(slots: int) -> Tensor:
    """All ``slots!`` orderings ``(P, slots)`` of ``0..slots-1``."""
    return torch.tensor(list(itertools.permutations(range(slots))))


def _check_set_decoding(outputs: object, targets: object) -> tuple[Tensor, Tensor]:
    outputs, targets = check_tensor("outputs", outputs), check_tensor("targets", targets)
    if targets.ndim != 2 or targets.is_floating_point() or targets.is_complex():
        raise ValueError(
            f"targets: expected integer symbols of shape (B, slots), received dtype "
            f"{targets.dtype} and shape {tuple(targets.shape)}"
        )
    if targets.shape[1] > MAX_SLOTS:
        raise ValueError(
            f"targets: expected at most {MAX_SLOTS} slots, received shape {tuple(targets.shape)}"
        )
    if outputs.ndim != 3 or outputs.shape[:2] != targets.shape or not outputs.is_floating_point():
        raise ValueError(
            f"outputs: expected floating-point logits of shape ({targets.shape[0]}, "
            f"{targets.shape[1]}, alphabet) for targets of shape {tuple(targets.shape)}, "
            f"received dtype {outputs.dtype} and shape {tuple(outputs.shape)}"
        )
    return outputs, targets.long()


# --- shared -------------------------------------------------------------------------------------


def _splits(sizes: dict[str, int], seed: int, draw: _Draw) -> dict[str, Split]:
    """``draw(count, generator)`` for every non-empty split, each generator seeded from
    ``(seed, split index)``."""
    out = {}
    for index, split in enumerate(_SPLITS):
        if sizes[split] > 0:
            state = np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]
            out[split] = draw(sizes[split], torch.Generator().manual_seed(int(state)))
    return out


def _task(
    name: str,
    splits: dict[str, Split],
    action_in: Action,
    action_out: Action,
    loss: Callable[[Tensor, Tensor], Tensor],
    metric: Callable[[Tensor, Tensor], Tensor],
    description: str,
    extra: dict[str, Any],
) -> Task:
    """A symmetry-breaking task: failure-rate metric, the reference in ``extra``."""
    return Task.from_splits(
        name,
        splits,
        action_in=action_in,
        action_out=action_out,
        loss=loss,
        metric=metric,
        metric_name="failure",
        description=description,
        extra={**extra, "reference": REFERENCE},
    )


def _check_entries(
    name: str, value: object, kind: type, what: str, check: Callable[[str, Any], object]
) -> tuple[Any, ...]:
    """``value`` as a non-empty tuple (one ``kind``, described by ``what``, becomes a 1-tuple),
    each entry checked by ``check(entry name, entry)``."""
    if isinstance(value, kind) and not isinstance(value, bool):
        check(name, value)
        return (value,)
    if not isinstance(value, (tuple, list)) or not value:
        raise TypeError(f"{name}: expected {what} or a non-empty tuple of them, received {value!r}")
    for i, entry in enumerate(value):
        check(f"{name}[{i}]", entry)
    return tuple(value)


def _check_vertices(vertices: object) -> tuple[int, ...]:
    check = functools.partial(check_int, minimum=3)
    return tuple(int(k) for k in _check_entries("vertices", vertices, int, "an int >= 3", check))
