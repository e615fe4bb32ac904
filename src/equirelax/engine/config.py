"""The settings and the result of :func:`~equirelax.engine.train`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from equirelax._checks import (
    check_choice,
    check_device,
    check_non_negative,
    check_positive_finite,
    check_positive_int,
)
from equirelax._constants import MAX_EPOCHS, MAX_SEED
from equirelax.engine.logs import LOGGERS
from equirelax.strategies.base import Strategy

__all__ = [
    "LR_SCHEDULES",
    "MAX_EPOCHS",
    "MAX_SEED",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
]

LR_SCHEDULES = ("constant", "cosine", "exponential")
"""The learning-rate schedules of :class:`TrainConfig`."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names the epoch and step."""


@dataclass
class TrainConfig:
    """Hyperparameters of :func:`train` (all plain values, stored in checkpoints).

    ``lr_scale`` maps parameter-name prefixes to learning-rate multipliers, e.g.
    ``{"canonicalizer.": 10.0}`` trains a :class:`~equirelax.canonical.Canonicalized` model's
    canonicalizer 10 times faster than its predictor (the longest matching prefix wins; other
    parameters use ``lr``).

    ``lr_schedule`` is ``"constant"``, ``"cosine"`` (annealed to 0 over the run, per step) or
    ``"exponential"`` (times ``lr_decay`` after every epoch, as the smoke-plume protocol's
    ``StepLR``).

    ``eval_every`` evaluates on the validation split every that many epochs (and always after
    the last); ``patience`` (``None``: never) stops training once that many epochs have passed
    since the best validation epoch.

    ``compile`` runs the training forward pass through ``torch.compile`` (``True``: its
    default backend, inductor; a string: that backend, e.g. ``"aot_eager"``); the model itself,
    its evaluation, projection and checkpoints stay eager. The first steps pay the compilation
    (``benchmarks/speed.md`` gives the compiled/eager step ratio per model).

    ``loggers`` adds optional loggers to ``metrics.jsonl`` and ``metrics.csv``, which a run
    with an output directory always writes: ``["tensorboard"]`` writes TensorBoard scalars to
    ``out_dir/tensorboard`` (:class:`~equirelax.engine.logs.TensorBoardLog`).
    """

    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_decay: float = 0.95
    max_grad_norm: float | None = None
    lr_scale: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    eval_batch_size: int = 1000
    equivariance_samples: int = 32
    eval_every: int = 1
    patience: int | None = None
    device: str = "cpu"
    compile: bool | str = False
    loggers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "equivariance_samples"):
            check_positive_int(name, getattr(self, name))
        if self.epochs > MAX_EPOCHS:
            raise ValueError(f"epochs: expected at most {MAX_EPOCHS}, received {self.epochs}")
        check_positive_int("eval_every", self.eval_every)
        if self.patience is not None:
            check_positive_int("patience", self.patience)
        if (
            not isinstance(self.seed, int)
            or isinstance(self.seed, bool)
            or not (0 <= self.seed <= MAX_SEED)
        ):
            raise ValueError(
                f"seed: expected an integer in [0, {MAX_SEED}], received {self.seed!r}"
            )
        check_positive_finite("lr", self.lr)
        if isinstance(self.lr_decay, bool) or not (
            isinstance(self.lr_decay, (int, float)) and 0 < self.lr_decay <= 1
        ):
            raise ValueError(f"lr_decay: expected a number in (0, 1], received {self.lr_decay!r}")
        check_non_negative("weight_decay", self.weight_decay)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_lr_scale(self.lr_scale)
        if not isinstance(self.compile, bool):
            check_choice("compile", self.compile, torch.compiler.list_backends(exclude_tags=()))
        if self.max_grad_norm is not None:
            check_positive_finite("max_grad_norm", self.max_grad_norm)
        check_device("device", self.device)
        if isinstance(self.loggers, str) or not isinstance(self.loggers, (tuple, list)):
            raise TypeError(f"loggers: expected a list of names, received {self.loggers!r}")
        for logger in self.loggers:
            check_choice("loggers", logger, LOGGERS)
        self.loggers = list(self.loggers)


def _check_lr_scale(lr_scale: object) -> None:
    if not isinstance(lr_scale, dict) or not all(
        isinstance(k, str)
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and v > 0
        and math.isfinite(v)
        for k, v in lr_scale.items()
    ):
        raise ValueError(
            "lr_scale: expected a dict of parameter-name prefix -> positive multiplier, "
            f"received {lr_scale!r}"
        )


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``model`` is the trained (possibly relaxed) model, ``evaluation_model`` the one the
    strategy evaluates (projected for strict/CR/ACE-equality) at the final epoch,
    ``best_model`` that model's copy at the best validation epoch ``best_epoch``, ``history``
    one record per epoch (the lines of ``metrics.jsonl``) and ``final`` the last record (over
    the last evaluated one) plus ``epochs_run``, ``best_epoch``, ``best_val``, ``test`` (at the
    best validation epoch) and ``test_final``; when the evaluated model is not the trained one
    (a projection of a relaxed model), also the trained model's ``test_relaxed`` at the best
    validation epoch (of the evaluated model) and ``test_relaxed_final``, as the ACE paper
    reports both.
    """

    model: nn.Module
    evaluation_model: nn.Module
    strategy: Strategy
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    best_model: nn.Module | None = None
    best_epoch: int | None = None

    @property
    def selected_model(self) -> nn.Module:
        """The model the papers report on: ``best_model`` (the evaluated model at the best
        validation epoch), or ``evaluation_model`` when there was no validation."""
        return self.best_model if self.best_model is not None else self.evaluation_model
