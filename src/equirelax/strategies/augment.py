"""Data augmentation (placeholder until implemented)."""

from __future__ import annotations

from equirelax.strategies.base import Strategy

__all__ = ["Augment"]


class Augment(Strategy):
    """Not implemented yet."""

    name = "augment"

    def __init__(self) -> None:
        raise NotImplementedError("Augment is being implemented")
