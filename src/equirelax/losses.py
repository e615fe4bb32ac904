"""Losses shared by tasks, strategies and measurements.

A loss maps ``(outputs, targets)`` of a batch to a scalar mean over the batch
(:data:`Loss`); :func:`per_sample_loss` evaluates one sample at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["Loss", "mean_squared_error", "per_sample_loss"]

Loss = Callable[[Tensor, Tensor], Tensor]
"""``loss(outputs, targets)``: a scalar, the mean over the batch."""


def mean_squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """``mean((outputs - targets)^2)`` with a shape check (no silent broadcasting)."""
    if outputs.shape != targets.shape:
        raise ValueError(
            f"outputs: expected the targets' shape {tuple(targets.shape)}, "
            f"received {tuple(outputs.shape)}"
        )
    return torch.mean((outputs - targets) ** 2)


def per_sample_loss(loss: Loss, outputs: Any, targets: Tensor) -> Tensor:
    """``loss`` of each sample separately, ``(B,)`` (``loss`` is a mean over its batch), by
    ``torch.func.vmap`` over the sample axis."""
    return torch.func.vmap(lambda o, t: loss(o.unsqueeze(0), t.unsqueeze(0)))(outputs, targets)
