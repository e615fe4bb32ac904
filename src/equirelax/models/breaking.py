"""Equivariant models for the symmetry-breaking tasks, each in three arms (Kaba & Ravanbakhsh
2023, arXiv:2312.09016):

- ``"strict"``: the equivariant model alone; it keeps every input's stabiliser, so it cannot
  output a less symmetric answer (a vertex of a regular polygon, a colouring of a cycle, the
  distinct elements of a set);
- ``"noise"``: the same model fed i.i.d. noise per item (the baseline);
- ``"relaxed"``: the same model fed a symmetry-breaking object (a node mark or an ordering from
  :class:`~equirelax.breaking.OrderingBreaker`): relaxed-equivariant.

The breaking input enters as extra item features, so all three arms share one architecture.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from equirelax._checks import check_choice, check_ndim, check_positive_int, check_tensor
from equirelax._constants import BREAKING_MODES
from equirelax.breaking import NoiseInjection, OrderingBreaker

__all__ = ["ARMS", "BreakingCode", "ColouringGNN", "PolygonPointer", "SetDecoder"]

ARMS = BREAKING_MODES
"""The arms of the symmetry-breaking models: ``strict`` (equivariant), ``noise`` (noise
injection) and ``relaxed`` (a symmetry-breaking object)."""


def _mlp(width_in: int, hidden: int, width_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width_in, hidden), nn.SiLU(), nn.Linear(hidden, width_out))


class BreakingCode(nn.Module):
    """The extra item features of an arm: none (``"strict"``), ``width`` noise channels
    (``"noise"``) or the code of ``breaker`` (``"relaxed"``, ``width`` channels)."""

    def __init__(self, arm: str, breaker: OrderingBreaker, width: int) -> None:
        super().__init__()
        check_choice("breaking", arm, ARMS)
        self.arm = arm
        self.breaker = breaker
        self.noise = NoiseInjection(width)
        self.width = 0 if arm == "strict" else width

    def forward(self, items: Tensor, pairwise: Tensor | None, mask: Tensor | None) -> Tensor:
        """``(B, n, width)`` features to concatenate to the items (``width = 0`` when strict)."""
        if self.arm == "relaxed":
            return self.breaker(items, pairwise, mask).to(items.dtype)
        if self.arm == "noise":
            return self.noise(items)
        return items.new_zeros(*items.shape[:2], 0)


class PolygonPointer(nn.Module):
    """``y = sum_i softmax_i(a) x_i / |x_i|`` over the real points of a point set ``x`` (mask
    ``m``): an O(2)- and permutation-equivariant pointer, with attention logits
    ``a_i = MLP(|x_i|, m_i, b_i, sum_j |x_i - x_j| m_j b_j)`` from the invariants and the arm's
    code ``b`` (``vertices`` channels: the one-hot rank of each point in an ordering chosen from
    the distance matrix, or noise) with its distance-weighted message. A single marked vertex
    is not enough in practice: its reflection symmetry leaves "attend to every vertex but the
    mark" as a local minimum that 2 of 3 seeds fell into on odd polygons (measured).

    ``vertices`` is the number of points ``m`` per input. On a regular polygon the strict arm's
    logits are all equal, so ``y = 0``.

    Called as ``model(points, mask)`` with ``(B, m, 2)`` points and a ``(B, m)`` mask.
    """

    def __init__(
        self,
        vertices: int = 6,
        breaking: str = "relaxed",
        hidden: int = 64,
        tie_break: str = "first",
    ) -> None:
        super().__init__()
        self.vertices = check_positive_int("vertices", vertices)
        hidden = check_positive_int("hidden", hidden)
        breaker = OrderingBreaker(2, 1, code="rank", tie_break=tie_break)
        self.code = BreakingCode(breaking, breaker, vertices)
        self.logit = _mlp(2 + 2 * self.code.width, hidden, 1)

    def forward(self, points: Tensor, mask: Tensor) -> Tensor:
        check_ndim("points", check_tensor("points", points), 3)
        m = self.vertices
        if points.shape[1:] != (m, 2) or tuple(mask.shape) != points.shape[:2]:
            raise ValueError(
                f"points, mask: expected (B, {m}, 2) and (B, {m}), received "
                f"{tuple(points.shape)} and {tuple(mask.shape)}"
            )
        radius = points.norm(dim=-1, keepdim=True)
        real = mask.unsqueeze(-1).to(points.dtype)
        items = torch.cat([radius, real], dim=-1)
        distances = torch.cdist(points, points)
        code = self.code(items, distances.unsqueeze(-1), mask)
        relative = distances @ (code * real)  # how far each point is from the coded ones
        features = torch.cat([items, code, relative], dim=-1)
        logits = self.logit(features).masked_fill(real == 0, -torch.inf)
        attention = torch.softmax(logits, dim=1)
        return (attention * points / radius.clamp_min(1e-6)).sum(dim=1)


class ColouringGNN(nn.Module):
    """A permutation-equivariant message-passing network on an adjacency ``(B, n, n)``:
    ``h_i <- h_i + MLP(h_i, sum_j A_ij h_j)`` for ``layers`` layers, one logit per node
    ``(B, n)``. Node inputs are a constant and the arm's code (a marked node). On a
    vertex-transitive graph the strict arm gives every node the same logit, so no proper
    2-colouring; ``layers`` should reach across the graph (its diameter) from the mark.
    """

    def __init__(
        self, breaking: str = "relaxed", hidden: int = 32, layers: int = 8, tie_break: str = "first"
    ) -> None:
        super().__init__()
        hidden = check_positive_int("hidden", hidden)
        check_positive_int("layers", layers)
        self.code = BreakingCode(breaking, OrderingBreaker(1, 1, tie_break=tie_break), 1)
        self.embed = nn.Linear(1 + self.code.width, hidden)
        self.layers = nn.ModuleList(_mlp(2 * hidden, hidden, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, 1)

    def forward(self, adjacency: Tensor) -> Tensor:
        check_ndim("adjacency", check_tensor("adjacency", adjacency), 3)
        if adjacency.shape[1] != adjacency.shape[2]:
            raise ValueError(f"adjacency: expected (B, n, n), received {tuple(adjacency.shape)}")
        ones = adjacency.new_ones(*adjacency.shape[:2], 1)
        code = self.code(ones, adjacency.unsqueeze(-1), None)
        h = self.embed(torch.cat([ones, code], dim=-1))
        for layer in self.layers:
            h = h + layer(torch.cat([h, adjacency @ h], dim=-1))
        return self.out(h).squeeze(-1)


class SetDecoder(nn.Module):
    """A permutation-equivariant DeepSets decoder from slots ``(B, slots, alphabet)`` to slot
    logits ``(B, slots, alphabet)``: ``h_i <- h_i + MLP(h_i, mean_j h_j)`` twice. Every slot
    holds the same code, so the strict arm decodes the same element in every slot; the relaxed
    arm's code is an ordering of the slots (a one-hot rank).
    """

    def __init__(
        self,
        slots: int = 3,
        alphabet: int = 8,
        breaking: str = "relaxed",
        hidden: int = 64,
        tie_break: str = "first",
    ) -> None:
        super().__init__()
        self.slots = check_positive_int("slots", slots)
        self.alphabet = check_positive_int("alphabet", alphabet)
        hidden = check_positive_int("hidden", hidden)
        breaker = OrderingBreaker(alphabet, code="rank", tie_break=tie_break)
        self.code = BreakingCode(breaking, breaker, slots)
        self.embed = _mlp(alphabet + self.code.width, hidden, hidden)
        self.mix = nn.ModuleList(_mlp(2 * hidden, hidden, hidden) for _ in range(2))
        self.out = nn.Linear(hidden, alphabet)

    def forward(self, slots: Tensor) -> Tensor:
        check_tensor("slots", slots)
        if slots.ndim != 3 or slots.shape[1:] != (self.slots, self.alphabet):
            raise ValueError(
                f"slots: expected (B, {self.slots}, {self.alphabet}), received {tuple(slots.shape)}"
            )
        h = self.embed(torch.cat([slots, self.code(slots, None, None)], dim=-1))
        for layer in self.mix:
            h = h + layer(torch.cat([h, h.mean(dim=1, keepdim=True).expand_as(h)], dim=-1))
        return self.out(h)
