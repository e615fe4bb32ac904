"""E(n)-equivariant graph neural network layer (Satorras, Hoogeboom and Welling, 2021).

The layer works on dense, batched graphs: ``B`` graphs of (at most) ``N`` nodes, with node
features ``h`` ``(B, N, F)``, coordinates ``x`` ``(B, N, d)`` for any ``d``, optional edge
attributes ``(B, N, N, E)``, a node mask for padding and an adjacency matrix. Every graph, node
and edge is handled by one tensor operation: there is no Python loop over them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equirelax._checks import (
    check_batch,
    check_choice,
    check_dim,
    check_int,
    check_ndim,
    check_positive_int,
    check_tensor,
)
from equirelax.actions import Action, DirectSumAction, PointAction, TrivialAction, VectorAction
from equirelax.free_branches import EGNNFreeBranch
from equirelax.groups import Group

__all__ = ["EGNNLayer"]

_AGGREGATIONS = ("mean", "sum")


class EGNNLayer(nn.Module):
    r"""One E(n)-equivariant graph convolutional layer (EGCL), arXiv:2102.09844, eqs. (3)-(6).

    For every edge ``j -> i`` of the graph (``adjacency[b, i, j]`` true) and every node ``i``:

    .. math::

        m_{ij} &= \phi_e(h_i, h_j, \|x_i - x_j\|^2, a_{ij})                          && (3) \\
        x_i'   &= x_i + C \sum_{j \ne i} (x_i - x_j)\, \phi_x(m_{ij})                 && (4) \\
        m_i    &= \sum_{j \ne i} m_{ij}                                               && (5) \\
        h_i'   &= \phi_h(h_i, m_i) \; [+\, h_i]                                       && (6)

    ``C = 1 / |N(i)|`` (the number of real neighbours of ``i``) for
    ``coordinate_aggregation="mean"`` and ``C = 1`` for ``"sum"``. The residual ``+ h_i`` is
    added when ``residual`` is true and ``out_features == node_features``.

    With ``velocity=True`` the layer is the velocity variant of the paper's N-body model
    (section 3.2): given velocities ``v``,
    ``x_i' = x_i + \phi_v(h_i) v_i + C \sum_j (x_i - x_j) \phi_x(m_{ij})``.

    Options of the paper and of its reference model:

    * ``attention``: soft edges, ``m_{ij} <- \phi_{inf}(m_{ij}) m_{ij}`` with
      ``\phi_{inf} = sigmoid(Linear(m_{ij}))`` (section 3.3).
    * ``normalize``: use the unit vectors ``(x_i - x_j) / \|x_i - x_j\|`` in eq. (4)
      (a small ``1e-8`` keeps coincident points finite).
    * ``tanh``: bound ``\phi_x`` to ``(-1, 1)`` for stability.

    The networks are ``\phi_e = SiLU . Linear . SiLU . Linear``,
    ``\phi_h = Linear . SiLU . Linear``, ``\phi_x = Linear_{no bias} . SiLU . Linear`` (last
    layer initialised with a small gain, 0.001, so that early training barely moves the
    coordinates) and ``\phi_v = Linear . SiLU . Linear``.

    Equivariance: if ``x -> R x + t`` (``R`` in O(d)), ``v -> R v``, and nodes are permuted
    consistently in ``h``, ``x``, ``v``, ``mask``, ``edge_attr`` and ``adjacency``, then
    ``x' -> R x' + t`` and ``h'`` is invariant (permuted likewise).

    Parameters
    ----------
    node_features:
        ``F``, the size of the node features ``h``.
    hidden_features:
        ``H``, the size of the messages ``m_{ij}`` and of the hidden layers.
    out_features:
        Size of ``h'`` (default: ``node_features``).
    edge_features:
        ``E``, the size of the edge attributes ``a_{ij}`` (0: no edge attributes).
    update_coordinates:
        Apply eq. (4); if false ``x' = x`` and ``\phi_x`` is not created.
    residual:
        Add ``h_i`` to ``\phi_h(h_i, m_i)`` when the shapes match.
    coordinate_aggregation:
        ``"mean"`` or ``"sum"`` over the neighbours in eq. (4).
    attention, normalize, tanh:
        See above.
    velocity:
        Create ``\phi_v`` and require velocities ``v`` in :meth:`forward`.
    coordinate_clamp:
        Clip each edge's term ``(x_i - x_j) \phi_x(m_{ij})`` of eq. (4) componentwise to
        ``[-c, c]`` before aggregating (``None``: no clip). The official EGNN code clips at 100
        (``E_GCL.coord_model``); the clip only acts on runaway updates, where it breaks
        rotation equivariance (componentwise) but bounds the step.
    group:
        Optional group of the coordinates (e.g. ``Euclidean(O3())`` for E(3)). If given, the
        layer exposes ``action_in`` (on ``(h, x)`` or ``(h, x, v)``: invariant ``h``, points
        ``x``, vectors ``v``) and ``action_out`` (on ``(h', x')``), which metrics and the CR
        regulariser use; ``None`` leaves the layer usable for any ``d`` without actions.

    Examples
    --------
    >>> layer = EGNNLayer(8, 32)
    >>> h, x = torch.randn(2, 5, 8), torch.randn(2, 5, 3)
    >>> h2, x2 = layer(h, x)
    >>> h2.shape, x2.shape
    (torch.Size([2, 5, 8]), torch.Size([2, 5, 3]))
    """

    eps: float = 1e-8

    def __init__(
        self,
        node_features: int,
        hidden_features: int,
        out_features: int | None = None,
        edge_features: int = 0,
        *,
        update_coordinates: bool = True,
        residual: bool = True,
        coordinate_aggregation: str = "mean",
        attention: bool = False,
        normalize: bool = False,
        tanh: bool = False,
        velocity: bool = False,
        coordinate_clamp: float | None = None,
        group: Group | None = None,
    ) -> None:
        super().__init__()
        self.node_features = check_positive_int("node_features", node_features)
        self.hidden_features = check_positive_int("hidden_features", hidden_features)
        self.out_features = (
            node_features
            if out_features is None
            else check_positive_int("out_features", out_features)
        )
        edge_features = check_int("edge_features", edge_features)
        check_choice("coordinate_aggregation", coordinate_aggregation, _AGGREGATIONS)
        if velocity and not update_coordinates:
            raise ValueError(
                "velocity: expected False when update_coordinates is False "
                "(velocities only enter the coordinate update), received True"
            )
        self.edge_features = edge_features
        self.update_coordinates = bool(update_coordinates)
        self.residual = bool(residual) and self.out_features == self.node_features
        self.coordinate_aggregation = coordinate_aggregation
        self.attention = bool(attention)
        self.normalize = bool(normalize)
        self.tanh = bool(tanh)
        self.velocity = bool(velocity)
        if coordinate_clamp is not None and not (
            isinstance(coordinate_clamp, (int, float))
            and not isinstance(coordinate_clamp, bool)
            and 0 < coordinate_clamp < math.inf
        ):
            raise ValueError(
                "coordinate_clamp: expected a positive finite number or None, received "
                f"{coordinate_clamp!r}"
            )
        self.coordinate_clamp = None if coordinate_clamp is None else float(coordinate_clamp)
        if group is not None:
            if not isinstance(group, Group):
                raise TypeError(f"group: expected an equirelax Group or None, received {group!r}")
            parts: list[Action] = [TrivialAction(group), PointAction(group)]
            self.action_out = DirectSumAction(*parts)
            self.action_in = (
                DirectSumAction(*parts, VectorAction(group)) if velocity else self.action_out
            )

        f, hid, e = self.node_features, self.hidden_features, self.edge_features
        # phi_e's first Linear acts on [h_i, h_j, |x_i - x_j|^2, a_ij]; forward applies it in
        # pieces so that the (B, N, N, 2F + 1 + E) concatenation is never formed.
        self.phi_e = nn.Sequential(
            nn.Linear(2 * f + 1 + e, hid), nn.SiLU(), nn.Linear(hid, hid), nn.SiLU()
        )
        self.phi_h = nn.Sequential(
            nn.Linear(f + hid, hid), nn.SiLU(), nn.Linear(hid, self.out_features)
        )
        self.phi_inf: nn.Module | None = (
            nn.Sequential(nn.Linear(hid, 1), nn.Sigmoid()) if self.attention else None
        )
        self.phi_x: nn.Module | None = None
        if self.update_coordinates:
            last = nn.Linear(hid, 1, bias=False)
            nn.init.xavier_uniform_(last.weight, gain=0.001)
            layers: list[nn.Module] = [nn.Linear(hid, hid), nn.SiLU(), last]
            if self.tanh:
                layers.append(nn.Tanh())
            self.phi_x = nn.Sequential(*layers)
        self.phi_v: nn.Module | None = (
            nn.Sequential(nn.Linear(f, hid), nn.SiLU(), nn.Linear(hid, 1))
            if self.velocity
            else None
        )

    def free_branch(self) -> nn.Module:
        """A fresh free branch for this layer (used by :func:`~equirelax.relax`):
        a per-node MLP on the raw coordinates (and velocities) and features."""
        return EGNNFreeBranch(
            self.node_features, self.out_features, self.hidden_features, velocity=self.velocity
        )

    def forward(
        self,
        h: Tensor,
        x: Tensor,
        v: Tensor | None = None,
        *,
        edge_attr: Tensor | None = None,
        mask: Tensor | None = None,
        adjacency: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Update node features and coordinates.

        Parameters
        ----------
        h:
            Node features ``(B, N, F)`` (invariant).
        x:
            Coordinates ``(B, N, d)``.
        v:
            Velocities ``(B, N, d)``; required if and only if the layer has ``velocity=True``.
        edge_attr:
            Edge attributes ``(B, N, N, E)`` (or ``(1, N, N, E)`` for the whole batch);
            ``edge_attr[b, i, j]`` belongs to the message ``m_ij`` from ``j`` to ``i``.
            Required if and only if ``edge_features > 0``.
        mask:
            Boolean ``(B, N)``, true for real nodes and false for padding. Padding nodes send
            and receive no messages, keep their coordinates and get ``h' = 0``; their input
            values (even NaN) never reach the real nodes.
        adjacency:
            Boolean ``(B, N, N)`` (or ``(1, N, N)``): ``adjacency[b, i, j]`` true if ``j``
            sends a message to ``i``. Default: fully connected without self loops.

        Returns
        -------
        ``(h', x')`` with shapes ``(B, N, out_features)`` and ``(B, N, d)``.
        """
        h, x, v, edge_attr, mask, adjacency = self._check_inputs(
            h, x, v, edge_attr, mask, adjacency
        )
        h, x_in, v, edge_attr, edges = self._masked_edges(h, x, v, edge_attr, mask, adjacency)
        diff = x_in.unsqueeze(2) - x_in.unsqueeze(1)  # (B, N, N, d): x_i - x_j
        radial = diff.square().sum(dim=-1, keepdim=True)  # (B, N, N, 1)
        messages = self._messages(h, radial, edge_attr) * edges
        x_out = self._coordinate_update(x, v, diff, radial, messages, edges, h, mask)
        # Eqs. (5) and (6).
        aggregated = messages.sum(dim=2)  # (B, N, H)
        h_out = self.phi_h(torch.cat([h, aggregated], dim=-1))
        if self.residual:
            h_out = h_out + h
        if mask is not None:
            h_out = h_out * mask.unsqueeze(-1).to(h_out.dtype)
        return h_out, x_out

    def _masked_edges(
        self,
        h: Tensor,
        x: Tensor,
        v: Tensor | None,
        edge_attr: Tensor | None,
        mask: Tensor | None,
        adjacency: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor]:
        """Padding zeroed in ``h``, the coordinates, ``v`` and ``edge_attr``, and the edges
        present in the computation as ``(B, N, N, 1)`` floats (``[b, i, j]`` for ``j -> i``)."""
        batch, n, _ = h.shape
        if adjacency is None:
            edges = ~torch.eye(n, dtype=torch.bool, device=h.device).unsqueeze(0)
        else:
            edges = adjacency
        x_in = x
        if mask is not None:
            edges = edges & mask.unsqueeze(1) & mask.unsqueeze(2)
            keep = mask.unsqueeze(-1)
            h = torch.where(keep, h, h.new_zeros(()))
            x_in = torch.where(keep, x, x.new_zeros(()))
            if v is not None:
                v = torch.where(keep, v, v.new_zeros(()))
        edges_bool = edges.expand(batch, n, n).unsqueeze(-1)  # (B, N, N, 1)
        if edge_attr is not None:
            edge_attr = torch.where(edges_bool, edge_attr, h.new_zeros(()))
        return h, x_in, v, edge_attr, edges_bool.to(h.dtype)

    def _messages(self, h: Tensor, radial: Tensor, edge_attr: Tensor | None) -> Tensor:
        """Eq. (3), ``m_ij = phi_e(h_i, h_j, |x_i - x_j|^2, a_ij)`` ``(B, N, N, H)``, with
        ``phi_e``'s first Linear split over its inputs (and the attention ``phi_inf``)."""
        first: nn.Linear = self.phi_e[0]  # type: ignore[assignment]
        f = self.node_features
        weight = first.weight
        pre = (
            F.linear(h, weight[:, :f], first.bias).unsqueeze(2)  # h_i
            + F.linear(h, weight[:, f : 2 * f]).unsqueeze(1)  # h_j
            + radial * weight[:, 2 * f]
        )
        if edge_attr is not None:
            pre = pre + F.linear(edge_attr, weight[:, 2 * f + 1 :])
        messages = pre
        for layer in list(self.phi_e)[1:]:
            messages = layer(messages)
        if self.phi_inf is not None:
            messages = messages * self.phi_inf(messages)
        return messages

    def _coordinate_update(
        self,
        x: Tensor,
        v: Tensor | None,
        diff: Tensor,
        radial: Tensor,
        messages: Tensor,
        edges: Tensor,
        h: Tensor,
        mask: Tensor | None,
    ) -> Tensor:
        """Eq. (4) plus the velocity term: ``x_i + sum_j (x_i - x_j) phi_x(m_ij) + phi_v(h_i)
        v_i`` (padding nodes keep their coordinates)."""
        if self.phi_x is None:
            return x
        direction = diff / torch.sqrt(radial + self.eps**2) if self.normalize else diff
        terms = direction * self.phi_x(messages)  # (B, N, N, d)
        if self.coordinate_clamp is not None:
            terms = terms.clamp(-self.coordinate_clamp, self.coordinate_clamp)
        shift = (terms * edges).sum(dim=2)  # (B, N, d)
        if self.coordinate_aggregation == "mean":
            shift = shift / edges.sum(dim=2).clamp_min(1.0)
        if self.phi_v is not None and v is not None:
            shift = shift + self.phi_v(h) * v
        if mask is not None:
            shift = shift * mask.unsqueeze(-1).to(shift.dtype)
        return x + shift

    def _check_inputs(
        self,
        h: object,
        x: object,
        v: object,
        edge_attr: object,
        mask: object,
        adjacency: object,
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
        h = check_ndim("h", check_tensor("h", h), 3)
        if not h.is_floating_point():
            raise ValueError(f"h: expected a floating-point tensor, received dtype {h.dtype}")
        check_dim("h", h, 2, self.node_features)
        batch, n, _ = h.shape
        x = check_ndim("x", check_tensor("x", x), 3)
        if x.shape[:2] != (batch, n) or x.shape[2] < 1:
            raise ValueError(
                f"x: expected coordinates of shape ({batch}, {n}, d) to match h {tuple(h.shape)}, "
                f"received shape {tuple(x.shape)}"
            )
        _check_dtype("x", x, h)
        v = self._check_velocities(v, x, h)
        edge_attr = self._check_edge_attr(edge_attr, h)
        mask, adjacency = _check_mask_and_adjacency(mask, adjacency, batch, n)
        return h, x, v, edge_attr, mask, adjacency  # type: ignore[return-value]

    def _check_velocities(self, v: object, x: Tensor, h: Tensor) -> Tensor | None:
        if self.velocity:
            if v is None:
                raise ValueError(
                    "v: expected velocities (B, N, d) for velocity=True, received None"
                )
            v = check_tensor("v", v)
            if v.shape != x.shape:
                raise ValueError(
                    f"v: expected velocities of shape {tuple(x.shape)} like x, "
                    f"received shape {tuple(v.shape)}"
                )
            _check_dtype("v", v, h)
        elif v is not None:
            raise ValueError(
                "v: expected None for a layer built with velocity=False, received a tensor "
                "(build EGNNLayer(..., velocity=True) to use velocities)"
            )
        return v  # type: ignore[return-value]

    def _check_edge_attr(self, edge_attr: object, h: Tensor) -> Tensor | None:
        batch, n, _ = h.shape
        if self.edge_features:
            if edge_attr is None:
                raise ValueError(
                    f"edge_attr: expected a ({batch}, {n}, {n}, {self.edge_features}) tensor for "
                    f"edge_features={self.edge_features}, received None"
                )
            edge_attr = check_ndim("edge_attr", check_tensor("edge_attr", edge_attr), 4)
            check_batch("edge_attr", edge_attr, batch)
            if edge_attr.shape[1:] != (n, n, self.edge_features):
                raise ValueError(
                    f"edge_attr: expected shape ({batch}, {n}, {n}, {self.edge_features}), "
                    f"received shape {tuple(edge_attr.shape)}"
                )
            _check_dtype("edge_attr", edge_attr, h)
        elif edge_attr is not None:
            raise ValueError(
                "edge_attr: expected None for a layer built with edge_features=0, received a "
                "tensor (pass edge_features=E to EGNNLayer)"
            )
        return edge_attr  # type: ignore[return-value]

    def extra_repr(self) -> str:
        options = [
            f"node_features={self.node_features}",
            f"hidden_features={self.hidden_features}",
            f"out_features={self.out_features}",
            f"edge_features={self.edge_features}",
            f"coordinate_aggregation={self.coordinate_aggregation!r}",
        ]
        for name in (
            "update_coordinates",
            "residual",
            "attention",
            "normalize",
            "tanh",
            "velocity",
        ):
            if getattr(self, name):
                options.append(f"{name}=True")
        return ", ".join(options)


def _check_dtype(name: str, value: Tensor, h: Tensor) -> None:
    if value.dtype != h.dtype:
        raise ValueError(f"{name}: expected dtype {h.dtype} like h, received dtype {value.dtype}")


def _check_mask_and_adjacency(
    mask: object, adjacency: object, batch: int, n: int
) -> tuple[Tensor | None, Tensor | None]:
    """``mask`` ``(B, N)`` and ``adjacency`` ``(B or 1, N, N)``, both boolean, or ``None``."""
    if mask is not None:
        mask = check_tensor("mask", mask)
        if mask.dtype != torch.bool or mask.shape != (batch, n):
            raise ValueError(
                f"mask: expected a bool tensor of shape ({batch}, {n}), "
                f"received dtype {mask.dtype} and shape {tuple(mask.shape)}"
            )
    if adjacency is not None:
        adjacency = check_ndim("adjacency", check_tensor("adjacency", adjacency), 3)
        check_batch("adjacency", adjacency, batch)
        if adjacency.dtype != torch.bool or adjacency.shape[1:] != (n, n):
            raise ValueError(
                f"adjacency: expected a bool tensor of shape ({batch}, {n}, {n}), "
                f"received dtype {adjacency.dtype} and shape {tuple(adjacency.shape)}"
            )
    return mask, adjacency  # type: ignore[return-value]


class EGNN(nn.Module):
    """A stack of ``num_layers`` :class:`EGNNLayer` on ``(h, x)``, returning ``(h, x)``.

    Every layer keeps the node-feature width ``node_features``; keyword arguments
    (``edge_attr``, ``mask``, ``adjacency``) and velocities ``v`` are passed to every layer.

    Examples
    --------
    >>> model = EGNN(8, 16, num_layers=2)
    >>> h, x = model(torch.randn(2, 5, 8), torch.randn(2, 5, 3))
    >>> h.shape, x.shape
    (torch.Size([2, 5, 8]), torch.Size([2, 5, 3]))
    """

    def __init__(
        self, node_features: int, hidden_features: int, num_layers: int = 4, **layer_options: Any
    ) -> None:
        super().__init__()
        check_positive_int("num_layers", num_layers)
        self.layers = nn.ModuleList(
            EGNNLayer(node_features, hidden_features, **layer_options) for _ in range(num_layers)
        )

    def forward(
        self, h: Tensor, x: Tensor, v: Tensor | None = None, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        velocities = () if v is None else (v,)
        for layer in self.layers:
            h, x = layer(h, x, *velocities, **kwargs)
        return h, x
