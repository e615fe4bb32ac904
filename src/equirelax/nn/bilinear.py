"""A learned equivariant bilinear map in low-rank form (the EMLP "BiLinear" layer).

EMLP (Finzi, Welling, Wilson 2021, arXiv 2104.09459) adds a bilinear term to each layer because
equivariant linear maps and gated nonlinearities alone cannot form the invariants ``|v|^2`` or
the tensors ``v v^T`` of vector features. Here the bilinear map is factored through a small
*rank* representation ``rho_mid``::

    p = L_a(x),  q = L_b(x)       L_a, L_b: rho_in -> rho_mid                (equivariant, linear)
    y = L_c( p (x) q )            L_c: (rho_mid (x) rho_mid) -> rho_out       (equivariant, linear)

The outer product is formed block pair by block pair: for blocks ``(m_i, r_i)`` of ``p`` and
``(n_j, s_j)`` of ``q`` the outer product of the ``(m_i, d_i)`` and ``(n_j, d_j)`` copies gives
``m_i n_j`` copies of the atomic representation ``r_i (x) s_j``. These are concatenated into a
:class:`~equirelax.representations.DirectSum`, so that the commutant of ``L_c`` is built from
small per-block bases and never from the (large) tensor product of whole representations. Since
``p (x) q`` transforms by ``rho_mid(g) (x) rho_mid(g)`` whenever ``p`` and ``q`` transform by
``rho_mid(g)``, the composite is equivariant.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from equirelax._checks import check_dim, check_tensor
from equirelax.actions import RepresentationAction
from equirelax.nn.linear import EquivariantLinear
from equirelax.representations import DirectSum, Representation

__all__ = ["EquivariantBilinear", "outer_representation"]


def outer_representation(left: Representation, right: Representation) -> Representation:
    """The representation of the block-pair outer product of features in ``left`` and ``right``:
    ``sum_{i, j} (m_i n_j) r_i (x) s_j`` in the order of :class:`EquivariantBilinear`."""
    return DirectSum(
        [(m * n, r.tensor(s)) for m, r in left.blocks for n, s in right.blocks],
    )


class EquivariantBilinear(nn.Module):
    """``y = L_c( L_a(x) (x) L_b(x) )``: an equivariant bilinear map of rank ``rho_mid``.

    ``L_a, L_b: rho_in -> rho_mid`` and ``L_c: (rho_mid (x) rho_mid) -> rho_out`` are
    :class:`~equirelax.nn.EquivariantLinear` layers; the tensor product is taken block pair by
    block pair (see the module docstring), so its cost is that of the atomic blocks of
    ``rho_mid``. Keep those small (scalars and vectors): the basis of ``L_c`` is computed from
    constraint matrices of size ``(d_i d_j d_out)^2`` per pair of atomic blocks.

    Without biases the map is homogeneous of degree 2: ``y(t x) = t^2 y(x)``. With biases
    (the default) ``p`` and ``q`` carry invariant offsets, which adds linear and constant terms.
    :func:`equirelax.relax` relaxes the three linear maps (a dense free branch each).

    Parameters
    ----------
    representation_in, representation_out:
        Representations of one group on the input and output features.
    representation_mid:
        The rank representation ``rho_mid`` of ``p`` and ``q``.
    bias:
        Learn invariant biases in ``L_a``, ``L_b`` and ``L_c``.

    Examples
    --------
    >>> import torch
    >>> from equirelax.groups import O3
    >>> V, T0 = O3().standard_representation(), O3().trivial_representation()
    >>> layer = EquivariantBilinear(2 * V, T0 + V.tensor(V), 4 * T0 + 4 * V)
    >>> layer(torch.randn(5, 6)).shape
    torch.Size([5, 10])
    """

    def __init__(
        self,
        representation_in: Representation,
        representation_out: Representation,
        representation_mid: Representation,
        bias: bool = True,
    ) -> None:
        super().__init__()
        for name, rep in (
            ("representation_in", representation_in),
            ("representation_out", representation_out),
            ("representation_mid", representation_mid),
        ):
            if not isinstance(rep, Representation):
                raise TypeError(f"{name}: expected a Representation, received {rep!r}")
            if rep.group != representation_in.group:
                raise ValueError(
                    f"{name}: expected a representation of {representation_in.group} like "
                    f"representation_in, received one of {rep.group}"
                )
        self.representation_in = representation_in
        self.representation_out = representation_out
        self.representation_mid = representation_mid
        self.representation_outer = outer_representation(representation_mid, representation_mid)
        self.action_in = RepresentationAction(representation_in)
        self.action_out = RepresentationAction(representation_out)
        self.in_features = representation_in.dim
        self.out_features = representation_out.dim
        self.left = EquivariantLinear(representation_in, representation_mid, bias=bias)
        self.right = EquivariantLinear(representation_in, representation_mid, bias=bias)
        self.out = EquivariantLinear(self.representation_outer, representation_out, bias=bias)
        # Positions of the block-pair outer product in the full outer product p q^T (flattened
        # row-major), so that one batched matrix product and one gather form it.
        self.register_buffer("outer_index", _block_pair_index(representation_mid), persistent=False)

    def outer(self, p: Tensor, q: Tensor) -> Tensor:
        """The block-pair outer product ``(..., d_outer)`` of ``p, q`` of shape ``(..., d_mid)``."""
        full = torch.matmul(p.unsqueeze(-1), q.unsqueeze(-2)).flatten(-2)
        return full.index_select(-1, self.outer_index)

    def forward(self, x: Tensor) -> Tensor:
        check_tensor("x", x)
        check_dim("x", x, -1, self.in_features)
        return self.out(self.outer(self.left(x), self.right(x)))

    def extra_repr(self) -> str:
        return (
            f"{self.representation_in.key} -> {self.representation_out.key}, "
            f"mid={self.representation_mid.key}"
        )


def _block_pair_index(mid: Representation) -> Tensor:
    """Indices into the row-major ``vec(p q^T)`` of the block-pair outer product: pairs
    ``(i, j)`` of blocks of ``mid`` in order, then copies ``(a, b)``, then entries ``(k, l)``."""
    full = torch.arange(mid.dim * mid.dim).reshape(mid.dim, mid.dim)
    spans, offset = [], 0
    for mult, rep in mid.blocks:
        spans.append((offset, mult, rep.dim))
        offset += mult * rep.dim
    pieces = [
        full[o1 : o1 + m1 * d1, o2 : o2 + m2 * d2]
        .reshape(m1, d1, m2, d2)
        .permute(0, 2, 1, 3)
        .reshape(-1)
        for o1, m1, d1 in spans
        for o2, m2, d2 in spans
    ]
    return torch.cat(pieces)
