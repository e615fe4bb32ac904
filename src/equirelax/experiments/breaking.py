"""Strict, noise-injected and relaxed-equivariant arms of one model, side by side
(``equirelax break TASK``; Kaba & Ravanbakhsh 2023, arXiv:2312.09016).

Each arm trains the task's model with ``breaking=arm`` for every seed, then reports on the test
split: the failure rate (the task metric), the loss, and two checks on the first test inputs:
the fraction that satisfies the coset condition of relaxed equivariance, and the fraction whose
output keeps the input's stabiliser (the equivariant limit, where no symmetric input can be
solved). The checks read ``task.extra["relaxed_check"]``: a dict with ``action_in`` and
``action_out`` (finite-group actions), optionally ``elements`` (the elements to test; default
all), ``stabilisers`` (a function of the inputs giving ``G_x`` per sample), ``prepare`` (a
function applied to the float64 inputs first, e.g. to turn them so that their stabiliser lies
in the finite group), ``as_set`` and ``atol``.

Not imported by :mod:`equirelax.breaking` (it needs the engine and the model registry).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from equirelax._batches import index
from equirelax._checks import batch_size, check_positive_int
from equirelax.breaking.stabilisers import is_relaxed_equivariant, keeps_stabiliser
from equirelax.engine import TrainConfig, split_means, train
from equirelax.experiments import model_registry
from equirelax.experiments.runner import Column, arm_table, check_arms, run_arms
from equirelax.models.breaking import ARMS
from equirelax.strategies import Free
from equirelax.tasks.base import Task

__all__ = ["ARMS", "compare_breaking", "format_breaking_table", "symmetry_checks"]

_TABLE: list[Column] = [
    ("failure %", "failure", 100.0, 1),
    ("test loss", "loss", 1.0, 4),
    ("relaxed-equivariant %", "relaxed_equivariant", 100.0, 1),
    ("keeps stabiliser %", "keeps_stabiliser", 100.0, 1),
    ("symmetric inputs %", "symmetric", 100.0, 1),
]


def symmetry_checks(model: nn.Module, task: Task, inputs: Any) -> dict[str, float]:
    """The checks of ``task.extra["relaxed_check"]`` on ``inputs`` (in float64): the fractions of
    inputs that are symmetric (``|G_x| > 1``), that satisfy the coset condition, and whose output
    keeps the stabiliser."""
    spec = task.extra.get("relaxed_check")
    if not isinstance(spec, dict):
        raise ValueError(
            f"task: expected extra['relaxed_check'] (the finite actions of the checks) for "
            f"task {task.name!r}, received {spec!r}"
        )
    model64 = copy.deepcopy(model).double().eval()
    x = tuple(p.double() for p in inputs) if isinstance(inputs, tuple) else inputs.double()
    if spec.get("prepare"):
        x = spec["prepare"](x)
    action_in, action_out = spec["action_in"], spec["action_out"]
    stabilisers = spec["stabilisers"](x) if spec.get("stabilisers") else None
    options = {"atol": spec.get("atol", 1e-5), "as_set": spec.get("as_set", False)}
    elements = spec.get("elements")
    report = is_relaxed_equivariant(
        model64,
        x,
        action_in.group if elements is None else elements,
        action_in,
        action_out,
        stabilisers=stabilisers,
        **options,
    )
    kept = keeps_stabiliser(model64, x, action_in, action_out, stabilisers=stabilisers, **options)
    return {
        "symmetric": float((report.stabiliser_orders > 1).double().mean()),
        "relaxed_equivariant": float(report.sample_holds.double().mean()),
        "keeps_stabiliser": float(kept.double().mean()),
    }


def compare_breaking(
    task: Task,
    model: str,
    arms: Sequence[str] = ARMS,
    seeds: int = 3,
    *,
    config: TrainConfig | None = None,
    model_options: dict[str, Any] | None = None,
    check_samples: int = 16,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train ``model`` (a name of :data:`~equirelax.experiments.model_registry.MODELS` with a
    ``breaking`` option) in each arm for ``seeds`` seeds and measure it (see the module docstring).

    Each record holds ``arm``, ``seed``, ``failure`` and ``loss`` (test split, else validation;
    of the model at the best validation epoch ``best_epoch``, as the papers report),
    ``symmetric``, ``relaxed_equivariant`` and ``keeps_stabiliser`` (fractions of the first
    ``check_samples`` test inputs) and ``seconds`` (training wall time). With ``out_dir`` the runs
    go to ``out_dir/<arm>/seed<k>`` and the records to ``out_dir/results.json``.
    """
    arms = check_arms(arms, ARMS)
    check_positive_int("seeds", seeds)
    check_positive_int("check_samples", check_samples)
    config = config or TrainConfig()
    evaluation = task.test if task.test is not None else task.val
    checked = index(evaluation[0], torch.arange(min(check_samples, batch_size(evaluation[0]))))

    def run(arm: str, seed: int, run_dir: Path | None) -> dict[str, Any]:
        net = model_registry.build(model, task, breaking=arm, **(model_options or {}))
        started = time.perf_counter()
        result = train(
            net,
            Free(),
            dataclasses.replace(task, name=f"{task.name}/{arm}"),
            dataclasses.replace(config, seed=seed),
            out_dir=run_dir,
            progress=progress,
        )
        seconds = time.perf_counter() - started
        torch.manual_seed(seed)
        functions = [task.loss, task.metric]
        loss, failure = split_means(
            result.selected_model, evaluation, functions, config.eval_batch_size
        )
        return {
            "failure": failure,
            "loss": loss,
            **symmetry_checks(result.selected_model, task, checked),
            "seconds": seconds,
            "best_epoch": result.best_epoch,
        }

    setup = {"task": task.name, "model": model, "config": dataclasses.asdict(config)}
    return run_arms(arms, seeds, run, out_dir=out_dir, setup=setup)


def format_breaking_table(records: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`compare_breaking` records: one row per arm, mean ± std over
    seeds of the failure rate (%), the test loss and the two checks (%)."""
    return arm_table(records, _TABLE)
