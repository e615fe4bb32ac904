"""RECM: recurrent equivariant constraint modulation, **this library's formulation**.

After Pertigkiozoglou et al., arXiv 2602.02853. The published update rule is not reproduced
(it is not available to us); what follows is equirelax's own rule, built to have the
properties the paper states: one level per relaxed layer, moved by a recurrent (stateful,
Lipschitz) rule from the training signal and the layer's gap estimate; no target level,
schedule or epsilon from the user; levels that go to 0 on symmetric data (the model ends
equivariant with no projection step) and settle at a value bounded by, and growing with, the
layer's estimated gap otherwise. The derivation and its limits are in ``docs/recm.md``.

Every relaxed layer ``y_i = f_eq,i(h) + l_i u_i(h)`` has a norm-bounded free branch ``u_i``
(unit Frobenius norm, so that ``l_i`` carries the size of the deviation) with Haar projection
``P_G u_i`` and asymmetric part ``a_i = u_i - P_G u_i``. A share ``holdout`` of the training
data is never trained on (or held-out samples are given by :meth:`RECM.use_held_out_data`);
every ``every`` steps a probe batch from it gives, per layer and per probe sample ``j``, the
*benefit of asymmetry per unit level* (``l`` the task loss of one sample, ``S`` the loss of
predicting the probe's mean target, ``p_i = max(l_i, probe_level)``)::

    r_ij = [ l_j(a_i removed from layer i) - l_j(layer i's asymmetric part at level p_i) ] / (p_i S)

with mean ``r_i`` and squared standard error ``s_i^2 = var_j(r_ij) / n`` over the probe
batch. The recurrent rule is, per layer (bias-corrected moving averages over probes)::

    m_i <- (1 - beta) m_i + beta r_i            q_i <- (1 - beta) q_i + beta s_i^2
    target_i = min(1, gain * max(m_i - z sqrt(q_i), 0))             (phi: Lipschitz, phi(0) = 0)
    l_i <- clip((1 - alpha) l_i + alpha target_i, 0, 1)

The standard error is that of the held-out samples, not of the probes: probes drawn from one
held-out set share its sampling error, which averaging over probes would hide.

The level follows a lower confidence bound of the benefit: it rises only where keeping the
layer's asymmetry measurably lowers the held-out loss. The layer's gap estimate is the share of
the target scale its asymmetry removes at its level, ``g_i = l_i max(m_i, 0)``.

Properties (tested in ``tests/test_recm.py``):

* **Symmetric data.** For an invariant data distribution, an invariant convex loss and an
  equivariant rest of the model, ``E r_i = -c l_i`` with ``c >= 0`` (the first-order term
  ``E <grad L, a_i>`` vanishes because ``a_i`` is orthogonal to equivariant functions), so the
  lower bound is negative, every target is 0 and ``l_i`` decays geometrically,
  ``(1 - alpha)^t``: the model becomes exactly equivariant as the levels reach 0, with no
  projection step.
* **Fixed point under a gap.** ``l* = gain * m*`` (below the clip) and ``g* = l* m*``, hence
  ``l* = sqrt(gain * g*)``: the level settles at the square root of ``gain`` times the layer's
  gap estimate, which is 0 exactly when the gap estimate is 0, grows with it, and bounds the
  level from above (``l <= sqrt(gain * g)`` whenever the lower confidence bound is below the
  mean). The map from ``(l, r)`` to the new level is a contraction in ``l`` (factor
  ``1 - alpha``) and Lipschitz in ``r`` (constant ``alpha * gain * beta``).

The cost per probe is one forward pass, without gradients, of ``1 + 2 n`` stacked copies of
the probe batch for ``n`` relaxed layers (a hook on layer ``i`` shifts only its own two copies);
``every`` bounds it, and ``benchmarks/symmetry.md`` reports it as a step-time ratio.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from equirelax._batches import call, combine, index, parts, repeat, to_like
from equirelax._checks import batch_size, check_non_negative, check_positive_int
from equirelax.commutant import EquivariantProjector
from equirelax.free_branches import DenseFreeBranch
from equirelax.gap import group_average
from equirelax.groups import haar_elements
from equirelax.losses import mean_squared_error, per_sample_loss
from equirelax.relaxed import Relaxed
from equirelax.strategies.base import Strategy, require_relaxed, set_levels

__all__ = ["RECM"]


class RECM(Strategy):
    """Recurrent equivariant constraint modulation (equirelax's rule: see the module docstring).

    Parameters
    ----------
    every:
        Probe every ``every`` training steps.
    probe_size:
        Samples per probe batch (drawn from the held-out share).
    holdout:
        Share of the training data kept out of training for the probes.
    beta, alpha:
        Rates of the moving moments and of the level.
    gain:
        ``kappa``: the target is ``gain`` times the benefit's lower confidence bound.
    z:
        Width of the lower confidence bound in standard errors.
    probe_level:
        Smallest level at which a layer's asymmetric part is probed (keeps ``r`` informative
        when the level is near 0).
    initial_level:
        Start value of every level (1: the model starts relaxed).
    num_elements:
        Haar samples for ``P_G u`` when it cannot be computed exactly (exact for dense free
        branches of layers with ``representation_in`` / ``representation_out``; finite groups
        use all elements).

    Notes
    -----
    The held-out probe set follows the levels' device and dtype at each probe, so the model
    may be moved or cast after :meth:`split_training_data`.
    """

    name: ClassVar[str] = "recm"
    holds_out_data: ClassVar[bool] = True

    def __init__(
        self,
        *,
        every: int = 4,
        probe_size: int = 64,
        holdout: float = 0.1,
        beta: float = 0.1,
        alpha: float = 0.1,
        gain: float = 10.0,
        z: float = 2.0,
        probe_level: float = 0.05,
        initial_level: float = 1.0,
        num_elements: int = 16,
    ) -> None:
        super().__init__()
        self.every = check_positive_int("every", every)
        self.probe_size = check_positive_int("probe_size", probe_size)
        self.num_elements = check_positive_int("num_elements", num_elements)
        for name, value, closed in (
            ("holdout", holdout, False),
            ("beta", beta, True),
            ("alpha", alpha, True),
            ("probe_level", probe_level, True),
        ):
            inside = 0.0 < value <= 1.0 if closed else 0.0 < value < 1.0
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not inside:
                interval = "(0, 1]" if closed else "(0, 1)"
                raise ValueError(f"{name}: expected a number in {interval}, received {value!r}")
        if not 0.0 <= initial_level <= 1.0:
            raise ValueError(
                f"initial_level: expected a number in [0, 1], received {initial_level!r}"
            )
        self.holdout, self.beta, self.alpha = float(holdout), float(beta), float(alpha)
        self.gain, self.z = check_non_negative("gain", gain), check_non_negative("z", z)
        self.probe_level = float(probe_level)
        self.initial_level = float(initial_level)
        self.layers: dict[str, Relaxed] = {}
        self._probe: tuple[Any, Tensor] | None = None
        self._projectors: dict[str, tuple[EquivariantProjector, EquivariantProjector] | None] = {}
        self.steps = 0
        self.probes = 0
        self.mean = torch.zeros(0, dtype=torch.float64)
        self.error = torch.zeros(0, dtype=torch.float64)
        self._latest: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ set-up

    def attach(self, model: nn.Module, **context: Any) -> nn.Module:
        """Bound every free branch (unit Frobenius norm), make the levels buffers owned by the
        rule and set them to ``initial_level``; ``context`` as in :meth:`Strategy.attach`."""
        self.layers = dict(require_relaxed("RECM", model))
        for name, layer in self.layers.items():
            missing = [a for a in ("action_in", "action_out") if not hasattr(layer, a)]
            if missing:
                raise ValueError(
                    f"model: RECM needs action_in and action_out on every relaxed layer to "
                    f"average its free branch over the group; layer {name!r} "
                    f"({type(layer.equivariant).__name__}) has no {' or '.join(missing)}"
                )
            if layer.level_is_learnable:
                layer.set_level_learnable(False)
            if layer.norm_bound is None:
                layer.configure_free(norm_bound="frobenius")
            self._projectors[name] = _exact_projectors(layer)
        model = super().attach(model, **context)
        set_levels(model, self.initial_level)
        count = len(self.layers)
        if self.mean.numel() != count:  # a restored state keeps its moments
            self.mean = torch.zeros(count, dtype=torch.float64)
            self.error = torch.zeros(count, dtype=torch.float64)
        return model

    def split_training_data(self, inputs: Any, targets: Tensor) -> tuple[Any, Tensor]:
        """Keep a seeded random share ``holdout`` (at least one sample) as the probe set and
        return the rest for training."""
        count = batch_size(inputs)
        kept = max(1, round(self.holdout * count))
        if kept >= count:
            raise ValueError(
                f"inputs: RECM holds out {kept} of {count} training samples for its probes; "
                "expected more training samples or a smaller holdout"
            )
        order = torch.randperm(count, generator=self.generator).to(targets.device)
        self.use_held_out_data(index(inputs, order[:kept]), targets[order[:kept]])
        rest = order[kept:]
        return index(inputs, rest), targets[rest]

    def use_held_out_data(self, inputs: Any, targets: Tensor) -> None:
        """Probe on ``(inputs, targets)``, samples kept out of training (on the model's
        device), in place of :meth:`split_training_data`'s share ``holdout``."""
        if not isinstance(targets, Tensor) or not targets.ndim:
            raise TypeError(f"targets: expected a tensor of samples, received {targets!r}")
        count = batch_size(inputs)
        if count == 0 or count != targets.shape[0]:
            raise ValueError(
                f"inputs: expected at least one held-out sample with one target each, received "
                f"{count} inputs and {targets.shape[0]} targets"
            )
        self._probe = (inputs, targets)

    # ------------------------------------------------------------------ the rule

    def after_step(self) -> None:
        """Every ``every`` steps: probe, update the moments and move the levels."""
        self.steps += 1
        if self.steps % self.every == 0:
            self.update(*self.benefits())

    @torch.no_grad()
    def benefits(self) -> tuple[Tensor, Tensor]:
        """``(r_i, s_i^2)`` for every relaxed layer on a fresh probe batch: the mean benefit
        per unit level and its squared standard error (see the module docstring)."""
        if self.model is None:
            raise RuntimeError("recm: call attach(model) before training")
        if self._probe is None:
            raise RuntimeError(
                "recm: no probe set; call split_training_data(inputs, targets) after attach "
                "(equirelax.train does) and train on what it returns, or give held-out samples "
                "to use_held_out_data(inputs, targets)"
            )
        loss_fn = self.loss_fn or mean_squared_error
        # the probe set follows the model if it was moved or cast since it was held out
        level = next(iter(self.layers.values())).level
        inputs, targets = self._probe = (
            to_like(self._probe[0], level),
            to_like(self._probe[1], level),
        )
        rows = torch.randperm(batch_size(inputs), generator=self.generator)[: self.probe_size]
        rows = rows.to(targets.device)
        x, y = index(inputs, rows), targets[rows]
        model = self.model
        levels = [float(layer.level) for layer in self.layers.values()]
        probes = [max(level, self.probe_level) for level in levels]
        # copy 0: the model as it is; copy 2i + 1: layer i's asymmetric part removed;
        # copy 2i + 2: layer i's asymmetric part at its probe level. One batched forward pass.
        shifts = [(2 * i + 1, 2 * i + 2, -level, probe - level)
                  for i, (level, probe) in enumerate(zip(levels, probes, strict=True))]  # fmt: skip
        copies, count = 1 + 2 * len(self.layers), batch_size(x)
        handles = [
            layer.register_forward_hook(
                self._shift_hook(name, layer, count, *shift), with_kwargs=True
            )
            for (name, layer), shift in zip(self.layers.items(), shifts, strict=True)
        ]
        was_training = model.training
        model.eval()
        try:
            outputs = call(model, repeat(x, copies))
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
        losses = per_sample_loss(loss_fn, outputs, repeat(y, copies)).reshape(copies, count)
        scale = _target_scale(loss_fn, y) or float(losses[0].mean())
        removed, kept = losses[1::2].double(), losses[2::2].double()
        rates = torch.tensor(probes, dtype=torch.float64, device=removed.device).unsqueeze(1)
        r = (removed - kept) / (rates * max(scale, 1e-30))
        errors = r.var(dim=1) / count if count > 1 else torch.zeros_like(r[:, 0])
        return r.mean(dim=1).cpu(), errors.cpu()

    def _shift_hook(
        self, name: str, layer: Relaxed, count: int, first: int, second: int,
        first_shift: float, second_shift: float,
    ) -> Callable[..., Any]:  # fmt: skip
        """A forward hook adding ``shift * a`` to the rows of copies ``first`` and ``second``
        (adjacent) of the layer's output, ``a`` computed from those rows' own inputs."""

        def hook(_module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            total = batch_size(args[0] if len(args) == 1 else tuple(args))
            rows = torch.arange(first * count, (second + 1) * count, device=_device(output))
            mine = tuple(index(args, rows)) if len(args) > 1 else (args[0][rows],)
            fixed = {k: _rows(v, rows, total) for k, v in kwargs.items()}
            asym = self._asymmetric_part(name, layer, mine, fixed)
            weights = torch.cat(
                [torch.full((count,), first_shift), torch.full((count,), second_shift)]
            )
            return _add_rows(output, rows, asym, weights)

        return hook

    @torch.no_grad()
    def update(self, benefit: Tensor, error: Tensor) -> None:
        """One step of the recurrent rule from the benefits ``r`` and their squared standard
        errors ``s^2`` (one per layer)."""
        benefit, error = benefit.to(torch.float64), error.to(torch.float64)
        for name, value in (("benefit", benefit), ("error", error)):
            if value.shape != self.mean.shape or not torch.isfinite(value).all():
                raise ValueError(
                    f"{name}: expected {tuple(self.mean.shape)} finite values, received "
                    f"{value.tolist()}"
                )
        self.probes += 1
        self.mean.mul_(1 - self.beta).add_(self.beta * benefit)
        self.error.mul_(1 - self.beta).add_(self.beta * error)
        _, bound = self.statistics()
        target = (self.gain * bound.clamp_min(0.0)).clamp_max(1.0)
        for i, layer in enumerate(self.layers.values()):
            new = (1 - self.alpha) * float(layer.level) + self.alpha * float(target[i])
            layer.level.fill_(min(1.0, max(0.0, new)))
        self._latest = {
            "benefits": benefit.tolist(),
            "benefit_lower_bounds": bound.tolist(),
            "targets": target.tolist(),
            "gap_estimates": self.gap_estimates(),
        }

    def statistics(self) -> tuple[Tensor, Tensor]:
        """Bias-corrected mean benefit ``m`` and its lower confidence bound ``m - z sqrt(q)``."""
        if self.probes == 0:
            zero = torch.zeros_like(self.mean)
            return zero, zero
        correction = 1 - (1 - self.beta) ** self.probes
        mean = self.mean / correction
        return mean, mean - self.z * torch.sqrt(self.error / correction)

    def gap_estimates(self) -> list[float]:
        """``g_i = l_i max(m_i, 0)``: the share of the target scale each layer's asymmetry
        removes on held-out data at its current level."""
        mean, _ = self.statistics()
        return [
            float(layer.level) * max(float(m), 0.0)
            for layer, m in zip(self.layers.values(), mean, strict=True)
        ]

    # ------------------------------------------------------------------ the Haar projection

    def _asymmetric_part(
        self, name: str, layer: Relaxed, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``a = u(h) - P_G u(h)`` of the layer's free branch on its recorded input."""
        free = layer.free
        assert free is not None
        projectors = self._projectors[name]
        u = free(*args, **kwargs)
        if projectors is not None:
            weight, bias = projectors
            linear = free.linear  # type: ignore[union-attr]
            averaged = nn.functional.linear(args[0], weight(linear.weight))
            if linear.bias is not None:
                averaged = averaged + bias(linear.bias.unsqueeze(-1)).squeeze(-1)
            return u - averaged
        x = args[0] if len(args) == 1 else tuple(args)
        elements = haar_elements(
            layer.action_in.group,
            self.num_elements,
            self.generator,
            device=parts(x)[0].device,
            dtype=parts(x)[0].dtype,
        )
        averaged = group_average(
            free, x, layer.action_in, layer.action_out, elements=elements, kwargs=kwargs
        )
        return combine(u, averaged, -1.0)

    # ------------------------------------------------------------------ bookkeeping

    def log(self) -> dict[str, Any]:
        """Levels, the latest benefits, their lower bounds, the targets and gap estimates."""
        if self.model is None:
            return {}
        return {**super().log(), **self._latest}

    def state_dict(self) -> dict[str, Any]:
        """The generator, the step and probe counts and the moving moments."""
        return {
            **super().state_dict(),
            "steps": self.steps,
            "probes": self.probes,
            "mean": self.mean.clone(),
            "error": self.error.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (the levels live in the model's state)."""
        super().load_state_dict(state)
        self.steps, self.probes = int(state["steps"]), int(state["probes"])
        self.mean, self.error = state["mean"].clone(), state["error"].clone()

    def __repr__(self) -> str:
        return (
            f"RECM(every={self.every}, probe_size={self.probe_size}, holdout={self.holdout}, "
            f"gain={self.gain}, z={self.z})"
        )


# ---------------------------------------------------------------------- helpers


def _exact_projectors(layer: Relaxed) -> tuple[EquivariantProjector, EquivariantProjector] | None:
    """Projectors of a dense free branch's weight and bias onto the equivariant maps, when the
    layer states its representations (then ``P_G u`` is exact); else ``None``."""
    rep_in = getattr(layer.equivariant, "representation_in", None)
    rep_out = getattr(layer.equivariant, "representation_out", None)
    if not isinstance(layer.free, DenseFreeBranch) or rep_in is None or rep_out is None:
        return None
    if layer.free.in_shape != (rep_in.dim,) or layer.free.out_shape != (rep_out.dim,):
        return None
    trivial = rep_out.group.trivial_representation()
    return EquivariantProjector(rep_in, rep_out), EquivariantProjector(trivial, rep_out)


def _target_scale(loss_fn: Callable[[Any, Tensor], Tensor], targets: Tensor) -> float | None:
    """The loss of predicting the mean target (the variance for the MSE); ``None`` when
    the targets are not floating point (then the probe's own loss is the scale)."""
    if not targets.is_floating_point() or targets.shape[0] < 2:
        return None
    value = float(loss_fn(targets.mean(dim=0, keepdim=True).expand_as(targets), targets))
    return value if math.isfinite(value) and value > 0 else None


def _device(output: Any) -> torch.device:
    return parts(output)[0].device


def _rows(value: Any, rows: Tensor, total: int) -> Any:
    """The ``rows`` of a per-sample keyword tensor (leading size ``total``); others as they are."""
    if isinstance(value, Tensor) and value.ndim and value.shape[0] == total:
        return value[rows]
    return value


def _add_rows(output: Any, rows: Tensor, asym: Any, weights: Tensor) -> Any:
    """``output`` with ``weights[j] * asym[j]`` added to row ``rows[j]`` (tensors or tuples)."""
    if isinstance(output, (tuple, list)):
        return type(output)(
            _add_rows(o, rows, a, weights) for o, a in zip(output, asym, strict=True)
        )
    scale = weights.to(device=output.device, dtype=output.dtype)
    scale = scale.reshape(-1, *([1] * (output.ndim - 1)))
    return output.index_add(0, rows, scale * asym)
