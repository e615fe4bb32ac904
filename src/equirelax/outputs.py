"""What a model may return besides its prediction.

A model that adds its own term to the training objective (a relaxed group convolution network
with its weight regulariser, a canonicalized model with its prior) returns a
:class:`PenalizedOutput`; the engine adds ``penalty`` to the task loss, and evaluation, metrics
and equivariance checks see ``output`` only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor

__all__ = ["PenalizedOutput"]


class PenalizedOutput(NamedTuple):
    """A model's prediction ``output`` and a scalar ``penalty`` to add to its training loss.

    The training objective is ``loss(output, targets) + penalty``.
    """

    output: Any
    penalty: Tensor
