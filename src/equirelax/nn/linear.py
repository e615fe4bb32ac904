"""Equivariant linear layer between two representations (EMLP, arXiv 2104.09459)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from equirelax._checks import check_choice, check_dim, check_tensor
from equirelax.actions import RepresentationAction
from equirelax.commutant import EquivariantProjector
from equirelax.free_branches import DenseFreeBranch
from equirelax.representations import Representation

__all__ = ["LINEAR_PARAMETRISATIONS", "EquivariantLinear"]

LINEAR_PARAMETRISATIONS = ("basis", "projected")
"""The parametrisations of :class:`EquivariantLinear`: coefficients of a basis of the
commutant, or the projection of a dense matrix (the official EMLP's)."""


class EquivariantLinear(nn.Module):
    """``y = W x + b`` with ``W`` in ``Hom_G(rho_in, rho_out)`` and ``b`` fixed by ``rho_out``.

    Acts on the last axis of ``x`` of shape ``(..., d_in)``. Two parametrisations of the same
    maps, which train differently under Adam:

    - ``"basis"`` (default): ``W = sum_n c_n Q_n`` over an orthonormal basis ``Q_n`` of the
      commutant (computed block by block from the null space of the stacked constraint matrix);
      only the coefficients ``c_n`` are learned, drawn so that the entries of ``W`` have
      standard deviation ``1 / sqrt(d_in)``; the bias starts at 0.
    - ``"projected"``: the official EMLP ``Linear`` (github.com/mfinzi/equivariant-MLP,
      ``emlp.nn.Linear``): ``W = P(W0)``, ``b = P(b0)`` with ``P`` the orthogonal projection onto
      the equivariant maps, and the dense ``W0`` (semi-orthogonal at initialisation) and ``b0``
      (uniform on ``[0, 1 / sqrt(d_out))``) the trained parameters, ``d_out (d_in + 1)`` of them.

    Parameters
    ----------
    representation_in, representation_out:
        Representations of one group on the input and output features.
    bias:
        Learn an invariant bias (the equivariant maps from the trivial representation).
    parametrisation:
        ``"basis"`` or ``"projected"`` (above).

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
        parametrisation: str = "basis",
    ) -> None:
        super().__init__()
        check_choice("parametrisation", parametrisation, LINEAR_PARAMETRISATIONS)
        self.parametrisation = parametrisation
        self.representation_in = representation_in
        self.representation_out = representation_out
        self.action_in = RepresentationAction(representation_in)
        self.action_out = RepresentationAction(representation_out)
        self.in_features = representation_in.dim
        self.out_features = representation_out.dim
        self.projector = EquivariantProjector(representation_in, representation_out)
        trivial = representation_out.group.trivial_representation()
        bias_projector = EquivariantProjector(trivial, representation_out) if bias else None
        self.weight_basis: _Expansion | None = None
        self.bias_basis: _Expansion | None = None
        self.weight_projection: _Projection | None = None
        self.bias_projection: _Projection | None = None
        if parametrisation == "basis":
            self.weight_basis = _Expansion(self.projector, init_std=self.in_features**-0.5)
            if bias_projector is not None:
                self.bias_basis = _Expansion(bias_projector, init_std=0.0)
        else:
            dense = torch.empty(self.out_features, self.in_features)
            self.weight_projection = _Projection(self.projector, nn.init.orthogonal_(dense))
            if bias_projector is not None:
                dense_bias = torch.rand(self.out_features, 1) / math.sqrt(self.out_features)
                self.bias_projection = _Projection(bias_projector, dense_bias)

    @property
    def weight_dense(self) -> nn.Parameter:
        """The trained dense matrix ``W0`` of ``parametrisation="projected"``."""
        if self.weight_projection is None:
            raise AttributeError(
                "weight_dense: only parametrisation='projected' has a dense matrix, "
                f"this layer's is {self.parametrisation!r}"
            )
        return self.weight_projection.dense

    @property
    def bias_dense(self) -> Tensor:
        """The trained dense bias ``b0`` ``(d_out,)`` of ``parametrisation="projected"``."""
        if self.bias_projection is None:
            raise AttributeError(
                "bias_dense: only a biased layer with parametrisation='projected' has one, "
                f"this layer's is {self.parametrisation!r} (bias={self.bias_basis is not None})"
            )
        return self.bias_projection.dense[:, 0]

    def dense_parameters(self) -> tuple[Tensor, Tensor | None]:
        """``(W0, b0)``: the trained dense matrix and bias with ``parametrisation="projected"``
        (before projection), the equivariant weight and bias written out densely with
        ``"basis"``; ``b0`` is ``None`` for a bias-free layer. RPP's official init copies them
        into the free branch (:class:`~equirelax.Relaxed`, ``init="relative"``)."""
        if self.weight_projection is not None:
            bias = None if self.bias_projection is None else self.bias_dense
            return self.weight_dense, bias
        return self.weight(), self.bias()

    def weight(self) -> Tensor:
        """The equivariant weight ``(d_out, d_in)``."""
        if self.weight_projection is not None:
            return self.weight_projection()
        assert self.weight_basis is not None
        return self.weight_basis()

    def bias(self) -> Tensor | None:
        """The invariant bias ``(d_out,)``, or ``None``."""
        expansion = self.bias_projection if self.bias_projection is not None else self.bias_basis
        return None if expansion is None else expansion()[:, 0]

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
            f"parameters={sum(p.numel() for p in self.parameters())}, "
            f"parametrisation={self.parametrisation}"
        )


class _BlockBases(nn.Module):
    """Holds a projector's block bases as non-persistent buffers, so that they follow the
    module's device and dtype."""

    def __init__(self, projector: EquivariantProjector) -> None:
        super().__init__()
        self.projector = projector
        for i, (*_, basis) in enumerate(projector.pieces):
            self.register_buffer(f"basis{i}", basis.to(torch.get_default_dtype()), persistent=False)

    def bases(self) -> list[Tensor]:
        """The block bases ``(n, d_out, d_in)``, in the projector's order."""
        return [getattr(self, f"basis{i}") for i in range(len(self.projector.pieces))]


class _Expansion(_BlockBases):
    """``W = sum_n c_n Q_n`` over the block bases of a projector; learns only ``c``."""

    def __init__(self, projector: EquivariantProjector, init_std: float) -> None:
        super().__init__(projector)
        self.shape = (projector.rep_out.dim, projector.rep_in.dim)
        self.coefficients = nn.ParameterList()
        # Follows .to(dtype / device), so an expansion without coefficients still knows both.
        self.register_buffer("anchor", torch.zeros(0), persistent=False)
        for _, _, m_out, m_in, basis in projector.pieces:
            n, d_out, d_in = basis.shape
            # Scale so that the entries of W have standard deviation init_std.
            std = init_std * math.sqrt(d_out * d_in / n)
            self.coefficients.append(nn.Parameter(torch.randn(m_out, m_in, n) * std))

    def forward(self) -> Tensor:
        weight = self.anchor.new_zeros(self.shape)
        pieces = zip(self.projector.pieces, self.coefficients, self.bases(), strict=True)
        for (rows, cols, *_), coeff, basis in pieces:
            block = torch.einsum("abn,nde->adbe", coeff, basis)
            weight[rows, cols] = block.reshape(weight[rows, cols].shape)
        return weight


class _Projection(_BlockBases):
    """``W = P(W0)``: the projection of a trained dense matrix ``W0`` (the official EMLP
    ``Linear``)."""

    def __init__(self, projector: EquivariantProjector, dense: Tensor) -> None:
        super().__init__(projector)
        self.dense = nn.Parameter(dense)

    def forward(self) -> Tensor:
        return self.projector.project_with(self.dense, self.bases())
