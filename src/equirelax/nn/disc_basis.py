r"""A band-limited filter basis on a disc, steerable by the rotations and mirrors of the plane.

The basis functions are Gaussian rings times circular harmonics (the construction of e2cnn /
escnn, Weiler & Cesa 2019),

.. math::

    \psi_{r, m}^{\cos}(p) = e^{-(|p| - r)^2 / 2\sigma_r^2} \cos(m \varphi(p)), \qquad
    \psi_{r, m}^{\sin}(p) = e^{-(|p| - r)^2 / 2\sigma_r^2} \sin(m \varphi(p)),

sampled at the pixel centres of a ``k x k`` filter. A filter is a coefficient vector ``c`` over
the basis. Rotating or mirroring the continuous filter mixes only the pair ``(cos, sin)`` of each
ring and frequency: for a rotation by ``theta``,

.. math::

    \psi(R_\theta^{-1} p) \;\text{has coefficients}\;
    \begin{pmatrix} a' \\ b' \end{pmatrix} =
    \begin{pmatrix} \cos m\theta & -\sin m\theta \\ \sin m\theta & \cos m\theta \end{pmatrix}
    \begin{pmatrix} a \\ b \end{pmatrix},

and for the mirror ``M`` across the line at angle ``theta / 2`` the matrix
``[[cos m theta, sin m theta], [sin m theta, -cos m theta]]``. The filter of every group
element is therefore the sampling of the exactly transformed continuous filter: no element is
favoured, whatever its angle, and for multiples of 90 degrees (which map the pixel grid onto
itself) the sampled filters are exact pixel permutations of each other.

References
----------
.. [1] M. Weiler and G. Cesa, "General E(2)-Equivariant Steerable CNNs", NeurIPS 2019,
   arXiv:1911.08251 (the ring / harmonic basis and its band limit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from equirelax._checks import check_positive_int

__all__ = ["DiscHarmonicBasis"]


def _default_rings(kernel_size: int) -> list[float]:
    """Rings at radii ``0, 1, ..., k // 2`` (e2cnn's default for dilation 1)."""
    return [float(r) for r in range(kernel_size // 2 + 1)]


def _default_max_frequency(radius: float, max_radius: float) -> int:
    """e2cnn's default band limit (``frequencies_cutoff=-1``, ``_manual_fco1``): frequency 0
    at the centre, ``min(2 r, 2)`` on the outer ring, ``min(2 r, 2 r - (r + 1) mod 2)`` inside."""
    if radius == 0:
        return 0
    r = round(radius)
    if radius == max_radius:
        return min(2 * r, 2)
    return min(2 * r, 2 * r - (r + 1) % 2)


class DiscHarmonicBasis(nn.Module):
    r"""Gaussian rings times circular harmonics on a ``k x k`` disc, steerable exactly.

    Parameters
    ----------
    kernel_size : int
        Odd filter size ``k``.
    rings : sequence of float or None, optional
        Ring radii in pixels; default ``0, 1, ..., k // 2``.
    sigma : float or sequence of float or None, optional
        Gaussian width of each ring; default as e2cnn: 0.005 (a point) at radius 0, 0.4 on the
        outer ring, 0.6 on the others.
    max_frequency : int or None, optional
        Largest harmonic on any ring; default e2cnn's band limit per ring (at most 2 for
        ``k <= 5``). A ring at radius 0 only carries frequency 0.

    Attributes
    ----------
    kernel_size : int
    size : int
        Number of basis functions ``n``.
    samples : torch.Tensor
        Buffer ``(n, k, k)``, float64 until the module is cast: the sampled basis functions
        (row ``i`` is ``y = k // 2 - i``, column ``j`` is ``x = j - k // 2``, the coordinates of
        :class:`~equirelax.actions.ImageAction`). The two members of each (cos, sin) pair share
        one scale, so that the pair rotates as a pair; the scale makes their mean squared norm 1.
    frequencies : torch.Tensor
        Buffer ``(n,)`` of harmonic orders ``m``.
    parity : torch.Tensor
        Buffer ``(n,)``: 0 for a cosine member (or frequency 0), 1 for a sine member.

    Examples
    --------
    >>> basis = DiscHarmonicBasis(5)
    >>> basis.size, tuple(basis.samples.shape)
    (11, (11, 5, 5))
    """

    def __init__(
        self,
        kernel_size: int,
        *,
        rings: Sequence[float] | None = None,
        sigma: float | Sequence[float] | None = None,
        max_frequency: int | None = None,
    ) -> None:
        super().__init__()
        k = check_positive_int("kernel_size", kernel_size)
        if k % 2 == 0:
            raise ValueError(
                f"kernel_size: expected an odd size (the basis is centred on a pixel), received {k}"
            )
        self.kernel_size = k
        radii = _default_rings(k) if rings is None else [float(r) for r in rings]
        if not radii or any(not math.isfinite(r) or r < 0 for r in radii):
            raise ValueError(f"rings: expected non-negative finite radii, received {rings!r}")
        widths = self._widths(radii, sigma)
        valid = isinstance(max_frequency, int) and not isinstance(max_frequency, bool)
        if max_frequency is not None and not (valid and max_frequency >= 0):
            raise ValueError(
                f"max_frequency: expected a non-negative int or None, received {max_frequency!r}"
            )
        self._rings = [(radius, width) for radius, width in zip(radii, widths, strict=True)]
        self._max_frequency = max_frequency
        half = k // 2
        coords = torch.arange(-half, half + 1, dtype=torch.float64)
        grid = torch.stack([coords[None, :].expand(k, k), coords.flip(0)[:, None].expand(k, k)], -1)
        raw, frequencies, parity = self._raw(grid.reshape(-1, 2))
        # One scale per (cos, sin) pair so that the pair still rotates as a pair: the root mean
        # squared norm of the pair's members.
        pair = torch.cumsum(parity == 0, 0) - 1
        norms = torch.zeros(int(pair[-1]) + 1, dtype=torch.float64)
        norms.index_add_(0, pair, raw.square().sum(-1))
        scales = (norms / torch.bincount(pair)).sqrt()[pair]
        keep = scales > 1e-12  # a ring outside the filter has nothing to sample
        self._keep = keep
        self.size = int(keep.sum())
        # Derived from the arguments, so not part of a state dict.
        self.register_buffer("_scales", scales[keep], persistent=False)
        samples = (raw[keep] / scales[keep, None]).reshape(-1, k, k)
        self.register_buffer("samples", samples, persistent=False)
        self.register_buffer("frequencies", frequencies[keep], persistent=False)
        self.register_buffer("parity", parity[keep], persistent=False)

    def _raw(self, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Unscaled basis functions at ``points`` ``(P, 2)`` (``(x, y)``, float64): ``(n', P)``
        with their frequencies and parities ``(n',)``, before rings outside the filter are
        dropped."""
        x, y = points[:, 0], points[:, 1]
        rho = torch.sqrt(x * x + y * y)
        z = torch.complex(x, y)
        rows: list[Tensor] = []
        frequencies: list[int] = []
        parity: list[int] = []
        half = float(self.kernel_size // 2)
        for radius, width in self._rings:
            profile = torch.exp(-0.5 * ((rho - radius) / width) ** 2)
            top = 0 if radius == 0 else _default_max_frequency(radius, half)
            if self._max_frequency is not None:
                top = min(top, self._max_frequency)
            rows.append(profile)
            frequencies.append(0)
            parity.append(0)
            power = torch.ones_like(z)
            for m in range(1, top + 1):
                # cos(m phi) = Re(z^m) / |z|^m: exact on the integer points of the grid, so
                # 90-degree rotations permute the samples exactly.
                power = power * z
                harmonic = torch.where(rho > 0, power / rho.clamp_min(1e-300) ** m, 0)
                rows += [profile * harmonic.real, profile * harmonic.imag]
                frequencies += [m, m]
                parity += [0, 1]
        return torch.stack(rows), torch.tensor(frequencies), torch.tensor(parity)

    def evaluate(self, points: Tensor) -> Tensor:
        """The (scaled) basis functions at arbitrary points ``(P, 2)`` in pixel units
        (``x`` right, ``y`` up), ``(n, P)`` in float64: the continuous functions that
        :attr:`samples` samples."""
        raw, _, _ = self._raw(points.to(torch.float64).cpu())
        return raw[self._keep] / self._scales.cpu()[:, None]

    @staticmethod
    def _widths(radii: list[float], sigma: float | Sequence[float] | None) -> list[float]:
        if sigma is None:
            outer = max(radii)
            return [0.005 if r == 0 else 0.4 if r == outer else 0.6 for r in radii]
        widths = [float(sigma)] * len(radii) if isinstance(sigma, (int, float)) else list(sigma)
        if len(widths) != len(radii) or any(not (w > 0 and math.isfinite(w)) for w in widths):
            raise ValueError(
                f"sigma: expected one positive width or one per ring ({len(radii)}), "
                f"received {sigma!r}"
            )
        return [float(w) for w in widths]

    def steering(self, matrices: Tensor) -> Tensor:
        r"""Coefficient-space matrices ``D(g)`` ``(B, n, n)`` for orthogonal ``matrices``
        ``(B, 2, 2)``: ``samples`` contracted with ``D(g) c`` is the filter ``psi(g^-1 p)``.

        Entries within 1e-12 of 0 or +-1 are set to those values, so the elements that map the
        pixel grid onto itself steer by exact signed permutations. Computed in float64.
        """
        m = matrices.to(torch.float64)
        theta = torch.atan2(m[:, 1, 0], m[:, 0, 0])  # rotation angle, or twice the mirror's
        sign = torch.where(torch.linalg.det(m) < 0, -1.0, 1.0).to(torch.float64)[:, None]
        freq, parity = self.frequencies.to(m.device), self.parity.to(m.device)
        angle = freq.to(torch.float64) * theta[:, None]  # (B, n)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # rotation: [[c, -s], [s, c]]; mirror: [[c, s], [s, -c]] on each (cos, sin) pair;
        # frequency 0 has cos = 1 on the diagonal.
        steer = torch.diag_embed(torch.where(parity == 1, sign * cos, cos))
        first = torch.nonzero((parity == 0) & (freq > 0)).squeeze(1)
        steer[:, first, first + 1] = -sign * sin[:, first]
        steer[:, first + 1, first] = sin[:, first + 1]
        for value in (0.0, 1.0, -1.0):
            steer = torch.where((steer - value).abs() < 1e-12, torch.full_like(steer, value), steer)
        return steer

    def filters(self, coefficients: Tensor) -> Tensor:
        """Sampled filters ``(..., k, k)`` of coefficient vectors ``(..., n)``."""
        samples = self.samples.to(coefficients.dtype)
        return torch.tensordot(coefficients, samples, dims=([-1], [0]))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, size={self.size}"
