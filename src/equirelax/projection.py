"""Projection: drop every free branch (level := 0) to get an exactly equivariant model."""

from __future__ import annotations

import copy

from torch import nn

from equirelax._checks import check_finite
from equirelax.relaxed import Relaxed

__all__ = ["project"]


def project(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` with each :class:`~equirelax.Relaxed` layer replaced by its
    equivariant layer.

    Layers relaxed by construction rather than by a free branch (those with a
    ``to_equivariant()`` method, e.g. :class:`~equirelax.nn.RelaxedGroupConv2d`) are replaced
    by the equivariant layer that method returns.

    The result holds no free branch, no level and no equirelax relaxation code, so it runs and
    saves as a plain PyTorch module; it is exactly equivariant when the wrapped layers are. The
    input model is left unchanged. A ``ValueError`` names a parameter or buffer of the
    result that holds NaN or infinite values.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, received {type(model).__name__}")
    projected = _projected(model)
    for name, value in [*projected.named_parameters(), *projected.named_buffers()]:
        check_finite(f"model: {name}", value.detach(), "values (did training diverge?)")
    return projected


def _projected(model: nn.Module) -> nn.Module:
    if isinstance(model, Relaxed):
        return _projected(model.equivariant)
    if callable(getattr(model, "to_equivariant", None)):
        return model.to_equivariant()
    projected = copy.deepcopy(model)
    _strip(projected)
    return projected


def _strip(module: nn.Module) -> None:
    for name, child in module.named_children():
        while isinstance(child, Relaxed):
            child = child.equivariant
            setattr(module, name, child)
        if callable(getattr(child, "to_equivariant", None)):
            child = child.to_equivariant()
            setattr(module, name, child)
        _strip(child)
