"""Input checks shared by the whole package.

Every check raises an exception that names the argument, the expected value and the received
value, so that a user sees at once which input is wrong.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from equirelax._constants import MAX_SPLIT_SIZE


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none), to quote a
    library's long error inside one of ours."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def option_names(factory: Callable[..., Any]) -> list[str] | None:
    """The keyword options ``factory`` accepts (``None`` when it takes ``**options`` or has no
    signature), leaving out ``self``, ``task`` and ``progress``."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [
        p.name
        for p in parameters
        if p.kind in keyword and p.name not in ("self", "task", "progress")
    ]


def check_options(name: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` naming ``name``, the first option ``factory`` does not accept and the
    options it does (nothing is checked where its signature cannot tell)."""
    accepted = option_names(factory)
    if accepted is None:
        return
    unknown = [key for key in options if key not in accepted]
    if unknown:
        raise TypeError(
            f"{name}: expected options from {', '.join(accepted) or '(none)'}, received "
            f"{unknown[0]!r}"
        )


def check_tensor(name: str, value: object) -> Tensor:
    """Raise ``TypeError`` unless ``value`` is a tensor."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, received {type(value).__name__}")
    return value


def check_finite(name: str, value: Tensor, what: str = "values") -> Tensor:
    """Raise ``ValueError`` if ``value`` holds NaN or infinite entries; the message reads
    ``"{name}: expected finite {what}, ..."``."""
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(
            f"{name}: expected finite {what}, received {bad} NaN or infinite values of "
            f"{value.numel()} in a tensor of shape {tuple(value.shape)}"
        )
    return value


def check_ndim(name: str, value: Tensor, ndim: int | Sequence[int]) -> Tensor:
    """Raise ``ValueError`` unless ``value.ndim`` is one of ``ndim``."""
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if value.ndim not in allowed:
        wanted = " or ".join(str(n) for n in allowed)
        raise ValueError(
            f"{name}: expected a tensor with {wanted} dimensions, "
            f"received shape {tuple(value.shape)} ({value.ndim} dimensions)"
        )
    return value


def check_dim(name: str, value: Tensor, dim: int, size: int) -> Tensor:
    """Raise ``ValueError`` unless ``value.shape[dim] == size``."""
    if value.ndim == 0 or value.shape[dim] != size:
        raise ValueError(
            f"{name}: expected size {size} along dimension {dim}, "
            f"received shape {tuple(value.shape)}"
        )
    return value


def check_positive_int(name: str, value: object) -> int:
    """Raise unless ``value`` is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected a positive int, received {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, received {value}")
    return value


def check_int(name: str, value: object, *, minimum: int = 0) -> int:
    """``int(value)``; raise unless it is an integer (Python or NumPy) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int >= {minimum}, received {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, received {value}")
    return int(value)


def check_batch(name: str, value: Tensor, batch: int) -> Tensor:
    """Raise ``ValueError`` unless the leading dimension of ``value`` is ``batch`` (or 1)."""
    if value.ndim == 0 or value.shape[0] not in (1, batch):
        raise ValueError(
            f"{name}: expected a leading batch dimension of {batch} (or 1 to use one element "
            f"for the whole batch), received shape {tuple(value.shape)}"
        )
    return value


def describe(x: Any) -> str:
    """A short description of a value for error messages (shape of a tensor, tuple length)."""
    if isinstance(x, Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)} items"
    return type(x).__name__


def batch_size(x: Any) -> int:
    """The leading (batch) size of a tensor or of the first tensor of a tuple."""
    return int(x[0].shape[0] if isinstance(x, (tuple, list)) else x.shape[0])


def check_non_negative(name: str, value: object) -> float:
    """``float(value)``; raise unless it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a non-negative number, received {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected a finite number >= 0, received {value!r}")
    return float(value)


def check_finite_number(name: str, value: object) -> float:
    """``float(value)``; raise ``ValueError`` unless it is a finite number (not a bool)."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value)):
        raise ValueError(f"{name}: expected a finite number, received {value!r}")
    return float(value)


def check_positive_finite(name: str, value: object) -> float:
    """``float(value)``; raise unless it is a finite number > 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a positive finite number, received {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive finite number, received {value!r}")
    return float(value)


def check_device(name: str, value: object) -> str:
    """``value`` if it names a device that holds data (``"cpu"``, ``"cuda"``, ``"cuda:1"``...);
    a ``ValueError`` naming ``name`` otherwise (``"meta"`` tensors hold no data)."""
    try:
        device = torch.device(value)  # type: ignore[call-overload]
    except (RuntimeError, TypeError):
        raise ValueError(
            f"{name}: expected a torch device such as 'cpu', 'cuda' or 'cuda:1', received {value!r}"
        ) from None
    if device.type == "meta":
        raise ValueError(f"{name}: expected a device that holds data, received 'meta'")
    return str(value)


def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, received {value!r}")


def check_bool(name: str, value: object) -> bool:
    """``value``; raise unless it is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, received {value!r}")
    return value


def check_split_sizes(train_size: object, val_size: object, test_size: object) -> dict[str, int]:
    """``{"train": ..., "val": ..., "test": ...}``: positive train and validation sizes, a test
    size >= 0 (0: no test split), none above :data:`MAX_SPLIT_SIZE`."""
    sizes = {
        "train": check_positive_int("train_size", train_size),
        "val": check_positive_int("val_size", val_size),
        "test": check_int("test_size", test_size, minimum=0),
    }
    for split, size in sizes.items():
        if size > MAX_SPLIT_SIZE:
            raise ValueError(
                f"{split}_size: expected at most {MAX_SPLIT_SIZE} samples, received {size}"
            )
    return sizes
