"""Run state on disk and in memory: the resume checkpoint with the RNG states, the best
validation model (``best.pt``), the per-epoch records (``metrics.jsonl``), seeding, and the
check that a resumed run keeps its settings. Files are written atomically (a temporary file of
this process, then a rename)."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from equirelax._checks import first_line
from equirelax.engine.config import TrainConfig
from equirelax.strategies.base import Strategy

__all__ = [
    "BEST",
    "CHECKPOINT",
    "CHECKPOINT_KEYS",
    "METRICS",
    "Best",
    "atomic_save",
    "check_continuation",
    "data_fingerprint",
    "detached",
    "epoch_seed",
    "load_best",
    "load_checkpoint",
    "load_into",
    "read_history",
    "read_state",
    "rewrite_history",
    "rng_states",
    "save_best",
    "save_checkpoint",
    "seed_everything",
    "set_rng_states",
]

CHECKPOINT_KEYS = ("epoch", "config", "model", "optimiser", "scheduler", "strategy", "rng")
"""What a resume checkpoint holds."""
CHECKPOINT = "checkpoint.pt"
"""The resume checkpoint's file name in a run's directory."""
BEST = "best.pt"
"""The best validation model's file name in a run's directory."""
METRICS = "metrics.jsonl"
"""The per-epoch records' file name in a run's directory."""


@dataclass
class Best:
    """The evaluated model's copy at the best validation epoch so far, and the trained
    (relaxed) model's when the evaluated one is its projection. ``val_loss`` is the
    validation loss where the metric is another function (it breaks ties of the metric)."""

    epoch: int
    val: float
    model: nn.Module
    relaxed: nn.Module | None = None
    val_loss: float | None = None

    def improved_by(self, val: float, val_loss: float | None = None) -> bool:
        """Whether an evaluation of metric ``val`` (and loss ``val_loss``) is better: a lower
        finite metric, or the same metric at a lower loss (a discrete metric such as a failure
        rate ties often, and the first of tied epochs is not the best model)."""
        if not math.isfinite(val):
            return False
        if not math.isfinite(self.val) or val < self.val:
            return True
        return (
            val == self.val
            and val_loss is not None
            and self.val_loss is not None
            and val_loss < self.val_loss
        )


def epoch_seed(config: TrainConfig, epoch: int) -> int:
    """The seed of an epoch's shuffle, from the run's seed and the epoch alone (so a resumed
    run shuffles as an uninterrupted one)."""
    return (config.seed * 1_000_003 + epoch) % (2**63)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states() -> dict[str, Any]:
    """The global generators' states (torch, NumPy, Python, CUDA) as tensors and plain values
    that load with ``weights_only=True``."""
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


def set_rng_states(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`rng_states`."""
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


def atomic_save(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to a temporary file of this process, then rename it over ``path``."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as stream:
        torch.save(state, stream)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def save_checkpoint(
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
        "rng": rng_states(),
    }
    atomic_save(state, path)


def detached(evaluated: nn.Module, model: nn.Module) -> nn.Module:
    """``evaluated`` as a module that training no longer changes: a copy when the strategy
    evaluates the trained model itself, else (a projection, already a copy) as it is."""
    return copy.deepcopy(evaluated) if evaluated is model else evaluated


def save_best(path: Path, best: Best) -> None:
    """``best.pt``: the evaluated model's weights at the best validation epoch (and the
    trained model's, ``relaxed``, when they differ)."""
    state = {
        "epoch": best.epoch,
        "val": best.val,
        "val_loss": best.val_loss,
        "model": best.model.state_dict(),
    }
    if best.relaxed is not None:
        state["relaxed"] = best.relaxed.state_dict()
    atomic_save(state, path)


def load_best(
    path: Path | None, recorded: dict[str, Any] | None, strategy: Strategy, model: nn.Module
) -> Best | None:
    """The best model of an interrupted run, rebuilt from ``best.pt`` (``None`` before its
    first evaluation)."""
    if recorded is None or path is None:
        return None
    if not path.exists():
        raise FileNotFoundError(
            f"resume: the checkpoint records a best epoch {recorded['epoch']} but {path} is "
            "missing; start the run again without resume"
        )
    state = read_state(path, ("epoch", "val", "model"), "best-model file")
    best = detached(strategy.evaluation_model(model), model)
    load_into(best, state["model"], path)
    relaxed = None
    if "relaxed" in state:
        relaxed = copy.deepcopy(model)
        load_into(relaxed, state["relaxed"], path)
    val_loss = state.get("val_loss")  # absent in files written before ties were broken
    return Best(
        int(state["epoch"]),
        float(state["val"]),
        best,
        relaxed,
        None if val_loss is None else float(val_loss),
    )


_FREE_ON_RESUME = ("compile", "device", "eval_batch_size", "loggers")


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
            "learning rate, compile, device, eval_batch_size and loggers may change)"
        )


def data_fingerprint(split: Any) -> str:
    """A SHA-256 digest of a split's tensors (shapes, dtypes and values), to tell on resume
    whether a run continues on the data it was trained on."""
    digest = hashlib.sha256()
    for tensor in _tensors(split):
        digest.update(f"{tuple(tensor.shape)} {tensor.dtype};".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for part in value:
            yield from _tensors(part)


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    scheduler: Any,
    strategy: Strategy,
    config: TrainConfig,
    data: str | None = None,
) -> dict[str, Any]:
    """Restore the training state from ``path`` after :func:`check_continuation` of its
    settings against ``config`` and of its training data's fingerprint against ``data``
    (:func:`data_fingerprint`); returns the checkpoint (epoch, best, ...)."""
    state = read_state(path, CHECKPOINT_KEYS, "checkpoint")
    recorded = state.get("strategy_name", strategy.name)  # absent from older checkpoints
    if recorded != strategy.name:
        raise ValueError(
            f"resume: {path} was trained with strategy {recorded!r}, received {strategy.name!r}; "
            "resume with the strategy it was trained with, or start a new run elsewhere"
        )
    if data is not None and state.get("data", data) != data:
        raise ValueError(
            f"resume: {path} was trained on other training data than this run's (another task, "
            "split size, data seed or task option); resume with the data it was trained on, or "
            "start a new run elsewhere"
        )
    check_continuation(state["config"], config, strategy, where=str(path))
    load_into(model, state["model"], path)
    for part, saved in (("optimiser", optimiser), ("strategy", strategy), ("scheduler", scheduler)):
        if saved is not None and state[part] is not None:
            load_into(saved, state[part], path, part)
    set_rng_states(state["rng"])
    return state


def read_state(path: Path, keys: Sequence[str], what: str) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on the CPU, checked to be a dict with ``keys``;
    a ``ValueError`` naming the file (and what it is not) otherwise."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:
        raise ValueError(
            f"resume: {path} is not a readable {what} ({type(error).__name__}: "
            f"{first_line(error)}); delete it to start the run again"
        ) from None
    missing = [key for key in keys if not (isinstance(state, dict) and key in state)]
    if missing:
        raise ValueError(
            f"resume: {path} is not an equirelax {what}: it has no {', '.join(missing)}; "
            "delete it to start the run again"
        )
    return state


def load_into(target: Any, state: Any, path: Path, part: str = "model") -> None:
    """``target.load_state_dict(state)``; a ``ValueError`` naming the file when the saved state
    belongs to another model, optimiser or strategy than this run's."""
    try:
        target.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
        raise ValueError(
            f"resume: {path} holds the {part} state of another run than this one "
            f"({first_line(error)}); resume with the model, strategy and options it was "
            "trained with, or start a new run in another directory"
        ) from None


def read_history(path: Path, epochs: int) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` of the epochs before ``epochs`` (none if it is missing)."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # a write cut short: the checkpoint says what was done
                break
            raise ValueError(
                f"resume: line {number} of {path} is not a JSON record; delete the file to "
                "start the run again"
            ) from None
    return [r for r in records if isinstance(r, dict) and r.get("epoch", epochs) < epochs]


def rewrite_history(path: Path, history: list[dict[str, Any]]) -> None:
    """Write ``metrics.jsonl`` with exactly ``history``, one JSON record per line."""
    with open(path, "w") as stream:
        stream.writelines(json.dumps(record) + "\n" for record in history)
