"""Data aceation (placeholder until implemented)."""

from __future__ import annotations

from equirelax.strategies.base import Strategy

__all__ = ["ACE"]


class ACE(Strategy):
    """Not implemented yet."""

    name = "ace"

    def __init__(self) -> None:
        raise NotImplementedError("ACE is being implemented")
