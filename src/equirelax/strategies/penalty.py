"""Equivariance penalty (placeholder until implemented)."""

from __future__ import annotations

from equirelax.strategies.base import Strategy

__all__ = ["EquivariancePenalty"]


class EquivariancePenalty(Strategy):
    """Not implemented yet."""

    name = "penalty"

    def __init__(self) -> None:
        raise NotImplementedError("EquivariancePenalty is being implemented")
