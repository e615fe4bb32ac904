r"""Models for the smoke-plume task: velocity windows ``(B, T, 2, H, W)`` to the next frame
``(B, 2, H, W)`` (Wang, Walters & Yu, ICML 2022, arXiv 2201.11969).

* :class:`SmokeCNN`: a plain convolution stack, no symmetry.
* :class:`SmokeGroupCNN`: C4-equivariant. Each frame's vector field is lifted to a regular
  C4 feature map by projecting it on the four rotated unit vectors,
  ``f_t(n) = e_n . v_t`` with ``e_n = (cos 2 pi n / 4, sin 2 pi n / 4)``, then C4 group
  convolutions, then the read-out ``v = sum_n f(n) e_n`` (the official network's lifting and
  read-out). Rotating the input field rotates the output field exactly.
* :class:`SmokeRelaxedGroupCNN`: the same network with relaxed group convolutions
  (:class:`~equirelax.nn.RelaxedGroupConv2d`); it returns its weights' regulariser with the
  prediction (:class:`~equirelax.outputs.PenalizedOutput`).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from equirelax._checks import check_int, check_positive_int, check_tensor
from equirelax.groups import CyclicGroup
from equirelax.nn import GroupConv2d, RelaxedGroupConv2d
from equirelax.outputs import PenalizedOutput

__all__ = ["SmokeCNN", "SmokeGroupCNN", "SmokeRelaxedGroupCNN"]


def _check_frames(x: object, frames: int, minimum: int) -> Tensor:
    x = check_tensor("x", x)
    if (
        x.ndim != 5
        or x.shape[1:3] != (frames, 2)
        or x.shape[-1] != x.shape[-2]
        or x.shape[-1] < minimum
    ):
        raise ValueError(
            f"x: expected square velocity windows (B, {frames}, 2, H, W) with H = W >= "
            f"{minimum}, received shape {tuple(x.shape)}"
        )
    return x


def _widths(frames: object, hidden: object, layers: object, kernel_size: object) -> tuple:
    frames = check_positive_int("frames", frames)
    hidden = check_positive_int("hidden", hidden)
    layers = check_int("layers", layers, minimum=2)
    kernel_size = check_positive_int("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size: expected an odd size, received {kernel_size}")
    return frames, hidden, layers, kernel_size


class SmokeCNN(nn.Module):
    """``layers`` 'same' convolutions with ReLU between them on the ``2 T`` stacked velocity
    channels; no symmetry.

    Parameters
    ----------
    frames:
        Input frames ``T`` (the task's 10).
    hidden:
        Channels of the hidden layers.
    layers:
        Convolutions (at least 2).
    kernel_size:
        Odd filter size.
    """

    def __init__(
        self, frames: int = 10, hidden: int = 64, layers: int = 5, kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.frames, hidden, layers, self.kernel_size = _widths(frames, hidden, layers, kernel_size)
        widths = [2 * self.frames] + [hidden] * (layers - 1) + [2]
        convs: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            convs.append(nn.Conv2d(a, b, self.kernel_size, padding=self.kernel_size // 2))
            if i < layers - 1:
                convs.append(nn.ReLU())
        self.net = nn.Sequential(*convs)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, 2, H, W) -> (B, 2, H, W)``."""
        x = _check_frames(x, self.frames, self.kernel_size)
        return self.net(x.flatten(1, 2))


class SmokeGroupCNN(nn.Module):
    """C4-equivariant: lift, ``layers`` C4 group convolutions with ReLU between them, read out
    (see the module docstring).

    Parameters are those of :class:`SmokeCNN`; ``hidden`` counts regular C4 channels (each
    ``4`` maps wide).
    """

    def __init__(
        self, frames: int = 10, hidden: int = 32, layers: int = 5, kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.frames, hidden, layers, self.kernel_size = _widths(frames, hidden, layers, kernel_size)
        self.group = CyclicGroup(4)
        angles = torch.arange(4) * (2 * math.pi / 4)
        directions = torch.stack([angles.cos(), angles.sin()], dim=1).round()
        self.register_buffer("directions", directions, persistent=False)  # e_n, (4, 2)
        widths = [self.frames] + [hidden] * (layers - 1) + [1]
        self.layers = nn.ModuleList(self._layer(a, b) for a, b in itertools.pairwise(widths))

    def _layer(self, in_channels: int, out_channels: int) -> nn.Module:
        return GroupConv2d(in_channels, out_channels, self.kernel_size, self.group)

    def relaxation_sites(self, placement: str) -> list[str]:
        """Every group convolution (``"hidden"`` and ``"linear"`` alike: the lifting and the
        read-out are fixed maps)."""
        return [f"layers.{i}" for i in range(len(self.layers))]

    def lift(self, x: Tensor) -> Tensor:
        """``(B, T, 2, H, W) -> (B, T, 4, H, W)``: ``f_t(n) = e_n . v_t``."""
        return torch.einsum("nc,btchw->btnhw", self.directions.to(x.dtype), x)

    def read_out(self, features: Tensor) -> Tensor:
        """``(B, 1, 4, H, W) -> (B, 2, H, W)``: ``v = sum_n f(n) e_n``."""
        return torch.einsum("bnhw,nc->bchw", features[:, 0], self.directions.to(features.dtype))

    def features(self, x: Tensor) -> Tensor:
        """The last group convolution's output ``(B, 1, 4, H, W)``."""
        out = self.lift(_check_frames(x, self.frames, self.kernel_size))
        for i, layer in enumerate(self.layers):
            out = layer(out)
            if i < len(self.layers) - 1:
                out = torch.relu(out)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, 2, H, W) -> (B, 2, H, W)``."""
        return self.read_out(self.features(x))


class SmokeRelaxedGroupCNN(SmokeGroupCNN):
    """:class:`SmokeGroupCNN` with relaxed group convolutions (Wang et al. 2022): ``num_banks``
    filter banks per layer, weights ``w_l(a)`` starting at ``1 / L`` (equivariant at
    initialisation), and the regulariser ``alpha * mean |w_l(a) - w_l(a s)|`` summed over the
    layers, returned with the prediction as a
    :class:`~equirelax.outputs.PenalizedOutput`. ``project`` gives the exactly equivariant
    :class:`SmokeGroupCNN` layers (the group mean of each bank's weights).

    Parameters
    ----------
    num_banks:
        ``L`` (the official default 2).
    alpha:
        The regulariser's weight (default 0: the official training script uses none for this
        layer).
    """

    def __init__(
        self,
        frames: int = 10,
        hidden: int = 32,
        layers: int = 5,
        kernel_size: int = 3,
        num_banks: int = 2,
        alpha: float = 0.0,
    ) -> None:
        self.num_banks, self.alpha = num_banks, alpha
        super().__init__(frames, hidden, layers, kernel_size)

    def _layer(self, in_channels: int, out_channels: int) -> nn.Module:
        return RelaxedGroupConv2d(
            in_channels,
            out_channels,
            self.kernel_size,
            self.group,
            num_banks=self.num_banks,
            alpha=self.alpha,
        )

    def _relaxed(self) -> list[RelaxedGroupConv2d]:
        return [layer for layer in self.layers if isinstance(layer, RelaxedGroupConv2d)]

    def level(self) -> Tensor:
        """The largest deviation of any relaxed layer's weights from their group mean (0 once
        projected)."""
        levels = [layer.level() for layer in self._relaxed()]
        return torch.stack(levels).max() if levels else self.directions.new_zeros(())

    def forward(self, x: Tensor) -> PenalizedOutput:  # type: ignore[override]
        """``(B, T, 2, H, W) ->`` the next frame ``(B, 2, H, W)`` and the regulariser (0 once
        projected)."""
        output = super().forward(x)
        terms = [layer.regularizer() for layer in self._relaxed()]
        penalty = torch.stack(terms).sum() if terms else output.new_zeros(())
        return PenalizedOutput(output, penalty)
