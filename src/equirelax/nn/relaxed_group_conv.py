r"""Relaxed group convolutions (Wang, Walters & Yu, ICML 2022, arXiv 2201.11969).

A relaxed group convolution keeps ``L`` filter banks ``psi_l`` and, per bank, one weight
``w_l(a)`` for every group element ``a``. The filter used for output element ``a`` is

.. math::

    \Psi(a) = \sum_{l=1}^{L} w_l(a)\, (a \cdot \psi_l),

so the layer is equivariant exactly when every ``w_l`` is constant over the group: then
``Psi(a) = a . (sum_l w_l psi_l)``, a plain group convolution. The weights start at ``1 / L``
(equivariant at initialisation); the data moves them apart, and the paper's regulariser

.. math::

    R = \alpha\; \mathrm{mean}_{l,\,(a, b)} |w_l(a) - w_l(b)|

over neighbouring elements ``(a, a s)`` for each generator ``s`` of the group keeps them
close. :meth:`RelaxedLiftingConv2d.level` measures the deviation from constant weights and
:meth:`to_equivariant` returns the exactly equivariant layer with the group-mean weights
(:func:`equirelax.project` uses it).

Departures from the official code (Rose-STL-Lab/Approximately-Equivariant-Nets, read for its
facts): the regulariser is the mean over neighbouring elements as SPEC 2.6 states (the paper
sums over all pairs; the official training script does not use this layer's regulariser), and
the group-to-group layer indexes the weights by the output element as the lifting layer does.

The relaxed-translation variant, :class:`RelaxedTranslationConv2d`, weighs ``L`` ordinary
convolutions per pixel, with a total-variation regulariser.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from equirelax._checks import check_positive_int
from equirelax.groups import FiniteGroup
from equirelax.nn.group_conv import GroupConv2d, LiftingConv2d

__all__ = ["RelaxedGroupConv2d", "RelaxedLiftingConv2d", "RelaxedTranslationConv2d"]


def _check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
        raise ValueError(f"alpha: expected a non-negative number, received {alpha!r}")
    if alpha == float("inf"):
        raise ValueError(f"alpha: expected a finite number, received {alpha!r}")
    return float(alpha)


def _neighbour_pairs(group: FiniteGroup) -> Tensor:
    """Index pairs ``(a, a s)`` ``(P, 2)`` for every element ``a`` and generator ``s``."""
    elements = group.elements()
    pairs = []
    for generator in group.discrete_generators():
        moved = group.compose(elements, generator.unsqueeze(0).expand_as(elements))
        pairs.append(torch.stack([group.index(elements), group.index(moved)], dim=1))
    return torch.cat(pairs)


class _RelaxedGroupConvolution(nn.Module):
    """Shared code: ``L`` banks as one plain layer with ``L C_out`` channels, the relaxed
    weights ``(L, |G|)``, the regulariser, the level and the projection."""

    plain: type[LiftingConv2d] | type[GroupConv2d]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        group: FiniteGroup,
        *,
        num_banks: int = 2,
        alpha: float = 0.0,
        padding: int | None = None,
        bias: bool = True,
        basis: str | None = None,
    ) -> None:
        super().__init__()
        self.num_banks = check_positive_int("num_banks", num_banks)
        self.alpha = _check_alpha(alpha)
        out_channels = check_positive_int("out_channels", out_channels)
        # Bank l, channel c is channel l C_out + c of one plain layer without bias.
        self.banks = self.plain(
            in_channels,
            self.num_banks * out_channels,
            kernel_size,
            group,
            padding=padding,
            bias=False,
            basis=basis,
        )
        self.group = self.banks.group
        self.in_channels, self.out_channels = self.banks.in_channels, out_channels
        self.kernel_size, self.padding = self.banks.kernel_size, self.banks.padding
        self.action_in, self.action_out = self.banks.action_in, self.banks.action_out
        self.relaxed_weights = nn.Parameter(
            torch.full((self.num_banks, self.group.order), 1.0 / self.num_banks)
        )
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        if self.bias is not None:
            fibre = self.group.order if self.banks.regular_input else 1
            bound = 1.0 / (self.in_channels * fibre * self.kernel_size**2) ** 0.5
            nn.init.uniform_(self.bias, -bound, bound)
        self.register_buffer("neighbours", _neighbour_pairs(self.group), persistent=False)

    def filter_bank(self) -> Tensor:
        """``sum_l w_l(a) (a . psi_l)`` for every output element ``a``, as one conv2d weight
        ``(C_out |G|, C_in [|G|], k, k)``."""
        n, c_out = self.group.order, self.out_channels
        bank = self.banks.filter_bank()  # (L C_out |G|, C_in [|G|], k, k)
        bank = bank.reshape(self.num_banks, c_out, n, *bank.shape[1:])
        weights = self.relaxed_weights.to(bank.dtype)
        return torch.einsum("la,lca...->ca...", weights, bank).flatten(0, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, C_in, [|G|,] H, W)`` to ``(B, C_out, |G|, H', W')``."""
        return self.banks.convolve(x, self.filter_bank(), self.bias)

    def regularizer(self) -> Tensor:
        """``alpha * mean_{l, (a, b)} |w_l(a) - w_l(b)|`` over neighbouring elements."""
        a, b = self.neighbours[:, 0], self.neighbours[:, 1]
        difference = self.relaxed_weights[:, a] - self.relaxed_weights[:, b]
        return self.alpha * difference.abs().mean()

    def level(self) -> Tensor:
        """Deviation from equivariance: ``mean_{l, a} |w_l(a) - mean_b w_l(b)|`` (0 iff the
        layer is equivariant by construction)."""
        weights = self.relaxed_weights
        return (weights - weights.mean(dim=1, keepdim=True)).abs().mean()

    def to_equivariant(self) -> LiftingConv2d | GroupConv2d:
        """The exactly equivariant layer with the group-mean weights ``w_l = mean_a w_l(a)``:
        base filter ``sum_l w_l psi_l`` (equal to this layer when the weights are constant)."""
        layer = self.plain(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.group,
            padding=self.padding,
            bias=self.bias is not None,
            basis=self.banks.basis_kind,
        )
        layer = layer.to(device=self.relaxed_weights.device, dtype=self.relaxed_weights.dtype)
        with torch.no_grad():
            banks = self.banks.weight.reshape(self.num_banks, self.out_channels, -1)
            mean = self.relaxed_weights.mean(dim=1)
            layer.weight.copy_(torch.einsum("l,lcj->cj", mean, banks).reshape_as(layer.weight))
            if self.bias is not None:
                layer.bias.copy_(self.bias)
        return layer

    def extra_repr(self) -> str:
        return f"num_banks={self.num_banks}, alpha={self.alpha}"


class RelaxedLiftingConv2d(_RelaxedGroupConvolution):
    r"""Relaxed lifting convolution: images to regular feature maps, with the filter for
    element ``a`` equal to ``sum_l w_l(a) (a . psi_l)`` (see the module docstring).

    Parameters
    ----------
    in_channels, out_channels, kernel_size : int
        As :class:`~equirelax.nn.LiftingConv2d`.
    group : FiniteGroup
        ``CyclicGroup(n)`` or ``DihedralGroup(n)``.
    num_banks : int, optional
        Number ``L`` of filter banks (default 2, the official code's default).
    alpha : float, optional
        Weight of :meth:`regularizer` (default 0: no regulariser).
    padding, bias, basis : optional
        As :class:`~equirelax.nn.LiftingConv2d`.

    Attributes
    ----------
    banks : LiftingConv2d
        The ``L`` banks as one layer with ``L C_out`` output channels (no bias).
    relaxed_weights : torch.nn.Parameter
        ``(L, |G|)``, initialised at ``1 / L``.
    bias : torch.nn.Parameter or None
    action_in, action_out : ImageAction
        The actions of the equivariant layer.

    Examples
    --------
    >>> from equirelax.groups import CyclicGroup
    >>> layer = RelaxedLiftingConv2d(1, 4, 3, CyclicGroup(4))
    >>> layer(torch.randn(2, 1, 9, 9)).shape, layer.level().item()
    (torch.Size([2, 4, 4, 9, 9]), 0.0)
    """

    plain = LiftingConv2d


class RelaxedGroupConv2d(_RelaxedGroupConvolution):
    r"""Relaxed group convolution between regular feature maps: the filter for output element
    ``a`` is ``sum_l w_l(a) (a . psi_l)`` under the regular image action (see the module
    docstring).

    Parameters and attributes are those of :class:`RelaxedLiftingConv2d`, with
    :class:`~equirelax.nn.GroupConv2d` in place of the lifting convolution.

    Examples
    --------
    >>> from equirelax.groups import CyclicGroup
    >>> layer = RelaxedGroupConv2d(3, 2, 3, CyclicGroup(4), num_banks=3)
    >>> layer(torch.randn(2, 3, 4, 9, 9)).shape
    torch.Size([2, 2, 4, 9, 9])
    """

    plain = GroupConv2d


class RelaxedTranslationConv2d(nn.Module):
    r"""Relaxed translation equivariance (Wang et al. 2022): ``L`` ordinary convolutions
    weighed per pixel,

    .. math::

        y_{o}(i, j) = \sum_{l} w_l(i, j)\, [\psi_l \star x]_o(i, j), \qquad
        R = \alpha \left(\mathrm{mean} |w(i + 1, j) - w(i, j)|
        + \mathrm{mean} |w(i, j + 1) - w(i, j)|\right),

    with ``w`` initialised at ``1 / L`` (translation equivariant, up to the image border) and
    the total-variation regulariser ``R``.

    Parameters
    ----------
    in_channels, out_channels, kernel_size : int
        As :class:`torch.nn.Conv2d` (odd ``kernel_size``, "same" padding).
    size : int or (int, int)
        Spatial size ``(H, W)`` of the inputs (the weights are per pixel).
    num_banks : int, optional
        Number ``L`` of convolutions (default 2).
    alpha : float, optional
        Weight of :meth:`regularizer` (default 0).
    bias : bool, optional
        One bias per output channel (default ``True``).

    Examples
    --------
    >>> layer = RelaxedTranslationConv2d(2, 3, 3, size=8)
    >>> layer(torch.randn(4, 2, 8, 8)).shape
    torch.Size([4, 3, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        size: int | tuple[int, int],
        *,
        num_banks: int = 2,
        alpha: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd size, received {kernel_size}")
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        self.size = (check_positive_int("size", height), check_positive_int("size", width))
        self.num_banks = check_positive_int("num_banks", num_banks)
        self.alpha = _check_alpha(alpha)
        self.banks = nn.Conv2d(
            in_channels,
            self.num_banks * out_channels,
            kernel_size,
            padding=kernel_size // 2,
            bias=False,
        )
        self.relaxed_weights = nn.Parameter(
            torch.full((self.num_banks, *self.size), 1.0 / self.num_banks)
        )
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        if self.bias is not None:
            bound = 1.0 / (in_channels * kernel_size**2) ** 0.5
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, C_in, H, W)`` to ``(B, C_out, H, W)``."""
        if (
            not isinstance(x, Tensor)
            or x.ndim != 4
            or tuple(x.shape[1:])
            != (
                self.in_channels,
                *self.size,
            )
        ):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"x: expected (B, {self.in_channels}, {self.size[0]}, {self.size[1]}), "
                f"received {shape}"
            )
        out = self.banks(x).unflatten(1, (self.num_banks, self.out_channels))
        out = torch.einsum("blchw,lhw->bchw", out, self.relaxed_weights.to(out.dtype))
        if self.bias is not None:
            out = out + self.bias.reshape(1, -1, 1, 1)
        return out

    def regularizer(self) -> Tensor:
        """``alpha * (mean |w(i+1, j) - w(i, j)| + mean |w(i, j+1) - w(i, j)|)``."""
        weights = self.relaxed_weights
        rows = (weights[:, 1:] - weights[:, :-1]).abs().mean()
        cols = (weights[:, :, 1:] - weights[:, :, :-1]).abs().mean()
        return self.alpha * (rows + cols)

    def level(self) -> Tensor:
        """``mean_{l, i, j} |w_l(i, j) - mean w_l|`` (0 iff translation equivariant)."""
        weights = self.relaxed_weights
        return (weights - weights.mean(dim=(1, 2), keepdim=True)).abs().mean()

    def to_equivariant(self) -> nn.Conv2d:
        """The :class:`torch.nn.Conv2d` with the pixel-mean weights, ``sum_l mean(w_l) psi_l``."""
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            padding=self.kernel_size // 2,
            bias=self.bias is not None,
        ).to(device=self.relaxed_weights.device, dtype=self.relaxed_weights.dtype)
        with torch.no_grad():
            banks = self.banks.weight.unflatten(0, (self.num_banks, self.out_channels))
            mean = self.relaxed_weights.mean(dim=(1, 2))
            conv.weight.copy_(torch.einsum("l,lc...->c...", mean, banks))
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"size={self.size}, num_banks={self.num_banks}, alpha={self.alpha}"
        )
