"""A task: data splits, the actions of its symmetry group, a loss and a metric.

Strategies and metrics read everything task-specific from here, so they work on any task
without task-specific code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from equirelax._checks import batch_size, check_finite
from equirelax.actions import Action, TrivialAction
from equirelax.losses import Loss, mean_squared_error

__all__ = ["Split", "Task"]

Split = tuple[Any, Tensor]
"""``(inputs, targets)``: inputs a tensor or a tuple of tensors (the model is called as
``model(*inputs)``), both with the sample axis first."""


@dataclass
class Task:
    """Data + metric + actions.

    Attributes
    ----------
    name:
        Short name (used by the CLI).
    train, val, test:
        :data:`Split` s; ``test`` is optional.
    action_in, action_out:
        Actions of the task's group on model inputs and on targets (``None``: invariant).
    loss:
        Training loss ``(outputs, targets) -> scalar``; default mean squared error.
    metric:
        Evaluation metric, lower is better; default the loss.
    metric_name:
        How the metric is reported.
    test_splits:
        Further named test splits (e.g. ``{"domain": ...}`` for held-out simulations), each
        reported like ``test`` as ``test_<name>`` at the best validation epoch and
        ``test_<name>_final``.
    predict:
        How evaluation turns a model and a batch of a split's inputs into outputs shaped like
        that batch's targets: ``predict(model, inputs, targets) -> outputs`` (``targets`` only
        for their shape, e.g. a rollout horizon). ``None`` (default): ``model(*inputs)``.
        Training always calls the model once per batch.
    """

    name: str
    train: Split
    val: Split
    action_in: Action
    action_out: Action | None = None
    test: Split | None = None
    loss: Loss = mean_squared_error
    metric: Callable[[Tensor, Tensor], Tensor] | None = None
    metric_name: str = "mse"
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    test_splits: dict[str, Split] = field(default_factory=dict)
    predict: Callable[[Callable[..., Any], Any, Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.action_in, Action):
            raise TypeError(f"action_in: expected an Action, received {self.action_in!r}")
        if self.action_out is None:
            self.action_out = TrivialAction(self.action_in.group)
        if not isinstance(self.test_splits, dict) or not all(
            isinstance(k, str) and k.isidentifier() for k in self.test_splits
        ):
            raise TypeError(
                "test_splits: expected a dict of named splits (identifier names), received "
                f"{self.test_splits!r}"
            )
        named = {"train": self.train, "val": self.val, "test": self.test}
        named.update({f"test_splits[{k!r}]": v for k, v in self.test_splits.items()})
        for name, split in named.items():
            if split is not None:
                _check_split(name, split)
        if self.metric is None:
            self.metric = self.loss
        if self.predict is not None and not callable(self.predict):
            raise TypeError(f"predict: expected a callable or None, received {self.predict!r}")

    @classmethod
    def from_splits(cls, name: str, splits: dict[str, Split], **fields: Any) -> Task:
        """A task from ``{"train": ..., "val": ..., "test": ...}`` (``test`` optional) and the
        other fields."""
        return cls(
            name=name, train=splits["train"], val=splits["val"], test=splits.get("test"), **fields
        )


def _check_split(name: str, split: Any) -> None:
    """An ``(inputs, targets)`` pair with one target per input and only finite values."""
    if not isinstance(split, tuple) or len(split) != 2:
        raise TypeError(f"{name}: expected an (inputs, targets) pair, received {split!r}")
    inputs, targets = split
    if batch_size(inputs) != targets.shape[0]:
        raise ValueError(
            f"{name}: expected as many targets as inputs ({batch_size(inputs)}), "
            f"received {targets.shape[0]}"
        )
    parts = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    fields = {f"inputs[{i}]" if len(parts) > 1 else "inputs": p for i, p in enumerate(parts)}
    for field_name, values in {**fields, "targets": targets}.items():
        if isinstance(values, Tensor):
            check_finite(name, values, field_name)
