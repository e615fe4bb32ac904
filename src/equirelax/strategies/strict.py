"""The two ends of the line: ``Strict`` (level 0, exactly equivariant) and ``Free`` (level 1)."""

from __future__ import annotations

from typing import Any

from torch import nn

from equirelax.projection import project
from equirelax.strategies.base import Strategy

__all__ = ["Free", "Strict"]


class Strict(Strategy):
    """Train the exactly equivariant model: every relaxed layer is projected away (level 0).

    ``attach`` returns the projected copy (no free branch is computed, so a strict step costs
    what the equivariant model costs); a model without relaxed layers is trained as it is.
    """

    name = "strict"

    def attach(self, model: nn.Module, **context: Any) -> nn.Module:
        return super().attach(project(model), **context)


class Free(Strategy):
    """Every level fixed at 1 and no penalty: the relaxed model trained as an unconstrained one.

    Evaluated as trained (no projection). A model without relaxed layers (an unconstrained
    baseline) is trained as it is.
    """

    name = "free"
    fixed_level = 1.0
