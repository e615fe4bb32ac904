"""Equivariant building blocks: linear and bilinear maps between representations, nonlinearities,
vector neurons, EGNN layers, group convolutions (pixel or steerable filters), relaxed group
convolutions and steerable layers on e3nn irreps (SEGNN).
Each exposes ``action_in`` / ``action_out`` where its actions are fixed, so
:func:`equirelax.assert_equivariant` can check it without further arguments."""

from typing import TYPE_CHECKING

from equirelax._lazy import lazy_exports

__all__ = [
    "EGNN",
    "DiscHarmonicBasis",
    "EGNNLayer",
    "EquivariantBilinear",
    "EquivariantLinear",
    "FeatureBilinear",
    "GatedNonlinearity",
    "GroupConv2d",
    "GroupPool",
    "LiftingConv2d",
    "NormNonlinearity",
    "RelaxedGroupConv2d",
    "RelaxedLiftingConv2d",
    "RelaxedTranslationConv2d",
    "SEGNNLayer",
    "SteerableGate",
    "SteerableLinear",
    "VNLeakyReLU",
    "VNLinear",
]

_ATTRIBUTES = {
    "EquivariantBilinear": "equirelax.nn.bilinear",
    "FeatureBilinear": "equirelax.nn.bilinear",
    "DiscHarmonicBasis": "equirelax.nn.disc_basis",
    "EGNN": "equirelax.nn.egnn",
    "EGNNLayer": "equirelax.nn.egnn",
    "GroupConv2d": "equirelax.nn.group_conv",
    "GroupPool": "equirelax.nn.group_conv",
    "LiftingConv2d": "equirelax.nn.group_conv",
    "EquivariantLinear": "equirelax.nn.linear",
    "GatedNonlinearity": "equirelax.nn.nonlinearities",
    "NormNonlinearity": "equirelax.nn.nonlinearities",
    "SEGNNLayer": "equirelax.nn.steerable",
    "SteerableGate": "equirelax.nn.steerable",
    "SteerableLinear": "equirelax.nn.steerable",
    "VNLeakyReLU": "equirelax.nn.vector_neurons",
    "VNLinear": "equirelax.nn.vector_neurons",
    "RelaxedGroupConv2d": "equirelax.nn.relaxed_group_conv",
    "RelaxedLiftingConv2d": "equirelax.nn.relaxed_group_conv",
    "RelaxedTranslationConv2d": "equirelax.nn.relaxed_group_conv",
}
__getattr__, __dir__ = lazy_exports(__name__, (), _ATTRIBUTES)

if TYPE_CHECKING:
    from equirelax.nn.bilinear import EquivariantBilinear, FeatureBilinear
    from equirelax.nn.disc_basis import DiscHarmonicBasis
    from equirelax.nn.egnn import EGNN, EGNNLayer
    from equirelax.nn.group_conv import GroupConv2d, GroupPool, LiftingConv2d
    from equirelax.nn.linear import EquivariantLinear
    from equirelax.nn.nonlinearities import GatedNonlinearity, NormNonlinearity
    from equirelax.nn.relaxed_group_conv import (
        RelaxedGroupConv2d,
        RelaxedLiftingConv2d,
        RelaxedTranslationConv2d,
    )
    from equirelax.nn.steerable import SEGNNLayer, SteerableGate, SteerableLinear
    from equirelax.nn.vector_neurons import VNLeakyReLU, VNLinear
