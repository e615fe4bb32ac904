"""CR: scheduled constraint relaxation (Pertigkiozoglou et al., NeurIPS 2024, arXiv 2408.13242).

Every relaxed layer ``y_i = f_eq,i(x) + theta * W_i(x)`` shares one global level ``theta``
that follows a schedule over the ``T`` planned epochs (``e`` = 0-based epoch index)::

    triangular (default):  theta(e) = 2 e / T       for e <= T / 2,   2 - 2 e / T   after
    linear:                theta(e) = 1 - e / T

``theta(e)`` is set at the start of epoch ``e`` and ``theta(T) = 0`` at the end of the last
epoch, so the trained model ends exactly at level 0; it is evaluated projected.

The free branches ``W_i`` are regularised on their *detached* inputs ``x_i`` (recorded by
forward pre-hooks during the training forward pass)::

    penalty = lambda * (sqrt(R_LD) + sqrt(R_N)),        lambda = 0.01 by default
    R_N  = sum_i sum_b || W_i(x_ib) ||^2
    R_LD = sum_i sum_b [ sum_k || L_{A_k} W_i(x_ib) ||^2
                         + sum_h || W_i(h x_ib) - h W_i(x_ib) ||^2 ]

with ``L_A W(x) = d/dt [A_out(exp(-t A)) W(A_in(exp(t A)) x)]_{t=0}
= J_W(x) (dA_in x) - dA_out W(x)`` the Lie derivative along each Lie-algebra basis element
``A_k`` (exact: :func:`equirelax.metrics.lie_derivative`, one batched Jacobian-vector
product), and ``h`` the group's discrete generators (all generators of a finite group; e.g.
``-I`` for O(3)). ``b`` runs over the samples of the batch and the norms over all their
features (every node of every graph): both terms are *sums*, as the official code computes
them. Both terms vanish exactly when ``W_i`` is equivariant on ``x_i`` (the Lie derivative is
taken of the free branch alone with the actions on *its* input and output, not of the whole
layer), neither depends on ``theta``, and the square roots are made safe at 0 (value and
gradient 0 there).

Following the official code (github.com/StefanosPert/Equivariant_Optimization_CR):

* placement: the models' declared hidden sites (N-body SEGNN: the two update maps of each
  message-passing layer);
* free branch: :meth:`CR.attach` re-initialises each branch's output map bias-free with weights
  ``N(0, (1e-4)^2)`` (``free_init_scale``), so training starts at the equivariant model;
* ``rotate_batches=True`` moves every training batch by one random group element shared by
  the batch (the official N-body code rotates every batch; the task presets switch it on);
* the test metric is reported at the best validation epoch (the engine's protocol).

Departures: the official schedule sets ``theta = 2 - 2 e / T`` after the peak too but never
reaches 0 during training (0.002 at its last epoch) and then evaluates at 0; here ``theta(T) =
0`` exactly at the end. The official Lie-derivative term interleaves the blocks of the three
generators (a reshape of ``[X x, Y x, Z x]``); here each generator's derivative is taken on
its own, so that ``R_LD`` is 0 exactly for equivariant ``W_i``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from equirelax._batches import flat, index, parts, sample_per_sample
from equirelax._checks import batch_size, check_bool, check_non_negative
from equirelax.actions import Action, increment_action
from equirelax.groups import Euclidean
from equirelax.metrics import lie_derivative
from equirelax.relaxed import Relaxed
from equirelax.strategies.base import Strategy, require_relaxed, set_levels

__all__ = ["CR", "SCHEDULES"]

Schedule = Callable[[float], float]


def _triangular(epoch: int, epochs: int) -> float:
    return 2 * epoch / epochs if 2 * epoch <= epochs else 2 - 2 * epoch / epochs


def _linear(epoch: int, epochs: int) -> float:
    return 1 - epoch / epochs


SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "triangular": _triangular,
    "linear": _linear,
}
"""Named schedules ``(epoch, epochs) -> theta`` (both are 0 at ``epoch = epochs``)."""


class CR(Strategy):
    """Scheduled constraint relaxation (see the module docstring for the equations).

    Parameters
    ----------
    schedule:
        ``"triangular"`` (default), ``"linear"``, or a callable ``progress -> theta`` with
        ``progress = e / T`` in ``[0, 1]``; a callable must return exactly 0 at progress 1.
    weight:
        ``lambda``, the weight of the regulariser ``sqrt(R_LD) + sqrt(R_N)`` (0 disables it).
    epochs:
        ``T``, the number of training epochs, if ``attach`` is not given ``epochs=``.
    free_init_scale:
        Standard deviation of the free branches' output weights at ``attach`` (bias-free);
        ``None`` keeps the branches as they are.
    rotate_batches:
        Move every training batch by one random element of the task's group (shared by the
        batch), as the official N-body code rotates every batch.

    Notes
    -----
    Every relaxed layer must expose ``action_in`` / ``action_out`` (forwarded from its
    equivariant layer). Each call of a relaxed layer under autograd is recorded and contributes
    to the regulariser of the next :meth:`loss`; the free branch must treat the samples of a
    batch independently (true of every built-in free branch).
    """

    name: ClassVar[str] = "cr"
    projects: ClassVar[bool] = True
    plans_over_epochs: ClassVar[bool] = True

    def __init__(
        self,
        schedule: str | Schedule = "triangular",
        *,
        weight: float = 0.01,
        epochs: int | None = None,
        free_init_scale: float | None = 1e-4,
        rotate_batches: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(schedule, str):
            if schedule not in SCHEDULES:
                raise ValueError(
                    f"schedule: expected one of {sorted(SCHEDULES)} or a callable "
                    f"progress -> theta, received {schedule!r}"
                )
        elif callable(schedule):
            end = float(schedule(1.0))
            if end != 0.0:
                raise ValueError(
                    "schedule: expected a callable with schedule(1.0) == 0 (CR ends at level 0), "
                    f"received schedule(1.0) = {end!r}"
                )
        else:
            raise TypeError(
                f"schedule: expected a schedule name or a callable, received {schedule!r}"
            )
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(f"weight: expected a non-negative number, received {weight!r}")
        if epochs is not None and (
            isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1
        ):
            raise ValueError(f"epochs: expected a positive integer or None, received {epochs!r}")
        if free_init_scale is not None:
            check_non_negative("free_init_scale", free_init_scale)
        self.schedule = schedule
        self.weight = float(weight)
        self.free_init_scale = free_init_scale
        self.rotate_batches = check_bool("rotate_batches", rotate_batches)
        self._epochs_argument = epochs
        self.epoch: int | None = None  # the last epoch whose level was set
        self.layers: dict[str, Relaxed] = {}
        self._handles: list[RemovableHandle] = []
        self._recorders: dict[str, _InputRecorder] = {}
        self._restored_epoch: int | None = None
        self._latest: dict[str, Tensor | float] = {}
        self._warned = False

    # ------------------------------------------------------------------ schedule

    @property
    def schedule_name(self) -> str:
        """The schedule's name (``"callable"`` for a user function)."""
        return self.schedule if isinstance(self.schedule, str) else "callable"

    def theta(self, epoch: int) -> float:
        """The level at the start of ``epoch`` (``epoch = T`` gives the final level, 0)."""
        epochs = self._require_epochs()
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= epochs:
            raise ValueError(f"epoch: expected an integer in [0, {epochs}], received {epoch!r}")
        if epoch == epochs:
            return 0.0
        if isinstance(self.schedule, str):
            return SCHEDULES[self.schedule](epoch, epochs)
        value = float(self.schedule(epoch / epochs))
        if not math.isfinite(value):
            raise ValueError(
                f"schedule: expected finite levels, received {value!r} at epoch {epoch}"
            )
        return value

    def _require_epochs(self) -> int:
        if self.epochs is None:
            raise ValueError(
                "epochs: CR needs the number of training epochs for its schedule, received "
                "None; pass CR(epochs=T) or attach(model, epochs=T)"
            )
        return self.epochs

    def _set_level(self, epoch: int) -> None:
        if self.model is None:
            raise RuntimeError("cr: call attach(model, epochs=...) before training")
        set_levels(self.model, self.theta(epoch))
        self.epoch = epoch

    # ------------------------------------------------------------------ hooks

    def attach(self, model: nn.Module, *, epochs: int | None = None, **context: Any) -> nn.Module:
        """Check the relaxed layers, record their inputs by forward pre-hooks and set
        ``theta(0)``. ``epochs`` (here or in the constructor) is required; ``context`` as in
        :meth:`Strategy.attach`."""
        layers = require_relaxed("CR", model)
        for name, layer in layers.items():
            missing = [a for a in ("action_in", "action_out") if not hasattr(layer, a)]
            if missing:
                raise ValueError(
                    f"model: CR needs action_in and action_out on every relaxed layer for its "
                    f"Lie-derivative regulariser; layer {name!r} "
                    f"({type(layer.equivariant).__name__}) has no {' or '.join(missing)}"
                )
        given = self._epochs_argument
        if epochs is not None and given is not None and epochs != given:
            raise ValueError(
                f"epochs: CR was built with epochs={given}, received epochs={epochs} at attach"
            )
        model = super().attach(model, epochs=epochs if epochs is not None else given, **context)
        self._require_epochs()
        self._remove_hooks()
        self.layers = dict(layers)
        self._recorders = {name: _InputRecorder() for name in layers}
        for name, layer in layers.items():
            if layer.level_is_learnable:
                layer.set_level_learnable(False)  # the schedule owns the level
            if self.free_init_scale is not None:
                layer.configure_free(init="normal", init_scale=self.free_init_scale)
            self._handles.append(
                layer.register_forward_pre_hook(self._recorders[name], with_kwargs=True)
            )
        start, self._restored_epoch = self._restored_epoch or 0, None
        self._set_level(start)
        return model

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def detach(self) -> None:
        """Remove the recording hooks (the model keeps its current levels)."""
        self._remove_hooks()
        self._clear()

    def _clear(self) -> None:
        for recorder in self._recorders.values():
            recorder.calls.clear()

    def on_epoch_start(self, epoch: int) -> None:
        """Set every level to ``theta(epoch)``."""
        epochs = self._require_epochs()
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < epochs:
            raise ValueError(
                f"epoch: expected an integer in [0, {epochs}) (epochs={epochs}), received {epoch!r}"
            )
        self._set_level(epoch)

    def on_epoch_end(self, epoch: int) -> None:
        """After the last epoch (``T - 1``) set every level to ``theta(T) = 0``."""
        if epoch == self._require_epochs() - 1:
            self._set_level(epoch + 1)

    def transform_batch(self, inputs: Any, targets: Any) -> tuple[Any, Any]:
        """With ``rotate_batches``, ``(A_in(g) inputs, A_out(g) targets)`` for one random
        ``g`` shared by the batch; otherwise the batch unchanged."""
        if not self.rotate_batches:
            return inputs, targets
        if self.action_in is None or self.action_out is None:
            raise ValueError(
                "action_in: CR(rotate_batches=True) needs the task's actions, received None; "
                "pass attach(model, action_in=..., action_out=...)"
            )
        g = sample_per_sample(self.action_in.group, index(inputs, torch.arange(1)), self.generator)
        g = g.expand(batch_size(inputs), *g.shape[1:])
        return self.action_in(g, inputs), self.action_out(g, targets)

    def after_step(self) -> None:
        """Drop inputs recorded after the last :meth:`loss` (so memory cannot grow)."""
        self._clear()

    # ------------------------------------------------------------------ regulariser

    def loss(self, task_loss: Tensor, model: nn.Module, inputs: Any, outputs: Any) -> Tensor:
        """``task_loss + lambda * (sqrt(R_LD) + sqrt(R_N))`` on the recorded layer inputs."""
        return task_loss + self.regulariser().to(task_loss)

    def regulariser(self) -> Tensor:
        """``lambda * (sqrt(R_LD) + sqrt(R_N))`` from the inputs recorded since the last call
        (which are then cleared); ``R_LD``, ``R_N`` and the penalty are kept for :meth:`log`."""
        if self.model is None:
            raise RuntimeError("cr: call attach(model, epochs=...) before loss()")
        calls = [(n, call) for n, recorder in self._recorders.items() for call in recorder.calls]
        self._clear()
        if self.weight == 0.0:
            self._latest = {"penalty": 0.0}  # nothing computed
            return torch.zeros(())
        if not calls:
            if not self._warned:
                warnings.warn(
                    "cr: no relaxed-layer inputs were recorded since the last loss(); run the "
                    "model's forward pass with autograd enabled before loss()",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._warned = True
            self._latest = {"r_ld": 0.0, "r_n": 0.0, "penalty": 0.0}
            return torch.zeros(())
        terms = [
            free_branch_terms(
                self.layers[name].free,
                args,
                kwargs,
                self.layers[name].action_in,
                self.layers[name].action_out,
            )
            for name, (args, kwargs) in calls
        ]
        r_ld = torch.stack([ld for ld, _ in terms]).sum()
        r_n = torch.stack([norm for _, norm in terms]).sum()
        penalty = self.weight * (_safe_sqrt(r_ld) + _safe_sqrt(r_n))
        self._latest = {"r_ld": r_ld.detach(), "r_n": r_n.detach(), "penalty": penalty.detach()}
        return penalty

    # ------------------------------------------------------------------ bookkeeping

    def log(self) -> dict[str, Any]:
        """Levels, ``theta`` and the latest ``r_ld``, ``r_n`` and ``penalty`` (floats; with
        ``weight = 0`` nothing is computed and only ``penalty = 0`` is logged)."""
        if self.model is None:
            return {}
        out: dict[str, Any] = {**super().log()}
        if self.epoch is not None:
            out["theta"] = self.theta(self.epoch)
        out.update({key: float(value) for key, value in self._latest.items()})
        return out

    def state_dict(self) -> dict[str, Any]:
        """The generator, the schedule's name, ``epochs`` and the current epoch."""
        return {
            **super().state_dict(),
            "schedule": self.schedule_name,
            "epochs": self.epochs,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output, before or after :meth:`attach`."""
        if state.get("schedule") != self.schedule_name:
            raise ValueError(
                f"state: expected a CR state with schedule {self.schedule_name!r}, received "
                f"{state.get('schedule')!r}"
            )
        epochs, planned = state["epochs"], self.epochs or self._epochs_argument
        if planned is not None and epochs != planned:
            raise ValueError(
                f"state: expected a CR state for epochs={planned}, received epochs={epochs}"
            )
        super().load_state_dict(state)
        self.epochs, self.epoch = epochs, state["epoch"]
        if self.model is None:  # attach() takes epochs and the start epoch from the state
            self._epochs_argument = self._epochs_argument or epochs
            self._restored_epoch = self.epoch
        elif self.epoch is not None:
            self._set_level(self.epoch)

    def __repr__(self) -> str:
        return (
            f"CR(schedule={self.schedule_name!r}, weight={self.weight}, epochs={self.epochs}, "
            f"rotate_batches={self.rotate_batches})"
        )


# ---------------------------------------------------------------------- the two terms


def free_branch_terms(
    free: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    action_in: Action,
    action_out: Action,
) -> tuple[Tensor, Tensor]:
    """``(R_LD, R_N)`` of one free branch ``W`` called as ``W(*args, **kwargs)``.

    ``R_N = sum_b ||W(x_b)||^2``; ``R_LD = sum_b (sum_k ||L_{A_k} W(x_b)||^2 +
    sum_h ||W(h x_b) - h W(x_b)||^2)`` over the Lie-algebra basis ``A_k`` and the discrete
    generators ``h`` of the actions' group. ``x`` is ``args[0]`` or, for several arguments, the
    tuple acted on by a :class:`~equirelax.actions.DirectSumAction`; ``kwargs`` are held fixed.
    ``action_in`` / ``action_out`` are the relaxed layer's; the branch's output is added to the
    layer's, so it transforms as an increment of it (:func:`~equirelax.actions.increment_action`:
    a point part of the output, such as EGNN's coordinates, is a vector part for ``W``).
    A branch with ``affine = True`` (the dense free branches) gets the closed form
    ``L_A W(x) = W(dA_in x) - W(0) - dA_out W(x)`` instead of a Jacobian-vector product; a
    branch with ``translation_invariant = True`` under a Euclidean group (the EGNN branch, which
    sees centroid-relative coordinates) has ``L_A W = 0`` for every translation ``A`` by
    construction, so only the rotation generators are computed; a branch with a
    ``pushforward`` method (the EGNN branch) gives its Jacobian-vector products in closed form.
    """
    action_out = increment_action(action_out)
    x = args[0] if len(args) == 1 else tuple(args)
    y = free(*args, **kwargs)
    r_n = flat(y).pow(2).sum()
    group = action_in.group
    r_ld = r_n.new_zeros(())
    if group.lie_algebra().shape[0]:
        algebra = None
        if isinstance(group, Euclidean) and getattr(free, "translation_invariant", False):
            algebra = group.lie_algebra()[: -group.d]  # rotations; the last d: translations
        derivative = lie_derivative(
            free,
            x,
            action_in,
            action_out,
            algebra=algebra,
            kwargs=kwargs,
            output=y,
            check=False,
            affine=getattr(free, "affine", False),
            pushforward=getattr(free, "pushforward", None),
        )
        r_ld = r_ld + derivative.pow(2).sum()
    generators = group.discrete_generators()
    if generators.shape[0]:
        r_ld = r_ld + _generator_differences(
            free, args, kwargs, y, generators, action_in, action_out
        )
    return r_ld, r_n


def _generator_differences(
    free: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    y: Any,
    generators: Tensor,
    action_in: Action,
    action_out: Action,
) -> Tensor:
    """``sum_h sum_b ||W(h x_b) - h W(x_b)||^2`` over the discrete generators ``h``."""
    x = args[0] if len(args) == 1 else tuple(args)
    total = flat(y).new_zeros(())
    for h in generators.to(parts(x)[0].device).split(1):  # one element for the whole batch
        w_moved = free(*parts(action_in(h, x)), **kwargs)
        total = total + (flat(w_moved) - flat(action_out(h, y))).pow(2).sum()
    return total


# ---------------------------------------------------------------------- small helpers


class _InputRecorder:
    """Forward pre-hook that keeps the detached arguments of each call under autograd.

    A plain object (not a closure), so models holding the hook can still be pickled; copies
    start empty.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        if torch.is_grad_enabled():
            self.calls.append((_detach(args), _detach(kwargs)))

    def __getstate__(self) -> dict[str, Any]:
        return {"calls": []}


def _safe_sqrt(value: Tensor) -> Tensor:
    """``sqrt(value)`` with value and gradient 0 at ``value <= 0`` (no inf/NaN gradient)."""
    positive = value > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, value, 1.0)), 0.0)


def _detach(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detach(v) for v in value)
    if isinstance(value, list):
        return [_detach(v) for v in value]
    if isinstance(value, dict):
        return {key: _detach(v) for key, v in value.items()}
    return value
