"""Data augmentation: every sample moved by its own random group element.

The "unconstrained + augmentation" baseline (SPEC 2.6): train on ``(A_in(g_b) x_b,
A_out(g_b) y_b)`` with ``g_b ~ Uniform(G)`` (Haar for compact groups) drawn afresh for every
sample ``b`` of every batch, with every relaxed layer at level 1. The model learns the symmetry
from the data only; nothing in it is constrained.
"""

from __future__ import annotations

from typing import Any

from equirelax._batches import sample_per_sample
from equirelax.strategies.base import Strategy

__all__ = ["Augment"]


class Augment(Strategy):
    """Augment each sample by a random group element: ``(x_b, y_b) -> (g_b . x_b, g_b . y_b)``.

    ``attach`` needs ``action_in`` (the action on model inputs; a
    :class:`~equirelax.actions.DirectSumAction` for tuple inputs) and takes ``action_out``
    (default: :class:`~equirelax.actions.TrivialAction`, an invariant target). Relaxed layers,
    if any, are set to level 1 (the unconstrained model); a plain model is trained as it is.
    Elements are drawn with :attr:`generator`, so a seeded generator reproduces the batches.
    Evaluated as trained (no projection).
    """

    name = "augment"
    needs_actions = True
    fixed_level = 1.0

    def transform_batch(self, inputs: Any, targets: Any) -> tuple[Any, Any]:
        """Return ``(A_in(g) inputs, A_out(g) targets)`` with one random ``g_b`` per sample."""
        if self.action_in is None or self.action_out is None:
            raise RuntimeError("augment: call attach(model, action_in=...) before training")
        g = sample_per_sample(self.action_in.group, inputs, self.generator)
        return self.action_in(g, inputs), self.action_out(g, targets)
