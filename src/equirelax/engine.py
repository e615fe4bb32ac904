"""The training engine: :func:`train` runs a strategy on a task, reproducibly and resumably.

What one call does:

* seeds ``random``, NumPy and torch, and draws each epoch's shuffle from ``(seed, epoch)``;
* runs the strategy's hooks around a plain Adam loop (see :mod:`equirelax.strategies.base`);
* stops at the first non-finite loss with :class:`NonFiniteLossError` naming the epoch and
  step (the last good checkpoint is kept);
* every ``eval_every`` epochs (and after the last) evaluates the model the strategy evaluates
  (projected for strict, CR and ACE-equality) on the validation split, with its equivariance
  error (in the model's dtype; in float64 on the CPU after the last epoch, and for a run
  stopped early), and the relaxed model beside it when the two differ (``val_relaxed``);
* selects the model by validation (SPEC 2.7, as the papers report): keeps the evaluated
  model's weights at the best validation epoch (in memory and, with ``out_dir``, in
  ``out_dir/best.pt``, written atomically and loadable with ``weights_only=True``), reports
  the test metric at that epoch (``test``) and at the final epoch (``test_final``), and stops
  early when ``patience`` epochs pass without a better validation metric;
* accepts models that return a :class:`~equirelax.canonical.Canonicalization` (a
  :class:`~equirelax.canonical.Canonicalized` model): the loss, metric and equivariance error
  see its ``output`` and its weighted prior is added to the objective;
* times each epoch's training (``epoch_seconds``) and evaluation (``eval_seconds``) apart;
* appends one JSON line per epoch to ``out_dir/metrics.jsonl`` and writes
  ``out_dir/checkpoint.pt`` atomically (model, optimiser, scheduler, strategy state with
  multipliers and slacks, RNG states, epoch); ``resume=True`` continues from it and gives the
  same weights as an uninterrupted run (bitwise on CPU). Checkpoints load with
  ``torch.load(weights_only=True)``;
* under ``torchrun`` (``WORLD_SIZE > 1``) it joins the process group (gloo on CPU, nccl on
  CUDA, each rank on ``cuda:LOCAL_RANK`` for ``device="cuda"``), wraps the model in
  ``DistributedDataParallel``, gives each rank an equal share of every global batch (the loss
  is rescaled so the averaged gradient is the global batch's), and lets only rank 0 write
  files and show progress.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from equirelax._batches import call, index
from equirelax._checks import batch_size, check_choice, check_positive_int
from equirelax.metrics import equivariance_error
from equirelax.outputs import TaskOutput, split_output
from equirelax.relaxed import relaxed_layers
from equirelax.strategies.base import Strategy
from equirelax.tasks.base import Split, Task

__all__ = [
    "BEST",
    "CHECKPOINT",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "check_continuation",
    "make_optimiser",
    "split_means",
    "train",
]

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"
_LR_SCHEDULES = ("constant", "cosine", "exponential")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names the epoch and step."""


@dataclass
class TrainConfig:
    """Hyperparameters of :func:`train` (all plain values, stored in checkpoints).

    ``lr_scale`` maps parameter-name prefixes to learning-rate multipliers, e.g.
    ``{"canonicalizer.": 10.0}`` trains a :class:`~equirelax.canonical.Canonicalized` model's
    canonicalizer 10 times faster than its predictor (the longest matching prefix wins; other
    parameters use ``lr``).

    ``lr_schedule`` is ``"constant"``, ``"cosine"`` (annealed to 0 over the run, per step) or
    ``"exponential"`` (times ``lr_decay`` after every epoch, as the smoke-plume protocol's
    ``StepLR``).

    ``eval_every`` evaluates on the validation split every that many epochs (and always after
    the last); ``patience`` (``None``: never) stops training once that many epochs have passed
    since the best validation epoch.

    ``compile`` runs the training forward pass through ``torch.compile`` (``True``: its
    default backend, inductor; a string: that backend, e.g. ``"aot_eager"``); the model itself,
    its evaluation, projection and checkpoints stay eager. The first steps pay the compilation
    (``benchmarks/speed.md`` gives the compiled/eager step ratio per model).
    """

    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_decay: float = 0.95
    max_grad_norm: float | None = None
    lr_scale: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    eval_batch_size: int = 1000
    equivariance_samples: int = 32
    eval_every: int = 1
    patience: int | None = None
    device: str = "cpu"
    compile: bool | str = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "equivariance_samples"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("eval_every", self.eval_every)
        if self.patience is not None:
            check_positive_int("patience", self.patience)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, received {self.seed!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr: expected a positive finite number, received {self.lr!r}")
        if isinstance(self.lr_decay, bool) or not (
            isinstance(self.lr_decay, (int, float)) and 0 < self.lr_decay <= 1
        ):
            raise ValueError(f"lr_decay: expected a number in (0, 1], received {self.lr_decay!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay: expected >= 0, received {self.weight_decay!r}")
        check_choice("lr_schedule", self.lr_schedule, _LR_SCHEDULES)
        if not isinstance(self.lr_scale, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and v > 0 and math.isfinite(v)
            for k, v in self.lr_scale.items()
        ):
            raise ValueError(
                "lr_scale: expected a dict of parameter-name prefix -> positive multiplier, "
                f"received {self.lr_scale!r}"
            )
        if not isinstance(self.compile, bool):
            check_choice("compile", self.compile, torch.compiler.list_backends(exclude_tags=()))
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(
                f"max_grad_norm: expected a positive number or None, "
                f"received {self.max_grad_norm!r}"
            )


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``model`` is the trained (possibly relaxed) model, ``evaluation_model`` the one the
    strategy evaluates (projected for strict/CR/ACE-equality) at the final epoch,
    ``best_model`` that model's copy at the best validation epoch ``best_epoch``, ``history``
    one record per epoch (the lines of ``metrics.jsonl``) and ``final`` the last record (over
    the last evaluated one) plus ``epochs_run``, ``best_epoch``, ``best_val``, ``test`` (at the
    best validation epoch) and ``test_final``; when the evaluated model is not the trained one
    (a projection of a relaxed model), also the trained model's ``test_relaxed`` at the best
    validation epoch (of the evaluated model) and ``test_relaxed_final``, as the ACE paper
    reports both.
    """

    model: nn.Module
    evaluation_model: nn.Module
    strategy: Strategy
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    best_model: nn.Module | None = None
    best_epoch: int | None = None


@dataclass
class _Best:
    """The evaluated model's copy at the best validation epoch so far, and the trained
    (relaxed) model's when the evaluated one is its projection."""

    epoch: int
    val: float
    model: nn.Module
    relaxed: nn.Module | None = None

    def improved_by(self, val: float) -> bool:
        return math.isfinite(val) and (not math.isfinite(self.val) or val < self.val)


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
    """Train ``model`` on ``task`` with ``strategy`` (see the module docstring).

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
    device = _local_device(config.device)
    world, rank = _join_process_group(config.device)
    _seed_everything(config.seed)
    directory = Path(out_dir) if out_dir is not None else None
    if directory is not None and rank == 0:
        directory.mkdir(parents=True, exist_ok=True)

    train_inputs, train_targets = _to_device(task.train, device)
    model = model.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    model = strategy.attach(
        model,
        action_in=task.action_in,
        action_out=task.action_out,
        epochs=config.epochs,
        generator=generator,
        loss_fn=task.loss,
    )
    train_inputs, train_targets = strategy.split_training_data(train_inputs, train_targets)
    _build_lazy_branches(model, train_inputs)
    optimiser = make_optimiser(model, strategy, config)
    steps_per_epoch = math.ceil(batch_size(train_inputs) / config.batch_size)
    scheduler: Any = None
    if config.lr_schedule == "cosine":
        total = config.epochs * steps_per_epoch
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, total)
    elif config.lr_schedule == "exponential":
        decay = float(config.lr_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda step: decay ** (step // steps_per_epoch)
        )

    start_epoch, history, best, stopped = 0, [], None, False
    checkpoint = directory / CHECKPOINT if directory is not None else None
    best_path = directory / BEST if directory is not None else None
    if resume and checkpoint is not None and checkpoint.exists():
        state = _load_checkpoint(checkpoint, model, optimiser, scheduler, strategy, config)
        start_epoch, stopped = state["epoch"] + 1, bool(state.get("stopped", False))
        history = _read_history(directory / METRICS, start_epoch)  # type: ignore[operator]
        best = _load_best(best_path, state.get("best"), strategy, model)
    elif directory is not None and rank == 0:
        (directory / METRICS).unlink(missing_ok=True)
    if rank == 0 and directory is not None:
        _rewrite_history(directory / METRICS, history)

    wrapped = _wrap(model, world, device)
    if config.compile:
        backend = config.compile if isinstance(config.compile, str) else "inductor"
        wrapped = torch.compile(wrapped, backend=backend)
    bar = tqdm(
        total=config.epochs * steps_per_epoch,
        initial=start_epoch * steps_per_epoch,
        disable=not progress or rank != 0,
        desc=f"{task.name}/{strategy.name} seed {config.seed}",
        dynamic_ncols=True,
        position=progress_position,
        leave=progress_position is None,
    )
    try:
        for epoch in range(start_epoch, 0 if stopped else config.epochs):
            started = time.perf_counter()
            strategy.on_epoch_start(epoch)
            model.train()
            train_loss = _run_epoch(
                epoch, wrapped, model, strategy, task, (train_inputs, train_targets), optimiser,
                scheduler, config, world, rank, checkpoint, bar,
            )  # fmt: skip
            strategy.on_epoch_end(epoch)
            record = {
                "epoch": epoch,
                "train_loss": train_loss,
                "lr": optimiser.param_groups[0]["lr"],
                "epoch_seconds": time.perf_counter() - started,
            }
            if (epoch + 1) % config.eval_every == 0 or epoch == config.epochs - 1:
                evaluating = time.perf_counter()
                evaluation, evaluated = _evaluate(
                    model, strategy, task, config, device, precise=epoch == config.epochs - 1
                )
                record.update(evaluation, eval_seconds=time.perf_counter() - evaluating)
                if best is None or best.improved_by(evaluation["val"]):
                    best = _Best(
                        epoch,
                        evaluation["val"],
                        _detached(evaluated, model),
                        copy.deepcopy(model) if "val_relaxed" in evaluation else None,
                    )
                    if rank == 0 and best_path is not None:
                        _save_best(best_path, best)
            if best is not None:
                record["best_epoch"] = best.epoch
            record.update(strategy.log())
            history.append(record)
            stopped = (
                config.patience is not None
                and best is not None
                and epoch - best.epoch >= config.patience
            )
            if rank == 0 and directory is not None:
                with open(directory / METRICS, "a") as stream:
                    stream.write(json.dumps(record) + "\n")
                _save_checkpoint(
                    checkpoint,  # type: ignore[arg-type]
                    {
                        "epoch": epoch,
                        "config": asdict(config),
                        "stopped": stopped,
                        "best": None if best is None else {"epoch": best.epoch, "val": best.val},
                    },
                    model, optimiser, scheduler, strategy,
                )  # fmt: skip
            if stopped:
                break
    finally:
        bar.close()

    evaluation_model = strategy.evaluation_model(model)
    last_evaluation = next((record for record in reversed(history) if "val" in record), {})
    last = history[-1] if history else {}
    final = {**last_evaluation, **last, "epochs_run": len(history)}
    if history and last.get("epoch") != config.epochs - 1:  # stopped early: check it precisely
        final["equivariance_error"] = _equivariance_error(
            evaluation_model, task, config, device, precise=True
        )
    if best is not None:
        final.update(best_epoch=best.epoch, best_val=best.val)
    tests = {"test": task.test} if task.test is not None else {}
    tests.update({f"test_{name}": split for name, split in task.test_splits.items()})
    for key, split in tests.items():
        final[f"{key}_final"] = _metric(evaluation_model, task, split, config, device)
        final[key] = (
            _metric(best.model, task, split, config, device)
            if best is not None
            else final[f"{key}_final"]
        )
    if task.test is not None and best is not None and best.relaxed is not None:
        final["test_relaxed"] = _metric(best.relaxed, task, task.test, config, device)
        final["test_relaxed_final"] = _metric(model, task, task.test, config, device)
    return TrainResult(
        model,
        evaluation_model,
        strategy,
        history,
        final,
        best_model=best.model if best is not None else None,
        best_epoch=best.epoch if best is not None else None,
    )


def _run_epoch(
    epoch: int,
    wrapped: nn.Module,
    model: nn.Module,
    strategy: Strategy,
    task: Task,
    data: Split,
    optimiser: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
    world: int,
    rank: int,
    checkpoint: Path | None,
    bar: Any,
) -> float:
    inputs, targets = data
    count = batch_size(inputs)
    inputs_on_cpu = targets.device.type == "cpu"
    order = torch.randperm(
        count, generator=torch.Generator().manual_seed(_epoch_seed(config, epoch))
    )
    # The loss values stay on the device and are checked (one synchronisation) every step on
    # the CPU, where that is free, and once per epoch on an accelerator.
    losses: list[Tensor] = []
    sizes: list[int] = []
    checked = 0
    for start in range(0, count, config.batch_size):
        batch = order[start : start + config.batch_size]
        mine = batch[rank::world]
        x, y = index(inputs, mine), targets[mine]
        x, y = strategy.transform_batch(x, y)
        outputs, prior = split_output(call(wrapped, x))
        local = task.loss(outputs, y)
        share = mine.numel() * world / batch.numel()
        objective = strategy.loss(local * share, model, x, outputs)
        if prior is not None:
            objective = objective + prior * share
        losses.append(torch.stack([local.detach() * share, objective.detach()]))
        sizes.append(batch.numel())
        if inputs_on_cpu or start + config.batch_size >= count:
            _check_finite(losses, checked, epoch, strategy, optimiser, checkpoint, world)
            checked = len(losses)
        optimiser.zero_grad(set_to_none=True)
        objective.backward()
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for g in optimiser.param_groups for p in g["params"]], config.max_grad_norm
            )
        optimiser.step()
        strategy.after_step()
        if scheduler is not None:
            scheduler.step()
        bar.update(1)
    means = _global_mean(torch.stack(losses)[:, 0], world)
    train_loss = sum(m * n for m, n in zip(means, sizes, strict=True)) / sum(sizes)
    bar.set_postfix(_postfix(epoch, train_loss, strategy), refresh=False)
    return train_loss


def _check_finite(
    losses: list[Tensor],
    start: int,
    epoch: int,
    strategy: Strategy,
    optimiser: torch.optim.Optimizer,
    checkpoint: Path | None,
    world: int,
) -> None:
    """Raise :class:`NonFiniteLossError` at the first step from ``start`` whose task loss or
    objective (``losses[step]``, averaged over ranks) is not finite."""
    values = _global_mean(torch.stack(losses[start:]), world)
    for step, (batch_loss, objective) in enumerate(values, start):
        if not (math.isfinite(batch_loss) and math.isfinite(objective)):
            kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint"
            raise NonFiniteLossError(
                f"loss: non-finite value at epoch {epoch}, step {step} (task loss {batch_loss}, "
                f"objective {objective}; strategy {strategy.name}, "
                f"lr {optimiser.param_groups[0]['lr']:.3g}); {kept}"
            )


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


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    strategy: Strategy,
    task: Task,
    config: TrainConfig,
    device: torch.device,
    *,
    precise: bool,
) -> tuple[dict[str, Any], nn.Module]:
    """The validation record of the model the strategy evaluates (``val``, its
    ``equivariance_error`` and, when it is not the trained model, ``val_relaxed`` of the
    trained one), and that evaluated model."""
    evaluated = strategy.evaluation_model(model)
    record: dict[str, Any] = {"val": _metric(evaluated, task, task.val, config, device)}
    if evaluated is not model and relaxed_layers(model):
        record["val_relaxed"] = _metric(model, task, task.val, config, device)
    record["equivariance_error"] = _equivariance_error(
        evaluated, task, config, device, precise=precise
    )
    return record, evaluated


@torch.no_grad()
def _equivariance_error(
    model: nn.Module, task: Task, config: TrainConfig, device: torch.device, *, precise: bool
) -> float:
    """The mean relative equivariance error of ``model`` on the first
    ``equivariance_samples`` validation inputs (4 group elements each), in the model's dtype
    during training and in float64 (on CPU) for the ``precise`` check after the last epoch."""
    inputs, _ = _to_device(task.val, device)
    sample = index(inputs, torch.arange(min(config.equivariance_samples, batch_size(inputs))))
    was_training = model.training
    model.eval()
    error = equivariance_error(
        TaskOutput(model),
        sample,
        task.action_in,
        task.action_out,
        num_samples=4,
        generator=torch.Generator().manual_seed(config.seed),
        dtype=torch.float64 if precise and device.type == "cpu" else None,
    )
    model.train(was_training)
    return error.mean


def _metric(model: nn.Module, task: Task, split: Split, config: TrainConfig, device: Any) -> float:
    """The task metric over a split, averaged over samples (evaluation mode, batched)."""
    assert task.metric is not None
    return split_means(
        model, split, [task.metric], config.eval_batch_size, device, predict=task.predict
    )[0]


@torch.no_grad()
def split_means(
    model: nn.Module,
    split: Split,
    functions: Sequence[Callable[[Tensor, Tensor], Tensor]],
    eval_batch_size: int = 1000,
    device: Any = None,
    *,
    predict: Callable[[Callable[..., Any], Any, Tensor], Tensor] | None = None,
) -> list[float]:
    """The sample-weighted mean over a split of each ``function(outputs, targets)`` (e.g. a
    task's loss and metric), in evaluation mode and batches of ``eval_batch_size``, on
    ``device`` (default: the device of the model's first parameter). The outputs are
    ``predict(model, inputs, targets)`` (a task's :attr:`~equirelax.tasks.base.Task.predict`,
    e.g. a rollout) or, by default, ``model(*inputs)``; a penalty the model returns beside its
    output is left out."""
    was_training = model.training
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    inputs, targets = _to_device(split, torch.device(device))
    count, totals = batch_size(inputs), [0.0] * len(functions)
    for start in range(0, count, eval_batch_size):
        rows = torch.arange(start, min(start + eval_batch_size, count))
        batch, wanted = index(inputs, rows), targets[rows]
        if predict is None:
            outputs, _ = split_output(call(model, batch))
        else:
            outputs = predict(TaskOutput(model), batch, wanted)
        for i, function in enumerate(functions):
            totals[i] += float(function(outputs, wanted)) * rows.numel()
    model.train(was_training)
    return [total / count for total in totals]


def _epoch_seed(config: TrainConfig, epoch: int) -> int:
    return (config.seed * 1_000_003 + epoch) % (2**63)


def _to_device(split: Split, device: torch.device) -> Split:
    inputs, targets = split
    if isinstance(inputs, (tuple, list)):
        return tuple(part.to(device) for part in inputs), targets.to(device)
    return inputs.to(device), targets.to(device)


@torch.no_grad()
def _build_lazy_branches(model: nn.Module, inputs: Any) -> None:
    """Run one forward pass so that lazily built free branches exist before the optimiser."""
    if any(layer.free is None for layer in relaxed_layers(model).values()):
        state = torch.get_rng_state()
        call(model, index(inputs, torch.arange(min(2, batch_size(inputs)))))
        torch.set_rng_state(state)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _local_device(device: str) -> torch.device:
    """``device``, with ``"cuda"`` meaning ``cuda:LOCAL_RANK`` (made current) under torchrun, so
    that every rank of a machine trains on its own GPU."""
    local_rank = os.environ.get("LOCAL_RANK")
    out = torch.device(device)
    if out.type == "cuda" and out.index is None and local_rank is not None:
        out = torch.device("cuda", int(local_rank))
    if out.type == "cuda" and out.index is not None:
        torch.cuda.set_device(out)
    return out


def _join_process_group(device: str) -> tuple[int, int]:
    """``(world size, rank)``; joins the process group when started by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _wrap(model: nn.Module, world: int, device: torch.device) -> nn.Module:
    if world == 1 or not any(p.requires_grad for p in model.parameters()):
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _global_mean(local: Tensor, world: int) -> list[float]:
    """``local`` averaged over ranks (each rank's share is already scaled), as floats."""
    if world > 1:
        local = local.clone()
        dist.all_reduce(local)
        local /= world
    return local.tolist()


def _rng_states() -> dict[str, Any]:
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["gauss"],
        )
    )
    random.setstate(_as_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _atomic_save(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to a temporary file of this process, then rename it over ``path``."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as stream:
        torch.save(state, stream)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def _save_checkpoint(
    path: Path,
    progress: dict[str, Any],
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    scheduler: Any,
    strategy: Strategy,
) -> None:
    """The resume checkpoint: ``progress`` (epoch, config, early stop, best epoch and value),
    model, optimiser, scheduler, strategy state and RNG states, written atomically."""
    state = {
        **progress,
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "strategy": strategy.state_dict(),
        "rng": _rng_states(),
    }
    _atomic_save(state, path)


def _detached(evaluated: nn.Module, model: nn.Module) -> nn.Module:
    """``evaluated`` as a module that training no longer changes: a copy when the strategy
    evaluates the trained model itself, else (a projection, already a copy) as it is."""
    return copy.deepcopy(evaluated) if evaluated is model else evaluated


def _save_best(path: Path, best: _Best) -> None:
    """``best.pt``: the evaluated model's weights at the best validation epoch (and the
    trained model's, ``relaxed``, when they differ)."""
    state = {"epoch": best.epoch, "val": best.val, "model": best.model.state_dict()}
    if best.relaxed is not None:
        state["relaxed"] = best.relaxed.state_dict()
    _atomic_save(state, path)


def _load_best(
    path: Path | None, recorded: dict[str, Any] | None, strategy: Strategy, model: nn.Module
) -> _Best | None:
    """The best model of an interrupted run, rebuilt from ``best.pt`` (``None`` before its
    first evaluation)."""
    if recorded is None or path is None:
        return None
    if not path.exists():
        raise FileNotFoundError(
            f"resume: the checkpoint records a best epoch {recorded['epoch']} but {path} is "
            "missing; start the run again without resume"
        )
    state = torch.load(path, weights_only=True, map_location="cpu")
    best = _detached(strategy.evaluation_model(model), model)
    best.load_state_dict(state["model"])
    relaxed = None
    if "relaxed" in state:
        relaxed = copy.deepcopy(model)
        relaxed.load_state_dict(state["relaxed"])
    return _Best(int(state["epoch"]), float(state["val"]), best, relaxed)


_FREE_ON_RESUME = ("compile", "device", "eval_batch_size")


def check_continuation(
    recorded: dict[str, Any], config: TrainConfig, strategy: Strategy, *, where: str
) -> None:
    """Refuse to resume a run recorded with the settings ``recorded`` under ``config``,
    unless they differ only in how it runs (``compile``, ``device``, ``eval_batch_size``) or
    in more ``epochs`` for a run that does not plan over its length: a constant learning rate
    and a strategy without :attr:`~equirelax.strategies.Strategy.plans_over_epochs` (CR's
    schedule). ``where`` names the checkpoint in the message."""
    new = asdict(config)
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    # A setting added after the run was recorded had its default then.
    recorded = {**{k: v for k, v in defaults.items() if k not in recorded}, **recorded}
    changed = sorted(
        key for key in new if key not in _FREE_ON_RESUME and recorded.get(key) != new[key]
    )
    if changed == ["epochs"] and new["epochs"] > recorded["epochs"]:
        if config.lr_schedule == "cosine" or strategy.plans_over_epochs:
            planned = (
                "the cosine learning rate"
                if config.lr_schedule == "cosine"
                else f"{strategy.name}'s schedule"
            )
            raise ValueError(
                f"resume: {where} planned {recorded['epochs']} epochs and {planned} depends on "
                f"that length; received epochs={new['epochs']} (start a new run to train longer)"
            )
        return
    if changed:
        differences = ", ".join(f"{k}={recorded.get(k)!r} -> {new[k]!r}" for k in changed)
        raise ValueError(
            f"resume: {where} was trained with other settings ({differences}); resume with "
            "the recorded settings, or start a new run (only more epochs without a cosine "
            "learning rate, compile, device and eval_batch_size may change)"
        )


def _load_checkpoint(
    path: Path,
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    scheduler: Any,
    strategy: Strategy,
    config: TrainConfig,
) -> dict[str, Any]:
    """Restore the training state from ``path`` after :func:`check_continuation` of its
    settings against ``config``; returns the checkpoint (epoch, best, ...)."""
    state = torch.load(path, weights_only=True, map_location="cpu")
    check_continuation(state["config"], config, strategy, where=str(path))
    model.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimiser"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    strategy.load_state_dict(state["strategy"])
    _set_rng_states(state["rng"])
    return state


def _read_history(path: Path, epochs: int) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path) as stream:
        records = [json.loads(line) for line in stream if line.strip()]
    return [r for r in records if r["epoch"] < epochs]


def _rewrite_history(path: Path, history: list[dict[str, Any]]) -> None:
    with open(path, "w") as stream:
        stream.writelines(json.dumps(record) + "\n" for record in history)
