"""The training loop of :func:`train` (see :mod:`equirelax.engine` for what one call does)."""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from equirelax._batches import index
from equirelax._checks import batch_size
from equirelax.engine.config import NonFiniteLossError, TrainConfig, TrainResult
from equirelax.engine.distributed import global_mean, join_process_group, local_device, wrap
from equirelax.engine.evaluation import (
    evaluate,
    split_metric,
    to_device,
    validation_equivariance_error,
)
from equirelax.engine.logs import METRICS_CSV, TENSORBOARD_DIR, TensorBoardLog, write_csv
from equirelax.engine.state import (
    BEST,
    CHECKPOINT,
    METRICS,
    Best,
    data_fingerprint,
    detached,
    epoch_seed,
    load_best,
    load_checkpoint,
    read_history,
    rewrite_history,
    save_best,
    save_checkpoint,
    seed_everything,
)
from equirelax.relaxed import build_free_branches
from equirelax.strategies.base import Strategy, training_objective
from equirelax.tasks.base import Split, Task

__all__ = ["make_optimiser", "make_scheduler", "train"]


def train(
    model: nn.Module,
    strategy: Strategy,
    task: Task,
    config: TrainConfig | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    progress_position: int | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train ``model`` on ``task`` with ``strategy`` (see :mod:`equirelax.engine`).

    ``overrides`` replace fields of ``config`` (``train(m, s, t, epochs=5, lr=1e-2)``).
    ``resume=True`` needs ``out_dir`` and continues from its checkpoint if one exists.
    ``progress_position`` puts the progress bar on that line of the terminal (one line per
    worker of a parallel comparison; the bar is cleared at the end).
    """
    config = TrainConfig(**{**asdict(config or TrainConfig()), **overrides})
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy: expected an equirelax Strategy, received {strategy!r}")
    if not isinstance(task, Task):
        raise TypeError(f"task: expected an equirelax Task, received {task!r}")
    if resume and out_dir is None:
        raise ValueError("out_dir: resume=True needs the run's directory, received None")
    run = _Run.start(model, strategy, task, config, out_dir, resume)
    bar = tqdm(
        total=config.epochs * run.steps_per_epoch,
        initial=run.start_epoch * run.steps_per_epoch,
        disable=not progress or run.rank != 0,
        desc=f"{task.name}/{strategy.name} seed {config.seed}",
        dynamic_ncols=True,
        position=progress_position,
        leave=progress_position is None,
    )
    try:
        run.loop(bar)
    finally:
        bar.close()
        if run.tensorboard is not None:
            run.tensorboard.close()
    return run.result()


@dataclass
class _Run:
    """One call of :func:`train`: what it trains, where it writes, and its progress."""

    model: nn.Module
    wrapped: nn.Module
    strategy: Strategy
    task: Task
    config: TrainConfig
    data: Split
    optimiser: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    world: int
    rank: int
    directory: Path | None
    steps_per_epoch: int
    start_epoch: int = 0
    stopped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    best: Best | None = None
    tensorboard: TensorBoardLog | None = None

    @classmethod
    def start(
        cls,
        model: nn.Module,
        strategy: Strategy,
        task: Task,
        config: TrainConfig,
        out_dir: str | os.PathLike | None,
        resume: bool,
    ) -> _Run:
        """Seed, attach the strategy, build the optimiser and schedule, and continue from the
        checkpoint when resuming."""
        device = local_device(config.device)
        world, rank = join_process_group(config.device)
        seed_everything(config.seed)
        directory = Path(out_dir) if out_dir is not None else None
        if directory is not None and rank == 0:
            directory.mkdir(parents=True, exist_ok=True)
        train_inputs, train_targets = to_device(task.train, device)
        model = strategy.attach(
            model.to(device),
            action_in=task.action_in,
            action_out=task.action_out,
            epochs=config.epochs,
            generator=torch.Generator().manual_seed(config.seed),
            loss_fn=task.loss,
        )
        data = strategy.split_training_data(train_inputs, train_targets)
        build_free_branches(model, data[0])
        optimiser = make_optimiser(model, strategy, config)
        steps_per_epoch = math.ceil(batch_size(data[0]) / config.batch_size)
        run = cls(
            model, model, strategy, task, config, data, optimiser,
            make_scheduler(optimiser, config, steps_per_epoch), device, world, rank, directory,
            steps_per_epoch,
        )  # fmt: skip
        run.restore(resume)
        if "tensorboard" in config.loggers:
            if directory is None:
                raise ValueError("loggers: 'tensorboard' writes to out_dir, received None")
            if rank == 0:
                run.tensorboard = TensorBoardLog(directory / TENSORBOARD_DIR)
        run.wrapped = wrap(model, world, device)
        if config.compile:
            backend = config.compile if isinstance(config.compile, str) else "inductor"
            run.wrapped = torch.compile(run.wrapped, backend=backend)
        return run

    @functools.cached_property
    def fingerprint(self) -> str:
        """:func:`data_fingerprint` of the task's training split, recorded in checkpoints."""
        return data_fingerprint(self.task.train)

    @property
    def checkpoint(self) -> Path | None:
        return self.directory / CHECKPOINT if self.directory is not None else None

    @property
    def best_path(self) -> Path | None:
        return self.directory / BEST if self.directory is not None else None

    def restore(self, resume: bool) -> None:
        """Continue from the checkpoint (``resume`` and one exists), else start the records
        afresh."""
        checkpoint = self.checkpoint
        if resume and checkpoint is not None and checkpoint.exists():
            state = load_checkpoint(
                checkpoint, self.model, self.optimiser, self.scheduler, self.strategy, self.config,
                data=self.fingerprint,
            )  # fmt: skip
            self.start_epoch, self.stopped = state["epoch"] + 1, bool(state.get("stopped", False))
            self.history = read_history(self.directory / METRICS, self.start_epoch)  # type: ignore[operator]
            self.best = load_best(self.best_path, state.get("best"), self.strategy, self.model)
        elif self.directory is not None and self.rank == 0:
            (self.directory / METRICS).unlink(missing_ok=True)
        if self.rank == 0 and self.directory is not None:
            rewrite_history(self.directory / METRICS, self.history)

    def loop(self, bar: Any) -> None:
        """Train, evaluate, record and save epoch after epoch until the last or an early stop."""
        for epoch in range(self.start_epoch, 0 if self.stopped else self.config.epochs):
            started = time.perf_counter()
            self.strategy.on_epoch_start(epoch)
            self.model.train()
            train_loss = self.train_epoch(epoch, bar)
            self.strategy.on_epoch_end(epoch)
            record = {
                "epoch": epoch,
                "train_loss": train_loss,
                "lr": self.optimiser.param_groups[0]["lr"],
                "epoch_seconds": time.perf_counter() - started,
            }
            if (epoch + 1) % self.config.eval_every == 0 or epoch == self.config.epochs - 1:
                self.evaluate(epoch, record)
            if self.best is not None:
                record["best_epoch"] = self.best.epoch
            record.update(self.strategy.log())
            self.history.append(record)
            patience = self.config.patience
            self.stopped = (
                patience is not None
                and self.best is not None
                and epoch - self.best.epoch >= patience
            )
            self.save(epoch, record)
            if self.stopped:
                break

    def train_epoch(self, epoch: int, bar: Any) -> float:
        """One pass over the training data in the epoch's order; the mean task loss."""
        inputs, targets = self.data
        config, world, strategy = self.config, self.world, self.strategy
        count = batch_size(inputs)
        inputs_on_cpu = targets.device.type == "cpu"
        order = torch.randperm(
            count, generator=torch.Generator().manual_seed(epoch_seed(config, epoch))
        )
        # The loss values stay on the device and are checked (one synchronisation) every step on
        # the CPU, where that is free, and once per epoch on an accelerator.
        losses: list[Tensor] = []
        sizes: list[int] = []
        checked = 0
        for start in range(0, count, config.batch_size):
            batch = order[start : start + config.batch_size]
            mine = batch[self.rank :: world]
            local, objective = training_objective(
                strategy,
                self.model,
                index(inputs, mine),
                targets[mine],
                self.task.loss,
                forward=self.wrapped,
                share=mine.numel() * world / batch.numel(),
            )
            losses.append(torch.stack([local.detach(), objective.detach()]))
            sizes.append(batch.numel())
            if inputs_on_cpu or start + config.batch_size >= count:
                self.check_finite(losses, checked, epoch)
                checked = len(losses)
            self.step(objective)
            bar.update(1)
        means = global_mean(torch.stack(losses)[:, 0], world)
        train_loss = sum(m * n for m, n in zip(means, sizes, strict=True)) / sum(sizes)
        bar.set_postfix(_postfix(epoch, train_loss, strategy), refresh=False)
        return train_loss

    def step(self, objective: Tensor) -> None:
        """One optimiser step on ``objective`` (clipped, then the strategy's and the
        schedule's step)."""
        self.optimiser.zero_grad(set_to_none=True)
        objective.backward()
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimiser.param_groups for p in g["params"]],
                self.config.max_grad_norm,
            )
        self.optimiser.step()
        self.strategy.after_step()
        if self.scheduler is not None:
            self.scheduler.step()

    def check_finite(self, losses: list[Tensor], start: int, epoch: int) -> None:
        """Raise :class:`NonFiniteLossError` at the first step from ``start`` whose task loss
        or objective (``losses[step]``, averaged over ranks) is not finite."""
        values = global_mean(torch.stack(losses[start:]), self.world)
        for step, (batch_loss, objective) in enumerate(values, start):
            if not (math.isfinite(batch_loss) and math.isfinite(objective)):
                raise NonFiniteLossError(
                    f"loss: non-finite value at epoch {epoch}, step {step} (task loss "
                    f"{batch_loss}, objective {objective}; strategy {self.strategy.name}, "
                    f"lr {self.optimiser.param_groups[0]['lr']:.3g}); {self.kept_checkpoint()}"
                )

    def kept_checkpoint(self) -> str:
        """Which checkpoint a diverged run leaves (for its error message)."""
        checkpoint = self.checkpoint
        if checkpoint is None:
            return "no checkpoint (no output directory)"
        if checkpoint.exists():
            return f"the last good checkpoint is {checkpoint}"
        return f"no checkpoint yet (the first epoch had not ended; {checkpoint})"

    def evaluate(self, epoch: int, record: dict[str, Any]) -> None:
        """Add the validation record to ``record``; keep the model if it is the best so far."""
        started = time.perf_counter()
        try:
            evaluation, evaluated = evaluate(
                self.model,
                self.strategy,
                self.task,
                self.config,
                self.device,
                precise=epoch == self.config.epochs - 1,
            )
        except NonFiniteLossError as error:
            raise NonFiniteLossError(
                f"{error}, at epoch {epoch} (strategy {self.strategy.name}); "
                f"{self.kept_checkpoint()}"
            ) from None
        record.update(evaluation, eval_seconds=time.perf_counter() - started)
        val_loss = evaluation.get("val_loss")
        if self.best is None or self.best.improved_by(evaluation["val"], val_loss):
            self.best = Best(
                epoch,
                evaluation["val"],
                detached(evaluated, self.model),
                copy.deepcopy(self.model) if "val_relaxed" in evaluation else None,
                val_loss,
            )
            if self.rank == 0 and self.best_path is not None:
                save_best(self.best_path, self.best)

    def save(self, epoch: int, record: dict[str, Any]) -> None:
        """Append ``record`` to ``metrics.jsonl`` and write the checkpoint (rank 0, with a
        directory)."""
        if self.rank != 0 or self.directory is None:
            return
        with open(self.directory / METRICS, "a") as stream:
            stream.write(json.dumps(record) + "\n")
        write_csv(self.directory / METRICS_CSV, self.history)
        if self.tensorboard is not None:
            self.tensorboard.log(record)
        best = self.best
        progress = {
            "epoch": epoch,
            "config": asdict(self.config),
            "strategy_name": self.strategy.name,
            "data": self.fingerprint,
            "stopped": self.stopped,
            "best": None if best is None else {"epoch": best.epoch, "val": best.val},
        }
        save_checkpoint(
            self.checkpoint,  # type: ignore[arg-type]
            progress, self.model, self.optimiser, self.scheduler, self.strategy,
        )  # fmt: skip

    def result(self) -> TrainResult:
        """The final record with the test metrics at the best validation epoch and at the
        last one."""
        config, task, best = self.config, self.task, self.best
        evaluation_model = self.strategy.evaluation_model(self.model)
        last_evaluation = next((r for r in reversed(self.history) if "val" in r), {})
        last = self.history[-1] if self.history else {}
        final = {**last_evaluation, **last, "epochs_run": len(self.history)}
        if self.history and last.get("epoch") != config.epochs - 1:  # stopped early: precisely
            final["equivariance_error"] = validation_equivariance_error(
                evaluation_model, task, config, self.device, precise=True
            )
        if best is not None:
            final.update(best_epoch=best.epoch, best_val=best.val)
        final.update(self.test_metrics(evaluation_model))
        return TrainResult(
            self.model,
            evaluation_model,
            self.strategy,
            self.history,
            final,
            best_model=best.model if best is not None else None,
            best_epoch=best.epoch if best is not None else None,
        )

    def test_metrics(self, evaluation_model: nn.Module) -> dict[str, float]:
        """Every test split's metric at the best validation epoch (``test``, ``test_NAME``) and
        at the final one (``..._final``), and the trained model's (``test_relaxed``) when the
        evaluated model is its projection."""
        config, task, best, device = self.config, self.task, self.best, self.device
        tests = {"test": task.test} if task.test is not None else {}
        tests.update({f"test_{name}": split for name, split in task.test_splits.items()})
        out: dict[str, float] = {}
        for key, split in tests.items():
            out[f"{key}_final"] = split_metric(evaluation_model, task, split, config, device)
            out[key] = (
                split_metric(best.model, task, split, config, device)
                if best is not None
                else out[f"{key}_final"]
            )
        if task.test is not None and best is not None and best.relaxed is not None:
            out["test_relaxed"] = split_metric(best.relaxed, task, task.test, config, device)
            out["test_relaxed_final"] = split_metric(self.model, task, task.test, config, device)
        return out


def make_scheduler(
    optimiser: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> Any:
    """The learning-rate schedule of ``config.lr_schedule``, stepped after every optimiser
    step (``None`` for a constant rate)."""
    if config.lr_schedule == "cosine":
        total = config.epochs * steps_per_epoch
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, total)
    if config.lr_schedule == "exponential":
        decay = float(config.lr_decay)
        return torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda step: decay ** (step // steps_per_epoch)
        )
    return None


def make_optimiser(
    model: nn.Module, strategy: Strategy, config: TrainConfig
) -> torch.optim.Optimizer:
    """The Adam optimiser :func:`train` uses: the trainable parameters of ``model`` in one
    group per learning rate of ``config.lr_scale`` and the strategy's own (ACE's levels and
    slacks) at ``lr``, with ``config.weight_decay``; the fused kernel where torch has one for
    these parameters, else the multi-tensor one (both replace a Python loop over the
    parameters). Build it after ``strategy.attach``."""
    groups = _parameter_groups(model, strategy, config)
    parameters = [p for group in groups for p in group["params"]]
    device = parameters[0].device if parameters else torch.device("cpu")
    fused = device.type in ("cpu", "cuda") and all(
        p.is_floating_point() and p.device == device for p in parameters
    )
    kernel = {"fused": True} if fused else {"foreach": True}
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay, **kernel)


def _parameter_groups(
    model: nn.Module, strategy: Strategy, config: TrainConfig
) -> list[dict[str, Any]]:
    """Adam parameter groups: one per learning rate of ``config.lr_scale`` (the longest
    matching name prefix), trainable parameters only; the strategy's own at ``lr``."""
    groups: dict[float, list[nn.Parameter]] = {1.0: []}
    unmatched = set(config.lr_scale)
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        prefixes = [prefix for prefix in config.lr_scale if name.startswith(prefix)]
        prefix = max(prefixes, key=len, default=None)
        unmatched.discard(prefix)
        scale = config.lr_scale[prefix] if prefix is not None else 1.0
        groups.setdefault(float(scale), []).append(parameter)
    if unmatched:
        raise ValueError(
            f"lr_scale: expected prefixes of the model's trainable parameter names, received "
            f"{sorted(unmatched)} matching none"
        )
    groups[1.0] += [p for p in strategy.parameters() if p.requires_grad]
    return [
        {"params": params, "lr": config.lr * scale} for scale, params in groups.items() if params
    ]


def _postfix(epoch: int, loss: float, strategy: Strategy) -> dict[str, str]:
    state = strategy.log()
    out = {"epoch": str(epoch), "loss": f"{loss:.3e}"}
    for key in ("levels", "multipliers"):
        values = state.get(key)
        if values:
            out[key] = f"{min(values):.2g}..{max(values):.2g}"
    return out
