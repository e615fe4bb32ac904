"""Any equirelax strategy in a PyTorch Lightning training loop (the ``lightning`` extra).

:class:`RelaxedLightningModule` is a ``LightningModule`` that owns a relaxed model and a
:class:`~equirelax.strategies.Strategy` and makes every call of the strategy interface
(:mod:`equirelax.strategies.base`) at the matching Lightning hook::

    setup                 strategy.attach (before the optimiser; epochs = Trainer.max_epochs)
    on_fit_start          strategy.use_held_out_data (RECM's probes, from probe_dataloader)
    on_train_epoch_start  strategy.on_epoch_start(current_epoch)
    training_step         training_objective: transform_batch, forward, loss, strategy.loss
    optimizer_step        optimiser step, then strategy.after_step (ACE's dual step, RECM)
    on_train_epoch_end    strategy.on_epoch_end(current_epoch); the strategy's log
    validation_step       val_loss of strategy.evaluation_model (projected for CR, ACE-equality)
    on_save_checkpoint    strategy.state_dict() under checkpoint["equirelax_strategy"]
    on_load_checkpoint    strategy.load_state_dict (levels live in the model's state_dict)

so that a run needs no line of its own for the strategy::

    module = RelaxedLightningModule(model, ACE(), mse_loss, action_in=a_in, action_out=a_out)
    lightning.Trainer(max_epochs=50).fit(module, train_loader)

Why a module and not a callback: a Lightning callback sees the batch and the loss but cannot
replace them, so a strategy that moves the batch (augmentation) or adds to the objective
(penalties, CR's regulariser, ACE's Lagrangian) would still need lines in the user's
``training_step``, and its own parameters (ACE's slacks) lines in ``configure_optimizers``.
Subclass the module to change a hook (``configure_optimizers``, ``training_step``: see
:func:`~equirelax.strategies.training_objective`); keep ``super()`` calls in the hooks above.

Data: the training ``DataLoader`` yields ``(inputs, targets)`` pairs (``inputs`` a tensor or a
tuple of tensors). A strategy that holds out data (:attr:`Strategy.holds_out_data`: RECM)
cannot split a ``DataLoader`` built beforehand, so it is given held-out samples through
``probe_dataloader`` (e.g. one part of ``torch.utils.data.random_split``), read whole at the
start of every fit. Resuming (``Trainer.fit(..., ckpt_path=...)``) restores the weights and
levels, the optimiser and the strategy's state (multipliers, dual optimiser, slacks, schedule
position, step counts, random stream); Lightning does not restore torch's global random
state, so a resumed run repeats an uninterrupted one exactly when its data order does not
depend on it (``shuffle=False`` or a sampler with its own seeded generator).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

try:
    import lightning.pytorch as pl
    from lightning.pytorch.utilities import move_data_to_device
except ModuleNotFoundError as missing:  # the optional extra
    raise ModuleNotFoundError(
        "equirelax.integrations.lightning needs PyTorch Lightning: pip install "
        "'equirelax[lightning]'",
        name=missing.name,
    ) from None

from equirelax._batches import call, concatenate
from equirelax._checks import batch_size, check_int
from equirelax.actions import Action
from equirelax.engine.config import TrainConfig
from equirelax.engine.loop import make_optimiser
from equirelax.outputs import split_output
from equirelax.relaxed import build_free_branches, unbuilt_free_branches
from equirelax.strategies.base import Strategy, training_objective

__all__ = ["STATE_KEY", "RelaxedLightningModule"]

STATE_KEY = "equirelax_strategy"
"""The key of the strategy's name and state in a Lightning checkpoint."""


class RelaxedLightningModule(pl.LightningModule):
    """A relaxed model trained with an equirelax strategy by a Lightning ``Trainer``.

    Parameters
    ----------
    model:
        The model with relaxed layers (:func:`equirelax.relax`); a lazily built free branch
        needs ``example_input`` at :func:`~equirelax.relax` or this module's
        ``example_input_array``.
    strategy:
        Any :class:`~equirelax.strategies.Strategy`; attached at the ``Trainer``'s ``setup``.
    loss_fn:
        The task loss ``(outputs, targets) -> scalar``.
    action_in, action_out:
        The task's actions on inputs and outputs (needed by augmentation, the penalty and
        ``CR(rotate_batches=True)``).
    epochs:
        The planned length of training given to ``attach`` (CR's schedule); default: the
        ``Trainer``'s ``max_epochs`` (``None`` when it has none). A run stopped early and
        resumed keeps its plan by passing it here.
    seed:
        Seed of the strategy's random stream; default ``torch.initial_seed()`` (the seed of
        ``lightning.seed_everything``).
    lr, weight_decay:
        Of the Adam optimiser of :func:`equirelax.engine.make_optimiser` (the model's trainable
        parameters and the strategy's own).
    probe_dataloader:
        Held-out ``(inputs, targets)`` batches for a strategy with ``holds_out_data`` (RECM's
        probes), never trained on; required by such a strategy and refused by any other.
    """

    def __init__(
        self,
        model: nn.Module,
        strategy: Strategy,
        loss_fn: Callable[[Any, Tensor], Tensor],
        *,
        action_in: Action | None = None,
        action_out: Action | None = None,
        epochs: int | None = None,
        seed: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        probe_dataloader: Iterable[Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, received {type(model).__name__}")
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy: expected an equirelax Strategy, received {strategy!r}")
        if not callable(loss_fn):
            raise TypeError(
                f"loss_fn: expected a callable (outputs, targets), received {loss_fn!r}"
            )
        _check_probes(strategy, probe_dataloader)
        self.model = model
        self.strategy = strategy
        self.loss_fn = loss_fn
        self.action_in, self.action_out = action_in, action_out
        self.epochs = None if epochs is None else check_int("epochs", epochs, minimum=1)
        self.seed = None if seed is None else check_int("seed", seed)
        self.optimiser_config = TrainConfig(lr=lr, weight_decay=weight_decay)
        self.probe_dataloader = probe_dataloader
        self._attached = False
        self._evaluated: nn.Module | None = None

    # ------------------------------------------------------------------ set-up

    def setup(self, stage: str) -> None:
        """Attach the strategy (once), before the optimiser and any checkpoint are loaded."""
        self.attach_strategy()

    def attach_strategy(self) -> None:
        """``strategy.attach`` with this module's actions, loss, seed and planned epochs, then
        build lazily built free branches; nothing happens once attached."""
        if self._attached:
            return
        seed = torch.initial_seed() if self.seed is None else self.seed
        self.model = self.strategy.attach(
            self.model,
            action_in=self.action_in,
            action_out=self.action_out,
            epochs=self.epochs if self.epochs is not None else self._trainer_epochs(),
            generator=torch.Generator().manual_seed(seed),
            loss_fn=self.loss_fn,
        )
        if unbuilt_free_branches(self.model) and self.example_input_array is not None:
            # shapes, initialisation and norm bounds now; else at the first training step
            # (the optimiser holds the uninitialised parameters either way)
            build_free_branches(self.model, self.example_input_array)
        self._attached = True

    def _trainer_epochs(self) -> int | None:
        trainer = self._trainer
        epochs = None if trainer is None else trainer.max_epochs
        return epochs if epochs is not None and epochs > 0 else None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam on the model's trainable parameters and the strategy's own (ACE's slacks)."""
        return make_optimiser(self.model, self.strategy, self.optimiser_config)

    def on_fit_start(self) -> None:
        """Give the held-out batches of ``probe_dataloader`` to the strategy, on the model's
        device and in the trainer's precision."""
        if self.probe_dataloader is None:
            return
        batches = [_pair(batch, "probe_dataloader") for batch in self.probe_dataloader]
        if not batches:
            raise ValueError("probe_dataloader: expected held-out batches, received none")
        held_out = (concatenate([x for x, _ in batches]), concatenate([y for _, y in batches]))
        held_out = self.trainer.precision_plugin.convert_input(held_out)
        self.strategy.use_held_out_data(*move_data_to_device(held_out, self.device))

    # ------------------------------------------------------------------ training

    def forward(self, *inputs: Any) -> Any:
        return self.model(*inputs)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The strategy's objective on one ``(inputs, targets)`` batch; logs ``train_loss``."""
        inputs, targets = _pair(batch, "batch")
        task_loss, objective = training_objective(
            self.strategy, self.model, inputs, targets, self.loss_fn
        )
        self.log("train_loss", task_loss.detach(), on_epoch=True, batch_size=batch_size(inputs))
        return objective

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's optimiser step, then the strategy's (``after_step``)."""
        super().optimizer_step(*args, **kwargs)
        self.strategy.after_step()

    def on_train_epoch_start(self) -> None:
        self.strategy.on_epoch_start(self.current_epoch)

    def on_train_epoch_end(self) -> None:
        """End the strategy's epoch and log what it logs (``strategy/levels_0``, ...)."""
        self.strategy.on_epoch_end(self.current_epoch)
        self.log_dict(_scalars(self.strategy.log()))

    # ------------------------------------------------------------------ evaluation

    def evaluation_model(self) -> nn.Module:
        """The model the strategy evaluates (projected, level := 0, for strict, CR and
        ACE-equality; the trained model otherwise)."""
        return self.strategy.evaluation_model(self.model)

    def on_validation_epoch_start(self) -> None:
        self._evaluated = self.evaluation_model()

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        """``val_loss``: the task loss of :meth:`evaluation_model` on one batch."""
        inputs, targets = _pair(batch, "batch")
        model = self._evaluated if self._evaluated is not None else self.evaluation_model()
        outputs, _ = split_output(call(model, inputs))
        loss = self.loss_fn(outputs, targets)
        self.log("val_loss", loss, batch_size=batch_size(inputs))
        return loss

    def on_validation_epoch_end(self) -> None:
        self._evaluated = None

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the strategy's name and state beside Lightning's."""
        checkpoint[STATE_KEY] = {"name": self.strategy.name, "state": self.strategy.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the strategy's state (attaching it first if no ``Trainer`` has)."""
        saved = checkpoint.get(STATE_KEY)
        if not isinstance(saved, dict) or "state" not in saved:
            raise ValueError(
                f"checkpoint: expected the strategy's state under {STATE_KEY!r} (a checkpoint "
                f"of a RelaxedLightningModule), received keys {sorted(checkpoint)}"
            )
        if saved.get("name") != self.strategy.name:
            raise ValueError(
                f"checkpoint: was trained with strategy {saved.get('name')!r}, received "
                f"{self.strategy.name!r}; resume with the strategy it was trained with"
            )
        self.attach_strategy()
        self.strategy.load_state_dict(saved["state"])


def _check_probes(strategy: Strategy, probe_dataloader: Iterable[Any] | None) -> None:
    """A strategy that holds out data needs ``probe_dataloader``; any other refuses it."""
    if probe_dataloader is not None and not isinstance(probe_dataloader, Iterable):
        raise TypeError(
            f"probe_dataloader: expected an iterable of (inputs, targets) batches, received "
            f"{probe_dataloader!r}"
        )
    if probe_dataloader is None and strategy.holds_out_data:
        raise ValueError(
            f"probe_dataloader: {strategy.name} probes on held-out samples it never trains on; "
            "expected a DataLoader of held-out (inputs, targets) batches (e.g. one part of "
            "torch.utils.data.random_split), received None"
        )
    if probe_dataloader is not None and not strategy.holds_out_data:
        raise ValueError(
            f"probe_dataloader: {strategy.name} keeps no held-out data; expected None, "
            f"received {probe_dataloader!r}"
        )


def _pair(batch: Any, name: str) -> tuple[Any, Tensor]:
    """``(inputs, targets)`` of a batch; a ``ValueError`` naming ``name`` otherwise."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(
            f"{name}: expected (inputs, targets) batches, received {type(batch).__name__}"
            + (f" of {len(batch)} items" if isinstance(batch, (tuple, list)) else "")
        )
    return batch[0], batch[1]


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a strategy's log as ``strategy/NAME`` and ``strategy/NAME_i`` floats."""
    out: dict[str, float] = {}
    for key, value in record.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        numbers = [float(v) for v in values if isinstance(v, (int, float))]
        if len(numbers) != len(values):
            continue
        if isinstance(value, (list, tuple)):
            out.update({f"strategy/{key}_{i}": v for i, v in enumerate(numbers)})
        else:
            out[f"strategy/{key}"] = numbers[0]
    return out
