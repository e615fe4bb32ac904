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

__all__ = ["EquivariantBilinear", "FeatureBilinear", "outer_representation"]


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


class FeatureBilinear(nn.Module):
    r"""``y = 0.1 W(x) x``: the official EMLP ``BiLinear``, a matrix filled from the features.

    For each pair of blocks ``(m_o, r_o) <- (m_i, r_i)`` of ``rho`` the block ``W_oi(x)`` of the
    ``(d, d)`` matrix is a learned combination of ``n`` copies of the features' own blocks of the
    type of ``Hom(r_i, r_o) = r_o (x) r_i`` (for orthogonal ``rho``)::

        W_oi(x)[j, i] = sum_k theta_oi[j, i, k] x_(c_k),     n = min(copies of the type, its dim)

    (``j``, ``i`` the copies of ``r_o`` and ``r_i``; a scalar factor drops out of the type). A
    copy of ``r_o (x) r_i`` transforms as ``rho_o(g) W rho_i(g)^T``, so ``W(g x) x'`` moves like
    ``rho(g)`` when ``rho`` is orthogonal, which is checked. Pairs whose type the features lack,
    and scalar-to-scalar pairs (as the official, which leaves scalars out of the types), stay
    zero. ``theta ~ N(0, 1)`` (the official init) and the chosen copies ``c_k`` are drawn from
    torch's random state at construction; the official draws them with replacement, here
    without. From ``emlp.nn.BiLinear`` and ``bilinear_weights`` of
    github.com/mfinzi/equivariant-MLP (Finzi, Welling, Wilson 2021, arXiv 2104.09459).

    Parameters
    ----------
    representation:
        The orthogonal representation ``rho`` of the input and the output features.

    Examples
    --------
    >>> import torch
    >>> from equirelax.groups import O3
    >>> V, T0 = O3().standard_representation(), O3().trivial_representation()
    >>> layer = FeatureBilinear(4 * T0 + 2 * V + V.tensor(V))
    >>> layer(torch.randn(5, 19)).shape
    torch.Size([5, 19])
    """

    scale = 0.1  # the official output factor

    def __init__(self, representation: Representation) -> None:
        super().__init__()
        if not isinstance(representation, Representation):
            raise TypeError(
                f"representation: expected a Representation, received {representation!r}"
            )
        _check_orthogonal(representation)
        self.representation_in = self.representation_out = representation
        self.action_in = self.action_out = RepresentationAction(representation)
        self.in_features = self.out_features = representation.dim
        spans, copies, offset = [], {}, 0
        for mult, rep in representation.blocks:
            spans.append((offset, mult, rep))
            if not rep.is_trivial():
                copies.setdefault(rep.key, []).extend(offset + c * rep.dim for c in range(mult))
            offset += mult * rep.dim
        self._spans = spans
        self._pairs: list[tuple[int, int, str]] = []  # (output block, input block, buffer)
        self.theta = nn.ParameterList()
        buffers: dict[str, str] = {}  # type key -> the buffer of its chosen copies' indices
        for o, (_, m_o, r_o) in enumerate(spans):
            for i, (_, m_i, r_i) in enumerate(spans):
                key = _hom_type(r_o, r_i)
                if key not in copies:
                    continue
                if key not in buffers:
                    starts = torch.tensor(copies[key])
                    pick = torch.randperm(len(starts))[: min(len(starts), r_o.dim * r_i.dim)]
                    buffers[key] = f"copies_{len(buffers)}"
                    indices = starts[pick, None] + torch.arange(r_o.dim * r_i.dim)
                    self.register_buffer(buffers[key], indices)
                count = getattr(self, buffers[key]).shape[0]
                self._pairs.append((o, i, buffers[key]))
                self.theta.append(nn.Parameter(torch.randn(m_o, m_i, count)))

    def forward(self, x: Tensor) -> Tensor:
        check_tensor("x", x)
        check_dim("x", x, -1, self.in_features)
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        blocks = [
            flat[:, start : start + m * r.dim].reshape(-1, m, r.dim) for start, m, r in self._spans
        ]
        out = [torch.zeros_like(block) for block in blocks]
        for (o, i, buffer), theta in zip(self._pairs, self.theta, strict=True):
            copies = getattr(self, buffer)
            d_o, d_i = self._spans[o][2].dim, self._spans[i][2].dim
            features = flat[:, copies].reshape(-1, copies.shape[0], d_o, d_i)
            out[o] = out[o] + torch.einsum("jik,bkoq,biq->bjo", theta, features, blocks[i])
        return self.scale * torch.cat([y.flatten(1) for y in out], dim=1).reshape(*lead, -1)

    def extra_repr(self) -> str:
        return f"{self.representation_in.key}, {len(self._pairs)} block pairs"


def _hom_type(out: Representation, into: Representation) -> str:
    """The key of ``Hom(into, out) = out (x) into`` for orthogonal representations, with a
    trivial factor dropped (the type a copy of the features must have to fill that block)."""
    if into.is_trivial():
        return out.key
    if out.is_trivial():
        return into.key
    return out.tensor(into).key


def _check_orthogonal(representation: Representation) -> None:
    """Raise unless ``rho(g)`` is orthogonal on sampled elements and the discrete generators
    (``W(x)``'s blocks transform as ``rho_o W rho_i^T``, which is equivariant only then)."""
    error = representation.orthogonality_error()
    if error > 1e-8:
        raise ValueError(
            f"representation: expected an orthogonal representation (rho(g) rho(g)^T = I), "
            f"received {representation.key} with a deviation of {error:.2e}"
        )
