"""Wigner D-matrices of SO(3) as polynomials in the rotation matrix.

``D_l(R) = (2l + 1) Q_l R^{(x) l} Q_l^T`` where ``Q_l`` (``(2l+1, 3^l)``, unit Frobenius norm)
intertwines the ``l``-th tensor power of the vector representation with e3nn's real irrep
``l`` (defined by ``e3nn.o3.so3_generators(l)``); by Schur's lemma
``Q_l Q_l^T = I / (2l + 1)``. Unlike a route through Euler angles, this is accurate to float64
round-off for every rotation, including those near gimbal lock.
"""

from __future__ import annotations

import functools

import torch
from e3nn import o3
from torch import Tensor

from equirelax.commutant import intertwiner_basis

MAX_DEGREE = 4  # 3^l grows fast: beyond this, e3nn's Euler-angle route is used


@functools.lru_cache(maxsize=16)
def irrep_generators(l: int) -> Tensor:  # noqa: E741 (l is the degree)
    """e3nn's Lie-algebra basis ``(3, 2l+1, 2l+1)`` of irrep ``l``, built in float64 (e3nn
    builds it in the default dtype, which loses 1e-7 in float32)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return o3.so3_generators(l)
    finally:
        torch.set_default_dtype(previous)


@functools.lru_cache(maxsize=16)
def _embedding(l: int) -> Tensor:  # noqa: E741 (l is the degree)
    vector = irrep_generators(1)
    power = vector
    for _ in range(l - 1):
        eye_p = torch.eye(power.shape[-1], dtype=torch.float64)
        eye_v = torch.eye(3, dtype=torch.float64)
        d = power.shape[-1] * 3
        power = torch.einsum("kij,lm->kiljm", power, eye_v).reshape(3, d, d) + torch.einsum(
            "ij,klm->kiljm", eye_p, vector
        ).reshape(3, d, d)
    basis = intertwiner_basis((irrep_generators(l), power))
    if basis.shape[0] != 1:
        raise RuntimeError(f"irrep {l} occurs {basis.shape[0]} times in the top tensor power")
    return basis[0]


def wigner_d(l: int, rotation: Tensor) -> Tensor:  # noqa: E741 (l is the degree)
    """``D_l(R)`` for proper rotations ``(B, 3, 3)``, in float64, shape ``(B, 2l+1, 2l+1)``."""
    rotation = rotation.to(torch.float64)
    batch = rotation.shape[0]
    if l == 0:
        return torch.ones(batch, 1, 1, dtype=torch.float64, device=rotation.device)
    if l > MAX_DEGREE:
        return o3.Irrep(l, 1).D_from_matrix(rotation)
    q = _embedding(l).to(rotation.device).reshape(2 * l + 1, *([3] * l))
    moved = q.unsqueeze(0).expand(batch, *q.shape)
    for axis in range(l):  # apply R to each tensor factor: O(B 3^(l+1) (2l+1)), no kron
        moved = torch.einsum("bij,bmj...->bmi...", rotation, moved.movedim(axis + 2, 2))
        moved = moved.movedim(2, axis + 2)
    return (2 * l + 1) * torch.einsum("n...,bm...->bnm", q, moved)
