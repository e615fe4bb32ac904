"""Equivariant nonlinearities for features in orthogonal representations.

Norm nonlinearity: ``v -> v * sigma(||v|| + b) / ||v||`` per copy of each block (the norm of a
copy is invariant when the representation is orthogonal). Gated nonlinearity (Weiler et al.
2018, 3D Steerable CNNs, arXiv 1807.02547): scalars go through ``sigma``, and each non-scalar
copy ``v_i`` is multiplied by ``sigmoid(gate_i)`` of its own invariant gate scalar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from equirelax._checks import check_dim, check_positive_int, check_tensor
from equirelax.actions import RepresentationAction
from equirelax.free_branches import GatedResidualFreeBranch
from equirelax.representations import Representation

__all__ = ["GatedNonlinearity", "NormNonlinearity"]

Activation = Callable[[Tensor], Tensor]


class NormNonlinearity(nn.Module):
    """``v_c -> v_c * sigma(||v_c|| + b_c) / ||v_c||`` for each copy ``c`` of each block.

    Equivariant for orthogonal representations (rotations, permutations, e3nn irreps).
    The norm is smoothed as ``sqrt(||v||^2 + eps^2)`` so the map is differentiable at 0.
    """

    def __init__(
        self,
        representation: Representation,
        activation: Activation = torch.relu,
        bias: bool = True,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.representation_in = self.representation_out = representation
        self.action_in = self.action_out = RepresentationAction(representation)
        self.activation = activation
        self.eps = eps
        copies = sum(m for m, _ in representation.blocks)
        self.bias = nn.Parameter(torch.zeros(copies)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        check_tensor("x", x)
        check_dim("x", x, -1, self.representation_in.dim)
        parts, offset, copy = [], 0, 0
        for mult, rep in self.representation_in.blocks:
            v = x[..., offset : offset + mult * rep.dim].unflatten(-1, (mult, rep.dim))
            norm = torch.sqrt(v.pow(2).sum(-1) + self.eps**2)
            shifted = norm if self.bias is None else norm + self.bias[copy : copy + mult]
            parts.append((v * (self.activation(shifted) / norm).unsqueeze(-1)).flatten(-2))
            offset += mult * rep.dim
            copy += mult
        return torch.cat(parts, dim=-1)


class GatedNonlinearity(nn.Module):
    """Gated nonlinearity: input ``[scalars (s), gates (k), gated (rep)]``, output
    ``[sigma(s), sigmoid(gate_i) * v_i]`` where ``v_i`` is the ``i``-th copy of the gated
    representation (``k`` = number of copies). Relaxed (:func:`~equirelax.relax`), a gate
    gets RPP's residual pathway ``w * swish(x)`` (:meth:`free_branch`).

    Parameters
    ----------
    scalars:
        Number of invariant scalar features passed through ``scalar_activation``.
    gated:
        Representation of the gated features.
    """

    relaxation_placements: ClassVar[tuple[str, ...]] = ("linear", "all")
    """The placements of :func:`~equirelax.relax` that relax a gate of a model declaring no
    sites: RPP's (its residual pathway), not ``"hidden"``."""

    def __init__(
        self,
        scalars: int,
        gated: Representation,
        scalar_activation: Activation = nn.functional.silu,
        gate_activation: Activation = torch.sigmoid,
    ) -> None:
        super().__init__()
        self.scalars = check_positive_int("scalars", scalars) if scalars else 0
        self.gated = gated
        self.gates = sum(m for m, _ in gated.blocks)
        trivial = gated.group.trivial_representation()
        invariant_in = self.scalars + self.gates
        self.representation_in = invariant_in * trivial + gated
        self.representation_out = self.scalars * trivial + gated if self.scalars else gated
        self.action_in = RepresentationAction(self.representation_in)
        self.action_out = RepresentationAction(self.representation_out)
        self.scalar_activation = scalar_activation
        self.gate_activation = gate_activation

    def forward(self, x: Tensor) -> Tensor:
        check_tensor("x", x)
        check_dim("x", x, -1, self.representation_in.dim)
        scalars = self.scalar_activation(x[..., : self.scalars])
        gates = self.gate_activation(x[..., self.scalars : self.scalars + self.gates])
        parts, offset, copy = [scalars], self.scalars + self.gates, 0
        for mult, rep in self.gated.blocks:
            v = x[..., offset : offset + mult * rep.dim].unflatten(-1, (mult, rep.dim))
            parts.append((v * gates[..., copy : copy + mult].unsqueeze(-1)).flatten(-2))
            offset += mult * rep.dim
            copy += mult
        return torch.cat(parts, dim=-1)

    def free_branch(self) -> nn.Module:
        """A fresh free branch for this gate (used by :func:`~equirelax.relax`): RPP's
        residual pathway ``w * swish(x_ungated)``
        (:class:`~equirelax.free_branches.GatedResidualFreeBranch`)."""
        return GatedResidualFreeBranch(self.scalars, self.gates, self.representation_out.dim)
