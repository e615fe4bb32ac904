"""Relaxation strategies: how the levels of relaxed layers move during training.

======================  ============================================================  =========
name                    what it does                                                  evaluates
======================  ============================================================  =========
``strict``              level 0 throughout (the equivariant model)                    as trained
``free``                level 1 throughout, no penalty                                as trained
``augment``             level 1, each sample moved by a random group element          as trained
``cr``                  scheduled global level + Lie-derivative/norm regulariser      projected
``rpp``                 level 1, strong L2 prior on free branches, weak on the rest   as trained
``penalty``             loss + beta * sampled equivariance error of the whole model   as trained
``ace``                 per-layer learnable levels under constraints (cooper-optim)   see ACE
``recm``                per-layer levels moved by a recurrent rule from held-out      as trained
                        benefit of asymmetry (equirelax's own formulation of RECM)
======================  ============================================================  =========

See :mod:`equirelax.strategies.base` for the interface a training loop calls, and
:func:`training_objective` for the objective of one training batch.
"""

from __future__ import annotations

from typing import Any

from equirelax._checks import check_options
from equirelax.strategies.ace import ACE
from equirelax.strategies.augment import Augment
from equirelax.strategies.base import Strategy, training_objective
from equirelax.strategies.cr import CR
from equirelax.strategies.penalty import EquivariancePenalty
from equirelax.strategies.recm import RECM
from equirelax.strategies.rpp import RPP
from equirelax.strategies.strict import Free, Strict

__all__ = [
    "ACE",
    "CR",
    "RECM",
    "RPP",
    "STRATEGIES",
    "Augment",
    "EquivariancePenalty",
    "Free",
    "Strategy",
    "Strict",
    "get",
    "training_objective",
]

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Strict, Free, Augment, CR, RPP, EquivariancePenalty, ACE, RECM)
}
"""The strategy classes by name (:func:`get` builds one with options)."""


def get(name: str, **options: Any) -> Strategy:
    """Build the strategy called ``name`` (see :data:`STRATEGIES`) with ``options``."""
    if name not in STRATEGIES:
        raise ValueError(f"name: expected one of {sorted(STRATEGIES)}, received {name!r}")
    check_options(f"strategy {name!r}", STRATEGIES[name], options)
    return STRATEGIES[name](**options)
