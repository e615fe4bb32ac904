"""Equivariant linear layer between two representations (EMLP, arXiv 2104.09459)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from equirelax._checks import check_dim, check_tensor
from equirelax.actions import RepresentationAction
from equirelax.commutant import EquivariantProjector
from equirelax.free_branches import DenseFreeBranch
from equirelax.representations import Representation

__all__ = ["EquivariantLinear"]


class EquivariantLinear(nn.Module):
    """``y = W x + b`` with ``W`` in ``Hom_G(rho_in, rho_out)`` and ``b`` fixed by ``rho_out``.

    ``W = sum_n c_n Q_n`` over an orthonormal basis ``Q_n`` of the commutant (computed block by
    block from the null space of the stacked constraint matrix); only the coefficients ``c_n``
    are learned. Acts on the last axis of ``x`` of shape ``(..., d_in)``.

    Parameters
    ----------
    representation_in, representation_out:
        Representations of one group on the input and output features.
    bias:
        Learn an invariant bias (the equivariant maps from the trivial representation).

    Examples
    --------
    >>> from equirelax.groups import SO3
    >>> layer = EquivariantLinear(SO3().irreps("2x0e + 1x1o"), SO3().irreps("3x1o"))
    >>> layer(torch.randn(4, 5)).shape
    torch.Size([4, 9])
    """

    def __init__(
        self,
        representation_in: Representation,
        representation_out: Representation,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.representation_in = representation_in
        self.representation_out = representation_out
        self.action_in = RepresentationAction(representation_in)
        self.action_out = RepresentationAction(representation_out)
        self.in_features = representation_in.dim
        self.out_features = representation_out.dim
        self.projector = EquivariantProjector(representation_in, representation_out)
        self.weight_basis = _Expansion(self.projector, init_std=self.in_features**-0.5)
        self.bias_basis: _Expansion | None = None
        if bias:
            trivial = representation_out.group.trivial_representation()
            self.bias_basis = _Expansion(
                EquivariantProjector(trivial, representation_out), init_std=0.0
            )

    def weight(self) -> Tensor:
        """The equivariant weight ``(d_out, d_in)`` assembled from the coefficients."""
        return self.weight_basis()

    def bias(self) -> Tensor | None:
        """The invariant bias ``(d_out,)``, or ``None``."""
        return None if self.bias_basis is None else self.bias_basis()[:, 0]

    def free_branch(self) -> nn.Module:
        """A fresh free branch for this layer (used by :func:`~equirelax.relax`):
        a dense map of the same feature sizes."""
        return DenseFreeBranch((self.in_features,), (self.out_features,))

    def forward(self, x: Tensor) -> Tensor:
        check_tensor("x", x)
        check_dim("x", x, -1, self.in_features)
        return nn.functional.linear(x, self.weight(), self.bias())

    def extra_repr(self) -> str:
        return (
            f"{self.representation_in.key} -> {self.representation_out.key}, "
            f"parameters={self.projector.dimension}"
        )


class _Expansion(nn.Module):
    """``W = sum_n c_n Q_n`` over the block bases of a projector; learns only ``c``.

    The bases are non-persistent buffers, so they follow the module's device and dtype.
    """

    def __init__(self, projector: EquivariantProjector, init_std: float) -> None:
        super().__init__()
        self.shape = (projector.rep_out.dim, projector.rep_in.dim)
        self.slices = [(rows, cols) for rows, cols, *_ in projector.pieces]
        self.coefficients = nn.ParameterList()
        # Follows .to(dtype / device), so an expansion without coefficients still knows both.
        self.register_buffer("anchor", torch.zeros(0), persistent=False)
        for i, (_, _, m_out, m_in, basis) in enumerate(projector.pieces):
            n, d_out, d_in = basis.shape
            # Scale so that the entries of W have standard deviation init_std.
            std = init_std * math.sqrt(d_out * d_in / n)
            self.coefficients.append(nn.Parameter(torch.randn(m_out, m_in, n) * std))
            self.register_buffer(f"basis{i}", basis.to(torch.get_default_dtype()), persistent=False)

    def forward(self) -> Tensor:
        weight = self.anchor.new_zeros(self.shape)
        for i, ((rows, cols), coeff) in enumerate(zip(self.slices, self.coefficients, strict=True)):
            basis = getattr(self, f"basis{i}")
            block = torch.einsum("abn,nde->adbe", coeff, basis)
            weight[rows, cols] = block.reshape(weight[rows, cols].shape)
        return weight
