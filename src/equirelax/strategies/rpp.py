"""Residual pathway priors (RPP): Finzi, Benton, Wilson, NeurIPS 2021, arXiv 2112.01388.

Each relaxed layer is ``W = W_eq + W_free`` (here ``y = f_eq(x) + 1 * f_free(x)``) and the two
pathways get Gaussian priors of different widths, i.e. L2 penalties of different strengths::

    objective = task_loss + free_prior * sum_i ||W_free,i||^2
                          + equivariant_prior * sum_i ||W_eq,i||^2

over the relaxed layers ``i``, on their *weights* only (biases, levels and every layer that is
not relaxed carry no prior). A strong prior on the free pathway and a weak one on the
equivariant pathway make the model prefer the equivariant explanation of the data and use the
free branch only where the data demand it.

Following the official code (github.com/mfinzi/residual-pathway-priors, ``rpp/objax.py``
``MixedLinear`` and the ``*_runner.py`` / ``modified_inertia.py`` training losses):

* placement: every linear map and, on the E-MLP, every gated nonlinearity (``placement =
  "linear"``: the block maps, the gates and the head, not the bilinear product, as its
  ``MixedEMLP``). A gate's free branch is the residual pathway of ``RPPGatedNonlinearity``,
  ``w_basic * swish(x)`` on the ungated features
  (:class:`~equirelax.free_branches.GatedResidualFreeBranch`);
* initialisation: ``w_basic = 1e-3 * w_equiv`` and ``b_basic = 1e-3 * b``: a dense free branch
  of an :class:`~equirelax.nn.EquivariantLinear` starts at ``1e-3`` times the layer's dense
  matrix and bias (the raw ``W0``, ``b0`` with ``parametrisation="projected"``; the expanded
  equivariant ones with the basis parametrisation), a gate's ``w_basic`` at ``1e-3``; any
  other free branch keeps its PyTorch init rescaled to a root-mean-square of ``1e-3`` times the
  equivariant weights' (``configure_free(init="relative")``);
* prior: ``basic_wd * sum ||w_basic||^2 + equiv_wd * sum ||w_equiv||^2`` (the gates' ``w_basic``
  included, as the official sum over every variable named ``w_basic``) with the argparse
  defaults ``basic_wd = 1e2``, ``equiv_wd = 1e-3`` of ``experiments/perfect-symmetry/
  inertia_runner.py``, ``experiments/misspec-symmetry/inertia_runner.py`` and
  ``experiments/prior-var-ablation/modified_inertia.py``.

Departure: the official prior is on the raw, unprojected ``w_equiv`` (projected in the forward
pass); equirelax's equivariant layers are parametrised in their equivariant subspace by
default, so the prior is on those parameters (with the official parametrisation,
``EquivariantLinear(parametrisation="projected")`` or ``EMLP(linear="projected")``, it is on the
raw dense matrix, as the official's).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from equirelax._checks import check_non_negative
from equirelax.relaxed import relaxed_layers, weight_tensors
from equirelax.strategies.base import Strategy, require_relaxed

__all__ = ["RPP"]


class RPP(Strategy):
    """Residual pathway prior: level 1, a strong L2 prior on the free weights, a weak one on
    the equivariant weights of the relaxed layers (see the module docstring).

    Parameters
    ----------
    free_prior:
        L2 weight on the free branches' weights (``basic_wd``). Default ``1e2``.
    equivariant_prior:
        L2 weight on the relaxed layers' equivariant weights (``equiv_wd``). Default ``1e-3``.
    free_init_scale:
        ``attach`` starts each free branch at this times its equivariant layer's dense matrix,
        or rescales it to this times the equivariant weights' root-mean-square
        (``configure_free(init="relative")``; a lazily built branch when it is built).
        Default ``1e-3``.

    Notes
    -----
    ``attach`` needs a model with :class:`~equirelax.Relaxed` layers and sets every level to 1.
    Evaluated as trained: RPP keeps the free branch. Relaxes every linear map and the E-MLP's
    gates (:attr:`placement` ``"linear"``).
    """

    name = "rpp"
    fixed_level = 1.0
    placement = "linear"

    def __init__(
        self,
        free_prior: float = 1e2,
        equivariant_prior: float = 1e-3,
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
            layer.configure_free(init="relative", init_scale=self.free_init_scale)
        return model

    def prior_terms(self, model: nn.Module) -> tuple[Tensor, Tensor]:
        """``(free_prior * S_free, equivariant_prior * S_eq)`` for ``model`` now (the free
        branches are looked up at each call, so lazy ones are included once built)."""
        layers = relaxed_layers(model).values()
        free = [w for layer in layers if not layer.free_is_lazy for w in weight_tensors(layer.free)]
        equivariant = [w for layer in layers for w in weight_tensors(layer.equivariant)]
        return (
            self.free_prior * _sum_squares(free),
            self.equivariant_prior * _sum_squares(equivariant),
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


def _sum_squares(parameters: list[Tensor]) -> Tensor:
    """``sum_p ||p||^2`` (a 0-dim tensor; 0 for no parameters), over one concatenation of the
    flattened parameters: a few kernels instead of three per parameter."""
    if not parameters:
        return torch.zeros(())
    return torch.cat([p.reshape(-1) for p in parameters]).pow(2).sum()
