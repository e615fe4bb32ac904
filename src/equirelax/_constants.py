"""Plain constants of the library that the command line needs before it imports torch (so that
``equirelax --help`` answers at once); the modules that use them re-export them."""

from __future__ import annotations

__all__ = ["BREAKING_MODES", "LOGGERS", "MAX_EPOCHS", "MAX_SEED", "MAX_SPLIT_SIZE", "TIE_BREAKS"]

MAX_EPOCHS = 10_000_000
"""The most epochs :class:`~equirelax.TrainConfig` accepts (the papers' longest runs have
10,000)."""

MAX_SEED = 2**63 - 1
"""The largest seed :class:`~equirelax.TrainConfig` accepts (``torch.manual_seed`` takes a signed
64-bit integer)."""

MAX_SPLIT_SIZE = 100_000_000
"""The most samples a generated split may have (beyond it, memory runs out first)."""

LOGGERS = ("tensorboard",)
"""The optional loggers of :class:`~equirelax.TrainConfig` (``metrics.jsonl`` and
``metrics.csv`` are always written)."""

TIE_BREAKS = ("first", "random")
"""How a symmetry-breaking object picks among tied candidates."""

BREAKING_MODES = ("strict", "noise", "relaxed")
"""The symmetry-breaking models' modes: equivariant, noise injection, a symmetry-breaking
object."""
