"""Actions: how a batch of group elements acts on a batch of tensors.

An :class:`Action` is called as ``action(g, x)``: ``g`` holds ``B`` elements (or one element for
the whole batch) and ``x`` has leading batch dimension ``B``; sample ``i`` is moved by ``g[i]``.
Every action is a homomorphism, ``action(a, action(b, x)) == action(a b, x)``.

=============================  ================================================================
action                         acts on
=============================  ================================================================
``TrivialAction(G)``           anything, by the identity (invariant features, charges)
``RepresentationAction(rho)``  features ``(B, ..., d)`` by ``x -> rho(g) x`` on one axis
``VectorAction(G)``            vectors ``(B, ..., d)`` by the standard representation
``PointAction(G)``             points ``(B, ..., d)`` by ``R x + t`` (``t = 0`` unless Euclidean)
``ImageAction(G)``             images ``(B, C, H, W)`` (or ``(B, C, |G|, H, W)`` regular fibres)
``PermutationAction(S_n)``     sets ``(B, n, ...)`` and graphs ``(B, n, n, ...)`` by reindexing
``DirectSumAction(a, b, ...)`` tuples ``(x_a, x_b, ...)``, each part by its own action
``irreps_action(irreps)``      e3nn irreps features ``(B, ..., irreps.dim)`` under O(3)
=============================  ================================================================

Where an action is expected by the metrics, :func:`as_action` also takes e3nn irreps (an
``o3.Irreps`` or a string such as ``"2x0e + 1x1o"``) and tuples of actions or irreps.
"""

from __future__ import annotations

import functools
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from equirelax._checks import batch_size, check_tensor, describe
from equirelax.groups import (
    O3,
    SO3,
    Euclidean,
    FiniteGroup,
    Group,
    SymmetricGroup,
    _PlanarFiniteGroup,
    check_irreps,
)
from equirelax.representations import Representation

if TYPE_CHECKING:
    from e3nn import o3

__all__ = [
    "Action",
    "ActionLike",
    "DirectSumAction",
    "ImageAction",
    "PermutationAction",
    "PointAction",
    "RepresentationAction",
    "TrivialAction",
    "VectorAction",
    "as_action",
    "as_action_pair",
    "check_action_pair",
    "increment_action",
    "irreps_action",
]


class Action(ABC):
    """A group action ``(g, x) -> g . x`` on batched tensors (see the module docstring)."""

    def __init__(self, group: Group) -> None:
        if not isinstance(group, Group):
            raise TypeError(f"group: expected an equirelax Group, received {group!r}")
        self.group = group

    def __call__(self, g: Tensor, x: Any) -> Any:
        g = self.group.check(g, "g")
        self.check_input(x, "x")
        batch = batch_size(x)
        if g.shape[0] not in (1, batch):
            raise ValueError(
                f"g: expected {batch} group elements (one per sample of x) or 1, "
                f"received {g.shape[0]}"
            )
        if g.shape[0] != batch:
            g = g.expand(batch, *g.shape[1:])
        return self.act(g, x)

    @abstractmethod
    def act(self, g: Tensor, x: Any) -> Any:
        """Apply ``g[i]`` to sample ``x[i]``; ``g`` and ``x`` are already checked."""

    def check_input(self, x: Any, name: str = "x") -> None:
        """Raise if ``x`` is not something this action can act on."""
        check_tensor(name, x)
        if x.ndim == 0:
            raise ValueError(f"{name}: expected a batched tensor, received a scalar")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.group})"


class TrivialAction(Action):
    """The trivial action ``g . x = x`` (invariant inputs or outputs)."""

    def act(self, g: Tensor, x: Tensor) -> Tensor:
        return x


class RepresentationAction(Action):
    """``x -> rho(g) x`` along axis ``dim`` of ``x`` (the last axis by default).

    A direct-sum representation is applied block by block, so the full ``(d, d)`` matrix is
    never formed for large multiplicities.
    """

    def __init__(self, representation: Representation, dim: int = -1) -> None:
        if not isinstance(representation, Representation):
            raise TypeError(
                f"representation: expected a Representation, received {representation!r}"
            )
        super().__init__(representation.group)
        self.representation = representation
        self.dim = dim

    def check_input(self, x: Any, name: str = "x") -> None:
        super().check_input(x, name)
        if not (x.is_floating_point() or x.is_complex()):
            raise ValueError(
                f"{name}: expected a floating-point tensor for {self.representation}, whose "
                f"matrices mix its entries, received dtype {x.dtype}"
            )
        if x.ndim < 2 or x.shape[self.dim] != self.representation.dim:
            raise ValueError(
                f"{name}: expected size {self.representation.dim} along dimension {self.dim} "
                f"for {self.representation}, received shape {tuple(x.shape)}"
            )

    def act(self, g: Tensor, x: Tensor) -> Tensor:
        """``rho(g[i]) x[i]``; one element shared by the batch (``g`` expanded from one, as
        :meth:`Action.__call__` does) has its matrices computed once."""
        moved = x.movedim(self.dim, -1)
        lead = moved.shape[:-1]
        flat = moved.reshape(lead[0], -1, moved.shape[-1])  # (B, M, d)
        elements = g[:1] if g.shape[0] > 1 and g.stride(0) == 0 else g  # one shared, or one each
        parts = []
        offset = 0
        for mult, rep in self.representation.blocks:
            size = mult * rep.dim
            block = flat[..., offset : offset + size].reshape(*flat.shape[:2], mult, rep.dim)
            matrices = rep(elements, x.dtype).to(x.device).expand(g.shape[0], rep.dim, rep.dim)
            parts.append(torch.einsum("bij,bmkj->bmki", matrices, block).flatten(2))
            offset += size
        return torch.cat(parts, dim=-1).reshape(moved.shape).movedim(-1, self.dim)

    def __repr__(self) -> str:
        return f"RepresentationAction({self.representation.key})"


class VectorAction(RepresentationAction):
    """Vectors ``(B, ..., d)`` transformed by the group's standard representation."""

    def __init__(self, group: Group, dim: int = -1) -> None:
        super().__init__(group.standard_representation(), dim)


class PointAction(VectorAction):
    """Points ``(B, ..., d)`` transformed by ``x -> R x + t``; ``t`` is nonzero only for
    :class:`~equirelax.groups.Euclidean` groups (positions of a point cloud)."""

    def act(self, g: Tensor, x: Tensor) -> Tensor:
        out = super().act(g, x)
        if isinstance(self.group, Euclidean):
            shift = self.group.translation(g).to(dtype=x.dtype, device=x.device)
            out = out + shift.reshape(shift.shape[0], *([1] * (x.ndim - 2)), shift.shape[1])
        return out


class ImageAction(Action):
    """Rotations and reflections of square images about their centre.

    ``x`` is ``(B, C, H, W)`` (``fibre="trivial"``), ``(B, C, |G|, H, W)`` feature maps of a
    group convolution (``fibre="regular"``: the group axis is also permuted,
    ``(g . f)(h) = f(g^-1 h)``) or planar vector fields ``(B, ..., 2, H, W)`` such as velocity
    frames (``fibre="vector"``: each vector, components ``(x right, y up)``, is also turned,
    ``(g . v)(p) = R_g v(R_g^-1 p)``).

    Rotations by multiples of 90 degrees and the mirrors of D_4 are
    exact pixel permutations; other angles are bilinear interpolation (``grid_sample``), which is
    only approximately a homomorphism. The first image axis points down, the second right; a
    rotation by ``theta`` turns the image counter-clockwise as displayed.
    """

    def __init__(self, group: Group, fibre: str = "trivial") -> None:
        super().__init__(group)
        if fibre not in ("trivial", "regular", "vector"):
            raise ValueError(
                f"fibre: expected 'trivial', 'regular' or 'vector', received {fibre!r}"
            )
        if fibre == "regular" and not isinstance(group, FiniteGroup):
            raise ValueError(f"fibre: 'regular' needs a finite group, received {group}")
        standard = group.standard_representation()
        if standard.dim != 2:
            raise ValueError(f"group: expected a group acting on the plane, received {group}")
        self.fibre = fibre
        self._standard = standard  # built once: act() is called in training loops

    @property
    def exact(self) -> bool:
        """Whether every element maps the pixel grid onto itself (C_1, C_2, C_4, D_1, D_2, D_4)."""
        return isinstance(self.group, _PlanarFiniteGroup) and self.group.n in (1, 2, 4)

    def check_input(self, x: Any, name: str = "x") -> None:
        super().check_input(x, name)
        if not (self.exact or x.is_floating_point()):
            raise ValueError(
                f"{name}: expected a floating-point tensor for {self.group}, whose rotations "
                f"interpolate between pixels, received dtype {x.dtype}"
            )
        if self.fibre == "vector":
            if x.ndim < 4 or x.shape[-3] != 2 or x.shape[-1] != x.shape[-2]:
                raise ValueError(
                    f"{name}: expected square vector fields (B, ..., 2, H, W), received shape "
                    f"{tuple(x.shape)}"
                )
            return
        ndim = 4 if self.fibre == "trivial" else 5
        layout = (
            "(B, C, H, W)" if ndim == 4 else f"(B, C, {getattr(self.group, 'order', '|G|')}, H, W)"
        )
        if x.ndim != ndim or x.shape[-1] != x.shape[-2]:
            raise ValueError(
                f"{name}: expected square images {layout}, received shape {tuple(x.shape)}"
            )
        if self.fibre == "regular" and x.shape[2] != self.group.order:  # type: ignore[attr-defined]
            raise ValueError(
                f"{name}: expected {self.group.order} group channels at dimension 2 for "  # type: ignore[attr-defined]
                f"{self.group}, received shape {tuple(x.shape)}"
            )

    def act(self, g: Tensor, x: Tensor) -> Tensor:
        matrices = self._standard(g)  # on g's device
        if self.exact:
            size = x.shape[-1]
            perm = _pixel_permutation(matrices.round().to(torch.long), size).to(x.device)
            flat = x.flatten(-2)
            idx = perm.reshape(perm.shape[0], *([1] * (flat.ndim - 2)), -1).expand_as(flat)
            out = torch.gather(flat, -1, idx).reshape(x.shape)
        else:
            out = _rotate_bilinear(x, matrices.to(x.dtype))
        if self.fibre == "vector":
            turn = (matrices.round() if self.exact else matrices).to(x.device, x.dtype)
            turn = turn.reshape(turn.shape[0], *([1] * (x.ndim - 4)), 2, 2)
            out = torch.einsum("...ij,...jhw->...ihw", turn, out)
        if self.fibre == "regular":
            group: FiniteGroup = self.group  # type: ignore[assignment]
            table = group.multiplication_table.to(g.device)
            source = table[group.index(group.inverse(g))].to(x.device)  # (B, |G|): g^-1 h
            idx = source.reshape(*source.shape[:1], 1, -1, 1, 1).expand_as(out)
            out = torch.gather(out, 2, idx)
        return out


class PermutationAction(Action):
    """Permutations of the axes ``dims`` of ``x`` (nodes of a set or graph).

    ``g . x`` moves the entry at position ``i`` to position ``g[i]``: ``(g . x)[g[i]] = x[i]``.
    ``dims=(1,)`` acts on a set ``(B, n, ...)``; ``dims=(1, 2)`` on an adjacency or edge
    tensor ``(B, n, n, ...)``.
    """

    def __init__(self, group: SymmetricGroup, dims: Sequence[int] = (1,)) -> None:
        if not isinstance(group, SymmetricGroup):
            raise TypeError(f"group: expected a SymmetricGroup, received {group!r}")
        super().__init__(group)
        if not dims or any(d < 1 for d in dims):
            raise ValueError(f"dims: expected positive axes after the batch axis, received {dims}")
        self.dims = tuple(dims)

    def check_input(self, x: Any, name: str = "x") -> None:
        super().check_input(x, name)
        n = self.group.n  # type: ignore[attr-defined]
        if x.ndim <= max(self.dims) or any(x.shape[d] != n for d in self.dims):
            raise ValueError(
                f"{name}: expected size {n} along dimensions {self.dims}, "
                f"received shape {tuple(x.shape)}"
            )

    def act(self, g: Tensor, x: Tensor) -> Tensor:
        source = torch.argsort(g, dim=1).to(x.device)  # (g . x)[j] = x[g^-1[j]]
        for dim in self.dims:
            shape = [1] * x.ndim
            shape[0], shape[dim] = source.shape[0], source.shape[1]
            x = torch.gather(x, dim, source.reshape(shape).expand_as(x))
        return x


class DirectSumAction(Action):
    """Acts on a tuple ``(x_1, ..., x_k)`` by ``(a_1(g, x_1), ..., a_k(g, x_k))``.

    All parts share one group and one batch of elements, e.g. positions, velocities and
    charges of a particle system under E(3).
    """

    def __init__(self, *actions: Action) -> None:
        if not actions:
            raise ValueError("actions: expected at least one action")
        for i, action in enumerate(actions):
            if not isinstance(action, Action):
                raise TypeError(f"actions[{i}]: expected an Action, received {action!r}")
            if action.group != actions[0].group:
                raise ValueError(
                    f"actions[{i}]: expected an action of {actions[0].group} like actions[0], "
                    f"received one of {action.group}"
                )
        super().__init__(actions[0].group)
        self.actions = tuple(actions)

    def check_input(self, x: Any, name: str = "x") -> None:
        if not isinstance(x, (tuple, list)) or len(x) != len(self.actions):
            raise ValueError(
                f"{name}: expected a tuple of {len(self.actions)} tensors, received {describe(x)}"
            )
        for i, (action, part) in enumerate(zip(self.actions, x, strict=True)):
            action.check_input(part, f"{name}[{i}]")
        sizes = {part.shape[0] for part in x}
        if len(sizes) != 1:
            raise ValueError(
                f"{name}: expected one batch size for every part, received {sorted(sizes)}"
            )

    def act(self, g: Tensor, x: Any) -> tuple[Tensor, ...]:
        return tuple(a.act(g, part) for a, part in zip(self.actions, x, strict=True))

    def __repr__(self) -> str:
        return f"DirectSumAction({', '.join(repr(a) for a in self.actions)})"


def irreps_action(irreps: str | o3.Irreps, group: SO3 | None = None) -> RepresentationAction:
    """The action of O(3) (or ``group``, e.g. ``SO3()``) on e3nn irreps features
    ``(B, ..., irreps.dim)``: ``x -> D(g) x`` with ``D = irreps.D_from_matrix`` (e3nn's real
    basis and layout; an improper ``g = -R`` acts on ``(l, p)`` by ``p D_l(R)``), computed in
    float64 by :meth:`equirelax.groups.SO3.irreps`. Cached: equal irreps give one action.

    Examples
    --------
    >>> action = irreps_action("1x0e + 1x1o")
    >>> g = -torch.eye(3, dtype=torch.float64).unsqueeze(0)  # the inversion
    >>> action(g, torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64))
    tensor([[ 1., -2., -3., -4.]], dtype=torch.float64)
    """
    group = O3() if group is None else group
    if not isinstance(group, SO3):
        raise TypeError(f"group: expected SO3() or O3() (or None: O3()), received {group!r}")
    return _irreps_action(str(check_irreps("irreps", irreps)), group)


@functools.lru_cache(maxsize=128)
def _irreps_action(irreps: str, group: SO3) -> RepresentationAction:
    return RepresentationAction(group.irreps(irreps))


ActionLike = Union[Action, str, "o3.Irreps", "tuple[Any, ...]", "list[Any]"]
"""What :func:`as_action` accepts: an action, e3nn irreps, or a tuple of these."""


def as_action(value: ActionLike, name: str = "action") -> Action:
    """``value`` as an :class:`Action`: an action as is; e3nn irreps (``o3.Irreps`` or a
    string such as ``"2x0e + 1x1o"``) as :func:`irreps_action` (O(3)); a tuple or list of
    these (the parts of a tuple input, e.g. a tensor product's two inputs) as a
    :class:`DirectSumAction`. A ``TypeError`` names ``name`` for anything else."""
    if isinstance(value, Action):
        return value
    expected = (
        f"{name}: expected an Action, e3nn irreps (o3.Irreps or a string such as "
        f"'2x0e + 1x1o') or a non-empty tuple of them, received {value!r}"
    )
    if isinstance(value, str) or _is_irreps(value):
        try:
            return irreps_action(check_irreps(name, value))
        except ValueError as error:
            raise TypeError(f"{expected} ({error})") from error
    if isinstance(value, (tuple, list)) and value:
        return DirectSumAction(*(as_action(v, f"{name}[{i}]") for i, v in enumerate(value)))
    raise TypeError(expected)


def as_action_pair(action_in: ActionLike, action_out: ActionLike | None) -> tuple[Action, Action]:
    """``(action_in, action_out)`` as actions (:func:`as_action`), ``action_out`` defaulting to
    the trivial action, checked to share one group (:func:`check_action_pair`)."""
    action_in = as_action(action_in, "action_in")
    action_out = None if action_out is None else as_action(action_out, "action_out")
    return action_in, check_action_pair(action_in, action_out)


def _is_irreps(value: object) -> bool:
    """Whether ``value`` is an ``o3.Irreps`` (without importing e3nn: if it is not loaded, no
    value can be one)."""
    o3_module = sys.modules.get("e3nn.o3")
    return o3_module is not None and isinstance(value, o3_module.Irreps)


def increment_action(action: Action) -> Action:
    """The action on differences of values that ``action`` moves: a point part becomes a vector
    part (``g (x - y) = R (x - y)``, the translation cancels), every other part is unchanged.

    A free branch added to a layer's output, ``f_eq(x) + W(x)``, must give an increment: the sum
    is a point when ``W(x)`` is a vector (EGNN's coordinate update), so ``W`` is equivariant
    under the layer's input action and this output action.
    """
    if isinstance(action, PointAction) and type(action).act is PointAction.act:
        return VectorAction(action.group, action.dim)
    if isinstance(action, DirectSumAction) and type(action).act is DirectSumAction.act:
        parts = tuple(increment_action(part) for part in action.actions)
        if all(new is old for new, old in zip(parts, action.actions, strict=True)):
            return action
        return DirectSumAction(*parts)
    return action


@functools.lru_cache(maxsize=64)
def check_action_pair(action_in: Action, action_out: Action | None) -> Action:
    """``action_out`` (the trivial action if ``None``), checked to be an action of
    ``action_in``'s group; errors name the bad argument."""
    if not isinstance(action_in, Action):
        raise TypeError(f"action_in: expected an Action, received {action_in!r}")
    action_out = action_out or TrivialAction(action_in.group)
    if not isinstance(action_out, Action):
        raise TypeError(f"action_out: expected an Action or None, received {action_out!r}")
    if action_out.group != action_in.group:
        raise ValueError(
            f"action_out: expected an action of {action_in.group} like action_in, "
            f"received one of {action_out.group}"
        )
    return action_out


def _cached_pixel_grid(size: int) -> Tensor:
    centre = (size - 1) / 2
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    xy = torch.stack([cols - centre, centre - rows], dim=-1).reshape(-1, 2)
    return (2 * xy).round().to(torch.long)  # doubled so half-integer centres stay integers


def _pixel_grid(size: int, device: torch.device | str | None = None) -> Tensor:
    """Doubled pixel-centre coordinates ``(size * size, 2)`` as ``(x right, y up)``, centred on
    0, on ``device``; a fresh copy of a cached CPU tensor, so callers may change it."""
    return _cached_pixel_grid(size).to(device=device, copy=True)


def _pixel_permutation(matrices: Tensor, size: int) -> Tensor:
    """For integer matrices ``M`` (B, 2, 2): output pixel ``p`` reads input pixel ``M^-1 p``
    (flat indices ``(B, P)`` on the device of ``matrices``)."""
    grid = _pixel_grid(size, matrices.device)  # (P, 2) doubled coordinates
    inverse = matrices.transpose(-1, -2)  # orthogonal integer matrices
    # A broadcast product, not einsum: CUDA has no integer matmul.
    source = (inverse.unsqueeze(1) * grid.reshape(1, -1, 1, 2)).sum(dim=-1)  # (B, P, 2)
    centre2 = size - 1
    cols = (source[..., 0] + centre2) // 2
    rows = (centre2 - source[..., 1]) // 2
    return rows * size + cols


def _rotate_bilinear(x: Tensor, matrices: Tensor) -> Tensor:
    """Output pixel ``p`` samples the input at ``M^-1 p`` by bilinear interpolation."""
    batch = x.shape[0]
    flip_y = torch.tensor([1.0, -1.0], dtype=x.dtype, device=x.device)
    inverse = matrices.transpose(-1, -2).to(x.device)
    # affine_grid uses (x right, y down) coordinates: conjugate by diag(1, -1).
    theta = inverse * flip_y.reshape(1, 2, 1) * flip_y.reshape(1, 1, 2)
    theta = torch.cat([theta, torch.zeros(batch, 2, 1, dtype=x.dtype, device=x.device)], dim=2)
    images = x if x.ndim == 4 else x.flatten(1, -3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(x.shape)
