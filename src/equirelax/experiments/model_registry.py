"""The built-in models by name: ``build(name, task, **options)``.

==========  ==========================================================  ====================
name        what it is                                                  relaxation
==========  ==========================================================  ====================
``egnn``    EGNN, 4 velocity-variant EGCL layers, 64 hidden (E(3))      per-node free branch
                                                                        on raw coordinates
``segnn``   SEGNN-like steerable network, e3nn tensor products, l <= 1  dense map on the
                                                                        flattened features
``emlp``    EMLP (arXiv 2104.09459) on flat features: equivariant       dense map per
            linear + bilinear maps and gates, 3 blocks, hidden          equivariant linear
            ``32 T0 + 16 V (+ 4 T2 for d <= 3)``; tasks whose actions   map
            are ``RepresentationAction`` s
``mlp``     plain SiLU MLP: on the flattened system for particle tasks  none
            (``NBodyMLP``), on the features for flat-tensor tasks
            (``MLP``, 256 hidden)
``cnn``     small unconstrained CNN classifier for image tasks            none
            (``SmallCNN``): the pretrained predictor of
            ``equirelax adapt``
``smoke-``  smoke-plume models on velocity windows: ``smoke-cnn`` (plain   free branch: a plain
``*``       CNN), ``smoke-gcnn`` (C4 group CNN; lifted with ``e_n . v``,    convolution per
            read out with ``sum_n f(n) e_n``), ``smoke-rgcnn`` (relaxed  group convolution
            group convolutions, Wang et al. 2022: relaxed by
            construction; train it with ``free``)
``canon-``  the particle MLP made E(3)-equivariant by canonicalization  none (exactly
``mlp``     (Kaba et al. 2023): a vector-neuron canonicalizer gives a   equivariant, not
            frame and centroid from the positions; ``c(x) MLP(c(x)^-1   permutation-
            x)``; option ``prior_weight`` (default 0: trained from      equivariant)
            scratch, there is no pose to prefer)
==========  ==========================================================  ====================

The symmetry-breaking tasks (Kaba & Ravanbakhsh 2023) have ``polygon-net`` (an O(2) x S_m
DeepSets vector model), ``colouring-gnn`` (an S_n message-passing node classifier) and
``set-decoder`` (an S_slots DeepSets slot decoder), from :mod:`equirelax.models.breaking`; their
option ``breaking`` is ``strict`` (equivariant), ``noise`` (noise injection) or ``relaxed`` (a
symmetry-breaking object from :mod:`equirelax.breaking`).

Each builder returns the *equivariant* model; :func:`equirelax.relax` adds the free branches
(the command line does this for every strategy but ``strict``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from equirelax._batches import index, parts
from equirelax._checks import describe
from equirelax.actions import Action, RepresentationAction, TrivialAction
from equirelax.canonical import Canonicalized, PointCloudCanonicalizer
from equirelax.models import (
    EMLP,
    MLP,
    ColouringGNN,
    NBodyEGNN,
    NBodyMLP,
    PolygonPointer,
    SetDecoder,
    SmallCNN,
    SmokeCNN,
    SmokeGroupCNN,
    SmokeRelaxedGroupCNN,
)
from equirelax.models.particles import check_particle_inputs
from equirelax.representations import Representation
from equirelax.tasks.base import Task

__all__ = ["MODELS", "ModelInfo", "build"]


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


def _flat_split(task: Task, model: str) -> tuple[Tensor, Tensor]:
    """The training inputs and targets of a flat-tensor task, ``(N, d_in)`` and ``(N, d_out)``;
    a clear error for any other task."""
    inputs, targets = task.train
    if not isinstance(inputs, Tensor) or inputs.ndim != 2 or targets.ndim != 2:
        raise ValueError(
            f"task: model {model!r} needs flat (N, d_in) tensor inputs and (N, d_out) targets, "
            f"received task {task.name!r} with inputs {describe(inputs)} and targets "
            f"{describe(targets)}"
        )
    return inputs, targets


def _representation(action: Action | None, width: int, task: Task, which: str) -> Representation:
    """The representation of a task's ``RepresentationAction`` on flat features (a trivial
    action on ``width`` features: ``width`` scalars)."""
    if isinstance(action, TrivialAction) and type(action).act is TrivialAction.act:
        return width * action.group.trivial_representation()
    linear = isinstance(action, RepresentationAction) and type(action).act is (
        RepresentationAction.act
    )
    if not linear or action.dim not in (-1, 1):  # type: ignore[union-attr]
        raise ValueError(
            f"task: model 'emlp' needs {which} to be a RepresentationAction on the last axis "
            f"of flat features, received {action!r} for task {task.name!r}"
        )
    rep = action.representation  # type: ignore[union-attr]
    if rep.dim != width:
        raise ValueError(
            f"task: the {which} representation of task {task.name!r} has dimension {rep.dim}, "
            f"but its data has {width} features"
        )
    return rep


def _emlp(task: Task, **options: Any) -> nn.Module:
    inputs, targets = _flat_split(task, "emlp")
    rep_in = _representation(task.action_in, inputs.shape[1], task, "action_in")
    rep_out = _representation(task.action_out, targets.shape[1], task, "action_out")
    return EMLP(rep_in, rep_out, **options)


def _mlp(task: Task, **options: Any) -> nn.Module:
    if isinstance(task.train[0], Tensor):
        inputs, targets = _flat_split(task, "mlp")
        return MLP(inputs.shape[1], targets.shape[1], **options)
    return NBodyMLP(num_particles=_particles(task, "mlp"), **options)


def _cnn(task: Task, **options: Any) -> nn.Module:
    inputs, targets = task.train
    if not isinstance(inputs, Tensor) or inputs.ndim != 4 or targets.ndim != 1:
        raise ValueError(
            f"task: model 'cnn' needs image inputs (N, C, H, W) and class labels (N,), "
            f"received task {task.name!r} with inputs {describe(inputs)} and targets "
            f"{describe(targets)}"
        )
    classes = task.extra.get("classes", int(targets.max()) + 1)
    return SmallCNN(inputs.shape[1], classes, **options)


def _canon_mlp(
    task: Task, *, prior_weight: float = 0.0, canonicalizer_hidden: int = 16, **options: Any
) -> nn.Module:
    num_particles = _particles(task, "canon-mlp")
    canonicalizer = PointCloudCanonicalizer(
        task.action_in.group, hidden=canonicalizer_hidden, input_action=task.action_in
    )
    predictor = NBodyMLP(num_particles=num_particles, **options)
    return Canonicalized(canonicalizer, predictor, task.action_out, prior_weight=prior_weight)


def _smoke(model: type[nn.Module]) -> Callable[..., nn.Module]:
    """A builder of a smoke-plume model: needs velocity windows ``(N, T, 2, H, W)``."""

    def builder(task: Task, **options: Any) -> nn.Module:
        inputs = task.train[0]
        if not isinstance(inputs, Tensor) or inputs.ndim != 5 or inputs.shape[2] != 2:
            raise ValueError(
                f"task: model {model.__name__} needs velocity windows (N, T, 2, H, W) like the "
                f"smoke task, received task {task.name!r} with inputs {describe(inputs)}"
            )
        return model(frames=inputs.shape[1], **options)

    return builder


def _breaking_inputs(task: Task, model: str, layout: str, ok: bool) -> None:
    if not ok:
        raise ValueError(
            f"task: model {model!r} needs {layout} inputs, received task {task.name!r} with "
            f"inputs {describe(task.train[0])}"
        )


def _polygon_net(task: Task, **options: Any) -> nn.Module:
    inputs = task.train[0]
    ok = isinstance(inputs, tuple) and len(inputs) == 2 and inputs[0].ndim == 3
    _breaking_inputs(task, "polygon-net", "(points (N, m, 2), mask (N, m))", ok)
    return PolygonPointer(inputs[0].shape[1], **options)


def _colouring_gnn(task: Task, **options: Any) -> nn.Module:
    inputs = task.train[0]
    ok = isinstance(inputs, Tensor) and inputs.ndim == 3 and inputs.shape[1] == inputs.shape[2]
    _breaking_inputs(task, "colouring-gnn", "adjacency (N, n, n)", ok)
    return ColouringGNN(**options)


def _set_decoder(task: Task, **options: Any) -> nn.Module:
    inputs = task.train[0]
    _breaking_inputs(
        task,
        "set-decoder",
        "slots (N, slots, alphabet)",
        isinstance(inputs, Tensor) and inputs.ndim == 3,
    )
    return SetDecoder(inputs.shape[1], inputs.shape[2], **options)


MODELS: dict[str, ModelInfo] = {
    "egnn": ModelInfo(_egnn, "EGNN (Satorras et al. 2021), E(3)-equivariant", True),
    "segnn": ModelInfo(_segnn, "SEGNN-like steerable network (e3nn), E(3)-equivariant", True),
    "emlp": ModelInfo(_emlp, "equivariant MLP (Finzi et al. 2021) on representations", True),
    "mlp": ModelInfo(_mlp, "plain MLP, no symmetry", False),
    "cnn": ModelInfo(_cnn, "small CNN classifier, no symmetry", False),
    "canon-mlp": ModelInfo(
        _canon_mlp, "particle MLP canonicalized by a learned E(3) frame, E(3)-equivariant", True
    ),
    "smoke-cnn": ModelInfo(_smoke(SmokeCNN), "plain CNN on velocity frames, no symmetry", False),
    "smoke-gcnn": ModelInfo(
        _smoke(SmokeGroupCNN), "C4 group CNN on velocity frames, C4-equivariant", True
    ),
    "smoke-rgcnn": ModelInfo(
        _smoke(SmokeRelaxedGroupCNN),
        "relaxed C4 group CNN (Wang et al. 2022); train it with strategy 'free'",
        False,
    ),
    "polygon-net": ModelInfo(
        _polygon_net, "O(2) x S_m DeepSets vector model; option breaking=strict|noise|relaxed", True
    ),
    "colouring-gnn": ModelInfo(
        _colouring_gnn, "S_n message-passing node classifier; option breaking=...", True
    ),
    "set-decoder": ModelInfo(
        _set_decoder, "S_slots DeepSets slot decoder; option breaking=...", True
    ),
}
"""The built-in models by name (``equirelax tasks`` lists them with their tasks)."""


def build(name: str, task: Task, **options: Any) -> nn.Module:
    """Build the model ``name`` of :data:`MODELS` for ``task`` with ``options``."""
    if name not in MODELS:
        raise ValueError(f"model: expected one of {sorted(MODELS)}, received {name!r}")
    return MODELS[name].builder(task, **options)
