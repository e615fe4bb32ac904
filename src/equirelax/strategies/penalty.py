"""A fixed-weight equivariance penalty on the whole model (REMUL-style).

Elhag et al., "Relaxed Equivariance via Multitask Learning" (REMUL, arXiv 2410.17878) train an
unconstrained model on ``task_loss + beta * equivariance_loss`` with a fixed weight. Here the
equivariance term is the sampled relative equivariance error of the model on the batch, with
one random element per sample (SPEC 1 and 2.6)::

    objective = task_loss + beta * E
    E = mean_b || f(A_in(g_b) x_b) - A_out(g_b) f(x_b) ||  /  (mean_b || f(x_b) || + eps)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from equirelax._batches import call, flat, sample_per_sample
from equirelax._checks import check_non_negative
from equirelax.strategies.base import Strategy

__all__ = ["EquivariancePenalty"]


class EquivariancePenalty(Strategy):
    """``task_loss + beta * E`` with ``E`` the sampled relative equivariance error (REMUL).

    ``E = mean_b ||f(A_in(g_b) x_b) - A_out(g_b) f(x_b)|| / (mean_b ||f(x_b)|| + eps)`` with
    one element ``g_b ~ Uniform(G)`` per sample (drawn with :attr:`generator`) and per-sample
    flattened norms. ``f(x)`` is the ``outputs`` the loop already computed, so a step costs one
    extra forward pass on the moved inputs (tuple inputs are passed as ``model(*inputs)``).
    Gradients flow through both forward passes into the model; the normaliser
    ``mean_b ||f(x_b)||`` is treated as a constant (detached), so the penalty cannot be lowered
    by inflating the outputs.

    Parameters
    ----------
    beta:
        The fixed weight of the penalty (default 1.0: the relative error is O(1) for an
        unconstrained model, on the scale of a normalised task loss).
    eps:
        Added to the normaliser (default 1e-8).

    Notes
    -----
    ``attach`` needs ``action_in``; ``action_out`` defaults to the trivial action (invariant
    outputs). Relaxed layers, if any, are set to level 1, so that the penalty acts on the
    unconstrained model as in REMUL. Evaluated as trained (no projection).
    """

    name = "penalty"
    needs_actions = True
    fixed_level = 1.0

    def __init__(self, beta: float = 1.0, *, eps: float = 1e-8) -> None:
        super().__init__()
        self.beta = check_non_negative("beta", beta)
        self.eps = check_non_negative("eps", eps)
        self.last_error: float | None = None

    def equivariance_penalty(self, model: nn.Module, inputs: Any, outputs: Any) -> Tensor:
        """The differentiable relative error ``E`` of ``model`` on ``inputs`` (whose outputs
        are ``outputs``), with one freshly drawn element per sample."""
        if self.action_in is None or self.action_out is None:
            raise RuntimeError("penalty: call attach(model, action_in=...) before training")
        g = sample_per_sample(self.action_in.group, inputs, self.generator)
        moved_then_f = flat(call(model, self.action_in(g, inputs)))
        f_then_moved = flat(self.action_out(g, outputs))
        diff = torch.linalg.vector_norm(moved_then_f - f_then_moved, dim=1)
        scale = torch.linalg.vector_norm(flat(outputs).detach(), dim=1).mean()
        return diff.mean() / (scale + self.eps)

    def loss(self, task_loss: Tensor, model: nn.Module, inputs: Any, outputs: Any) -> Tensor:
        """``task_loss + beta * E`` (see the class docstring)."""
        error = self.equivariance_penalty(model, inputs, outputs)
        self.last_error = float(error.detach())
        return task_loss + self.beta * error.to(task_loss.dtype)

    def log(self) -> dict[str, Any]:
        out = super().log()
        out["beta"] = self.beta
        if self.last_error is not None:
            out["equivariance_error"] = self.last_error
        return out

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(beta=self.beta, eps=self.eps, last_error=self.last_error)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.beta = check_non_negative("beta", state.get("beta", self.beta))
        self.eps = check_non_negative("eps", state.get("eps", self.eps))
        self.last_error = state.get("last_error", self.last_error)

    def __repr__(self) -> str:
        return f"EquivariancePenalty(beta={self.beta:g}, eps={self.eps:g})"
