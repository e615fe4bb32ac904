r"""Smoke plumes with approximate C4 symmetry (Wang, Walters & Yu, ICML 2022, arXiv 2201.11969).

Two-dimensional incompressible smoke rises from a circular inflow at the middle of one edge of a
closed square box, pushed into the box by buoyancy. Each simulation has one inflow edge ``j``
(0 bottom, 1 right, 2 top, 3 left) and one buoyancy strength; the four edges are the orbit of
one another under C4, so the dynamics are exactly C4-equivariant when every edge is simulated
with the same strengths. The paper's data breaks this: simulation ``k = 1, 2, ...`` uses edge
``j = (k - 1) mod 4`` and strength ``k * base``, so no two edges share a strength, and (in the
official generator) the top inflow's buoyancy is 10% stronger. ``breaking`` dials between the
two:

.. math::

    b_{i,j} = \mathrm{base}\,\bigl(4i + 2.5 + s\,(j - 1.5)\bigr)\,(1 + 0.1\,s\,[j = 2]),

``i`` the simulation's strength level; ``s = 1`` is the paper's data (``b = k * base``), ``s = 0``
gives every edge the same strengths (exact symmetry up to the solver's tolerance).

The data comes from PhiFlow (``pip install "equirelax[flow]"``), the library the paper used,
with the official generator's steps: MacCormack advection of the smoke plus the inflow,
semi-Lagrangian self-advection of the velocity plus the buoyancy force ``smoke * b``, and a
pressure projection. Velocities are stored at cell centres, ``(S, steps, 2, H, W)`` in image
layout (row 0 at the top), components ``(x right, y up)``, so a 90-degree rotation is an exact
pixel permutation (:class:`~equirelax.actions.ImageAction` with ``fibre="vector"``).

Windows (the official ``run_model.py``, for 310 steps; other lengths scale them): the input is
10 consecutive frames, the target the next one. Training windows start in ``[0, 160)`` of the
training simulations, validation in ``[160, 200)`` (6-step rollouts), the **future** test split
in ``[200, 250)`` and the **domain** test split (held-out simulations) in ``[0, 100)``, both
20-step rollouts. Evaluation rolls the one-step model out autoregressively
(:func:`rollout`); the metric is the RMSE over the rollout.

Departures from the official code: velocities at cell centres (the official files hold the
staggered components cropped to 64 x 64, which a 90-degree rotation does not map onto
themselves); training on one-step targets (the official loss sums 6 rollout steps); float64
pressure solves (PhiFlow 3's float32 solves stop with ``Diverged`` at the official tolerance).
Generated data are cached like the N-body splits (:mod:`equirelax.tasks.nbody`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from equirelax._checks import check_bool, check_int, check_positive_int
from equirelax.actions import ImageAction
from equirelax.groups import CyclicGroup
from equirelax.losses import mean_squared_error
from equirelax.tasks._cache import (
    cache_directory,
    cache_file,
    generating,
    load_arrays,
    save_arrays,
)
from equirelax.tasks.base import Task

__all__ = [
    "SYMMETRY",
    "Plume",
    "plumes",
    "rollout",
    "root_mean_squared_error",
    "simulate_plumes",
    "smoke_task",
    "smoke_task_from_frames",
]

SYMMETRY = "C4"
INPUT_FRAMES = 10
"""Frames the model sees (the official ``input_length``)."""
FORMAT_VERSION = 1
_OFFICIAL_STEPS = 310
_OFFICIAL_WINDOWS = {"train": 160, "val": 200, "future": 250, "domain": 100}
_OFFICIAL_DOMAIN = (6, 14, 15, 10, 18, 20, 24, 13, 21, 5)
"""Held-out simulations ``k`` of the official 36 (``run_model.py``); ``k = 32`` is unused."""
_OFFICIAL_UNUSED = (32,)
_HORIZONS = {"val": 6, "future": 20, "domain": 20}
_TOP = 2
_SKIPPED = 2
"""Frames before the first window (the official ``Dataset`` starts its windows at frame 2)."""
_INSTALL = 'pip install "equirelax[flow]"'


@dataclass(frozen=True)
class Plume:
    """One simulation: the inflow ``edge`` (0 bottom, 1 right, 2 top, 3 left) and the strength
    of the buoyancy, which points from that edge into the box."""

    edge: int
    strength: float


def plumes(per_edge: int, breaking: float = 1.0, base: float = 0.01) -> list[Plume]:
    """The simulations ``k = 1 .. 4 per_edge`` (module docstring): edge ``(k - 1) mod 4``,
    strength level ``(k - 1) // 4``, ``breaking`` in ``[0, 1]`` (1: the paper's data)."""
    per_edge = check_positive_int("per_edge", per_edge)
    if (
        isinstance(breaking, bool)
        or not isinstance(breaking, (int, float))
        or not (0.0 <= breaking <= 1.0)
    ):
        raise ValueError(f"breaking: expected a number in [0, 1], received {breaking!r}")
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not 0 < base < np.inf:
        raise ValueError(f"base: expected a finite number > 0, received {base!r}")
    out = []
    for k in range(1, 4 * per_edge + 1):
        level, edge = divmod(k - 1, 4)
        strength = base * (4 * level + 2.5 + breaking * (edge - 1.5))
        strength *= 1 + 0.1 * breaking * (edge == _TOP)
        out.append(Plume(edge, float(strength)))
    return out


def simulate_plumes(
    simulations: Sequence[Plume], resolution: int = 64, steps: int = 310, progress: bool = False
) -> np.ndarray:
    """Velocity frames ``(S, steps, 2, H, W)`` (float32, image layout, components ``(x right,
    y up)``) of the smoke simulations, all run at once along a PhiFlow batch dimension.

    The box is ``resolution`` cells wide; the inflow is a disc of radius ``5 r`` centred ``5 r``
    cells in from the middle of its edge, ``r = resolution / 64`` (the official 64-cell layout
    scaled), adding 1 unit of smoke per step; ``dt = 1``. ``progress`` shows a bar over the
    steps.
    """
    resolution = check_int("resolution", resolution, minimum=16)
    steps = check_positive_int("steps", steps)
    check_bool("progress", progress)
    if not simulations or not all(isinstance(p, Plume) and p.edge in range(4) for p in simulations):
        raise ValueError(
            f"simulations: expected a non-empty sequence of Plume(edge in 0..3, strength), "
            f"received {simulations!r}"
        )
    try:
        from phi.torch import flow
        from phiml import math as phimath
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"smoke: generating the smoke-plume data needs PhiFlow; install it with {_INSTALL} "
            "(or pip install phiflow), or load cached data with cache_dir"
        ) from None
    scale = resolution / 64
    near, middle = 5 * scale, resolution / 2
    centres = [(middle, near), (resolution - near, middle), (middle, resolution - near),
               (near, middle)]  # fmt: skip
    inward = [(0.0, 1.0), (-1.0, 0.0), (0.0, -1.0), (1.0, 0.0)]
    sims = flow.batch("sim")
    vector = flow.channel(vector="x,y")
    with phimath.precision(64):
        box = flow.Box(x=resolution, y=resolution)
        grid = {"x": resolution, "y": resolution, "bounds": box}
        centre = flow.tensor([centres[p.edge] for p in simulations], sims, vector)
        force = flow.tensor(
            [[p.strength * c for c in inward[p.edge]] for p in simulations], sims, vector
        )
        inflow = flow.CenteredGrid(
            flow.Sphere(center=centre, radius=5 * scale), flow.ZERO_GRADIENT, **grid
        )
        smoke = flow.CenteredGrid(0, flow.ZERO_GRADIENT, **grid)
        velocity = flow.StaggeredGrid(0, 0, **grid)
        solve = flow.Solve("auto", 1e-5, 1e-5)
        frames = []
        bar = tqdm(range(steps), desc="simulating smoke plumes", disable=not progress)
        for _ in bar:
            smoke = flow.advect.mac_cormack(smoke, velocity, dt=1) + inflow
            buoyancy = flow.resample(smoke * force, to=velocity)
            velocity = flow.advect.semi_lagrangian(velocity, velocity, dt=1) + buoyancy
            velocity, _ = flow.fluid.make_incompressible(velocity, (), solve)
            centred = velocity.at_centers().values.numpy("sim,vector,y,x")
            frames.append(centred[:, :, ::-1, :])  # y up -> row 0 at the top
    return np.ascontiguousarray(np.stack(frames, axis=1), dtype=np.float32)


def root_mean_squared_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """``sqrt(mean((outputs - targets)^2))`` (shape-checked)."""
    return torch.sqrt(mean_squared_error(outputs, targets))


def rollout(model: Callable[..., Tensor], inputs: Tensor, targets: Tensor) -> Tensor:
    """Roll a one-step model out autoregressively over the targets' horizon: each prediction
    is appended to the input window and the oldest frame dropped. ``inputs`` ``(B, T_in, 2, H,
    W)``, ``targets`` ``(B, T, 2, H, W)`` (one-step targets ``(B, 2, H, W)`` give one step);
    returns predictions shaped like ``targets``."""
    if targets.ndim == inputs.ndim - 1:
        return model(inputs)
    window, predictions = inputs, []
    for _ in range(targets.shape[1]):
        step = model(window)
        predictions.append(step)
        window = torch.cat([window[:, 1:], step.unsqueeze(1)], dim=1)
    return torch.stack(predictions, dim=1)


def _scaled_windows(steps: int) -> dict[str, int]:
    """Window-start limits for ``steps`` frames: the official limits scaled by ``steps / 310``
    and checked to leave room for the longest rollout after the last future window start."""

    def limits_for(length: int) -> dict[str, int]:
        return {k: round(v * length / _OFFICIAL_STEPS) for k, v in _OFFICIAL_WINDOWS.items()}

    def fits(length: int) -> bool:
        limits = limits_for(length)
        tail = _SKIPPED + INPUT_FRAMES + _HORIZONS["future"] - 1
        return 1 <= limits["train"] < limits["val"] and limits["future"] + tail <= length

    if not fits(steps):
        minimum = next(length for length in range(steps, 10 * _OFFICIAL_STEPS) if fits(length))
        raise ValueError(
            f"steps: expected at least {minimum} frames to cut 20-step rollout windows at the "
            f"official proportions, received {steps}"
        )
    return limits_for(steps)


def _windows(frames: Tensor, starts: range, horizon: int) -> tuple[Tensor, Tensor]:
    """Inputs ``(N, 10, 2, H, W)`` and targets (``(N, 2, H, W)`` for ``horizon = 1``, else
    ``(N, horizon, 2, H, W)``) for every simulation of ``frames`` and window start (the
    official windows skip the first 2 frames)."""
    length = INPUT_FRAMES + horizon
    usable = frames[:, _SKIPPED:]
    windows = usable.unfold(1, length, 1)[:, starts.start : starts.stop]  # (S, n, 2, H, W, L)
    windows = windows.permute(0, 1, 5, 2, 3, 4).flatten(0, 1)
    inputs = windows[:, :INPUT_FRAMES].contiguous()
    targets = windows[:, INPUT_FRAMES:].contiguous()
    return inputs, targets[:, 0] if horizon == 1 else targets


def _domain_simulations(count: int, held_out: int | None, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the training and the held-out (domain) simulations."""
    if count == 36 and held_out is None:
        domain = [k - 1 for k in _OFFICIAL_DOMAIN]
        unused = {k - 1 for k in _OFFICIAL_UNUSED}
        train = [i for i in range(count) if i not in domain and i not in unused]
        return train, domain
    held_out = max(1, round(count * 10 / 35)) if held_out is None else held_out
    held_out = check_int("domain_simulations", held_out, minimum=1)
    if held_out >= count:
        raise ValueError(
            f"domain_simulations: expected fewer than the {count} simulations, received {held_out}"
        )
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[held_out:]), sorted(order[:held_out])


def smoke_task_from_frames(
    frames: Tensor | np.ndarray,
    *,
    domain: Sequence[int],
    extra: dict[str, Any] | None = None,
) -> Task:
    """The smoke task from velocity frames ``(S, steps, 2, H, W)`` of simulations, the indices
    ``domain`` held out for the domain test split (module docstring). :func:`smoke_task` calls
    it on PhiFlow data; tests call it on small synthetic frames."""
    frames = torch.as_tensor(frames, dtype=torch.float32)
    if frames.ndim != 5 or frames.shape[2] != 2 or frames.shape[-1] != frames.shape[-2]:
        raise ValueError(
            f"frames: expected square velocity frames (S, steps, 2, H, W), received shape "
            f"{tuple(frames.shape)}"
        )
    if not torch.isfinite(frames).all():
        raise ValueError("frames: expected finite velocities, found NaN or inf")
    count, steps = frames.shape[:2]
    domain = sorted({check_int("domain", d, minimum=0) for d in domain})
    if not domain or domain[-1] >= count or len(domain) == count:
        raise ValueError(
            f"domain: expected some but not all of the simulation indices 0..{count - 1}, "
            f"received {list(domain)}"
        )
    limits = _scaled_windows(steps)
    training = [i for i in range(count) if i not in domain]
    seen, held = frames[training], frames[domain]
    splits = {
        "train": _windows(seen, range(limits["train"]), 1),
        "val": _windows(seen, range(limits["train"], limits["val"]), _HORIZONS["val"]),
        "test": _windows(seen, range(limits["val"], limits["future"]), _HORIZONS["future"]),
    }
    c4 = CyclicGroup(4)
    fields = ImageAction(c4, fibre="vector")
    return Task(
        name="smoke",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        test_splits={"domain": _windows(held, range(limits["domain"]), _HORIZONS["domain"])},
        action_in=fields,
        action_out=fields,
        metric=root_mean_squared_error,
        metric_name="rmse",
        predict=rollout,
        description=(
            f"Predict the next velocity frame of a {frames.shape[-1]}x{frames.shape[-1]} smoke "
            "plume from the last 10 (Wang et al. 2022); test: 20-step rollouts at later times "
            "(test) and on held-out simulations (test_domain), RMSE."
        ),
        extra={"simulations": count, "steps": steps, "domain": domain, **(extra or {})},
    )


def smoke_task(
    resolution: int = 64,
    steps: int = 310,
    per_edge: int = 9,
    breaking: float = 1.0,
    base: float = 0.01,
    domain_simulations: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> Task:
    """The smoke-plume task (module docstring), simulated with PhiFlow on first use and cached.

    Parameters
    ----------
    resolution:
        Cells per side (the paper: 64).
    steps:
        Simulated steps (the paper: 310); at least 158 for 20-step test windows.
    per_edge:
        Simulations per inflow edge (the paper: 9, i.e. 36 simulations).
    breaking:
        The symmetry dial ``s`` in ``[0, 1]``: 1 the paper's strengths, 0 exact C4 symmetry.
    base:
        The buoyancy unit (the official generator's 0.01).
    domain_simulations:
        Simulations held out for the domain test split (default: the official 10 of 36 for 36
        simulations, else ``round(S * 10 / 35)``, drawn with ``seed``).
    cache_dir:
        Where the generated frames go (as for the N-body task).
    progress:
        A progress bar while simulating.
    """
    resolution = check_int("resolution", resolution, minimum=16)
    check_bool("progress", progress)
    steps = check_positive_int("steps", steps)
    _scaled_windows(steps)
    simulations = plumes(per_edge, breaking, base)
    train, domain = _domain_simulations(len(simulations), domain_simulations, seed)
    params = {
        "format_version": FORMAT_VERSION,
        "resolution": resolution,
        "steps": steps,
        "simulations": [[p.edge, p.strength] for p in simulations],
    }
    path = cache_file(cache_directory(cache_dir), f"smoke-{resolution}-{steps}", params)
    shape = (len(simulations), steps, 2, resolution, resolution)
    with generating(path, progress):
        stored = load_arrays(path, params, {"frames": shape})
        if stored is None:
            stored = {"frames": simulate_plumes(simulations, resolution, steps, progress)}
            save_arrays(path, stored, params)
    extra = {"breaking": breaking, "cache_file": str(path), "train_simulations": train}
    return smoke_task_from_frames(stored["frames"], domain=domain, extra=extra)
