"""Evaluation of a model during and after training: the validation record, the equivariance
error on validation inputs, and batched means of a task's loss or metric over a split."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from equirelax._batches import call, index
from equirelax._checks import batch_size
from equirelax.engine.config import NonFiniteLossError, TrainConfig
from equirelax.metrics import equivariance_error
from equirelax.outputs import TaskOutput, split_output
from equirelax.relaxed import relaxed_layers
from equirelax.strategies.base import Strategy
from equirelax.tasks.base import Split, Task

__all__ = [
    "evaluate",
    "split_means",
    "split_metric",
    "to_device",
    "validation_equivariance_error",
]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    strategy: Strategy,
    task: Task,
    config: TrainConfig,
    device: torch.device,
    *,
    precise: bool,
) -> tuple[dict[str, Any], nn.Module]:
    """The validation record of the model the strategy evaluates (``val``; ``val_loss``, the
    task loss, when the metric is another function; its ``equivariance_error`` and, when it is
    not the trained model, ``val_relaxed`` of the trained one), and that evaluated model.
    Raises :class:`NonFiniteLossError` when the validation metric or loss is not finite (weights
    a last step sent to infinity, which no training loss has seen yet)."""
    evaluated = strategy.evaluation_model(model)
    functions = [task.metric] if task.metric is task.loss else [task.metric, task.loss]
    values = split_means(
        evaluated, task.val, functions, config.eval_batch_size, device, predict=task.predict
    )
    if not all(math.isfinite(value) for value in values):
        raise NonFiniteLossError(
            f"val: non-finite validation metric {values[0]} (task loss {values[-1]}) of the "
            "evaluated model: its weights or levels are not finite"
        )
    record: dict[str, Any] = {"val": values[0]}
    if len(values) > 1:
        record["val_loss"] = values[1]
    if evaluated is not model and relaxed_layers(model):
        record["val_relaxed"] = split_metric(model, task, task.val, config, device)
    record["equivariance_error"] = validation_equivariance_error(
        evaluated, task, config, device, precise=precise
    )
    return record, evaluated


@torch.no_grad()
def validation_equivariance_error(
    model: nn.Module, task: Task, config: TrainConfig, device: torch.device, *, precise: bool
) -> float:
    """The mean relative equivariance error of ``model`` on the first
    ``equivariance_samples`` validation inputs (4 group elements each), in the model's dtype
    during training and in float64 (on CPU) for the ``precise`` check after the last epoch."""
    inputs, _ = to_device(task.val, device)
    sample = index(inputs, torch.arange(min(config.equivariance_samples, batch_size(inputs))))
    was_training = model.training
    model.eval()
    error = equivariance_error(
        TaskOutput(model),
        sample,
        task.action_in,
        task.action_out,
        num_samples=4,
        generator=torch.Generator().manual_seed(config.seed),
        dtype=torch.float64 if precise and device.type == "cpu" else None,
    )
    model.train(was_training)
    return error.mean


def split_metric(
    model: nn.Module, task: Task, split: Split, config: TrainConfig, device: Any
) -> float:
    """The task metric over a split, averaged over samples (evaluation mode, batched)."""
    assert task.metric is not None
    return split_means(
        model, split, [task.metric], config.eval_batch_size, device, predict=task.predict
    )[0]


@torch.no_grad()
def split_means(
    model: nn.Module,
    split: Split,
    functions: Sequence[Callable[[Tensor, Tensor], Tensor]],
    eval_batch_size: int = 1000,
    device: Any = None,
    *,
    predict: Callable[[Callable[..., Any], Any, Tensor], Tensor] | None = None,
) -> list[float]:
    """The sample-weighted mean over a split of each ``function(outputs, targets)`` (e.g. a
    task's loss and metric), in evaluation mode and batches of ``eval_batch_size``, on
    ``device`` (default: the device of the model's first parameter). The outputs are
    ``predict(model, inputs, targets)`` (a task's :attr:`~equirelax.tasks.base.Task.predict`,
    e.g. a rollout) or, by default, ``model(*inputs)``; a penalty the model returns beside its
    output is left out."""
    was_training = model.training
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    inputs, targets = to_device(split, torch.device(device))
    count, totals = batch_size(inputs), [0.0] * len(functions)
    for start in range(0, count, eval_batch_size):
        rows = torch.arange(start, min(start + eval_batch_size, count))
        batch, wanted = index(inputs, rows), targets[rows]
        if predict is None:
            outputs, _ = split_output(call(model, batch))
        else:
            outputs = predict(TaskOutput(model), batch, wanted)
        for i, function in enumerate(functions):
            totals[i] += float(function(outputs, wanted)) * rows.numel()
    model.train(was_training)
    return [total / count for total in totals]


def to_device(split: Split, device: torch.device) -> Split:
    """``(inputs, targets)`` on ``device`` (tuple inputs part by part)."""
    inputs, targets = split
    if isinstance(inputs, (tuple, list)):
        return tuple(part.to(device) for part in inputs), targets.to(device)
    return inputs.to(device), targets.to(device)
