"""Linear representations rho: G -> GL(d) of the groups in :mod:`equirelax.groups`.

A :class:`Representation` maps a batch of group elements to a batch of ``(d, d)`` matrices and
knows the two facts that linear-algebraic constraints need: the images of the group's discrete
generators and the images ``d rho(A_k)`` of its Lie-algebra basis. Representations combine by
direct sum (``a + b``), multiplicity (``3 * a``), tensor product (``a.tensor(b)``) and dual
(``a.dual()``); a direct sum keeps its blocks so that equivariant maps between large
representations are built block by block (as in e3nn's ``Linear`` and EMLP).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from equirelax._checks import check_positive_int

if TYPE_CHECKING:
    from equirelax.groups import Group

__all__ = ["DirectSum", "Representation", "block_diagonal"]

MatrixFunction = Callable[[Tensor], Tensor]


class Representation:
    """A linear representation ``rho`` of ``group`` on ``R^dim``.

    Parameters
    ----------
    group:
        The group represented.
    dim:
        Dimension ``d`` of the representation space.
    matrices:
        Function mapping a batch of ``B`` group elements to a float64 tensor ``(B, d, d)``.
    lie_algebra:
        Function returning ``d rho(A_k)`` for the group's Lie-algebra basis, shape ``(k, d, d)``
        in float64 (``k = 0`` for finite groups). Defaults to ``(0, d, d)``.
    key:
        A string that identifies the representation; equal keys must mean equal
        representations (used to cache equivariant bases).

    Examples
    --------
    >>> from equirelax.groups import SO3
    >>> rep = SO3().irreps("2x0e + 1x1o")
    >>> rep.dim
    5
    """

    def __init__(
        self,
        group: Group,
        dim: int,
        matrices: MatrixFunction,
        *,
        lie_algebra: Callable[[], Tensor] | None = None,
        key: str,
    ) -> None:
        self.group = group
        self.dim = check_positive_int("dim", dim)
        self._matrices = matrices
        self._lie_algebra = lie_algebra
        self.key = key

    @property
    def blocks(self) -> tuple[tuple[int, Representation], ...]:
        """The direct-sum decomposition ``((multiplicity, representation), ...)``."""
        return ((1, self),)

    def __call__(self, g: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Return the matrices ``rho(g)`` with shape ``(B, d, d)``."""
        g = self.group.check(g, "g")
        out = self._matrices(g)
        return out if dtype is None else out.to(dtype)

    def is_trivial(self) -> bool:
        """Whether this is the one-dimensional trivial representation (its discrete generators
        act as 1 and its Lie algebra as 0), whatever its key."""
        if self.dim != 1:
            return False
        return bool(torch.all(self.discrete_generators() == 1.0)) and bool(
            torch.all(self.lie_algebra() == 0.0)
        )

    def discrete_generators(self) -> Tensor:
        """``rho(h)`` for each discrete generator ``h`` of the group, float64, ``(k, d, d)``."""
        gens = self.group.discrete_generators()
        if gens.shape[0] == 0:
            return torch.zeros(0, self.dim, self.dim, dtype=torch.float64)
        return self(gens, torch.float64)

    def lie_algebra(self) -> Tensor:
        """``d rho(A_k)`` for the group's Lie-algebra basis ``A_k``, float64, ``(k, d, d)``."""
        if self._lie_algebra is None:
            return torch.zeros(0, self.dim, self.dim, dtype=torch.float64)
        return self._lie_algebra()

    def __add__(self, other: Representation) -> Representation:
        return DirectSum([*self.blocks, *other.blocks])

    def __rmul__(self, multiplicity: int) -> Representation:
        check_positive_int("multiplicity", multiplicity)
        return DirectSum([(m * multiplicity, r) for m, r in self.blocks])

    def tensor(self, other: Representation) -> Representation:
        """Tensor product ``rho (x) sigma``: ``(rho (x) sigma)(g) = kron(rho(g), sigma(g))``,
        with ``d(rho (x) sigma)(A) = d rho(A) (x) I + I (x) d sigma(A)``."""
        _check_same_group(self, other)
        return Representation(
            self.group,
            self.dim * other.dim,
            functools.partial(_tensor_matrices, self, other),
            lie_algebra=functools.partial(_tensor_lie, self, other),
            key=f"({self.key})x({other.key})",
        )

    def dual(self) -> Representation:
        """Dual representation ``rho*(g) = rho(g^-1)^T``, with ``d rho*(A) = -d rho(A)^T``."""
        return Representation(
            self.group,
            self.dim,
            functools.partial(_dual_matrices, self),
            lie_algebra=functools.partial(_dual_lie, self),
            key=f"({self.key})*",
        )

    def orthogonality_error(self) -> float:
        """``max |rho(g) rho(g)^T - I|`` over 8 sampled elements (a fixed seed) and the discrete
        generators: 0 up to rounding for an orthogonal representation (computed once per
        representation)."""
        return _orthogonality_error(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Representation) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Representation({self.key}, dim={self.dim})"


class DirectSum(Representation):
    """Direct sum ``m_1 rho_1 + m_2 rho_2 + ...``; block ``i`` occupies ``m_i * dim(rho_i)`` rows.

    Within a block of multiplicity ``m`` the coordinates are ordered copy by copy:
    ``(copy_1[0..d), copy_2[0..d), ...)``, as in e3nn's ``Irreps``.
    """

    def __init__(self, blocks: list[tuple[int, Representation]]) -> None:
        if not blocks:
            raise ValueError("blocks: expected at least one (multiplicity, representation) pair")
        group = blocks[0][1].group
        merged: list[tuple[int, Representation]] = []
        for mult, rep in blocks:
            if rep.group != group:
                raise ValueError(
                    f"blocks: expected representations of one group {group}, received {rep.group}"
                )
            if merged and merged[-1][1] == rep:
                merged[-1] = (merged[-1][0] + mult, rep)
            else:
                merged.append((mult, rep))
        self._blocks = tuple(merged)
        key = " + ".join(f"{m}x[{r.key}]" for m, r in merged)
        super().__init__(group, sum(m * r.dim for m, r in merged), self._block_matrices, key=key)
        self._lie_algebra = self._block_lie

    @property
    def blocks(self) -> tuple[tuple[int, Representation], ...]:
        return self._blocks

    def _block_matrices(self, g: Tensor) -> Tensor:
        return block_diagonal([(m, r(g)) for m, r in self._blocks])

    def _block_lie(self) -> Tensor:
        algebras = [(m, r.lie_algebra()) for m, r in self._blocks]
        if algebras[0][1].shape[0] == 0:
            return torch.zeros(0, self.dim, self.dim, dtype=torch.float64)
        return block_diagonal(algebras)


def block_diagonal(blocks: list[tuple[int, Tensor]]) -> Tensor:
    """Batched block-diagonal matrix of ``multiplicity`` copies of each ``(B, d, d)`` block."""
    batch = blocks[0][1].shape[0]
    dim = sum(m * mats.shape[-1] for m, mats in blocks)
    ref = blocks[0][1]
    out = torch.zeros(batch, dim, dim, dtype=ref.dtype, device=ref.device)
    offset = 0
    for mult, mats in blocks:
        d = mats.shape[-1]
        eye = torch.eye(mult, dtype=mats.dtype, device=mats.device)
        size = mult * d
        out[:, offset : offset + size, offset : offset + size] = torch.einsum(
            "ij,bkl->bikjl", eye, mats
        ).reshape(batch, size, size)
        offset += size
    return out


# Matrix functions of derived representations are module-level (bound with
# functools.partial), not closures, so that models holding them can be pickled.


def _tensor_matrices(a: Representation, b: Representation, g: Tensor) -> Tensor:
    d = a.dim * b.dim
    return torch.einsum("bij,bkl->bikjl", a(g), b(g)).reshape(-1, d, d)


def _tensor_lie(a: Representation, b: Representation) -> Tensor:
    d = a.dim * b.dim
    eye_a = torch.eye(a.dim, dtype=torch.float64)
    eye_b = torch.eye(b.dim, dtype=torch.float64)
    left = torch.einsum("kij,lm->kiljm", a.lie_algebra(), eye_b).reshape(-1, d, d)
    return left + torch.einsum("ij,klm->kiljm", eye_a, b.lie_algebra()).reshape(-1, d, d)


def _dual_matrices(rep: Representation, g: Tensor) -> Tensor:
    return rep(rep.group.inverse(g)).transpose(-1, -2)


def _dual_lie(rep: Representation) -> Tensor:
    return -rep.lie_algebra().transpose(-1, -2)


@functools.lru_cache(maxsize=256)
def _orthogonality_error(rep: Representation) -> float:
    g = rep.group.sample(8, torch.Generator().manual_seed(0), dtype=torch.float64)
    matrices = torch.cat([rep(g), rep.discrete_generators()])
    eye = torch.eye(rep.dim, dtype=torch.float64)
    return float((matrices @ matrices.transpose(-1, -2) - eye).abs().max())


def _check_same_group(a: Representation, b: Representation) -> None:
    if a.group != b.group:
        raise ValueError(
            f"other: expected a representation of {a.group}, received one of {b.group}"
        )
