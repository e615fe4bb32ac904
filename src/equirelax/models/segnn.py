"""The SEGNN model of the charged N-body experiment (Brandstetter et al., ICLR 2022).

Section 5 of arXiv:2110.02905 (N-body): steerable node features with ``l <= 1``, the input
``(x_i - x_c, v_i, |v_i|)`` (``1o + 1o + 0e``; ``x_c`` the centre of mass), edge attributes
``a_ij = Y(x_j - x_i)`` and node attributes ``a_i = mean_j Y(x_j - x_i) + Y(v_i)`` (spherical
harmonics up to ``l = 1``), invariant edge features ``(|x_i - x_j|, q_i q_j)``,
fully connected graphs, and one ``1o`` vector per particle added to its position. Its relaxation
sites (:meth:`NBodySEGNN.relaxation_sites`) are the two update maps of each message-passing
layer, as the official CR and ACE N-body code; each gets a dense map on its flattened inputs
``[x, a]``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from e3nn import o3
from torch import Tensor, nn

from equirelax._checks import check_choice, check_positive_int
from equirelax.actions import DirectSumAction, PointAction, TrivialAction, VectorAction
from equirelax.groups import O3, Euclidean
from equirelax.models.particles import check_particle_inputs
from equirelax.nn.steerable import (
    SEGNNLayer,
    SteerableGate,
    SteerableLinear,
    check_irreps,
    off_diagonal,
)

__all__ = ["NBodySEGNN"]

_ATTR = o3.Irreps("1x0e + 1x1o")  # spherical harmonics up to l = 1
_INPUT = o3.Irreps("1x1o + 1x1o + 1x0e")  # x_i - x_c, v_i, |v_i|
_OUTPUT = o3.Irreps("1x1o")
_OUTPUT_GAIN = 1e-3  # initial scale of the output layer's weights
_SQRT3 = math.sqrt(3.0)
# (edge attribute scale, node attribute scale) of each spherical-harmonics normalisation: the
# integral normalisation divides e3nn's component one by sqrt(4 pi), and the official code sums
# the node attribute's two terms; ours halves them so that its l = 0 component stays 1.
_ATTRIBUTE_SCALES = {
    "component": (1.0, 0.5),
    "integral": (1.0 / math.sqrt(4 * math.pi), 1.0 / math.sqrt(4 * math.pi)),
}
_RELATIVE_POSITIONS = ("x_i - x_j", "x_j - x_i")
_EDGE_DISTANCES = ("squared", "distance")


def _spherical_harmonics(vectors: Tensor) -> Tensor:
    """``Y(r / |r|)`` up to ``l = 1`` in e3nn's ``"component"`` normalisation:
    ``(1, sqrt(3) r / |r|)``, each component of unit mean square over the sphere (a zero
    vector gives ``(1, 0, 0, 0)``). Written out (it equals ``o3.spherical_harmonics(_ATTR,
    vectors, normalize=True, normalization="component")``, tested) so that ``torch.compile``
    never meets e3nn's ``Irreps`` in the forward pass."""
    unit = F.normalize(vectors, dim=-1)  # as e3nn: a zero vector stays 0, not nan
    return torch.cat([torch.ones_like(unit[..., :1]), _SQRT3 * unit], dim=-1)


class NBodySEGNN(nn.Module):
    r"""SEGNN for particle systems: ``(positions, velocities, charges) -> positions``.

    .. math::

        h^0_i &= \mathrm{TP}_{emb}([x_i - x_c, v_i, |v_i|], a_i), \qquad
        h^{l+1} = \mathrm{SEGNNLayer}_l(h^l; a_{ij}, a_i, (|x_i - x_j|, q_i q_j)), \\
        \hat x_i &= x_i + \mathrm{TP}_{out}(G(\mathrm{TP}_{pre}(h^L_i, a_i)), a_i)

    with ``a_ij = Y(x_j - x_i)`` and ``a_i = mean_{j != i} a_ij + Y(v_i)`` (spherical
    harmonics, ``l <= 1``, ``normalize=True``, e3nn's ``"integral"`` normalisation:
    ``Y(r) = (1, sqrt(3) r / |r|) / sqrt(4 pi)``), as the official code's ``O3Transform``;
    ``x_c`` the mean position, ``G`` a :class:`~equirelax.nn.SteerableGate` and ``TP`` the
    :class:`~equirelax.nn.SteerableLinear` layers. The output layer starts with weights scaled
    by ``1e-3`` (as EGNN's coordinate MLP), so the untrained model predicts about the input
    positions.

    Departures from the official N-body SEGNN (github.com/RobDHess/Steerable-E3-GNN, the code
    of the ACE and CR papers): the default hidden irreps ``32x0e + 16x1o`` (75k parameters;
    the official ``32x0e + 32x1o``, 147k, is ``hidden_irreps="32x0e + 32x1o"``) and mean
    aggregation (the official sums). Strict SEGNN on N-body (ACE protocol, 150 epochs, 3
    seeds, test MSE at the best validation epoch): 5.33e-3 ± 6.1e-4 at the defaults, 5.26e-3
    ± 3.4e-4 with the official width and summed messages too (1.33x the time per epoch),
    5.10e-3 ± 3.1e-4 with the earlier inputs below: all within noise. The official code
    centres positions by ``pos.mean(1)``, each particle's mean coordinate, which is not
    rotation equivariant; here ``x_c`` is the centre of mass. The earlier inputs stay
    selectable: ``harmonics_normalization="component"`` (node terms halved),
    ``relative_position="x_i - x_j"`` and ``edge_distance="squared"``. The layers'
    parametrisation is the official one (below).

    E(3) equivariant (``x -> R x + t``, ``v -> R v`` for ``R`` in O(3), charges invariant) and
    equivariant to permutations of the particles; ``action_in`` / ``action_out`` hold the E(3)
    actions on the inputs and the output. :func:`equirelax.relax` relaxes the
    ``2 * num_layers`` update maps (``placement="linear"``: all ``3 + 4 * num_layers``
    steerable linear layers).

    Parameters
    ----------
    hidden_irreps:
        Irreps of the node features (``l <= 1`` as SEGNN's N-body model). The default
        ``"32x0e + 16x1o"`` has 80 components and about 75k parameters with 4 layers.
    num_layers:
        Number of :class:`~equirelax.nn.SEGNNLayer` (4 in the paper).
    aggregation:
        ``"mean"`` (default: message sizes do not grow with ``N``) or ``"sum"`` of the
        messages over the ``N - 1`` neighbours.
    harmonics_normalization:
        ``"integral"`` (default, the official: ``a_ij`` and both node terms in e3nn's integral
        normalisation, summed) or ``"component"`` (``Y(r) = (1, sqrt(3) r / |r|)``, the node
        terms halved so that ``a_i``'s ``l = 0`` component is 1). Strict SEGNN does not mind
        (above), ACE does while its levels are far from 0: ACE-equality on N-body (150 epochs,
        seed 0) projected to 1.29e-2 with ``"integral"`` and 5.86e-3 with ``"component"``
        (likely: the smaller attributes shrink the equivariant maps, not the free branches).
    relative_position:
        The edge attribute's vector: ``"x_j - x_i"`` (default, the official) or ``"x_i - x_j"``.
    edge_distance:
        The invariant edge feature beside ``q_i q_j``: ``"distance"`` (default, the official,
        ``|x_i - x_j|``) or ``"squared"`` (``|x_i - x_j|^2``).
    parametrization:
        Of every :class:`~equirelax.nn.SteerableLinear`: ``"linear"`` (default), the official
        SEGNN's (weights and biases ``U(-1/sqrt(f), 1/sqrt(f))``, each output block scaled by
        ``sqrt(f)``, ``f`` its fan-in), or ``"e3nn"`` (``W ~ N(0, 1)``). An Adam step moves
        the official layers 8-11x more at the same learning rate: strict SEGNN on N-body (the
        ACE protocol, lr 9e-4, 150 epochs, seed 0) reached a test MSE of 0.0049 with
        ``"linear"`` against 0.0114 with ``"e3nn"`` (0.0071 at lr 9e-3).

    Examples
    --------
    >>> model = NBodySEGNN("8x0e + 4x1o", num_layers=2)
    >>> x, v, q = torch.randn(2, 5, 3), torch.randn(2, 5, 3), torch.ones(2, 5, 1)
    >>> model(x, v, q).shape
    torch.Size([2, 5, 3])
    """

    def __init__(
        self,
        hidden_irreps: str | o3.Irreps = "32x0e + 16x1o",
        num_layers: int = 4,
        *,
        aggregation: str = "mean",
        parametrization: str = "linear",
        harmonics_normalization: str = "integral",
        relative_position: str = "x_j - x_i",
        edge_distance: str = "distance",
    ) -> None:
        super().__init__()
        hidden = check_irreps("hidden_irreps", hidden_irreps)
        check_positive_int("num_layers", num_layers)
        check_choice("aggregation", aggregation, ("sum", "mean"))
        check_choice("harmonics_normalization", harmonics_normalization, tuple(_ATTRIBUTE_SCALES))
        check_choice("relative_position", relative_position, _RELATIVE_POSITIONS)
        check_choice("edge_distance", edge_distance, _EDGE_DISTANCES)
        self.hidden_irreps = hidden
        self.edge_scale, self.node_scale = _ATTRIBUTE_SCALES[harmonics_normalization]
        self.relative_sign = 1.0 if relative_position == "x_i - x_j" else -1.0
        self.edge_distance = edge_distance
        group = Euclidean(O3())
        self.action_in = DirectSumAction(
            PointAction(group), VectorAction(group), TrivialAction(group)
        )
        self.action_out = PointAction(group)
        linear = functools.partial(SteerableLinear, parametrization=parametrization)
        self.embedding = linear(_INPUT, _ATTR, hidden)
        self.layers = nn.ModuleList(
            SEGNNLayer(
                hidden,
                _ATTR,
                edge_features=2,
                aggregation=aggregation,
                parametrization=parametrization,
            )
            for _ in range(num_layers)
        )
        self.head_gate = SteerableGate(hidden)
        self.head_1 = linear(hidden, _ATTR, self.head_gate.irreps_in)
        self.head_2 = linear(hidden, _ATTR, _OUTPUT)
        with torch.no_grad():  # start near "no displacement", as EGNN's coordinate MLP
            self.head_2.weight.mul_(_OUTPUT_GAIN)

    def relaxation_sites(self, placement: str = "hidden") -> list[str]:
        """The layers :func:`equirelax.relax` wraps: ``"hidden"``, the two update maps
        (``update_1``, ``update_2``) of every message-passing layer; ``"linear"``, every
        steerable linear map (embedding, messages, updates and head)."""
        maps = ("update_1", "update_2")
        if placement == "linear":
            maps = ("message_1", "message_2", *maps)
        sites = [f"layers.{i}.{name}" for i in range(len(self.layers)) for name in maps]
        if placement == "linear":
            sites = ["embedding", *sites, "head_1", "head_2"]
        return sites

    def forward(self, positions: Tensor, velocities: Tensor, charges: Tensor) -> Tensor:
        """Predict positions ``(B, N, 3)`` from positions and velocities ``(B, N, 3)`` and
        charges ``(B, N, 1)``."""
        positions, velocities, charges = check_particle_inputs(positions, velocities, charges)
        relative = self.relative_sign * (positions.unsqueeze(2) - positions.unsqueeze(1))
        harmonics = _spherical_harmonics(relative)  # the diagonal, Y(0) = (1, 0, 0, 0), unused
        edge_attr = self.edge_scale * harmonics
        node_attr = self.node_scale * (
            off_diagonal(harmonics).sum(dim=2) / max(positions.shape[1] - 1, 1)
            + _spherical_harmonics(velocities)
        )
        distance = relative.square().sum(dim=-1)
        if self.edge_distance == "distance":  # clamped: the unused diagonal's sqrt(0) has no grad
            distance = distance.clamp_min(torch.finfo(distance.dtype).tiny).sqrt()
        edge_features = torch.stack([distance, charges * charges.transpose(1, 2)], dim=-1)
        centred = positions - positions.mean(dim=1, keepdim=True)
        speed = torch.linalg.vector_norm(velocities, dim=-1, keepdim=True)
        h = self.embedding(torch.cat([centred, velocities, speed], dim=-1), node_attr)
        for layer in self.layers:
            h = layer(h, edge_attr, node_attr, edge_features)
        displacement = self.head_2(self.head_gate(self.head_1(h, node_attr)), node_attr)
        return positions + displacement
