"""How equivariant is a function? Sampled errors, Lie derivatives and weight distances.

Equivariance error of ``f`` for actions ``(A_in, A_out)``::

    E_x E_g || f(A_in(g) x) - A_out(g) f(x) ||  /  (E_x || f(x) || + eps)

over all elements of a finite group, or Haar samples of a compact one (``mean``; ``max``
replaces the outer expectation by a maximum). Inputs that are tuples are passed to ``f`` as
positional arguments and acted on by a :class:`~equirelax.actions.DirectSumAction`.

Wherever an action is asked for, e3nn irreps (an ``o3.Irreps`` or a string such as
``"2x0e + 1x1o"``) may stand in for it: O(3) then acts through ``irreps.D_from_matrix``
(:func:`~equirelax.actions.irreps_action`), and a tuple of irreps acts on a tuple input, e.g.
``assert_equivariant(tp, (x, y), ("2x0e + 1x1o", "1x1o"), "1x1e")`` for an e3nn tensor
product. A module's own actions (``action_in`` / ``action_out``, or the irreps of e3nn's
``o3.Linear`` and ``o3.FullyConnectedTensorProduct``: :func:`~equirelax.layer_actions`) are
the defaults of :func:`assert_equivariant`.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from equirelax._batches import call, flat, float_dtype, parts, repeat, repeat_batched
from equirelax._checks import batch_size, check_finite
from equirelax.actions import (
    Action,
    ActionLike,
    DirectSumAction,
    PointAction,
    RepresentationAction,
    TrivialAction,
    as_action,
    as_action_pair,
)
from equirelax.commutant import EquivariantProjector
from equirelax.groups import Euclidean, haar_elements
from equirelax.relaxed import Relaxed, layer_actions, relaxed_layers

__all__ = [
    "EquivarianceError",
    "assert_equivariant",
    "equivariance_error",
    "invariance_error",
    "layer_equivariance_errors",
    "lie_derivative",
    "weight_distance",
]


@dataclass(frozen=True)
class EquivarianceError:
    """Equivariance error statistics over inputs and group elements.

    ``mean`` / ``max`` are relative to ``E_x ||f(x)||``; ``mean_absolute`` / ``max_absolute``
    are the raw norms ``||f(A_in(g) x) - A_out(g) f(x)||``.
    """

    mean: float
    max: float
    mean_absolute: float
    max_absolute: float
    output_norm: float
    num_elements: int

    def __str__(self) -> str:
        return (
            f"relative mean {self.mean:.3e} max {self.max:.3e} | absolute mean "
            f"{self.mean_absolute:.3e} max {self.max_absolute:.3e} ({self.num_elements} elements)"
        )


def _to_dtype(x: Any, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return x
    if isinstance(x, (tuple, list)):
        return type(x)(_to_dtype(part, dtype) for part in x)
    return x.to(dtype) if x.is_floating_point() else x


def _check_inputs(x: Any) -> None:
    for i, part in enumerate(parts(x)):
        name = f"x[{i}]" if isinstance(x, (tuple, list)) else "x"
        if not isinstance(part, Tensor):
            raise TypeError(f"{name}: expected a tensor, received {type(part).__name__}")
        check_finite(name, part)


@torch.no_grad()
def equivariance_error(
    f: Callable[..., Any],
    x: Any,
    action_in: ActionLike,
    action_out: ActionLike | None = None,
    *,
    elements: Tensor | None = None,
    num_samples: int = 16,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    eps: float = 1e-12,
) -> EquivarianceError:
    """Sampled equivariance error of ``f`` on inputs ``x`` (see the module docstring).

    Parameters
    ----------
    f:
        A module or function; tuple inputs are unpacked as positional arguments.
    x:
        A batch of inputs (a tensor, or a tuple of tensors acted on by ``action_in``).
    action_in, action_out:
        Actions of one group on the inputs and outputs (or e3nn irreps: O(3) through
        ``D_from_matrix``; a tuple of them for tuple inputs). ``action_out=None``: invariance.
    elements:
        Group elements to test. Default: all elements of a finite group, else ``num_samples``
        Haar samples drawn with ``generator``.
    dtype:
        Compute in this dtype (e.g. ``torch.float64``): a module is copied and converted.

    Examples
    --------
    >>> from e3nn import o3
    >>> layer = o3.Linear("2x0e + 1x1o", "1x1o").double()
    >>> x = torch.randn(4, 5, dtype=torch.float64)
    >>> equivariance_error(layer, x, "2x0e + 1x1o", "1x1o").max < 1e-12
    True
    """
    action_in, action_out = as_action_pair(action_in, action_out)
    _check_inputs(x)
    action_in.check_input(x, "x")
    if dtype is not None:
        x = _to_dtype(x, dtype)
        if isinstance(f, nn.Module):
            f = copy.deepcopy(f).to(dtype)
    device = (x[0] if isinstance(x, (tuple, list)) else x).device
    g = elements
    if g is None:
        g = haar_elements(action_in.group, num_samples, generator, device=device)
    g = action_in.group.check(g, "elements")
    if g.is_floating_point():
        g = g.to(dtype or float_dtype(x))
    batch, k = batch_size(x), g.shape[0]

    y = call(f, x)
    y_flat = check_finite(
        "f", flat(y), "outputs on finite inputs (are its weights or levels finite?)"
    )
    g_rep = g.repeat_interleave(batch, dim=0)
    moved_then_f = check_finite(
        "f", flat(call(f, action_in(g_rep, repeat(x, k)))), "outputs on transformed inputs"
    )
    f_then_moved = flat(action_out(g_rep, repeat(y, k)))
    diff = torch.linalg.vector_norm(moved_then_f - f_then_moved, dim=1)
    scale = float(torch.linalg.vector_norm(y_flat, dim=1).mean())
    return EquivarianceError(
        mean=float(diff.mean()) / (scale + eps),
        max=float(diff.max()) / (scale + eps),
        mean_absolute=float(diff.mean()),
        max_absolute=float(diff.max()),
        output_norm=scale,
        num_elements=k,
    )


def invariance_error(
    f: Callable[..., Any], x: Any, action_in: ActionLike, **kwargs: Any
) -> EquivarianceError:
    """Equivariance error with the trivial output action: ``|| f(g x) - f(x) ||``."""
    action_in = as_action(action_in, "action_in")
    return equivariance_error(f, x, action_in, TrivialAction(action_in.group), **kwargs)


@contextmanager
def _capture_inputs(model: nn.Module, names: list[str]) -> Iterator[dict[str, tuple]]:
    captured: dict[str, tuple] = {}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_pre_hook(
            lambda _m, args, name=name: captured.setdefault(name, args)
        )
        for name in names
    ]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def layer_equivariance_errors(
    model: nn.Module,
    x: Any,
    layers: dict[str, tuple[ActionLike, ActionLike]] | None = None,
    **kwargs: Any,
) -> dict[str, EquivarianceError]:
    """Equivariance error of each layer on the inputs it receives when ``model`` runs on ``x``.

    ``layers`` maps a qualified module name to its ``(action_in, action_out)`` (actions or e3nn
    irreps); by default every :class:`~equirelax.Relaxed` layer that exposes ``action_in`` /
    ``action_out`` is measured (relaxed e3nn layers do: :func:`~equirelax.layer_actions`).
    Layer inputs are recorded with forward pre-hooks during one forward pass.
    """
    if layers is None:
        layers = {
            name: (layer.action_in, layer.action_out)
            for name, layer in relaxed_layers(model).items()
            if hasattr(layer, "action_in") and hasattr(layer, "action_out")
        }
    modules = dict(model.named_modules())
    for name in layers:
        if name not in modules:
            raise ValueError(f"layers: no module named {name!r} in the model")
    with torch.no_grad(), _capture_inputs(model, list(layers)) as captured:
        call(model, x)
    return {
        name: equivariance_error(
            modules[name],
            captured[name] if len(captured[name]) > 1 else captured[name][0],
            action_in,
            action_out,
            **kwargs,
        )
        for name, (action_in, action_out) in layers.items()
        if name in captured
    }


def lie_derivative(
    f: Callable[..., Any],
    x: Any,
    action_in: ActionLike,
    action_out: ActionLike | None = None,
    *,
    algebra: Tensor | None = None,
    kwargs: dict[str, Any] | None = None,
    output: Any = None,
    check: bool = True,
    affine: bool = False,
    pushforward: Callable[..., Any] | None = None,
) -> Tensor:
    """Lie derivative ``L_A f(x) = d/dt [A_out(exp(-t A)) f(A_in(exp(t A)) x)]_{t=0}``.

    One derivative for each basis element ``A`` of the group's Lie algebra (or each of the
    ``k`` elements of it in ``algebra``, ``(k, m, m)``). Zero for every ``A`` exactly when ``f``
    is equivariant to the identity component (Gruver et al. 2023, arXiv 2210.02984). Returns
    ``(k, B, D)``: per generator, the flattened derivative of each sample's output (the parts
    of a tuple output concatenated).

    ``action_in`` / ``action_out`` may be e3nn irreps, as for :func:`equivariance_error`.

    Exact, and differentiable in the parameters of ``f``. Where the infinitesimal actions
    ``dA x`` have a closed form (representation, vector and point actions, with translations
    for :class:`~equirelax.groups.Euclidean` groups, trivial actions, and direct sums of these)
    it is ``J_f(x) (dA_in x) - dA_out f(x)``: the Jacobian-vector products of all ``k``
    generators in one ``torch.func.jvp`` on ``k`` copies of the batch, so ``f`` must treat the
    samples of a batch independently (as :func:`equivariance_error` assumes too). For other
    actions (images, permutations, user-defined), and for an ``algebra`` outside the span of
    the group's basis, the path itself is differentiated, one ``jvp`` per generator.

    Parameters
    ----------
    kwargs:
        Keyword arguments of ``f``, held fixed; tensors with the batch's leading size are
        treated as per-sample (repeated with the batch), others as shared.
    output:
        ``f(x, **kwargs)`` if it is already computed: reused, with its autograd graph.
    check:
        Check ``x`` (tensors with finite values that ``action_in`` accepts); ``False`` skips
        the check and its device synchronisation, e.g. inside a training loss.
    affine:
        ``f`` is affine in its positional arguments, ``f(x) = L x + b`` (e.g. a dense free
        branch): the closed form ``J_f(x) t = f(t) - f(0)`` replaces the ``jvp``, so
        ``L_A f(x) = f(dA_in x) - f(0) - dA_out f(x)`` costs one forward pass on the tangents.
    pushforward:
        ``J_f(x) t`` in closed form, ``pushforward(x_parts, tangents, **kwargs)``: ``x_parts``
        the parts of ``x``, ``tangents`` one ``(k, *part.shape)`` tensor per part (``None``
        for a part the algebra does not move); returns the output's tangents, ``(k, B, ...)``
        per part (e.g. :meth:`equirelax.free_branches.EGNNFreeBranch.pushforward`). Replaces
        the ``jvp``.
    """
    action_in, action_out = as_action_pair(action_in, action_out)
    group = action_in.group
    reference = group.lie_algebra()
    basis = reference if algebra is None else algebra
    if basis.shape[0] == 0:
        raise ValueError(f"action_in: {group} has no Lie algebra (a finite group)")
    if check:
        _check_inputs(x)
        action_in.check_input(x, "x")
    x_parts = parts(x)
    dtype, device = float_dtype(x), x_parts[0].device
    coordinates = None if algebra is None else _coordinates(reference, algebra)
    basis = basis.to(dtype=dtype, device=device)
    fixed = functools.partial(f, **kwargs) if kwargs else f
    t_in = None
    if algebra is None or coordinates is not None:  # in the span of the group's basis
        t_in = _tangents(action_in, x_parts, basis, coordinates)
    if t_in is None:
        return _lie_derivative_by_path(fixed, x, action_in, action_out, basis)
    y = call(fixed, x) if output is None else output
    y_parts = parts(y)
    t_out = _tangents(action_out, y_parts, basis, coordinates)
    if t_out is None:
        return _lie_derivative_by_path(fixed, x, action_in, action_out, basis)
    k, batch = basis.shape[0], batch_size(x)
    diff = [i for i, t in enumerate(t_in) if t is not None]
    if not diff:
        y_flat = flat(y)
        pushed = y_flat.new_zeros(k, batch, y_flat.shape[1])
    elif pushforward is not None:  # all k tangents at once, on the batch itself
        out = pushforward(x_parts, t_in, **kwargs)
        pushed = torch.cat([part.reshape(k, batch, -1) for part in parts(out)], dim=-1)
    else:  # k copies of the batch (and of batched keyword tensors), one tangent per copy
        tangents = [t_in[i].flatten(0, 1) for i in diff]  # type: ignore[union-attr]
        stacked = functools.partial(f, **repeat_batched(kwargs, batch, k)) if kwargs else f
        if affine:
            pushed = _affine_pushforward(fixed, stacked, x_parts, diff, tangents, k)
        else:
            pushed = _jvp(stacked, repeat(x_parts, k), diff, tangents)
        pushed = pushed.unflatten(0, (k, batch))
    if all(t is None for t in t_out):
        return pushed
    moved_out = [
        t.reshape(k, batch, -1) if t is not None else part.new_zeros(k, batch, part[0].numel())
        for t, part in zip(t_out, y_parts, strict=True)
    ]
    return pushed - torch.cat(moved_out, dim=-1)


def _jvp(
    f: Callable[..., Any], args: tuple[Tensor, ...], diff: list[int], tangents: list[Tensor]
) -> Tensor:
    """``J_f(args) . tangents`` (flattened per sample) along the positional arguments ``diff``."""

    def moving(*values: Tensor) -> Tensor:
        full = list(args)
        for i, value in zip(diff, values, strict=True):
            full[i] = value
        return flat(f(*full))

    _, out = torch.func.jvp(moving, tuple(args[i] for i in diff), tuple(tangents))
    return out


def _affine_pushforward(
    f: Callable[..., Any],
    stacked: Callable[..., Any],
    args: tuple[Tensor, ...],
    diff: list[int],
    tangents: list[Tensor],
    k: int,
) -> Tensor:
    """``J_f . tangents = f(t) - f(0)`` (flattened per sample) for ``f`` affine in its positional
    arguments: ``stacked`` (``f`` on ``k`` copies of the batch ``args``) at the tangents, with the
    arguments outside ``diff`` at 0, minus ``f`` at 0 on one copy."""
    zeros = [torch.zeros_like(arg) for arg in args]
    moving = [zero.repeat(k, *[1] * (zero.ndim - 1)) for zero in zeros]
    for i, tangent in zip(diff, tangents, strict=True):
        moving[i] = tangent
    at_zero = flat(f(*zeros))
    return (flat(stacked(*moving)).unflatten(0, (k, -1)) - at_zero).flatten(0, 1)


def _lie_derivative_by_path(
    f: Callable[..., Any], x: Any, action_in: Action, action_out: Action, basis: Tensor
) -> Tensor:
    """The derivative of the path ``A_out(exp(-tA)) f(A_in(exp(tA)) x)`` at ``t = 0`` by
    ``jvp``, one generator ``A`` of ``basis`` at a time."""
    group, batch = action_in.group, batch_size(x)
    out = []
    for a in basis:

        def path(t: Tensor, a: Tensor = a) -> Tensor:
            g = group.exp((t * a).unsqueeze(0)).expand(batch, *a.shape)
            g_inv = group.exp((-t * a).unsqueeze(0)).expand(batch, *a.shape)
            return flat(action_out(g_inv, call(f, action_in(g, x))))

        t0 = torch.zeros((), dtype=basis.dtype, device=basis.device)
        _, tangent = torch.func.jvp(path, (t0,), (torch.ones_like(t0),))
        out.append(tangent)
    return torch.stack(out)


def _coordinates(reference: Tensor, algebra: Tensor) -> Tensor | None:
    """``c`` with ``algebra[j] = sum_i c[j, i] reference[i]``, float64 ``(k, K)``; ``None`` if
    ``algebra`` is not in the span of ``reference`` (the group's Lie-algebra basis)."""
    if algebra.shape[1:] != reference.shape[1:]:
        return None
    basis = reference.flatten(1)
    target = algebra.detach().to(device="cpu", dtype=torch.float64).flatten(1)
    coordinates = target @ torch.linalg.pinv(basis)
    residual = float(torch.linalg.norm(coordinates @ basis - target))
    dtype = algebra.dtype if algebra.is_floating_point() else torch.float64
    tolerance = 100 * torch.finfo(dtype).eps * max(1.0, float(torch.linalg.norm(target)))
    return coordinates if residual <= tolerance else None


def _tangents(
    action: Action, values: tuple[Any, ...], basis: Tensor, coordinates: Tensor | None
) -> list[Tensor | None] | None:
    """``dA_k x`` for every element ``A_k`` of ``basis``, ``(k, *x.shape)`` per part of ``x``
    (``None`` for a part the algebra does not move); ``None`` if ``action`` has no closed
    form here. ``coordinates`` express ``basis`` in the group's basis (``None``: it is that
    basis)."""
    direct_sum = isinstance(action, DirectSumAction) and type(action).act is DirectSumAction.act
    actions = action.actions if direct_sum else (action,)  # type: ignore[attr-defined]
    if len(actions) != len(values):
        return None
    out: list[Tensor | None] = []
    for sub, part in zip(actions, values, strict=True):
        if isinstance(sub, TrivialAction) and type(sub).act is TrivialAction.act:
            out.append(None)
            continue
        closed_form = isinstance(sub, RepresentationAction) and type(sub).act in (
            RepresentationAction.act,
            PointAction.act,
        )
        tangent = _representation_tangent(sub, part, basis, coordinates) if closed_form else None
        if tangent is None:
            return None
        out.append(tangent)
    return out


def _representation_tangent(
    action: RepresentationAction, x: Any, basis: Tensor, coordinates: Tensor | None
) -> Tensor | None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        return None
    algebra = _algebra(action.representation, x.dtype, x.device)  # d rho of the group's basis
    if algebra.shape[0] != (basis.shape[0] if coordinates is None else coordinates.shape[1]):
        return None
    if coordinates is not None:
        algebra = torch.einsum("ji,imn->jmn", coordinates.to(x), algebra)
    k = algebra.shape[0]
    moved = torch.einsum("kij,...j->k...i", algebra, x.movedim(action.dim, -1))
    tangent = moved.movedim(-1, action.dim + 1 if action.dim >= 0 else action.dim)
    if isinstance(action, PointAction) and isinstance(action.group, Euclidean):
        d = action.group.d
        shift = basis[:, :d, d].to(x)  # the translation part of each generator
        tangent = tangent + shift.reshape(k, *([1] * (x.ndim - 1)), d)  # points on the last axis
    return tangent


@functools.lru_cache(maxsize=128)
def _algebra(representation: Any, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``d rho(A_k)`` of a representation, ``(k, d, d)``, cached per dtype and device."""
    return representation.lie_algebra().to(dtype=dtype, device=device)


def weight_distance(weight: Tensor, rep_in: Any, rep_out: Any, relative: bool = False) -> Tensor:
    """Frobenius distance of a linear weight ``(d_out, d_in)`` from ``Hom_G(rep_in, rep_out)``
    (via the cached :class:`~equirelax.commutant.EquivariantProjector`)."""
    return EquivariantProjector(rep_in, rep_out).distance(weight, relative=relative)


_DEFAULT_ATOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2}


def assert_equivariant(
    module: Callable[..., Any],
    x: Any,
    action_in: ActionLike | None = None,
    action_out: ActionLike | None = None,
    *,
    atol: float | None = None,
    bound: float | str | None = None,
    **kwargs: Any,
) -> EquivarianceError:
    """Assert that ``module`` is equivariant on ``x``; return the measured error.

    Exact mode (``bound=None``): the largest absolute error must be at most ``atol`` (default
    by dtype: 1e-9 for float64, 1e-4 for float32). Actions (or e3nn irreps, as for
    :func:`equivariance_error`) default to the module's own (:func:`~equirelax.layer_actions`:
    its ``action_in`` / ``action_out`` attributes, or for e3nn's ``o3.Linear`` and
    ``o3.FullyConnectedTensorProduct`` their irreps).

    Bounded mode, for relaxed modules: the relative error must be at most ``bound``. For a
    single :class:`~equirelax.Relaxed` layer ``bound="levels"`` uses the triangle inequality
    ``||y(gx) - g y(x)|| <= |level| (||f_free(gx)|| + ||f_free(x)||)`` (orthogonal output
    actions), and the layer with level 0 must be exact.

    Examples
    --------
    >>> from e3nn import o3
    >>> tp = o3.FullyConnectedTensorProduct("2x0e + 1x1o", "1x1o", "1x1e").double()
    >>> x, y = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    >>> err = assert_equivariant(tp, (x, y))  # O(3) through the layer's irreps
    >>> err = assert_equivariant(tp, (x, y), ("2x0e + 1x1o", "1x1o"), "1x1e")  # the same
    """
    own_in, own_out = layer_actions(module)
    action_in = own_in if action_in is None else action_in
    action_out = own_out if action_out is None else action_out
    if action_in is None:
        raise ValueError(
            "action_in: the module has no action_in attribute and no registered actions; pass "
            "action_in (and action_out)"
        )
    action_in, action_out = as_action_pair(action_in, action_out)
    if bound == "levels":
        return _assert_within_level_bound(module, x, action_in, action_out, atol, **kwargs)
    err = equivariance_error(module, x, action_in, action_out, **kwargs)
    if bound is not None:
        if isinstance(bound, str):
            raise ValueError(f"bound: expected a number or 'levels', received {bound!r}")
        if not err.max <= bound:
            raise AssertionError(f"relative equivariance error exceeds bound {bound:.3e}: {err}")
        return err
    tol = atol if atol is not None else _DEFAULT_ATOL.get(kwargs.get("dtype") or float_dtype(x))
    if not err.max_absolute <= (tol or 1e-4):
        raise AssertionError(f"not equivariant to atol {tol:.1e}: {err}")
    return err


def _assert_within_level_bound(
    module: Any,
    x: Any,
    action_in: Action,
    action_out: Action | None,
    atol: float | None,
    **kwargs: Any,
) -> EquivarianceError:
    if not isinstance(module, Relaxed):
        raise TypeError(
            f"bound: 'levels' needs a single Relaxed layer, received {type(module).__name__}"
        )
    if kwargs.get("elements") is None:
        device = (x[0] if isinstance(x, (tuple, list)) else x).device
        kwargs["elements"] = haar_elements(
            action_in.group,
            kwargs.pop("num_samples", 16),
            kwargs.pop("generator", None),
            device=device,
        )
    assert_equivariant(module.equivariant, x, action_in, action_out, atol=atol, **kwargs)
    err = equivariance_error(module, x, action_in, action_out, **kwargs)
    free_gx = invariance_error(module.free, x, action_in, **kwargs)
    with torch.no_grad():
        free_norm = flat(call(module.free, x)).norm(dim=1).max()
    limit = abs(float(module.level.detach())) * (free_gx.max_absolute + 2 * float(free_norm))
    if not err.max_absolute <= limit * (1 + 1e-6) + 1e-12:
        raise AssertionError(f"error exceeds the level bound {limit:.3e}: {err}")
    return err
