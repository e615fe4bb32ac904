"""What a model may return besides its prediction.

A model that adds its own term to the training objective (a relaxed group convolution network
with its weight regulariser, a canonicalized model with its prior) returns a value with an
``output`` and a ``penalty`` (:class:`Penalized`; :class:`PenalizedOutput` is the plain one);
the engine adds ``penalty`` to the task loss, and evaluation, metrics and equivariance checks
see ``output`` only (:func:`split_output`, :class:`TaskOutput`). The engine knows this
protocol, not the model families that use it.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

from torch import Tensor, nn

__all__ = ["Penalized", "PenalizedOutput", "TaskOutput", "split_output"]


@runtime_checkable
class Penalized(Protocol):
    """A model's return value with a prediction ``output`` and a scalar ``penalty`` to add to
    its training loss (e.g. :class:`PenalizedOutput`,
    :class:`~equirelax.canonical.Canonicalization`)."""

    @property
    def output(self) -> Any: ...

    @property
    def penalty(self) -> Tensor: ...


class PenalizedOutput(NamedTuple):
    """A model's prediction ``output`` and a scalar ``penalty`` to add to its training loss.

    The training objective is ``loss(output, targets) + penalty``.
    """

    output: Any
    penalty: Tensor


def split_output(outputs: Any) -> tuple[Any, Tensor | None]:
    """``(output, penalty)`` of a model's return value: a :class:`Penalized` value gives its
    output and penalty, anything else is the output itself with no penalty."""
    if isinstance(outputs, Penalized):
        return outputs.output, outputs.penalty
    return outputs, None


class TaskOutput(nn.Module):
    """``model`` seen by a task's loss, metric and equivariance checks: the ``output`` of a
    :class:`Penalized` return value, any other return value as it is."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: Any) -> Any:
        return split_output(self.model(*inputs))[0]
