"""Helpers for batches that are a tensor or a tuple of tensors (sample axis first)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from equirelax._checks import batch_size


def parts(x: Any) -> tuple[Any, ...]:
    """The tensors of a batch: the tuple itself, or ``(x,)`` for a single tensor."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def call(f: Callable[..., Any], x: Any) -> Any:
    """``f(*x)`` for a tuple batch, ``f(x)`` for a tensor."""
    return f(*x) if isinstance(x, (tuple, list)) else f(x)


def flat(y: Any) -> Tensor:
    """Per-sample flattened output ``(B, -1)``; tuple outputs are concatenated."""
    if isinstance(y, (tuple, list)):
        return torch.cat([flat(part) for part in y], dim=1)
    return y.reshape(y.shape[0], -1)


def rows(x: Any) -> Tensor:
    """Every part of a batch as float64 rows ``(B, m, -1)`` concatenated along the last axis
    (sets of ``m`` elements)."""
    tensors = parts(x)
    batch, m = tensors[0].shape[:2]
    return torch.cat([t.reshape(batch, m, -1).to(torch.float64) for t in tensors], dim=-1)


def combine(a: Any, b: Any, weight: float) -> Any:
    """``a + weight * b`` for tensors or tuples of tensors (outputs of tuple-valued maps)."""
    if isinstance(a, (tuple, list)):
        return type(a)(combine(p, q, weight) for p, q in zip(a, b, strict=True))
    return a + weight * b


def repeat(x: Any, k: int) -> Any:
    """Stack ``k`` copies of the batch: ``(B, ...) -> (k B, ...)``, copy-major."""
    if isinstance(x, (tuple, list)):
        return type(x)(repeat(part, k) for part in x)
    return x.repeat(k, *([1] * (x.ndim - 1)))


def repeat_batched(kwargs: dict[str, Any], batch: int, k: int) -> dict[str, Any]:
    """Keyword arguments for ``k`` stacked copies of a batch of ``batch`` samples: tensors with
    ``batch`` leading entries are repeated like :func:`repeat`; the rest (shared tensors such as
    a ``(1, ...)`` adjacency, non-tensors) are passed as they are."""
    return {
        name: repeat(value, k)
        if isinstance(value, Tensor) and value.ndim and value.shape[0] == batch
        else value
        for name, value in kwargs.items()
    }


def index(x: Any, rows: Tensor) -> Any:
    """The samples ``rows`` of a batch."""
    if isinstance(x, (tuple, list)):
        return tuple(part[rows] for part in x)
    return x[rows]


def concatenate(batches: Sequence[Any]) -> Any:
    """One batch from several batches of the same structure (tensors, or tuples of tensors
    concatenated part by part), along the sample axis."""
    first = batches[0]
    if isinstance(first, (tuple, list)):
        return tuple(concatenate([batch[i] for batch in batches]) for i in range(len(first)))
    return torch.cat(list(batches))


def to_like(x: Any, like: Tensor) -> Any:
    """The batch on ``like``'s device with its floating-point tensors in ``like``'s dtype
    (integer tensors such as labels keep theirs); tensors already there are returned as
    they are."""
    if isinstance(x, (tuple, list)):
        return type(x)(to_like(part, like) for part in x)
    dtype = like.dtype if x.is_floating_point() else x.dtype
    return x.to(device=like.device, dtype=dtype)


def float_dtype(x: Any) -> torch.dtype:
    """The first floating dtype among the batch's tensors (else the default dtype)."""
    floats = [p for p in parts(x) if isinstance(p, Tensor) and p.is_floating_point()]
    return floats[0].dtype if floats else torch.get_default_dtype()


def sample_per_sample(group: Any, x: Any, generator: torch.Generator | None) -> Tensor:
    """One element of ``group`` per sample of ``x``, on its device, in its float dtype."""
    tensors = parts(x)
    if not tensors or not isinstance(tensors[0], Tensor):
        raise TypeError(
            "inputs: expected a tensor or a tuple of tensors, "
            f"received {type(tensors[0] if tensors else x).__name__}"
        )
    return group.sample(batch_size(x), generator, device=tensors[0].device, dtype=float_dtype(x))
