"""Input checks and edge features shared by the particle-system models."""

from __future__ import annotations

from torch import Tensor

from equirelax._checks import check_ndim, check_tensor

__all__ = ["check_particle_inputs", "squared_distances"]


def check_particle_inputs(
    positions: object, velocities: object, charges: object
) -> tuple[Tensor, Tensor, Tensor]:
    """Check ``positions (B, N, 3)``, ``velocities (B, N, 3)`` and ``charges (B, N, 1)``:
    tensors of one floating dtype with matching ``B`` and ``N``."""
    positions = check_ndim("positions", check_tensor("positions", positions), 3)
    if positions.shape[-1] != 3 or not positions.is_floating_point():
        raise ValueError(
            "positions: expected a floating-point (B, N, 3) tensor, received "
            f"shape {tuple(positions.shape)} and dtype {positions.dtype}"
        )
    batch, n, _ = positions.shape
    velocities = check_tensor("velocities", velocities)
    charges = check_tensor("charges", charges)
    for name, value, width in (("velocities", velocities, 3), ("charges", charges, 1)):
        if tuple(value.shape) != (batch, n, width) or value.dtype != positions.dtype:
            raise ValueError(
                f"{name}: expected shape ({batch}, {n}, {width}) and dtype {positions.dtype} "
                f"like positions, received shape {tuple(value.shape)} and dtype {value.dtype}"
            )
    return positions, velocities, charges


def squared_distances(positions: Tensor) -> Tensor:
    """``|x_i - x_j|^2`` for every pair: ``(B, N, N)``."""
    return (positions.unsqueeze(2) - positions.unsqueeze(1)).square().sum(-1)
