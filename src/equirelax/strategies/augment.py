"""Data augmentation: every sample moved by its own random group element.

The "unconstrained + augmentation" baseline (SPEC 2.6): train on ``(A_in(g_b) x_b,
A_out(g_b) y_b)`` with ``g_b ~ Uniform(G)`` (Haar for compact groups) drawn afresh for every
sample ``b`` of every batch, with every relaxed layer at level 1. The model learns the symmetry
from the data only; nothing in it is constrained.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from equirelax._checks import batch_size
from equirelax.actions import Action, TrivialAction
from equirelax.groups import Group
from equirelax.strategies.base import Strategy, set_levels

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

    def attach(
        self,
        model: nn.Module,
        *,
        action_in: Action | None = None,
        action_out: Action | None = None,
        epochs: int | None = None,
        generator: torch.Generator | None = None,
    ) -> nn.Module:
        action_in, action_out = _require_actions(self.name, action_in, action_out)
        model = super().attach(
            model,
            action_in=action_in,
            action_out=action_out,
            epochs=epochs,
            generator=generator,
        )
        set_levels(model, 1.0)
        return model

    def transform_batch(self, inputs: Any, targets: Any) -> tuple[Any, Any]:
        """Return ``(A_in(g) inputs, A_out(g) targets)`` with one random ``g_b`` per sample."""
        if self.action_in is None or self.action_out is None:
            raise RuntimeError("augment: call attach(model, action_in=...) before training")
        g = _sample_per_sample(self.action_in.group, inputs, self.generator)
        return self.action_in(g, inputs), self.action_out(g, targets)


def _require_actions(
    strategy: str, action_in: Action | None, action_out: Action | None
) -> tuple[Action, Action]:
    """``(action_in, action_out)`` with ``action_out`` defaulting to the trivial action;
    ``ValueError`` naming ``action_in`` when it is missing or the groups differ."""
    if action_in is None:
        raise ValueError(
            f"action_in: {strategy} needs the action on model inputs, received None; "
            f"pass attach(model, action_in=..., action_out=...)"
        )
    if not isinstance(action_in, Action):
        raise TypeError(f"action_in: expected an Action, received {action_in!r}")
    if action_out is None:
        action_out = TrivialAction(action_in.group)
    if not isinstance(action_out, Action):
        raise TypeError(f"action_out: expected an Action or None, received {action_out!r}")
    if action_out.group != action_in.group:
        raise ValueError(
            f"action_out: expected an action of {action_in.group} like action_in, "
            f"received one of {action_out.group}"
        )
    return action_in, action_out


def _sample_per_sample(group: Group, inputs: Any, generator: torch.Generator) -> Tensor:
    """One element of ``group`` per sample of ``inputs``, on the inputs' device; matrix
    elements in the inputs' float dtype (the default dtype for integer inputs)."""
    parts = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    if not parts or not isinstance(parts[0], Tensor):
        raise TypeError(
            "inputs: expected a tensor or a tuple of tensors, "
            f"received {type(parts[0] if parts else inputs).__name__}"
        )
    floats = [p for p in parts if isinstance(p, Tensor) and p.is_floating_point()]
    dtype = floats[0].dtype if floats else torch.get_default_dtype()
    return group.sample(batch_size(inputs), generator, device=parts[0].device, dtype=dtype)
