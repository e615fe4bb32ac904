"""Models for the built-in tasks, by name: ``build(name, task, **options)``.

==========  ==========================================================  ====================
name        what it is                                                  relaxation
==========  ==========================================================  ====================
``egnn``    EGNN, 4 velocity-variant EGCL layers, 64 hidden (E(3))      per-node free branch
                                                                        on raw coordinates
``segnn``   SEGNN-like steerable network, e3nn tensor products, l <= 1  dense map on the
                                                                        flattened features
``mlp``     plain MLP on the flattened system (no symmetry)             none
==========  ==========================================================  ====================

Each builder returns the *equivariant* model; :func:`equirelax.relax` adds the free branches
(the command line does this for every strategy but ``strict``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from equirelax._batches import index, parts
from equirelax.models._particles import check_particle_inputs
from equirelax.models.egnn import NBodyEGNN
from equirelax.models.mlp import NBodyMLP
from equirelax.tasks.base import Task

__all__ = ["MODELS", "ModelInfo", "NBodyEGNN", "NBodyMLP", "build"]


@dataclass(frozen=True)
class ModelInfo:
    """A model of the registry: ``builder(task, **options)`` and a one-line description."""

    builder: Callable[..., nn.Module]
    description: str
    equivariant: bool


def _particles(task: Task, model: str) -> int:
    """The number of particles of a particle task; a clear error for any other task."""
    inputs = task.train[0]
    try:
        positions, _, _ = check_particle_inputs(*parts(index(inputs, torch.arange(1))))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"task: model {model!r} needs (positions, velocities, charges) inputs like the "
            f"nbody task, received task {task.name!r} ({error})"
        ) from None
    return positions.shape[1]


def _egnn(task: Task, **options: Any) -> nn.Module:
    _particles(task, "egnn")
    return NBodyEGNN(**options)


def _segnn(task: Task, **options: Any) -> nn.Module:
    from equirelax.models.segnn import NBodySEGNN

    _particles(task, "segnn")
    return NBodySEGNN(**options)


def _mlp(task: Task, **options: Any) -> nn.Module:
    return NBodyMLP(num_particles=_particles(task, "mlp"), **options)


MODELS: dict[str, ModelInfo] = {
    "egnn": ModelInfo(_egnn, "EGNN (Satorras et al. 2021), E(3)-equivariant", True),
    "segnn": ModelInfo(_segnn, "SEGNN-like steerable network (e3nn), E(3)-equivariant", True),
    "mlp": ModelInfo(_mlp, "plain MLP, no symmetry", False),
}


def build(name: str, task: Task, **options: Any) -> nn.Module:
    """Build the model ``name`` of :data:`MODELS` for ``task`` with ``options``."""
    if name not in MODELS:
        raise ValueError(f"model: expected one of {sorted(MODELS)}, received {name!r}")
    return MODELS[name].builder(task, **options)
