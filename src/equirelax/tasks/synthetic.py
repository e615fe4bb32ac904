"""Synthetic regression tasks with exact, approximate and dialled O(n) symmetry.

The first three are the synthetic benchmarks of EMLP (Finzi, Welling & Wilson 2021, "A Practical
Method for Constructing Equivariant Multilayer Perceptrons for Arbitrary Matrix Groups",
arXiv:2104.09459, Sec. 7); the fourth has a symmetry gap set by a parameter. Every input is a
flat ``(B, d_in)`` tensor whose coordinates carry a representation of the group, every target a
``(B, d_out)`` tensor.

- **inertia** (O(3), exact). ``k = 5`` point masses: ``X ~ N(0, I_{4k})``, masses
  ``m = softplus(X[:, :k])``, positions ``r_i = X[:, k:].reshape(k, 3)[i]``; input
  ``[m_1..m_k, r_1, ..., r_k]`` (``k T0 + k V``) and target the inertia tensor

      I = sum_i m_i (|r_i|^2 Id - r_i r_i^T),

  flattened row-major to 9 entries (``V (x) V``: ``kron(R, R) vec(I) = vec(R I R^T)``).
  No normalisation (EMLP uses the statistics ``(0, 1)`` for this dataset).
- **modified-inertia** (O(3) claimed, broken). EMLP's ModifiedInertia: the same inputs, target
  ``I + s (I e_z) e_z^T`` with ``s = 0.3``. The added term is equivariant exactly under the
  ``R`` in O(3) with ``R e_z = +-e_z`` (``O(2) x Z_2``: rotations about z, reflections in planes
  containing z, and ``z -> -z``) and under no other element, while the task declares the O(3)
  actions: the data is only approximately O(3)-symmetric.
- **o5** (O(5), exact, invariant). EMLP's O5Synthetic: ``x1, x2 ~ N(0, I_5)``, input
  ``[x1, x2]`` (``2 V``), target

      f(x1, x2) = sin(|x1|) - |x2|^3 / 2 + (x1 . x2) / (|x1| |x2|),

  standardised with the mean and standard deviation of the training targets (an invariant
  affine map; both are stored in ``extra``), as EMLP does.
- **gap-dial** (O(3) + ``delta`` times a breaking term). ``x1, x2 ~ N(0, I_3)``, input
  ``[x1, x2]`` (``2 V``), target the vector

      y = f_sym(x1, x2) + delta f_break(x1),  f_sym = (x1 . x2) x1 + x2,  f_break = (x1 . e_z) e_z.

  ``f_sym`` is O(3)-equivariant; ``f_break`` only under ``R e_z = +-e_z``. With the Haar
  projection ``P_G f(x) = E_g g^-1 f(g x)`` one has ``P_G f_break(x) = x1 / 3`` (Schur), so the
  best O(3)-equivariant predictor is ``f_sym + delta x1 / 3`` and its excess risk, the
  *symmetry gap*, is exactly

      E ||(I - P_G) y||^2 = delta^2 ||e_z e_z^T - Id / 3||_F^2 = 2 delta^2 / 3

  (``2 delta^2 / 9`` in the task's MSE, a mean over the 3 components), out of
  ``E ||y||^2 = 24 + delta^2``.

Every split is drawn from its own stream seeded with ``(seed, split index)`` (NumPy's sequential
normal generator: ``train_size=100`` gives the first 100 samples of ``train_size=1000``; PyTorch's
vectorised ``randn`` does not keep prefixes). Inputs are rounded to float32 first and the
targets computed from them in float64, then rounded to float32. ``task.extra["target_function"]``
maps a batch of flat inputs to the task's targets (in the inputs' dtype), e.g. for
:func:`equirelax.metrics.equivariance_error`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from equirelax._checks import (
    check_dim,
    check_int,
    check_non_negative,
    check_positive_int,
    check_split_sizes,
    check_tensor,
)
from equirelax.actions import RepresentationAction
from equirelax.groups import O3, Orthogonal
from equirelax.tasks.base import Split, Task

__all__ = [
    "gap_dial_function",
    "gap_dial_task",
    "inertia_task",
    "inertia_tensor",
    "modified_inertia_task",
    "modified_inertia_tensor",
    "o5_function",
    "o5_task",
]

REFERENCE = "EMLP (Finzi, Welling & Wilson 2021, arXiv:2104.09459)"
AXIS_SYMMETRY = (
    "O(2) x Z_2: the R in O(3) with R e_z = +-e_z (rotations about z, reflections in planes "
    "containing z, and z -> -z)"
)
_SPLITS = ("train", "val", "test")
_TargetMap = Callable[[Tensor], Tensor]


# --- target functions ---------------------------------------------------------------------------


def inertia_tensor(masses: Tensor, positions: Tensor) -> Tensor:
    """The inertia tensor ``I = sum_i m_i (|r_i|^2 Id - r_i r_i^T)`` of point masses.

    Parameters
    ----------
    masses:
        ``(..., k)``.
    positions:
        ``(..., k, 3)``, with the leading shape of ``masses``.

    Returns
    -------
    Tensor
        ``(..., 3, 3)``, symmetric, positive semidefinite for non-negative masses, and
        O(3)-equivariant: ``I(m, r R^T) = R I(m, r) R^T``.

    Examples
    --------
    >>> inertia_tensor(torch.ones(1, 1), torch.tensor([[[1.0, 0.0, 0.0]]]))
    tensor([[[0., 0., 0.],
             [0., 1., 0.],
             [0., 0., 1.]]])
    """
    masses, positions = _check_masses_positions(masses, positions)
    squared = (positions * positions).sum(-1)[..., None, None]  # (..., k, 1, 1)
    eye = torch.eye(3, dtype=positions.dtype, device=positions.device)
    outer = positions.unsqueeze(-1) * positions.unsqueeze(-2)  # (..., k, 3, 3), exactly symmetric
    return (masses[..., None, None] * (squared * eye - outer)).sum(-3)


def modified_inertia_tensor(masses: Tensor, positions: Tensor, strength: float = 0.3) -> Tensor:
    """EMLP's ModifiedInertia target ``I + strength (I e_z) e_z^T`` (see the module docstring).

    Equivariant under the ``R`` in O(3) with ``R e_z = +-e_z`` only (for ``strength != 0``).

    Examples
    --------
    >>> m, r = torch.ones(1, 1), torch.tensor([[[1.0, 0.0, 0.0]]])
    >>> modified_inertia_tensor(m, r, strength=0.5)[0, 2, 2]
    tensor(1.5000)
    """
    strength = _check_finite_number("strength", strength)
    inertia = inertia_tensor(masses, positions)
    extra = torch.zeros_like(inertia)
    extra[..., :, 2] = inertia[..., :, 2]  # (I e_z) e_z^T: the column I e_z in column z
    return inertia + strength * extra


def o5_function(x1: Tensor, x2: Tensor) -> Tensor:
    """EMLP's O(5)-invariant ``sin(|x1|) - |x2|^3 / 2 + (x1 . x2) / (|x1| |x2|)``.

    Parameters
    ----------
    x1, x2:
        ``(..., n)`` with one leading shape (``n = 5`` in the task; any ``n`` works).

    Returns
    -------
    Tensor
        ``(..., 1)``.

    Examples
    --------
    >>> o5_function(torch.tensor([[1.0, 0, 0, 0, 0]]), torch.tensor([[0.0, 2, 0, 0, 0]]))
    tensor([[-3.1585]])
    """
    x1, x2 = _check_pair(x1, x2, None)
    norm1 = torch.linalg.vector_norm(x1, dim=-1)
    norm2 = torch.linalg.vector_norm(x2, dim=-1)
    cosine = (x1 * x2).sum(-1) / (norm1 * norm2)
    return (torch.sin(norm1) - 0.5 * norm2**3 + cosine).unsqueeze(-1)


def gap_dial_function(x1: Tensor, x2: Tensor, delta: float = 0.0) -> Tensor:
    """``(x1 . x2) x1 + x2 + delta (x1 . e_z) e_z``: O(3)-equivariant plus ``delta`` times a
    term that only ``R e_z = +-e_z`` respects.

    Parameters
    ----------
    x1, x2:
        ``(..., 3)`` with one leading shape.
    delta:
        Finite, ``>= 0``: the weight of the breaking term.

    Returns
    -------
    Tensor
        ``(..., 3)``.

    Examples
    --------
    >>> x1, x2 = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    >>> gap_dial_function(x1, x2, delta=2.0)
    tensor([[1., 0., 2.]])
    """
    delta = check_non_negative("delta", delta)
    x1, x2 = _check_pair(x1, x2, 3)
    out = (x1 * x2).sum(-1, keepdim=True) * x1 + x2
    breaking = torch.zeros_like(x1)
    breaking[..., 2] = x1[..., 2]  # (x1 . e_z) e_z
    return out + delta * breaking


# --- tasks --------------------------------------------------------------------------------------


def inertia_task(
    *,
    train_size: int = 1000,
    val_size: int = 1000,
    test_size: int = 1000,
    num_masses: int = 5,
    seed: int = 0,
    progress: bool = True,
) -> Task:
    """EMLP's Inertia task: point masses and positions -> inertia tensor, exactly O(3).

    Parameters
    ----------
    train_size, val_size, test_size:
        Samples per split (``test_size=0``: no test split).
    num_masses:
        ``k``: the input has ``4 k`` entries, ``k`` masses then ``k`` positions.
    seed:
        Non-negative base seed; split ``s`` is drawn from ``(seed, index of s)``.
    progress:
        Unused (generation is instant); accepted because the command line passes it to every
        task builder.

    Returns
    -------
    Task
        ``inputs (B, 4k)`` with action ``k T0 + k V`` of O(3), ``targets (B, 9)`` with action
        ``V (x) V``; MSE.

    Examples
    --------
    >>> task = inertia_task(train_size=8, val_size=4, test_size=0)
    >>> task.train[0].shape, task.train[1].shape
    (torch.Size([8, 20]), torch.Size([8, 9]))
    """
    sizes, seed = _check_common(train_size, val_size, test_size, seed, progress)
    k = check_positive_int("num_masses", num_masses)
    description = (
        f"Predict the inertia tensor (9 entries) of {k} point masses from their masses and "
        f"positions; exactly O(3)-equivariant ({REFERENCE}, Inertia)."
    )
    return _inertia_like("inertia", sizes, seed, k, 0.0, description, {})


def modified_inertia_task(
    *,
    train_size: int = 1000,
    val_size: int = 1000,
    test_size: int = 1000,
    num_masses: int = 5,
    seed: int = 0,
    strength: float = 0.3,
    progress: bool = True,
) -> Task:
    """EMLP's ModifiedInertia task: target ``I + strength (I e_z) e_z^T``, declared O(3).

    The inputs are those of :func:`inertia_task` with the same seed. The actions are O(3)'s
    (the task *claims* O(3)); the data is exactly symmetric only under ``R e_z = +-e_z``
    (``extra["exact_symmetry"]``).

    Parameters other than those below as in :func:`inertia_task`.

    Parameters
    ----------
    strength:
        Finite, ``>= 0`` (``0``: the inertia task).

    Examples
    --------
    >>> task = modified_inertia_task(train_size=8, val_size=4, test_size=0)
    >>> task.extra["strength"]
    0.3
    """
    sizes, seed = _check_common(train_size, val_size, test_size, seed, progress)
    k = check_positive_int("num_masses", num_masses)
    strength = check_non_negative("strength", strength)
    description = (
        f"Predict I + {strength:g} (I e_z) e_z^T from {k} point masses (I: the inertia "
        f"tensor); declared O(3), symmetric only about the z axis ({REFERENCE}, "
        "ModifiedInertia)."
    )
    extra = {"exact_symmetry": AXIS_SYMMETRY, "strength": strength, "axis": (0.0, 0.0, 1.0)}
    return _inertia_like("modified-inertia", sizes, seed, k, strength, description, extra)


def _inertia_like(
    name: str,
    sizes: dict[str, int],
    seed: int,
    k: int,
    strength: float,
    description: str,
    extra: dict[str, Any],
) -> Task:
    """The inertia and modified-inertia tasks: same inputs and O(3) actions, target
    ``I + strength (I e_z) e_z^T``."""
    target = functools.partial(_inertia_targets, num_masses=k, strength=strength)
    splits = _splits(sizes, seed, 4 * k, target, prepare=functools.partial(_softplus_masses, k=k))
    group = O3()
    vector, scalar = group.standard_representation(), group.trivial_representation()
    return _task(
        name,
        splits,
        RepresentationAction(k * scalar + k * vector),
        RepresentationAction(vector.tensor(vector)),
        description,
        target,
        {"symmetry": "O(3)", **extra, "num_masses": k, "seed": seed, "sizes": sizes},
    )


def o5_task(
    *,
    train_size: int = 1000,
    val_size: int = 1000,
    test_size: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> Task:
    """EMLP's O5Synthetic task: two vectors of ``R^5`` -> an O(5)-invariant scalar.

    Targets are standardised, ``(f - mean) / std`` with the training split's mean and (population)
    standard deviation, stored in ``extra["target_mean"]`` and ``extra["target_std"]``; the
    inputs are prefix-stable across ``train_size``, the standardised targets only up to these
    two numbers.

    Parameters other than those below as in :func:`inertia_task`.

    Parameters
    ----------
    train_size:
        At least 2 (for the standard deviation).

    Returns
    -------
    Task
        ``inputs (B, 10)`` with action ``2 V`` of O(5), ``targets (B, 1)`` with the trivial
        representation; MSE (of the standardised targets).

    Examples
    --------
    >>> task = o5_task(train_size=8, val_size=4, test_size=0)
    >>> task.train[0].shape, task.train[1].shape
    (torch.Size([8, 10]), torch.Size([8, 1]))
    """
    check_int("train_size", train_size, minimum=2)
    sizes, seed = _check_common(train_size, val_size, test_size, seed, progress)
    train_inputs = _normal(seed, "train", sizes["train"], 10)
    raw = _o5_targets(train_inputs.double())
    mean, std = float(raw.mean()), float(raw.std(correction=0))
    target = functools.partial(_o5_targets, mean=mean, std=std)
    splits = _splits(sizes, seed, 10, target)
    group = Orthogonal(5)
    return _task(
        "o5",
        splits,
        RepresentationAction(2 * group.standard_representation()),
        RepresentationAction(group.trivial_representation()),
        "Predict sin|x1| - |x2|^3 / 2 + cos(x1, x2) (standardised) from x1, x2 in R^5; "
        f"exactly O(5)-invariant ({REFERENCE}, O5Synthetic).",
        target,
        {"symmetry": "O(5)", "target_mean": mean, "target_std": std, "seed": seed, "sizes": sizes},
    )


def gap_dial_task(
    delta: float = 0.0,
    *,
    train_size: int = 1000,
    val_size: int = 1000,
    test_size: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> Task:
    """The symmetry-gap dial: ``y = (x1 . x2) x1 + x2 + delta (x1 . e_z) e_z`` under O(3).

    Parameters other than those below as in :func:`inertia_task`.

    Parameters
    ----------
    delta:
        Finite, ``>= 0``: the known symmetry gap knob (``0``: exactly O(3)-equivariant).

    Returns
    -------
    Task
        ``inputs (B, 6)`` with action ``2 V`` of O(3), ``targets (B, 3)`` with ``V``; MSE.
        ``extra`` holds ``delta``, ``symmetry_gap = 2 delta^2 / 3`` (``E ||(I - P_G) y||^2``),
        ``symmetry_gap_mse = 2 delta^2 / 9`` (the test MSE of the best O(3)-equivariant
        predictor), ``target_energy = 24 + delta^2`` (``E ||y||^2``) and
        ``relative_gap = sqrt(symmetry_gap / target_energy)``, all exact for the data
        distribution.

    Examples
    --------
    >>> task = gap_dial_task(delta=0.5, train_size=8, val_size=4, test_size=0)
    >>> task.train[1].shape, task.extra["symmetry_gap_mse"]
    (torch.Size([8, 3]), 0.05555555555555555)
    """
    delta = check_non_negative("delta", delta)
    sizes, seed = _check_common(train_size, val_size, test_size, seed, progress)
    target = functools.partial(_gap_dial_targets, delta=delta)
    splits = _splits(sizes, seed, 6, target)
    group = O3()
    vector = group.standard_representation()
    gap = 2.0 * delta**2 / 3.0
    energy = 24.0 + delta**2
    return _task(
        "gap-dial",
        splits,
        RepresentationAction(2 * vector),
        RepresentationAction(vector),
        f"Predict (x1 . x2) x1 + x2 + {delta:g} (x1 . e_z) e_z from x1, x2 in R^3: O(3) "
        f"broken by a known amount (gap {gap / 3.0:.3g} in MSE).",
        target,
        {
            "symmetry": "O(3) + delta * breaking",
            "exact_symmetry": "O(3)" if delta == 0 else AXIS_SYMMETRY,
            "delta": delta,
            "axis": (0.0, 0.0, 1.0),
            "symmetry_gap": gap,
            "symmetry_gap_mse": gap / 3.0,
            "target_energy": energy,
            "relative_gap": math.sqrt(gap / energy),
            "seed": seed,
            "sizes": sizes,
        },
    )


def _task(
    name: str,
    splits: dict[str, Split],
    action_in: RepresentationAction,
    action_out: RepresentationAction,
    description: str,
    target: _TargetMap,
    extra: dict[str, Any],
) -> Task:
    """A synthetic MSE task from its splits; ``extra`` gains the reference and the target map."""
    return Task.from_splits(
        name,
        splits,
        action_in=action_in,
        action_out=action_out,
        metric_name="mse",
        description=description,
        extra={**extra, "reference": REFERENCE, "target_function": target},
    )


# --- generation ---------------------------------------------------------------------------------


def _normal(seed: int, split: str, size: int, dim: int) -> Tensor:
    """``(size, dim)`` standard normals in float32 from the stream ``(seed, split index)``;
    row ``i`` does not depend on ``size``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLITS.index(split)]))
    return torch.from_numpy(rng.standard_normal((size, dim)).astype(np.float32))


def _splits(
    sizes: dict[str, int],
    seed: int,
    dim: int,
    target: _TargetMap,
    prepare: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, Split]:
    """Inputs of each non-empty split, and their targets computed in float64."""
    out = {}
    for split in _SPLITS:
        if sizes[split] == 0:
            continue
        inputs = _normal(seed, split, sizes[split], dim)
        if prepare is not None:
            inputs = prepare(inputs)
        out[split] = (inputs, target(inputs.double()).float())
    return out


def _softplus_masses(x: Tensor, k: int) -> Tensor:
    """EMLP's masses: the first ``k`` columns through softplus (float32, like the inputs)."""
    return torch.cat([F.softplus(x[:, :k].double()).float(), x[:, k:]], dim=1)


def _inertia_targets(inputs: Tensor, num_masses: int, strength: float) -> Tensor:
    """Flat inputs ``(B, 4k)`` -> flat (modified) inertia tensors ``(B, 9)``."""
    inputs = _check_flat("inputs", inputs, 4 * num_masses)
    masses = inputs[:, :num_masses]
    positions = inputs[:, num_masses:].reshape(-1, num_masses, 3)
    tensor = modified_inertia_tensor(masses, positions, strength)
    return tensor.reshape(-1, 9)


def _o5_targets(inputs: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Flat inputs ``(B, 10)`` -> standardised O5 targets ``(B, 1)``."""
    inputs = _check_flat("inputs", inputs, 10)
    return (o5_function(inputs[:, :5], inputs[:, 5:]) - mean) / std


def _gap_dial_targets(inputs: Tensor, delta: float) -> Tensor:
    """Flat inputs ``(B, 6)`` -> gap-dial targets ``(B, 3)``."""
    inputs = _check_flat("inputs", inputs, 6)
    return gap_dial_function(inputs[:, :3], inputs[:, 3:], delta)


# --- input checks -------------------------------------------------------------------------------


def _check_common(
    train_size: object, val_size: object, test_size: object, seed: object, progress: object
) -> tuple[dict[str, int], int]:
    sizes = check_split_sizes(train_size, val_size, test_size)
    seed = check_int("seed", seed, minimum=0)
    if not isinstance(progress, bool):
        raise TypeError(f"progress: expected a bool, received {progress!r}")
    return sizes, seed


def _check_finite_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a finite number, received {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, received {value!r}")
    return float(value)


def _check_flat(name: str, value: object, dim: int) -> Tensor:
    value = check_tensor(name, value)
    if value.ndim != 2 or value.shape[1] != dim:
        raise ValueError(f"{name}: expected shape (B, {dim}), received {tuple(value.shape)}")
    return value


def _check_masses_positions(masses: object, positions: object) -> tuple[Tensor, Tensor]:
    masses = check_tensor("masses", masses)
    positions = check_dim("positions", check_tensor("positions", positions), -1, 3)
    if positions.shape[:-1] != masses.shape:
        raise ValueError(
            f"positions: expected shape {(*masses.shape, 3)} to match masses "
            f"{tuple(masses.shape)}, received {tuple(positions.shape)}"
        )
    return masses, positions


def _check_pair(x1: object, x2: object, dim: int | None) -> tuple[Tensor, Tensor]:
    x1 = check_tensor("x1", x1)
    x2 = check_tensor("x2", x2)
    if dim is not None:
        check_dim("x1", x1, -1, dim)
    if x1.ndim == 0 or x2.shape != x1.shape:
        raise ValueError(
            f"x2: expected the shape of x1 {tuple(x1.shape)}, received {tuple(x2.shape)}"
        )
    return x1, x2
