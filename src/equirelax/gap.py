"""The symmetry gap: how far an input-target relation is from symmetric.

For actions ``(A_in, A_out)`` of a group ``G`` the Haar projection (group average) of a
function is ``P_G f(x) = E_g A_out(g)^-1 f(A_in(g) x)``: an equivariant function, equal to
``f`` when ``f`` is equivariant. The symmetry gap of a data distribution is the risk of the best
equivariant predictor minus the risk of the best predictor (``../shared/SPEC.md`` section 1).
:func:`symmetry_gap` estimates it as the spec suggests, from the part of a fitted flexible
(unconstrained) predictor ``f`` that its group average removes. With ``a = f - P_G f`` (the
asymmetric part of ``f``) and the loss ``l``::

    c*  = argmin_{c in [0, 1]}  E_cal  l(P_G f(x) + c a(x), y)              (calibration half)
    gap = E_eval [ l(P_G f(x), y) - l(P_G f(x) + c* a(x), y) ]  /  E_eval l(mean(y), y)

``f`` is fitted on one part of the data; the held-out part is split into a calibration half,
which chooses how much of ``a`` to keep, and an evaluation half, which measures the risk that
keeping it removes, relative to the target scale (the loss of predicting the mean target: the
target variance for the MSE). A percentile bootstrap over evaluation samples gives the
interval. Why this form: on symmetric data (``E[y|x]`` equivariant, ``x`` from an invariant
distribution, orthogonal ``A_out``) the residual ``y - P_G f`` is uncorrelated with any
asymmetric ``a``, so no ``c > 0`` helps beyond noise: ``c*`` is about 0 and the gap about 0,
with 0 inside the interval. Comparing ``f`` with ``P_G f`` directly would instead report the
variance that averaging removes from an imperfect ``f`` (a negative "gap"). Under a breaking
term ``delta * b(x)`` the gap grows like ``delta^2 E||(I - P_G) b||^2`` (relative to the target
scale) once ``f`` has learned ``b``; a predictor that has not learned it cannot show it, so the
estimate is a lower bound in that sense.

:func:`group_average` computes ``P_G f`` (over all elements of a finite group, or ``K`` Haar
samples of a compact one); the RECM strategy (:mod:`equirelax.strategies.recm`) uses the same
quantity per layer, on the layer's free branch, during training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from equirelax._batches import call, combine, index, parts, repeat, repeat_batched
from equirelax._checks import batch_size, check_finite, check_positive_int
from equirelax.actions import ActionLike, as_action_pair
from equirelax.groups import haar_elements
from equirelax.losses import Loss, mean_squared_error, per_sample_loss

__all__ = ["SymmetryGap", "group_average", "symmetry_gap"]

_SHARES = 21  # the grid of c in [0, 1] the calibration half searches


def group_average(
    f: Callable[..., Any],
    x: Any,
    action_in: ActionLike,
    action_out: ActionLike | None = None,
    *,
    elements: Tensor | None = None,
    num_elements: int = 32,
    generator: torch.Generator | None = None,
    kwargs: dict[str, Any] | None = None,
) -> Any:
    """The Haar projection ``P_G f(x) = mean_g A_out(g)^-1 f(A_in(g) x)`` on a batch ``x``.

    ``elements`` default: every element of a finite group, else ``num_elements`` Haar samples
    (the same elements for every sample, so ``P_G f`` is a fixed function of ``x``). One batched
    call of ``f`` on ``K * B`` moved inputs. Tuple inputs and outputs follow their
    :class:`~equirelax.actions.DirectSumAction`. ``kwargs`` are held fixed (per-sample tensors
    among them are repeated with the batch), as for a layer's edge attributes. The actions may
    be e3nn irreps (:func:`~equirelax.actions.as_action`).
    """
    action_in, action_out = as_action_pair(action_in, action_out)
    tensors = parts(x)
    device = tensors[0].device
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.get_default_dtype())
    g = elements
    if g is None:
        g = haar_elements(action_in.group, num_elements, generator, device=device, dtype=dtype)
    g = action_in.group.check(g, "elements")
    if g.is_floating_point():
        g = g.to(device=device, dtype=dtype)
    batch, k = batch_size(x), g.shape[0]
    g_rep = g.repeat_interleave(batch, dim=0)  # element-major, like repeat()
    fixed = repeat_batched(kwargs or {}, batch, k)
    moved = f(*parts(action_in(g_rep, repeat(x, k))), **fixed)
    back = action_out(action_in.group.inverse(g_rep), moved)
    return _mean_over_copies(back, k, batch)


def _mean_over_copies(y: Any, k: int, batch: int) -> Any:
    if isinstance(y, (tuple, list)):
        return type(y)(_mean_over_copies(part, k, batch) for part in y)
    return y.reshape(k, batch, *y.shape[1:]).mean(dim=0)


@dataclass(frozen=True)
class SymmetryGap:
    """Result of :func:`symmetry_gap` (risks relative to the target scale).

    Attributes
    ----------
    estimate:
        The estimated gap, ``max(0, difference)``.
    low, high:
        Bootstrap percentile interval of the estimate (``confidence`` level): the interval of
        ``difference`` clipped at 0 like the estimate.
    difference:
        Mean over evaluation samples of ``l(P_G f, y) - l(P_G f + c* a, y)`` over ``scale``.
    kept:
        ``c*``, the share of ``f``'s asymmetric part the calibration half keeps.
    risk_predictor, risk_averaged:
        Evaluation risks of ``f`` and of ``P_G f``.
    scale:
        The target scale ``E l(mean(y), y)`` (the target variance for the MSE).
    """

    estimate: float
    low: float
    high: float
    difference: float
    kept: float
    risk_predictor: float
    risk_averaged: float
    scale: float
    confidence: float
    num_heldout: int
    num_elements: int

    @property
    def detected(self) -> bool:
        """Whether the interval excludes 0: the data are measurably asymmetric (a relaxed
        method may beat a strictly equivariant one); otherwise no gap is detectable at this
        sample size."""
        return self.low > 0

    def __str__(self) -> str:
        return (
            f"symmetry gap {self.estimate:.3g} ({100 * self.confidence:.0f}% interval "
            f"[{self.low:.3g}, {self.high:.3g}], keeping {self.kept:.2f} of the asymmetric "
            f"part); risk of f {self.risk_predictor:.3g}, of its group average "
            f"{self.risk_averaged:.3g} (relative to the target scale)"
        )


def symmetry_gap(
    inputs: Any,
    targets: Tensor,
    action_in: ActionLike,
    action_out: ActionLike | None = None,
    *,
    predictor: nn.Module | None = None,
    fit: bool = True,
    heldout_fraction: float = 0.5,
    loss: Loss = mean_squared_error,
    num_elements: int = 32,
    resamples: int = 2000,
    confidence: float = 0.95,
    steps: int = 2000,
    lr: float = 3e-3,
    batch: int = 256,
    seed: int = 0,
) -> SymmetryGap:
    """Estimate the symmetry gap of ``(inputs, targets)`` (see the module docstring).

    Parameters
    ----------
    inputs, targets:
        The data, sample axis first (inputs a tensor or a tuple of tensors).
    action_in, action_out:
        The actions of the candidate symmetry (``action_out=None``: invariant targets), or
        e3nn irreps for O(3) (:func:`~equirelax.actions.as_action`).
    predictor:
        The flexible predictor ``f``. Default: an MLP on the flattened inputs (3 hidden layers
        of 256, SiLU). With ``fit=True`` it is trained on the first part of the data by Adam
        (``steps``, ``lr``, ``batch``, cosine decay); with ``fit=False`` it is used as given
        (already fitted on other data) and every sample is held out.
    heldout_fraction:
        Share of the samples held out for the estimate (when fitting).
    loss:
        Per-batch loss ``(outputs, targets) -> scalar`` (mean over samples); evaluated per
        sample for the bootstrap.
    num_elements:
        Haar samples of a compact group for ``P_G`` (finite groups use every element).
    resamples, confidence:
        Bootstrap resamples of the held-out samples and the interval's level.
    seed:
        Seeds the split, the default predictor, its training and the group samples.
    """
    check_positive_int("resamples", resamples)
    check_positive_int("steps", steps)
    check_positive_int("batch", batch)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a number in (0, 1), received {confidence!r}")
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(
            f"heldout_fraction: expected a number in (0, 1), received {heldout_fraction!r}"
        )
    action_in, action_out = as_action_pair(action_in, action_out)
    for i, part in enumerate(parts(inputs)):
        check_finite(f"inputs[{i}]" if isinstance(inputs, (tuple, list)) else "inputs", part)
    check_finite("targets", targets)
    count = batch_size(inputs)
    if targets.shape[0] != count:
        raise ValueError(
            f"targets: expected {count} samples like the inputs, received {targets.shape[0]}"
        )
    generator = torch.Generator().manual_seed(seed)
    if fit:
        order = torch.randperm(count, generator=generator)
        cut = count - max(4, round(heldout_fraction * count))
        if cut < 2:
            raise ValueError(
                f"inputs: expected at least 4 samples to fit and hold out, received {count}"
            )
        fit_rows, held_rows = order[:cut], order[cut:]
    else:
        fit_rows, held_rows = None, torch.arange(count)
    if predictor is None:
        if not fit:
            raise ValueError("predictor: fit=False needs a fitted predictor, received None")
        predictor = _default_predictor(inputs, targets, seed)
    if fit:
        assert fit_rows is not None
        _fit(predictor, index(inputs, fit_rows), targets[fit_rows], loss, steps, lr, batch, seed)
    x, y = index(inputs, held_rows), targets[held_rows]
    predictor.eval()
    with torch.no_grad():
        elements = haar_elements(
            action_in.group, num_elements, generator, device=y.device, dtype=y.dtype
        )
        raw = call(predictor, x)
        averaged = group_average(predictor, x, action_in, action_out, elements=elements)
        shares = torch.linspace(0.0, 1.0, _SHARES, dtype=y.dtype, device=y.device)
        # (n, shares): the loss of P_G f + c (f - P_G f) per sample and share c
        asymmetric = combine(raw, averaged, -1.0)
        risks = torch.stack(
            [per_sample_loss(loss, combine(averaged, asymmetric, float(c)), y) for c in shares],
            dim=1,
        )
        scale_rows = per_sample_loss(loss, y.mean(dim=0, keepdim=True).expand_as(y), y)
    half = y.shape[0] // 2
    calibration, evaluation = risks[:half], risks[half:]
    best = int(calibration.mean(dim=0).argmin())
    scale = float(scale_rows[half:].mean())
    if not scale > 0:
        raise ValueError("targets: expected targets that vary (the target scale is 0)")
    diff = (evaluation[:, 0] - evaluation[:, best]) / scale
    boot = torch.randint(0, diff.shape[0], (resamples, diff.shape[0]), generator=generator)
    means = diff[boot].mean(dim=1)
    tail = (1 - confidence) / 2
    low, high = (float(v) for v in torch.quantile(means, torch.tensor([tail, 1 - tail])))
    difference = float(diff.mean())
    return SymmetryGap(
        estimate=max(0.0, difference),
        low=max(0.0, low),
        high=max(0.0, high),
        difference=difference,
        kept=float(shares[best]),
        risk_predictor=float(evaluation[:, -1].mean()) / scale,
        risk_averaged=float(evaluation[:, 0].mean()) / scale,
        scale=scale,
        confidence=confidence,
        num_heldout=int(y.shape[0]),
        num_elements=int(elements.shape[0]),
    )


class _FlatMLP(nn.Module):
    """The default flexible predictor: an MLP on the flattened, concatenated inputs."""

    def __init__(self, in_features: int, out_shape: tuple[int, ...], hidden: int = 256) -> None:
        super().__init__()
        self.out_shape = out_shape
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, math.prod(out_shape)),
        )

    def forward(self, *x: Tensor) -> Tensor:
        features = torch.cat([part.reshape(part.shape[0], -1) for part in x], dim=1)
        return self.net(features).reshape(-1, *self.out_shape)


def _default_predictor(inputs: Any, targets: Tensor, seed: int) -> nn.Module:
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    width = sum(p[0].numel() for p in parts(inputs))
    model = _FlatMLP(width, tuple(targets.shape[1:])).to(targets.device, targets.dtype)
    torch.set_rng_state(state)
    return model


def _fit(
    predictor: nn.Module,
    inputs: Any,
    targets: Tensor,
    loss: Loss,
    steps: int,
    lr: float,
    batch: int,
    seed: int,
) -> None:
    """Adam with cosine decay on minibatches drawn with replacement (seeded)."""
    predictor.train()
    optimiser = torch.optim.Adam(predictor.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    generator = torch.Generator().manual_seed(seed + 1)
    count = targets.shape[0]
    for _ in range(steps):
        rows = torch.randint(0, count, (min(batch, count),), generator=generator)
        value = loss(call(predictor, index(inputs, rows)), targets[rows])
        optimiser.zero_grad(set_to_none=True)
        value.backward()
        optimiser.step()
        schedule.step()
