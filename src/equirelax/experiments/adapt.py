"""Equivariant adaptation of a pretrained classifier by canonicalization: the protocol of
Mondal et al. (NeurIPS 2023, arXiv 2310.01647) on images.

A predictor pretrained on upright images (:func:`pretrain`) is fine-tuned at an equal budget
(same epochs, batch size and learning rate) in each of these *arms* (:data:`ARMS`):

* ``pretrained``: no fine-tuning (the starting point);
* ``vanilla``: fine-tune the predictor on the upright training images;
* ``augment``: fine-tune it on images moved by a random element of the group;
* ``canon``: train a canonicalizer together with the predictor, ``f(x) = p(c(x)^-1 x)``,
  without the prior;
* ``canon-prior``: the same with the canonicalization prior (weight ``lambda_prior``);
* ``frozen-canon-prior``: train only the canonicalizer, with the prior, in front of the frozen
  predictor.

Every arm is scored on the upright test images, averaged over the C4 rotations of them (exact
pixel permutations) and over the C8 rotations (bilinear interpolation), and for the
canonicalized arms by the fraction of upright test images the canonicalizer maps to the
identity. The paper's CIFAR-10 pattern: vanilla fine-tuning keeps its upright accuracy but
collapses under rotation (96.97 -> 57.77 averaged over C8), canonicalization with the prior keeps
both (96.19 upright / 95.31 C8).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from equirelax._checks import batch_size, check_options, check_positive_int
from equirelax.actions import ImageAction
from equirelax.canonical import Canonicalized, ImageCanonicalizer
from equirelax.engine import TrainConfig, train
from equirelax.experiments.runner import Column, arm_table, check_arms, run_arms
from equirelax.groups import CyclicGroup, DihedralGroup, FiniteGroup
from equirelax.outputs import split_output
from equirelax.strategies import Augment, Free
from equirelax.tasks.base import Split, Task
from equirelax.tasks.images import parse_planar_group

__all__ = [
    "ARMS",
    "adapt",
    "format_adapt_table",
    "identity_fraction",
    "pretrain",
    "rotate_test_images",
    "rotated_accuracy",
]

ARMS: dict[str, str] = {
    "pretrained": "the pretrained predictor, not fine-tuned",
    "vanilla": "fine-tune the predictor on the upright training images",
    "augment": "fine-tune the predictor on images moved by random group elements",
    "canon": "canonicalizer + predictor trained together, no prior",
    "canon-prior": "canonicalizer + predictor trained together, with the prior",
    "frozen-canon-prior": "canonicalizer trained with the prior, predictor frozen",
}
"""Arm name -> what it fine-tunes (see the module docstring)."""

_CANONICALIZED = ("canon", "canon-prior", "frozen-canon-prior")
_TABLE: list[Column] = [
    ("upright acc %", "upright", 100.0, 2),
    ("C4-avg acc %", "c4", 100.0, 2),
    ("C8-avg acc %", "c8", 100.0, 2),
    ("upright -> identity %", "identity", 100.0, 2),
]


def pretrain(
    task: Task,
    predictor: nn.Module,
    config: TrainConfig | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> nn.Module:
    """Train ``predictor`` on the task's (upright) training images and return it."""
    return train(predictor, Free(), task, config, out_dir=out_dir, progress=progress).model


TEST_PAD_FRACTION = 0.4
"""Edge padding around a test image before it is rotated, as a fraction of its size (equiadapt's
``GroupInference``: ``ceil(0.4 H)`` pixels, edge mode)."""


def rotate_test_images(
    images: torch.Tensor, elements: torch.Tensor, group: FiniteGroup
) -> torch.Tensor:
    """Rotate ``(B, C, H, W)`` test images by ``elements`` ``(B, ...)`` as the reference
    library does: pad by ``ceil(0.4 H)`` pixels repeating the edge, rotate about the centre
    (:class:`~equirelax.actions.ImageAction`: pixel permutations for multiples of 90 degrees,
    bilinear otherwise), crop the centre back to ``H x W``. The corners of a rotated image hold
    the image's own border instead of zeros; multiples of 90 degrees stay exact permutations.
    """
    size = images.shape[-1]
    pad = math.ceil(TEST_PAD_FRACTION * size)
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    rotated = ImageAction(group)(elements, padded)
    return rotated[..., pad : pad + size, pad : pad + size]


@torch.no_grad()
def rotated_accuracy(
    model: nn.Module, split: Split, group: FiniteGroup | str, *, eval_batch_size: int = 500
) -> float:
    """``mean_g accuracy(model(g x), y)`` over every element ``g`` of ``group``, the images
    rotated by :func:`rotate_test_images` (C4: exact pixel permutations)."""
    group = parse_planar_group(group)
    inputs, targets = split
    check_positive_int("eval_batch_size", eval_batch_size)
    was_training = model.training
    model.eval()
    correct, count = 0, batch_size(inputs)
    device = next(iter(model.parameters()), inputs).device
    for element in group.elements(device=device):
        for start in range(0, count, eval_batch_size):
            x = inputs[start : start + eval_batch_size].to(device)
            moved = rotate_test_images(x, element.expand(x.shape[0], *element.shape), group)
            logits, _ = split_output(model(moved))
            correct += int((logits.argmax(-1) == targets[start : start + len(x)].to(device)).sum())
    model.train(was_training)
    return correct / (count * group.order)


@torch.no_grad()
def identity_fraction(
    model: Canonicalized, inputs: torch.Tensor, *, eval_batch_size: int = 500
) -> float:
    """The fraction of ``inputs`` whose canonicalizing element is the identity (evaluation
    mode, i.e. the argmax choice)."""
    if not isinstance(model, Canonicalized):
        raise TypeError(f"model: expected a Canonicalized model, received {type(model).__name__}")
    check_positive_int("eval_batch_size", eval_batch_size)
    canonicalizer = model.canonicalizer
    was_training = canonicalizer.training
    canonicalizer.eval()
    group = canonicalizer.group
    device = next(iter(canonicalizer.parameters())).device
    identity = group.index(group.identity(1, device=device))
    hits = 0
    for start in range(0, len(inputs), eval_batch_size):
        elements = canonicalizer(inputs[start : start + eval_batch_size].to(device)).elements
        hits += int((group.index(elements) == identity).sum())
    canonicalizer.train(was_training)
    return hits / len(inputs)


def _arm_model(
    arm: str,
    predictor: nn.Module,
    group: CyclicGroup | DihedralGroup,
    in_channels: int,
    prior_weight: float,
    canonicalizer_options: dict[str, Any],
) -> nn.Module:
    """A fresh copy of the predictor, wrapped and frozen as the arm needs."""
    model = copy.deepcopy(predictor)
    if arm not in _CANONICALIZED:
        return model
    if arm == "frozen-canon-prior":
        model.requires_grad_(False)
    canonicalizer = ImageCanonicalizer(group, in_channels, **canonicalizer_options)
    weight = 0.0 if arm == "canon" else prior_weight
    return Canonicalized(canonicalizer, model, prior_weight=weight)


def adapt(
    task: Task,
    predictor: nn.Module,
    group: FiniteGroup | str = "c8",
    *,
    arms: Sequence[str] = tuple(ARMS),
    seeds: int = 1,
    config: TrainConfig | None = None,
    prior_weight: float = 100.0,
    canonicalizer_options: dict[str, Any] | None = None,
    canonicalizer_lr_scale: float = 10.0,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Fine-tune ``predictor`` in every arm and seed at the same budget; one record per run.

    Parameters
    ----------
    task:
        An image-classification task (e.g. ``mnist``, ``glyphs``); its (upright) training split
        is the fine-tuning data, its test split (else validation) the evaluation data.
    predictor:
        The pretrained classifier (left unchanged: every arm trains a copy).
    group:
        The canonicalizer's and the augmentation's group, e.g. ``"c8"`` or ``DihedralGroup(4)``.
    arms:
        Names from :data:`ARMS`.
    seeds:
        Fine-tuning seeds per arm (the pretrained predictor is shared).
    config:
        The fine-tuning budget (epochs, batch size, learning rate), the same for every arm.
    prior_weight:
        ``lambda_prior`` of the ``*-prior`` arms.
    canonicalizer_options:
        Options of :class:`~equirelax.canonical.ImageCanonicalizer` (``hidden``, ``beta``...).
    canonicalizer_lr_scale:
        The canonicalizer's learning rate as a multiple of ``config.lr``: a new network next to
        a pretrained one needs larger steps (as the reference implementation gives its
        canonicalization network its own learning rate).
    out_dir:
        If given, each run's metrics and checkpoint go to ``out_dir/<arm>/seed<k>`` and the
        records to ``out_dir/results.json`` (rewritten after every run).

    Returns
    -------
    list[dict[str, Any]]
        One record per run, holding ``arm``, ``seed``, ``upright``, ``c4`` and ``c8``
        (accuracies in [0, 1] of the model at the best validation epoch ``best_epoch``, as the
        papers report; the final model where the task has no validation split),
        ``identity`` (canonicalized arms, else ``None``), ``seconds`` (fine-tuning wall time)
        and ``equivariance_error`` (the engine's last value). ``best_epoch`` and
        ``equivariance_error`` are ``None`` for ``pretrained``.
    """
    group = parse_planar_group(group)
    arms = check_arms(arms, list(ARMS))
    check_positive_int("seeds", seeds)
    if not prior_weight >= 0:
        raise ValueError(f"prior_weight: expected >= 0, received {prior_weight!r}")
    if not canonicalizer_lr_scale > 0:
        raise ValueError(
            f"canonicalizer_lr_scale: expected > 0, received {canonicalizer_lr_scale!r}"
        )
    if not isinstance(predictor, nn.Module):
        raise TypeError(f"predictor: expected an nn.Module, received {type(predictor).__name__}")
    inputs = task.train[0]
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4:
        raise ValueError(
            f"task: expected image inputs (N, C, H, W), received task {task.name!r} with "
            f"inputs of type {type(inputs).__name__}"
        )
    config = config or TrainConfig()
    options = dict(canonicalizer_options or {})
    check_options("canonicalizer_options", ImageCanonicalizer, options)
    task = dataclasses.replace(task, action_in=ImageAction(group), action_out=None)
    evaluation = task.test if task.test is not None else task.val
    setup = {
        "task": task.name,
        "group": group.key,
        "config": asdict(config),
        "prior_weight": prior_weight,
        "canonicalizer_options": options,
        "canonicalizer_lr_scale": canonicalizer_lr_scale,
    }

    def run(arm: str, seed: int, run_dir: Path | None) -> dict[str, Any]:
        model = _arm_model(arm, predictor, group, inputs.shape[1], prior_weight, options)
        started = time.perf_counter()
        error = best_epoch = None
        if arm != "pretrained":
            strategy = Augment() if arm == "augment" else Free()
            scale = {"canonicalizer.": canonicalizer_lr_scale} if arm in _CANONICALIZED else {}
            result = train(
                model,
                strategy,
                dataclasses.replace(task, name=f"{task.name}/{arm}"),
                dataclasses.replace(config, seed=seed, lr_scale={**config.lr_scale, **scale}),
                out_dir=run_dir,
                progress=progress,
            )
            model = result.selected_model
            best_epoch = result.best_epoch
            error = result.final.get("equivariance_error")
        seconds = time.perf_counter() - started
        return {
            "upright": rotated_accuracy(model, evaluation, CyclicGroup(1)),
            "c4": rotated_accuracy(model, evaluation, CyclicGroup(4)),
            "c8": rotated_accuracy(model, evaluation, CyclicGroup(8)),
            "identity": identity_fraction(model, evaluation[0])
            if isinstance(model, Canonicalized)
            else None,
            "seconds": seconds,
            "equivariance_error": error,
            "best_epoch": best_epoch,
        }

    return run_arms(
        arms,
        seeds,
        run,
        out_dir=out_dir,
        setup=setup,
        seeds_of=lambda arm: 1 if arm == "pretrained" else seeds,
    )


def format_adapt_table(records: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`adapt` records: one row per arm, mean ± std over seeds of
    the accuracies (%) and of the identity fraction (%), and the mean fine-tuning seconds."""
    return arm_table(records, _TABLE)
