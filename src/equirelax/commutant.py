"""Equivariant linear maps between two representations (the commutant ``Hom_G(rho_in, rho_out)``).

A weight ``W`` is equivariant when ``rho_out(g) W = W rho_in(g)`` for all ``g``. It suffices to
impose this for the discrete generators ``h`` and the Lie-algebra basis ``A_k``
(``d rho_out(A) W = W d rho_in(A)``). With row-major ``vec``, each constraint is linear in
``vec(W)``: ``(rho_out(h) (x) I - I (x) rho_in(h)^T) vec(W) = 0``; the equivariant weights are the
null space of the stacked constraint matrix (Finzi, Welling, Wilson 2021, EMLP,
arXiv 2104.09459). The null space is computed once per pair of irreducible blocks by an SVD in
float64 and cached; direct sums are handled block by block, so a representation with large
multiplicities never forms a large constraint matrix.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from equirelax._checks import check_tensor
from equirelax.representations import Representation

__all__ = ["EquivariantProjector", "equivariant_basis", "intertwiner_basis"]

_NULL_TOLERANCE = 1e-8


@functools.lru_cache(maxsize=512)
def equivariant_basis(rep_in: Representation, rep_out: Representation) -> Tensor:
    """An orthonormal basis ``(n, d_out, d_in)`` (Frobenius inner product, float64) of the
    equivariant maps between two *atomic* representations (blocks of a direct sum).

    Cached per pair of representation keys. For direct sums use :class:`EquivariantProjector`,
    which combines the block bases.
    """
    if rep_in.group != rep_out.group:
        raise ValueError(
            f"rep_out: expected a representation of {rep_in.group} like rep_in, "
            f"received one of {rep_out.group}"
        )
    return intertwiner_basis(
        (rep_out.discrete_generators(), rep_in.discrete_generators()),
        (rep_out.lie_algebra(), rep_in.lie_algebra()),
    )


def intertwiner_basis(*pairs: tuple[Tensor, Tensor]) -> Tensor:
    """Orthonormal basis ``(n, d_out, d_in)`` of ``{W : M_out W = W M_in}`` for every pair
    ``(M_out (k, d_out, d_out), M_in (k, d_in, d_in))`` of stacked generator matrices.

    The null space of the stacked constraint matrix, by an SVD in float64.
    """
    d_out, d_in = pairs[0][0].shape[-1], pairs[0][1].shape[-1]
    eye_in = torch.eye(d_in, dtype=torch.float64)
    eye_out = torch.eye(d_out, dtype=torch.float64)
    rows = [
        torch.einsum("kab,cd->kacbd", out_m, eye_in) - torch.einsum("ab,kdc->kacbd", eye_out, in_m)
        for out_m, in_m in pairs
        if out_m.shape[0]
    ]
    if not rows:
        return torch.eye(d_out * d_in, dtype=torch.float64).reshape(-1, d_out, d_in)
    constraints = torch.cat([r.reshape(-1, d_out * d_in) for r in rows])
    # a tall constraint matrix (the usual case) has its whole null space in the reduced SVD
    wide = constraints.shape[0] < constraints.shape[1]
    _, sing, vh = torch.linalg.svd(constraints, full_matrices=wide)
    rank = int((sing > _NULL_TOLERANCE * max(1.0, float(sing.max()))).sum())
    return vh[rank:].reshape(-1, d_out, d_in).contiguous()


class EquivariantProjector:
    """Orthogonal projection of weights onto ``Hom_G(rho_in, rho_out)``.

    ``P(W) = sum_n <Q_n, W> Q_n`` block by block, with ``Q_n`` the orthonormal basis of
    :func:`equivariant_basis`. ``P`` is idempotent and ``rho_out(g) P(W) = P(W) rho_in(g)``.

    Examples
    --------
    >>> from equirelax.groups import SO3
    >>> proj = EquivariantProjector(SO3().irreps("1x1o"), SO3().irreps("1x1o"))
    >>> proj.dimension  # multiples of the identity
    1
    """

    def __init__(self, rep_in: Representation, rep_out: Representation) -> None:
        self.rep_in = rep_in
        self.rep_out = rep_out
        self.pieces: list[tuple[slice, slice, int, int, Tensor]] = []
        row = 0
        for m_out, r_out in rep_out.blocks:
            col = 0
            for m_in, r_in in rep_in.blocks:
                basis = equivariant_basis(r_in, r_out)
                rows = slice(row, row + m_out * r_out.dim)
                cols = slice(col, col + m_in * r_in.dim)
                if basis.shape[0]:
                    self.pieces.append((rows, cols, m_out, m_in, basis))
                col += m_in * r_in.dim
            row += m_out * r_out.dim

    @property
    def dimension(self) -> int:
        """Dimension of the space of equivariant weights."""
        return sum(m_out * m_in * basis.shape[0] for _, _, m_out, m_in, basis in self.pieces)

    def __call__(self, weight: Tensor) -> Tensor:
        """Project ``weight`` of shape ``(..., d_out, d_in)`` onto the equivariant subspace."""
        weight = self._check(weight)
        return self.project_with(weight, [basis.to(weight) for *_, basis in self.pieces])

    def project_with(self, weight: Tensor, bases: Sequence[Tensor]) -> Tensor:
        """``P(weight)`` with the pieces' bases given, already on ``weight``'s device and dtype
        (e.g. a module's buffers, so that a forward pass does not copy them); unchecked."""
        out = torch.zeros_like(weight)
        for (rows, cols, m_out, m_in, _), q in zip(self.pieces, bases, strict=True):
            d_out, d_in = q.shape[1:]
            block = weight[..., rows, cols].reshape(*weight.shape[:-2], m_out, d_out, m_in, d_in)
            coeff = torch.einsum("...adbe,nde->...abn", block, q)
            out[..., rows, cols] = torch.einsum("...abn,nde->...adbe", coeff, q).reshape(
                *weight.shape[:-2], m_out * d_out, m_in * d_in
            )
        return out

    def distance(self, weight: Tensor, relative: bool = False) -> Tensor:
        """Frobenius distance ``||W - P(W)||`` of ``weight`` from the equivariant subspace
        (divided by ``||W||`` when ``relative``)."""
        weight = self._check(weight)
        dist = torch.linalg.matrix_norm(weight - self(weight))
        return dist / torch.linalg.matrix_norm(weight).clamp_min(1e-30) if relative else dist

    def matrix(self) -> Tensor:
        """The projector as a ``(d_out d_in, d_out d_in)`` matrix acting on row-major
        ``vec(W)`` (formed explicitly: meant for small representations)."""
        n = self.rep_out.dim * self.rep_in.dim
        unit = torch.eye(n, dtype=torch.float64).reshape(n, self.rep_out.dim, self.rep_in.dim)
        return self(unit).reshape(n, n).T

    def _check(self, weight: Tensor) -> Tensor:
        check_tensor("weight", weight)
        expected = (self.rep_out.dim, self.rep_in.dim)
        if weight.ndim < 2 or tuple(weight.shape[-2:]) != expected:
            raise ValueError(
                f"weight: expected shape (..., {expected[0]}, {expected[1]}) for a map "
                f"{self.rep_in.key} -> {self.rep_out.key}, received {tuple(weight.shape)}"
            )
        return weight
