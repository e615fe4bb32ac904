"""Data cration (placeholder until implemented)."""

from __future__ import annotations

from equirelax.strategies.base import Strategy

__all__ = ["CR"]


class CR(Strategy):
    """Not implemented yet."""

    name = "cr"

    def __init__(self) -> None:
        raise NotImplementedError("CR is being implemented")
