"""Unconstrained free branches ``f_free`` for relaxed layers, one per kind of feature.

Each branch has the same input and output structure as the equivariant layer it relaxes and
no symmetry constraint: a dense map on flattened features (vectors, irreps; built at its first
call where the shapes are known only then), a plain convolution on grids (group-convolution
feature maps), a per-node MLP that sees raw coordinates (EGNN), a weighted swish beside a
gated nonlinearity (RPP), a dense map on the flattened channel-by-3 features of vector neurons,
and a dense map on the concatenated irreps features of steerable layers and of e3nn's layers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter, is_lazy

from equirelax._checks import check_positive_int

__all__ = [
    "ConcatenatedFreeBranch",
    "ConvFreeBranch",
    "DenseFreeBranch",
    "E3nnFreeBranch",
    "EGNNFreeBranch",
    "GatedResidualFreeBranch",
    "LazyDenseFreeBranch",
    "SteerableFreeBranch",
    "VectorNeuronFreeBranch",
]


class DenseFreeBranch(nn.Module):
    """A dense map on the last ``len(in_shape)`` axes: ``(..., *in_shape) -> (..., *out_shape)``.

    The leading axes (batch, nodes, points) are shared, so the branch sees each sample's
    flattened features and nothing else. It is affine (:attr:`affine`), so CR's Lie-derivative
    regulariser takes it in closed form.
    """

    affine: ClassVar[bool] = True
    """``forward`` is affine in its inputs, ``W x + b`` (see
    :func:`equirelax.metrics.lie_derivative`)."""

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...], bias: bool = True):
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.linear = nn.Linear(math.prod(self.in_shape), math.prod(self.out_shape), bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        k = len(self.in_shape)
        if tuple(x.shape[x.ndim - k :]) != self.in_shape:
            raise ValueError(
                f"x: expected trailing shape {self.in_shape}, received {tuple(x.shape)}"
            )
        return self.linear(x.flatten(x.ndim - k)).unflatten(-1, self.out_shape)


class _UnsizedLinear(nn.Linear):
    """An ``nn.Linear`` whose weight and bias are ``UninitializedParameter`` until
    :meth:`LazyDenseFreeBranch.allocate` sizes them and makes it a plain ``nn.Linear``."""

    def __init__(self, bias: bool) -> None:
        super().__init__(0, 0, bias=False)
        self.weight = UninitializedParameter()
        if bias:
            self.bias = UninitializedParameter()

    def reset_parameters(self) -> None:
        if self.in_features:  # nothing to initialise while unsized
            super().reset_parameters()


class LazyDenseFreeBranch(DenseFreeBranch):
    """A :class:`DenseFreeBranch` whose shapes are known only at the first call of its layer.

    Its weight and bias are PyTorch's ``UninitializedParameter`` until :meth:`materialize`
    (or a state dict, which gives them the saved shapes): an optimiser built before that
    already holds them and steps them once they have values, and ``.to()``, ``.double()``,
    ``copy.deepcopy`` and pickling work as for PyTorch's lazy modules.
    :class:`~equirelax.Relaxed` materialises it from its first input and the equivariant
    layer's output; it then *becomes* a :class:`DenseFreeBranch` (same parameter objects,
    same state-dict keys), as a PyTorch lazy module becomes its ``cls_to_become``.

    Examples
    --------
    >>> branch = LazyDenseFreeBranch()
    >>> branch.materialize((4,), (2, 3))
    >>> type(branch).__name__, tuple(branch.linear.weight.shape)
    ('DenseFreeBranch', (6, 4))
    """

    def __init__(self, bias: bool = True) -> None:
        nn.Module.__init__(self)  # DenseFreeBranch's set-up needs the shapes: materialize()
        self.in_shape: tuple[int, ...] = ()
        self.out_shape: tuple[int, ...] = ()
        self.linear = _UnsizedLinear(bias)

    @property
    def has_uninitialized_params(self) -> bool:
        """Whether the weight and bias still wait for their shapes (no values yet)."""
        return is_lazy(self.linear.weight)

    def allocate(
        self,
        out_features: int,
        in_features: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Give the weight ``(out_features, in_features)`` and the bias ``(out_features,)``
        storage, in place and filled with zeros (e.g. for a state dict to fill)."""
        linear = self.linear
        linear.weight.materialize((out_features, in_features), device=device, dtype=dtype)
        if linear.bias is not None:
            linear.bias.materialize((out_features,), device=device, dtype=dtype)
        with torch.no_grad():
            for parameter in linear.parameters():
                parameter.zero_()
        linear.in_features, linear.out_features = in_features, out_features
        linear.__class__ = nn.Linear

    def materialize(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Set the shapes, give the parameters values (PyTorch's init, drawn from the CPU's
        generator on every ``device``, so that a seed gives one branch on all) unless a state
        dict gave them already, and become a :class:`DenseFreeBranch`."""
        rows, columns = math.prod(out_shape), math.prod(in_shape)
        if self.has_uninitialized_params:
            self.allocate(rows, columns, dtype=dtype)
            self.linear.reset_parameters()
            self.linear.to(device)
        elif tuple(self.linear.weight.shape) != (rows, columns):
            raise ValueError(
                f"free: expected a free branch from {tuple(in_shape)} to {tuple(out_shape)} "
                f"features (weight {(rows, columns)}), received a loaded weight of shape "
                f"{tuple(self.linear.weight.shape)}"
            )
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.__class__ = DenseFreeBranch  # type: ignore[assignment]

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError(
            "free: this LazyDenseFreeBranch has no shapes yet; its Relaxed layer materialises "
            "it at its first call (or call materialize(in_shape, out_shape))"
        )

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Size unset parameters as the saved ones before PyTorch copies them."""
        weight = state_dict.get(f"{prefix}linear.weight")
        if self.has_uninitialized_params and isinstance(weight, Tensor) and weight.ndim == 2:
            self.allocate(*weight.shape)  # on the device and in the dtype the module has
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class ConvFreeBranch(nn.Module):
    """A plain ``Conv2d`` on images or group feature maps.

    Input ``(B, C_in, H, W)`` or ``(B, C_in, G_in, H, W)`` (group axis flattened into the
    channels); output ``(B, C_out, G_out, H', W')``.
    """

    def __init__(
        self,
        in_channels: int,
        in_fibre: int,
        out_channels: int,
        out_fibre: int,
        kernel_size: int,
        padding: int,
    ) -> None:
        super().__init__()
        self.in_fibre = check_positive_int("in_fibre", in_fibre)
        self.out_shape = (check_positive_int("out_channels", out_channels), out_fibre)
        self.conv = nn.Conv2d(
            in_channels * in_fibre, out_channels * out_fibre, kernel_size, padding=padding
        )

    def forward(self, x: Tensor) -> Tensor:
        images = x.flatten(1, 2) if x.ndim == 5 else x
        out = self.conv(images)
        return out.unflatten(1, self.out_shape)


class EGNNFreeBranch(nn.Module):
    """Unconstrained per-node update for an EGNN layer:
    ``[h_i, x_i - x_c, (v_i)] -> (dh_i, dx_i)``.

    It sees coordinates relative to the centroid ``x_c`` of the (real) nodes, so it breaks
    rotations and reflections but keeps the data's exact translation symmetry (SPEC 2.7;
    ``centred=False`` gives it raw coordinates), and no neighbours; padded nodes (``mask``
    false) get zero updates. Called with the layer's arguments. ``translation_invariant``
    (true when centred): translating every node leaves the output unchanged, so CR skips the
    translation generators of its Lie-derivative regulariser (exactly 0 for this branch).
    """

    def __init__(
        self,
        node_features: int,
        out_features: int,
        hidden_features: int,
        spatial_dim: int = 3,
        velocity: bool = False,
        centred: bool = True,
    ) -> None:
        super().__init__()
        self.spatial_dim = check_positive_int("spatial_dim", spatial_dim)
        self.out_features = out_features
        self.centred = bool(centred)
        self.translation_invariant = self.centred
        width = node_features + spatial_dim * (2 if velocity else 1)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden_features),
            nn.SiLU(),
            nn.Linear(hidden_features, out_features + spatial_dim),
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
        if x.shape[-1] != self.spatial_dim:
            raise ValueError(
                f"x: expected {self.spatial_dim} coordinates per node for the free branch, "
                f"received shape {tuple(x.shape)}"
            )
        out = self.mlp(torch.cat(self._inputs(h, x, v, mask), dim=-1))
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)
        return out[..., : self.out_features], out[..., self.out_features :]

    def _inputs(
        self, h: Tensor, x: Tensor, v: Tensor | None = None, mask: Tensor | None = None
    ) -> list[Tensor]:
        """The MLP's inputs ``[h, x - x_c, (v)]`` (``x`` raw when not centred)."""
        if self.centred:
            x = _centred(x, mask)
        return [h, x] if v is None else [h, x, v]

    def pushforward(
        self,
        primals: Sequence[Tensor],
        tangents: Sequence[Tensor | None],
        *,
        edge_attr: Tensor | None = None,
        mask: Tensor | None = None,
        adjacency: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The Jacobian-vector products ``J(h, x, v) (t_h, t_x, t_v)`` of :meth:`forward` for
        ``k`` tangents at once, in closed form (no ``jvp``): with ``u = [h, x - x_c, v]`` and
        ``z = W_1 u + b_1``, ``J t = W_2 (silu'(z) * W_1 [t_h, t_x - t_c, t_v])`` (masked),
        ``silu'(z) = s (1 + z (1 - s))``, ``s = sigmoid(z)``. ``primals`` as :meth:`forward`'s
        positional arguments; ``tangents`` one ``(k, *primal.shape)`` tensor each (``None``:
        0); returns ``(k, ...)`` tangents of ``(dh, dx)``. Used by CR's regulariser."""
        first, last = self.mlp[0], self.mlp[2]
        inputs = self._inputs(*primals, mask=mask)
        weight = first.weight  # read once: a parametrisation recomputes it
        z = F.linear(torch.cat(inputs, dim=-1), weight, first.bias)
        gate = torch.sigmoid(z)
        slope = gate * (1 + z * (1 - gate))  # silu'(z)
        widths = [part.shape[-1] for part in inputs]
        terms = [
            F.linear(_centred(tangent, mask) if i == 1 and self.centred else tangent, w)
            for i, (tangent, w) in enumerate(
                zip(tangents, weight.split(widths, dim=1), strict=True)
            )
            if tangent is not None
        ]
        if not terms:
            raise ValueError("tangents: expected at least one tensor, received only None")
        moved = functools.reduce(torch.add, terms)
        out = F.linear(moved * slope, last.weight)
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)
        return out[..., : self.out_features], out[..., self.out_features :]


def _centred(x: Tensor, mask: Tensor | None) -> Tensor:
    """``x - x_c`` for ``x`` ``(..., B, N, d)`` (leading axes share the ``(B, N)`` mask)."""
    return x - _centroid(x, mask)


def _centroid(x: Tensor, mask: Tensor | None) -> Tensor:
    """The mean of the real nodes' coordinates ``(..., B, 1, d)`` (``mask`` ``(B, N)``: real
    nodes)."""
    if mask is None:
        return x.mean(dim=-2, keepdim=True)
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(dim=-2, keepdim=True) / weights.sum(dim=-2, keepdim=True).clamp_min(1)


class VectorNeuronFreeBranch(nn.Module):
    """A dense map on the flattened ``(C, 3)`` features of each point of a vector-neuron
    tensor ``(B, C, 3, ...)`` (affine, like :class:`DenseFreeBranch`)."""

    affine: ClassVar[bool] = True

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.linear = nn.Linear(3 * in_channels, 3 * out_channels)

    def forward(self, v: Tensor) -> Tensor:
        points = v.flatten(1, 2).movedim(1, -1)  # (B, ..., 3 C)
        out = self.linear(points).movedim(-1, 1)
        return out.unflatten(1, (self.out_channels, 3))


class GatedResidualFreeBranch(nn.Module):
    """``w * swish(x_u)``: the residual pathway RPP gives a gated nonlinearity (Finzi et al.
    2021, the official ``RPPGatedNonlinearity``'s ``w_basic * swish(values)``).

    ``x_u`` are the ungated features of the gate's input ``[scalars (s), gates (k), gated]``,
    i.e. the input without its ``k`` gate scalars (the gate's output layout), and ``w`` one
    weight per output feature, starting at 1 (scaled by the relaxed layer's init). Swish on
    the components of a non-scalar feature is not equivariant, so the pathway is free.
    """

    def __init__(self, scalars: int, gates: int, features: int) -> None:
        super().__init__()
        self.scalars, self.gates = scalars, gates
        self.weight = nn.Parameter(torch.ones(check_positive_int("features", features)))

    def forward(self, x: Tensor) -> Tensor:
        ungated = torch.cat([x[..., : self.scalars], x[..., self.scalars + self.gates :]], dim=-1)
        if ungated.shape[-1] != self.weight.shape[0]:
            raise ValueError(
                f"x: expected {self.scalars + self.gates + self.weight.shape[0]} features, "
                f"received {x.shape[-1]}"
            )
        return self.weight * F.silu(ungated)


class ConcatenatedFreeBranch(nn.Module):
    """A dense map on several inputs as if concatenated,
    ``f_free(x_1, ..., x_k) = W [x_1, ..., x_k] + b`` (leading axes broadcast, so the
    concatenation is never formed); affine, like :class:`DenseFreeBranch`."""

    affine: ClassVar[bool] = True

    def __init__(self, in_features: Sequence[int], out_features: int) -> None:
        super().__init__()
        self.sizes = [check_positive_int("in_features", size) for size in in_features]
        if not self.sizes:
            raise ValueError("in_features: expected at least one input size, received none")
        self.linear = nn.Linear(sum(self.sizes), out_features)

    def forward(self, *inputs: Tensor) -> Tensor:
        if len(inputs) != len(self.sizes):
            raise ValueError(f"inputs: expected {len(self.sizes)} tensors, received {len(inputs)}")
        weight = self.linear.weight  # read once: a norm-bound parametrisation recomputes it
        out = None
        for x, w in zip(inputs, weight.split(self.sizes, dim=1), strict=True):
            y = F.linear(x, w, self.linear.bias if out is None else None)
            out = y if out is None else out + y
        return out


class SteerableFreeBranch(ConcatenatedFreeBranch):
    """The free branch of a relaxed :class:`SteerableLinear`: a dense map on the concatenated
    flattened features, ``f_free(x_1, ..., x_k, a) = W [x_1, ..., x_k, a] + b`` (no symmetry
    constraint)."""

    def __init__(self, in_features: Sequence[int], attr_features: int, out_features: int) -> None:
        super().__init__([*in_features, attr_features], out_features)


class E3nnFreeBranch(ConcatenatedFreeBranch):
    """The free branch of a relaxed e3nn layer (see :mod:`equirelax.e3nn_interop`): a dense
    map on its flattened irreps features, ``W x + b`` for ``o3.Linear`` (``irreps_in.dim ->
    irreps_out.dim``), ``W [x, y] + b`` for a tensor product of ``x`` and ``y``.

    Called with the layer's arguments: positional arguments after the features and the
    keywords ``weight`` / ``bias`` (the external weights of an e3nn layer built with
    ``internal_weights=False``, e.g. per-edge radial weights) parametrise the equivariant map
    and are not used by the branch.
    """

    def forward(
        self, *inputs: Tensor, weight: Tensor | None = None, bias: Tensor | None = None
    ) -> Tensor:
        if len(inputs) < len(self.sizes):
            raise ValueError(
                f"inputs: expected {len(self.sizes)} feature tensors, received {len(inputs)}"
            )
        return super().forward(*inputs[: len(self.sizes)])
