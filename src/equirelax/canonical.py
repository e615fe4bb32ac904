"""Equivariant adaptation by canonicalization (Kaba et al. 2023; Mondal et al., NeurIPS 2023,
arXiv 2310.01647), with the canonicalization prior.

A canonicalizer ``c`` is a small *equivariant* network that maps an input ``x`` to a group
element, with ``c(g x) = g c(x)``. Any predictor ``p`` (e.g. a pretrained, unconstrained
network) then gives

* an invariant model ``f(x) = p(c(x)^-1 x)``, and
* an equivariant model ``f(x) = c(x) . p(c(x)^-1 x)`` for an output action ``.``,

exactly, whatever ``p`` is: ``c(g x)^-1 g x = c(x)^-1 g^-1 g x = c(x)^-1 x``. The
*canonicalization prior* (Mondal et al.) adds ``lambda_prior * prior`` to the loss so that the
canonicalizer maps the data's usual pose to the identity, where a pretrained predictor works
best: cross-entropy to the identity (or any given distribution over the elements) for discrete
groups, ``||R - I||_F^2`` for continuous ones. ``lambda_prior = 100`` by default.

Canonicalizers here:

* :class:`ImageCanonicalizer`: C_n / D_n on images. A group CNN (lifting and group
  convolutions) gives one logit per group element; the element is the argmax. In training the
  canonical image is ``sum_g w_g (g^-1 x)`` with the straight-through weights
  ``w = onehot(argmax) + s - stop_gradient(s)``, ``s = softmax(logits / beta)`` (or hard
  Gumbel-softmax with ``gumbel=True``), so the forward pass uses the hard choice and gradients
  reach the canonicalizer through ``s``.
* :class:`ImageRotationCanonicalizer`: SO(2) on images. A steerable C_n group CNN gives a
  pooled planar vector; its angle is the rotation.
* :class:`PointCloudCanonicalizer`: SO(3), O(3) and E(3) on point clouds ``(B, N, 3)``.
  Vector-neuron layers on the centred points give equivariant vectors; Gram-Schmidt and a cross
  product turn them into a rotation (O(3): the handedness from a third vector); the centroid is
  the translation.

Ties (inputs with a non-trivial stabiliser have equal logits at ``h`` and ``s h``) are broken by
taking the first maximal logit in the order of ``group.elements()``. Invariant outputs are
exact under ties too (both choices give the same canonical input); equivariant outputs on
exactly symmetric inputs are equivariant only up to the stabiliser.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equirelax._batches import call
from equirelax._checks import check_positive_int, check_tensor
from equirelax.actions import Action, ImageAction, PointAction
from equirelax.groups import O3, SO2, SO3, CyclicGroup, DihedralGroup, Euclidean, FiniteGroup, Group
from equirelax.nn import GroupConv2d, LiftingConv2d, VNLeakyReLU, VNLinear

__all__ = [
    "DEFAULT_SMOOTHING",
    "Canonicalization",
    "Canonicalized",
    "ImageCanonicalizer",
    "ImageRotationCanonicalizer",
    "PointCloudCanonicalizer",
    "disc_weights",
    "gaussian_blur",
]

DEFAULT_SMOOTHING = 1.0
"""Gaussian width in pixels of the image canonicalizers' input blur (see
:class:`ImageCanonicalizer`, ``smoothing``)."""


class Canonicalization(NamedTuple):
    """What a canonicalizer or a :class:`Canonicalized` model returns.

    Attributes
    ----------
    output:
        The canonical input ``c(x)^-1 x`` (canonicalizer) or the model's output (wrapper).
    elements:
        The chosen group elements ``c(x)``, one per sample.
    prior:
        The (unweighted) canonicalization prior, a scalar: cross-entropy to the prior
        distribution (discrete) or ``mean ||R - I||_F^2`` (continuous).
    """

    output: Any
    elements: Tensor
    prior: Tensor

    @property
    def penalty(self) -> Tensor:
        """The prior: the term the engine adds to the loss
        (:class:`~equirelax.outputs.Penalized`)."""
        return self.prior


class ImageCanonicalizer(nn.Module):
    """A C_n / D_n canonicalizer for images ``(B, C, H, W)`` (see the module docstring).

    Parameters
    ----------
    group:
        ``CyclicGroup(n)`` or ``DihedralGroup(n)``. Exact for n in {1, 2, 4}. For other n the
        group CNN uses steerable filters (a band-limited ring / harmonic basis rotated exactly
        in coefficient space, as e2cnn), so no element is favoured: exact for multiples of 90
        degrees, and for the others ``c(g x) = g c(x)`` held for every ``g`` of C8 on 117 of 120
        random smooth images (``tests/test_disc_basis.py``). With the interpolated pixel
        filters (``basis="pixel"``) 5 of 120 did: the interpolated filters are smoother than
        the originals and the choice falls on multiples of 90 degrees.
    in_channels:
        Image channels.
    hidden:
        Channels of the group CNN.
    kernel_size:
        Odd filter size of its two layers.
    basis:
        Filter parametrisation of the group CNN (``"pixel"``, ``"steerable"`` or ``None``:
        :mod:`equirelax.nn.group_conv`'s default for the group).
    beta:
        Softmax temperature of the straight-through weights and of the prior.
    gumbel:
        Use hard Gumbel-softmax samples in training instead of the argmax.
    prior_distribution:
        Target distribution over ``group.elements()`` for the prior; default: all mass on the
        identity.
    smoothing:
        Width in pixels of the Gaussian blur (:func:`gaussian_blur`) applied to the
        canonicalizer's input (not to the predictor's); default ``DEFAULT_SMOOTHING`` (1 pixel)
        for groups with rotations other than multiples of 90 degrees, 0 for n in {1, 2, 4}.
        A bilinear rotation by 45 degrees blurs an image, a rotation by 90 degrees does not, so
        a canonicalizer trained with the prior on crisp upright images learns to tell the two
        apart, which no equivariant network may: on MNIST (``equirelax adapt mnist --group
        c8``) without the blur, ``c(g x) = g c(x)`` held on 20% of the test images for the odd
        multiples of 45 degrees (93% without the prior) and canon-prior reached 83.9% C8-averaged
        accuracy; with ``smoothing=1`` 93.4% against 95.0% upright (benchmarks/canonical.md).
        The reference implementation sees images already smoothed by resizing (CIFAR-10 at
        224 pixels).
    """

    def __init__(
        self,
        group: FiniteGroup,
        in_channels: int = 1,
        *,
        hidden: int = 8,
        kernel_size: int = 5,
        basis: str | None = None,
        beta: float = 1.0,
        gumbel: bool = False,
        prior_distribution: Tensor | None = None,
        smoothing: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(group, (CyclicGroup, DihedralGroup)):
            raise ValueError(
                f"group: expected CyclicGroup(n) or DihedralGroup(n), received {group!r}"
            )
        if not beta > 0:
            raise ValueError(f"beta: expected a positive temperature, received {beta!r}")
        self.group = group
        self.action = ImageAction(group)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.beta, self.gumbel = float(beta), bool(gumbel)
        if smoothing is None:  # a blur only where rotations interpolate
            smoothing = 0.0 if self.action.exact else DEFAULT_SMOOTHING
        self.smoothing = _check_smoothing(smoothing)
        hidden = check_positive_int("hidden", hidden)
        self.lift = LiftingConv2d(in_channels, hidden, kernel_size, group, basis=basis)
        self.conv = GroupConv2d(hidden, 1, kernel_size, group, basis=basis)
        order = group.order
        if prior_distribution is None:
            prior_distribution = torch.zeros(order)
            prior_distribution[int(group.index(group.identity(1))[0])] = 1.0
        prior_distribution = check_tensor("prior_distribution", prior_distribution).double()
        if (
            prior_distribution.shape != (order,)
            or (prior_distribution < 0).any()
            or abs(float(prior_distribution.sum()) - 1.0) > 1e-6
        ):
            raise ValueError(
                f"prior_distribution: expected {order} non-negative probabilities summing to 1 "
                f"over {group}.elements(), received {prior_distribution.tolist()}"
            )
        self.register_buffer("prior_distribution", prior_distribution.float())
        self.register_buffer("elements", group.elements(), persistent=False)

    def logits(self, x: Tensor) -> Tensor:
        """One logit per group element, ``(B, |G|)``; ``logits(g x)[h] = logits(x)[g^-1 h]``.

        The group CNN's output is averaged over a disc with a smooth edge
        (:func:`disc_weights`), inside the reach of the zero padding at the image border, so
        that neither the square's corners nor its padded border favour an element.
        """
        self._check(x)
        return _pooled_group_features(self.lift, self.conv, x, self.smoothing)

    def forward(self, x: Tensor) -> Canonicalization:
        """``(c(x)^-1 x, c(x), prior)`` (see the module docstring for the training path)."""
        logits = self.logits(x)
        soft = torch.softmax(logits / self.beta, dim=-1)
        if self.training and self.gumbel:
            weights = F.gumbel_softmax(logits / self.beta, tau=1.0, hard=True)
        else:
            hard = F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(soft)
            weights = hard + soft - soft.detach()
        chosen = self.elements[weights.detach().argmax(dim=-1)]
        order, batch = self.group.order, x.shape[0]
        inverses = self.group.inverse(self.elements).repeat_interleave(batch, dim=0)
        moved = self.action(inverses, x.repeat(order, 1, 1, 1)).reshape(order, *x.shape)
        canonical = torch.einsum("bg,gb...->b...", weights.to(x.dtype), moved)
        target = self.prior_distribution.to(logits.dtype)
        prior = -(target * torch.log_softmax(logits / self.beta, dim=-1)).sum(-1).mean()
        return Canonicalization(canonical, chosen, prior)

    def _check(self, x: object) -> None:
        _check_square_images(x, self.in_channels)


DISC_TAPER = 3.0
"""Width in pixels of the cosine edge of :func:`disc_weights`."""


@functools.lru_cache(maxsize=16)
def disc_weights(size: int, margin: int, taper: float = DISC_TAPER) -> Tensor:
    r"""Weights ``(size, size)`` summing to 1 of a disc with a smooth edge, centred on the image.

    .. math::

        w(\rho) \propto \tfrac12 \left(1 + \cos\left(\pi\,
        \mathrm{clip}\left(\tfrac{\rho - (R - t)}{t}, 0, 1\right)\right)\right),
        \qquad R = \tfrac{size}{2} - margin,

    ``rho`` the distance of a pixel centre from the image centre and ``t`` the taper (at most
    ``R``). A hard
    disc on the pixel grid is not rotation invariant at its edge; the smooth edge is, up to the
    sampling of a smooth function (measured: the C8 canonicalizer's choice was equivariant on
    98% of 200 random smooth images with it, 85-90% with a hard disc). Cached: do not modify the
    result in place.
    """
    size, margin = check_positive_int("size", size), int(margin)
    radius = size / 2 - margin
    if radius <= 0:
        raise ValueError(
            f"x: expected images larger than twice the canonicalizer's padding margin of "
            f"{margin} pixels, received size {size}"
        )
    taper = min(taper, radius)
    centre = (size - 1) / 2
    coords = torch.arange(size, dtype=torch.float64) - centre
    rho = torch.sqrt(coords[None, :] ** 2 + coords[:, None] ** 2)
    edge = ((rho - (radius - taper)) / taper).clamp(0, 1)
    weights = 0.5 * (1 + torch.cos(torch.pi * edge))
    return weights / weights.sum()


class ImageRotationCanonicalizer(nn.Module):
    r"""An SO(2) canonicalizer for images ``(B, C, H, W)``: continuous rotations.

    A steerable group CNN on a ``C_n`` lattice (lifting and group convolution, as
    :class:`ImageCanonicalizer`) gives regular feature maps ``f(h, p)``; their frequency-1 part
    is a planar vector field, pooled over a smooth disc (:func:`disc_weights`) to one vector

    .. math::

        v(x) = \sum_{h, p} w(p)\, f(h, p)\, (\cos \theta_h, \sin \theta_h),
        \qquad c(x) = R(v) = \begin{pmatrix} \hat v_1 & -\hat v_2 \\
        \hat v_2 & \hat v_1 \end{pmatrix},

    which rotates with the image, ``v(g x) = g v(x)``: exactly for multiples of 90 degrees,
    up to the sampling of smooth images for other angles. The canonical image is ``x`` rotated
    by ``c(x)^-1`` (bilinear, differentiable in the angle); the prior is
    ``mean ||c(x) - I||_F^2`` (Mondal et al. 2023). An input whose vector vanishes (e.g. a
    rotation-symmetric image, or a blank one) has no preferred angle and is left as it is.

    Parameters
    ----------
    in_channels:
        Image channels.
    hidden:
        Channels of the group CNN.
    kernel_size:
        Odd filter size of its two layers.
    lattice:
        Order ``n`` of the rotation lattice ``C_n`` of the network (default 8).
    smoothing:
        Width in pixels of the Gaussian blur applied to the canonicalizer's input (default
        ``DEFAULT_SMOOTHING``; see :class:`ImageCanonicalizer` for why).
    """

    def __init__(
        self,
        in_channels: int = 1,
        *,
        hidden: int = 8,
        kernel_size: int = 5,
        lattice: int = 8,
        smoothing: float | None = None,
    ) -> None:
        super().__init__()
        self.group = SO2()
        self.action = ImageAction(self.group)
        self.in_channels = check_positive_int("in_channels", in_channels)
        lattice_group = CyclicGroup(check_positive_int("lattice", lattice))
        self.smoothing = _check_smoothing(DEFAULT_SMOOTHING if smoothing is None else smoothing)
        hidden = check_positive_int("hidden", hidden)
        self.lift = LiftingConv2d(in_channels, hidden, kernel_size, lattice_group)
        self.conv = GroupConv2d(hidden, 1, kernel_size, lattice_group)
        angles = lattice_group.rotation_angle(lattice_group.elements())
        directions = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
        self.register_buffer("directions", directions.float(), persistent=False)

    def vector(self, x: Tensor) -> Tensor:
        """The pooled equivariant vector ``v(x)`` ``(B, 2)``, ``v(g x) = g v(x)``."""
        _check_square_images(x, self.in_channels)
        pooled = _pooled_group_features(self.lift, self.conv, x, self.smoothing)
        return pooled @ self.directions.to(pooled.dtype)

    def forward(self, x: Tensor) -> Canonicalization:
        """``(c(x)^-1 x, c(x), prior)`` with ``c(x)`` a ``(B, 2, 2)`` rotation matrix."""
        v = self.vector(x)
        norm = v.norm(dim=-1, keepdim=True)
        degenerate = norm <= torch.finfo(v.dtype).eps * 1e3
        unit = torch.where(
            degenerate,
            torch.tensor([1.0, 0.0], dtype=v.dtype, device=v.device),
            v / norm.clamp_min(torch.finfo(v.dtype).tiny),
        )
        rotation = torch.stack(
            [torch.stack([unit[:, 0], -unit[:, 1]], -1), torch.stack([unit[:, 1], unit[:, 0]], -1)],
            dim=-2,
        )
        canonical = self.action(rotation.transpose(-1, -2), x)
        identity = torch.eye(2, dtype=rotation.dtype, device=rotation.device)
        prior = (rotation - identity).square().sum(dim=(-2, -1)).mean()
        return Canonicalization(canonical, rotation, prior)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    r"""``x`` ``(B, C, H, W)`` convolved with the isotropic Gaussian
    ``exp(-|p|^2 / (2 sigma^2))`` (normalised, truncated at ``ceil(3 sigma)`` pixels, zero
    padding); ``sigma = 0`` returns ``x``. Isotropic, so it commutes with rotations up to the
    sampling; it removes the high frequencies that a bilinear rotation by an angle other than a
    multiple of 90 degrees attenuates."""
    if sigma == 0:
        return x
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-offsets.square() / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    x = F.conv2d(x, rows, padding=(radius, 0), groups=channels)
    return F.conv2d(x, rows.transpose(-1, -2), padding=(0, radius), groups=channels)


def _pooled_group_features(
    lift: LiftingConv2d, conv: GroupConv2d, x: Tensor, smoothing: float = 0.0
) -> Tensor:
    """``conv(relu(lift(blur(x))))`` averaged over channels and over the smooth disc inside the
    reach of the blur's and both layers' zero padding (:func:`disc_weights`): ``(B, |G|)``."""
    features = conv(F.relu(lift(gaussian_blur(x, smoothing))))  # (B, C, |G|, H, W), regular
    margin = (lift.kernel_size // 2) + (conv.kernel_size // 2) + math.ceil(3 * smoothing)
    weights = disc_weights(x.shape[-1], margin).to(device=x.device, dtype=features.dtype)
    return torch.einsum("bcghw,hw->bg", features, weights) / features.shape[1]


def _check_smoothing(smoothing: float) -> float:
    if isinstance(smoothing, bool) or not (
        isinstance(smoothing, (int, float)) and 0 <= smoothing < math.inf
    ):
        raise ValueError(
            f"smoothing: expected a Gaussian width >= 0 in pixels, received {smoothing!r}"
        )
    return float(smoothing)


def _check_square_images(x: object, channels: int) -> None:
    x = check_tensor("x", x)
    if x.ndim != 4 or x.shape[1] != channels or x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"x: expected square images (B, {channels}, H, H), received shape {tuple(x.shape)}"
        )


_DEGENERATE = (
    "x: the canonicalizer's vectors are degenerate (norm <= eps) for some input: the frame is "
    "undefined (e.g. all points at their centroid)"
)


class PointCloudCanonicalizer(nn.Module):
    """An SO(3) / O(3) / E(3) canonicalizer for point clouds ``(B, N, 3)``.

    Each (centred) point ``p_n`` enters with the equivariant channels ``(p_n, M p_n, M^2 p_n)``,
    ``M = 3 sum_n p_n p_n^T / tr(sum_n p_n p_n^T)`` (a point alone spans one direction, and
    channel-mixing vector-neuron layers would keep every feature parallel to it). Vector-neuron
    layers, pooled over points with the invariant weights ``||v_n||``, give ``k`` equivariant
    vectors (``k = 2`` for rotations, 3 with reflections). Gram-Schmidt on the first two and
    their cross product give ``R`` with ``R(Q x) = Q R(x)``; with reflections the cross product
    takes the sign of its inner product with the third vector (that sign flips with
    ``det Q``, so ``R`` follows reflections too). For ``Euclidean(...)`` groups the element is
    ``[[R, t], [0, 1]]`` with ``t`` the centroid. Inputs whose second-moment matrix has
    repeated eigenvalues (e.g. symmetric shapes) can give a degenerate frame, which raises.

    Parameters
    ----------
    group:
        ``SO3()``, ``O3()``, ``Euclidean(SO3())`` or ``Euclidean(O3())``.
    hidden:
        Vector-neuron channels.
    eps:
        Smallest norm accepted in Gram-Schmidt (degenerate frames raise, not divide by 0).
    input_action:
        For inputs made of several tensors (e.g. positions, velocities, charges): the group's
        action on all of them. The frame is computed from the first (the point cloud) and
        ``c(x)^-1`` is applied to every tensor with this action. Default: one point cloud,
        moved by ``PointAction(group)``.
    """

    def __init__(
        self,
        group: Group,
        *,
        hidden: int = 16,
        eps: float = 1e-9,
        input_action: Action | None = None,
    ) -> None:
        super().__init__()
        base = group.base if isinstance(group, Euclidean) else group
        if not isinstance(base, SO3) or base.d != 3:
            raise ValueError(
                "group: expected SO3(), O3(), Euclidean(SO3()) or Euclidean(O3()), "
                f"received {group!r}"
            )
        self.group = group
        self.translations = isinstance(group, Euclidean)
        self.reflections = isinstance(base, O3)
        if input_action is not None and (
            not isinstance(input_action, Action) or input_action.group != group
        ):
            raise ValueError(
                f"input_action: expected an Action of {group} or None, received {input_action!r}"
            )
        self.action = input_action if input_action is not None else PointAction(group)
        self.several_inputs = input_action is not None
        self.eps = float(eps)
        hidden = check_positive_int("hidden", hidden)
        vectors = 3 if self.reflections else 2
        self.net = nn.Sequential(
            VNLinear(3, hidden), VNLeakyReLU(hidden), VNLinear(hidden, hidden),
            VNLeakyReLU(hidden), VNLinear(hidden, vectors),
        )  # fmt: skip

    def frame(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(R, centroid)``: ``R (B, 3, 3)`` with columns the Gram-Schmidt frame."""
        x = check_tensor("x", x)
        if x.ndim != 3 or x.shape[-1] != 3 or x.shape[1] < 1:
            raise ValueError(f"x: expected point clouds (B, N, 3), received shape {tuple(x.shape)}")
        centroid = x.mean(dim=1)
        centred = x - centroid.unsqueeze(1) if self.translations else x
        moment = centred.transpose(1, 2) @ centred  # (B, 3, 3), equivariant: Q M Q^T
        trace = moment.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]
        moment = 3 * moment / trace.clamp_min(self.eps)  # mean eigenvalue 1
        once = centred @ moment  # rows p_n^T M = (M p_n)^T (M is symmetric)
        channels = [centred, once, once @ moment]
        features = torch.stack([c.transpose(1, 2) for c in channels], dim=1)  # (B, 3, 3, N)
        per_point = self.net(features)  # (B, k, 3, N)
        # norm-weighted mean over points: a plain mean of centred, nearly linear features
        # nearly cancels (sum_n (p_n - centroid) = 0) and leaves an ill-conditioned frame
        vectors = (per_point * per_point.norm(dim=2, keepdim=True)).mean(dim=-1)  # (B, k, 3)
        first = self._unit(vectors[:, 0])
        second = self._unit(vectors[:, 1] - (vectors[:, 1] * first).sum(-1, keepdim=True) * first)
        third = torch.linalg.cross(first, second)
        if self.reflections:  # O(3): the handedness follows a third equivariant vector
            third = third * torch.sign((vectors[:, 2] * third).sum(-1, keepdim=True))
        return torch.stack([first, second, third], dim=-1), centroid

    def _unit(self, v: Tensor) -> Tensor:
        norm = v.norm(dim=-1, keepdim=True)
        degenerate = (norm <= self.eps).any()
        if torch.compiler.is_compiling():  # checked in the graph (a RuntimeError), no break
            torch._assert_async(~degenerate, _DEGENERATE)
        elif bool(degenerate):
            raise ValueError(_DEGENERATE)
        return v / norm

    def forward(self, x: Tensor, *rest: Tensor) -> Canonicalization:
        """``(c(x)^-1 x, c(x), mean ||R - I||_F^2)``; with ``rest`` (and an ``input_action``
        for all of them), the canonical input is the tuple ``c(x)^-1 (x, *rest)``."""
        if bool(rest) != self.several_inputs:
            expected = "several tensors" if self.several_inputs else "one point cloud"
            raise ValueError(
                f"inputs: expected {expected} (input_action={self.action!r}), "
                f"received {1 + len(rest)} tensors"
            )
        rotation, centroid = self.frame(x)
        element = Euclidean.from_parts(rotation, centroid) if self.translations else rotation
        inputs = (x, *rest) if rest else x
        canonical = self.action(self.group.inverse(element), inputs)
        eye = torch.eye(3, dtype=rotation.dtype, device=rotation.device)
        prior = (rotation - eye).square().sum(dim=(-2, -1)).mean()
        return Canonicalization(canonical, element, prior)


class Canonicalized(nn.Module):
    """``f(x) = p(c(x)^-1 x)`` (invariant) or ``c(x) . p(c(x)^-1 x)`` (equivariant).

    Parameters
    ----------
    canonicalizer:
        An :class:`ImageCanonicalizer`, a :class:`PointCloudCanonicalizer`, or any module
        returning a :class:`Canonicalization` of its input.
    predictor:
        Any module on canonical inputs (e.g. a pretrained network).
    output_action:
        ``None`` for invariant outputs, else the action of the canonicalizer's group on the
        predictor's outputs.
    prior_weight:
        ``lambda_prior``: the returned ``prior`` is ``prior_weight`` times the canonicalizer's
        prior, ready to be added to the task loss.

    Notes
    -----
    ``forward(*inputs)`` returns a :class:`Canonicalization` (``output``, ``elements``,
    ``prior``): everything is returned, nothing is kept on the module between calls. A canonical
    input that is a tuple is unpacked into the predictor's positional arguments.
    :func:`equirelax.train` accepts such a model: the task loss and metric see ``output`` and
    the weighted prior is added to the objective.
    """

    def __init__(
        self,
        canonicalizer: nn.Module,
        predictor: nn.Module,
        output_action: Action | None = None,
        *,
        prior_weight: float = 100.0,
    ) -> None:
        super().__init__()
        group = getattr(canonicalizer, "group", None)
        if output_action is not None:
            if not isinstance(output_action, Action):
                raise TypeError(
                    f"output_action: expected an Action or None, received {output_action!r}"
                )
            if group is not None and output_action.group != group:
                raise ValueError(
                    f"output_action: expected an action of the canonicalizer's group {group}, "
                    f"received one of {output_action.group}"
                )
        if not prior_weight >= 0:
            raise ValueError(f"prior_weight: expected >= 0, received {prior_weight!r}")
        self.canonicalizer = canonicalizer
        self.predictor = predictor
        self.output_action = output_action
        self.prior_weight = float(prior_weight)

    def forward(self, *inputs: Tensor) -> Canonicalization:
        canonical, elements, prior = self.canonicalizer(*inputs)
        out = call(self.predictor, canonical)
        if self.output_action is not None:
            out = self.output_action(elements, out)
        return Canonicalization(out, elements, self.prior_weight * prior)
