"""Stabilisers of finite group actions and the relaxed-equivariance checker.

Kaba & Ravanbakhsh 2023, "Symmetry breaking and equivariant neural networks" (arXiv:2312.09016):

- the stabiliser of an input is ``G_x = {g : g x = x}``;
- an equivariant ``f`` has ``G_x ⊆ G_f(x)`` (the *equivariant limit*): it cannot output anything
  less symmetric than its input;
- ``f`` is *relaxed-equivariant* if for every ``x`` and ``g`` some ``h ∈ G_x`` has
  ``f(g x) = (g h) f(x)``, i.e. ``g^-1 f(g x) ∈ G_x f(x)`` (the *coset condition*).

Float inputs are compared with an absolute tolerance ``atol`` on the largest entry difference.
Point sets whose row order carries no meaning are compared as sets (``as_set=True``): rows of
every part of the input (e.g. ``(points, mask)``) are matched up to a permutation. The set
comparison assumes rows are either equal within ``atol`` or further apart than ``2 atol``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from equirelax._batches import call, flat, index, repeat, rows
from equirelax._checks import batch_size, check_non_negative, check_positive_int, check_tensor
from equirelax.actions import Action, check_action_pair
from equirelax.groups import FiniteGroup, Group, SymmetricGroup

__all__ = [
    "RelaxedEquivarianceReport",
    "enumerable_elements",
    "graph_automorphisms",
    "is_relaxed_equivariant",
    "keeps_stabiliser",
    "stabiliser",
    "stabiliser_mask",
]

_CHUNK = 4096  # samples moved at once (elements x inputs): bounds the memory of the checks


def _distance(a: Any, b: Any, *, as_set: bool = False, atol: float = 0.0) -> Tensor:
    """Per-sample distance ``(B,)`` between two batches: the largest entry difference, or with
    ``as_set`` the largest distance from a row to its nearest row of the other set, and ``inf``
    where the two row multisets differ at tolerance ``atol`` (different multiplicities)."""
    if not as_set:
        return (flat(a).double() - flat(b).double()).abs().amax(dim=1)
    ra, rb = rows(a), rows(b)
    ab = torch.cdist(ra, rb, p=float("inf"))
    aa = torch.cdist(ra, ra, p=float("inf"))
    bb = torch.cdist(rb, rb, p=float("inf"))
    # a row of a has as many matches in b as copies in a (and the converse): same multiset
    same = ((ab <= atol).sum(2) == (aa <= atol).sum(2)).all(1) & (
        (ab <= atol).sum(1) == (bb <= atol).sum(2)
    ).all(1)
    nearest = torch.maximum(ab.amin(2).amax(1), ab.amin(1).amax(1))
    return torch.where(same, nearest, torch.full_like(nearest, float("inf")))


def enumerable_elements(group: Group, name: str) -> Tensor:
    """Every element of ``group`` (``group.elements()``), which must be finite and small enough
    to enumerate (S_n with n <= 8); a ``ValueError`` naming ``name`` otherwise."""
    if not isinstance(group, FiniteGroup):
        raise ValueError(f"{name}: expected an action of a finite group, received one of {group}")
    if isinstance(group, SymmetricGroup) and group.n > 8:
        raise ValueError(
            f"{name}: S_{group.n} is too large to enumerate (n <= 8); pass the stabilisers "
            "(e.g. from graph_automorphisms) and a sample of elements"
        )
    return group.elements()


def _moved(action: Action, g: Tensor, x: Any) -> Any:
    """``A(g_k) x_b`` for every element ``k`` and sample ``b``: ``(K B, ...)``, element-major."""
    return action(g.repeat_interleave(batch_size(x), dim=0), repeat(x, g.shape[0]))


@torch.no_grad()
def stabiliser_mask(
    x: Any,
    action: Action,
    *,
    elements: Tensor | None = None,
    atol: float = 1e-6,
    as_set: bool = False,
) -> Tensor:
    """Which ``elements`` (default: every element of the finite group, in ``elements()`` order)
    fix each input: a ``(B, K)`` bool tensor with ``mask[b, k] = (A(g_k) x_b == x_b)``."""
    if not isinstance(action, Action):
        raise TypeError(f"action: expected an Action, received {action!r}")
    action.check_input(x, "x")
    check_non_negative("atol", atol)
    group = action.group
    g = (
        enumerable_elements(group, "action")
        if elements is None
        else group.check(elements, "elements")
    )
    batch = batch_size(x)
    step = max(1, _CHUNK // batch)
    masks = []
    for start in range(0, g.shape[0], step):
        chunk = g[start : start + step]
        moved = _moved(action, chunk, x)
        d = _distance(moved, repeat(x, chunk.shape[0]), as_set=as_set, atol=atol)
        masks.append((d <= atol).reshape(chunk.shape[0], batch))
    return torch.cat(masks).T


def stabiliser(x: Any, action: Action, **options: Any) -> Tensor:
    """The elements of the finite group that fix the single input ``x`` (a batch of one):
    ``G_x = {g : g x = x}``; ``options`` as for :func:`stabiliser_mask`."""
    if batch_size(x) != 1:
        raise ValueError(f"x: expected a batch of one input, received {batch_size(x)}")
    group = action.group
    g = options.pop("elements", None)
    g = enumerable_elements(group, "action") if g is None else group.check(g, "elements")
    return g[stabiliser_mask(x, action, elements=g, **options)[0]]


def graph_automorphisms(
    adjacency: Tensor, colours: Tensor | None = None, *, max_count: int = 1_000_000
) -> Tensor:
    """Every automorphism of one graph, exactly: ``(K, n)`` permutations ``g`` (the
    :class:`~equirelax.groups.SymmetricGroup` convention) with ``A[g[i], g[j]] = A[i, j]`` and
    ``colours[g[i]] = colours[i]``, i.e. the stabiliser of the graph under
    :class:`~equirelax.actions.PermutationAction`.

    Backtracking search over node images, pruned by colour refinement (1-WL) classes and by
    adjacency consistency; practical for graphs of a few dozen nodes. ``adjacency`` is
    ``(n, n)`` (weighted or not: entries must match exactly), ``colours`` ``(n,)`` or ``(n, F)``.
    """
    adjacency = check_tensor("adjacency", adjacency)
    n = adjacency.shape[0]
    if adjacency.ndim != 2 or adjacency.shape[1] != n:
        raise ValueError(f"adjacency: expected a square (n, n) tensor, received {adjacency.shape}")
    check_positive_int("max_count", max_count)
    a = adjacency.detach().cpu().numpy()
    if colours is None:
        labels = np.zeros(n, dtype=np.int64)
    else:
        colours = check_tensor("colours", colours)
        if colours.shape[0] != n:
            raise ValueError(f"colours: expected {n} rows (one per node), received {colours.shape}")
        rows = colours.detach().cpu().reshape(n, -1).numpy()
        labels = np.unique(rows, axis=0, return_inverse=True)[1].reshape(n)
    labels = _refine(a, labels)
    order = _search_order(a, labels)
    found: list[list[int]] = []
    image = [-1] * n
    used = [False] * n

    def extend(depth: int) -> None:
        if len(found) >= max_count:
            raise ValueError(f"max_count: the graph has more than {max_count} automorphisms")
        if depth == n:
            found.append(list(image))
            return
        i = order[depth]
        for j in range(n):
            if used[j] or labels[j] != labels[i] or a[i, i] != a[j, j]:
                continue
            if all(a[i, k] == a[j, image[k]] and a[k, i] == a[image[k], j] for k in order[:depth]):
                image[i], used[j] = j, True
                extend(depth + 1)
                image[i], used[j] = -1, False

    extend(0)
    return torch.tensor(found, dtype=torch.long).reshape(-1, n)


def _refine(a: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1-WL colour refinement of integer node labels until stable (an invariant partition)."""
    n = a.shape[0]
    while True:
        signatures = [
            (labels[i], a[i, i], tuple(sorted((a[i, j], a[j, i], labels[j]) for j in range(n))))
            for i in range(n)
        ]
        keys = {s: k for k, s in enumerate(sorted(set(signatures)))}
        refined = np.array([keys[s] for s in signatures], dtype=np.int64)
        if len(keys) == len(set(labels.tolist())):
            return refined
        labels = refined


def _search_order(a: np.ndarray, labels: np.ndarray) -> list[int]:
    """Nodes in an order where each one touches many earlier ones (strong pruning): start in
    the smallest colour class, then always take the node with most links to those chosen."""
    n = a.shape[0]
    sizes = np.bincount(labels)
    linked = (a != 0) | (a.T != 0)
    order = [int(np.argmin(sizes[labels]))]
    while len(order) < n:
        rest = [j for j in range(n) if j not in order]
        order.append(max(rest, key=lambda j: (int(linked[j, order].sum()), -sizes[labels[j]])))
    return order


@dataclass
class RelaxedEquivarianceReport:
    """What :func:`is_relaxed_equivariant` found.

    Attributes
    ----------
    holds:
        Every tested ``(x, g)`` satisfies the coset condition ``g^-1 f(g x) ∈ G_x f(x)``.
    equivariant:
        Every tested ``(x, g)`` satisfies ``f(g x) = g f(x)`` (``h = e``).
    violations:
        ``(sample index, element)`` pairs that fail the coset condition (at most 20 kept).
    num_violations:
        How many tested pairs fail it.
    max_distance:
        The largest distance from ``g^-1 f(g x)`` to the nearest point of ``G_x f(x)``.
    stabiliser_orders:
        ``|G_x|`` per sample ``(B,)``.
    num_elements:
        How many group elements were tested per sample.
    sample_holds:
        ``(B,)`` bool: the coset condition holds for every tested element on that sample.
    """

    holds: bool
    equivariant: bool
    max_distance: float
    stabiliser_orders: Tensor
    num_elements: int
    sample_holds: Tensor
    num_violations: int = 0
    violations: list[tuple[int, Tensor]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.holds


def _stabilisers(
    x: Any, action_in: Action, stabilisers: Sequence[Tensor] | None, atol: float, as_set: bool
) -> list[Tensor]:
    group = action_in.group
    if stabilisers is None:
        g = enumerable_elements(group, "action_in")
        mask = stabiliser_mask(x, action_in, elements=g, atol=atol, as_set=as_set)
        return [g[row] for row in mask]
    if len(stabilisers) != batch_size(x):
        raise ValueError(
            f"stabilisers: expected one tensor of elements per sample ({batch_size(x)}), "
            f"received {len(stabilisers)}"
        )
    return [group.check(s, f"stabilisers[{b}]") for b, s in enumerate(stabilisers)]


def _outputs_of(f: Callable[..., Any], x: Any) -> Tensor:
    y = call(f, x)
    if isinstance(y, tuple):
        raise TypeError(f"f: expected a tensor output, received a tuple of {len(y)}")
    return check_tensor("f(x)", y)


@torch.no_grad()
def is_relaxed_equivariant(
    f: Callable[..., Any],
    x: Any,
    group: Group | Tensor,
    action_in: Action,
    action_out: Action | None = None,
    *,
    atol: float = 1e-5,
    as_set: bool = False,
    stabilisers: Sequence[Tensor] | None = None,
) -> RelaxedEquivarianceReport:
    """Test the coset condition ``f(g x) ∈ (g G_x) f(x)`` for every tested ``g`` and sample.

    Parameters
    ----------
    f:
        A module or function (tuple inputs are unpacked as positional arguments).
    x:
        A batch of inputs.
    group:
        The finite group of the actions (every element is tested) or a ``(K, ...)`` tensor of
        its elements to test (e.g. samples of a large ``S_n``).
    action_in, action_out:
        Actions on inputs and outputs (``None``: invariant outputs).
    atol:
        Absolute tolerance on output entries (and on inputs, for the stabilisers).
    as_set:
        Compare inputs as sets of rows when computing stabilisers (point sets).
    stabilisers:
        ``G_x`` per sample, e.g. from :func:`graph_automorphisms` when the group is too large
        to enumerate; computed from ``action_in`` by default.
    """
    action_out = check_action_pair(action_in, action_out)
    action_in.check_input(x, "x")
    check_non_negative("atol", atol)
    if isinstance(group, Group):
        if group != action_in.group:
            raise ValueError(
                f"group: expected the actions' group {action_in.group}, received {group}"
            )
        tested = enumerable_elements(group, "group")
    else:
        tested = action_in.group.check(group, "group")
    stabs = _stabilisers(x, action_in, stabilisers, atol, as_set)
    y = _outputs_of(f, x)
    batch, k = batch_size(x), tested.shape[0]

    # pulled[k, b] = A_out(g_k)^-1 f(A_in(g_k) x_b), in chunks of elements
    step = max(1, _CHUNK // batch)
    pulled = []
    for start in range(0, k, step):
        g = tested[start : start + step]
        g_rep = g.repeat_interleave(batch, dim=0)
        moved_out = _outputs_of(f, action_in(g_rep, repeat(x, g.shape[0])))
        back = action_out(action_in.group.inverse(g_rep), moved_out)
        pulled.append(flat(back).double().reshape(g.shape[0], batch, -1))
    pulled_all = torch.cat(pulled)  # (K, B, D)

    worst, equivariant, bad, per_sample = 0.0, True, [], []
    count = 0
    for b in range(batch):
        h = stabs[b]
        orbit = flat(
            action_out(h, repeat(index(y, torch.tensor([b])), h.shape[0]))
        ).double()  # (H, D)
        gaps = (pulled_all[:, b, None, :] - orbit[None]).abs().amax(dim=2)  # (K, H)
        nearest = gaps.amin(dim=1)
        identity = (pulled_all[:, b] - flat(y[b : b + 1]).double()).abs().amax(dim=1)
        equivariant = equivariant and bool((identity <= atol).all())
        worst = max(worst, float(nearest.max()))
        failing = torch.nonzero(nearest > atol).flatten()
        count += failing.numel()
        per_sample.append(failing.numel() == 0)
        bad.extend((b, tested[i]) for i in failing[: max(0, 20 - len(bad))].tolist())
    return RelaxedEquivarianceReport(
        holds=count == 0,
        equivariant=equivariant,
        max_distance=worst,
        stabiliser_orders=torch.tensor([s.shape[0] for s in stabs]),
        num_elements=k,
        sample_holds=torch.tensor(per_sample),
        num_violations=count,
        violations=bad,
    )


@torch.no_grad()
def keeps_stabiliser(
    f: Callable[..., Any],
    x: Any,
    action_in: Action,
    action_out: Action | None = None,
    *,
    atol: float = 1e-5,
    as_set: bool = False,
    stabilisers: Sequence[Tensor] | None = None,
) -> Tensor:
    """The equivariant limit ``G_x ⊆ G_f(x)``, per sample ``(B,)`` bool: whether every element
    fixing ``x`` also fixes ``f(x)``. An equivariant ``f`` always keeps the stabiliser (it
    cannot break the input's symmetry); a symmetry-breaking ``f`` fails on symmetric inputs."""
    action_out = check_action_pair(action_in, action_out)
    action_in.check_input(x, "x")
    stabs = _stabilisers(x, action_in, stabilisers, atol, as_set)
    y = _outputs_of(f, x)
    kept = []
    for b, h in enumerate(stabs):
        own = index(y, torch.tensor([b]))
        moved = action_out(h, repeat(own, h.shape[0]))
        kept.append(bool((_distance(moved, repeat(own, h.shape[0])) <= atol).all()))
    return torch.tensor(kept)
