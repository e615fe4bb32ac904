"""Symmetry-breaking objects: what an equivariant model consumes to become relaxed-equivariant.

Kaba & Ravanbakhsh 2023 (arXiv:2312.09016): a relaxed-equivariant *linear* map is equivariant,
so breaking a symmetry needs an input-dependent object ``b(x)`` with ``b(g x) ∈ g G_x b(x)``.
Then ``f(x) = f_eq(x, b(x))`` is relaxed-equivariant for every jointly equivariant ``f_eq``
(equivariant after relaxed-equivariant is relaxed-equivariant). Both objects here choose ``b(x)``
from a set of candidates that the stabiliser permutes transitively, so any choice is valid:

- :class:`FrameBreaker` (finite groups, E-MLP style): a frame ``k(x)`` among
  ``F(x) = argmax_g s(A(g)^-1 x)`` for a fixed generic score ``s``; ``F(g x) = g F(x)`` and
  ``F(x) = G_x k`` for any ``k`` in it. Its code is the regular representation's ``e_k(x)``.
- :class:`OrderingBreaker` (sets and graphs): a node (``"mark"``) or a complete ordering
  (``"rank"``) chosen by individualisation and refinement: items are coloured by colour
  refinement (1-WL with fixed random weights), one item of the first class of tied items is
  individualised, and so on. Ties are items that refinement cannot tell apart; the choice is
  relaxed-equivariant wherever those are the orbits of the stabiliser (true for vertex-transitive
  graphs, trees and generic point sets; 1-WL can merge orbits on some regular graphs).

Ties are broken deterministically (``"first"``: the lowest index; relaxed-equivariant) or
uniformly at random (``"random"``: the output distribution is equivariant, ``b(g x) ~ g b(x)``).
:class:`NoiseInjection` is the baseline they replace: i.i.d. noise per item (equivariant only in
distribution, and nothing tells the model which items are equivalent).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from equirelax._batches import flat, repeat, rows
from equirelax._checks import (
    batch_size,
    check_choice,
    check_non_negative,
    check_positive_int,
    check_tensor,
)
from equirelax._constants import TIE_BREAKS
from equirelax.actions import Action
from equirelax.breaking.stabilisers import enumerable_elements
from equirelax.groups import FiniteGroup

__all__ = ["TIE_BREAKS", "FrameBreaker", "NoiseInjection", "OrderingBreaker"]

_WIDTH = 32  # random features of the scores and of colour refinement


def _pick(candidates: Tensor, tie_break: str, generator: torch.Generator | None) -> Tensor:
    """One column per row of a ``(B, K)`` bool mask with at least one ``True`` per row: the
    first, or one uniformly at random."""
    if tie_break == "first":
        return candidates.to(torch.uint8).argmax(dim=1)
    weights = candidates.to(torch.float64)
    return torch.multinomial(weights.cpu(), 1, generator=generator).flatten().to(weights.device)


class FrameBreaker(nn.Module):
    """A frame ``k(x) ∈ F(x) = argmax_g s(A(g)^-1 x)`` of a finite group, as the regular
    representation code ``e_k(x)`` ``(B, |G|)`` (:meth:`frame` gives the elements).

    ``s`` is a fixed random linear score of the flattened input (``as_set=False``) or a sum of
    random Fourier features over its rows (``as_set=True``: point sets whose order carries no
    meaning). Scores within ``atol`` of the maximum are ties: the frames ``G_x k``. The code is
    relaxed-equivariant for ``RepresentationAction(group.regular_representation())``: an
    E-MLP layer with a regular input block consumes it. Kaba & Ravanbakhsh 2023, Sec. 5.
    """

    def __init__(
        self,
        action: Action,
        *,
        tie_break: str = "first",
        atol: float = 1e-5,
        as_set: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(action, Action):
            raise TypeError(f"action: expected an Action, received {action!r}")
        check_choice("tie_break", tie_break, TIE_BREAKS)
        self.action = action
        self.group: FiniteGroup = action.group  # type: ignore[assignment]
        elements = enumerable_elements(action.group, "action")
        self.register_buffer("elements", elements, persistent=False)
        self.register_buffer("inverses", self.group.inverse(elements), persistent=False)
        self.tie_break = tie_break
        self.atol = check_non_negative("atol", atol)
        self.as_set = as_set
        self.seed = seed
        self._templates: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def _template(self, width: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        if width not in self._templates:
            gen = torch.Generator().manual_seed(self.seed * 7919 + width)
            self._templates[width] = (
                torch.randn(width, _WIDTH, generator=gen, dtype=torch.float64),
                torch.rand(_WIDTH, generator=gen, dtype=torch.float64) * 6.283185307179586,
                torch.randn(_WIDTH if self.as_set else width, generator=gen, dtype=torch.float64),
            )
        return tuple(t.to(device) for t in self._templates[width])  # type: ignore[return-value]

    @torch.no_grad()
    def scores(self, x: Any) -> Tensor:
        """``s(A(g)^-1 x)`` for every element ``g`` (in ``elements`` order): ``(B, |G|)``."""
        self.action.check_input(x, "x")
        batch, k = batch_size(x), self.elements.shape[0]
        pulled = self.action(self.inverses.repeat_interleave(batch, dim=0), repeat(x, k))
        if self.as_set:
            points = rows(pulled)
            weight, phase, out = self._template(points.shape[-1], points.device)
            score = (torch.cos(points @ weight + phase) @ out).sum(dim=1)
        else:
            features = flat(pulled).double()
            score = features @ self._template(features.shape[-1], features.device)[2]
        return score.reshape(k, batch).T

    @torch.no_grad()
    def frame(self, x: Any, generator: torch.Generator | None = None) -> Tensor:
        """The chosen frames ``k(x)``: ``(B, ...)`` group elements."""
        score = self.scores(x)
        ties = score >= score.amax(dim=1, keepdim=True) - self.atol
        return self.elements[_pick(ties, self.tie_break, generator)]

    def forward(self, x: Any, generator: torch.Generator | None = None) -> Tensor:
        """The code ``e_k(x)``: one-hot ``(B, |G|)`` in the dtype of ``x``'s first part."""
        dtype = (x[0] if isinstance(x, (tuple, list)) else x).dtype
        index = self.group.index(self.frame(x, generator))
        return nn.functional.one_hot(index, self.group.order).to(dtype)


class OrderingBreaker(nn.Module):
    """A node mark or a complete ordering of the items of a set or graph, chosen by
    individualisation and refinement (see the module docstring).

    Called as ``breaker(items, pairwise=None, mask=None)`` with invariant item features
    ``(B, n, item_features)``, invariant pair features ``(B, n, n, pair_features)`` (an
    adjacency, distances; ``None``: every pair alike) and ``mask`` ``(B, n)`` of the items that may
    be chosen (default all). Returns ``code="mark"``: ``(B, n, 1)``, one chosen item marked;
    ``code="rank"``: ``(B, n, n)``, the one-hot rank of every item in the ordering.
    """

    def __init__(
        self,
        item_features: int,
        pair_features: int = 0,
        *,
        code: str = "mark",
        tie_break: str = "first",
        rounds: int | None = None,
        atol: float = 1e-6,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_positive_int("item_features", item_features)
        if not isinstance(pair_features, int) or pair_features < 0:
            raise ValueError(f"pair_features: expected an int >= 0, received {pair_features!r}")
        check_choice("code", code, ("mark", "rank"))
        check_choice("tie_break", tie_break, TIE_BREAKS)
        if rounds is not None:
            check_positive_int("rounds", rounds)
        self.item_features, self.pair_features = item_features, pair_features
        self.code, self.tie_break, self.rounds = code, tie_break, rounds
        self.atol = check_non_negative("atol", atol)
        gen = torch.Generator().manual_seed(seed)

        def draw(*shape: int) -> Tensor:
            return torch.randn(*shape, generator=gen, dtype=torch.float64) / shape[0] ** 0.5

        for name, shape in (
            ("w_items", (item_features, _WIDTH)),
            ("w_pairs", (max(pair_features, 1), _WIDTH)),
            ("w_self", (_WIDTH, _WIDTH)),
            ("w_neighbours", (_WIDTH, _WIDTH)),
            ("mark_frequency", (1, _WIDTH)),
            ("mark_phase", (1, _WIDTH)),
            ("key", (_WIDTH, 1)),
        ):
            self.register_buffer(name, draw(*shape), persistent=False)

    def _check(self, items: Tensor, pairwise: Tensor | None, mask: Tensor | None) -> None:
        check_tensor("items", items)
        if items.ndim != 3 or items.shape[2] != self.item_features:
            raise ValueError(
                f"items: expected (B, n, {self.item_features}), received {tuple(items.shape)}"
            )
        batch, n = items.shape[:2]
        expected = (batch, n, n, self.pair_features)
        if (pairwise is None) != (self.pair_features == 0) or (
            pairwise is not None and tuple(pairwise.shape) != expected
        ):
            shape = None if pairwise is None else tuple(pairwise.shape)
            raise ValueError(f"pairwise: expected shape {expected} (None if 0), received {shape}")
        if mask is not None and tuple(mask.shape) != (batch, n):
            raise ValueError(f"mask: expected shape {(batch, n)}, received {tuple(mask.shape)}")

    def colours(self, items: Tensor, pairwise: Tensor | None, marks: Tensor) -> Tensor:
        """Colour refinement ``(B, n, W)`` in float64: ``c_i <- tanh(c_i W_s + mean_j
        tanh(p_ij W_p) * (c_j W_n) + u(m_i))``, where ``m_i`` is the step at which item ``i`` was
        individualised (0: not) and ``u(k) = 2 cos(k w + phi)`` a random code of the step."""
        n = items.shape[1]
        c = torch.tanh(items.to(torch.float64) @ self.w_items)
        if pairwise is None:
            pair = torch.ones(*items.shape[:2], n, 1, dtype=torch.float64, device=items.device)
        else:
            pair = pairwise.to(torch.float64)
        links = torch.tanh(pair @ self.w_pairs)  # (B, n, n, W)
        steps = marks.unsqueeze(-1)
        mark_term = (
            (steps > 0) * 2 * torch.cos(steps * self.mark_frequency * 7 + self.mark_phase * 7)
        )
        for _ in range(self.rounds or n):
            message = (links * (c @ self.w_neighbours).unsqueeze(1)).mean(dim=2)
            c = torch.tanh(c @ self.w_self + message + mark_term)
        return c

    @torch.no_grad()
    def forward(
        self,
        items: Tensor,
        pairwise: Tensor | None = None,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        self._check(items, pairwise, mask)
        batch, n = items.shape[:2]
        allowed = torch.ones(batch, n, dtype=torch.bool, device=items.device)
        if mask is not None:
            allowed = mask > 0
        marks = torch.zeros(batch, n, dtype=torch.float64, device=items.device)
        rows = torch.arange(batch, device=items.device)
        columns = torch.arange(n, device=items.device)
        stale = True  # whether the marks changed since the colours were last refined
        for step in range(1 if self.code == "mark" else n):
            c = self.colours(items, pairwise, marks)
            stale = False
            ties = (c.unsqueeze(2) - c.unsqueeze(1)).abs().amax(dim=-1) <= self.atol  # (B, n, n)
            open_ = allowed & (marks == 0)
            if self.code == "rank":
                open_ &= ties.sum(dim=2) > 1
            active = open_.any(dim=1)
            # Stop once nothing is open (under torch.compile: go on, a step without an open
            # item changes nothing, so that the graph does not depend on the data).
            if not torch.compiler.is_compiling() and not bool(active.any()):
                break
            key = (c @ self.key).squeeze(-1).masked_fill(~open_, float("inf"))
            first = key.argmin(dim=1)  # a node of the first open class
            chosen = _pick(ties[rows, first] & open_ | ~active[:, None], self.tie_break, generator)
            hit = active[:, None] & (columns == chosen[:, None])  # the chosen item of active rows
            marks = marks.masked_fill(hit, step + 1.0)
            stale = True
        if self.code == "mark":
            return (marks > 0).to(items.dtype).unsqueeze(-1)
        if stale:
            c = self.colours(items, pairwise, marks)
        key = (c @ self.key).squeeze(-1)
        rank = key.argsort(dim=1).argsort(dim=1)
        return nn.functional.one_hot(rank, n).to(items.dtype)


class NoiseInjection(nn.Module):
    """The baseline: ``channels`` i.i.d. standard normal features per item, fresh at every call
    (``(B, n, channels)`` like ``reference``'s first two axes). Breaks every symmetry, but only
    in distribution, and the model must learn to read a choice out of noise."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)

    def forward(self, reference: Tensor, generator: torch.Generator | None = None) -> Tensor:
        check_tensor("reference", reference)
        shape = (*reference.shape[:2], self.channels)
        noise = torch.randn(shape, generator=generator, dtype=reference.dtype)
        return noise.to(reference.device)
