"""Symmetry breaking with relaxed equivariance (Kaba & Ravanbakhsh 2023, arXiv:2312.09016).

- :mod:`~equirelax.breaking.stabilisers`: stabilisers ``G_x`` of finite group actions, exact graph
  automorphisms, the relaxed-equivariance checker (the coset condition
  ``f(g x) ∈ (g G_x) f(x)``) and the equivariant limit ``G_x ⊆ G_f(x)``;
- :mod:`~equirelax.breaking.objects`: symmetry-breaking objects that equivariant layers consume
  (frames, node marks, orderings; ties broken deterministically or at random) and the noise
  injection baseline.
"""

from equirelax.breaking.objects import TIE_BREAKS, FrameBreaker, NoiseInjection, OrderingBreaker
from equirelax.breaking.stabilisers import (
    RelaxedEquivarianceReport,
    graph_automorphisms,
    is_relaxed_equivariant,
    keeps_stabiliser,
    stabiliser,
    stabiliser_mask,
)

__all__ = [
    "TIE_BREAKS",
    "FrameBreaker",
    "NoiseInjection",
    "OrderingBreaker",
    "RelaxedEquivarianceReport",
    "graph_automorphisms",
    "is_relaxed_equivariant",
    "keeps_stabiliser",
    "stabiliser",
    "stabiliser_mask",
]
