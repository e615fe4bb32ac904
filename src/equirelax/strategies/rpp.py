"""Residual pathway priors (RPP): Finzi, Benton, Wilson, NeurIPS 2021, arXiv 2112.01388.

Each relaxed layer is ``W = W_eq + W_free`` (here ``y = f_eq(x) + 1 * f_free(x)``) and the two
pathways get Gaussian priors of different widths, i.e. L2 penalties of different strengths::

    objective = task_loss + free_prior * sum ||theta_free||^2 + equivariant_prior * sum ||theta||^2

where ``theta_free`` are the parameters of the free branches and ``theta`` every other
trainable parameter of the model (levels excluded). A strong prior on the free pathway and a
weak one on the equivariant pathway make the model prefer the equivariant explanation of the
data and use the free branch only where the data demand it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from equirelax._checks import check_non_negative
from equirelax.relaxed import relaxed_layers
from equirelax.strategies.base import Strategy, require_relaxed

__all__ = ["RPP"]


class RPP(Strategy):
    """Residual pathway prior: level 1, strong L2 prior on free branches, weak on the rest.

    ``objective = task_loss + free_prior * S_free + equivariant_prior * S_eq`` with ``S_free``
    the sum of squares of all free-branch parameters and ``S_eq`` that of every other trainable
    model parameter (levels and buffers excluded). Finzi et al. (NeurIPS 2021, arXiv
    2112.01388) put these priors on the ``w_basic`` / ``w_equiv`` weights of their mixed EMLP.

    Parameters
    ----------
    free_prior:
        L2 weight on the free branches (``basic_wd`` in the authors' code). Default 1.0.
    equivariant_prior:
        L2 weight on the equivariant parameters (``equiv_wd``). Default 1e-4.
    free_init_scale:
        ``attach`` re-initialises each free branch as PyTorch's default times this scale
        (``configure_free(init="small")``; a lazily built branch when it is built). Default 1e-3.

    The defaults are those of the authors' modified-inertia prior ablation
    (``experiments/prior-var-ablation/modified_inertia.py`` in github.com/mfinzi/
    residual-pathway-priors: ``--basic_wd 1.0 --equiv_wd 1e-4``); their other scripts sweep
    ``basic_wd`` over 1e-3..1e2 and ``equiv_wd`` over 1e-6..1e-2, so both are task-dependent.

    ``attach`` needs a model with :class:`~equirelax.Relaxed` layers and sets every level to 1.
    Evaluated as trained: RPP keeps the free branch.
    """

    name = "rpp"
    fixed_level = 1.0

    def __init__(
        self,
        free_prior: float = 1.0,
        equivariant_prior: float = 1e-4,
        *,
        free_init_scale: float = 1e-3,
    ) -> None:
        super().__init__()
        self.free_prior = check_non_negative("free_prior", free_prior)
        self.equivariant_prior = check_non_negative("equivariant_prior", equivariant_prior)
        self.free_init_scale = check_non_negative("free_init_scale", free_init_scale)
        self.last_free_term: float | None = None
        self.last_equivariant_term: float | None = None

    def attach(self, model: nn.Module, **context: Any) -> nn.Module:
        layers = require_relaxed(self.name, model)
        model = super().attach(model, **context)
        for layer in layers.values():
            layer.configure_free(init="small", init_scale=self.free_init_scale)
        return model

    def prior_terms(self, model: nn.Module) -> tuple[Tensor, Tensor]:
        """``(free_prior * S_free, equivariant_prior * S_eq)`` for ``model`` now (the free
        branches are looked up at each call, so lazily built ones are included)."""
        free, other = _split_parameters(model)
        return (
            self.free_prior * _sum_squares(free),
            self.equivariant_prior * _sum_squares(other),
        )

    def loss(self, task_loss: Tensor, model: nn.Module, inputs: Any, outputs: Any) -> Tensor:
        """``task_loss`` plus both prior terms (see the class docstring)."""
        free_term, equivariant_term = self.prior_terms(model)
        self.last_free_term = float(free_term.detach())
        self.last_equivariant_term = float(equivariant_term.detach())
        return task_loss + (free_term + equivariant_term).to(task_loss.dtype)

    def log(self) -> dict[str, Any]:
        out = super().log()
        if self.last_free_term is not None:
            out["free_prior_term"] = self.last_free_term
            out["equivariant_prior_term"] = self.last_equivariant_term
        return out

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            free_prior=self.free_prior,
            equivariant_prior=self.equivariant_prior,
            free_init_scale=self.free_init_scale,
            last_free_term=self.last_free_term,
            last_equivariant_term=self.last_equivariant_term,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for key in ("free_prior", "equivariant_prior", "free_init_scale"):
            if key in state:
                setattr(self, key, check_non_negative(key, state[key]))
        self.last_free_term = state.get("last_free_term", self.last_free_term)
        self.last_equivariant_term = state.get("last_equivariant_term", self.last_equivariant_term)

    def __repr__(self) -> str:
        return (
            f"RPP(free_prior={self.free_prior:g}, equivariant_prior={self.equivariant_prior:g}, "
            f"free_init_scale={self.free_init_scale:g})"
        )


def _split_parameters(model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    """Trainable parameters of ``model`` split into (free-branch, other); levels left out."""
    free_ids: set[int] = set()
    level_ids: set[int] = set()
    for layer in relaxed_layers(model).values():
        level_ids.add(id(layer.level))
        if layer.free is not None:
            free_ids.update(id(p) for p in layer.free.parameters())
    free, other = [], []
    for p in model.parameters():
        if not p.requires_grad or id(p) in level_ids:
            continue
        (free if id(p) in free_ids else other).append(p)
    return free, other


def _sum_squares(parameters: list[Tensor]) -> Tensor:
    """``sum_p ||p||^2`` (a 0-dim tensor; 0 for no parameters)."""
    total = torch.zeros(())
    for p in parameters:
        total = total.to(p.device) + p.pow(2).sum()
    return total
