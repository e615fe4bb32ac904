"""The ``equirelax`` command line: ``tasks``, ``train``, ``compare``, ``adapt`` and ``break``.

Examples
--------
``equirelax tasks``
    List the tasks with their symmetry, splits and models.
``equirelax compare nbody``
    The quick comparison (small splits, few epochs) of the default strategies with EGNN.
``equirelax compare nbody --model segnn --strategies strict,cr,ace-equality --seeds 3 --full``
    The published protocol.
``equirelax compare nbody --seeds 3 --jobs 4``
    Four runs at a time in worker processes (default: one per core).
``equirelax train nbody --model egnn --strategy cr --option weight=0.1 --epochs 20``
    One run.
``equirelax adapt mnist --group c8``
    Pretrain a CNN on upright digits (or load ``--predictor PATH``), then fine-tune it at equal
    budget with and without canonicalization and report upright, C4- and C8-averaged accuracy.
``equirelax break polygon --seeds 3``
    Train the strict, noise-injected and relaxed-equivariant arms of a symmetry-breaking task
    and report failure rates, losses and the relaxed-equivariance checks.

Every run writes ``metrics.jsonl`` and an atomic ``checkpoint.pt``; ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from equirelax import __version__
from equirelax._constants import (
    BREAKING_MODES,
    LOGGERS,
    MAX_EPOCHS,
    MAX_SEED,
    MAX_SPLIT_SIZE,
    TIE_BREAKS,
)
from equirelax.experiments.config_file import config_words, read_config
from equirelax.experiments.names import (
    ADAPT_ARMS,
    DEFAULT_STRATEGIES,
    MAX_SEEDS,
    STRATEGY_LABELS,
    TASK_NAMES,
)

__all__ = ["DEBUG_ENV", "error_line", "main"]

DEBUG_ENV = "EQUIRELAX_DEBUG"
"""The environment variable that makes the command line show tracebacks (``1``)."""


def _number(cast: type, *, positive: bool, at_most: float | None = None) -> Any:
    """An argparse type: ``cast(text)``, required to be finite and > 0 (``positive``) or
    >= 0, and at most ``at_most``."""
    kind = ("a positive " if positive else "a non-negative ") + (
        "integer" if cast is int else "finite number"
    )
    if at_most is not None:
        kind += f" of at most {at_most}"

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, received {text!r}") from None
        in_range = value > 0 if positive else value >= 0
        if not (math.isfinite(value) and in_range and (at_most is None or value <= at_most)):
            raise argparse.ArgumentTypeError(f"expected {kind}, received {value}")
        return value

    return parse


_positive_int = _number(int, positive=True)
_split_size = _number(int, positive=True, at_most=MAX_SPLIT_SIZE)
_epochs = _number(int, positive=True, at_most=MAX_EPOCHS)
_seeds = _number(int, positive=True, at_most=MAX_SEEDS)
_seed = _number(int, positive=False, at_most=MAX_SEED)
_positive_float = _number(float, positive=True)
_non_negative_float = _number(float, positive=False)


def _compile_backend(text: str) -> str | bool:
    """A ``--compile`` backend, or ``False`` for ``off``."""
    return False if text == "off" else text


def _key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as a Python literal when it is one (``0.1``, ``True``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, received {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key, value


def _add_common(parser: argparse.ArgumentParser, *, resume: bool = True) -> None:
    parser.add_argument("task", nargs="?", help=f"one of: {', '.join(TASK_NAMES)}")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="options from a TOML or YAML file (keys: the long options, and task); options "
        "given on the command line override it",
    )
    parser.add_argument("--model", help="model name (default: the task's first model)")
    parser.add_argument("--full", action="store_true", help="the published protocol")
    sizes = parser.add_argument_group("data")
    for split in ("train", "val", "test"):
        sizes.add_argument(f"--{split}-size", type=_split_size, help=f"number of {split} samples")
    training = parser.add_argument_group("training (defaults: the task's preset)")
    training.add_argument("--epochs", type=_epochs)
    training.add_argument("--batch-size", type=_positive_int)
    training.add_argument("--lr", type=_positive_float)
    training.add_argument("--weight-decay", type=_non_negative_float)
    training.add_argument("--lr-schedule", choices=("constant", "cosine", "exponential"))
    training.add_argument(
        "--max-grad-norm", type=_positive_float, help="clip the gradient norm (default: no clip)"
    )
    training.add_argument(
        "--eval-every", type=_positive_int, help="validate every N epochs (and after the last)"
    )
    training.add_argument(
        "--compile",
        nargs="?",
        const=True,
        type=_compile_backend,
        metavar="BACKEND",
        help="run the training forward pass through torch.compile (default backend: inductor; "
        "the first steps compile); --compile off runs eagerly where a preset compiles",
    )
    training.add_argument(
        "--patience",
        type=_positive_int,
        help="stop after N epochs without a better validation metric (default: never)",
    )
    training.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    training.add_argument(
        "--logger",
        choices=LOGGERS,
        help="also log to TensorBoard (OUT/.../tensorboard; pip install "
        "'equirelax[tensorboard]'); metrics.jsonl and metrics.csv are always written",
    )
    parser.add_argument(
        "--model-option",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model constructor option (repeatable), e.g. hidden_features=32",
    )
    parser.add_argument(
        "--task-option",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task builder option (repeatable), e.g. delta=0.5 for gap-dial",
    )
    parser.add_argument("--out", type=Path, help="output directory")
    if resume:
        parser.add_argument("--resume", action="store_true", help="continue an interrupted job")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equirelax",
        description="Train equivariant models between strict equivariance and none.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the Python traceback of an error (anywhere on the line; also {DEBUG_ENV}=1)",
    )
    parser.add_argument("--version", action="version", version=f"equirelax {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("tasks", help="list the tasks with their symmetry and models")
    gap = commands.add_parser(
        "gap",
        help="estimate a task's symmetry gap before training and say which strategies fit",
        description=(
            "Fit a flexible predictor on part of the task's training and validation data and "
            "measure how much of its asymmetric part helps on the held-out part "
            "(equirelax.gap.symmetry_gap), with a bootstrap interval; then name the family of "
            "strategies the measured claims favour (benchmarks/claims.md)."
        ),
    )
    gap.set_defaults(subparser=gap)
    gap.add_argument("task", help=f"a regression task: one of {', '.join(TASK_NAMES)}")
    gap.add_argument("--full", action="store_true", help="the published protocol's data")
    gap.add_argument("--task-option", type=_key_value, action="append", default=[],
                     metavar="KEY=VALUE", help="task builder option (repeatable)")  # fmt: skip
    gap.add_argument("--steps", type=_positive_int, default=2000, help="predictor fit steps")
    gap.add_argument("--seed", type=_seed, default=0)
    gap.add_argument("--json", action="store_true", help="print the estimate as JSON")
    gap.add_argument("--quiet", action="store_true", help="no progress bars")

    train = commands.add_parser("train", help="train one model with one strategy")
    _add_common(train)
    train.set_defaults(subparser=train)
    train.add_argument("--strategy", default="strict", help="a strategy label (see compare)")
    train.add_argument("--seed", type=_seed, default=0)
    train.add_argument(
        "--json", action="store_true", help="print the run's record as JSON (and nothing else)"
    )
    train.add_argument(
        "--option",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="strategy option (repeatable), e.g. weight=0.1",
    )

    comp = commands.add_parser("compare", help="run several strategies and seeds side by side")
    _add_common(comp)
    comp.set_defaults(subparser=comp)
    comp.add_argument(
        "--strategies",
        default=",".join(DEFAULT_STRATEGIES),
        help=f"comma-separated labels from: {', '.join(STRATEGY_LABELS)}",
    )
    comp.add_argument("--seeds", type=_seeds, default=1, help="seeds per strategy")
    comp.add_argument(
        "--jobs",
        type=_positive_int,
        metavar="N",
        help="train N runs at a time in worker processes, each on cores/N torch threads "
        "(default: one per available core, at most one per run left to do; 1: one after "
        "the other in this process, on torch's default threads)",
    )
    comp.add_argument(
        "--option",
        type=_key_value,
        action="append",
        default=[],
        metavar="STRATEGY.KEY=VALUE",
        help="strategy option (repeatable), e.g. cr.weight=0.1",
    )

    adapt = commands.add_parser(
        "adapt",
        help="make a pretrained classifier rotation-invariant by canonicalization",
        description=(
            "Fine-tune a predictor pretrained on upright images at equal budget in each arm "
            f"({', '.join(ADAPT_ARMS)}) and report upright, C4- and C8-averaged test accuracy "
            "and the fraction of upright images canonicalized to the identity (Mondal et al. "
            "2023). The training options set the fine-tuning budget."
        ),
    )
    _add_common(adapt, resume=False)
    adapt.set_defaults(subparser=adapt)
    adapt.add_argument(
        "--predictor",
        type=Path,
        help="state dict of the task's model: loaded if the file exists, else the model is "
        "pretrained on upright images and saved there (default OUT/predictor.pt)",
    )
    adapt.add_argument("--group", default="c8", help="canonicalizer group: cN or dN (default c8)")
    adapt.add_argument(
        "--arms",
        default=",".join(ADAPT_ARMS),
        help=f"comma-separated arms from: {', '.join(ADAPT_ARMS)}",
    )
    adapt.add_argument("--seeds", type=_seeds, default=1, help="fine-tuning seeds per arm")
    adapt.add_argument("--pretrain-epochs", type=_epochs, help="epochs of pretraining")
    adapt.add_argument(
        "--prior-weight", type=_non_negative_float, default=100.0, help="lambda_prior"
    )
    adapt.add_argument(
        "--canonicalizer-lr-scale",
        type=_positive_float,
        default=10.0,
        help="the canonicalizer's learning rate as a multiple of --lr (default 10)",
    )
    adapt.add_argument(
        "--canonicalizer-option",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="ImageCanonicalizer option (repeatable), e.g. hidden=16 or beta=0.5",
    )

    breaking = commands.add_parser(
        "break",
        help="strict vs noise injection vs relaxed equivariance on a symmetry-breaking task",
        description=(
            "Train the task's model in each arm (strict: equivariant; noise: noise injection; "
            "relaxed: a symmetry-breaking object) and report the test failure rate and loss, "
            "and on the first test inputs the fractions that pass the relaxed-equivariance "
            "checker and that keep their stabiliser (Kaba & Ravanbakhsh 2023)."
        ),
    )
    _add_common(breaking, resume=False)
    breaking.set_defaults(subparser=breaking)
    breaking.add_argument(
        "--arms",
        default=",".join(BREAKING_MODES),
        help=f"comma-separated arms from: {', '.join(BREAKING_MODES)}",
    )
    breaking.add_argument("--seeds", type=_seeds, default=3, help="seeds per arm")
    breaking.add_argument(
        "--tie-break", choices=TIE_BREAKS, default="first", help="the relaxed arm's tie breaking"
    )
    breaking.add_argument(
        "--check-samples", type=_positive_int, help="test inputs checked (default: the preset)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``equirelax`` console script; returns the exit status: 0, 2 for a
    usage error, 1 for a runtime error, which is reported as one message (with ``--debug`` or
    ``EQUIRELAX_DEBUG=1``: the traceback), 130 when interrupted."""
    words = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in words or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    words = [word for word in words if word != "--debug"]
    try:
        return _main(words)
    except KeyboardInterrupt:
        if debug:
            raise
        print("equirelax: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        print(_error_message(words, error), file=sys.stderr)
        return 1


def _with_config(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]
) -> argparse.Namespace:
    """``argv`` parsed again with the options of ``--config`` typed before the command line's
    (so that those override them), and its task where the command line gives none."""
    try:
        task, words = config_words(read_config(args.config), args.subparser, args.config)
    except ValueError as error:
        args.subparser.error(str(error))
    at = argv.index(args.command) + 1
    given_task = [task] if task is not None and args.task is None else []
    return parser.parse_args([*argv[:at], *given_task, *words, *argv[at:]])


def error_line(command: str, error: Exception) -> str:
    """``equirelax COMMAND: error: MESSAGE`` with the notes the error carries, one per line."""
    notes = "".join(f"\n  {note}" for note in getattr(error, "__notes__", ()))
    prefix = f"equirelax {command}" if command else "equirelax"
    return f"{prefix}: error: {error}{notes}"


def _error_message(words: Sequence[str], error: Exception) -> str:
    """One message for an error that reached the command line: what it says, and for an error
    that is not a report of bad input or a file problem, how to report it."""
    command = next((word for word in words if not word.startswith("-")), "")
    message = error_line(command, error)
    if not isinstance(error, (ValueError, TypeError, OSError, ImportError, RuntimeError)):
        message += (
            f"\n({type(error).__name__}; run again with --debug for the traceback and report it)"
        )
    return message


def _main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is not None:
        args = _with_config(parser, args, argv)
    if args.command != "tasks" and args.task is None:
        args.subparser.error(
            f"task: expected one of {', '.join(TASK_NAMES)} on the command line or as task in "
            "--config, received none"
        )
    from equirelax.experiments import commands  # torch and the library: only to run a command

    if args.command == "tasks":
        commands.list_tasks()
        return 0
    if args.command == "adapt":
        return commands.adapt_command(args.subparser, args, argv)
    if args.command == "break":
        return commands.break_command(args.subparser, args, argv)
    if args.command == "gap":
        return commands.gap_command(args.subparser, args)
    return commands.run(args.subparser, args, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
