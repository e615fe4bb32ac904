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
* accepts models that return a :class:`~equirelax.outputs.Penalized` value (a
  :class:`~equirelax.outputs.PenalizedOutput`, or a canonicalized model's
  :class:`~equirelax.canonical.Canonicalization`): the loss, metric and equivariance error see
  its ``output`` and its ``penalty`` is added to the objective;
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

The package by concern: :mod:`~equirelax.engine.loop` (:func:`train`, the optimiser and the
schedule), :mod:`~equirelax.engine.config` (:class:`TrainConfig`, :class:`TrainResult`),
:mod:`~equirelax.engine.evaluation` (validation, equivariance error, :func:`split_means`),
:mod:`~equirelax.engine.state` (checkpoints, RNG states, ``best.pt``, ``metrics.jsonl``,
:func:`check_continuation`) and :mod:`~equirelax.engine.distributed` (``torchrun``).
"""

from equirelax.engine.config import (
    MAX_EPOCHS,
    MAX_SEED,
    NonFiniteLossError,
    TrainConfig,
    TrainResult,
)
from equirelax.engine.evaluation import split_means
from equirelax.engine.loop import make_optimiser, train
from equirelax.engine.state import BEST, CHECKPOINT, METRICS, check_continuation

__all__ = [
    "BEST",
    "CHECKPOINT",
    "MAX_EPOCHS",
    "MAX_SEED",
    "METRICS",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "check_continuation",
    "make_optimiser",
    "split_means",
    "train",
]
