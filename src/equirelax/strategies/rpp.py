"""Data rppation (placeholder until implemented)."""

from __future__ import annotations

from equirelax.strategies.base import Strategy

__all__ = ["RPP"]


class RPP(Strategy):
    """Not implemented yet."""

    name = "rpp"

    def __init__(self) -> None:
        raise NotImplementedError("RPP is being implemented")
