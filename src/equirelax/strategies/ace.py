"""ACE: adaptive constrained equivariance (Manolache, Chamon, Niepert, NeurIPS 2025,
arXiv 2505.13631), built on ``cooper-optim``.

Every relaxed layer ``i`` gets its own learnable level ``gamma_i`` (initialised at 1, so the
model starts non-equivariant). Training solves a constrained problem:

* ``equality``:   ``min loss  s.t.  gamma_i = 0``;
  Lagrangian ``loss + sum_i lambda_i gamma_i``, ``lambda_i`` free in sign.
* ``inequality``: ``min loss  s.t.  |gamma_i| <= epsilon``, ``lambda_i >= 0``.
* ``resilient``:  ``min loss + rho/2 ||u||^2  s.t.  |gamma_i| <= u_i`` with learned slacks
  ``u_i >= 0``, ``lambda_i >= 0``; stationarity in ``u`` gives ``u_i = lambda_i / rho`` at the
  optimum, so a layer whose relaxation pays for itself keeps ``gamma_i != 0`` (partial symmetry).

Step rules, as the official code (github.com/andreimano/ACE):

* ``level_rule="optimizer"`` (default): ``gamma_i`` (and the resilient slacks ``u_i``) are
  primal parameters of the model, stepped by the training loop's own optimiser (the engine's
  Adam at the primal learning rate, with its gradient clipping) on the primal Lagrangian
  returned by :meth:`ACE.loss`. Adam bounds each step of ``gamma_i`` by about the learning
  rate whatever ``dJ/dgamma_i`` is.
* the multipliers are stepped in :meth:`ACE.after_step` by a dual optimiser fed
  ``grad = -violation`` (gradient ascent): Adam at ``dual_lr = 8e-4`` by default (the N-body
  setting of the official code), SGD or cooper's nuPI selectable; equality multipliers are
  free in sign, inequality and resilient ones projected onto ``lambda >= 0``. ``update``
  chooses the violation before (``"simultaneous"``) or after (``"alternating"``) the primal step.
* ``level_rule="gradient"`` keeps equirelax's earlier rule: levels are buffers stepped by plain
  gradient descent at ``level_lr`` inside :meth:`ACE.after_step`. It is not the published
  method: measured here, its unbounded step diverged when ``dL/dgamma`` spiked (E-MLP on
  inertia, N = 1000: a non-finite loss in 3 of 3 seeds within 14 steps; EGNN on N-body, seed 2,
  epoch 4: ``dL/dgamma ~ 2e6`` moved ``gamma`` by ``~2e4``), while Adam-stepped levels gave 0 of 3.

Length of training: the official rule moves each ``gamma_i`` by about the primal learning rate
per step and each multiplier by about ``dual_lr``, so it is made for the papers' long runs
(N-body: 2000 epochs of 30 steps). Measured on the toy task of ``tests/test_ace.py`` (Adam 3e-3,
cosine decay), the equality game at the class defaults has not settled after 1500 steps (levels
0.77 and 0.89) nor after 6000 (0.06 and -0.15; with a constant learning rate the levels swing
through 0 to -2.4), while the gradient-descent rule with a nuPI dual (``dual_lr=0.05``,
``kp=5``, ``level_lr=0.1``) drives them below 1e-3 within 1500 steps. Short runs (the quick
presets, the examples) therefore select that rule; the class defaults stay the published one.

Departures from the official code: cooper's ``roll()`` owns the primal optimiser, which here
belongs to the training loop (the engine's clipping, learning-rate schedule and data
parallelism apply to every primal parameter alike), so ACE builds cooper's constrained
problem and multipliers and steps only the dual side itself. The free branch is the relaxed
layer's own (a dense map for SEGNN, where the official code uses a 3-layer GELU MLP); it is
not norm-bounded by default, as the official N-body code, and ``norm_bound="spectral"`` or
``"frobenius"`` gives the bounded branch the paper's error bound assumes. Under data
parallelism the level gradients are averaged like every parameter's, and the multipliers,
computed from the replicated levels, stay identical on every rank without communication.

Moves and casts: the multipliers, the slacks and the dual optimiser's state follow the levels.
When the model is moved or cast after :meth:`ACE.attach` (``.to(device)``, ``.double()``,
``.half()``), the next :meth:`ACE.loss` (or :meth:`ACE.parameters`) moves them to the levels'
device and dtype as ``Module.to`` moves parameters: in place wherever PyTorch moves a
parameter in place, so a primal optimiser holding the slacks keeps holding them. Deep-copy or
pickle the strategy together with its model (``copy.deepcopy((model, strategy))``) to continue
training the copy.
"""

from __future__ import annotations

from typing import Any, ClassVar

import cooper
import torch
import torch.distributed as dist
from torch import Tensor, nn

from equirelax._checks import (
    check_choice,
    check_finite_number,
    check_non_negative,
    check_positive_finite,
)
from equirelax.relaxed import Relaxed
from equirelax.strategies.base import Strategy, require_relaxed

__all__ = ["ACE"]

_MODES = ("equality", "inequality", "resilient")
_UPDATES = ("simultaneous", "alternating")
_DUAL_OPTIMIZERS = ("adam", "sgd", "nupi")
_LEVEL_RULES = ("optimizer", "gradient")


class _LevelConstraints(cooper.ConstrainedMinimizationProblem):
    """One constraint per relaxed layer on its level ``gamma_i`` (see the module docstring)."""

    def __init__(self, mode: str, count: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        kind = (
            cooper.ConstraintType.EQUALITY
            if mode == "equality"
            else cooper.ConstraintType.INEQUALITY
        )
        multiplier = cooper.multipliers.DenseMultiplier(
            num_constraints=count, dtype=dtype, device=device
        )
        self.levels = cooper.Constraint(
            constraint_type=kind,
            formulation_type=cooper.formulations.Lagrangian,
            multiplier=multiplier,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        # cooper's __getattr__ reads self._constraints, which an object being unpickled or
        # deep-copied does not have yet: without this method, copying recursed without end
        self.__dict__.update(state)

    def compute_cmp_state(self, loss: Tensor | None, violation: Tensor) -> cooper.CMPState:
        return cooper.CMPState(
            loss=loss,
            observed_constraints={self.levels: cooper.ConstraintState(violation=violation)},
        )


class ACE(Strategy):
    """Adaptive constrained equivariance (see the module docstring for the problem solved).

    Parameters
    ----------
    mode:
        ``"equality"`` (data believed symmetric; the model is projected at the end),
        ``"inequality"`` (``|gamma_i| <= epsilon``) or ``"resilient"`` (learned slacks with
        cost ``rho/2 ||u||^2``). The last two are evaluated as trained.
    epsilon:
        Tolerance of the inequality mode.
    rho:
        Slack cost of the resilient mode.
    dual_lr:
        Dual step size (the official N-body setting, 8e-4, with primal Adam at 9e-4).
    dual_optimizer:
        ``"adam"`` (default, as the official SEGNN, SchNet and EGNO runs), ``"sgd"`` (plain
        gradient ascent, as its VN-DGCNN runs) or ``"nupi"`` (cooper's nuPI controller, ``kp``).
    kp:
        nuPI's proportional gain.
    level_rule:
        ``"optimizer"`` (default: levels and slacks are parameters stepped by the training
        loop's optimiser) or ``"gradient"`` (equirelax's earlier rule: gradient descent at
        ``level_lr`` in :meth:`after_step`; see the module docstring for why it is not the
        default).
    level_lr:
        Step size of the ``"gradient"`` level rule (unused otherwise).
    update:
        ``"simultaneous"`` (dual step from the violation before the primal step) or
        ``"alternating"`` (after it).
    norm_bound:
        ``None`` (default, as the official N-body code), ``"spectral"`` or ``"frobenius"``:
        how free branches are bounded; a layer already bounded keeps its bound.
    initial_level:
        Start value of every ``gamma_i``.
    """

    name: ClassVar[str] = "ace"

    def __init__(
        self,
        mode: str = "equality",
        *,
        epsilon: float = 0.01,
        rho: float = 1.0,
        dual_lr: float = 8e-4,
        dual_optimizer: str = "adam",
        kp: float = 1.0,
        level_rule: str = "optimizer",
        level_lr: float = 1e-2,
        update: str = "simultaneous",
        norm_bound: str | None = None,
        initial_level: float = 1.0,
    ) -> None:
        super().__init__()
        check_choice("mode", mode, _MODES)
        check_choice("update", update, _UPDATES)
        check_choice("dual_optimizer", dual_optimizer, _DUAL_OPTIMIZERS)
        check_choice("level_rule", level_rule, _LEVEL_RULES)
        check_choice("norm_bound", norm_bound, (None, "spectral", "frobenius"))
        for name, value in (
            ("epsilon", epsilon),
            ("rho", rho),
            ("dual_lr", dual_lr),
            ("level_lr", level_lr),
        ):
            check_positive_finite(name, value)
        check_non_negative("kp", kp)
        check_finite_number("initial_level", initial_level)
        self.mode, self.update, self.dual_optimizer_name = mode, update, dual_optimizer
        self.level_rule = level_rule
        self.epsilon, self.rho, self.kp = float(epsilon), float(rho), float(kp)
        self.dual_lr, self.level_lr = float(dual_lr), float(level_lr)
        self.norm_bound, self.initial_level = norm_bound, float(initial_level)
        self.layers: list[Relaxed] = []
        self.slacks: nn.Parameter | None = None
        self.problem: _LevelConstraints | None = None
        self.dual_optimizer: torch.optim.Optimizer | None = None
        self._pending: cooper.CMPState | None = None

    @property
    def projects(self) -> bool:  # type: ignore[override]
        """Equality mode ends exactly equivariant by projection; the others keep relaxation."""
        return self.mode == "equality"

    def attach(self, model: nn.Module, **context: Any) -> nn.Module:
        layers = require_relaxed("ACE", model)
        model = super().attach(model, **context)
        self.layers = list(layers.values())
        learnable = self.level_rule == "optimizer"
        for layer in self.layers:
            if layer.norm_bound is None and self.norm_bound is not None:
                layer.configure_free(norm_bound=self.norm_bound)
            if layer.level_is_learnable != learnable:
                layer.set_level_learnable(learnable)
            with torch.no_grad():
                layer.level.fill_(self.initial_level)
            layer.level.requires_grad_(True)
        reference = self.layers[0].level
        count = len(self.layers)
        self.problem = _LevelConstraints(self.mode, count, reference.dtype, reference.device)
        if self.mode == "resilient":
            self.slacks = nn.Parameter(
                torch.zeros(count, dtype=reference.dtype, device=reference.device)
            )
        self.dual_optimizer = self._make_dual_optimizer(self.problem)
        return model

    def _make_dual_optimizer(self, problem: _LevelConstraints) -> torch.optim.Optimizer:
        duals = list(problem.dual_parameters())
        if self.dual_optimizer_name == "nupi":
            return cooper.optim.nuPI(duals, lr=self.dual_lr, Kp=self.kp, maximize=True)
        if self.dual_optimizer_name == "adam":
            return torch.optim.Adam(duals, lr=self.dual_lr, maximize=True)
        return torch.optim.SGD(duals, lr=self.dual_lr, maximize=True)

    def parameters(self) -> list[nn.Parameter]:
        """The resilient slacks, stepped by the training loop's optimiser under the
        ``"optimizer"`` level rule (the levels are model parameters already); on the levels'
        device and in their dtype."""
        if self.slacks is None or self.level_rule != "optimizer":
            return []
        self._follow_levels()
        return [self.slacks]

    def _follow_levels(self) -> None:
        """Move the multipliers, the slacks and the dual optimiser's state to the levels'
        device and dtype if the model was moved or cast since :meth:`attach` (as
        ``Module.to`` moves parameters: in place where PyTorch can, so that an optimiser
        holding the slacks keeps them)."""
        problem, level = self._require_attached(), self.layers[0].level
        owned = [*problem.dual_parameters(), *([self.slacks] if self.slacks is not None else [])]
        if all(p.device == level.device and p.dtype == level.dtype for p in owned):
            return
        assert self.dual_optimizer is not None
        state = self.dual_optimizer.state_dict()
        problem.to(device=level.device, dtype=level.dtype)  # cooper moves the multipliers
        if self.slacks is not None:
            moved = nn.ParameterList([self.slacks]).to(device=level.device, dtype=level.dtype)
            self.slacks = moved[0]
        self.dual_optimizer = self._make_dual_optimizer(problem)
        # torch casts a loaded optimiser state to the device and dtype of its parameters
        self.dual_optimizer.load_state_dict(state)

    def _levels(self) -> Tensor:
        return torch.stack([layer.level for layer in self.layers])

    def _violation(self) -> Tensor:
        gamma = self._levels()
        if self.mode == "equality":
            return gamma
        if self.mode == "inequality":
            return gamma.abs() - self.epsilon
        assert self.slacks is not None
        return gamma.abs() - self.slacks

    def _require_attached(self) -> _LevelConstraints:
        if self.problem is None:
            raise RuntimeError("ACE: call attach(model) before training")
        return self.problem

    def loss(self, task_loss: Tensor, model: nn.Module, inputs: Any, outputs: Any) -> Tensor:
        """The primal Lagrangian ``loss (+ rho/2 ||u||^2) + sum_i lambda_i g_i(gamma)`` (the
        multipliers and slacks first follow the levels' device and dtype)."""
        problem = self._require_attached()
        self._follow_levels()
        objective = task_loss
        if self.slacks is not None:
            objective = objective + 0.5 * self.rho * self.slacks.pow(2).sum()
        state = problem.compute_cmp_state(objective, self._violation())
        self._pending = state
        return state.compute_primal_lagrangian().lagrangian

    def after_step(self) -> None:
        """Step the multipliers (ascent, projected to ``lambda >= 0`` for inequalities) from
        the violation before or after the primal step (``update``); keep the slacks
        ``u >= 0``; under the ``"gradient"`` level rule, step the levels and slacks first."""
        problem = self._require_attached()
        state = self._pending
        if state is None:
            raise RuntimeError("ACE: after_step() called without a loss() call before it")
        self._pending = None
        if self.level_rule == "gradient":
            self._step_constraint_variables()
        if self.slacks is not None:
            with torch.no_grad():
                self.slacks.clamp_(min=0.0)
        if self.update == "alternating":
            with torch.no_grad():
                state = problem.compute_cmp_state(None, self._violation())
        assert self.dual_optimizer is not None
        self.dual_optimizer.zero_grad()
        state.compute_dual_lagrangian().backward()
        self.dual_optimizer.step()
        for multiplier in problem.multipliers():
            multiplier.post_step_()

    @torch.no_grad()
    def _step_constraint_variables(self) -> None:
        """The ``"gradient"`` level rule: gradient descent on the levels (gradients
        all-reduced across ranks) and slacks."""
        grads = torch.stack(
            [
                torch.zeros_like(layer.level) if layer.level.grad is None else layer.level.grad
                for layer in self.layers
            ]
        )
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(grads)
            grads /= dist.get_world_size()
        for layer, grad in zip(self.layers, grads, strict=True):
            layer.level.sub_(self.level_lr * grad)
            layer.level.grad = None
        if self.slacks is not None and self.slacks.grad is not None:
            self.slacks.sub_(self.level_lr * self.slacks.grad)
            self.slacks.grad = None

    def multipliers(self) -> Tensor:
        """The current multipliers ``lambda_i``, one per relaxed layer."""
        return self._require_attached().levels.multiplier.weight.detach().clone()

    def log(self) -> dict[str, Any]:
        if self.problem is None:
            return {}
        out = {**super().log(), "multipliers": self.multipliers().tolist()}
        if self.slacks is not None:
            out["slacks"] = self.slacks.detach().tolist()
        return out

    def relaxed_layer_names(self, threshold: float = 1e-3) -> list[str]:
        """Names of the layers that kept relaxation, ``|gamma_i| > threshold`` (resilient)."""
        assert self.model is not None
        names = {id(m): n for n, m in self.model.named_modules()}
        kept = [layer for layer in self.layers if abs(float(layer.level.detach())) > threshold]
        return [names[id(layer)] for layer in kept]

    def state_dict(self) -> dict[str, Any]:
        problem = self._require_attached()
        assert self.dual_optimizer is not None
        state = {
            **super().state_dict(),
            "problem": problem.state_dict(),
            # only the per-multiplier state: the hyperparameters come from the constructor, and
            # nuPI's param groups hold an enum that torch.load(weights_only=True) refuses
            "dual_optimizer": self.dual_optimizer.state_dict()["state"],
        }
        if self.slacks is not None:
            state["slacks"] = self.slacks.detach().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        problem = self._require_attached()
        assert self.dual_optimizer is not None
        super().load_state_dict(state)
        problem.load_state_dict(state["problem"])
        groups = self.dual_optimizer.state_dict()["param_groups"]
        self.dual_optimizer.load_state_dict(
            {"state": state["dual_optimizer"], "param_groups": groups}
        )
        if self.slacks is not None:
            with torch.no_grad():
                self.slacks.copy_(state["slacks"])

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave out the step in flight (the graph of the last
        :meth:`loss`, which only :meth:`after_step` uses)."""
        return {**self.__dict__, "_pending": None}

    def __repr__(self) -> str:
        return (
            f"ACE(mode={self.mode!r}, update={self.update!r}, dual={self.dual_optimizer_name!r}, "
            f"level_rule={self.level_rule!r})"
        )
