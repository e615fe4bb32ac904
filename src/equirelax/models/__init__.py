"""Models for the built-in tasks (the library's model classes).

==========================  =========================================================
class                       what it is
==========================  =========================================================
:class:`NBodyEGNN`          EGNN (Satorras et al. 2021), 4 velocity-variant EGCL layers
:class:`NBodySEGNN`         SEGNN-like steerable network, e3nn tensor products, l <= 1
                            (loaded on first use: it imports e3nn)
:class:`EMLP`               EMLP (Finzi et al. 2021) on flat features (the official
                            architecture: ``hidden=384, bilinear="official",
                            linear="projected"``; :func:`uniform_representation`)
:class:`MLP`                plain SiLU MLP on flat features
:class:`NBodyMLP`           plain SiLU MLP on the flattened particle system
:class:`SmallCNN`           small unconstrained CNN classifier for images
:class:`SmokeCNN`           plain CNN on smoke-plume velocity windows
:class:`SmokeGroupCNN`      C4 group CNN on velocity windows
:class:`SmokeRelaxedGroupCNN`  relaxed C4 group CNN (Wang et al. 2022)
:class:`PolygonPointer`     O(2) x S_m DeepSets vector model (symmetry breaking)
:class:`ColouringGNN`       S_n message-passing node classifier (symmetry breaking)
:class:`SetDecoder`         S_slots DeepSets slot decoder (symmetry breaking)
==========================  =========================================================

The models by name, with the checks that a model fits a task, are the experiments' registry
(:mod:`equirelax.experiments.model_registry`).
"""

from __future__ import annotations

from typing import Any

from equirelax.models.breaking import ColouringGNN, PolygonPointer, SetDecoder
from equirelax.models.cnn import SmallCNN
from equirelax.models.egnn import NBodyEGNN
from equirelax.models.emlp import EMLP, MLP, uniform_representation
from equirelax.models.mlp import NBodyMLP
from equirelax.models.smoke import SmokeCNN, SmokeGroupCNN, SmokeRelaxedGroupCNN

__all__ = [
    "EMLP",
    "MLP",
    "ColouringGNN",
    "NBodyEGNN",
    "NBodyMLP",
    "NBodySEGNN",
    "PolygonPointer",
    "SetDecoder",
    "SmallCNN",
    "SmokeCNN",
    "SmokeGroupCNN",
    "SmokeRelaxedGroupCNN",
    "uniform_representation",
]


def __getattr__(name: str) -> Any:
    """``NBodySEGNN`` on first use (e3nn is slow to import)."""
    if name == "NBodySEGNN":
        from equirelax.models.segnn import NBodySEGNN

        return NBodySEGNN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
