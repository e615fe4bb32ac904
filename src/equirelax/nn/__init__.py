"""Equivariant building blocks: linear and bilinear maps between representations, nonlinearities,
vector neurons, EGNN layers, group convolutions (pixel or steerable filters), relaxed group
convolutions and steerable layers on e3nn irreps (SEGNN).
Each exposes ``action_in`` / ``action_out`` where its actions are fixed, so
:func:`equirelax.assert_equivariant` can check it without further arguments."""

from equirelax.nn.bilinear import EquivariantBilinear
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

__all__ = [
    "EGNN",
    "DiscHarmonicBasis",
    "EGNNLayer",
    "EquivariantBilinear",
    "EquivariantLinear",
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
