"""How equivariant is a function? Sampled errors, Lie derivatives and weight distances.

Equivariance error of ``f`` for actions ``(A_in, A_out)``::

    E_x E_g || f(A_in(g) x) - A_out(g) f(x) ||  /  (E_x || f(x) || + eps)

over all elements of a finite group, or Haar samples of a compact one (``mean``; ``max``
replaces the outer expectation by a maximum). Inputs that are tuples are passed to ``f`` as
positional arguments and acted on by a :class:`~equirelax.actions.DirectSumAction`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from equirelax._batches import call, flat, float_dtype, repeat
from equirelax._checks import batch_size, check_finite, check_positive_int
from equirelax.actions import Action, TrivialAction
from equirelax.commutant import EquivariantProjector, equivariant_basis
from equirelax.groups import FiniteGroup
from equirelax.relaxed import Relaxed, relaxed_layers

__all__ = [
    "EquivarianceError",
    "EquivariantProjector",
    "assert_equivariant",
    "equivariance_error",
    "equivariant_basis",
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
    parts = x if isinstance(x, (tuple, list)) else (x,)
    for i, part in enumerate(parts):
        name = f"x[{i}]" if isinstance(x, (tuple, list)) else "x"
        if not isinstance(part, Tensor):
            raise TypeError(f"{name}: expected a tensor, received {type(part).__name__}")
        check_finite(name, part)


def _elements(
    action_in: Action, num_samples: int, generator: torch.Generator | None, device: Any
) -> Tensor:
    group = action_in.group
    if isinstance(group, FiniteGroup) and group.order <= 4096:
        return group.elements(device=device)
    check_positive_int("num_samples", num_samples)
    return group.sample(num_samples, generator, device=device, dtype=torch.float64)


@torch.no_grad()
def equivariance_error(
    f: Callable[..., Any],
    x: Any,
    action_in: Action,
    action_out: Action | None = None,
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
        Actions of one group on the inputs and outputs. ``action_out=None``: invariance.
    elements:
        Group elements to test. Default: all elements of a finite group, else ``num_samples``
        Haar samples drawn with ``generator``.
    dtype:
        Compute in this dtype (e.g. ``torch.float64``): a module is copied and converted.
    """
    if not isinstance(action_in, Action):
        raise TypeError(f"action_in: expected an Action, received {action_in!r}")
    action_out = action_out or TrivialAction(action_in.group)
    if not isinstance(action_out, Action):
        raise TypeError(f"action_out: expected an Action, received {action_out!r}")
    if action_out.group != action_in.group:
        raise ValueError(
            f"action_out: expected an action of {action_in.group} like action_in, "
            f"received one of {action_out.group}"
        )
    _check_inputs(x)
    action_in.check_input(x, "x")
    if dtype is not None:
        x = _to_dtype(x, dtype)
        if isinstance(f, nn.Module):
            f = copy.deepcopy(f).to(dtype)
    device = (x[0] if isinstance(x, (tuple, list)) else x).device
    g = elements if elements is not None else _elements(action_in, num_samples, generator, device)
    g = action_in.group.check(g, "elements")
    if g.is_floating_point():
        g = g.to(dtype or float_dtype(x))
    batch, k = batch_size(x), g.shape[0]

    y = call(f, x)
    y_flat = flat(y)
    g_rep = g.repeat_interleave(batch, dim=0)
    moved_then_f = flat(call(f, action_in(g_rep, repeat(x, k))))
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
    f: Callable[..., Any], x: Any, action_in: Action, **kwargs: Any
) -> EquivarianceError:
    """Equivariance error with the trivial output action: ``|| f(g x) - f(x) ||``."""
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
    layers: dict[str, tuple[Action, Action]] | None = None,
    **kwargs: Any,
) -> dict[str, EquivarianceError]:
    """Equivariance error of each layer on the inputs it receives when ``model`` runs on ``x``.

    ``layers`` maps a qualified module name to its ``(action_in, action_out)``; by default every
    :class:`~equirelax.Relaxed` layer that exposes ``action_in`` / ``action_out`` is measured.
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
    action_in: Action,
    action_out: Action | None = None,
    *,
    algebra: Tensor | None = None,
) -> Tensor:
    """Lie derivative ``L_A f(x) = d/dt [A_out(exp(-t A)) f(A_in(exp(t A)) x)]_{t=0}``.

    Computed exactly with a Jacobian-vector product (``torch.func.jvp``) for each basis element
    ``A`` of the group's Lie algebra (or the given ``algebra``, ``(k, m, m)``). Zero for every
    ``A`` exactly when ``f`` is equivariant to the identity component (Gruver et al. 2023,
    arXiv 2210.02984). Returns ``(k, B, D)``: per generator, the flattened derivative of each
    sample's output.
    """
    group = action_in.group
    action_out = action_out or TrivialAction(group)
    basis = group.lie_algebra() if algebra is None else algebra
    if basis.shape[0] == 0:
        raise ValueError(f"action_in: {group} has no Lie algebra (a finite group)")
    _check_inputs(x)
    action_in.check_input(x, "x")
    dtype = float_dtype(x)
    batch = batch_size(x)
    out = []
    for a in basis.to(dtype):

        def path(t: Tensor, a: Tensor = a) -> Tensor:
            g = group.exp((t * a).unsqueeze(0)).expand(batch, *a.shape)
            g_inv = group.exp((-t * a).unsqueeze(0)).expand(batch, *a.shape)
            return flat(action_out(g_inv, call(f, action_in(g, x))))

        t0 = torch.zeros((), dtype=dtype)
        _, tangent = torch.func.jvp(path, (t0,), (torch.ones((), dtype=dtype),))
        out.append(tangent)
    return torch.stack(out)


def weight_distance(weight: Tensor, rep_in: Any, rep_out: Any, relative: bool = False) -> Tensor:
    """Frobenius distance of a linear weight ``(d_out, d_in)`` from ``Hom_G(rep_in, rep_out)``
    (via the cached :class:`~equirelax.commutant.EquivariantProjector`)."""
    return EquivariantProjector(rep_in, rep_out).distance(weight, relative=relative)


_DEFAULT_ATOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2}


def assert_equivariant(
    module: Callable[..., Any],
    x: Any,
    action_in: Action | None = None,
    action_out: Action | None = None,
    *,
    atol: float | None = None,
    bound: float | str | None = None,
    **kwargs: Any,
) -> EquivarianceError:
    """Assert that ``module`` is equivariant on ``x``; return the measured error.

    Exact mode (``bound=None``): the largest absolute error must be at most ``atol`` (default
    by dtype: 1e-9 for float64, 1e-4 for float32). Actions default to the module's
    ``action_in`` / ``action_out`` attributes.

    Bounded mode, for relaxed modules: the relative error must be at most ``bound``. For a
    single :class:`~equirelax.Relaxed` layer ``bound="levels"`` uses the triangle inequality
    ``||y(gx) - g y(x)|| <= |level| (||f_free(gx)|| + ||f_free(x)||)`` (orthogonal output
    actions), and the layer with level 0 must be exact.
    """
    action_in = action_in or getattr(module, "action_in", None)
    action_out = action_out or getattr(module, "action_out", None)
    if action_in is None:
        raise ValueError(
            "action_in: the module has no action_in attribute; pass action_in (and action_out)"
        )
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
    if not isinstance(module, Relaxed) or module.free is None:
        raise TypeError(
            "bound: 'levels' needs a single Relaxed layer with a built free branch, "
            f"received {type(module).__name__}"
        )
    if kwargs.get("elements") is None:
        device = (x[0] if isinstance(x, (tuple, list)) else x).device
        kwargs["elements"] = _elements(
            action_in, kwargs.pop("num_samples", 16), kwargs.pop("generator", None), device
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
