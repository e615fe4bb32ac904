"""The names the command line offers before it imports torch (so that ``equirelax --help``
answers at once): tasks, strategy labels, arms and the seed limit. The registries and runners
are keyed by these; tests/test_layout.py checks that they agree."""

from __future__ import annotations

__all__ = [
    "ADAPT_ARMS",
    "DEFAULT_STRATEGIES",
    "MAX_SEEDS",
    "STRATEGY_LABELS",
    "TASK_NAMES",
]

TASK_NAMES = (
    "nbody",
    "inertia",
    "modified-inertia",
    "o5",
    "gap-dial",
    "glyphs",
    "mnist",
    "fashion-mnist",
    "smoke",
    "polygon",
    "bipartite",
    "set-decoding",
)
"""The tasks of :data:`~equirelax.experiments.task_registry.TASKS`, in its order."""

STRATEGY_LABELS = (
    "strict",
    "free",
    "augment",
    "cr",
    "rpp",
    "penalty",
    "ace",
    "recm",
    "ace-equality",
    "ace-inequality",
    "ace-resilient",
)
"""The labels of :data:`~equirelax.experiments.compare.STRATEGY_PRESETS`: the strategies' names,
then ACE in each mode."""

DEFAULT_STRATEGIES = ("strict", "free", "augment", "cr", "rpp", "ace-equality", "ace-resilient")
"""The labels ``equirelax compare`` runs when none are given."""

ADAPT_ARMS = ("pretrained", "vanilla", "augment", "canon", "canon-prior", "frozen-canon-prior")
"""The arms of :data:`~equirelax.experiments.adapt.ARMS`, in its order."""

MAX_SEEDS = 10_000
"""The most seeds per arm a runner accepts (each seed is a training run)."""
