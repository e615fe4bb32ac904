"""Defaults are what is tested (SPEC 2.7, issue 15): every strategy at its class defaults, with
no test-only settings, trains every built-in relaxable model on its task with the task's own
training settings, over 5 seeds, without a non-finite loss. The models are shortened (fewer and
narrower layers), not the seeds; each strategy relaxes the model at its own placement, as
``equirelax compare`` does."""

from __future__ import annotations

import math

import pytest
import torch

import equirelax
from equirelax.experiments import model_registry
from equirelax.experiments.compare import make_strategy
from equirelax.experiments.task_registry import get
from equirelax.groups import O3

SEEDS = range(5)
LABELS = (
    "strict", "free", "augment", "cr", "rpp", "penalty", "ace-equality", "ace-resilient", "recm",
)  # fmt: skip


def _emlp_setting() -> tuple:
    """E-MLP on inertia, N = 1000 (where ACE's old level rule diverged in 3 of 3 seeds within
    14 steps); the quick preset's training settings; 100 steps."""
    task = get("inertia", train_size=1000, val_size=50, test_size=0, progress=False)
    scalar, vector = O3().trivial_representation(), O3().standard_representation()
    options = {"num_layers": 1, "hidden": 8 * scalar + 4 * vector}
    train = {"epochs": 10, "batch_size": 100, "lr": 3e-3, "lr_schedule": "cosine"}
    return task, "emlp", options, train


def _egnn_setting(cache: str) -> tuple:
    """EGNN on the 3000-system N-body split (where ACE's old rule diverged at epoch 4), the
    full preset's training settings (Adam 5e-4, batch 100, weight decay 1e-12); 90 steps."""
    task = get("nbody", train_size=3000, val_size=50, test_size=0, cache_dir=cache, progress=False)
    train = {"epochs": 3, "batch_size": 100, "lr": 5e-4, "weight_decay": 1e-12}
    return task, "egnn", {"hidden_features": 16, "num_layers": 2}, train


def _segnn_setting(cache: str) -> tuple:
    """SEGNN on a small N-body split at the ACE paper's primal step (Adam 9e-4, batch 100);
    30 steps."""
    task = get("nbody", train_size=300, val_size=50, test_size=0, cache_dir=cache, progress=False)
    train = {"epochs": 10, "batch_size": 100, "lr": 9e-4, "weight_decay": 1e-12}
    return task, "segnn", {"hidden_irreps": "8x0e + 4x1o", "num_layers": 2}, train


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["emlp", "egnn", "segnn"])
def test_every_strategy_at_its_class_defaults_trains_without_a_non_finite_loss(
    setting, tmp_path_factory
):
    cache = str(tmp_path_factory.getbasetemp() / "cache")
    task, name, model_options, train = {
        "emlp": _emlp_setting,
        "egnn": lambda: _egnn_setting(cache),
        "segnn": lambda: _segnn_setting(cache),
    }[setting]()
    config = equirelax.TrainConfig(**train, eval_every=train["epochs"])
    for label in LABELS:
        for seed in SEEDS:
            strategy = make_strategy(label)  # the class defaults: no options
            torch.manual_seed(seed)
            model = equirelax.relax(
                model_registry.build(name, task, **model_options), placement=strategy.placement
            )
            result = equirelax.train(model, strategy, task, config, seed=seed, progress=False)
            losses = [record["train_loss"] for record in result.history]
            assert all(math.isfinite(loss) for loss in losses), (label, seed, losses)
            assert math.isfinite(result.final["val"]), (label, seed)


@pytest.mark.slow
def test_ace_class_defaults_survive_relaxation_at_every_site_of_the_full_size_emlp():
    """The step rule on its own: relaxed at every site (the bilinear maps and head too) of the
    default E-MLP on inertia, N = 1000, ACE's earlier unbounded gradient-descent level rule
    gave a non-finite loss within 4 steps in 5 of 5 seeds (measured); the official rule (levels
    under the loop's Adam, Adam dual) must give none."""
    task = get("inertia", train_size=1000, val_size=50, test_size=0, progress=False)
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = equirelax.relax(model_registry.build("emlp", task), placement="all")
        result = equirelax.train(
            model, make_strategy("ace-equality"), task, epochs=2, batch_size=100, lr=3e-3,
            lr_schedule="cosine", seed=seed, eval_every=2, progress=False,
        )  # fmt: skip
        assert all(math.isfinite(r["train_loss"]) for r in result.history), seed
