"""Groups: elements as batched tensors, composition, inverse, Haar sampling and representations.

Every group stores a batch of ``B`` elements as one tensor whose leading dimension is ``B``:

==========================  ===========================  ===========================================
group                       element tensor               meaning
==========================  ===========================  ===========================================
``CyclicGroup(n)``          ``(B,)`` long                ``k``: rotation by ``2 pi k / n``
``DihedralGroup(n)``        ``(B, 2)`` long              ``(k, f)``: ``r^k s^f``, ``s`` = mirror x
``SymmetricGroup(n)``       ``(B, n)`` long              the permutation ``i -> g[i]``
``MatrixGroup(gens)``       ``(B, d, d)`` float64        a matrix of the generated finite group
``SO2()``, ``O2()``         ``(B, 2, 2)`` float          orthogonal matrices
``SO3()``, ``O3()``         ``(B, 3, 3)`` float          orthogonal matrices
``SO(n)``, ``O(n)``         ``(B, n, n)`` float          orthogonal matrices, any ``n >= 2``
``Euclidean(base)``         ``(B, d+1, d+1)`` float      homogeneous ``[[R, t], [0, 1]]``
==========================  ===========================  ===========================================

Finite groups enumerate their elements (``elements()``, ``index(g)``); compact groups sample
from the Haar measure (SO(3) through uniformly distributed unit quaternions, Shoemake 1992).
Continuous groups expose a Lie-algebra basis in the element's own matrix form, so that a path
``exp(t A)`` through the identity can be pushed through any action (see
:func:`equirelax.metrics.lie_derivative`).
"""

from __future__ import annotations

import functools
import itertools
import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from equirelax._checks import check_positive_int, check_tensor
from equirelax.representations import DirectSum, Representation

if TYPE_CHECKING:
    from e3nn import o3

__all__ = [
    "O2",
    "O3",
    "SO2",
    "SO3",
    "CyclicGroup",
    "DihedralGroup",
    "Euclidean",
    "FiniteGroup",
    "Group",
    "MatrixGroup",
    "Orthogonal",
    "SpecialOrthogonal",
    "SymmetricGroup",
    "check_irreps",
    "haar_elements",
]

_MAX_ENUMERATED = 40320  # 8!: the largest finite group we enumerate element by element


class Group(ABC):
    """A group whose elements are stored as batched tensors.

    Subclasses implement :meth:`identity`, :meth:`compose`, :meth:`inverse`, :meth:`sample`
    and :meth:`check`; finite groups also :meth:`elements` and :meth:`index`.
    """

    is_finite: bool = False

    @property
    @abstractmethod
    def key(self) -> str:
        """A string that identifies the group (used for equality and caching)."""

    @abstractmethod
    def identity(self, n: int = 1, *, device: torch.device | str | None = None) -> Tensor:
        """A batch of ``n`` identity elements."""

    @abstractmethod
    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        """The products ``a b`` (apply ``b`` first), element by element over the batch."""

    @abstractmethod
    def inverse(self, a: Tensor) -> Tensor:
        """The inverses ``a^-1``."""

    @abstractmethod
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """``n`` elements drawn from the uniform (Haar) distribution."""

    @abstractmethod
    def check(self, g: object, name: str = "g") -> Tensor:
        """Return ``g`` if it is a batch of elements of this group, raise otherwise."""

    @abstractmethod
    def standard_representation(self) -> Representation:
        """The defining representation (rotation matrices, permutation matrices, ...)."""

    def trivial_representation(self) -> Representation:
        """The one-dimensional trivial representation ``rho(g) = 1``."""
        return _trivial(self)

    def discrete_generators(self) -> Tensor:
        """Elements that, with the identity component, generate the group (may be empty)."""
        return self.identity(0)

    def lie_algebra(self) -> Tensor:
        """A basis ``(k, m, m)`` of the Lie algebra in the element's matrix form (``k = 0``
        for finite groups)."""
        return torch.zeros(0, 0, 0, dtype=torch.float64)

    def exp(self, algebra: Tensor) -> Tensor:
        """Elements ``exp(A)`` for a batch ``(B, m, m)`` of Lie-algebra matrices."""
        raise TypeError(f"{self} is a finite group: it has no exponential map")

    def equal(self, a: Tensor, b: Tensor, atol: float = 1e-6) -> Tensor:
        """Boolean ``(B,)``: whether ``a[i]`` equals ``b[i]`` (to ``atol`` for matrices)."""
        a, b = self.check(a, "a"), self.check(b, "b")
        if a.is_floating_point():
            return ((a - b).abs().flatten(1) <= atol).all(dim=1)
        return (a == b).reshape(a.shape[0], -1).all(dim=1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Group) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return self.key


class FiniteGroup(Group):
    """A finite group: its elements can be listed, indexed and multiplied by a table."""

    is_finite = True

    @property
    @abstractmethod
    def order(self) -> int:
        """The number of elements ``|G|``."""

    @abstractmethod
    def elements(self, *, device: torch.device | str | None = None) -> Tensor:
        """All elements, in index order: ``index(elements()) == arange(order)``."""

    @abstractmethod
    def index(self, g: Tensor) -> Tensor:
        """The index ``(B,)`` of each element in :meth:`elements`."""

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """``n`` elements drawn uniformly (with replacement).

        The indices are drawn on the generator's device (the CPU without one), so that a seed
        gives the same elements on every ``device``.
        """
        idx = torch.randint(
            self.order, (n,), generator=generator, device=_generator_device(generator)
        )
        elements = self.elements(device=device)
        return elements[idx.to(elements.device)]

    @functools.cached_property
    def multiplication_table(self) -> Tensor:
        """``table[i, j] = index(elements[i] elements[j])``, shape ``(|G|, |G|)``."""
        el = self.elements()
        n = self.order
        a = el.repeat_interleave(n, dim=0)
        b = el.repeat(n, *([1] * (el.ndim - 1)))
        return self.index(self.compose(a, b)).reshape(n, n)

    def regular_representation(self) -> Representation:
        """The left regular representation: ``rho(g) e_h = e_{g h}`` (``|G|`` dimensions)."""
        return Representation(self, self.order, self._regular_matrices, key=f"{self.key}.regular")

    def _regular_matrices(self, g: Tensor) -> Tensor:
        n = self.order
        rows = self.multiplication_table.to(g.device)[self.index(g)]  # row h: index(g h)
        out = torch.zeros(g.shape[0], n, n, dtype=torch.float64, device=g.device)
        return out.scatter_(1, rows.unsqueeze(1), 1.0)


class _PlanarFiniteGroup(FiniteGroup):
    """Shared code of C_n and D_n: the rotation step ``2 pi / n`` of the plane."""

    def __init__(self, n: int) -> None:
        self.n = check_positive_int("n", n)

    def _angle(self, k: Tensor) -> Tensor:
        """The angle ``2 pi k / n`` of rotation ``r^k`` in float64."""
        return k.to(torch.float64) * (2 * math.pi / self.n)


class CyclicGroup(_PlanarFiniteGroup):
    """The cyclic group ``C_n`` of planar rotations by multiples of ``2 pi / n``."""

    @property
    def key(self) -> str:
        return f"C{self.n}"

    @property
    def order(self) -> int:
        return self.n

    def identity(self, n: int = 1, *, device: torch.device | str | None = None) -> Tensor:
        return torch.zeros(n, dtype=torch.long, device=device)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        a, b = self.check(a, "a"), self.check(b, "b")
        return (a + b) % self.n

    def inverse(self, a: Tensor) -> Tensor:
        return (-self.check(a, "a")) % self.n

    def elements(self, *, device: torch.device | str | None = None) -> Tensor:
        return torch.arange(self.n, device=device)

    def index(self, g: Tensor) -> Tensor:
        return self.check(g)

    def discrete_generators(self) -> Tensor:
        return torch.ones(1, dtype=torch.long) % self.n

    def check(self, g: object, name: str = "g") -> Tensor:
        g = check_tensor(name, g)
        if g.ndim != 1 or g.is_floating_point() or g.is_complex():
            raise ValueError(
                f"{name}: expected a (B,) integer tensor of {self} elements, "
                f"received dtype {g.dtype} and shape {tuple(g.shape)}"
            )
        if g.numel() and (int(g.min()) < 0 or int(g.max()) >= self.n):
            raise ValueError(f"{name}: expected {self} elements in [0, {self.n}), received {g}")
        return g

    def rotation_angle(self, g: Tensor) -> Tensor:
        """The rotation angle ``2 pi k / n`` in float64."""
        return self._angle(self.check(g))

    def standard_representation(self) -> Representation:
        return Representation(self, 2, self._standard_matrices, key=f"{self.key}.standard")

    def _standard_matrices(self, g: Tensor) -> Tensor:
        return _rotation_2d(self.rotation_angle(g))


class DihedralGroup(_PlanarFiniteGroup):
    """The dihedral group ``D_n`` of ``2n`` elements ``r^k s^f``.

    ``r`` rotates by ``2 pi / n``; ``s`` mirrors the first coordinate, ``(x, y) -> (-x, y)``
    (a left-right flip of an image). Products follow ``s r = r^-1 s``:
    ``(k1, f1)(k2, f2) = (k1 + (-1)^f1 k2, f1 + f2)``.
    """

    @property
    def key(self) -> str:
        return f"D{self.n}"

    @property
    def order(self) -> int:
        return 2 * self.n

    def identity(self, n: int = 1, *, device: torch.device | str | None = None) -> Tensor:
        return torch.zeros(n, 2, dtype=torch.long, device=device)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        a, b = self.check(a, "a"), self.check(b, "b")
        sign = 1 - 2 * a[:, 1]
        k = (a[:, 0] + sign * b[:, 0]) % self.n
        return torch.stack([k, (a[:, 1] + b[:, 1]) % 2], dim=1)

    def inverse(self, a: Tensor) -> Tensor:
        a = self.check(a, "a")
        k = torch.where(a[:, 1] == 1, a[:, 0], (-a[:, 0]) % self.n)
        return torch.stack([k, a[:, 1]], dim=1)

    def elements(self, *, device: torch.device | str | None = None) -> Tensor:
        k = torch.arange(self.n, device=device).repeat(2)
        f = torch.arange(2, device=device).repeat_interleave(self.n)
        return torch.stack([k, f], dim=1)

    def index(self, g: Tensor) -> Tensor:
        g = self.check(g)
        return g[:, 1] * self.n + g[:, 0]

    def discrete_generators(self) -> Tensor:
        return torch.tensor([[1 % self.n, 0], [0, 1]])

    def check(self, g: object, name: str = "g") -> Tensor:
        g = check_tensor(name, g)
        if g.ndim != 2 or g.shape[1] != 2 or g.is_floating_point() or g.is_complex():
            raise ValueError(
                f"{name}: expected a (B, 2) integer tensor of {self} elements (k, f), "
                f"received dtype {g.dtype} and shape {tuple(g.shape)}"
            )
        if g.numel() and (
            int(g[:, 0].min()) < 0
            or int(g[:, 0].max()) >= self.n
            or int(g[:, 1].min()) < 0
            or int(g[:, 1].max()) > 1
        ):
            raise ValueError(f"{name}: expected k in [0, {self.n}) and f in {{0, 1}}, received {g}")
        return g

    def standard_representation(self) -> Representation:
        return Representation(self, 2, self._standard_matrices, key=f"{self.key}.standard")

    def _standard_matrices(self, g: Tensor) -> Tensor:
        rot = _rotation_2d(self._angle(g[:, 0]))
        mirror = torch.ones(g.shape[0], 2, dtype=torch.float64, device=g.device)
        mirror[:, 0] = 1.0 - 2.0 * g[:, 1].to(torch.float64)
        return rot * mirror.unsqueeze(1)  # R(k) @ diag(mirror)


class SymmetricGroup(FiniteGroup):
    """The symmetric group ``S_n`` of permutations ``i -> g[i]`` of ``n`` objects.

    Composition is ``(a b)[i] = a[b[i]]``. The standard representation is the permutation
    matrix ``P(g) e_i = e_{g[i]}``, which moves the entry at position ``i`` to ``g[i]``.
    """

    def __init__(self, n: int) -> None:
        self.n = check_positive_int("n", n)

    @property
    def key(self) -> str:
        return f"S{self.n}"

    @property
    def order(self) -> int:
        return math.factorial(self.n)

    def identity(self, n: int = 1, *, device: torch.device | str | None = None) -> Tensor:
        return torch.arange(self.n, device=device).repeat(n, 1)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        a, b = self.check(a, "a"), self.check(b, "b")
        batch = max(a.shape[0], b.shape[0])  # a batch of one broadcasts, as for other groups
        return torch.gather(a.expand(batch, -1), 1, b.expand(batch, -1))

    def inverse(self, a: Tensor) -> Tensor:
        return torch.argsort(self.check(a, "a"), dim=1)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """``n`` uniformly random permutations (argsort of i.i.d. uniforms)."""
        return torch.argsort(
            torch.rand(n, self.n, generator=generator, device=_generator_device(generator)), dim=1
        ).to(device)

    def elements(self, *, device: torch.device | str | None = None) -> Tensor:
        if self.order > _MAX_ENUMERATED:
            raise ValueError(
                f"n: enumerating S_n is supported for n <= 8, received n = {self.n}; "
                "use sample() for larger n"
            )
        return torch.tensor(list(itertools.permutations(range(self.n))), device=device).reshape(
            -1, self.n
        )

    def index(self, g: Tensor) -> Tensor:
        """Lexicographic rank (Lehmer code) of each permutation."""
        g = self.check(g)
        n = self.n
        smaller_after = (g.unsqueeze(2) > g.unsqueeze(1)).triu(diagonal=1).sum(dim=2)
        weights = torch.tensor([math.factorial(n - 1 - i) for i in range(n)], device=g.device)
        return (smaller_after * weights).sum(dim=1)

    def discrete_generators(self) -> Tensor:
        if self.n == 1:
            return self.identity(1)
        swap = torch.arange(self.n)
        swap[[0, 1]] = swap[[1, 0]]
        cycle = torch.roll(torch.arange(self.n), -1)
        return torch.stack([swap, cycle])

    def check(self, g: object, name: str = "g") -> Tensor:
        g = check_tensor(name, g)
        if g.ndim != 2 or g.shape[1] != self.n or g.is_floating_point() or g.is_complex():
            raise ValueError(
                f"{name}: expected a (B, {self.n}) integer tensor of permutations, "
                f"received dtype {g.dtype} and shape {tuple(g.shape)}"
            )
        if g.numel():
            ok = torch.sort(g, dim=1).values == torch.arange(self.n, device=g.device)
            if not bool(ok.all()):
                raise ValueError(f"{name}: expected permutations of 0..{self.n - 1}, received {g}")
        return g

    def standard_representation(self) -> Representation:
        return Representation(self, self.n, self._standard_matrices, key=f"{self.key}.standard")

    def _standard_matrices(self, g: Tensor) -> Tensor:
        out = torch.zeros(g.shape[0], self.n, self.n, dtype=torch.float64, device=g.device)
        return out.scatter_(1, g.unsqueeze(1), 1.0)


class MatrixGroup(FiniteGroup):
    """The finite group generated by the given ``(k, d, d)`` generator matrices.

    The elements are found by closure (breadth-first products of the generators) and stored in
    float64; ``max_order`` bounds the search so that an infinite group is reported, not looped on.
    """

    def __init__(self, generators: Tensor, *, name: str | None = None, max_order: int = 5000):
        generators = check_tensor("generators", generators).to(torch.float64)
        if generators.ndim != 3 or generators.shape[1] != generators.shape[2]:
            raise ValueError(
                "generators: expected a (k, d, d) tensor of square matrices, "
                f"received shape {tuple(generators.shape)}"
            )
        self.generators = generators
        self.d = generators.shape[1]
        self._elements = _closure(generators, max_order)
        digest = hash(tuple(torch.round(generators * 1e6).flatten().tolist()))
        self._key = name or f"MatrixGroup(d={self.d}, order={len(self._elements)}, {digest:x})"

    @property
    def key(self) -> str:
        return self._key

    @property
    def order(self) -> int:
        return self._elements.shape[0]

    def identity(self, n: int = 1, *, device: torch.device | str | None = None) -> Tensor:
        return torch.eye(self.d, dtype=torch.float64, device=device).repeat(n, 1, 1)

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return self.check(a, "a") @ self.check(b, "b")

    def inverse(self, a: Tensor) -> Tensor:
        return torch.linalg.inv(self.check(a, "a"))

    def elements(self, *, device: torch.device | str | None = None) -> Tensor:
        return self._elements.to(device)

    def index(self, g: Tensor) -> Tensor:
        g = self.check(g)
        elements = self._elements.to(g.device)
        dist = torch.cdist(g.flatten(1).to(torch.float64), elements.flatten(1))
        best = dist.min(dim=1)
        if bool((best.values > 1e-6).any()):
            raise ValueError("g: received a matrix that is not an element of this group")
        return best.indices

    def discrete_generators(self) -> Tensor:
        return self.generators

    def check(self, g: object, name: str = "g") -> Tensor:
        return _check_matrices(name, g, self.d, self)

    def standard_representation(self) -> Representation:
        return Representation(self, self.d, _as_float64, key=f"{self.key}.standard")


class _MatrixLieGroup(Group):
    """Continuous groups whose elements are matrices: products, ``exp`` and sampling shared.

    Subclasses draw samples in float64 (:meth:`_draw`); :meth:`sample` converts them.
    """

    @abstractmethod
    def _draw(self, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` samples in float64, on the generator's device."""

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """``n`` elements from the Haar measure (for translations: see the class)."""
        out = self._draw(n, generator)
        return out.to(device=device, dtype=dtype or torch.get_default_dtype())

    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        return self.check(a, "a") @ self.check(b, "b")

    def exp(self, algebra: Tensor) -> Tensor:
        return torch.linalg.matrix_exp(algebra)


class _OrthogonalGroup(_MatrixLieGroup):
    """Shared code of SO(d) and O(d): elements are ``(B, d, d)`` matrices."""

    d: int
    special: bool

    @property
    def key(self) -> str:
        return f"{'S' if self.special else ''}O({self.d})"

    def identity(self, n: int = 1, *, device: torch.device | str | None = None) -> Tensor:
        return torch.eye(self.d, device=device).repeat(n, 1, 1)

    def inverse(self, a: Tensor) -> Tensor:
        return self.check(a, "a").transpose(-1, -2)

    def check(self, g: object, name: str = "g") -> Tensor:
        return _check_matrices(name, g, self.d, self)

    def standard_representation(self) -> Representation:
        return Representation(
            self,
            self.d,
            _as_float64,
            lie_algebra=self.lie_algebra,
            key=f"{self.key}.standard",
        )

    def _random_reflections(self, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` matrices ``diag(s, 1, ...)`` with ``s = +-1`` uniformly (O(d) only)."""
        flip = torch.randint(2, (n,), generator=generator, device=_generator_device(generator)).to(
            torch.float64
        )
        diag = torch.ones(n, self.d, dtype=torch.float64, device=flip.device)
        diag[:, 0] = 1.0 - 2.0 * flip
        return torch.diag_embed(diag)


class SO2(_OrthogonalGroup):
    """Planar rotations SO(2); Haar measure: angle uniform on ``[0, 2 pi)``."""

    d = 2
    special = True

    def _draw(self, n: int, generator: torch.Generator | None) -> Tensor:
        theta = torch.rand(
            n, generator=generator, dtype=torch.float64, device=_generator_device(generator)
        )
        return _rotation_2d(theta * (2 * math.pi))

    def lie_algebra(self) -> Tensor:
        return torch.tensor([[[0.0, -1.0], [1.0, 0.0]]], dtype=torch.float64)

    def irrep(self, frequency: int) -> Representation:
        """The real irreducible representation of frequency ``k``: rotation by ``k theta``
        (the trivial representation for ``k = 0``)."""
        if frequency == 0:
            return self.trivial_representation()

        return Representation(
            self,
            2,
            functools.partial(_so2_irrep_matrices, frequency),
            lie_algebra=functools.partial(_so2_irrep_lie, frequency),
            key=f"{self.key}.irrep({frequency})",
        )


class O2(_OrthogonalGroup):
    """Planar rotations and reflections O(2) = SO(2) x| {1, diag(-1, 1)}."""

    d = 2
    special = False

    def _draw(self, n: int, generator: torch.Generator | None) -> Tensor:
        return SO2()._draw(n, generator) @ self._random_reflections(n, generator)

    def discrete_generators(self) -> Tensor:
        return torch.tensor([[[-1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)

    def lie_algebra(self) -> Tensor:
        return SO2().lie_algebra()


class SO3(_OrthogonalGroup):
    """Rotations SO(3); Haar samples from uniformly distributed unit quaternions.

    Irreducible representations come from e3nn (:meth:`irreps`), in e3nn's real basis where
    the ``l = 1`` irrep is the rotation matrix itself.
    """

    d = 3
    special = True

    def _draw(self, n: int, generator: torch.Generator | None) -> Tensor:
        from e3nn import o3  # e3nn loads torch._dynamo (a second): only when used

        q = torch.randn(
            n, 4, generator=generator, dtype=torch.float64, device=_generator_device(generator)
        )
        return o3.quaternion_to_matrix(q / q.norm(dim=1, keepdim=True))

    def lie_algebra(self) -> Tensor:
        return _so3_generators(1).clone()

    def irreps(self, irreps: str | o3.Irreps) -> Representation:
        """The direct sum of e3nn irreps, e.g. ``"4x0e + 2x1o + 1x2e"`` (parity is ignored
        by SO(3) and used by O(3))."""
        return _irreps_representation(self, check_irreps("irreps", irreps))


class O3(SO3):
    """Rotations and reflections O(3) = SO(3) x {I, -I}; Haar: SO(3) Haar times a fair sign."""

    special = False

    def _draw(self, n: int, generator: torch.Generator | None) -> Tensor:
        rotation = SO3()._draw(n, generator)
        sign = 1.0 - 2.0 * torch.randint(
            2, (n, 1, 1), generator=generator, device=_generator_device(generator)
        ).to(torch.float64)
        return rotation * sign

    def discrete_generators(self) -> Tensor:
        return -torch.eye(3, dtype=torch.float64).unsqueeze(0)


class SpecialOrthogonal(_OrthogonalGroup):
    """Rotations SO(n) of ``R^n`` for any ``n >= 2`` (the EMLP group ``SO(n)``).

    Haar samples: the QR decomposition of a Gaussian matrix with the signs of ``R``'s diagonal
    moved into ``Q`` (Mezzadri 2007), then one column flipped where the determinant is -1. The
    Lie-algebra basis is ``E_ij - E_ji`` for ``i < j``. For ``n = 3`` prefer :class:`SO3`, which
    also has e3nn's irreducible representations.
    """

    special = True

    def __init__(self, n: int) -> None:
        self.d = check_positive_int("n", n)
        if n < 2:
            raise ValueError(f"n: expected a dimension >= 2, received {n}")

    def _draw(self, n: int, generator: torch.Generator | None) -> Tensor:
        q = _haar_orthogonal(n, self.d, generator)
        flip = torch.linalg.det(q) < 0
        q[flip, :, 0] = -q[flip, :, 0]
        return q

    def lie_algebra(self) -> Tensor:
        return _antisymmetric_basis(self.d)


class Orthogonal(SpecialOrthogonal):
    """Rotations and reflections O(n) of ``R^n`` for any ``n >= 2`` (e.g. EMLP's ``O(5)``).

    Haar samples as in :class:`SpecialOrthogonal` without the determinant fix; the discrete
    generator is the reflection ``diag(-1, 1, ..., 1)``.
    """

    special = False

    def _draw(self, n: int, generator: torch.Generator | None) -> Tensor:
        return _haar_orthogonal(n, self.d, generator)

    def discrete_generators(self) -> Tensor:
        reflection = torch.eye(self.d, dtype=torch.float64)
        reflection[0, 0] = -1.0
        return reflection.unsqueeze(0)


class Euclidean(_MatrixLieGroup):
    """The Euclidean group ``E(d) = R^d x| O(d)`` (or ``SE(d)`` with a special ``base``).

    Elements are homogeneous matrices ``[[R, t], [0, 1]]`` acting on points as ``R x + t``.
    Translations are not compact: :meth:`sample` draws ``t ~ N(0, translation_scale^2 I)``.
    """

    def __init__(self, base: _OrthogonalGroup, translation_scale: float = 1.0) -> None:
        if not isinstance(base, _OrthogonalGroup):
            raise TypeError(
                f"base: expected SO2(), O2(), SO3(), O3(), SO(n) or O(n), received {base!r}"
            )
        self.base = base
        self.d = base.d
        self.translation_scale = float(translation_scale)

    @property
    def key(self) -> str:
        return f"E[{self.base.key}]"

    def identity(self, n: int = 1, *, device: torch.device | str | None = None) -> Tensor:
        return torch.eye(self.d + 1, device=device).repeat(n, 1, 1)

    def inverse(self, a: Tensor) -> Tensor:
        a = self.check(a, "a")
        rot_t = a[:, : self.d, : self.d].transpose(-1, -2)
        out = torch.zeros_like(a)
        out[:, : self.d, : self.d] = rot_t
        out[:, : self.d, self.d] = -(rot_t @ a[:, : self.d, self.d].unsqueeze(-1)).squeeze(-1)
        out[:, self.d, self.d] = 1.0
        return out

    def _draw(self, n: int, generator: torch.Generator | None) -> Tensor:
        rot = self.base._draw(n, generator)
        shift = torch.randn(
            n, self.d, generator=generator, dtype=torch.float64, device=_generator_device(generator)
        )
        return self.from_parts(rot, shift * self.translation_scale)

    @staticmethod
    def from_parts(rotation: Tensor, translation: Tensor) -> Tensor:
        """Homogeneous matrices from rotations ``(B, d, d)`` and translations ``(B, d)``."""
        n, d = translation.shape
        out = torch.zeros(n, d + 1, d + 1, dtype=rotation.dtype, device=rotation.device)
        out[:, :d, :d] = rotation
        out[:, :d, d] = translation
        out[:, d, d] = 1.0
        return out

    def rotation(self, g: Tensor) -> Tensor:
        """The linear part ``R`` of each element."""
        return self.check(g)[:, : self.d, : self.d]

    def translation(self, g: Tensor) -> Tensor:
        """The translation part ``t`` of each element."""
        return self.check(g)[:, : self.d, self.d]

    def discrete_generators(self) -> Tensor:
        gens = self.base.discrete_generators()
        return self.from_parts(gens, torch.zeros(gens.shape[0], self.d, dtype=gens.dtype))

    def lie_algebra(self) -> Tensor:
        rot = self.base.lie_algebra()
        d = self.d
        out = torch.zeros(rot.shape[0] + d, d + 1, d + 1, dtype=torch.float64)
        out[: rot.shape[0], :d, :d] = rot
        for i in range(d):
            out[rot.shape[0] + i, i, d] = 1.0
        return out

    def check(self, g: object, name: str = "g") -> Tensor:
        return _check_matrices(name, g, self.d + 1, self)

    def standard_representation(self) -> Representation:
        """The rotation part acting on vectors (translations act trivially on vectors)."""
        return Representation(
            self,
            self.d,
            self._linear_part,
            lie_algebra=self._rotation_lie_algebra,
            key=f"{self.key}.standard",
        )

    def _linear_part(self, g: Tensor) -> Tensor:
        return g[:, : self.d, : self.d].to(torch.float64)

    def _rotation_lie_algebra(self) -> Tensor:
        return self.lie_algebra()[:, : self.d, : self.d]


# Representation matrices are module-level functions (bound with functools.partial), not
# closures, so that models holding representations can be pickled with torch.save.


def _as_float64(g: Tensor) -> Tensor:
    return g.to(torch.float64)


def _so2_irrep_matrices(frequency: int, g: Tensor) -> Tensor:
    theta = torch.atan2(g[:, 1, 0], g[:, 0, 0]).to(torch.float64)
    return _rotation_2d(frequency * theta)


def _so2_irrep_lie(frequency: int) -> Tensor:
    return frequency * SO2().lie_algebra()


def _trivial_matrices(g: Tensor) -> Tensor:
    return torch.ones(g.shape[0], 1, 1, dtype=torch.float64, device=g.device)


def _trivial_lie(group: Group) -> Tensor:
    return torch.zeros(group.lie_algebra().shape[0], 1, 1, dtype=torch.float64)


def _trivial(group: Group) -> Representation:
    return Representation(
        group,
        1,
        _trivial_matrices,
        lie_algebra=functools.partial(_trivial_lie, group),
        key=f"{group.key}.trivial",
    )


def check_irreps(name: str, value: object) -> o3.Irreps:
    """``o3.Irreps(value)``; a ``ValueError`` naming the argument if it is not irreps of
    positive dimension (e3nn is imported here, when irreps are first used)."""
    from e3nn import o3

    try:
        irreps = o3.Irreps(value)
    except (ValueError, TypeError, AssertionError) as error:
        raise ValueError(
            f"{name}: expected e3nn irreps such as '8x0e + 4x1o', received {value!r}"
        ) from error
    if irreps.dim == 0:
        raise ValueError(f"{name}: expected irreps of positive dimension, received {value!r}")
    return irreps


def _irreps_representation(group: SO3, irreps: o3.Irreps) -> Representation:
    return DirectSum([(mul, _irrep(group, irrep.l, irrep.p)) for mul, irrep in irreps])


def _irrep(group: SO3, l: int, p: int) -> Representation:  # noqa: E741 (l is the degree)
    from e3nn import o3

    irrep = o3.Irrep(l, p if not group.special else 1)
    return Representation(
        group,
        2 * l + 1,
        functools.partial(_irrep_matrices, l, irrep.p),
        lie_algebra=functools.partial(_irrep_lie, l),
        key=f"{group.key}.{irrep}",
    )


def _irrep_matrices(l: int, parity: int, g: Tensor) -> Tensor:  # noqa: E741 (the degree)
    # An improper g = -R (O(3)) maps to p * D(R), as e3nn's Irrep.D_from_matrix. In e3nn's real
    # basis D_0 = 1 and D_1(R) = R, written out: no matrix exponentials for the l <= 1 of the
    # N-body models (CR acts with them on every relaxed layer's inputs at every step).
    g = g.to(torch.float64)
    sign = torch.linalg.det(g).sign()[:, None, None]
    if l == 0:
        out = torch.ones(g.shape[0], 1, 1, dtype=g.dtype, device=g.device)
    elif l == 1:
        out = sign * g
    else:
        out = _wigner_d(l, sign * g)
    return out * sign if parity == -1 else out


def _irrep_lie(l: int) -> Tensor:  # noqa: E741 (the degree)
    return _so3_generators(l).clone()


@functools.lru_cache(maxsize=32)
def _so3_generators(l: int) -> Tensor:  # noqa: E741 (l is the degree)
    """e3nn's Lie-algebra basis ``(3, 2l+1, 2l+1)`` of the real irrep ``l``, built in float64.

    ``o3.so3_generators`` computes in the default dtype, which leaves errors of about 1e-7 in
    float32; the cached tensor is shared, so callers must clone it before changing it.
    """
    from e3nn import o3

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return o3.so3_generators(l).to(torch.float64)
    finally:
        torch.set_default_dtype(previous)


def _wigner_d(l: int, rotation: Tensor) -> Tensor:  # noqa: E741 (l is the degree)
    """e3nn's real Wigner matrix ``D_l(R)`` of proper rotations ``(B, 3, 3)`` in float64, on the
    device of ``rotation``.

    Same convention as ``o3.Irrep(l, 1).D_from_matrix`` (``R = Y(alpha) X(beta) Y(gamma)``,
    ``D_l = exp(alpha J_y) exp(beta J_x) exp(gamma J_y)``), but with float64 generators, an
    ``atan2`` for ``beta`` (accurate near the poles, where ``acos`` is not) and every tensor on
    the rotation's device (e3nn's ``wigner_D`` builds its generators on the CPU).
    """
    from e3nn import o3

    rotation = rotation.to(torch.float64)
    axis = rotation[:, :, 1]  # R e_y = Y(alpha) X(beta) e_y
    alpha = torch.atan2(axis[:, 0], axis[:, 2])
    beta = torch.atan2(torch.hypot(axis[:, 0], axis[:, 2]), axis[:, 1])
    rest = o3.angles_to_matrix(alpha, beta, torch.zeros_like(alpha)).transpose(-1, -2) @ rotation
    gamma = torch.atan2(rest[:, 0, 2], rest[:, 0, 0])
    gens = _so3_generators(l).to(rotation.device)

    def exp(angle: Tensor, generator: Tensor) -> Tensor:
        return torch.linalg.matrix_exp(angle[:, None, None] * generator)

    return exp(alpha, gens[1]) @ exp(beta, gens[0]) @ exp(gamma, gens[1])


def _generator_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _haar_orthogonal(n: int, d: int, generator: torch.Generator | None) -> Tensor:
    """``n`` Haar-distributed ``(d, d)`` orthogonal matrices in float64 (QR with sign fix)."""
    gauss = torch.randn(
        n, d, d, generator=generator, dtype=torch.float64, device=_generator_device(generator)
    )
    q, r = torch.linalg.qr(gauss)
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def _antisymmetric_basis(d: int) -> Tensor:
    """The basis ``E_ij - E_ji`` (``i < j``) of so(d), float64, ``(d (d - 1) / 2, d, d)``."""
    pairs = list(itertools.combinations(range(d), 2))
    out = torch.zeros(len(pairs), d, d, dtype=torch.float64)
    for k, (i, j) in enumerate(pairs):
        out[k, i, j], out[k, j, i] = -1.0, 1.0
    return out


def _rotation_2d(theta: Tensor) -> Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _check_matrices(name: str, g: object, d: int, group: Group) -> Tensor:
    g = check_tensor(name, g)
    if g.ndim != 3 or g.shape[1:] != (d, d) or not g.is_floating_point():
        raise ValueError(
            f"{name}: expected a (B, {d}, {d}) float tensor of {group} elements, "
            f"received dtype {g.dtype} and shape {tuple(g.shape)}"
        )
    return g


def _closure(generators: Tensor, max_order: int) -> Tensor:
    """All products of ``generators``, found breadth first; duplicates removed to 1e-8."""
    d = generators.shape[1]
    found = torch.eye(d, dtype=torch.float64).unsqueeze(0)
    frontier = found
    while frontier.shape[0]:
        candidates = (generators.unsqueeze(0) @ frontier.unsqueeze(1)).reshape(-1, d, d)
        flat = candidates.flatten(1)
        unseen = torch.cdist(flat, found.flatten(1)).min(dim=1).values > 1e-8
        same = torch.cdist(flat, flat) <= 1e-8
        first = same.float().argmax(dim=1) == torch.arange(flat.shape[0])
        frontier = candidates[unseen & first]
        found = torch.cat([found, frontier])
        if found.shape[0] > max_order:
            raise ValueError(
                f"generators: the generated group has more than max_order = {max_order} "
                "elements (is it infinite?)"
            )
    return found


def haar_elements(
    group: Group,
    num_samples: int,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """The elements a check or a group average runs over: every element of a finite group
    (up to 4096), else ``num_samples`` Haar samples drawn with ``generator``."""
    if isinstance(group, FiniteGroup) and group.order <= 4096:
        return group.elements(device=device)
    check_positive_int("num_samples", num_samples)
    return group.sample(num_samples, generator, device=device, dtype=dtype)
