"""Vector Neurons: SO(3)-equivariant linear maps and nonlinearities (Deng et al., 2021).

A vector-neuron feature is a list of ``C`` three-dimensional vectors per point. Tensors are laid
out as ``(B, C, 3, ...)``: batch, channel, the 3-vector axis, then any trailing axes (points
``N``, ...). A rotation ``R`` acts on axis 2 (``VectorAction(SO3(), dim=2)``); the layers here
only mix channels and use rotation-invariant inner products, so they commute with it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from equirelax._checks import check_positive_int, check_tensor
from equirelax.actions import VectorAction
from equirelax.free_branches import VectorNeuronFreeBranch
from equirelax.groups import O3

__all__ = ["VNLeakyReLU", "VNLinear"]


def _check_vn_input(name: str, value: object, channels: int) -> Tensor:
    value = check_tensor(name, value)
    if value.ndim < 3 or value.shape[1] != channels or value.shape[2] != 3:
        raise ValueError(
            f"{name}: expected vector-neuron features (B, {channels}, 3, ...) with {channels} "
            f"channels at dimension 1 and 3-vectors at dimension 2, "
            f"received shape {tuple(value.shape)}"
        )
    if not value.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, received dtype {value.dtype}")
    return value


def _mix_channels(weight: Tensor, value: Tensor) -> Tensor:
    """``out[b, o, ...] = sum_c weight[o, c] value[b, c, ...]``."""
    return torch.einsum("oc,bc...->bo...", weight, value)


def _channel_weight(out_channels: int, in_channels: int) -> nn.Parameter:
    """A ``(out, in)`` weight initialised like ``nn.Linear``: ``U(-1/sqrt(in), 1/sqrt(in))``."""
    weight = torch.empty(out_channels, in_channels)
    bound = 1.0 / math.sqrt(in_channels)
    nn.init.uniform_(weight, -bound, bound)
    return nn.Parameter(weight)


class VNLinear(nn.Module):
    r"""Vector-neuron linear layer, arXiv:2104.12229: ``V' = W V``.

    ``W`` is a ``(out_channels, in_channels)`` matrix that mixes channels only; it has no bias
    (a bias vector would break equivariance). For ``V`` of shape ``(B, C_in, 3, ...)`` the
    output is ``(B, C_out, 3, ...)`` and ``VNLinear(V R) = VNLinear(V) R`` for every
    ``R`` in O(3) (rotation on axis 2).

    Examples
    --------
    >>> layer = VNLinear(4, 8)
    >>> layer(torch.randn(2, 4, 3, 100)).shape
    torch.Size([2, 8, 3, 100])
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        # Equivariant to every orthogonal map of the 3-vector axis.
        self.action_in = self.action_out = VectorAction(O3(), dim=2)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.weight = _channel_weight(out_channels, in_channels)

    def free_branch(self) -> nn.Module:
        """A fresh free branch for this layer (used by :func:`~equirelax.relax`):
        a dense map of the flattened vector channels."""
        return VectorNeuronFreeBranch(self.in_channels, self.out_channels)

    def forward(self, v: Tensor) -> Tensor:
        """Map ``(B, in_channels, 3, ...)`` features to ``(B, out_channels, 3, ...)``."""
        v = _check_vn_input("v", v, self.in_channels)
        return _mix_channels(self.weight, v)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}"


class VNLeakyReLU(nn.Module):
    r"""Vector-neuron leaky ReLU, arXiv:2104.12229 (Deng et al., 2021).

    With a feature ``q = W V`` and a learned direction ``k = U V`` per channel (``U`` has a
    single output channel, shared by all channels, when ``share_direction=True``):

    .. math::

        q^{relu} = \begin{cases}
            q & \langle q, k \rangle \ge 0 \\
            q - \frac{\langle q, k \rangle}{\|k\|^2 + \epsilon} k & \text{otherwise}
        \end{cases}, \qquad
        V' = \alpha\, q + (1 - \alpha)\, q^{relu}

    where ``alpha`` is ``negative_slope`` and inner products are taken over the 3-vector axis.
    A vector pointing into the half-space opposite ``k`` loses its component along ``k``.
    Inner products and norms are rotation invariant, so the layer is O(3) equivariant. ``eps``
    (default ``1e-6``) keeps ``k = 0`` finite.

    Attributes ``in_channels == out_channels == channels``.
    """

    def __init__(
        self,
        channels: int,
        negative_slope: float = 0.2,
        share_direction: bool = False,
        *,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        # Equivariant to every orthogonal map of the 3-vector axis.
        self.action_in = self.action_out = VectorAction(O3(), dim=2)
        self.channels = check_positive_int("channels", channels)
        self.in_channels = self.out_channels = self.channels
        self.negative_slope = _check_real("negative_slope", negative_slope)
        self.eps = _check_real("eps", eps)
        if self.eps < 0:
            raise ValueError(f"eps: expected a non-negative number, received {eps}")
        self.share_direction = bool(share_direction)
        self.weight = _channel_weight(channels, channels)  # W: features q
        self.direction = _channel_weight(1 if self.share_direction else channels, channels)  # U

    def forward(self, v: Tensor) -> Tensor:
        """Apply the nonlinearity to ``(B, channels, 3, ...)`` features (same output shape)."""
        v = _check_vn_input("v", v, self.channels)
        q = _mix_channels(self.weight, v)
        k = _mix_channels(self.direction, v)  # (B, C or 1, 3, ...)
        dot = (q * k).sum(dim=2, keepdim=True)
        k_norm2 = k.square().sum(dim=2, keepdim=True)
        rectified = torch.where(dot >= 0, q, q - dot / (k_norm2 + self.eps) * k)
        return self.negative_slope * q + (1.0 - self.negative_slope) * rectified

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, negative_slope={self.negative_slope}, "
            f"share_direction={self.share_direction}"
        )


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a real number, received {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, received {value}")
    return float(value)
