"""The strategy interface: how relaxation levels move during training.

A :class:`Strategy` plugs into any training loop through a handful of calls::

    model = strategy.attach(model, action_in=..., action_out=..., epochs=E, loss_fn=loss_fn)
    train_inputs, train_targets = strategy.split_training_data(train_inputs, train_targets)
    optimiser = torch.optim.Adam([*model.parameters(), *strategy.parameters()], lr=1e-3)
    for epoch in range(E):
        strategy.on_epoch_start(epoch)
        for inputs, targets in batches:
            inputs, targets = strategy.transform_batch(inputs, targets)
            outputs = model(inputs)
            objective = strategy.loss(loss_fn(outputs, targets), model, inputs, outputs)
            optimiser.zero_grad()
            objective.backward()
            optimiser.step()
            strategy.after_step()
        strategy.on_epoch_end(epoch)
    final = strategy.evaluation_model(model)

``attach`` must come before the optimiser is built: it may turn levels into parameters
(ACE) or add parameters of its own (ACE's slacks, returned by :meth:`Strategy.parameters`).
``split_training_data`` lets a strategy keep part of the training data for itself (RECM's
held-out probe set); the default keeps everything for training. A loop that cannot split its
data (a ``DataLoader`` built beforehand) gives such a strategy
(:attr:`Strategy.holds_out_data`) held-out samples with ``use_held_out_data`` instead.
:func:`training_objective` is the batch part of the loop above (transform, forward, loss,
strategy terms), shared by :func:`equirelax.train` and the Lightning integration.
Every hook has a do-nothing default, so a strategy overrides only what it changes.

Moves and casts after ``attach``: the model may be moved or cast at any time
(``model.to(device)``, ``.double()``, ``.half()``) with no call on the strategy. What a strategy
keeps in the model (levels, free branches and their norm bounds) moves with it; what it keeps
itself follows the model at the next step (ACE's multipliers, slacks and dual optimiser state
follow the levels in :meth:`~equirelax.strategies.ACE.loss`; RECM's held-out probe set follows
them at its next probe). A strategy refers to the model it was attached to, so deep-copy or
pickle the two together (``copy.deepcopy((model, strategy))``,
``torch.save((model, strategy), path)``) to continue training a copy; trained levels stay leaf
tensors (parameters stay the same ``nn.Parameter``) through every cast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from equirelax._batches import call
from equirelax.actions import Action, ActionLike, as_action, check_action_pair
from equirelax.outputs import split_output
from equirelax.projection import project
from equirelax.relaxed import Relaxed, relaxed_layers

__all__ = [
    "Strategy",
    "levels",
    "require_actions",
    "require_relaxed",
    "set_levels",
    "training_objective",
]


class Strategy:
    """Base class of every relaxation strategy (see the module docstring for the loop).

    Subclasses set :attr:`name` (the name the CLI and :func:`equirelax.strategies.get` use),
    :attr:`projects` (whether the model is evaluated after projection, level := 0),
    :attr:`needs_actions` (``attach`` then requires ``action_in``), :attr:`fixed_level`
    (a level ``attach`` gives every relaxed layer, if any) and :attr:`placement` (where its
    method relaxes a model: the ``placement`` of :func:`equirelax.relax`, ``"hidden"`` by
    default, ``"linear"`` for RPP). :attr:`plans_over_epochs` says that its behaviour depends
    on the planned length of training given to ``attach`` (CR's schedule), so that a run cannot
    be continued to more epochs than it planned. :attr:`holds_out_data` says that it keeps
    held-out training samples for itself (RECM's probes): from :meth:`split_training_data`, or
    given by :meth:`use_held_out_data`.
    """

    name: ClassVar[str] = "strategy"
    placement: ClassVar[str] = "hidden"
    projects: ClassVar[bool] = False
    needs_actions: ClassVar[bool] = False
    fixed_level: ClassVar[float | None] = None
    plans_over_epochs: ClassVar[bool] = False
    holds_out_data: ClassVar[bool] = False

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.action_in: Action | None = None
        self.action_out: Action | None = None
        self.epochs: int | None = None
        self.loss_fn: Callable[[Any, Tensor], Tensor] | None = None
        self.generator = torch.Generator()

    def attach(
        self,
        model: nn.Module,
        *,
        action_in: ActionLike | None = None,
        action_out: ActionLike | None = None,
        epochs: int | None = None,
        generator: torch.Generator | None = None,
        loss_fn: Callable[[Any, Tensor], Tensor] | None = None,
    ) -> nn.Module:
        """Prepare ``model`` for this strategy and return the model to train.

        ``action_in`` / ``action_out`` are the task's actions on model inputs and outputs, or
        e3nn irreps for O(3) (:func:`~equirelax.actions.as_action`; needed by strategies that
        move data: augmentation, the equivariance penalty);
        ``epochs`` the planned length of training (needed by schedules); ``generator`` the
        random stream for the strategy's own sampling (seeded by the training engine);
        ``loss_fn`` the task loss ``(outputs, targets) -> scalar`` (needed by strategies that
        evaluate the loss themselves, such as RECM).
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, received {type(model).__name__}")
        action_in = None if action_in is None else as_action(action_in, "action_in")
        action_out = None if action_out is None else as_action(action_out, "action_out")
        if self.needs_actions:
            action_in, action_out = require_actions(self.name, action_in, action_out)
        if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
            raise ValueError(f"epochs: expected a positive integer or None, received {epochs!r}")
        self.model, self.action_in, self.action_out, self.epochs = (
            model,
            action_in,
            action_out,
            epochs,
        )
        if generator is not None:
            self.generator = generator
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn: expected a callable or None, received {loss_fn!r}")
        self.loss_fn = loss_fn
        if self.fixed_level is not None:
            set_levels(model, self.fixed_level)
        return model

    def parameters(self) -> list[nn.Parameter]:
        """Extra primal parameters the optimiser must own (e.g. ACE's slacks)."""
        return []

    def split_training_data(self, inputs: Any, targets: Tensor) -> tuple[Any, Tensor]:
        """Return the part of the training data to train on; a strategy may keep the rest
        for itself (called once, after :meth:`attach`). Default: everything is trained on."""
        return inputs, targets

    def use_held_out_data(self, inputs: Any, targets: Tensor) -> None:
        """Keep ``(inputs, targets)``, samples that are not trained on, for this strategy's own
        use (in place of :meth:`split_training_data`'s share; call it after :meth:`attach`).
        Only a strategy with :attr:`holds_out_data` takes them."""
        raise ValueError(
            f"inputs: {self.name} keeps no held-out data, received held-out samples; give "
            "them only to a strategy that holds out data (holds_out_data: recm)"
        )

    def on_epoch_start(self, epoch: int) -> None:
        """Called before the first step of ``epoch`` (0-based)."""

    def transform_batch(self, inputs: Any, targets: Any) -> tuple[Any, Any]:
        """Return the batch to train on (augmentation moves it; default: unchanged)."""
        return inputs, targets

    def loss(self, task_loss: Tensor, model: nn.Module, inputs: Any, outputs: Any) -> Tensor:
        """The objective to minimise: ``task_loss`` plus this strategy's terms."""
        return task_loss

    def after_step(self) -> None:
        """Called after the primal optimiser's step (dual ascent, level clamps)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after the last step of ``epoch``."""

    def log(self) -> dict[str, Any]:
        """What to log now: levels, penalties, multipliers (plain floats and lists)."""
        if self.model is None:
            return {}
        return {"levels": levels(self.model)}

    def evaluation_model(self, model: nn.Module) -> nn.Module:
        """The model to evaluate: projected (level := 0) if :attr:`projects`, else ``model``."""
        return project(model) if self.projects else model

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (tensors, numbers, strings: safe for
        ``torch.load(weights_only=True)``)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def require_relaxed(strategy: str, model: nn.Module) -> dict[str, Relaxed]:
    """The model's relaxed layers; ``ValueError`` naming the strategy if there are none."""
    layers = relaxed_layers(model)
    if not layers:
        raise ValueError(
            f"model: {strategy} needs Relaxed layers, received a model with none; "
            "wrap it first with equirelax.relax(model)"
        )
    return layers


def require_actions(
    strategy: str, action_in: Action | None, action_out: Action | None
) -> tuple[Action, Action]:
    """``(action_in, action_out)`` with ``action_out`` defaulting to the trivial action
    (invariant targets); errors name the missing or mismatched action."""
    if action_in is None:
        raise ValueError(
            f"action_in: {strategy} needs the action on model inputs, received None; "
            f"pass attach(model, action_in=..., action_out=...)"
        )
    return action_in, check_action_pair(action_in, action_out)


def levels(model: nn.Module) -> list[float]:
    """Every relaxed layer's level, in module order: a :class:`~equirelax.Relaxed` layer's
    ``level``, and for a layer relaxed by construction (one with ``to_equivariant()``, e.g.
    :class:`~equirelax.nn.RelaxedGroupConv2d`) its deviation from equivariance ``level()``."""
    out = []
    for module in model.modules():
        if isinstance(module, Relaxed):
            out.append(float(module.level.detach()))
        elif callable(getattr(module, "to_equivariant", None)) and callable(
            getattr(module, "level", None)
        ):
            out.append(float(module.level().detach()))
    return out


@torch.no_grad()
def set_levels(model: nn.Module, value: float) -> None:
    """Set the level of every relaxed layer of ``model`` to ``value``."""
    for layer in relaxed_layers(model).values():
        layer.level.fill_(value)


def training_objective(
    strategy: Strategy,
    model: nn.Module,
    inputs: Any,
    targets: Tensor,
    loss_fn: Callable[[Any, Tensor], Tensor],
    *,
    forward: Callable[..., Any] | None = None,
    share: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """``(task_loss, objective)`` of one training batch, as every loop steps a strategy.

    The batch is moved by ``strategy.transform_batch``, run through ``forward`` (default:
    ``model``; the engine passes its data-parallel or compiled wrapper), and scored by
    ``loss_fn(outputs, targets) * share``; the objective is ``strategy.loss`` of that loss
    plus ``share`` times the penalty a :class:`~equirelax.outputs.Penalized` output carries.
    ``share`` is this process's part of a batch split across processes (1 otherwise).

    Examples
    --------
    >>> from equirelax.strategies import Free
    >>> task_loss, objective = training_objective(
    ...     Free(), nn.Linear(3, 1), torch.ones(4, 3), torch.zeros(4, 1), nn.functional.mse_loss
    ... )
    >>> bool(task_loss == objective)
    True
    """
    inputs, targets = strategy.transform_batch(inputs, targets)
    outputs, penalty = split_output(call(model if forward is None else forward, inputs))
    task_loss = loss_fn(outputs, targets) * share
    objective = strategy.loss(task_loss, model, inputs, outputs)
    if penalty is not None:
        objective = objective + penalty * share
    return task_loss, objective
