"""Group convolutions on the plane: lifting convolution, group convolution and group pooling.

A planar group convolution network (Cohen & Welling 2016) works with feature maps
``f: G x Z^2 -> R^C`` stored as ``(B, C, |G|, H, W)`` tensors. :class:`LiftingConv2d` maps an
image ``(B, C, H, W)`` to such a feature map, :class:`GroupConv2d` maps feature maps to feature
maps and :class:`GroupPool` reduces the group axis to obtain an image again. With the actions of
:class:`~equirelax.actions.ImageAction`,

* images: ``(g . f)(x) = f(g^-1 x)``,
* regular feature maps: ``(g . f)(h, x) = f(g^-1 h, g^-1 x)``,

every layer satisfies ``layer(g . x) = g . layer(x)``. Equivariance is exact for groups whose
elements map the pixel grid onto itself (C_1, C_2, C_4, D_1, D_2, D_4) and odd kernel sizes.

Filters come from one of two parametrisations (``basis=``):

* ``"pixel"``: a free ``k x k`` filter, moved to each group element by the image action (a
  pixel permutation for multiples of 90 degrees, bilinear interpolation otherwise). Exact for
  the groups above, with the most parameters; for other angles the interpolated filters are
  smoother than the original, which favours the 90-degree elements.
* ``"steerable"``: coefficients over a band-limited basis of Gaussian rings times circular
  harmonics (:class:`~equirelax.nn.DiscHarmonicBasis`, as e2cnn / escnn), rotated exactly in
  coefficient space, so every element's filter samples the exactly rotated continuous filter
  and no element is favoured. Exact for multiples of 90 degrees; for other angles equivariant
  up to the sampling of smooth inputs.

The default (``basis=None``) is ``"pixel"`` for the groups above and ``"steerable"`` for every
other C_n and D_n.

Every layer builds its whole transformed filter bank with one batched call of the action and
then runs a single :func:`torch.nn.functional.conv2d`.

References
----------
.. [1] T. S. Cohen and M. Welling, "Group Equivariant Convolutional Networks", ICML 2016,
   arXiv:1602.07576.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equirelax._checks import check_dim, check_ndim, check_positive_int, check_tensor
from equirelax.actions import ImageAction
from equirelax.free_branches import ConvFreeBranch
from equirelax.groups import FiniteGroup, Group
from equirelax.nn.disc_basis import DiscHarmonicBasis

__all__ = ["GroupConv2d", "GroupPool", "LiftingConv2d"]


def _check_group(group: object) -> FiniteGroup:
    if not isinstance(group, Group):
        raise TypeError(f"group: expected an equirelax FiniteGroup, received {group!r}")
    if not isinstance(group, FiniteGroup):
        raise ValueError(f"group: expected a finite group acting on the plane, received {group}")
    return group


def _check_kernel_size(kernel_size: object) -> int:
    size = check_positive_int("kernel_size", kernel_size)
    if size % 2 == 0:
        raise ValueError(
            f"kernel_size: expected an odd size (the filter must be centred on a pixel to be "
            f"rotated about it), received {size}"
        )
    return size


BASES = ("pixel", "steerable")
"""Filter parametrisations of the planar group convolutions (see the module docstring)."""


def _check_basis(basis: object, exact: bool) -> str:
    """``basis`` or, for ``None``, pixels where the group maps the grid onto itself."""
    if basis is None:
        return "pixel" if exact else "steerable"
    if basis not in BASES:
        raise ValueError(f"basis: expected one of {BASES} or None, received {basis!r}")
    return str(basis)


def _check_padding(padding: object, kernel_size: int) -> int:
    if padding is None:
        return kernel_size // 2
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding: expected a non-negative int or None, received {padding!r}")
    return padding


def _check_images(
    x: object, channels: int | None, group_order: int | None, kernel_size: int = 1
) -> Tensor:
    """Check ``(B, C, H, W)`` (``group_order=None``) or ``(B, C, |G|, H, W)`` square inputs at
    least as large as a ``kernel_size`` filter."""
    x = check_tensor("x", x)
    layout = "(B, C, H, W)" if group_order is None else f"(B, C, {group_order}, H, W)"
    check_ndim("x", x, 4 if group_order is None else 5)
    if channels is not None:
        check_dim("x", x, 1, channels)
    if group_order is not None:
        check_dim("x", x, 2, group_order)
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"x: expected square images {layout} with H == W, received shape {tuple(x.shape)}"
        )
    if x.shape[-1] < kernel_size:
        raise ValueError(
            f"x: expected images at least as large as the {kernel_size}x{kernel_size} filter, "
            f"received shape {tuple(x.shape)}"
        )
    return x


def _init_parameters(weight: Tensor, bias: Tensor | None, fan_in: int) -> None:
    """Kaiming-uniform initialisation as in :class:`torch.nn.Conv2d`: ``U(-b, b)`` with
    ``b = 1 / sqrt(fan_in)`` for the weight and the bias."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        if bias is not None:
            bias.uniform_(-bound, bound)


class _GroupConvolution(nn.Module):
    """Shared code of the lifting and group convolutions: checks, parameters, one conv2d.

    ``regular_input`` says whether the input carries a group axis ``(B, C, |G|, H, W)``;
    subclasses build the transformed filter bank (:meth:`filter_bank`).
    """

    regular_input: bool

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        group: FiniteGroup,
        *,
        padding: int | None = None,
        bias: bool = True,
        basis: str | None = None,
    ) -> None:
        super().__init__()
        self.group = _check_group(group)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.kernel_size = _check_kernel_size(kernel_size)
        self.padding = _check_padding(padding, self.kernel_size)
        self.action_in = ImageAction(self.group, "regular" if self.regular_input else "trivial")
        self.action_out = ImageAction(self.group, "regular")
        self.basis_kind = _check_basis(basis, self.action_out.exact)
        fibre = (self.group.order,) if self.regular_input else ()
        k = self.kernel_size
        self.basis: DiscHarmonicBasis | None = None
        if self.basis_kind == "steerable":
            self.basis = DiscHarmonicBasis(k)
            matrices = self.group.standard_representation()(self.group.elements())
            # D(h) for every element, derived from the group: not part of a state dict.
            self.register_buffer("steering", self.basis.steering(matrices), persistent=False)
            if self.regular_input:
                # source[h, h'] = index(h^-1 h'), the filter's group axis seen from h.
                inverses = self.group.index(self.group.inverse(self.group.elements()))
                table = self.group.multiplication_table
                self.register_buffer("source", table[inverses], persistent=False)
            shape: tuple[int, ...] = (*fibre, self.basis.size)
        else:
            shape = (*fibre, k, k)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *shape))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw the weight and bias (uniform, bound ``b = 1 / sqrt(fan_in)``, with
        ``fan_in = C_in k^2``, times ``|G|`` for a group-axis input). Steerable coefficients use
        ``b k / sqrt(n)`` for ``n`` unit-norm basis functions, so that a filter's expected
        energy is that of a pixel filter."""
        fibre = self.group.order if self.regular_input else 1
        k = self.kernel_size
        _init_parameters(self.weight, self.bias, self.in_channels * fibre * k**2)
        if self.basis is not None:
            with torch.no_grad():
                self.weight.mul_(k / math.sqrt(self.basis.size))

    def base_filter(self) -> Tensor:
        """The filter ``psi`` at the identity as pixels: ``weight`` itself (``"pixel"``) or
        the sampled expansion of its coefficients (``"steerable"``)."""
        if self.basis is None:
            return self.weight
        return self.basis.filters(self.weight)

    def filter_bank(self) -> Tensor:
        """The transformed filters as one conv2d weight."""
        raise NotImplementedError(f"{type(self).__name__} must build its filter bank")

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, C_in, [|G|,] H, W)`` to ``(B, C_out, |G|, H', W')``."""
        return self.convolve(x, self.filter_bank(), self.bias)

    def free_branch(self) -> nn.Module:
        """A fresh free branch for this layer (used by :func:`~equirelax.relax`): an
        unconstrained convolution with the same fibres, filter size and padding."""
        order = self.group.order
        fibre_in = order if self.regular_input else 1
        return ConvFreeBranch(
            self.in_channels, fibre_in, self.out_channels, order, self.kernel_size, self.padding
        )

    def convolve(self, x: Tensor, filter_bank: Tensor, bias: Tensor | None) -> Tensor:
        """Check ``x`` against this layer's input layout and run one conv2d with
        ``filter_bank`` ``(C |G|, C_in [|G|], k, k)`` and a per-channel ``bias`` ``(C,)`` shared
        over the group axis: ``(B, C, |G|, H', W')``, ``C`` read from the bank."""
        n = self.group.order
        x = _check_images(x, self.in_channels, n if self.regular_input else None, self.kernel_size)
        images = x.flatten(1, 2) if self.regular_input else x
        bias = None if bias is None else bias.repeat_interleave(n)
        out = F.conv2d(images, filter_bank, bias, padding=self.padding)
        return out.reshape(x.shape[0], -1, n, *out.shape[-2:])

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"group={self.group}, padding={self.padding}, bias={self.bias is not None}, "
            f"basis={self.basis_kind!r}"
        )


class LiftingConv2d(_GroupConvolution):
    r"""Lifting convolution from images to feature maps on a finite planar group.

    .. math::

        [f \star \psi](h, x) = \sum_{y \in \mathbb{Z}^2} \sum_{c} f_c(x + y)\,
        \psi_c(h^{-1} y), \qquad h \in G,

    i.e. the output at group element ``h`` is the cross-correlation of the input with the filter
    rotated (and reflected) by ``h``, ``(h . psi)(y) = psi(h^-1 y)``, using the same convention
    as :class:`~equirelax.actions.ImageAction`. The layer is equivariant,
    ``f(g . x) = g . f(x)``, with ``ImageAction(group)`` on the input and
    ``ImageAction(group, "regular")`` on the output (Cohen & Welling 2016).

    Parameters
    ----------
    in_channels : int
        Input channels ``C_in``.
    out_channels : int
        Output channels ``C_out`` (each has ``|G|`` group channels).
    kernel_size : int
        Odd spatial size ``k`` of the square filter.
    group : FiniteGroup
        A finite group acting on the plane (e.g. ``CyclicGroup(4)``, ``DihedralGroup(4)``).
    padding : int or None, optional
        Zero padding on each side; ``None`` (default) pads ``k // 2`` ("same" output size).
    bias : bool, optional
        Add a learnable bias per output channel, shared over the group axis (default ``True``).
    basis : {"pixel", "steerable"} or None, optional
        Filter parametrisation (see the module docstring); ``None`` (default): pixel filters
        for C_1, C_2, C_4, D_1, D_2, D_4, steerable filters otherwise.

    Attributes
    ----------
    group : FiniteGroup
    in_channels, out_channels, kernel_size, padding : int
    basis_kind : str
        ``"pixel"`` or ``"steerable"``.
    basis : DiscHarmonicBasis or None
        The steerable basis (``None`` for pixel filters).
    weight : torch.nn.Parameter
        The base filter ``psi``: ``(C_out, C_in, k, k)`` pixels, or ``(C_out, C_in, n)``
        coefficients over ``basis`` (:meth:`base_filter` gives its pixels).
    bias : torch.nn.Parameter or None
        Shape ``(C_out,)``.
    action_in : ImageAction
        ``ImageAction(group)`` on ``(B, C_in, H, W)``.
    action_out : ImageAction
        ``ImageAction(group, "regular")`` on ``(B, C_out, |G|, H', W')``.

    Notes
    -----
    Exact for C_1, C_2, C_4, D_1, D_2, D_4; for other groups the default steerable filters
    (``basis``) are equivariant up to the sampling of smooth inputs, and pixel filters rotated
    by interpolation favour the 90-degree elements (see the module docstring). The weight is
    initialised like :class:`torch.nn.Conv2d`, uniformly with bound ``1 / sqrt(C_in k^2)``.

    References
    ----------
    .. [1] T. S. Cohen and M. Welling, "Group Equivariant Convolutional Networks", ICML 2016,
       arXiv:1602.07576.

    Examples
    --------
    >>> from equirelax.groups import CyclicGroup
    >>> layer = LiftingConv2d(3, 8, 3, CyclicGroup(4))
    >>> layer(torch.randn(2, 3, 9, 9)).shape
    torch.Size([2, 8, 4, 9, 9])
    """

    regular_input = False

    def filter_bank(self) -> Tensor:
        """The transformed filters ``h . psi`` for all ``h``, as a conv2d weight
        ``(C_out |G|, C_in, k, k)`` (output channel ``c |G| + index(h)``)."""
        n, k = self.group.order, self.kernel_size
        if self.basis is not None:
            steering = self.steering.to(self.weight.dtype)
            coefficients = torch.einsum("hij,ocj->ohci", steering, self.weight)
            return self.basis.filters(coefficients).reshape(-1, self.in_channels, k, k)
        psi = self.weight.reshape(1, -1, k, k).expand(n, -1, -1, -1)
        rotated = self.action_in(self.group.elements(), psi)  # (|G|, C_out C_in, k, k)
        rotated = rotated.reshape(n, self.out_channels, self.in_channels, k, k)
        return rotated.transpose(0, 1).reshape(self.out_channels * n, self.in_channels, k, k)


class GroupConv2d(_GroupConvolution):
    r"""Group convolution between feature maps on a finite planar group.

    .. math::

        [f \star \psi](h, x) = \sum_{y \in \mathbb{Z}^2} \sum_{h' \in G} \sum_{c}
        f_c(h', x + y)\, \psi_c(h^{-1} h', h^{-1} y), \qquad h \in G,

    i.e. the filter for output element ``h`` is ``h . psi`` under the regular image action
    (spatial rotation by ``h`` and the permutation ``h' -> h^{-1} h'`` of the filter's group
    axis). The layer is equivariant, ``f(g . x) = g . f(x)``, with
    ``ImageAction(group, "regular")`` on input and output (Cohen & Welling 2016).

    Parameters
    ----------
    in_channels : int
        Input channels ``C_in`` (each with ``|G|`` group channels).
    out_channels : int
        Output channels ``C_out`` (each with ``|G|`` group channels).
    kernel_size : int
        Odd spatial size ``k`` of the square filter.
    group : FiniteGroup
        A finite group acting on the plane.
    padding : int or None, optional
        Zero padding on each side; ``None`` (default) pads ``k // 2`` ("same" output size).
    bias : bool, optional
        Add a learnable bias per output channel, shared over the group axis (default ``True``).
    basis : {"pixel", "steerable"} or None, optional
        Filter parametrisation, as :class:`LiftingConv2d`.

    Attributes
    ----------
    group : FiniteGroup
    in_channels, out_channels, kernel_size, padding : int
    basis_kind : str
    basis : DiscHarmonicBasis or None
    weight : torch.nn.Parameter
        The base filter ``psi``: ``(C_out, C_in, |G|, k, k)`` pixels, or
        ``(C_out, C_in, |G|, n)`` coefficients over ``basis``.
    bias : torch.nn.Parameter or None
        Shape ``(C_out,)``.
    action_in : ImageAction
        ``ImageAction(group, "regular")`` on ``(B, C_in, |G|, H, W)``.
    action_out : ImageAction
        ``ImageAction(group, "regular")`` on ``(B, C_out, |G|, H', W')``.

    Notes
    -----
    The transformed filters are flattened into one conv2d weight of shape
    ``(C_out |G|, C_in |G|, k, k)``. The weight is initialised like :class:`torch.nn.Conv2d`
    with fan-in ``C_in |G| k^2``.

    References
    ----------
    .. [1] T. S. Cohen and M. Welling, "Group Equivariant Convolutional Networks", ICML 2016,
       arXiv:1602.07576.

    Examples
    --------
    >>> from equirelax.groups import DihedralGroup
    >>> layer = GroupConv2d(4, 6, 3, DihedralGroup(4))
    >>> layer(torch.randn(2, 4, 8, 9, 9)).shape
    torch.Size([2, 6, 8, 9, 9])
    """

    regular_input = True

    def filter_bank(self) -> Tensor:
        """The transformed filters ``h . psi`` for all ``h``, as a conv2d weight
        ``(C_out |G|, C_in |G|, k, k)`` (output channel ``c |G| + index(h)``, input channel
        ``c' |G| + index(h')``)."""
        n, k = self.group.order, self.kernel_size
        c_out, c_in = self.out_channels, self.in_channels
        if self.basis is not None:
            # (h . psi)(h', y) = psi(h^-1 h', h^-1 y): permute the group axis, steer in space.
            steering = self.steering.to(self.weight.dtype)
            permuted = self.weight[:, :, self.source]  # (C_out, C_in, |G| (h), |G| (h'), n)
            coefficients = torch.einsum("hij,ochgj->ohcgi", steering, permuted)
            return self.basis.filters(coefficients).reshape(c_out * n, c_in * n, k, k)
        psi = self.weight.reshape(1, c_out * c_in, n, k, k).expand(n, -1, -1, -1, -1)
        moved = self.action_in(self.group.elements(), psi)  # (|G|, C_out C_in, |G|, k, k)
        moved = moved.reshape(n, c_out, c_in, n, k, k).transpose(0, 1)
        return moved.reshape(c_out * n, c_in * n, k, k)


class GroupPool(nn.Module):
    r"""Pooling over the group axis: regular feature maps to images.

    .. math::

        (P f)_c(x) = \max_{h \in G} f_c(h, x)
        \quad\text{or}\quad \frac{1}{|G|} \sum_{h \in G} f_c(h, x).

    Both reductions are invariant to permutations of the group axis, so
    ``P(g . f) = g . P(f)`` with ``ImageAction(group, "regular")`` on the input and
    ``ImageAction(group)`` on the output (Cohen & Welling 2016).

    Parameters
    ----------
    group : FiniteGroup
        The group whose regular feature maps are pooled (fixes the size ``|G|`` of axis 2).
    reduction : {"max", "mean"}, optional
        How to reduce the group axis (default ``"max"``).
    channels : int or None, optional
        If given, inputs must have exactly this many channels; ``None`` accepts any number.

    Attributes
    ----------
    group : FiniteGroup
    reduction : str
    in_channels, out_channels : int or None
        Both equal ``channels``.
    action_in : ImageAction
        ``ImageAction(group, "regular")`` on ``(B, C, |G|, H, W)``.
    action_out : ImageAction
        ``ImageAction(group)`` on ``(B, C, H, W)``.

    References
    ----------
    .. [1] T. S. Cohen and M. Welling, "Group Equivariant Convolutional Networks", ICML 2016,
       arXiv:1602.07576.

    Examples
    --------
    >>> from equirelax.groups import CyclicGroup
    >>> GroupPool(CyclicGroup(4))(torch.randn(2, 3, 4, 9, 9)).shape
    torch.Size([2, 3, 9, 9])
    """

    def __init__(
        self, group: FiniteGroup, reduction: str = "max", *, channels: int | None = None
    ) -> None:
        super().__init__()
        self.group = _check_group(group)
        if reduction not in ("max", "mean"):
            raise ValueError(f"reduction: expected 'max' or 'mean', received {reduction!r}")
        self.reduction = reduction
        if channels is not None:
            check_positive_int("channels", channels)
        self.in_channels: int | None = channels
        self.out_channels: int | None = channels
        self.action_in = ImageAction(self.group, "regular")
        self.action_out = ImageAction(self.group)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, C, |G|, H, W)`` to ``(B, C, H, W)``."""
        x = _check_images(x, self.in_channels, self.group.order)
        if self.reduction == "max":
            return x.amax(dim=2)
        return x.mean(dim=2)

    def extra_repr(self) -> str:
        return f"group={self.group}, reduction={self.reduction!r}, channels={self.in_channels}"
